//! What a delivery must agree with before it is admitted: its route, its remaining life, its
//! reply queue and its filter.

use crate::wire::choria_v1::Filter;
use crate::wire::mcollective::Ruby;

/// Longest TTL a bridged request is re-issued with.
pub(super) const MAX_TTL: i64 = 60;

/// How a delivery reached the request queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Through `<collective>_broadcast`, by the agent's routing key.
    Broadcast(String),
    /// Through `<collective>_directed`, to a node.
    Directed(String),
}

impl Route {
    /// The node a directed delivery was for.
    pub(super) fn node(&self) -> Option<&str> {
        match self {
            Route::Directed(node) => Some(node),
            Route::Broadcast(_) => None,
        }
    }
}

/// The signed agent agrees with the route: a broadcast's routing key is that agent, and a
/// directed delivery's agent is one the bridge takes.
pub(super) fn agent_agrees(route: &Route, bridged: &[String], agent: &str) -> Result<(), String> {
    match route {
        Route::Broadcast(key) if key != agent => Err(format!(
            "routed by agent {key}'s key, but signed for agent {agent}"
        )),
        Route::Directed(node) if !bridged.iter().any(|a| a == agent) => Err(format!(
            "directed to {node} for agent {agent}, which this bridge does not take"
        )),
        _ => Ok(()),
    }
}

/// The queue a reply goes to: a bare name, or one of RabbitMQ's STOMP reply forms.
pub(super) fn reply_queue(reply_to: &str) -> Option<&str> {
    let name = ["/reply-queue/", "/amq/queue/", "/queue/"]
        .iter()
        .find_map(|p| reply_to.strip_prefix(p))
        .unwrap_or(reply_to);
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    ok.then_some(name)
}

/// The legacy filter Hash as a Choria filter that selects the same nodes
/// ([`crate::legacy::filter`]).
pub(super) fn choria_filter(filter: &Ruby) -> Result<Filter, String> {
    crate::legacy::filter::choria_filter(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_must_name_the_signed_agent() {
        let bridged = ["discovery".to_string(), "rpcutil".to_string()];
        let broadcast = Route::Broadcast("rpcutil".into());
        assert!(agent_agrees(&broadcast, &bridged, "rpcutil").is_ok());
        assert!(agent_agrees(&broadcast, &bridged, "puppet").is_err());
        let directed = Route::Directed("node1".into());
        assert!(agent_agrees(&directed, &bridged, "rpcutil").is_ok());
        assert!(agent_agrees(&directed, &bridged, "puppet").is_err());
    }

    #[test]
    fn reply_to_forms_are_accepted_and_junk_is_not() {
        assert_eq!(reply_queue("amq.gen-abc_D-1"), Some("amq.gen-abc_D-1"));
        assert_eq!(reply_queue("/reply-queue/amq.gen-x"), Some("amq.gen-x"));
        assert_eq!(reply_queue(""), None);
        assert_eq!(reply_queue("/exchange/x/y"), None);
        assert_eq!(reply_queue("a b"), None);
    }
}
