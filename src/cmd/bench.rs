//! `fedgate bench`: benchmarks measured side by side with their baselines, reported as ratios.

use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `fedgate bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds spent on each side of each comparison.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmarks.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let budget = Duration::try_from_secs_f64(args.seconds)?;
    let rows = fedgate::bench::crypto(budget)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", fedgate::bench::table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}
