//! `fedgate config check`: a config file judged as `fedgate run` judges it before it connects
//! anywhere, as `nats-server -t` does, with an exit code of its own for a bad config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fedgate::config::Config;

/// The exit code of a config that does not load (sysexits' `EX_CONFIG`), from `config check`
/// and from `run`: a service manager can stop restarting on it (`RestartPreventExitStatus=78`).
pub const EX_CONFIG: u8 = 78;

/// `fedgate config` commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a config file exactly as `fedgate run` does before it connects (TOML, every
    /// key, files, keys and certificates, identity rules, policies, the instance name); exits 0
    /// when it would start, 78 with the key and the reason when it would not. A registry's
    /// revision is checked when it is pushed, not here.
    Check {
        /// The config file.
        #[arg(env = "FEDGATE_CONFIG")]
        file: PathBuf,
        /// Instance name; overrides `[instance] name`, as `run --instance` does.
        #[arg(long, env = "FEDGATE_INSTANCE")]
        instance: Option<String>,
    },
    /// Write the fedgate config equivalent to a go-choria Federation Broker's settings
    /// (`broker.conf`), in pass-through mode; keys without an equivalent are named on stderr.
    ImportChoria {
        /// The go-choria config (its `plugin.d` folder is read too).
        file: PathBuf,
        /// Write the config here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the JSON Schema of a config file (for editors and linters such as taplo).
    Schema,
    /// Print the reference of every config key as Markdown, as `docs/configuration.md` has it.
    Reference,
}

/// Runs a `config` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file, instance } => match check(&file, instance) {
            Ok(summary) => {
                println!("{}: ok: {summary}", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(problem) => {
                eprintln!("fedgate config check: {problem}");
                Ok(ExitCode::from(EX_CONFIG))
            }
        },
        Command::ImportChoria { file, out } => import_choria(&file, out.as_deref()),
        Command::Schema => {
            let schema = fedgate::config::reference::schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reference => {
            print!("{}", fedgate::config::reference::markdown());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the imported config and names on stderr each key that did not carry over.
fn import_choria(file: &Path, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let imported = match fedgate::config::choria_import::import(file) {
        Ok(imported) => imported,
        Err(err) => {
            eprintln!("fedgate config import-choria: {}: {err}", file.display());
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    for warning in &imported.warnings {
        eprintln!("warning: {}: {}", warning.key, warning.message);
    }
    match out {
        Some(path) => {
            std::fs::write(path, &imported.toml)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {}; check it with `fedgate config check {}`",
                path.display(),
                path.display()
            );
        }
        None => print!("{}", imported.toml),
    }
    Ok(ExitCode::SUCCESS)
}

/// The config as `run` loads it, and what it would serve.
fn check(file: &std::path::Path, instance: Option<String>) -> Result<String, String> {
    let mut config = Config::load(file).map_err(|e| e.to_string())?;
    if instance.is_some() {
        config.instance.name = instance;
    }
    let name = config.instance.name_or_default();
    fedgate::config::validate_instance_name(&name).map_err(|p| format!("instance name: {p}"))?;
    let mut serves = Vec::new();
    let federations = config.served_federations();
    if !federations.is_empty() {
        serves.push(format!("federations {}", federations.join(", ")));
    }
    if config.edge.is_some() {
        serves.push("the WebSocket edge".to_string());
    }
    for (legacy, settings) in &config.legacy {
        if settings.bridge.is_some() {
            serves.push(format!("the legacy bridge {legacy}"));
        }
        if settings.choria.is_some() {
            serves.push(format!("legacy {legacy} to Choria clients"));
        }
    }
    if config.registry.is_some() {
        serves.push("a registry".to_string());
    }
    Ok(format!("instance {name} would serve {}", list(&serves)))
}

fn list(items: &[String]) -> String {
    match items {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
