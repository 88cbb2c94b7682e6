//! What a simulated fleet did and refused, counted per node as a Choria server counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use fedgate::security::Reason;

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
    callers: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// Most distinct (caller id, signer) pairs a fleet keeps; later ones count under [`OTHER`].
pub const MAX_CALLERS: usize = 1024;
/// The caller id under which pairs beyond [`MAX_CALLERS`] are counted.
pub const OTHER: &str = "(other)";

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
    /// Dispatched requests by caller id, then by the certname that signed them, counted per
    /// node: who the fleet acted for, and on whose signature.
    pub callers: BTreeMap<String, BTreeMap<String, u64>>,
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

    /// Counts a dispatched request, and who it was for and signed by.
    pub(super) fn validated(&self, callerid: &str, signer: &str) {
        self.validated.fetch_add(1, Ordering::Relaxed);
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let pairs: usize = callers.values().map(BTreeMap::len).sum();
        let known = callers
            .get(callerid)
            .is_some_and(|signers| signers.contains_key(signer));
        let (callerid, signer) = if known || pairs < MAX_CALLERS {
            (callerid, signer)
        } else {
            (OTHER, OTHER)
        };
        *callers
            .entry(callerid.to_string())
            .or_default()
            .entry(signer.to_string())
            .or_default() += 1;
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
            callers: self
                .callers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

impl StatsSnapshot {
    /// Requests dispatched for `callerid` on `signer`'s signature.
    pub fn acted_for(&self, callerid: &str, signer: &str) -> u64 {
        self.callers
            .get(callerid)
            .and_then(|signers| signers.get(signer))
            .copied()
            .unwrap_or(0)
    }

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

    #[test]
    fn callers_are_counted_by_signer_and_bounded() {
        let stats = FleetStats::default();
        stats.validated("choria=alice.mcollective", "fedgate.privileged.mcollective");
        stats.validated("choria=alice.mcollective", "fedgate.privileged.mcollective");
        stats.validated("choria=alice.mcollective", "alice.mcollective");
        let snap = stats.snapshot();
        assert_eq!(
            snap.acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
            2
        );
        assert_eq!(
            snap.acted_for("choria=alice.mcollective", "alice.mcollective"),
            1
        );
        for i in 0..MAX_CALLERS + 10 {
            stats.validated(&format!("choria=u{i}.mcollective"), "s");
        }
        let snap = stats.snapshot();
        let pairs: usize = snap.callers.values().map(BTreeMap::len).sum();
        assert_eq!(pairs, MAX_CALLERS + 1);
        assert_eq!(snap.acted_for(OTHER, OTHER), 12);
        // A pair seen before the map filled keeps counting under its own name.
        stats.validated("choria=alice.mcollective", "alice.mcollective");
        assert_eq!(
            stats
                .snapshot()
                .acted_for("choria=alice.mcollective", "alice.mcollective"),
            2
        );
    }
}
