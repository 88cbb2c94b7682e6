//! `fedgate observe`: live per-instance figures of a broker cluster, read from the stats its
//! instances publish on the federation network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fedgate::config::Config;
use fedgate::federation::observe::render;
use fedgate::federation::stats::ClusterSnapshot;
use fedgate::nats;
use fedgate::subjects;
use futures::StreamExt;

/// Arguments of `fedgate observe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file naming the federation's network.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
    /// The federation (a `[federations.NAME]` in the config).
    #[arg(long)]
    federation: String,
    /// Broker cluster; defaults to the federation's cluster name.
    #[arg(long)]
    cluster: Option<String>,
    /// Collect for this many seconds, print once as JSON, and exit.
    #[arg(long, value_name = "SECONDS")]
    once: Option<u64>,
}

/// Prints the cluster's figures whenever an instance reports, until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let federation = config
        .federation(&args.federation)
        .with_context(|| format!("no [federations.{}] in the config", args.federation))?;
    let cluster = args
        .cluster
        .clone()
        .unwrap_or_else(|| federation.cluster_name(&args.federation).to_string());
    let mut endpoint = federation.endpoint();
    if endpoint.identity.is_none() {
        endpoint.identity = config
            .client
            .as_ref()
            .map(|c| (c.certificate.clone(), c.key.clone()));
    }
    let client = nats::connect(&endpoint, "fedgate-observe").await?;
    let mut stats = client
        .subscribe(subjects::federation_stats(&cluster))
        .await?;
    let mut latest: BTreeMap<String, (ClusterSnapshot, Instant)> = BTreeMap::new();
    if args.once.is_none() {
        println!("Waiting for cluster stats to be published ....");
    }
    let until = args
        .once
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            _ = sleep_until(until) => break,
            message = stats.next() => message,
        };
        let Some(message) = message else { break };
        let Ok(snapshot) = serde_json::from_slice::<ClusterSnapshot>(&message.payload) else {
            continue;
        };
        remember(&mut latest, snapshot);
        if until.is_none() {
            print!("\x1b[H\x1b[2J{}", render(&cluster, &aged(&latest)));
        }
    }
    if until.is_some() {
        let snapshots: Vec<&ClusterSnapshot> = latest.values().map(|(s, _)| s).collect();
        println!("{}", serde_json::to_string(&snapshots)?);
        eprint!("{}", render(&cluster, &aged(&latest)));
    }
    Ok(ExitCode::SUCCESS)
}

/// Most instances tracked; stats subjects are open to anyone on the network.
const MAX_INSTANCES: usize = 1024;
/// Instances not heard from for this long are dropped.
const FORGET_AFTER: Duration = Duration::from_secs(120);

fn remember(latest: &mut BTreeMap<String, (ClusterSnapshot, Instant)>, snapshot: ClusterSnapshot) {
    latest.retain(|_, (_, heard)| heard.elapsed() < FORGET_AFTER);
    if latest.len() >= MAX_INSTANCES && !latest.contains_key(&snapshot.instance) {
        return;
    }
    latest.insert(snapshot.instance.clone(), (snapshot, Instant::now()));
}

fn aged(
    latest: &BTreeMap<String, (ClusterSnapshot, Instant)>,
) -> BTreeMap<String, (ClusterSnapshot, u64)> {
    latest
        .iter()
        .map(|(name, (s, at))| (name.clone(), (s.clone(), at.elapsed().as_secs())))
        .collect()
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
