//! A simulated Choria fleet: many nodes on one NATS connection, each checking requests as a
//! Choria server does (schema, signature, CA, caller, filter, collective, TTL) and answering.

mod actions;
pub mod agents;
mod handler;
mod node;
mod stats;
mod v2;

pub use node::{NodeSpec, generate};
pub use stats::{FleetStats, MAX_CALLERS, StatsSnapshot};
pub use v2::FleetV2;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use fedgate::security::Verifier;
use fedgate::subjects;
use fedgate::wire::Limits;

/// Default bound on requests handled at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Everything a fleet needs besides its NATS connection.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The simulated nodes.
    pub nodes: Vec<NodeSpec>,
    /// Checks requests against the collective's CA and name rules.
    pub verifier: Verifier,
    /// Decode limits.
    pub limits: Limits,
    /// Requests handled concurrently; further messages wait in the subscription buffer.
    pub max_in_flight: usize,
    /// Node-side actionpolicy, checked with each node's own facts and classes; `None` allows all.
    pub policy: Option<Arc<fedgate::policy::PolicySet>>,
    /// Agent DDLs each node validates inputs with, as a Choria server does; `None` validates none.
    pub ddl: Option<Arc<fedgate::ddl::DdlSet>>,
    /// Set for a Choria protocol v2 collective: its nodes take v2 requests only, verified
    /// against these issuers, and sign their replies. `None`: v1 against `verifier`.
    pub v2: Option<FleetV2>,
}

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Two nodes share an identity, or a name cannot be a subject token.
    #[error("invalid fleet: {0}")]
    Invalid(String),
    /// A subscription failed.
    #[error("could not subscribe to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The client's error.
        source: async_nats::SubscribeError,
    },
}

/// A running fleet; dropping it does not stop it, call [`Fleet::shutdown`].
pub struct Fleet {
    stats: Arc<FleetStats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    nodes: usize,
}

/// The nodes, indexed by identity and by collective.
pub(crate) struct Roster {
    nodes: Vec<NodeSpec>,
    by_identity: HashMap<String, usize>,
    by_collective: HashMap<String, Vec<usize>>,
}

impl Roster {
    fn new(nodes: Vec<NodeSpec>) -> Result<Self, FleetError> {
        let mut by_identity = HashMap::new();
        let mut by_collective: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if !subjects::is_valid_dotted(&node.identity) {
                return Err(FleetError::Invalid(format!(
                    "identity {:?} cannot be a subject",
                    node.identity
                )));
            }
            if by_identity.insert(node.identity.clone(), i).is_some() {
                return Err(FleetError::Invalid(format!(
                    "identity {} appears twice",
                    node.identity
                )));
            }
            for collective in &node.collectives {
                if !subjects::is_valid_token(collective) {
                    return Err(FleetError::Invalid(format!(
                        "collective {collective:?} cannot be a subject token"
                    )));
                }
                by_collective.entry(collective.clone()).or_default().push(i);
            }
        }
        Ok(Roster {
            nodes,
            by_identity,
            by_collective,
        })
    }

    /// Nodes that a real fleet would have delivered `subject` to.
    pub(crate) fn recipients(&self, subject: &str) -> Vec<&NodeSpec> {
        let Some((collective, rest)) = subject.split_once('.') else {
            return Vec::new();
        };
        let Some(members) = self.by_collective.get(collective) else {
            return Vec::new();
        };
        if let Some(agent) = rest.strip_prefix("broadcast.agent.") {
            return members
                .iter()
                .map(|i| &self.nodes[*i])
                .filter(|node| node.has_agent(agent))
                .collect();
        }
        if let Some(identity) = rest.strip_prefix("node.") {
            return self
                .by_identity
                .get(identity)
                .map(|i| &self.nodes[*i])
                .filter(|node| node.collectives.iter().any(|c| c == collective))
                .into_iter()
                .collect();
        }
        Vec::new()
    }

    fn subjects(&self) -> BTreeSet<String> {
        let mut subjects = BTreeSet::new();
        for (collective, members) in &self.by_collective {
            subjects.insert(subjects::node(collective, ">"));
            for i in members {
                for agent in &self.nodes[*i].agents {
                    subjects.insert(subjects::broadcast(collective, agent));
                }
            }
        }
        subjects
    }
}

impl Fleet {
    /// Subscribes for every node and starts answering.
    pub async fn start(
        client: async_nats::Client,
        mut config: FleetConfig,
    ) -> Result<Fleet, FleetError> {
        let roster = Roster::new(std::mem::take(&mut config.nodes))?;
        let mut subscriptions = Vec::new();
        for subject in roster.subjects() {
            let sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|source| FleetError::Subscribe { subject, source })?;
            subscriptions.push(sub);
        }
        client.flush().await.ok();
        let nodes = roster.nodes.len();
        let stats = Arc::new(FleetStats::default());
        let shutdown = CancellationToken::new();
        let max_in_flight = config.max_in_flight;
        let handler = Arc::new(handler::Handler::new(client, roster, config, stats.clone()));
        let messages = futures::stream::select_all(subscriptions);
        let limit = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let task = tokio::spawn(run(messages, handler, limit, shutdown.clone()));
        Ok(Fleet {
            stats,
            shutdown,
            task,
            nodes,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Number of simulated nodes.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// True when the fleet has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// Stops taking messages, waits for requests in hand, and returns the final counters.
    pub async fn shutdown(self) -> StatsSnapshot {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.stats.snapshot()
    }
}

async fn run(
    mut messages: futures::stream::SelectAll<async_nats::Subscriber>,
    handler: Arc<handler::Handler>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = messages.next() => message,
        };
        let Some(message) = message else { break };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        tracker.spawn(async move {
            handler.handle(&message.subject, &message.payload).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}
