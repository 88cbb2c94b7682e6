//! `fedgate inspect`: decode and verify one message from a file, print one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fedgate::inspect::{InspectOptions, inspect};
use fedgate::security::Now;

/// Arguments of `fedgate inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CA bundle the signer must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Pin the clock to this unix time for TTL and certificate checks.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Refuse requests for any other collective.
    #[arg(long)]
    collective: Option<String>,
    #[command(flatten)]
    trust: super::TrustArgs,
    /// The message file.
    file: PathBuf,
}

/// Runs the inspection; exit 0 when valid, 1 when not.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let verifier = args.trust.verifier(&args.ca).context("loading --ca")?;
    let limits = args.trust.limits();
    let bytes = read_limited(&args.file, limits.max_message_bytes)?;
    let options = InspectOptions {
        limits,
        now: args.now.map_or_else(Now::system, Now::at_unix),
        collective: args.collective,
    };
    let inspection = inspect(&bytes, &verifier, &options);
    println!("{}", serde_json::to_string(&inspection)?);
    Ok(if inspection.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads at most one byte past the limit, so the size check sees oversize input without reading it all.
fn read_limited(path: &std::path::Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}
