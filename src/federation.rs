//! The Federation Broker: relays federated requests from a federation network into member
//! collectives (or member federations) and their replies back, keeping no state between the two.
//!
//! Every instance with the same config joins the same queue groups, so instances share the work
//! and any of them can answer any reply. Shutdown drains: subscriptions are closed, delivered
//! messages are finished, then the connections flush.

pub mod observe;
pub mod stats;
pub mod transform;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Member};
use crate::nats::{self, NatsError};
use crate::subjects;
use crate::wire::Limits;
use stats::{ClusterSnapshot, ClusterStats};
use transform::{ClusterRules, Destination};
use worker::{ClusterContext, Worker};

/// How one broker process runs.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Instance name, unique within each cluster.
    pub instance: String,
    /// Queue subscriptions per subject, each served by its own task.
    pub workers: usize,
    /// Time between stats publications.
    pub stats_interval: Duration,
    /// Decode limits.
    pub limits: Limits,
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The config does not describe a servable federation.
    #[error("federation {federation}: {problem}")]
    Config {
        /// The federation.
        federation: String,
        /// What is wrong.
        problem: String,
    },
    /// A network could not be reached.
    #[error("network {network}: {source}")]
    Connect {
        /// The collective or federation.
        network: String,
        /// The connection error.
        source: NatsError,
    },
    /// A subscription failed.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The client's error.
        source: async_nats::SubscribeError,
    },
}

/// A running broker instance.
pub struct Broker {
    clusters: Vec<Arc<ClusterStats>>,
    networks: Arc<BTreeMap<String, async_nats::Client>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Broker {
    /// Connects to every network the served federations need and starts relaying.
    pub async fn start(config: &Config, options: BrokerOptions) -> Result<Broker, BrokerError> {
        let mut plans = Vec::new();
        for name in config.served_federations() {
            let rules = ClusterRules::from_config(config, name, &options.instance, options.limits)
                .map_err(|problem| BrokerError::Config {
                    federation: name.to_string(),
                    problem,
                })?;
            plans.push((name.to_string(), rules));
        }
        let networks = Arc::new(connect_networks(config, &plans, &options.instance).await?);
        let broker = Broker {
            clusters: Vec::new(),
            networks,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        broker.spawn_clusters(plans, &options).await
    }

    async fn spawn_clusters(
        mut self,
        plans: Vec<(String, ClusterRules)>,
        options: &BrokerOptions,
    ) -> Result<Broker, BrokerError> {
        for (name, rules) in plans {
            let stats = Arc::new(ClusterStats::new(&rules.cluster, &options.instance));
            let ctx = Arc::new(ClusterContext {
                federation: self.networks[&name].clone(),
                networks: self.networks.clone(),
                stats: stats.clone(),
                rules,
            });
            self.spawn_workers(&ctx, options.workers).await?;
            self.tasks.spawn(publish_stats(
                ctx.clone(),
                options.stats_interval,
                self.shutdown.clone(),
            ));
            self.clusters.push(stats);
        }
        Ok(self)
    }

    async fn spawn_workers(
        &self,
        ctx: &Arc<ClusterContext>,
        workers: usize,
    ) -> Result<(), BrokerError> {
        let cluster = &ctx.rules.cluster;
        let mut subscriptions = vec![(
            ctx.federation.clone(),
            subjects::federation_ingest(cluster),
            format!("{cluster}_federation"),
            Worker::Requests(ctx.clone()),
        )];
        let mut members: Vec<&Destination> = ctx.rules.routes.values().collect();
        members.sort();
        members.dedup();
        for destination in members {
            let client = self.networks[destination.network()].clone();
            subscriptions.push(match destination {
                Destination::Collective(_) => (
                    client.clone(),
                    subjects::federation_collective(cluster),
                    format!("{cluster}_collective"),
                    Worker::Replies(ctx.clone(), client),
                ),
                Destination::Federation { .. } => (
                    client.clone(),
                    format!("{}>", subjects::federation_reply_prefix(cluster)),
                    format!("{cluster}_reply"),
                    Worker::ChainedReplies(ctx.clone(), client),
                ),
            });
        }
        for (client, subject, group, worker) in subscriptions {
            for _ in 0..workers.max(1) {
                let subscription = client
                    .queue_subscribe(subject.clone(), group.clone())
                    .await
                    .map_err(|source| BrokerError::Subscribe {
                        subject: subject.clone(),
                        source,
                    })?;
                self.tasks
                    .spawn(worker.clone().run(subscription, self.shutdown.clone()));
            }
        }
        Ok(())
    }

    /// Current figures of every served cluster.
    pub fn snapshots(&self) -> Vec<ClusterSnapshot> {
        self.clusters.iter().map(|c| c.snapshot()).collect()
    }

    /// Stops taking messages, finishes those in hand within `grace`, flushes, and returns the
    /// final figures.
    pub async fn shutdown(self, grace: Duration) -> Drained {
        self.shutdown.cancel();
        self.tasks.close();
        let complete = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        for client in self.networks.values() {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        }
        Drained {
            complete,
            clusters: self.clusters.iter().map(|c| c.snapshot()).collect(),
        }
    }
}

/// How a shutdown ended.
#[derive(Clone, Debug)]
pub struct Drained {
    /// True when every message in hand was finished within the grace period.
    pub complete: bool,
    /// Final figures of every served cluster.
    pub clusters: Vec<ClusterSnapshot>,
}

async fn connect_networks(
    config: &Config,
    plans: &[(String, ClusterRules)],
    instance: &str,
) -> Result<BTreeMap<String, async_nats::Client>, BrokerError> {
    let mut names: Vec<&str> = plans.iter().map(|(name, _)| name.as_str()).collect();
    names.extend(
        plans
            .iter()
            .flat_map(|(_, rules)| rules.routes.values().map(Destination::network)),
    );
    names.sort();
    names.dedup();
    let mut networks = BTreeMap::new();
    for name in names {
        let endpoint = match config.member(name) {
            Some(Member::Federation(f)) => f.endpoint(),
            Some(Member::Collective(c)) => c.endpoint(),
            None => {
                return Err(BrokerError::Config {
                    federation: name.to_string(),
                    problem: "no network is configured under this name".into(),
                });
            }
        };
        let client = nats::connect(&endpoint, &format!("fedgate {instance}"))
            .await
            .map_err(|source| BrokerError::Connect {
                network: name.to_string(),
                source,
            })?;
        networks.insert(name.to_string(), client);
    }
    Ok(networks)
}

/// Publishes the cluster's figures every `interval`, and once more on shutdown.
async fn publish_stats(ctx: Arc<ClusterContext>, interval: Duration, shutdown: CancellationToken) {
    let subject = subjects::federation_stats(&ctx.rules.cluster);
    let mut ticker = tokio::time::interval(interval);
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if let Ok(json) = serde_json::to_vec(&ctx.stats.snapshot())
            && let Err(err) = ctx.federation.publish(subject.clone(), json.into()).await
        {
            tracing::warn!(%err, "could not publish stats");
        }
        if stop {
            return;
        }
    }
}
