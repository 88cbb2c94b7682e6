//! `fedgate identity explain`: which rule maps a caller into a collective, and as whom.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use fedgate::config::Config;
use fedgate::security::CallerId;
use fedgate::security::identity::{IdentityRules, Mapping};
use serde_json::json;

/// Identity mapping commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show how a verified caller of one realm maps into a collective; exits 0 when mapped,
    /// 1 when denied.
    Explain(ExplainArgs),
}

/// Arguments of `fedgate identity explain`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["config", "rules"]))]
pub struct ExplainArgs {
    /// The config file; its `[identity] rules` decide, and realm names are checked against it.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// A rules file on its own, instead of a config.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The realm the caller was verified in (a federation or collective name).
    #[arg(long, value_name = "REALM")]
    from: String,
    /// The verified caller id, e.g. `choria=alice.mcollective`.
    #[arg(long, value_name = "CALLERID")]
    caller: String,
    /// The target collective.
    #[arg(long, value_name = "COLLECTIVE")]
    to: String,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// Runs an identity command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Explain(args) => explain(args),
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let caller = CallerId::parse(&args.caller).context("--caller")?;
    let (rules, internal_name) = match (&args.config, &args.rules) {
        (_, Some(path)) => (Arc::new(IdentityRules::load(path)?), None),
        (Some(path), None) => {
            let config = Config::load(path)?;
            if !config.is_realm(&args.from) {
                bail!(
                    "--from {}: not a federation or collective in {}",
                    args.from,
                    path.display()
                );
            }
            let Some(target) = config.collective(&args.to) else {
                bail!("--to {}: not a collective in {}", args.to, path.display());
            };
            let internal = target.internal_name(&args.to).to_string();
            (config.identity_rules().clone(), Some(internal))
        }
        (None, None) => bail!("give --config or --rules"),
    };
    let mapping = rules.map(&args.from, &caller, &args.to);
    let (report, sentence, ok) = match &mapping {
        Mapping::Mapped { callerid, rule } => (
            json!({
                "mapped": true,
                "from": args.from,
                "caller": args.caller,
                "to": args.to,
                "collective": internal_name,
                "callerid": callerid.as_str(),
                "rule": rule,
            }),
            format!(
                "mapped: {} from {} acts in {} as {} ({rule})",
                args.caller,
                args.from,
                args.to,
                callerid.as_str()
            ),
            true,
        ),
        Mapping::Denied(denial) => (
            json!({
                "mapped": false,
                "from": args.from,
                "caller": args.caller,
                "to": args.to,
                "reason": denial.reason(),
                "rule": denial.rule(),
                "message": denial.to_string(),
            }),
            match denial.rule() {
                Some(_) => format!("denied: {denial}"),
                None => format!("denied: {denial}, and no rule means deny"),
            },
            false,
        ),
    };
    if args.json {
        println!("{report}");
    } else {
        println!("{sentence}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
