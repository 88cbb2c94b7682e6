//! Re-signing a verified request for another collective with fedgate's privileged certificate.
//!
//! Collective, caller id, TTL and filter sit inside the signed bytes (choria.md §1.8), so moving
//! a request between CAs means building a fresh `choria:request:1` and signing it as fedgate.
//! The agent payload is kept, and so is the request id unless the request crosses protocols
//! (`Resign::requestid`), so replies still correlate.

use super::{CallerId, KeyError, Now, Signer};
use crate::wire::choria_v1::{Filter, MIN_TTL, Request, RequestEnvelope, SecureRequest};

/// What changes when a verified request is re-signed for a target collective.
#[derive(Clone, Copy, Debug)]
pub struct Resign<'a> {
    /// The request id to sign: the original's, or the one it travels under in the other
    /// protocol (`wire::choria_v2::derived_request_id`).
    pub requestid: &'a str,
    /// The mapped caller id.
    pub callerid: &'a CallerId,
    /// The collective name inside the envelope (the target's internal name).
    pub collective: &'a str,
    /// The filter to send: the original, plus anything policy adds.
    pub filter: &'a Filter,
    /// Longest TTL the re-signed request may carry.
    pub max_ttl: i64,
}

impl Resign<'_> {
    /// Builds the re-signed request at `now` and signs it with `signer`.
    pub fn sign(
        &self,
        original: &Request,
        signer: &Signer,
        now: Now,
    ) -> Result<SecureRequest, KeyError> {
        signer.sign_request(&self.request(original, now))
    }

    /// The fresh request: same sender, agent and payload; the given id, mapped caller, target
    /// collective and filter, and the time and TTL of [`resigned_window`].
    pub fn request(&self, original: &Request, now: Now) -> Request {
        let env = &original.envelope;
        let (time, ttl) = resigned_window(env.time, env.ttl, now, self.max_ttl);
        Request::new(
            original.message.clone(),
            RequestEnvelope {
                requestid: self.requestid.to_string(),
                senderid: env.senderid.clone(),
                callerid: self.callerid.as_str().to_string(),
                collective: self.collective.to_string(),
                agent: env.agent.clone(),
                ttl,
                time,
                filter: self.filter.clone(),
            },
        )
    }
}

/// The `(time, ttl)` of a request re-signed at `now`, never outliving the original.
///
/// Normally the time is `now` and the TTL what is left of the original's lifetime, capped at
/// `max_ttl`. When less than the schema's minimum TTL of 30 seconds is left, the TTL is 30 and
/// the time is set back so that the request expires exactly when the original does (Choria
/// accepts a request while `now - ttl < time < now + ttl`).
pub fn resigned_window(time: i64, ttl: i64, now: Now, max_ttl: i64) -> (i64, i64) {
    let expires = time.saturating_add(ttl);
    let at = now.unix_seconds();
    let left = expires.saturating_sub(at);
    if left >= MIN_TTL {
        (at, left.min(max_ttl))
    } else {
        (expires.saturating_sub(MIN_TTL), MIN_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::security::check_ttl;
    use crate::wire::choria_v1::{Filter, RequestEnvelope};

    fn envelope(time: i64, ttl: i64) -> Request {
        Request::new(
            "{}".into(),
            RequestEnvelope {
                requestid: "0".repeat(32),
                senderid: "s".into(),
                callerid: "choria=a.mcollective".into(),
                collective: "c".into(),
                agent: "rpcutil".into(),
                ttl,
                time,
                filter: Filter::default(),
            },
        )
    }

    #[test]
    fn the_window_keeps_the_remaining_lifetime_within_bounds() {
        let now = Now::at_unix(1_000);
        assert_eq!(resigned_window(990, 60, now, 120), (1_000, 50));
        assert_eq!(resigned_window(1_000, 600, now, 120), (1_000, 120));
        // 1 s left: TTL 30, time set back so both expire at 1_001.
        assert_eq!(resigned_window(941, 60, now, 120), (971, MIN_TTL));
        // A request stamped in the future keeps its whole window, capped.
        assert_eq!(resigned_window(1_030, 60, now, 300), (1_000, 90));
        assert_eq!(resigned_window(i64::MAX, i64::MAX, now, 300), (1_000, 300));
    }

    /// Whenever the original is valid at `now`, the re-signed request is valid at `now` and
    /// stops being valid no later than the original, checked with Choria's own TTL rule.
    #[test]
    fn a_resigned_request_never_outlives_the_original() {
        let start = 10_000;
        for ttl in [30, 31, 45, 60, 61, 300, 3_600] {
            for age in -ttl + 1..ttl {
                let time = start - age;
                let original = envelope(time, ttl);
                let now = Now::at_unix(start as u64);
                if check_ttl(&original, now).is_err() {
                    continue;
                }
                let (t, l) = resigned_window(time, ttl, now, 60);
                let resigned = envelope(t, l);
                assert!(
                    check_ttl(&resigned, now).is_ok(),
                    "ttl {ttl} age {age}: ({t}, {l})"
                );
                assert!(l <= 60.max(MIN_TTL));
                for later in 0..=2 * ttl {
                    let at = Now::at_unix((start + later) as u64);
                    if check_ttl(&original, at).is_err() {
                        assert!(
                            check_ttl(&resigned, at).is_err(),
                            "ttl {ttl} age {age}: re-signed still valid {later}s on"
                        );
                    }
                }
            }
        }
    }
}
