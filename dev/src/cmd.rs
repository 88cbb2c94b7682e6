//! Subcommands of the `fedgate-dev` binary.

mod bench;
mod certs;
mod demo;
mod fleet;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fedgate::cli::VERSION;

/// fedgate-dev: the demo, simulated Choria fleets, benchmarks and the development PKI.
#[derive(Debug, Parser)]
#[command(name = "fedgate-dev", version = VERSION, about)]
pub struct Cli {
    /// Log more (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Development certificates.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Simulated Choria fleets.
    #[command(subcommand)]
    Fleet(fleet::Command),
    /// Run the whole topology on this machine.
    Demo(demo::Args),
    /// Run the benchmarks side by side with their baselines.
    Bench(bench::Args),
}

/// Runs one command; `Err` is an operational failure (exit 2).
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Certs(command) => certs::run(command),
        Command::Fleet(command) => fleet::run(command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
