//! Subcommands of the `fedgate` binary.

mod audit;
mod certs;
mod config;
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
use fedgate::cli::VERSION;
use fedgate::config::LogFormat;

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
    /// Decode and verify one Choria (v1 or v2) or legacy MCollective message; prints JSON, exits
    /// 0 when valid, 1 when not.
    Inspect(inspect::Args),
    /// The certificates a config names: when each expires.
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
    /// Sign and send an RPC request to a collective and stream the replies.
    Rpc(Box<rpc::Args>),
    /// Make an RPC call through fedgate's WebSocket edge; prints what `rpc` prints.
    WsRpc(Box<ws_rpc::Args>),
    /// Serve the federations in the config as a Federation Broker instance.
    Run(run::Args),
    /// Show live per-instance figures of a Federation Broker cluster.
    Observe(observe::Args),
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

pub use config::EX_CONFIG;

/// The log target of `fedgate run`'s status lines (what it serves, where it listens, reloads,
/// draining), which are shown at the default verbosity.
pub const STATUS: &str = "fedgate::status";

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
        Command::Rpc(args) => rpc::run(*args).await,
        Command::WsRpc(args) => ws_rpc::run(*args).await,
        Command::Run(args) => run::run(args).await,
        Command::Observe(args) => observe::run(args).await,
        Command::Token(command) => token::run(command),
        Command::Registry(command) => registry::run(command).await,
        Command::Config(command) => config::run(command),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

#[cfg(test)]
mod tests;
