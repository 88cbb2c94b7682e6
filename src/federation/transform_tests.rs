//! Transform tests with plain values: routing, header rewrites and every refusal.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const REQ: &str = "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";
const REPLY_TO: &str =
    "london.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";

fn rules() -> ClusterRules {
    let mut routes = BTreeMap::new();
    routes.insert(
        "london".to_string(),
        Destination::Collective("london".into()),
    );
    routes.insert("tokyo".to_string(), Destination::Collective("tokyo".into()));
    routes.insert(
        "paris".to_string(),
        Destination::Federation {
            network: "eu".into(),
            cluster: "eu".into(),
            batch: 2,
        },
    );
    ClusterRules {
        cluster: "prod".into(),
        routes,
        max_hops: 4,
        max_targets: 3,
        label: hop_label("fb1", "prod"),
        limits: Limits::default(),
        resign: None,
    }
}

fn request(targets: &[&str], extra: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc = json!({
        "protocol": "choria:transport:1",
        "data": "eyJwcm90b2NvbCI6ImNob3JpYTpzZWN1cmU6cmVxdWVzdDoxIn0=",
        "headers": {
            "reply-to": REPLY_TO,
            "mc_sender": "client.example.net",
            "seen-by": [["nats://fed:4222", "client.example.net", "nats://fed:4222"]],
            "federation": {"req": REQ, "target": targets},
        }
    });
    extra(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

fn headers(payload: &[u8]) -> Value {
    serde_json::from_slice::<Value>(payload).unwrap()["headers"].clone()
}

/// A pass-through cluster relays a Choria protocol v2 request and its replies as v2, with the
/// same rewrite under v2's header names, and `data` untouched.
#[test]
fn v2_messages_pass_through_as_v2() {
    let rules = rules();
    let data = "eyJwcm90b2NvbCI6ImlvLmNob3JpYS5wcm90b2NvbC52Mi5zZWN1cmVfcmVxdWVzdCJ9";
    let bytes = serde_json::to_vec(&json!({
        "protocol": "io.choria.protocol.v2.transport",
        "data": data,
        "headers": {
            "reply": "london.reply.x.2IR5hjVmS3Jc3DjuKMFo0vGWLzD",
            "sender": "client.example.net",
            "federation": {"request": "2IR5hjVmS3Jc3DjuKMFo0vGWLzD", "targets": ["london.node.n1"]},
        }
    }))
    .unwrap();
    let routed = route_request(&bytes, &rules).unwrap();
    let (london, targets) = routed.groups().iter().next().unwrap();
    let egress = routed.egress(london, targets, &rules, "nats://fed:4222", "nats://l:4222");
    let out: Value = serde_json::from_slice(&egress[0].payload).unwrap();
    assert_eq!(out["protocol"], "io.choria.protocol.v2.transport");
    assert_eq!(out["data"], data);
    assert_eq!(
        out["headers"],
        json!({
            "reply": "choria.federation.prod.collective",
            "sender": "client.example.net",
            "trace": [["nats://fed:4222", hop_label("fb1", "prod"), "nats://l:4222"]],
            "federation": {"request": "2IR5hjVmS3Jc3DjuKMFo0vGWLzD", "reply": "london.reply.x.2IR5hjVmS3Jc3DjuKMFo0vGWLzD"},
        })
    );
    // The server's reply copies the federation header; the broker takes it off.
    let mut reply = out.clone();
    reply["headers"]["reply"] = Value::Null;
    let reply = serde_json::to_vec(&reply).unwrap();
    let (to, relayed) = route_reply(&reply, &rules, "nats://l:4222", "nats://fed:4222").unwrap();
    assert_eq!(to, "london.reply.x.2IR5hjVmS3Jc3DjuKMFo0vGWLzD");
    let relayed: Value = serde_json::from_slice(&relayed).unwrap();
    assert_eq!(relayed["protocol"], "io.choria.protocol.v2.transport");
    assert_eq!(relayed["data"], data);
    assert!(relayed["headers"].get("federation").is_none(), "{relayed}");
}

#[test]
fn direct_targets_are_rewritten_like_go_choria() {
    let rules = rules();
    let bytes = request(
        &[
            "london.broadcast.agent.rpcutil",
            "london.node.n1",
            "london.node.n1",
        ],
        |_| {},
    );
    let routed = route_request(&bytes, &rules).unwrap();
    assert_eq!(routed.groups().len(), 1);
    let (london, targets) = routed.groups().iter().next().unwrap();
    assert_eq!(london, &Destination::Collective("london".into()));
    let mut egresses = routed.egress(
        london,
        targets,
        &rules,
        "nats://fed:4222",
        "nats://london:4222",
    );
    assert_eq!(egresses.len(), 1);
    let egress = egresses.remove(0);
    assert_eq!(
        egress.subjects,
        vec!["london.broadcast.agent.rpcutil", "london.node.n1"],
        "duplicates are sent once"
    );
    let h = headers(&egress.payload);
    assert_eq!(h["reply-to"], "choria.federation.prod.collective");
    assert_eq!(h["federation"], json!({"req": REQ, "reply-to": REPLY_TO}));
    assert_eq!(h["mc_sender"], "client.example.net");
    assert_eq!(
        h["seen-by"][1],
        json!([
            "nats://fed:4222",
            "fb1 (fedgate federation prod)",
            "nats://london:4222"
        ])
    );
    let data = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap()["data"].clone();
    assert_eq!(
        data(&egress.payload),
        data(&bytes),
        "data passes through untouched"
    );
}

#[test]
fn member_federation_targets_travel_in_wrapped_batches_of_its_size() {
    let mut rules = rules();
    rules.max_targets = 10;
    let bytes = request(
        &[
            "paris.node.p1",
            "paris.node.p2",
            "paris.node.p3",
            "tokyo.node.t1",
        ],
        |_| {},
    );
    let routed = route_request(&bytes, &rules).unwrap();
    assert_eq!(routed.groups().len(), 2);
    let eu = Destination::Federation {
        network: "eu".into(),
        cluster: "eu".into(),
        batch: 2,
    };
    let targets = &routed.groups()[&eu];
    let egresses = routed.egress(&eu, targets, &rules, "nats://fed:4222", "nats://eu:4222");
    let batches: Vec<Value> = egresses
        .iter()
        .map(|e| {
            assert_eq!(e.subjects, vec!["choria.federation.eu.federation"]);
            let h = headers(&e.payload);
            assert_eq!(
                h["reply-to"],
                format!("choria.federation.prod.reply.{REPLY_TO}")
            );
            h["federation"]["target"].clone()
        })
        .collect();
    assert_eq!(
        batches,
        vec![
            json!(["paris.node.p1", "paris.node.p2"]),
            json!(["paris.node.p3"])
        ]
    );

    // The member federation's broker sends the reply back unfederated on the wrapped subject.
    let (reply_to, payload) = route_chained_reply(
        &format!("choria.federation.prod.reply.{REPLY_TO}"),
        &reply(None),
        &rules,
        "nats://eu:4222",
        "nats://fed:4222",
    )
    .unwrap();
    assert_eq!(reply_to, REPLY_TO);
    let h = headers(&payload);
    assert!(h.get("federation").is_none());
    assert_eq!(
        h["seen-by"][1],
        json!([
            "nats://eu:4222",
            "fb1 (fedgate federation prod)",
            "nats://fed:4222"
        ])
    );
    let still = route_chained_reply(
        &format!("choria.federation.prod.reply.{REPLY_TO}"),
        &reply(Some(json!({"req": REQ, "reply-to": REPLY_TO}))),
        &rules,
        "a",
        "b",
    );
    assert_eq!(still.unwrap_err().reason(), "still_federated");
}

#[test]
fn every_refusal_has_its_reason() {
    let rules = rules();
    let no_fed = request(&[], |d| {
        d["headers"].as_object_mut().unwrap().remove("federation");
    });
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"protocol\":\"choria:transport:1\"".to_vec(),
            "malformed",
        ),
        (no_fed, "not_federated"),
        (
            request(&["london.node.a"], |d| {
                d["headers"]["federation"] = json!({"target": ["london.node.a"]})
            }),
            "missing_request_id",
        ),
        (
            request(&["london.node.a"], |d| {
                d["headers"]["seen-by"] = json!([
                    ["a", "b", "c"],
                    ["a", "b", "c"],
                    ["a", "b", "c"],
                    ["a", "b", "c"]
                ])
            }),
            "max_hops",
        ),
        (
            request(&["london.node.a"], |d| {
                d["headers"]["seen-by"] = json!([["a", "fb1 (fedgate federation prod)", "c"]])
            }),
            "loop",
        ),
        (
            request(&["london.node.a"], |d| {
                d["headers"].as_object_mut().unwrap().remove("reply-to");
            }),
            "missing_reply_to",
        ),
        (
            request(&["london.node.a"], |d| {
                d["headers"]["reply-to"] = json!("tokyo.broadcast.agent.rpcutil")
            }),
            "bad_reply_to",
        ),
        (
            request(&["london.node.a"], |d| {
                d["headers"]["reply-to"] = json!("choria.federation.prod.federation")
            }),
            "bad_reply_to",
        ),
        (request(&[], |_| {}), "no_targets"),
        (
            request(
                &[
                    "london.node.a",
                    "london.node.b",
                    "london.node.c",
                    "london.node.d",
                ],
                |_| {},
            ),
            "too_many_targets",
        ),
        (request(&["london.reply.x.y"], |_| {}), "bad_target"),
        (
            request(&["choria.federation.prod.federation"], |_| {}),
            "bad_target",
        ),
        (
            request(&["london.broadcast.service.aaa_signer"], |_| {}),
            "bad_target",
        ),
        (
            request(&["berlin.broadcast.agent.rpcutil"], |_| {}),
            "not_member",
        ),
        (
            request(&["london.node.a", "berlin.node.b"], |_| {}),
            "not_member",
        ),
    ];
    for (bytes, want) in cases {
        let err = route_request(&bytes, &rules).unwrap_err();
        assert_eq!(err.reason(), want, "{err}");
    }
}

