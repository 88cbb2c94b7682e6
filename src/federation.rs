//! The Federation Broker: relays federated requests from a federation network into member
//! collectives (or member federations) and their replies back, keeping no state between the two.
//!
//! Every instance with the same config joins the same queue groups, so instances share the work
//! and any of them can answer any reply. Shutdown drains: subscriptions are closed, delivered
//! messages are finished, then the connections flush.

pub mod observe;
pub mod resign;
pub mod signers;
pub mod stats;
pub mod transform;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Member};
use crate::gateway::Gate;
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
    /// Policy and audit opened by the caller (shared with the WebSocket edge), whose watcher the
    /// caller runs; without it the broker opens its own when a federation re-signs.
    pub gate: Option<Arc<Gate>>,
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
    #[error("network {network}: {error}")]
    Connect {
        /// The collective or federation.
        network: String,
        /// The connection error, shown in this one's message (so not again as its source).
        error: NatsError,
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

impl From<crate::gateway::GateError> for BrokerError {
    fn from(err: crate::gateway::GateError) -> BrokerError {
        BrokerError::Config {
            federation: err.owner,
            problem: err.problem,
        }
    }
}

/// A running broker instance.
pub struct Broker {
    clusters: Vec<Arc<ClusterStats>>,
    networks: Arc<BTreeMap<String, async_nats::Client>>,
    /// Request workers and stats publishers; stopped first on shutdown.
    requests: TaskGroup,
    /// Reply workers; kept running while replies to relayed requests still arrive.
    replies: TaskGroup,
}

/// Tasks that stop together. Dropping the group aborts them, so a failed start leaves nothing.
#[derive(Default)]
struct TaskGroup {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl TaskGroup {
    /// Signals the tasks, waits for them until `deadline`, aborts the rest; true if all finished.
    async fn stop_by(&mut self, deadline: tokio::time::Instant) -> bool {
        self.stop.cancel();
        let finished = tokio::time::timeout_at(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        self.tasks.abort_all();
        finished
    }
}

/// How long replies must stop arriving before reply workers are stopped on shutdown.
const REPLY_QUIET: Duration = Duration::from_secs(1);

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
        if plans.is_empty() {
            return Err(BrokerError::Config {
                federation: "(none)".into(),
                problem: "the config defines no federation to serve".into(),
            });
        }
        let resigning = plans.iter().find(|(_, rules)| rules.resign.is_some());
        let gate = match (&options.gate, resigning) {
            (Some(gate), _) => Some(gate.clone()),
            (None, Some((name, _))) => {
                Some(crate::gateway::open_gate(config, name, &options.instance).await?)
            }
            (None, None) => None,
        };
        let networks = Arc::new(connect_networks(config, &plans, &options.instance).await?);
        let mut broker = Broker {
            clusters: Vec::new(),
            networks,
            requests: TaskGroup::default(),
            replies: TaskGroup::default(),
        };
        if let Some(gate) = &gate {
            if options.gate.is_none() {
                let watcher = gate
                    .rules
                    .watch(broker.requests.stop.clone())
                    .map_err(|e| BrokerError::Config {
                        federation: "(policy)".into(),
                        problem: format!("cannot watch the policy directory: {e}"),
                    })?;
                if let Some(watcher) = watcher {
                    broker.requests.tasks.spawn(async move {
                        let _ = watcher.await;
                    });
                }
            }
            // A gate the caller shares is the caller's to flush at its end: a broker handed
            // over to another must not close the requests the next one is counting.
            let flush = options.gate.is_none();
            broker.replies.tasks.spawn(complete_requests(
                gate.clone(),
                broker.replies.stop.clone(),
                flush,
            ));
        }
        for (name, rules) in plans {
            let stats = Arc::new(ClusterStats::new(&rules.cluster, &options.instance));
            let ctx = Arc::new(ClusterContext {
                federation: broker.networks[&name].clone(),
                federation_network: name.clone(),
                urls: crate::nats::ServerUrls::default(),
                networks: broker.networks.clone(),
                stats: stats.clone(),
                gate: rules.resign.as_ref().and(gate.clone()),
                rules,
            });
            broker.spawn_workers(&ctx, options.workers).await?;
            let stop = broker.requests.stop.clone();
            broker
                .requests
                .tasks
                .spawn(publish_stats(ctx, options.stats_interval, stop));
            broker.clusters.push(stats);
        }
        Ok(broker)
    }

    async fn spawn_workers(
        &mut self,
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
        let members: BTreeSet<&Destination> = ctx.rules.routes.values().collect();
        for destination in members {
            let member = self.networks[destination.network()].clone();
            let chained = matches!(destination, Destination::Federation { .. });
            let (subject, group) = if chained {
                (
                    format!("{}>", subjects::federation_reply_prefix(cluster)),
                    format!("{cluster}_reply"),
                )
            } else {
                (
                    subjects::federation_collective(cluster),
                    format!("{cluster}_collective"),
                )
            };
            let worker = Worker::Replies {
                ctx: ctx.clone(),
                member: member.clone(),
                network: destination.network().to_string(),
                chained,
            };
            subscriptions.push((member, subject, group, worker));
        }
        for (client, subject, group, worker) in subscriptions {
            let tasks = if matches!(worker, Worker::Requests(_)) {
                &mut self.requests
            } else {
                &mut self.replies
            };
            for _ in 0..workers.max(1) {
                let subscription = client
                    .queue_subscribe(subject.clone(), group.clone())
                    .await
                    .map_err(|source| BrokerError::Subscribe {
                        subject: subject.clone(),
                        source,
                    })?;
                tasks
                    .tasks
                    .spawn(worker.clone().run(subscription, tasks.stop.clone()));
            }
        }
        Ok(())
    }

    /// Current figures of every served cluster.
    pub fn snapshots(&self) -> Vec<ClusterSnapshot> {
        self.clusters.iter().map(|c| c.snapshot()).collect()
    }

    /// Drains within `grace`: stops taking requests and finishes those in hand, keeps relaying
    /// replies until they have been quiet for a second, then stops those too; whatever is still
    /// running at the deadline is aborted. Returns the final figures.
    ///
    /// Core NATS gives no redelivery: a message the server sent just before it processed the
    /// unsubscribe can still be lost, because async-nats stops delivering without waiting for the
    /// server's acknowledgement.
    pub async fn shutdown(mut self, grace: Duration) -> Drained {
        let deadline = tokio::time::Instant::now() + grace;
        let requests_done = self.requests.stop_by(deadline).await;
        let mut replies = self.reply_count();
        let mut quiet_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline && quiet_since.elapsed() < REPLY_QUIET {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.reply_count();
            if now != replies {
                replies = now;
                quiet_since = tokio::time::Instant::now();
            }
        }
        let replies_done = self.replies.stop_by(deadline).await;
        for client in self.networks.values() {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        }
        Drained {
            complete: requests_done && replies_done,
            clusters: self.snapshots(),
        }
    }

    fn reply_count(&self) -> u64 {
        self.clusters
            .iter()
            .map(|c| c.snapshot().collective.received)
            .sum()
    }
}

/// How a shutdown ended.
#[derive(Clone, Debug)]
pub struct Drained {
    /// True when every worker finished what it had received within the grace period.
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
        let (endpoint, kind) = match config.member(name) {
            Some(Member::Federation(f)) => (f.endpoint(), "federation"),
            Some(Member::Collective(c)) => (c.endpoint(), "collective"),
            Some(Member::Legacy(_)) => match config.served_on(name) {
                Some(c) => (c.endpoint(), "legacy"),
                None => {
                    return Err(BrokerError::Config {
                        federation: name.to_string(),
                        problem: "a legacy member needs the Choria collective it is served on"
                            .into(),
                    });
                }
            },
            None => {
                return Err(BrokerError::Config {
                    federation: name.to_string(),
                    problem: "no network is configured under this name".into(),
                });
            }
        };
        let what = format!("nats {kind} {name} (broker)");
        let client = nats::connect_watched(&endpoint, &format!("fedgate {instance}"), &what)
            .await
            .map_err(|error| BrokerError::Connect {
                network: name.to_string(),
                error,
            })?;
        networks.insert(name.to_string(), client);
    }
    Ok(networks)
}

/// Writes completion records as requests' reply windows close, and with `flush` the rest on
/// shutdown.
async fn complete_requests(gate: Arc<Gate>, stop: CancellationToken, flush: bool) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => gate.complete_due(false).await,
        }
    }
    if flush {
        gate.complete_due(true).await;
    }
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
