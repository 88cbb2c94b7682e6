//! The `fedgate-dev` command line: the demo, simulated fleets, benchmarks and the development
//! PKI. It starts the `fedgate` binary beside it for every gateway instance it runs.

mod cmd;

use std::process::ExitCode;

use clap::Parser;
use fedgate::config::LogFormat;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    fedgate::cli::init_tracing(cli.verbose, LogFormat::Text);
    fedgate::cli::block_on_command("fedgate-dev", cmd::run(cli.command))
}
