//! Legacy MCollective collectives on RabbitMQ, reached over AMQP 0-9-1 with lapin. The legacy
//! peers speak STOMP to the same broker; RabbitMQ translates.
//!
//! [`LegacyLink`] is fedgate as a legacy client: it signs requests as a mapped legacy caller
//! (`cert=<name>`, with the key fedgate holds for that name), publishes them to
//! `<collective>_broadcast` (routing key: the agent) or `<collective>_directed` (routing key:
//! the node), with `reply_to` naming its own reply queue, and hands back the replies that verify
//! with the servers' shared key, translated for Choria.

pub mod facade;
pub mod ingress;
pub mod site;

mod link;
pub use link::{LegacyCallError, LegacyLink, MAX_PENDING};
pub(crate) use link::{consume_unacked, declare_private_queue};

use std::time::Duration;

use serde_json::Value;

use crate::client::ReplyEvent;
use crate::wire::choria_v1::Filter;
use crate::wire::mcollective::Ruby;

/// A Choria filter as the legacy `:filter` Hash (String keys; fact entries with Symbol keys).
pub fn legacy_filter(filter: &Filter, agent: &str) -> Ruby {
    let strings = |items: &[String]| Ruby::Array(items.iter().map(|s| Ruby::str(s)).collect());
    // Every legacy node answers discovery; it is not an agent a filter can require.
    let mut agents: Vec<String> = filter
        .agent
        .iter()
        .filter(|a| *a != "discovery")
        .cloned()
        .collect();
    if agent != "discovery" && !agents.iter().any(|a| a == agent) {
        agents.push(agent.to_string());
    }
    let facts = filter
        .fact
        .iter()
        .map(|f| {
            Ruby::Hash(vec![
                (Ruby::sym("fact"), Ruby::str(&f.fact)),
                (Ruby::sym("value"), Ruby::str(&f.value)),
                (Ruby::sym("operator"), Ruby::str(f.operator.as_str())),
            ])
        })
        .collect();
    Ruby::Hash(vec![
        (Ruby::str("fact"), Ruby::Array(facts)),
        (Ruby::str("cf_class"), strings(&filter.cf_class)),
        (Ruby::str("agent"), strings(&agents)),
        (Ruby::str("identity"), strings(&filter.identity)),
        (Ruby::str("compound"), Ruby::Array(Vec::new())),
    ])
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
