//! What a simulated fleet did and refused, counted per node as a Choria server counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::security::Reason;

/// Live counters, shared by every handler task.
#[derive(Debug, Default)]
pub struct FleetStats {
    total: AtomicU64,
    validated: AtomicU64,
    unvalidated: AtomicU64,
    passed: AtomicU64,
    filtered: AtomicU64,
    replies: AtomicU64,
    unsupported_filter: AtomicU64,
    publish_errors: AtomicU64,
    refused: [AtomicU64; Reason::ALL.len()],
}

/// A point-in-time copy of [`FleetStats`], in Choria's counter names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Messages received, counted once per node that received them.
    pub total: u64,
    /// Requests that passed every check and were dispatched.
    pub validated: u64,
    /// Requests that failed decoding or security checks.
    pub unvalidated: u64,
    /// Requests whose filter matched.
    pub passed: u64,
    /// Requests whose filter did not match.
    pub filtered: u64,
    /// Replies published.
    pub replies: u64,
    /// Requests with a compound filter, which the simulator refuses.
    pub unsupported_filter: u64,
    /// Replies that could not be published.
    pub publish_errors: u64,
    /// Refusals by reason (`malformed`, `unknown_ca`, ...); only non-zero reasons appear.
    pub refused: BTreeMap<String, u64>,
}

impl FleetStats {
    pub(super) fn received(&self, nodes: u64) {
        self.total.fetch_add(nodes, Ordering::Relaxed);
    }

    /// Counts a refusal; decode and security refusals are also `unvalidated`, as in Choria.
    pub(super) fn refuse(&self, reason: Reason, nodes: u64) {
        self.refused[reason as usize].fetch_add(nodes, Ordering::Relaxed);
        if !matches!(reason, Reason::TtlExpired) {
            self.unvalidated.fetch_add(nodes, Ordering::Relaxed);
        }
    }

    pub(super) fn filtered(&self) {
        self.filtered.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn passed(&self) {
        self.passed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn validated(&self) {
        self.validated.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn replied(&self) {
        self.replies.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unsupported_filter(&self) {
        self.unsupported_filter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn publish_error(&self) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let refused = Reason::ALL
            .iter()
            .map(|reason| {
                (
                    reason.as_str().to_string(),
                    load(&self.refused[*reason as usize]),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        StatsSnapshot {
            total: load(&self.total),
            validated: load(&self.validated),
            unvalidated: load(&self.unvalidated),
            passed: load(&self.passed),
            filtered: load(&self.filtered),
            replies: load(&self.replies),
            unsupported_filter: load(&self.unsupported_filter),
            publish_errors: load(&self.publish_errors),
            refused,
        }
    }
}

impl StatsSnapshot {
    /// Refusals counted for `reason`.
    pub fn refused(&self, reason: Reason) -> u64 {
        self.refused.get(reason.as_str()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_reason() {
        let stats = FleetStats::default();
        stats.received(3);
        stats.refuse(Reason::UnknownCa, 3);
        stats.refuse(Reason::TtlExpired, 1);
        let snap = stats.snapshot();
        assert_eq!(snap.refused(Reason::UnknownCa), 3);
        assert_eq!(snap.refused(Reason::TtlExpired), 1);
        assert_eq!(snap.unvalidated, 3);
        assert_eq!(snap.refused(Reason::BadSignature), 0);
        assert!(!snap.refused.contains_key("bad_signature"));
    }
}
