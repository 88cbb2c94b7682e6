//! Why the admission path refused a request: a stage, a stable code and the reason the caller
//! is told, the same on every ingress, in its metrics, its audit records and its answers.

use super::replay::ReplayRefusal;
use crate::audit::{AuditError, Event, Verdict};
use crate::ddl::InputError;
use crate::policy::Denied;
use crate::security::identity::Denial;

/// Where on the path a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The call as signed does not hold together.
    Decode,
    /// The collective, at this ingress.
    Route,
    /// The caller or its window.
    Verify,
    /// The call against the agent's DDL.
    Validate,
    /// The replay guard.
    Replay,
    /// Identity mapping.
    Map,
    /// Policy.
    Authorize,
    /// The audit trail.
    Audit,
}

impl Stage {
    /// The stage as written in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Route => "route",
            Stage::Verify => "verify",
            Stage::Validate => "validate",
            Stage::Replay => "replay",
            Stage::Map => "map",
            Stage::Authorize => "authorize",
            Stage::Audit => "audit",
        }
    }
}

/// A stable refusal code: the same word in the audit record, the counters and the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The ingress's own framing did not hold (`malformed`, `bad_reply_to`, `bad_route`, ...):
    /// the one part of a refusal each ingress words itself.
    Framing(&'static str),
    /// The call as signed is not a valid request.
    Invalid,
    /// The body, the envelope and the route name different agents.
    AgentMismatch,
    /// An unsigned header names another request id than the signed one.
    RequestIdMismatch,
    /// The signature, certificate or window did not verify; the verifier's own stable reason
    /// (`unknown_ca`, `bad_signature`, `ttl_expired`, `unknown_caller`, ...).
    Unverified(&'static str),
    /// A certificate spoke as a caller kind it does not carry.
    CallerKind,
    /// fedgate signed it itself: it never takes back what it published.
    OwnRequest,
    /// The caller signed a longer TTL than fedgate accepts.
    TtlTooLong,
    /// Too little of the request's life is left to forward it.
    Expiring,
    /// No DDL describes the agent.
    UnknownAgent,
    /// The agent's DDL has no such action.
    UnknownAction,
    /// An input is missing, unknown, or fails its DDL type or validation.
    InvalidInput,
    /// Already forwarded there.
    Replay,
    /// The replay guard is full.
    ReplayFull,
    /// The replay guard cannot be reached.
    ReplayUnavailable,
    /// The collective is not reachable from this ingress with these credentials.
    UnknownCollective,
    /// No identity rule maps the caller.
    Unmapped,
    /// A `deny = true` identity rule matched.
    IdentityDenied,
    /// The matching rule's result is not a valid caller id.
    BadMapping,
    /// The caller id text was not verified, so no rule may map it.
    BadCaller,
    /// Policy refused the mapped caller.
    Denied,
    /// The decision could not be recorded, so nothing was forwarded.
    AuditFailed,
}

impl Code {
    /// The code as a snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Framing(word) => word,
            Code::Invalid => "invalid",
            Code::AgentMismatch => "agent_mismatch",
            Code::RequestIdMismatch => "request_id_mismatch",
            Code::Unverified(reason) => reason,
            Code::CallerKind => "caller_kind",
            Code::OwnRequest => "own_request",
            Code::TtlTooLong => "ttl_too_long",
            Code::Expiring => "expiring",
            Code::UnknownAgent => "unknown_agent",
            Code::UnknownAction => "unknown_action",
            Code::InvalidInput => "invalid_input",
            Code::Replay => "replay",
            Code::ReplayFull => "replay_full",
            Code::ReplayUnavailable => "replay_unavailable",
            Code::UnknownCollective => "unknown_collective",
            Code::Unmapped => "unmapped",
            Code::IdentityDenied => "identity_denied",
            Code::BadMapping => "bad_mapping",
            Code::BadCaller => "bad_caller",
            Code::Denied => "denied",
            Code::AuditFailed => "audit_failed",
        }
    }
}

