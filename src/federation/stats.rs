//! What a broker instance relayed, refused and failed, per cluster and direction; mirrored to
//! Prometheus under go-choria's `choria_federation_*` names (labelled `identity` with the
//! instance name, as go-choria labels its broker's identity) and published for `fedgate observe`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::transform::Refusal;
use crate::security::Now;

/// Which way messages flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Federation network to member networks.
    Request,
    /// Member networks back to the federation network.
    Reply,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        }
    }
}

/// Counters for one direction, with their Prometheus twins.
struct Side {
    received: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    last_message: AtomicI64,
    refused: [AtomicU64; Refusal::REASONS.len()],
    metrics: SideMetrics,
}

struct SideMetrics {
    received: Counter,
    sent: Counter,
    errors: Counter,
    refused: Vec<Counter>,
    /// go-choria's `choria_federation_time`, a summary.
    time: Histogram,
    /// `fedgate_federation_processing_duration_seconds`, with buckets.
    duration: Histogram,
}

impl Side {
    fn new(cluster: &str, instance: &str, direction: Direction) -> Self {
        let labels = [
            ("cluster", cluster.to_string()),
            ("identity", instance.to_string()),
            ("direction", direction.as_str().to_string()),
        ];
        // fedgate's own metrics leave the instance to the scrape target's labels.
        let own = [
            ("cluster", cluster.to_string()),
            ("direction", direction.as_str().to_string()),
        ];
        let refused = Refusal::REASONS
            .iter()
            .map(|reason| {
                let mut with_reason = own.to_vec();
                with_reason.push(("reason", reason.to_string()));
                metrics::counter!("fedgate_federation_refused_total", &with_reason)
            })
            .collect();
        Side {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_message: AtomicI64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            metrics: SideMetrics {
                received: metrics::counter!("choria_federation_received_msgs", &labels),
                sent: metrics::counter!("choria_federation_published_msgs", &labels),
                errors: metrics::counter!("choria_federation_errors", &labels),
                refused,
                time: metrics::histogram!("choria_federation_time", &labels),
                duration: metrics::histogram!(
                    "fedgate_federation_processing_duration_seconds",
                    &own
                ),
            },
        }
    }

    fn snapshot(&self) -> SideSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SideSnapshot {
            received: load(&self.received),
            sent: load(&self.sent),
            errors: load(&self.errors),
            last_message: self.last_message.load(Ordering::Relaxed),
            refused: Refusal::REASONS
                .iter()
                .zip(&self.refused)
                .map(|(reason, count)| (reason.to_string(), load(count)))
                .filter(|(_, count)| *count > 0)
                .collect(),
        }
    }
}

/// Live counters of one cluster served by this instance.
pub struct ClusterStats {
    cluster: String,
    instance: String,
    start_time: i64,
    request: Side,
    reply: Side,
}

/// A copy of [`ClusterStats`] in the shape the Ruby broker published (`federation` is the request
/// side, `collective` the reply side), extended with refusals and errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// fedgate version.
    pub version: String,
    /// Instance start, unix seconds.
    pub start_time: i64,
    /// Cluster name.
    pub cluster: String,
    /// Instance name.
    pub instance: String,
    /// `OK` while serving.
    pub status: String,
    /// Requests taken from the federation network.
    pub federation: SideSnapshot,
    /// Replies taken from member networks.
    pub collective: SideSnapshot,
}

/// One direction's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideSnapshot {
    /// Messages received.
    pub received: u64,
    /// Messages published.
    pub sent: u64,
    /// Publishes that failed.
    pub errors: u64,
    /// Time of the last message, unix seconds.
    pub last_message: i64,
    /// Refusals by reason.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
}

impl SideSnapshot {
    /// Refusals counted for `reason`.
    pub fn refused(&self, reason: &str) -> u64 {
        self.refused.get(reason).copied().unwrap_or(0)
    }
}

impl ClusterStats {
    /// Counters for `cluster` on `instance`.
    pub fn new(cluster: &str, instance: &str) -> Self {
        ClusterStats {
            cluster: cluster.to_string(),
            instance: instance.to_string(),
            start_time: Now::system().unix_seconds(),
            request: Side::new(cluster, instance, Direction::Request),
            reply: Side::new(cluster, instance, Direction::Reply),
        }
    }

    fn side(&self, direction: Direction) -> &Side {
        match direction {
            Direction::Request => &self.request,
            Direction::Reply => &self.reply,
        }
    }

    /// Counts a received message.
    pub fn received(&self, direction: Direction) {
        let side = self.side(direction);
        side.received.fetch_add(1, Ordering::Relaxed);
        side.last_message
            .store(Now::system().unix_seconds(), Ordering::Relaxed);
        side.metrics.received.increment(1);
    }

    /// Counts a publish.
    pub fn sent(&self, direction: Direction) {
        let side = self.side(direction);
        side.sent.fetch_add(1, Ordering::Relaxed);
        side.metrics.sent.increment(1);
    }

    /// Counts a failed publish.
    pub fn error(&self, direction: Direction) {
        let side = self.side(direction);
        side.errors.fetch_add(1, Ordering::Relaxed);
        side.metrics.errors.increment(1);
    }

    /// Counts a refusal under its reason.
    pub fn refused(&self, direction: Direction, refusal: &Refusal) {
        let side = self.side(direction);
        let index = refusal.index();
        side.refused[index].fetch_add(1, Ordering::Relaxed);
        side.metrics.refused[index].increment(1);
    }

    /// Records the processing time of one relayed message.
    pub fn timed(&self, direction: Direction, elapsed: Duration) {
        let metrics = &self.side(direction).metrics;
        metrics.time.record(elapsed.as_secs_f64());
        metrics.duration.record(elapsed.as_secs_f64());
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: self.start_time,
            cluster: self.cluster.clone(),
            instance: self.instance.clone(),
            status: "OK".into(),
            federation: self.request.snapshot(),
            collective: self.reply.snapshot(),
        }
    }
}
