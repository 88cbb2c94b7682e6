//! A bounded memory of signed requests already accepted, until their TTL ends.
//!
//! A request is claimed by the digest of what was signed. A broadcast claims it whole; a
//! directed copy claims it for one node, so the copies of one request for several nodes pass,
//! but none of them twice, and never as a broadcast too. When the window is full of live claims
//! it refuses rather than forget one. Expired claims are swept at most once a second, so the
//! window holds about what is live, not everything since it last filled.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// Most nodes one directed request may be claimed for.
const MAX_TARGETS: usize = 4096;

/// Why a claim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Already accepted within its TTL.
    #[error("replay: this signed request was already received")]
    Replay,
    /// Too many live claims to remember another.
    #[error("too many requests in the replay window; try again later")]
    Full,
}

struct Claim {
    until: i64,
    /// `None`: claimed as a broadcast.
    targets: Option<BTreeSet<String>>,
}

/// Claims by digest, at most `capacity` live ones.
pub struct ReplayWindow {
    claims: Mutex<HashMap<[u8; 32], Claim>>,
    capacity: usize,
    /// Unix second from which the next claim sweeps expired ones.
    next_sweep: AtomicI64,
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayWindow(capacity {})", self.capacity)
    }
}

impl ReplayWindow {
    /// A window of at most `capacity` live claims.
    pub fn new(capacity: usize) -> ReplayWindow {
        ReplayWindow {
            claims: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            next_sweep: AtomicI64::new(i64::MIN),
        }
    }

    /// Claims `digest` for `target` (a node) or as a broadcast (`None`) until `until`, at `now`
    /// (Unix seconds). Checking and recording are one step.
    pub fn claim(
        &self,
        digest: [u8; 32],
        target: Option<&str>,
        until: i64,
        now: i64,
    ) -> Result<(), ReplayError> {
        let Ok(mut claims) = self.claims.lock() else {
            return Err(ReplayError::Full);
        };
        if now >= self.next_sweep.load(Ordering::Relaxed) {
            self.next_sweep
                .store(now.saturating_add(1), Ordering::Relaxed);
            claims.retain(|_, claim| claim.until >= now);
        }
        if claims.len() >= self.capacity && !claims.contains_key(&digest) {
            claims.retain(|_, claim| claim.until >= now);
            if claims.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        let fresh = || Claim {
            until,
            targets: target.map(|t| BTreeSet::from([t.to_string()])),
        };
        match claims.get_mut(&digest) {
            Some(claim) if claim.until >= now => match (&mut claim.targets, target) {
                (Some(targets), Some(target))
                    if !targets.contains(target) && targets.len() < MAX_TARGETS =>
                {
                    targets.insert(target.to_string());
                    Ok(())
                }
                _ => Err(ReplayError::Replay),
            },
            _ => {
                claims.insert(digest, fresh());
                Ok(())
            }
        }
    }

    /// Gives back a claim that was never acted on (the request could not be forwarded and will
    /// be delivered again), so its next delivery is not taken for a replay.
    pub fn release(&self, digest: [u8; 32], target: Option<&str>) {
        let Ok(mut claims) = self.claims.lock() else {
            return;
        };
        let emptied = match (claims.get_mut(&digest), target) {
            (
                Some(Claim {
                    targets: Some(targets),
                    ..
                }),
                Some(target),
            ) => {
                targets.remove(target);
                targets.is_empty()
            }
            (Some(Claim { targets: None, .. }), None) => true,
            _ => false,
        };
        if emptied {
            claims.remove(&digest);
        }
    }

    /// Claims held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.claims.lock().map_or(0, |claims| claims.len())
    }

    /// Whether no claim is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most request ids one body may be counted under, whatever the configuration says.
pub const MAX_COPIES: usize = 64;

/// Why a copy was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// The body already went out under as many request ids as it may within its TTL.
    #[error("this signed body was already accepted under {0} request ids within its ttl")]
    TooMany(usize),
    /// Too many bodies tracked to remember another.
    #[error("too many requests in the replay window; try again later")]
    Full,
}

struct Copied {
    until: i64,
    /// The request ids it was accepted under (digests), in order.
    ids: Vec<[u8; 16]>,
}

/// The request ids each signed body was accepted under, for protocols (legacy MCollective)
/// that sign the body but not the request id: honest clients may send one body several times
/// under new ids, so each body may go out under a bounded number of them until its TTL ends.
pub struct CopyWindow {
    bodies: Mutex<HashMap<[u8; 32], Copied>>,
    capacity: usize,
    next_sweep: AtomicI64,
}

impl std::fmt::Debug for CopyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CopyWindow(capacity {})", self.capacity)
    }
}

impl CopyWindow {
    /// A window tracking at most `capacity` live bodies.
    pub fn new(capacity: usize) -> CopyWindow {
        CopyWindow {
            bodies: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            next_sweep: AtomicI64::new(i64::MIN),
        }
    }

