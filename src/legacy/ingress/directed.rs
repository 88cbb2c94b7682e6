//! The directed bindings: the request queue is bound to `<collective>_directed` for every node
//! the Choria collectives' discovery reports, refreshed periodically.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::{MAX_DIRECTED, Shared};
use crate::client::{RpcCall, RpcClient};
use crate::security::CallerId;
use crate::wire::Limits;

pub(super) struct Directed {
    pub(super) shared: Arc<Shared>,
    pub(super) channel: lapin::Channel,
    pub(super) queue: String,
    pub(super) bound: BTreeSet<String>,
    pub(super) count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Directed {
    /// Binds the nodes discovery finds now, then keeps refreshing in the background.
    pub(super) async fn refresh_forever(
        mut self,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        self.refresh().await;
        let every = Duration::from_secs(self.shared.bridge.refresh_s.max(5));
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => self.refresh().await,
                }
            }
        });
    }

    async fn refresh(&mut self) {
        let shared = &self.shared;
        let mut found = BTreeSet::new();
        let mut homes = std::collections::HashMap::new();
        for (index, target) in shared.targets.iter().enumerate() {
            let caller = match CallerId::parse(&format!("choria={}", target.signer.certname())) {
                Ok(caller) => caller,
                Err(_) => return,
            };
            let client = RpcClient::new(
                target.nats.clone(),
                target.signer.clone(),
                caller,
                shared.sender.clone(),
                Limits::default(),
            );
            let call = RpcCall {
                timeout: Duration::from_secs(5),
                idle: Duration::from_secs(2),
                ..RpcCall::new(&target.internal, "discovery", "ping")
            };
            let discovered = client
                .call(&call, |reply| {
                    // A routing key is at most 255 bytes.
                    let usable = reply.sender.len() <= 255
                        && crate::subjects::is_valid_dotted(&reply.sender);
                    if usable && found.len() < MAX_DIRECTED {
                        found.insert(reply.sender.clone());
                        homes.insert(reply.sender.clone(), index);
                    }
                })
                .await;
            // Bindings are only changed on a complete picture.
            if let Err(err) = discovered {
                tracing::warn!(legacy = %shared.name, collective = %target.collective, %err, "discovery for directed bindings failed");
                return;
            }
        }
        if let Ok(mut current) = shared.homes.write() {
            *current = homes;
        }
        let directed = format!("{}_directed", shared.legacy.collective);
        for node in found.difference(&self.bound.clone()) {
            let bound = self
                .channel
                .queue_bind(
                    self.queue.as_str().into(),
                    directed.as_str().into(),
                    node.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await;
            if bound.is_ok() {
                self.bound.insert(node.clone());
            }
        }
        for node in self.bound.difference(&found).cloned().collect::<Vec<_>>() {
            let unbound = self
                .channel
                .queue_unbind(
                    self.queue.as_str().into(),
                    directed.as_str().into(),
                    node.as_str().into(),
                    FieldTable::default(),
                )
                .await;
            if unbound.is_ok() {
                self.bound.remove(&node);
            }
        }
        metrics::gauge!("fedgate_legacy_directed_bindings", "legacy" => shared.name.clone())
            .set(self.bound.len() as f64);
        self.count
            .store(self.bound.len(), std::sync::atomic::Ordering::Relaxed);
    }
}
