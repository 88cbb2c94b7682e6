//! The edge's JSON message protocol, version 1: one JSON object per text frame, tagged by
//! `type`. `docs/websocket.md` documents it for client authors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gateway::{Code, Refusal};
use crate::wire::choria_v1::{FactFilter, Filter};

/// The protocol version, sent in the `welcome` message and as the WebSocket subprotocol
/// `fedgate.v1`.
pub const VERSION: u32 = 1;
/// The subprotocol name.
pub const SUBPROTOCOL: &str = "fedgate.v1";
/// The subprotocol of a socket without credentials that sends only signed requests.
pub const SIGNED_SUBPROTOCOL: &str = "fedgate.v1.signed";
/// The subprotocol prefix that carries a bearer token: `bearer.<token>`.
pub const BEARER_PROTOCOL: &str = "bearer.";

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// A bearer token, as the first message of a socket opened without one.
    Auth {
        /// The token.
        token: String,
    },
    /// An RPC request.
    Rpc(Box<RpcMessage>),
    /// A Choria v1 secure request the client signed itself with a certificate from the edge CA.
    Signed(Box<SignedMessage>),
    /// Stop the request with this id.
    Cancel {
        /// The request's id.
        id: String,
    },
}

/// An RPC request from a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcMessage {
    /// The client's id for this request, echoed in every answer (at most 64 characters).
    pub id: String,
    /// Target collective.
    #[serde(default)]
    pub collective: Option<String>,
    /// Target federation (not both).
    #[serde(default)]
    pub federation: Option<String>,
    /// Agent.
    pub agent: String,
    /// Action.
    pub action: String,
    /// Action inputs.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Which nodes act.
    #[serde(default)]
    pub filter: FilterSpec,
    /// Node identities to address directly; empty means broadcast.
    #[serde(default)]
    pub targets: Vec<String>,
    /// How long to collect replies, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Stop after this many replies.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A self-signed Choria request: the secure request says who, where and what (collective,
/// agent, action, inputs, filter); this wrapper only says how to collect the replies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMessage {
    /// The client's id for this request.
    pub id: String,
    /// A `choria:secure:request:1` object, or its JSON text.
    pub request: Value,
    /// Node identities to address directly; empty means broadcast.
    #[serde(default)]
    pub targets: Vec<String>,
    /// How long to collect replies, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Stop after this many replies.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A filter with every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Fact conditions, ANDed.
    #[serde(default)]
    pub fact: Vec<FactFilter>,
    /// Classes, ANDed.
    #[serde(default)]
    pub cf_class: Vec<String>,
    /// Agents, ANDed.
    #[serde(default)]
    pub agent: Vec<String>,
    /// Identities, ORed; `/re/` is a regular expression.
    #[serde(default)]
    pub identity: Vec<String>,
}

impl FilterSpec {
    /// As a Choria filter.
    pub fn into_filter(self) -> Filter {
        Filter {
            fact: self.fact,
            cf_class: self.cf_class,
            agent: self.agent,
            identity: self.identity,
            compound: Vec::new(),
        }
    }
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// After authentication: who the socket speaks as.
    Welcome {
        /// Protocol version.
        protocol: u32,
        /// The caller id requests are made as (before identity mapping); absent on a socket
        /// that takes only signed requests, each of which names its own caller.
        #[serde(skip_serializing_if = "Option::is_none")]
        caller: Option<String>,
        /// How the caller authenticated: `certificate`, `token`, `signed`.
        method: &'static str,
        /// When the socket will be closed because its token expires, Unix seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
    /// One node's reply.
    Reply {
        /// The request's id.
        id: String,
        /// The replying node.
        sender: String,
        /// RPC status code.
        statuscode: i64,
        /// Status message.
        statusmsg: String,
        /// The action's outputs.
        data: Value,
    },
    /// The request is finished.
    Done {
        /// The request's id.
        id: String,
        /// Replies received.
        responses: usize,
        /// Replies with status 0.
        ok: usize,
        /// Replies with another status.
        failed: usize,
        /// Directed targets that did not answer.
        missing: Vec<String>,
        /// Time from publish to the end.
        elapsed_ms: u64,
        /// The Choria request ids, one per collective called, as in the audit trail.
        requestids: Vec<String>,
        /// Why collection stopped (the least complete of the collectives called): `complete`,
        /// `idle` (a broadcast heard nothing for a second after its last reply), `timeout` or
        /// `closed`.
        ended: crate::client::Ended,
        /// Collectives of a federation that refused the request, with why.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        refused: BTreeMap<String, String>,
    },
    /// A request (or the socket, without `id`) was refused.
    Error {
        /// The request's id, when the error concerns one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// A stable code: see [`ErrorCode`].
        code: ErrorCode,
        /// For a refusal by the admission path: the stage that refused it.
        #[serde(skip_serializing_if = "Option::is_none")]
        stage: Option<&'static str>,
        /// For a refusal by the admission path: its own code, the one the audit record and
        /// `fedgate_refusals_total` carry (`identity_denied`, `bad_signature`, `replay`, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        /// What happened, for people.
        message: String,
    },
}

/// Stable error codes, written as [`ErrorCode::as_str`] gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not valid JSON, or not a valid message.
    Invalid,
    /// Policy refused the request.
    Denied,
    /// No identity rule maps the caller into the collective.
    Unmapped,
    /// No such collective or federation, or the token does not allow it.
    UnknownCollective,
    /// Too many requests for this identity.
    RateLimited,
    /// Too many requests in flight on this socket.
    TooManyInFlight,
    /// An id already in flight on this socket.
    DuplicateId,
    /// The request could not be recorded, so it was not sent.
    AuditFailed,
    /// Publishing failed.
    Unavailable,
    /// Stopped by a `cancel`.
    Cancelled,
    /// A signed request did not verify against the edge CA.
    Unverified,
    /// A signed request with too little of its TTL left to be re-signed.
    Expiring,
    /// No DDL describes the agent.
    UnknownAgent,
    /// The agent's DDL has no such action.
    UnknownAction,
    /// An input is missing, unknown, or fails its DDL type or validation.
    InvalidInput,
}

