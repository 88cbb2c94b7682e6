//! The checks every ingress makes the same way before a request is mapped: the agents agree,
//! the request id is the signed one, and the request has a sane and sufficient life left.

use serde_json::{Map, Value};

use super::refusal::{Code, Refusal, Stage};
use crate::wire::choria_v1::Request;
use crate::wire::{DecodeError, Limits};

pub use crate::config::{DEFAULT_MAX_SIGNED_TTL, DEFAULT_MIN_LIFE};

/// The agent Choria nodes dispatch on (the envelope's) must be the one the RPC body names, and
/// the one the request was routed by (a broadcast subject, an AMQP routing key), when it was.
pub fn agents_agree(body: &str, envelope: &str, route: Option<&str>) -> Result<(), Refusal> {
    let refuse = |what: String| Err(Refusal::new(Stage::Decode, Code::AgentMismatch, what));
    if body != envelope {
        return refuse(format!(
            "the payload is for agent {body} but the envelope names {envelope}"
        ));
    }
    match route {
        Some(route) if route != envelope => refuse(format!(
            "the request was routed to agent {route} but is signed for {envelope}"
        )),
        _ => Ok(()),
    }
}

/// The call as signed: what policy decides on and the nodes run.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The agent the envelope names (the one nodes dispatch on).
    pub agent: String,
    /// The action.
    pub action: String,
    /// The inputs.
    pub data: Map<String, Value>,
}

/// Why a Choria request holds no call fedgate can admit.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The payload is not an RPC request.
    #[error("{0}")]
    Malformed(#[from] DecodeError),
    /// The payload and the envelope disagree.
    #[error("{0}")]
    Refused(#[from] Refusal),
}

/// The call a verified Choria request makes. Discovery (a `ping` payload, as Go and Ruby clients
/// send it) is the action `discovery#ping` with no inputs, decided by policy like any other;
/// every other payload must be an RPC request for the envelope's agent.
pub fn choria_call(request: &Request, limits: &Limits) -> Result<Call, CallError> {
    let agent = &request.envelope.agent;
    if agent == "discovery" {
        return Ok(Call {
            agent: agent.clone(),
            action: "ping".into(),
            data: Map::new(),
        });
    }
    let body = request.rpc(limits)?;
    agents_agree(&body.agent, agent, None)?;
    Ok(Call {
        agent: body.agent,
        action: body.action,
        data: body.data,
    })
}

/// An unsigned header's request id (the federation's `req`) must be the signed one.
pub fn request_ids_agree(signed: &str, header: &str) -> Result<(), Refusal> {
    if signed == header {
        return Ok(());
    }
    Err(Refusal::new(
        Stage::Decode,
        Code::RequestIdMismatch,
        format!("the header names request {header:?} but the signed request is {signed:?}"),
    ))
}

/// How long a signed request may live and must still have to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Longest TTL a caller may sign, seconds.
    pub max_signed_ttl: i64,
    /// Least life left, seconds, for a request to be forwarded.
    pub min_life: i64,
}

impl Default for Lifetime {
    fn default() -> Lifetime {
        Lifetime {
            max_signed_ttl: DEFAULT_MAX_SIGNED_TTL,
            min_life: DEFAULT_MIN_LIFE,
        }
    }
}

impl Lifetime {
    /// The rules of `[replay]`.
    pub fn from_config(replay: &crate::config::ReplayConfig) -> Lifetime {
        Lifetime {
            max_signed_ttl: replay.max_signed_ttl,
            min_life: replay.min_life_s,
        }
    }

    /// Checks a signed `(time, ttl)` at `now` (Unix seconds) and returns when the request
    /// stops being valid. Refused: a TTL above the cap, and a request with less than `min_life`
    /// left, before anything is recorded as allowed.
    pub fn check(&self, time: i64, ttl: i64, now: i64) -> Result<i64, Refusal> {
        if ttl > self.max_signed_ttl {
            return Err(Refusal::new(
                Stage::Verify,
                Code::TtlTooLong,
                format!(
                    "the request is signed with a TTL of {ttl} s; fedgate accepts at most {} s",
                    self.max_signed_ttl
                ),
            ));
        }
        let until = time.saturating_add(ttl);
        let left = until.saturating_sub(now);
        if left < self.min_life {
            return Err(Refusal::new(
                Stage::Verify,
                Code::Expiring,
                format!(
                    "the request has {left} s of life left; fedgate forwards a request with at least {} s left",
                    self.min_life
                ),
            ));
        }
        Ok(until)
    }

    /// How long the bucket of a shared replay guard keeps claims: a request stamped up to one
    /// TTL in the future lives two TTLs, plus a minute for clocks.
    pub fn keep(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.max_signed_ttl.saturating_mul(2))
                .unwrap_or(0)
                .saturating_add(60),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_must_agree_across_body_envelope_and_route() {
        assert!(agents_agree("rpcutil", "rpcutil", Some("rpcutil")).is_ok());
        assert!(agents_agree("rpcutil", "rpcutil", None).is_ok());
        let err = agents_agree("rpcutil", "service", None).unwrap_err();
        assert_eq!((err.stage, err.code), (Stage::Decode, Code::AgentMismatch));
        assert!(err.reason.contains("service"), "{err}");
        let err = agents_agree("service", "service", Some("rpcutil")).unwrap_err();
        assert_eq!(err.code, Code::AgentMismatch);
    }

    #[test]
    fn the_header_request_id_must_be_the_signed_one() {
        assert!(request_ids_agree("a", "a").is_ok());
        assert_eq!(
            request_ids_agree("a", "b").unwrap_err().code,
            Code::RequestIdMismatch
        );
    }

    #[test]
    fn a_request_needs_a_capped_ttl_and_enough_life_left() {
        let life = Lifetime::default();
        assert_eq!(life.check(1_000, 60, 1_010), Ok(1_060));
        assert_eq!(
            life.check(1_000, 3_600, 1_010).unwrap_err().code,
            Code::TtlTooLong
        );
        assert_eq!(
            life.check(1_000, 60, 1_059).unwrap_err().code,
            Code::Expiring
        );
        assert_eq!(life.check(1_000, 60, 1_058), Ok(1_060));
        assert!(life.keep() >= std::time::Duration::from_secs(600));
    }
}
