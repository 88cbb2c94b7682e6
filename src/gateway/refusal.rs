//! Why the admission path refused a request: a stage, a stable code and the reason the caller
//! is told, the same on every ingress, in its metrics, its audit records and its answers.

use super::replay::ReplayRefusal;
use crate::ddl::InputError;

/// Where on the path a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The call as signed does not hold together.
    Decode,
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
            Stage::Verify => "verify",
            Stage::Validate => "validate",
            Stage::Replay => "replay",
            Stage::Map => "map",
            Stage::Authorize => "authorize",
            Stage::Audit => "audit",
        }
    }
}

/// A stable refusal code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The body, the envelope and the route name different agents.
    AgentMismatch,
    /// An unsigned header names another request id than the signed one.
    RequestIdMismatch,
    /// The caller signed a longer TTL than fedgate accepts.
    TtlTooLong,
    /// Too little of the request's life is left to forward it.
    Expiring,
    /// Already forwarded there.
    Replay,
    /// The replay guard is full.
    ReplayFull,
    /// The replay guard cannot be reached.
    ReplayUnavailable,
    /// No DDL describes the agent.
    UnknownAgent,
    /// The agent's DDL has no such action.
    UnknownAction,
    /// An input is missing, unknown, or fails its DDL type or validation.
    InvalidInput,
}

impl Code {
    /// Every code, in [`Code::index`] order.
    pub const ALL: [Code; 10] = [
        Code::AgentMismatch,
        Code::RequestIdMismatch,
        Code::TtlTooLong,
        Code::Expiring,
        Code::Replay,
        Code::ReplayFull,
        Code::ReplayUnavailable,
        Code::UnknownAgent,
        Code::UnknownAction,
        Code::InvalidInput,
    ];

    /// Position in [`Code::ALL`], for arrays of counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code as a snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AgentMismatch => "agent_mismatch",
            Code::RequestIdMismatch => "request_id_mismatch",
            Code::TtlTooLong => "ttl_too_long",
            Code::Expiring => "expiring",
            Code::Replay => "replay",
            Code::ReplayFull => "replay_full",
            Code::ReplayUnavailable => "replay_unavailable",
            Code::UnknownAgent => "unknown_agent",
            Code::UnknownAction => "unknown_action",
            Code::InvalidInput => "invalid_input",
        }
    }
}

/// A refusal by the admission path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct Refusal {
    /// Where it was refused.
    pub stage: Stage,
    /// The stable code.
    pub code: Code,
    /// What the caller is told.
    pub reason: String,
}

impl Refusal {
    /// A refusal at `stage` with `code`.
    pub fn new(stage: Stage, code: Code, reason: impl Into<String>) -> Refusal {
        Refusal {
            stage,
            code,
            reason: reason.into(),
        }
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
            ReplayRefusal::Replay(_) | ReplayRefusal::ModeChange(..) => Code::Replay,
            ReplayRefusal::Full => Code::ReplayFull,
            ReplayRefusal::Unavailable(_) => Code::ReplayUnavailable,
        };
        Refusal::new(Stage::Replay, code, refusal.to_string())
    }
}