fn reply(federation: Option<Value>) -> Vec<u8> {
    let mut doc = json!({
        "protocol": "choria:transport:1",
        "data": "eyJwcm90b2NvbCI6ImNob3JpYTpzZWN1cmU6cmVwbHk6MSJ9",
        "headers": {"mc_sender": "n1", "seen-by": [["nats://london:4222", "n1", "nats://london:4222"]]}
    });
    if let Some(federation) = federation {
        doc["headers"]["federation"] = federation;
    }
    serde_json::to_vec(&doc).unwrap()
}

#[test]
fn replies_go_back_unfederated_and_only_into_the_reply_space() {
    let rules = rules();
    let good = reply(Some(json!({"req": REQ, "reply-to": REPLY_TO})));
    let (to, payload) =
        route_reply(&good, &rules, "nats://london:4222", "nats://fed:4222").unwrap();
    assert_eq!(to, REPLY_TO);
    let h = headers(&payload);
    assert!(h.get("federation").is_none());
    assert_eq!(h["seen-by"].as_array().unwrap().len(), 2);

    let cases = [
        (reply(None), "not_federated"),
        (
            reply(Some(json!({"reply-to": REPLY_TO}))),
            "missing_request_id",
        ),
        (reply(Some(json!({"req": REQ}))), "missing_reply_to"),
        (
            reply(Some(
                json!({"req": REQ, "reply-to": "tokyo.broadcast.agent.rpcutil"}),
            )),
            "bad_reply_to",
        ),
        (
            reply(Some(
                json!({"req": REQ, "reply-to": "choria.federation.prod.federation"}),
            )),
            "bad_reply_to",
        ),
    ];
    for (bytes, want) in cases {
        let err = route_reply(&bytes, &rules, "a", "b").unwrap_err();
        assert_eq!(err.reason(), want, "{err}");
    }
    let err = route_chained_reply(
        "choria.federation.prod.reply.tokyo.node.x",
        &good,
        &rules,
        "a",
        "b",
    )
    .unwrap_err();
    assert_eq!(err.reason(), "bad_reply_to");
}

#[test]
fn every_admission_code_the_broker_can_raise_has_its_own_counter() {
    use crate::gateway::{Code, Refusal as Admission, Stage};
    let codes = [
        Code::Invalid,
        Code::AgentMismatch,
        Code::RequestIdMismatch,
        Code::CallerKind,
        Code::OwnRequest,
        Code::TtlTooLong,
        Code::Expiring,
        Code::UnknownAgent,
        Code::UnknownAction,
        Code::InvalidInput,
        Code::Replay,
        Code::ReplayFull,
        Code::ReplayUnavailable,
        Code::UnknownCollective,
        Code::Unmapped,
        Code::IdentityDenied,
        Code::BadMapping,
        Code::BadCaller,
        Code::Denied,
        Code::AuditFailed,
    ];
    let verifier = crate::security::Reason::ALL.map(|r| Code::Unverified(r.as_str()));
    for code in codes.into_iter().chain(verifier) {
        let refusal = Refusal::Admission(Admission::new(Stage::Verify, code, "x"));
        assert_eq!(refusal.reason(), code.as_str(), "{code:?}");
    }
}
