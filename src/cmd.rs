//! Subcommands of the `fedgate` binary.

mod audit;
mod bench;
mod certs;
mod config;
mod demo;
mod fleet;
mod generate;
mod identity;
mod inspect;
mod observe;
mod policy;
mod registry;
mod rpc;
mod run;
mod systemd;
mod token;
mod ws_rpc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fedgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The version and the commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FEDGATE_COMMIT"), ")");

/// fedgate: a protocol-translating federation gateway for Choria and legacy MCollective fleets.
#[derive(Debug, Parser)]
#[command(name = "fedgate", version = VERSION, about)]
pub struct Cli {
    /// Log more (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The log's form on stderr: `text` (coloured only on a terminal) or `json` (one object a
    /// line); for `run`, overrides `[instance] log_format`.
    #[arg(long, global = true, env = "FEDGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode and verify one Choria v1 or legacy MCollective message; prints JSON, exits 0 when
    /// valid, 1 when not.
    Inspect(inspect::Args),
    /// Development certificates.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Identity mapping across realms.
    #[command(subcommand)]
    Identity(identity::Command),
    /// The tamper-evident audit trail: verify, query, tail.
    #[command(subcommand)]
    Audit(audit::Command),
    /// RBAC with actionpolicy files.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Simulated Choria fleets.
    #[command(subcommand)]
    Fleet(fleet::Command),
    /// Sign and send an RPC request to a collective and stream the replies.
    Rpc(Box<rpc::Args>),
    /// Make an RPC call through fedgate's WebSocket edge; prints what `rpc` prints.
    WsRpc(Box<ws_rpc::Args>),
    /// Serve the federations in the config as a Federation Broker instance.
    Run(run::Args),
    /// Show live per-instance figures of a Federation Broker cluster.
    Observe(observe::Args),
    /// Run the whole topology on this machine.
    Demo(demo::Args),
    /// Run the benchmarks side by side with their baselines.
    Bench(bench::Args),
    /// Tokens for the WebSocket edge: signing key, issue, password hashes.
    #[command(subcommand)]
    Token(token::Command),
    /// The federation registry: push, diff, history, rollback, status.
    #[command(subcommand)]
    Registry(registry::Command),
    /// Check a config file as `run` would load it.
    #[command(subcommand)]
    Config(config::Command),
    /// Shell completions (bash, zsh, fish) on stdout, for packaging.
    #[command(hide = true)]
    Completions(generate::CompletionsArgs),
    /// Man pages into a folder, for packaging.
    #[command(hide = true)]
    Man(generate::ManArgs),
}

/// How requests are checked: the CA plus Choria's name rules and the size limit.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Privileged certname pattern (repeatable); defaults to Choria's.
    #[arg(long = "privileged", value_name = "REGEX")]
    privileged: Vec<String>,
    /// Certname allow-list pattern (repeatable); defaults to Choria's.
    #[arg(long = "allow", value_name = "REGEX")]
    allow: Vec<String>,
    /// Refuse messages larger than this many bytes.
    #[arg(long, default_value_t = fedgate::wire::DEFAULT_MAX_MESSAGE_BYTES)]
    max_bytes: usize,
}

impl TrustArgs {
    /// Decode limits with the configured size.
    pub fn limits(&self) -> fedgate::wire::Limits {
        fedgate::wire::Limits {
            max_message_bytes: self.max_bytes,
            ..fedgate::wire::Limits::default()
        }
    }

    /// A verifier for `ca` with these rules; an empty list means Choria's defaults.
    pub fn verifier(&self, ca: &std::path::Path) -> anyhow::Result<fedgate::security::Verifier> {
        use fedgate::security::{CaBundle, NamePatterns, patterns_defaults};
        Ok(fedgate::security::Verifier::new(
            CaBundle::from_file(ca)?,
            NamePatterns::or_defaults(given(&self.privileged), patterns_defaults::PRIVILEGED)?,
            NamePatterns::or_defaults(given(&self.allow), patterns_defaults::ALLOWLIST)?,
            self.limits(),
        ))
    }
}

pub use config::EX_CONFIG;

/// The log target of `fedgate run`'s status lines (what it serves, where it listens, reloads,
/// draining), which are shown at the default verbosity.
pub const STATUS: &str = "fedgate::status";

/// Sends logs to stderr in `format`, filtered by `RUST_LOG` or the verbosity flag. Colours
/// only when stderr is a terminal and `NO_COLOR` is unset, so journald and files get plain text.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn,fedgate::status=info",
        1 => "info,fedgate=info",
        _ => "debug,fedgate=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .init(),
    }
}

/// The log format: the flag (or `FEDGATE_LOG_FORMAT`), else `run`'s config, else text. A
/// config that does not load leaves text, and `run` reports why.
pub fn log_format(cli: &Cli) -> LogFormat {
    if let Some(format) = cli.log_format {
        return format;
    }
    match &cli.command {
        Command::Run(args) => args.log_format(),
        _ => LogFormat::Text,
    }
}

/// Runs one command; `Err` is an operational failure (exit 2).
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Inspect(args) => inspect::run(args),
        Command::Certs(command) => certs::run(command),
        Command::Identity(command) => identity::run(command),
        Command::Audit(command) => audit::run(command).await,
        Command::Policy(command) => policy::run(command),
        Command::Fleet(command) => fleet::run(command).await,
        Command::Rpc(args) => rpc::run(*args).await,
        Command::WsRpc(args) => ws_rpc::run(*args).await,
        Command::Run(args) => run::run(args).await,
        Command::Observe(args) => observe::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Token(command) => token::run(command),
        Command::Registry(command) => registry::run(command).await,
        Command::Config(command) => config::run(command),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made: a signal that comes while a
/// process is still starting is kept, and seen by the first [`Shutdown::recv`], never lost.
pub struct Shutdown {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Starts listening.
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on Ctrl-C or SIGTERM (at once if one came since [`Shutdown::listen`]).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Patterns given on the command line, or `None` when the flag was not used.
fn given(list: &[String]) -> Option<&[String]> {
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests;
