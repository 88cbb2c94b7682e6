//! The `fedgate-dev` command line: the demo, simulated fleets, benchmarks and the development
//! PKI. It starts the `fedgate` binary beside it for every gateway instance it runs.

mod cmd;

use std::process::ExitCode;

use clap::Parser;
use fedgate::config::LogFormat;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    fedgate::cli::init_tracing(cli.verbose, LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fedgate-dev: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fedgate-dev: {err:#}");
            ExitCode::from(2)
        }
    }
}
