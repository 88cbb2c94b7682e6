//! Replies to legacy callers, signed with the servers' shared key as a legacy node's are: each
//! Choria reply translated, and fedgate's refusal of a request whose signature verified.

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::json;

use super::Shared;
use crate::audit::Event;
use crate::security::Now;
use crate::wire::mcollective::{Ruby, Serializer};

/// SimpleRPC's `RPCAborted`: what a refused request is answered with.
const ABORTED: i64 = 1;

/// Whom a refusal is told to: a caller whose signature verified and who wants replies.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    /// The reply queue.
    pub reply_to: String,
    /// The request's id, which `mco` matches replies by.
    pub requestid: String,
    /// The request's agent.
    pub agent: String,
    /// Who the answer is from: the node a directed copy was for, else the bridge.
    pub sender: String,
}

/// A Choria reply as the legacy reply body: `"pong"` for discovery, else the SimpleRPC Hash with
/// Symbol keys at its top, as MCollective's agents write them.
pub(super) fn legacy_reply_body(agent: &str, reply: &crate::client::ReplyEvent) -> Ruby {
    if agent == "discovery" {
        return Ruby::str("pong");
    }
    rpc_body(reply.statuscode, &reply.statusmsg, &reply.data)
}

fn rpc_body(statuscode: i64, statusmsg: &str, data: &serde_json::Value) -> Ruby {
    Ruby::Hash(vec![
        (Ruby::sym("statuscode"), Ruby::Int(statuscode)),
        (Ruby::sym("statusmsg"), Ruby::str(statusmsg)),
        (Ruby::sym("data"), Ruby::from_json(data, true)),
    ])
}

/// fedgate's refusal as a SimpleRPC reply: aborted, the reason in `statusmsg` (what `mco`
/// prints), and the code and stage under `:fedgate` in the data.
pub(super) fn refusal_body(event: &Event) -> Ruby {
    rpc_body(
        ABORTED,
        &format!(
            "fedgate refused the request: {} ({})",
            event.reason, event.code
        ),
        &json!({"fedgate": {"code": event.code, "stage": event.stage, "rule": event.rule}}),
    )
}

impl Shared {
    /// Signs `body` as the servers do and publishes it to `reply_to`.
    pub(super) async fn send_reply(&self, serializer: Serializer, answer: &Answer, body: &Ruby) {
        let now = Now::system().unix_seconds();
        let reply = match self.server.sign_reply(
            serializer,
            &answer.sender,
            &answer.requestid,
            &answer.agent,
            now,
            body,
        ) {
            Ok(reply) => reply,
            Err(err) => {
                tracing::error!(%err, "could not sign a legacy reply");
                return;
            }
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "mc_sender".into(),
            AMQPValue::LongString(answer.sender.as_str().into()),
        );
        let properties = BasicProperties::default()
            .with_expiration("70000".into())
            .with_headers(headers);
        let payload = reply.encode(serializer);
        // A request can come in on the consuming channel while lapin is still recovering the
        // publishing one after a lost connection: the reply waits for it (a while) instead of
        // being lost.
        let deadline = tokio::time::Instant::now() + REPLY_WAITS_FOR_RECOVERY;
        loop {
            let published = self
                .publisher
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(answer.reply_to.as_str()),
                    BasicPublishOptions::default(),
                    &payload,
                    properties.clone(),
                )
                .await;
            match published {
                Ok(_) => {
                    metrics::counter!("fedgate_legacy_replies_sent_total", "legacy" => self.name.clone())
                        .increment(1);
                    return;
                }
                Err(_)
                    if self.publisher.status().reconnecting()
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(RECOVERY_POLL).await;
                }
                Err(err) => {
                    metrics::counter!("fedgate_legacy_replies_failed_total", "legacy" => self.name.clone())
                        .increment(1);
                    tracing::warn!(legacy = %self.name, %err, "could not publish a legacy reply");
                    return;
                }
            }
        }
    }
}

/// How long a reply waits for its channel to recover from a lost connection; lapin recovers
/// with back-off, and `mco` stops listening well before the reply's 70 s expiry.
const REPLY_WAITS_FOR_RECOVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// How often a waiting reply looks again.
const RECOVERY_POLL: std::time::Duration = std::time::Duration::from_millis(100);
