//! `fedgate inspect`: decode and verify one message from a file, print one JSON object. A
//! Choria message, v1 or v2 as its `protocol` says, or with `--legacy` a legacy MCollective
//! `ssl`-plugin one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use fedgate::inspect::legacy::{LegacyInspectOptions, inspect_legacy};
use fedgate::inspect::v2::inspect_v2;
use fedgate::inspect::{InspectOptions, Inspection, inspect};
use fedgate::security::Now;
use fedgate::security::legacy::LegacyVerifier;
use fedgate::security::v2::{Issuers, V2Verifier};
use fedgate::wire::choria_v2::{Version, version};

/// Arguments of `fedgate inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CA bundle the signer must chain to (Choria v1 messages).
    #[arg(long, conflicts_with = "legacy")]
    ca: Option<PathBuf>,
    /// A trusted issuer of Choria v2 tokens, `ORG=HEX` (its organization, the tokens' `ou`, and
    /// its ed25519 public key in hex); repeatable.
    #[arg(long, value_name = "ORG=HEX", conflicts_with = "legacy")]
    issuer: Vec<String>,
    /// The message is a legacy MCollective ssl-plugin request or reply (Marshal or YAML).
    #[arg(long, requires_all = ["client_certs", "server_cert"])]
    legacy: bool,
    /// Legacy callers' public keys or certificates, `<name>.pem` for `cert=<name>`.
    #[arg(long, value_name = "DIR", requires = "legacy")]
    client_certs: Option<PathBuf>,
    /// The legacy servers' shared public key or certificate, which signs replies.
    #[arg(long, value_name = "PEM", requires = "legacy")]
    server_cert: Option<PathBuf>,
    /// Seconds a legacy request's time may be ahead of --now (as `max_skew_s` in the config).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        requires = "legacy"
    )]
    max_skew: i64,
    /// Pin the clock to this unix time for TTL and certificate checks.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Refuse requests for any other collective.
    #[arg(long, conflicts_with = "legacy")]
    collective: Option<String>,
    #[command(flatten)]
    trust: fedgate::cli::TrustArgs,
    /// The message file.
    file: PathBuf,
}

/// Runs the inspection; exit 0 when valid, 1 when not.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = args.now.map_or_else(Now::system, Now::at_unix);
    let limits = args.trust.limits();
    let inspection = if args.legacy {
        let verifier = legacy_verifier(&args)?;
        let bytes = read_limited(&args.file, limits.max_message_bytes)?;
        let options = LegacyInspectOptions {
            max_message_bytes: limits.max_message_bytes,
            now,
        };
        inspect_legacy(&bytes, &verifier, &options)
    } else {
        let bytes = read_limited(&args.file, limits.max_message_bytes)?;
        let options = InspectOptions {
            limits,
            now,
            collective: args.collective.clone(),
        };
        if version(&bytes) == Some(Version::V2) {
            let verifier = V2Verifier::new(issuers(&args.issuer)?, limits);
            inspect_v2(&bytes, &verifier, &options)
        } else {
            let ca = args
                .ca
                .as_deref()
                .context("a Choria v1 message needs --ca (and a v2 one --issuer)")?;
            let verifier = args.trust.verifier(ca).context("loading --ca")?;
            inspect(&bytes, &verifier, &options)
        }
    };
    print(&inspection)
}

/// The v2 issuers `--issuer` names; at least one.
fn issuers(given: &[String]) -> anyhow::Result<Issuers> {
    if given.is_empty() {
        bail!("a Choria v2 message needs --issuer ORG=HEX (and a v1 one --ca)");
    }
    given.iter().try_fold(Issuers::default(), |issuers, one| {
        let Some((org, key)) = one.split_once('=') else {
            bail!("--issuer {one:?} is not ORG=HEX");
        };
        issuers.with(org, key).map_err(anyhow::Error::msg)
    })
}

/// The legacy ingress's verifier, over the keys the flags name.
fn legacy_verifier(args: &Args) -> anyhow::Result<LegacyVerifier> {
    let (Some(clients), Some(server)) = (&args.client_certs, &args.server_cert) else {
        bail!("--legacy needs --client-certs DIR and --server-cert PEM");
    };
    if !clients.is_dir() {
        bail!("--client-certs {} is not a folder", clients.display());
    }
    if !(0..=3600).contains(&args.max_skew) {
        bail!("--max-skew must be between 0 and 3600");
    }
    LegacyVerifier::new(clients, server, args.max_skew).context("loading --server-cert")
}

fn print(inspection: &Inspection) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string(inspection)?);
    Ok(if inspection.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads at most one byte past the limit, so the size check sees oversize input without reading it all.
fn read_limited(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}
