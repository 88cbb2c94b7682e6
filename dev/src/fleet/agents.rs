//! The agents a simulated node runs: `discovery`, `rpcutil`, the `echo` test agent, and a
//! `service` agent that acts on made-up services (a write action for policy to guard).

use std::time::Duration;

use serde_json::json;

use super::actions::{run_action, unknown_action};
use super::node::NodeSpec;
use fedgate::ddl::DdlSet;
use fedgate::policy::{Decision, PolicySet, Query, Vantage, authorize};
use fedgate::security::Now;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{Request, RpcReply, RpcRequest, StatusCode};

/// Agents every generated node runs.
pub const AGENTS: &[&str] = &["discovery", "rpcutil", "echo", "service"];

/// Longest `echo#sleep` a request may ask for.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What an agent answers: the reply `message`, and how long to wait before sending it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentAnswer {
    /// The reply body, JSON for mcorpc agents or `pong` for discovery.
    pub body: String,
    /// Delay before replying (only `echo#sleep` sets one).
    pub delay: Duration,
}

/// What a node is configured with besides its own facts: decode limits, its actionpolicy
/// (`rpcauthorization` on when present) and its agents' DDLs.
#[derive(Clone, Copy, Debug)]
pub struct ServerChecks<'a> {
    /// Decode limits for the RPC body.
    pub limits: Limits,
    /// The node's actionpolicy; `None` is `rpcauthorization` off.
    pub policy: Option<&'a PolicySet>,
    /// The agents' DDLs; an agent without one runs unvalidated.
    pub ddl: Option<&'a DdlSet>,
}

/// Runs the envelope's agent on `node`, as go-choria dispatches on the envelope: `None` when the
/// node lacks the agent (Go discards such requests) or the agent sends no reply.
pub fn dispatch(
    node: &NodeSpec,
    request: &Request,
    now: Now,
    checks: ServerChecks<'_>,
) -> Option<AgentAnswer> {
    let agent = request.envelope.agent.as_str();
    if !node.has_agent(agent) {
        return None;
    }
    if agent == "discovery" {
        // go-choria's discovery agent answers any payload containing "ping" (Ruby sends `"ping"`).
        let asked = request.payload().windows(4).any(|w| w == b"ping");
        return asked.then(|| AgentAnswer {
            body: "pong".into(),
            delay: Duration::ZERO,
        });
    }
    let (reply, delay) = match request.rpc(&checks.limits) {
        Ok(rpc) => answer(node, request, &rpc, now, checks),
        Err(err) => (
            RpcReply::new(
                "",
                StatusCode::InvalidData,
                format!("Could not process request: {err}"),
                json!({}),
            ),
            Duration::ZERO,
        ),
    };
    Some(AgentAnswer {
        body: reply.encode_string(),
        delay,
    })
}

/// mcorpc's order after decoding: the action must exist, then authorization (only with
/// `rpcauthorization`), then the inputs against the agent's DDL, then the action runs.
fn answer(
    node: &NodeSpec,
    request: &Request,
    rpc: &RpcRequest,
    now: Now,
    checks: ServerChecks<'_>,
) -> (RpcReply, Duration) {
    let agent = request.envelope.agent.as_str();
    let action = rpc.action.as_str();
    let fail = |code, message: String| {
        (
            RpcReply::new(action, code, message, json!({})),
            Duration::ZERO,
        )
    };
    let ddl = checks.ddl.and_then(|set| set.agent(agent));
    if ddl.is_some_and(|ddl| !ddl.actions.contains_key(action)) {
        return fail(StatusCode::UnknownAction, unknown_action(agent, action));
    }
    if let Some(policy) = checks.policy {
        // mcorpc authorizes the body's agent, so with a policy a mismatch is a denial; without
        // one the body's agent is never read.
        if rpc.agent != agent || !node_allows(policy, node, request, rpc) {
            return fail(StatusCode::Aborted, NOT_AUTHORIZED.to_string());
        }
    }
    if let Some(Err(err)) = ddl.map(|ddl| ddl.check(action, &rpc.data)) {
        tracing::debug!(node = %node.identity, %err, "refused input");
        let message = format!("Validation failed: {}", err.choria_reason());
        return fail(StatusCode::InvalidData, message);
    }
    run_action(node, agent, rpc, now)
}

/// Decides with the node's actionpolicy as a Choria server does: caller id from the envelope,
/// facts and classes from the node.
fn node_allows(set: &PolicySet, node: &NodeSpec, request: &Request, rpc: &RpcRequest) -> bool {
    let query = Query {
        collective: &request.envelope.collective,
        agent: &rpc.agent,
        action: &rpc.action,
        caller: &request.envelope.callerid,
    };
    let vantage = Vantage::Node {
        facts: Some(&node.facts),
        classes: Some(&node.classes),
    };
    let decision = authorize(set, &query, vantage);
    if let Decision::Denied(denied) = &decision {
        tracing::debug!(node = %node.identity, rule = %denied.source, reason = %denied.reason, "denied by node policy");
    }
    decision.allowed()
}

