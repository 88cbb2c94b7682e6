//! The `fedgate` command line: parse, set up logging, run one command.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    fedgate::cli::init_tracing(cli.verbose, cmd::log_format(&cli));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fedgate: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fedgate: {err:#}");
            ExitCode::from(2)
        }
    }
}
