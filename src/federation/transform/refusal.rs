//! Why a Federation Broker did not relay a message: its own framing and routing refusals, and
//! the admission path's (resign mode), each with a counter of its own.

use crate::gateway::Refusal as Admission;
use crate::security::VerifyError;
use crate::wire::DecodeError;

/// Why a message was not relayed; each has its own counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The transport does not decode.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// There is no `federation` header.
    #[error("not federated: the message has no federation header")]
    NotFederated,
    /// `federation.req` is missing.
    #[error("missing request id: the federation header has no req")]
    MissingRequestId,
    /// `seen-by` already holds `max_hops` hops.
    #[error("max hops: the message has travelled {hops} hops, the limit is {max}")]
    MaxHops {
        /// Hops recorded.
        hops: usize,
        /// The limit.
        max: usize,
    },
    /// `seen-by` shows this instance already.
    #[error("loop: the message already passed through this instance ({label})")]
    Loop {
        /// This instance's hop label.
        label: String,
    },
    /// There is no reply subject.
    #[error("missing reply-to")]
    MissingReplyTo,
    /// The reply subject is not in the reply space.
    #[error("bad reply-to: {0:?} is not a reply subject")]
    BadReplyTo(String),
    /// The target list is empty.
    #[error("no targets")]
    NoTargets,
    /// More targets than allowed.
    #[error("too many targets: {count}, the limit is {max}")]
    TooManyTargets {
        /// Targets given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A target is neither a broadcast-agent nor a node subject.
    #[error(
        "bad target: {0:?} is neither <collective>.broadcast.agent.<agent> nor <collective>.node.<identity>"
    )]
    BadTarget(String),
    /// A target's collective is not reachable from this cluster.
    #[error("not a member: {0:?} is not in a member collective of this cluster")]
    NotMember(String),
    /// A reply from a member federation still carries a federation header.
    #[error("still federated: a member federation's reply must arrive without a federation header")]
    StillFederated,
    /// A reply's request id is not the one its federation header names (resign mode).
    #[error(
        "reply mismatch: the reply is for request {reply:?} but its federation header says {header:?}"
    )]
    ReplyMismatch {
        /// The reply envelope's request id.
        reply: String,
        /// `federation.req`.
        header: String,
    },
    /// Signing the re-built request failed.
    #[error("resign failed: {0}")]
    ResignFailed(String),
    /// The destination network's connection is down, so the request is answered at once
    /// instead of being held for a reconnect that may come after its TTL.
    #[error("unreachable: fedgate has no connection to {0} at the moment; try again shortly")]
    Unreachable(String),
    /// The admission path refused it (resign mode): verification, the call's checks, mapping,
    /// policy, the replay guard or the audit trail, with the same code as on every ingress.
    #[error("{0}")]
    Admission(#[from] crate::gateway::Refusal),
}

impl From<VerifyError> for Refusal {
    fn from(err: VerifyError) -> Refusal {
        Refusal::Admission(Admission::unverified(
            err.reason().as_str(),
            err.to_string(),
        ))
    }
}

impl Refusal {
    /// Every reason code, for counters, in [`Refusal::index`] order.
    pub const REASONS: [&'static str; 44] = [
        "malformed",
        "not_federated",
        "missing_request_id",
        "max_hops",
        "loop",
        "missing_reply_to",
        "bad_reply_to",
        "no_targets",
        "too_many_targets",
        "bad_target",
        "not_member",
        "still_federated",
        "unknown_ca",
        "expired_certificate",
        "invalid_certificate",
        "name_mismatch",
        "not_allowed",
        "bad_signature",
        "ttl_expired",
        "wrong_collective",
        "unsigned",
        "unmapped",
        "identity_denied",
        "bad_mapping",
        "reply_mismatch",
        "resign_failed",
        "bad_caller",
        "agent_mismatch",
        "denied",
        "audit_failed",
        "unreachable",
        "request_id_mismatch",
        "ttl_too_long",
        "expiring",
        "replay",
        "replay_full",
        "replay_unavailable",
        "unknown_agent",
        "unknown_action",
        "invalid_input",
        "invalid",
        "caller_kind",
        "own_request",
        "unknown_collective",
    ];

    /// Position of this refusal's reason in [`Refusal::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            Refusal::Malformed(_) => 0,
            Refusal::NotFederated => 1,
            Refusal::MissingRequestId => 2,
            Refusal::MaxHops { .. } => 3,
            Refusal::Loop { .. } => 4,
            Refusal::MissingReplyTo => 5,
            Refusal::BadReplyTo(_) => 6,
            Refusal::NoTargets => 7,
            Refusal::TooManyTargets { .. } => 8,
            Refusal::BadTarget(_) => 9,
            Refusal::NotMember(_) => 10,
            Refusal::StillFederated => 11,
            Refusal::ReplyMismatch { .. } => 24,
            Refusal::ResignFailed(_) => 25,
            // An admission code is counted under its own word; a verifier reason this list
            // lacks (none today) under `malformed`.
            Refusal::Admission(refusal) => Self::REASONS
                .iter()
                .position(|r| *r == refusal.code.as_str())
                .unwrap_or(0),
            Refusal::Unreachable(_) => 30,
        }
    }

    /// The reason code.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}