/// A refusal by the admission path: what every ingress records, counts and tells its caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct Refusal {
    /// Where it was refused.
    pub stage: Stage,
    /// The stable code.
    pub code: Code,
    /// What the caller is told.
    pub reason: String,
    /// The identity rule or policy line that decided, if one did.
    pub rule: Option<String>,
}

impl Refusal {
    /// A refusal at `stage` with `code`.
    pub fn new(stage: Stage, code: Code, reason: impl Into<String>) -> Refusal {
        Refusal {
            stage,
            code,
            reason: reason.into(),
            rule: None,
        }
    }

    /// A message the ingress could not take apart.
    pub fn framing(word: &'static str, why: impl Into<String>) -> Refusal {
        Refusal::new(Stage::Decode, Code::Framing(word), why)
    }

    /// A caller the verifier refused, with its stable reason (`unknown_ca`, ...).
    pub fn unverified(reason: &'static str, why: impl Into<String>) -> Refusal {
        Refusal::new(Stage::Verify, Code::Unverified(reason), why)
    }

    /// The identity rules did not let `caller` into `collective`.
    pub fn unmapped(denial: &Denial, caller: &str, collective: &str) -> Refusal {
        let code = match denial {
            Denial::NoRule { .. } => Code::Unmapped,
            Denial::DenyRule { .. } => Code::IdentityDenied,
            Denial::BadResult { .. } => Code::BadMapping,
            Denial::UnverifiedText { .. } => Code::BadCaller,
        };
        Refusal {
            rule: denial.rule().map(ToString::to_string),
            ..Refusal::new(
                Stage::Map,
                code,
                format!("{caller} may not act in {collective}: {denial}"),
            )
        }
    }

    /// Policy refused the mapped caller.
    pub fn denied(denied: &Denied) -> Refusal {
        Refusal {
            rule: Some(denied.source.to_string()),
            ..Refusal::new(
                Stage::Authorize,
                Code::Denied,
                format!("{} (rule {})", denied.reason, denied.source),
            )
        }
    }

    /// The decision record could not be written, so nothing was forwarded.
    pub fn unrecorded(err: &AuditError) -> Refusal {
        Refusal::new(
            Stage::Audit,
            Code::AuditFailed,
            format!("the request could not be recorded, so it was not sent: {err}"),
        )
    }

    /// Marks `event` as this refusal: the one way a refusal reaches the audit trail. A rule
    /// already on the record (the one that admitted it, for a replay) stays unless this
    /// refusal names its own.
    pub fn mark(&self, event: &mut Event) {
        event.decision = Some(Verdict::Deny);
        event.stage = self.stage.as_str().into();
        event.code = self.code.as_str().into();
        event.reason = self.reason.clone();
        if self.rule.is_some() {
            event.rule = self.rule.clone();
        }
    }

    /// Counts it in `fedgate_refusals_total{edge, stage, code}`, the counter every ingress
    /// shares (each also keeps its own, documented with it).
    pub fn count(&self, edge: &'static str) {
        metrics::counter!(
            "fedgate_refusals_total",
            "edge" => edge,
            "stage" => self.stage.as_str(),
            "code" => self.code.as_str()
        )
        .increment(1);
    }
}

impl From<InputError> for Refusal {
    fn from(err: InputError) -> Refusal {
        let code = match err {
            InputError::UnknownAgent { .. } => Code::UnknownAgent,
            InputError::UnknownAction { .. } => Code::UnknownAction,
            InputError::InvalidInput { .. } => Code::InvalidInput,
        };
        Refusal::new(Stage::Validate, code, err.to_string())
    }
}

impl From<ReplayRefusal> for Refusal {
    fn from(refusal: ReplayRefusal) -> Refusal {
        let code = match refusal {
            ReplayRefusal::Replay(_)
            | ReplayRefusal::ModeChange(..)
            | ReplayRefusal::Copies(..) => Code::Replay,
            ReplayRefusal::Full => Code::ReplayFull,
            ReplayRefusal::Unavailable(_) => Code::ReplayUnavailable,
        };
        Refusal::new(Stage::Replay, code, refusal.to_string())
    }
}
