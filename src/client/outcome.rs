//! What a call yields: each verified reply as it comes, and how the call ended.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One reply, verified: the hash matched and it answers this request.
#[derive(Clone, Debug, Serialize)]
pub struct ReplyEvent {
    /// The replying node.
    pub sender: String,
    /// The RPC status code.
    pub statuscode: i64,
    /// The status message.
    pub statusmsg: String,
    /// The action's outputs.
    pub data: Value,
    /// Time since the request was published.
    #[serde(serialize_with = "as_millis")]
    pub elapsed: Duration,
}

/// Why a call stopped collecting replies. Ordered from the most to the least complete, so the
/// calls of one request merge to the largest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Every reply it waited for came: one per directed target, `expect` replies, or (at the
    /// edge) the request's limit.
    #[default]
    Complete,
    /// A broadcast heard nothing for its idle gap after its last reply. Nodes that answer later
    /// are not counted: a broadcast to a fleet that answers in bursts further apart than the gap
    /// ends here before all of it has answered.
    Idle,
    /// The overall timeout passed first.
    Timeout,
    /// The reply subscription closed (the NATS connection was lost or closed).
    Closed,
}

impl Ended {
    /// The name the summary and the edge's `done` give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Complete => "complete",
            Ended::Idle => "idle",
            Ended::Timeout => "timeout",
            Ended::Closed => "closed",
        }
    }
}

/// How a call ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The request ids, one per collective called.
    pub requestids: Vec<String>,
    /// NATS messages published (federated directed calls send batches of targets).
    pub published: usize,
    /// Verified replies received.
    pub responses: usize,
    /// Replies with status 0.
    pub ok: usize,
    /// Replies with any other status.
    pub failed: usize,
    /// Replies that failed verification or answered another request.
    pub invalid: usize,
    /// Second and later replies from one sender, ignored.
    pub duplicates: usize,
    /// Directed targets that did not answer.
    pub missing: Vec<String>,
    /// Time from publish to the last reply of a broadcast that went idle, else to the end of collection.
    #[serde(serialize_with = "as_millis")]
    pub elapsed: Duration,
    /// Why collection stopped.
    pub ended: Ended,
}

fn as_millis<S: serde::Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
