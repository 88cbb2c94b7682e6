//! Legacy MCollective collectives on RabbitMQ, reached over AMQP 0-9-1 with lapin. The legacy
//! peers speak STOMP to the same broker; RabbitMQ translates.
//!
//! [`LegacyLink`] is fedgate as a legacy client: it signs requests as a mapped legacy caller
//! (`cert=<name>`, with the key fedgate holds for that name), publishes them to
//! `<collective>_broadcast` (routing key: the agent) or `<collective>_directed` (routing key:
//! the node), with `reply_to` naming its own reply queue, and hands back the replies that verify
//! with the servers' shared key, translated for Choria.

pub mod amqp;
pub mod facade;
pub mod filter;
pub mod ingress;
pub mod site;

mod link;
pub use filter::legacy_filter;
pub use link::{LegacyCallError, LegacyLink, MAX_PENDING};
pub use link::{consume_unacked, declare_private_queue};

use std::time::Duration;

use serde_json::Value;

use crate::client::ReplyEvent;
use crate::wire::mcollective::Ruby;

/// The request id a legacy request goes into Choria under: its own when it has Choria's form (32
/// lowercase hex characters, as `mco` makes them), else one derived from it (the first 32 hex
/// characters of its SHA-256), since Choria takes no other. Replies go back under the legacy id.
pub fn choria_request_id(legacy: &str) -> String {
    let choria_form = legacy.len() == 32
        && legacy
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if choria_form {
        return legacy.to_string();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, legacy.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A legacy reply body as a Choria reply event: `"pong"` (discovery) is status 0 with
/// `{"pong": …}`-free data; an RPC Hash gives its status and data.
pub fn translate(sender: &str, body: &Ruby, elapsed: Duration) -> ReplyEvent {
    let (statuscode, statusmsg, data) = match body {
        Ruby::Hash(_) => (
            body.get("statuscode").and_then(Ruby::as_int).unwrap_or(5),
            body.get("statusmsg")
                .and_then(Ruby::as_str)
                .unwrap_or_default()
                .to_string(),
            body.get("data").map_or(Value::Null, Ruby::to_json),
        ),
        other => (0, "OK".to_string(), other.to_json()),
    };
    ReplyEvent {
        sender: sender.to_string(),
        statuscode,
        statusmsg,
        data,
        elapsed,
    }
}