impl ErrorCode {
    /// The code as written on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::Denied => "denied",
            ErrorCode::Unmapped => "unmapped",
            ErrorCode::UnknownCollective => "unknown_collective",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyInFlight => "too_many_in_flight",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::AuditFailed => "audit_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unverified => "unverified",
            ErrorCode::Expiring => "expiring",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidInput => "invalid_input",
        }
    }
}

impl ErrorCode {
    /// The edge's code for a refusal by the admission path: the documented, coarser word a
    /// client switches on (the refusal's own code travels beside it as `reason`).
    pub fn answering(refusal: &Refusal) -> ErrorCode {
        match refusal.code {
            Code::Framing(_)
            | Code::Invalid
            | Code::AgentMismatch
            | Code::RequestIdMismatch
            | Code::TtlTooLong => ErrorCode::Invalid,
            Code::Unverified(_) | Code::CallerKind | Code::OwnRequest | Code::Replay => {
                ErrorCode::Unverified
            }
            Code::Expiring => ErrorCode::Expiring,
            Code::UnknownAgent => ErrorCode::UnknownAgent,
            Code::UnknownAction => ErrorCode::UnknownAction,
            Code::InvalidInput => ErrorCode::InvalidInput,
            Code::ReplayFull | Code::ReplayUnavailable => ErrorCode::Unavailable,
            Code::UnknownCollective => ErrorCode::UnknownCollective,
            Code::Unmapped | Code::IdentityDenied | Code::BadMapping | Code::BadCaller => {
                ErrorCode::Unmapped
            }
            Code::Denied => ErrorCode::Denied,
            Code::AuditFailed => ErrorCode::AuditFailed,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl ServerMessage {
    /// An error about request `id`.
    pub fn error(id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            id: id.map(str::to_string),
            code,
            stage: None,
            reason: None,
            message: message.into(),
        }
    }

    /// The answer to a request the admission path refused: the edge's code for it, with the
    /// refusal's own stage and code.
    pub fn refused(id: Option<&str>, refusal: &Refusal) -> ServerMessage {
        ServerMessage::Error {
            id: id.map(str::to_string),
            code: ErrorCode::answering(refusal),
            stage: Some(refusal.stage.as_str()),
            reason: Some(refusal.code.as_str()),
            message: refusal.reason.clone(),
        }
    }

    /// Whether this is a request's last message: its `done`, or an error about it.
    pub fn ends_request(&self) -> bool {
        matches!(
            self,
            ServerMessage::Done { .. } | ServerMessage::Error { id: Some(_), .. }
        )
    }

    /// The JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"invalid","message":"unencodable message"}"#.into()
        })
    }
}

/// WebSocket close codes the edge uses (4000–4999 is the application range).
pub mod close {
    /// The token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The token was revoked (the users file in force revokes it).
    pub const TOKEN_REVOKED: u16 = 4002;
    /// No authentication within the time allowed, or it failed.
    pub const UNAUTHENTICATED: u16 = 4003;
    /// The client did not read its replies fast enough.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// No traffic for the idle timeout.
    pub const IDLE: u16 = 4000;
    /// RFC 6455: message too big.
    pub const TOO_BIG: u16 = 1009;
    /// RFC 6455: going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455: policy violation.
    pub const POLICY: u16 = 1008;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_refusal_is_answered_with_its_own_stage_and_code() {
        let refusal = Refusal::new(
            crate::gateway::Stage::Map,
            Code::IdentityDenied,
            "bob may not act in london",
        );
        let text = ServerMessage::refused(Some("c1"), &refusal).to_text();
        assert_eq!(
            text,
            r#"{"type":"error","id":"c1","code":"unmapped","stage":"map","reason":"identity_denied","message":"bob may not act in london"}"#
        );
        let coarse =
            |code| ErrorCode::answering(&Refusal::new(crate::gateway::Stage::Replay, code, ""));
        assert_eq!(coarse(Code::Replay), ErrorCode::Unverified);
        assert_eq!(coarse(Code::ReplayFull), ErrorCode::Unavailable);
        assert_eq!(coarse(Code::TtlTooLong), ErrorCode::Invalid);
        assert_eq!(
            coarse(Code::Unverified("bad_signature")),
            ErrorCode::Unverified
        );
        assert_eq!(coarse(Code::AuditFailed), ErrorCode::AuditFailed);
    }

    #[test]
    fn messages_parse_strictly() {
        let rpc: ClientMessage = serde_json::from_str(
            r#"{"type":"rpc","id":"c1","collective":"london","agent":"rpcutil","action":"ping","filter":{"identity":["n1"]},"timeout_ms":5000}"#,
        )
        .unwrap();
        let ClientMessage::Rpc(rpc) = rpc else {
            panic!("not an rpc")
        };
        assert_eq!(rpc.filter.into_filter().identity, ["n1"]);
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"rpc","id":"c1","agent":"a","action":"b","bogus":1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        let done = ServerMessage::error(Some("c1"), ErrorCode::UnknownCollective, "x").to_text();
        assert_eq!(
            done,
            r#"{"type":"error","id":"c1","code":"unknown_collective","message":"x"}"#
        );
    }
}