/// mcorpc's denial message.
pub const NOT_AUTHORIZED: &str = "You are not authorized to call this agent or action";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::node::generate;
    use fedgate::ddl::UnknownAgents;
    use fedgate::wire::choria_v1::{Filter, RequestEnvelope};

    fn checks<'a>(policy: Option<&'a PolicySet>, ddl: Option<&'a DdlSet>) -> ServerChecks<'a> {
        ServerChecks {
            limits: Limits::default(),
            policy,
            ddl,
        }
    }

    fn request(agent: &str, message: &str) -> Request {
        Request::new(
            message.into(),
            RequestEnvelope {
                requestid: "0".repeat(32),
                senderid: "c".into(),
                callerid: "choria=c.mcollective".into(),
                collective: "london".into(),
                agent: agent.into(),
                ttl: 60,
                time: 1,
                filter: Filter::default(),
            },
        )
    }

    fn answer_with(agent: &str, message: &str, checks: ServerChecks<'_>) -> RpcReply {
        let node = &generate("london", 1, &["london".into()])[0];
        let answer = dispatch(node, &request(agent, message), Now::at_unix(5), checks).unwrap();
        RpcReply::decode(answer.body.as_bytes(), &Limits::default()).unwrap()
    }

    fn answer(agent: &str, message: &str) -> RpcReply {
        answer_with(agent, message, checks(None, None))
    }

    fn shipped_ddl() -> DdlSet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ddl");
        DdlSet::load(&dir, UnknownAgents::Pass).unwrap()
    }

    fn allow_all() -> PolicySet {
        use fedgate::policy::{Effect, PolicyFile};
        let mut set = PolicySet::empty(Effect::Deny);
        for agent in ["rpcutil", "echo"] {
            let text = "policy default allow\n";
            let file = PolicyFile::parse(&format!("{agent}.policy"), text).unwrap();
            set.insert(None, agent, file);
        }
        set
    }

    #[test]
    fn rpcutil_answers_ping_inventory_and_get_fact() {
        let ping = answer(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"ping","data":{}}"#,
        );
        assert_eq!((ping.statuscode, ping.data["pong"].as_i64()), (0, Some(5)));
        let inv = answer(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"inventory","data":{}}"#,
        );
        assert_eq!(inv.data["facts"]["country"], "uk");
        assert_eq!(inv.data["main_collective"], "london");
        let fact = answer(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"get_fact","data":{"fact":"os.release.major"}}"#,
        );
        assert_eq!(fact.data["value"], 11);
    }

    #[test]
    fn errors_use_mcollective_status_codes() {
        let unknown = answer(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"nope","data":{}}"#,
        );
        assert_eq!(unknown.statuscode, StatusCode::UnknownAction as i64);
        let missing = answer("echo", r#"{"agent":"echo","action":"echo","data":{}}"#);
        assert_eq!(missing.statuscode, StatusCode::MissingData as i64);
        let bad = answer("echo", "{not json");
        assert_eq!(bad.statuscode, StatusCode::InvalidData as i64);
        let long = answer(
            "echo",
            r#"{"agent":"echo","action":"sleep","data":{"seconds":3600}}"#,
        );
        assert_eq!(long.statuscode, StatusCode::InvalidData as i64);
    }

    #[test]
    fn without_rpcauthorization_the_envelope_agent_runs_whatever_the_body_names() {
        // A Choria server without a policy never reads the body's agent.
        let pong = answer("rpcutil", r#"{"agent":"echo","action":"ping","data":{}}"#);
        assert_eq!((pong.statuscode, pong.data["pong"].as_i64()), (0, Some(5)));
        let node = &generate("london", 1, &["london".into()])[0];
        let unknown = request("nosuch", r#"{"agent":"nosuch","action":"x","data":{}}"#);
        assert_eq!(
            dispatch(node, &unknown, Now::at_unix(5), checks(None, None)),
            None,
            "no reply for a missing agent"
        );
    }

    #[test]
    fn with_rpcauthorization_a_different_body_agent_is_denied() {
        let policy = allow_all();
        let denied = answer_with(
            "rpcutil",
            r#"{"agent":"echo","action":"ping","data":{}}"#,
            checks(Some(&policy), None),
        );
        assert_eq!(
            (denied.statuscode, denied.statusmsg.as_str()),
            (StatusCode::Aborted as i64, NOT_AUTHORIZED)
        );
        let allowed = answer_with(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"ping","data":{}}"#,
            checks(Some(&policy), None),
        );
        assert_eq!(allowed.statuscode, StatusCode::Ok as i64);
    }

    #[test]
    fn inputs_are_validated_against_the_ddl_before_the_action_runs() {
        let ddl = shipped_ddl();
        let with_ddl = checks(None, Some(&ddl));
        let refused = answer_with(
            "service",
            r#"{"agent":"service","action":"restart","data":{"service":"nginx; rm"}}"#,
            with_ddl,
        );
        assert_eq!(refused.statuscode, StatusCode::InvalidData as i64);
        assert_eq!(
            refused.statusmsg,
            r"Validation failed: validation failed for input 'service': input does not match '^[\w\-\.@]+$'"
        );
        assert_eq!(refused.data, json!({}), "the action did not run");
        let missing = answer_with(
            "echo",
            r#"{"agent":"echo","action":"sleep","data":{}}"#,
            with_ddl,
        );
        assert_eq!(
            (missing.statuscode, missing.statusmsg.as_str()),
            (
                StatusCode::InvalidData as i64,
                "Validation failed: input 'seconds' is required"
            )
        );
        let unknown = answer_with(
            "service",
            r#"{"agent":"service","action":"reboot","data":{}}"#,
            with_ddl,
        );
        assert_eq!(
            (unknown.statuscode, unknown.statusmsg.as_str()),
            (
                StatusCode::UnknownAction as i64,
                "Unknown action reboot for agent service"
            )
        );
        let ok = answer_with(
            "service",
            r#"{"agent":"service","action":"restart","data":{"service":"nginx"}}"#,
            with_ddl,
        );
        assert_eq!(
            (ok.statuscode, ok.data["status"].as_str()),
            (0, Some("running"))
        );
        // Without DDLs the simulated action runs on the bad input, as before.
        let unchecked = answer(
            "service",
            r#"{"agent":"service","action":"restart","data":{"service":"nginx; rm"}}"#,
        );
        assert_eq!(unchecked.statuscode, StatusCode::Ok as i64);
    }

    #[test]
    fn the_ddl_of_the_envelope_agent_is_the_one_applied() {
        let ddl = shipped_ddl();
        // The body names echo, the envelope service: service's DDL refuses `message`.
        let refused = answer_with(
            "service",
            r#"{"agent":"echo","action":"status","data":{"message":"hi"}}"#,
            checks(None, Some(&ddl)),
        );
        assert_eq!(refused.statuscode, StatusCode::InvalidData as i64);
        assert!(
            refused.statusmsg.contains("'service' is required"),
            "{}",
            refused.statusmsg
        );
    }

    #[test]
    fn discovery_answers_ruby_json_ping_too() {
        let node = &generate("london", 1, &["london".into()])[0];
        let ddl = shipped_ddl();
        let ruby = dispatch(
            node,
            &request("discovery", r#""ping""#),
            Now::at_unix(5),
            checks(None, Some(&ddl)),
        );
        assert_eq!(ruby.unwrap().body, "pong");
        let other = dispatch(
            node,
            &request("discovery", r#""hello""#),
            Now::at_unix(5),
            checks(None, None),
        );
        assert_eq!(other, None);
    }

    #[test]
    fn discovery_answers_pong_to_base64_ping() {
        let node = &generate("london", 1, &["london".into()])[0];
        let answer = dispatch(
            node,
            &request("discovery", "cGluZw=="),
            Now::at_unix(5),
            checks(None, None),
        );
        assert_eq!(answer.unwrap().body, "pong");
    }

    #[test]
    fn node_policy_uses_the_node_s_own_facts_and_classes() {
        use fedgate::policy::{Effect, PolicyFile, PolicySet};
        let nodes = generate("london", 4, &["london".into()]);
        let mut set = PolicySet::empty(Effect::Deny);
        let text = "policy default deny\nallow\tchoria=c.mcollective\tping\tcountry=uk\t*\n";
        set.insert(
            None,
            "rpcutil",
            PolicyFile::parse("rpcutil.policy", text).unwrap(),
        );
        let ping = request(
            "rpcutil",
            r#"{"agent":"rpcutil","action":"ping","data":{}}"#,
        );
        for node in &nodes {
            let answer = dispatch(node, &ping, Now::at_unix(5), checks(Some(&set), None)).unwrap();
            let reply = RpcReply::decode(answer.body.as_bytes(), &Limits::default()).unwrap();
            let uk = node.facts["country"] == "uk";
            assert_eq!(
                reply.statuscode,
                if uk { 0 } else { 1 },
                "{}",
                node.identity
            );
            if !uk {
                assert_eq!(reply.statusmsg, NOT_AUTHORIZED);
            }
        }
    }
}
