//! The relays under test besides the direct publish and the leafnode link: fedgate's broker, in
//! this process or as a `fedgate run` child, and the bare async-nats relay.

use std::time::Duration;

use futures::StreamExt;

use super::{BARE, BARE_OUT, RelayOptions};
use crate::bench::{BenchError, setup_err};
use fedgate::config::Config;
use fedgate::federation::{Broker, BrokerOptions};
use fedgate::wire::Limits;

/// The least a relay between two NATS servers can do: one subscription on the federation
/// network, every message published as it is on the collective's, no parsing.
pub(super) async fn bare_relay(
    federation: &str,
    collective: &str,
) -> Result<tokio::task::JoinHandle<()>, BenchError> {
    let inbound = async_nats::connect(federation).await.map_err(setup_err)?;
    let outbound = async_nats::connect(collective).await.map_err(setup_err)?;
    let mut subscriber = inbound.subscribe(BARE).await.map_err(setup_err)?;
    inbound.flush().await.map_err(setup_err)?;
    Ok(tokio::spawn(async move {
        let _keep = inbound;
        while let Some(message) = subscriber.next().await {
            if outbound.publish(BARE_OUT, message.payload).await.is_err() {
                return;
            }
        }
    }))
}

/// The broker under test, in this process or as a `fedgate run` child.
pub(super) enum RunningBroker {
    InProcess(Broker),
    Child(tokio::process::Child),
}

impl RunningBroker {
    /// Starts the broker as `options.broker_exe` says, and waits until it serves.
    pub(super) async fn start(
        config_path: &std::path::Path,
        options: &RelayOptions,
    ) -> Result<Self, BenchError> {
        let Some(exe) = &options.broker_exe else {
            let config = Config::load(config_path).map_err(setup_err)?;
            let broker_options = BrokerOptions {
                instance: "bench".into(),
                workers: options.workers,
                stats_interval: Duration::from_secs(60),
                limits: Limits::default(),
                gate: None,
            };
            return Ok(RunningBroker::InProcess(
                Broker::start(&config, broker_options)
                    .await
                    .map_err(setup_err)?,
            ));
        };
        let (child, mut lines) = crate::bench::spawn_run(exe, config_path)?;
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("serving federations") {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            return Err(BenchError("fedgate run did not start".into()));
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RunningBroker::Child(child))
    }

    /// Stops the broker: drained in process, killed as a child.
    pub(super) async fn stop(self) {
        match self {
            RunningBroker::InProcess(broker) => {
                broker.shutdown(Duration::from_secs(5)).await;
            }
            RunningBroker::Child(mut child) => {
                let _ = child.kill().await;
            }
        }
    }
}
