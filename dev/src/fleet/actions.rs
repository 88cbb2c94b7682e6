//! The simulated agents' actions: `rpcutil`, the `echo` test agent and the `service` agent.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::agents::MAX_SLEEP;
use super::node::NodeSpec;
use fedgate::filter::facts::lookup;
use fedgate::security::Now;
use fedgate::wire::choria_v1::{RpcReply, RpcRequest, StatusCode};

/// Runs `action` of the envelope's `agent`; an action the agent lacks is `UnknownAction`.
pub(super) fn run_action(
    node: &NodeSpec,
    agent: &str,
    rpc: &RpcRequest,
    now: Now,
) -> (RpcReply, Duration) {
    let action = rpc.action.as_str();
    let ok = |data: Value| {
        (
            RpcReply::new(action, StatusCode::Ok, "OK", data),
            Duration::ZERO,
        )
    };
    match (agent, action) {
        ("rpcutil", "ping") => ok(json!({"pong": now.unix_seconds()})),
        ("rpcutil", "inventory") => ok(inventory(node)),
        ("rpcutil", "collective_info") => ok(json!({
            "main_collective": node.main_collective(),
            "collectives": node.collectives,
        })),
        ("rpcutil", "get_fact") => get_fact(node, rpc),
        ("echo", "echo") => echo(rpc),
        ("echo", "sleep") => sleep(rpc),
        ("service", "status" | "start" | "stop" | "restart") => service(rpc),
        (agent, _) => (
            RpcReply::new(
                action,
                StatusCode::UnknownAction,
                unknown_action(agent, action),
                json!({}),
            ),
            Duration::ZERO,
        ),
    }
}

fn inventory(node: &NodeSpec) -> Value {
    json!({
        "agents": node.agents,
        "classes": node.classes,
        "collectives": node.collectives,
        "data_plugins": [],
        "facts": node.facts,
        "machines": [],
        "main_collective": node.main_collective(),
        "version": concat!("fedgate-fleet ", env!("CARGO_PKG_VERSION")),
        "upgradable": false,
    })
}

fn get_fact(node: &NodeSpec, rpc: &RpcRequest) -> (RpcReply, Duration) {
    match required_string(rpc, "fact") {
        Ok(fact) => {
            let value = lookup(&node.facts, fact).cloned().unwrap_or(Value::Null);
            (
                RpcReply::new(
                    "get_fact",
                    StatusCode::Ok,
                    "OK",
                    json!({"fact": fact, "value": value}),
                ),
                Duration::ZERO,
            )
        }
        Err(reply) => (reply, Duration::ZERO),
    }
}

fn echo(rpc: &RpcRequest) -> (RpcReply, Duration) {
    match required_string(rpc, "message") {
        Ok(message) => (
            RpcReply::new("echo", StatusCode::Ok, "OK", json!({"message": message})),
            Duration::ZERO,
        ),
        Err(reply) => (reply, Duration::ZERO),
    }
}

fn sleep(rpc: &RpcRequest) -> (RpcReply, Duration) {
    let Some(seconds) = rpc.data.get("seconds").and_then(Value::as_f64) else {
        return (missing("sleep", "seconds"), Duration::ZERO);
    };
    if !(0.0..=MAX_SLEEP.as_secs_f64()).contains(&seconds) {
        let msg = format!("seconds must be between 0 and {}", MAX_SLEEP.as_secs());
        return (
            RpcReply::new("sleep", StatusCode::InvalidData, msg, json!({})),
            Duration::ZERO,
        );
    }
    let reply = RpcReply::new("sleep", StatusCode::Ok, "OK", json!({"slept": seconds}));
    (reply, Duration::from_secs_f64(seconds))
}

/// Every service runs, until a `stop` (which the simulation does not remember).
fn service(rpc: &RpcRequest) -> (RpcReply, Duration) {
    let action = rpc.action.as_str();
    let reply = match required_string(rpc, "service") {
        Ok(name) => {
            let status = if action == "stop" {
                "stopped"
            } else {
                "running"
            };
            RpcReply::new(
                action,
                StatusCode::Ok,
                "OK",
                json!({"service": name, "status": status}),
            )
        }
        Err(reply) => reply,
    };
    (reply, Duration::ZERO)
}

fn required_string<'a>(rpc: &'a RpcRequest, key: &str) -> Result<&'a str, RpcReply> {
    match rpc.data.get(key) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(RpcReply::new(
            &rpc.action,
            StatusCode::InvalidData,
            format!("input {key} must be a string"),
            Value::Object(Map::new()),
        )),
        None => Err(missing(&rpc.action, key)),
    }
}

fn missing(action: &str, key: &str) -> RpcReply {
    RpcReply::new(
        action,
        StatusCode::MissingData,
        format!("missing required input {key}"),
        json!({}),
    )
}

/// mcorpc's answer to an action the agent does not have.
pub(super) fn unknown_action(agent: &str, action: &str) -> String {
    format!("Unknown action {action} for agent {agent}")
}
