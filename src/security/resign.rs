//! Re-signing a verified request for another collective with fedgate's privileged certificate.
//!
//! Collective, caller id, TTL and filter sit inside the signed bytes (choria.md §1.8), so moving
//! a request between CAs means building a fresh `choria:request:1` and signing it as fedgate.
//! The request id and the agent payload are kept, so replies still correlate.

use super::{CallerId, KeyError, Now, Signer, VerifiedRequest};
use crate::wire::choria_v1::{Filter, MIN_TTL, Request, RequestEnvelope, SecureRequest};

/// What changes when a verified request is re-signed for a target collective.
#[derive(Clone, Copy, Debug)]
pub struct Resign<'a> {
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
        verified: &VerifiedRequest,
        signer: &Signer,
        now: Now,
    ) -> Result<SecureRequest, KeyError> {
        signer.sign_request(&self.request(verified, now))
    }

    /// The fresh request: same id, sender, agent and payload; mapped caller, target collective,
    /// the given filter, time `now` and [`resigned_ttl`].
    pub fn request(&self, verified: &VerifiedRequest, now: Now) -> Request {
        let original = verified.request();
        let env = &original.envelope;
        Request::new(
            original.message.clone(),
            RequestEnvelope {
                requestid: env.requestid.clone(),
                senderid: env.senderid.clone(),
                callerid: self.callerid.as_str().to_string(),
                collective: self.collective.to_string(),
                agent: env.agent.clone(),
                ttl: resigned_ttl(env.time, env.ttl, now, self.max_ttl),
                time: now.unix_seconds(),
                filter: self.filter.clone(),
            },
        )
    }
}

/// The TTL of a re-signed request stamped at `now`: what is left of the original's lifetime,
/// capped at `max_ttl`, and at least the schema's minimum of 30 seconds (so a request re-signed
/// in its last seconds may live up to 30 seconds longer than the original, never more).
pub fn resigned_ttl(time: i64, ttl: i64, now: Now, max_ttl: i64) -> i64 {
    let left = time.saturating_add(ttl).saturating_sub(now.unix_seconds());
    left.min(max_ttl).max(MIN_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_keeps_the_remaining_lifetime_within_bounds() {
        let now = Now::at_unix(1_000);
        assert_eq!(resigned_ttl(990, 60, now, 120), 50);
        assert_eq!(resigned_ttl(1_000, 600, now, 120), 120);
        assert_eq!(resigned_ttl(1_000 - 59, 60, now, 120), MIN_TTL);
        // A request stamped in the future keeps its whole window, capped.
        assert_eq!(resigned_ttl(1_030, 60, now, 300), 90);
        assert_eq!(resigned_ttl(i64::MAX, i64::MAX, now, 300), 300);
    }
}
