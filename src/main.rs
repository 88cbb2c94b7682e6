//! The `fedgate` command line: parse, set up logging, run one command.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    fedgate::cli::init_tracing(cli.verbose, cmd::log_format(&cli));
    fedgate::cli::block_on_command("fedgate", cmd::run(cli.command))
}
