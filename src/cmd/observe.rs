//! `fedgate observe`: live per-instance figures of a broker cluster, read from the stats its
//! instances publish on the federation network.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fedgate::config::Config;
use fedgate::federation::observe::{Latest, render};
use fedgate::federation::stats::ClusterSnapshot;
use fedgate::nats;
use fedgate::registry::Registry;
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
    // With a registry, which revision each instance runs is shown under the figures.
    let registry = match &config.registry {
        Some(settings) => {
            let wait = Duration::from_millis(settings.timeout_ms.max(1000));
            match tokio::time::timeout(wait, Registry::connect(settings, "fedgate-observe", false))
                .await
            {
                Ok(Ok(registry)) => Some(registry),
                _ => {
                    eprintln!(
                        "fedgate observe: the registry is unreachable; showing the figures only"
                    );
                    None
                }
            }
        }
        None => None,
    };
    let mut stats = client
        .subscribe(subjects::federation_stats(&cluster))
        .await?;
    let mut latest = Latest::default();
    if args.once.is_none() {
        println!("Waiting for cluster stats to be published ....");
    }
    let until = args
        .once
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let shutdown = fedgate::cli::shutdown_signal();
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
        latest.remember(snapshot);
        if until.is_none() {
            let registry = registry_table(registry.as_ref()).await;
            print!(
                "\x1b[H\x1b[2J{}{registry}",
                render(&cluster, &latest.aged())
            );
        }
    }
    if until.is_some() {
        println!("{}", serde_json::to_string(&latest.snapshots())?);
        let registry = registry_table(registry.as_ref()).await;
        eprint!("{}{registry}", render(&cluster, &latest.aged()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry's status table, or nothing without a registry.
async fn registry_table(registry: Option<&Registry>) -> String {
    let Some(registry) = registry else {
        return String::new();
    };
    match (registry.head_revision().await, registry.statuses().await) {
        (Ok(head), Ok(statuses)) => format!(
            "\n{}",
            fedgate::registry::render_status(head, &statuses, fedgate::registry::unix_now())
        ),
        (Err(e), _) | (_, Err(e)) => format!("\nregistry: {e}\n"),
    }
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