    /// Accepts body `digest` under request id `id` until `until`, at `now`: the id's place
    /// among the ids the body went out under (0: the first), the same place when the id is
    /// already known, or a refusal once `limit` ids are held.
    pub fn copy(
        &self,
        digest: [u8; 32],
        id: [u8; 16],
        limit: usize,
        until: i64,
        now: i64,
    ) -> Result<usize, CopyError> {
        let Ok(mut bodies) = self.bodies.lock() else {
            return Err(CopyError::Full);
        };
        if now >= self.next_sweep.load(Ordering::Relaxed) {
            self.next_sweep
                .store(now.saturating_add(1), Ordering::Relaxed);
            bodies.retain(|_, held| held.until >= now);
        }
        match bodies.get_mut(&digest) {
            Some(held) if held.until >= now => {
                if let Some(place) = held.ids.iter().position(|known| *known == id) {
                    return Ok(place);
                }
                if held.ids.len() >= limit.max(1) {
                    return Err(CopyError::TooMany(held.ids.len()));
                }
                held.ids.push(id);
                held.until = held.until.max(until);
                Ok(held.ids.len() - 1)
            }
            _ => {
                if bodies.len() >= self.capacity && !bodies.contains_key(&digest) {
                    bodies.retain(|_, held| held.until >= now);
                    if bodies.len() >= self.capacity {
                        return Err(CopyError::Full);
                    }
                }
                bodies.insert(
                    digest,
                    Copied {
                        until,
                        ids: vec![id],
                    },
                );
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_claims_are_swept_long_before_the_window_fills() {
        let window = ReplayWindow::new(1_000_000);
        for n in 0..100u8 {
            window.claim([n; 32], None, 5, 0).unwrap();
        }
        assert_eq!(window.len(), 100);
        // Within the same second nothing is swept; a second later the expired claims go.
        window.claim([200; 32], None, 60, 0).unwrap();
        assert_eq!(window.len(), 101);
        window.claim([201; 32], None, 60, 6).unwrap();
        assert_eq!(window.len(), 2);
        assert_eq!(
            window.claim([200; 32], None, 60, 6),
            Err(ReplayError::Replay)
        );
    }

    #[test]
    fn broadcasts_and_directed_copies_are_claimed_once() {
        let window = ReplayWindow::new(2);
        let a = [1; 32];
        assert_eq!(window.claim(a, Some("n1"), 100, 0), Ok(()));
        assert_eq!(window.claim(a, Some("n2"), 100, 0), Ok(()));
        assert_eq!(
            window.claim(a, Some("n2"), 100, 0),
            Err(ReplayError::Replay)
        );
        assert_eq!(window.claim(a, None, 100, 0), Err(ReplayError::Replay));
        let b = [2; 32];
        assert_eq!(window.claim(b, None, 100, 0), Ok(()));
        assert_eq!(
            window.claim(b, Some("n1"), 100, 0),
            Err(ReplayError::Replay)
        );
        // Full of live claims: refused, not forgotten.
        assert_eq!(window.claim([3; 32], None, 100, 0), Err(ReplayError::Full));
        // Once they expire, the window has room again, and an expired claim may be made anew.
        assert_eq!(window.claim([3; 32], None, 300, 200), Ok(()));
        assert_eq!(window.claim(a, None, 300, 200), Ok(()));
    }

    #[test]
    fn a_released_claim_may_be_made_again_and_only_that_one() {
        let window = ReplayWindow::new(8);
        let a = [1; 32];
        window.claim(a, Some("n1"), 100, 0).unwrap();
        window.claim(a, Some("n2"), 100, 0).unwrap();
        window.release(a, Some("n1"));
        assert_eq!(window.claim(a, Some("n1"), 100, 0), Ok(()));
        assert_eq!(
            window.claim(a, Some("n2"), 100, 0),
            Err(ReplayError::Replay)
        );
        // A broadcast release does not free directed copies, nor the other way round.
        window.release(a, None);
        assert_eq!(
            window.claim(a, Some("n2"), 100, 0),
            Err(ReplayError::Replay)
        );
        let b = [2; 32];
        window.claim(b, None, 100, 0).unwrap();
        window.release(b, Some("n1"));
        assert_eq!(window.claim(b, None, 100, 0), Err(ReplayError::Replay));
        window.release(b, None);
        assert_eq!(window.claim(b, None, 100, 0), Ok(()));
    }

    #[test]
    fn a_body_goes_out_under_a_bounded_number_of_request_ids() {
        let window = CopyWindow::new(2);
        let body = [1; 32];
        assert_eq!(window.copy(body, [1; 16], 3, 100, 0), Ok(0));
        assert_eq!(window.copy(body, [2; 16], 3, 100, 0), Ok(1));
        // The same id again (another directed copy of one request) keeps its place.
        assert_eq!(window.copy(body, [1; 16], 3, 100, 0), Ok(0));
        assert_eq!(window.copy(body, [3; 16], 3, 100, 0), Ok(2));
        assert_eq!(
            window.copy(body, [4; 16], 3, 100, 0),
            Err(CopyError::TooMany(3))
        );
        // Another body is counted on its own; a third does not fit until they expire.
        assert_eq!(window.copy([2; 32], [4; 16], 3, 100, 0), Ok(0));
        assert_eq!(
            window.copy([3; 32], [4; 16], 3, 100, 0),
            Err(CopyError::Full)
        );
        assert_eq!(window.copy(body, [4; 16], 3, 300, 200), Ok(0));
    }
}
