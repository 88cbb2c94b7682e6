//! What the WebSocket edge admits, against real TLS nats-servers and simulated fleets: a signed
//! request's caller kind is bound to its certificate, a request with too little life left is
//! refused before it is recorded, a signed-only socket needs an edge CA, and a federation's
//! directed request goes only to the member that holds each target.

mod support;

use std::time::Duration;

use fedgate::audit::{Kind, Record, Verdict};
use fedgate::edge::client::{Connect, WsClient, WsError};
use fedgate::gateway::ReplayGuard;
use fedgate::security::Now;
use serde_json::{Value, json};
use support::edge::{Gateway, TOKYO_RULES, connect_options, signed_ping_as};
use support::{Network, audit_records, collective_block, realm};

/// A socket without credentials that sends only signed requests.
async fn signed_only(gateway: &Gateway) -> WsClient {
    WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(gateway)
    })
    .await
    .unwrap()
}

fn decisions(records: &[Record], verdict: Verdict) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(verdict))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_speaks_only_as_the_name_it_carries() {
    let gateway = Gateway::start("").await;
    let _fleet = gateway.london.start_fleet(4).await;
    let mut client = signed_only(&gateway).await;
    let now = Now::system();

    // alice.mcollective's certificate may not speak as a password or token user of that name,
    // nor add text after its name.
    for (n, caller) in ["up=alice.mcollective", "choria=alice.mcollective@evil"]
        .into_iter()
        .enumerate()
    {
        let (message, _) = signed_ping_as("edge", "alice", Some(caller), &format!("k{n}"), now, 60);
        let error = client.call(&message, |_| {}).await.unwrap();
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("unverified")),
            "{caller}: {error}"
        );
        // The refusal's own stage and code, as audited.
        assert_eq!(
            (error["stage"].as_str(), error["reason"].as_str()),
            (Some("verify"), Some("caller_kind")),
            "{error}"
        );
        assert!(
            error["message"].as_str().unwrap().contains("certificate"),
            "{error}"
        );
    }
    // cert= is a certificate's kind too: it verifies, and no rule maps it into london.
    let (message, _) = signed_ping_as(
        "edge",
        "alice",
        Some("cert=alice.mcollective"),
        "k2",
        now,
        60,
    );
    let error = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(error["code"], "unmapped", "{error}");
    assert_eq!(
        (&error["stage"], &error["reason"]),
        (&"map".into(), &"unmapped".into())
    );
    client.close().await;

    let records = audit_records(&gateway.audit_file());
    assert!(decisions(&records, Verdict::Allow).is_empty());
    let refused: Vec<(&str, &str, Option<&str>)> = decisions(&records, Verdict::Deny)
        .iter()
        .map(|r| {
            (
                r.event.stage.as_str(),
                r.event.code.as_str(),
                r.event.claimed_caller.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        &refused[..2],
        [
            ("verify", "caller_kind", Some("up=alice.mcollective")),
            (
                "verify",
                "caller_kind",
                Some("choria=alice.mcollective@evil")
            ),
        ]
    );
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_with_too_little_life_left_is_refused_before_it_is_recorded() {
    // 10 s of life needed: a request with 5 s left stays short of it, and still verifies, however
    // long it takes to arrive (with 1 s left it would expire on the way if a second ticked).
    let gateway = Gateway::start_with("[replay]\nmin_life_s = 10\n", "", "").await;
    let fleet = gateway.london.start_fleet(4).await;
    let mut client = signed_only(&gateway).await;

    // Signed 40 s ago with a TTL of 60: 20 s left, under Choria's 30 s minimum TTL. It is
    // re-signed to end with the original (time set back) and reaches the nodes.
    let then = Now::at_unix(Now::system().unix_seconds() as u64 - 40);
    let (message, _) = signed_ping_as("edge", "alice", None, "short", then, 60);
    let done = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(done["responses"].as_u64(), Some(4), "{done}");
    // Signed 55 s ago: 5 s left, under the 10 s fedgate needs to forward it.
    let then = Now::at_unix(Now::system().unix_seconds() as u64 - 55);
    let (message, requestid) = signed_ping_as("edge", "alice", None, "late", then, 60);
    let error = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("expiring")),
        "{error}"
    );
    client.close().await;
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        4
    );

    let records = audit_records(&gateway.audit_file());
    let late: Vec<_> = records
        .iter()
        .filter(|r| r.event.request_id.as_deref() == Some(requestid.as_str()))
        .map(|r| (r.kind, r.event.decision, r.event.code.as_str()))
        .collect();
    assert_eq!(
        late,
        [(Kind::Decision, Some(Verdict::Deny), "expiring")],
        "{records:?}"
    );
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_only_socket_is_refused_where_the_edge_has_no_ca() {
    let gateway = Gateway::start_config("", "", "", false).await;
    let refused = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .map(|_| ())
    .unwrap_err();
    match refused {
        WsError::Refused { status, body } => {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("signed_requests")),
                "{body}"
            );
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    gateway.edge.unwrap().shutdown().await;
}

/// A gateway whose federation prod has the members london (3 nodes) and tokyo (2 nodes).
async fn federation() -> (Gateway, Network) {
    let tokyo = Network::start("tokyo");
    let top = format!(
        "{}[federations.prod]\nnats = [\"nats://127.0.0.1:1\"]\nca = {:?}\nmembers = [\"london\", \"tokyo\"]\n",
        collective_block("collectives.tokyo", &tokyo),
        realm("prod").ca,
    );
    let gateway = Gateway::start_with(&top, TOKYO_RULES, "").await;
    (gateway, tokyo)
}

fn directed(id: &str, targets: &[&str], timeout_ms: u64) -> Value {
    json!({"type":"rpc","id":id,"federation":"prod","agent":"rpcutil","action":"ping",
           "targets":targets,"timeout_ms":timeout_ms})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_target_goes_only_to_the_member_that_holds_it() {
    let (gateway, tokyo) = federation().await;
    let _london_fleet = gateway.london.start_fleet(3).await;
    let _tokyo_fleet = tokyo.start_fleet(2).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let mut client = WsClient::connect(&Connect {
        token: Some(token),
        ..connect_options(&gateway)
    })
    .await
    .unwrap();

    // One target in each member: both answer, none is missing, and the request ends with the
    // last answer rather than at its timeout.
    let done = client
        .call(
            &directed("t1", &["london-0001", "tokyo-0000"], 60_000),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        (done["type"].as_str(), done["responses"].as_u64()),
        (Some("done"), Some(2)),
        "{done}"
    );
    assert_eq!(done["missing"], json!([]), "{done}");
    assert!(done["elapsed_ms"].as_u64().unwrap() < 60_000, "{done}");

    // tokyo-0000 has answered from tokyo: the next request for it goes to tokyo alone.
    let done = client
        .call(&directed("t2", &["tokyo-0000"], 60_000), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (
            done["responses"].as_u64(),
            done["requestids"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1)),
        "{done}"
    );
    let records = audit_records(&gateway.audit_file());
    let t2 = done["requestids"][0].as_str().unwrap();
    let t2_decisions: Vec<_> = decisions(&records, Verdict::Allow)
        .into_iter()
        .filter(|r| r.event.request_id.as_deref() == Some(t2))
        .map(|r| r.event.collectives.clone())
        .collect();
    assert_eq!(t2_decisions, [vec!["tokyo".to_string()]]);

    // A target no member holds is missing once; the one that answered is not.
    let done = client
        .call(
            &directed("t3", &["london-0000", "nowhere-0001"], 1_000),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        (done["responses"].as_u64(), &done["missing"]),
        (Some(1), &json!(["nowhere-0001"])),
        "{done}"
    );
    client.close().await;
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_checked_against_the_ddl_before_any_fan_out() {
    let ddl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl");
    let gateway = Gateway::start_with(&format!("[ddl]\ndir = {ddl:?}\n"), "", "").await;
    let fleet = gateway.london.start_fleet(4).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let mut client = WsClient::connect(&Connect {
        token: Some(token),
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let cases = [
        (
            "service",
            "status",
            json!({"service": "nginx; rm -rf /"}),
            "invalid_input",
        ),
        ("rpcutil", "ping", json!({"extra": 1}), "invalid_input"),
        ("rpcutil", "reboot", json!({}), "unknown_action"),
        ("puppet", "runonce", json!({}), "unknown_agent"),
    ];
    for (n, (agent, action, data, code)) in cases.into_iter().enumerate() {
        let request = json!({"type":"rpc","id":format!("d{n}"),"collective":"london",
            "agent":agent,"action":action,"data":data,"timeout_ms":2000});
        let error = client.call(&request, |_| {}).await.unwrap();
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(code)),
            "{agent}#{action}: {error}"
        );
    }
    // The same gateway forwards a valid call.
    let request = json!({"type":"rpc","id":"ok","collective":"london","agent":"rpcutil",
        "action":"ping","timeout_ms":5000,"limit":4});
    let done = client.call(&request, |_| {}).await.unwrap();
    assert_eq!(done["responses"].as_u64(), Some(4), "{done}");
    client.close().await;
    assert_eq!(
        fleet.stats().total,
        4,
        "only the valid call reached the fleet"
    );

    let records = audit_records(&gateway.audit_file());
    let refused: Vec<(&str, &str)> = decisions(&records, Verdict::Deny)
        .iter()
        .map(|r| (r.event.stage.as_str(), r.event.code.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("validate", "invalid_input"),
            ("validate", "invalid_input"),
            ("validate", "unknown_action"),
            ("validate", "unknown_agent"),
        ]
    );
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_replayed_on_another_instance_is_refused() {
    // Two edges (two collectives both named london) sharing one JetStream replay bucket.
    let dir = tempfile::tempdir().unwrap();
    let replay = fedgate_dev::natsd::NatsServer::start(
        &dir.path().join("replay-nats"),
        fedgate_dev::natsd::NatsServerConfig {
            jetstream: true,
            ..fedgate_dev::natsd::NatsServerConfig::default()
        },
    )
    .unwrap();
    let shared = format!("[replay]\nnats = [{:?}]\n", replay.url());
    let first = Gateway::start_with(&shared, "", "").await;
    let second = Gateway::start_with(&shared, "", "").await;
    let first_fleet = first.london.start_fleet(4).await;
    let second_fleet = second.london.start_fleet(4).await;

    let (message, _) = signed_ping_as("edge", "alice", None, "r1", Now::system(), 60);
    let mut client = signed_only(&first).await;
    let done = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(done["responses"].as_u64(), Some(4), "{done}");
    client.close().await;

    // The same signed bytes to the other instance: a replay, never forwarded.
    let mut client = signed_only(&second).await;
    let error = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("unverified")),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already forwarded"),
        "{error}"
    );
    client.close().await;
    assert_eq!(first_fleet.stats().total, 4);
    assert_eq!(second_fleet.stats().total, 0, "the replay reached no node");
    let records = audit_records(&second.audit_file());
    let refused: Vec<(&str, &str)> = decisions(&records, Verdict::Deny)
        .iter()
        .map(|r| (r.event.stage.as_str(), r.event.code.as_str()))
        .collect();
    assert_eq!(refused, [("replay", "replay")]);
    first.edge.unwrap().shutdown().await;
    second.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_at_mapping_or_policy_take_no_replay_claims() {
    // A guard of four claims. Were a refused request to take one, bob's requests would fill it
    // and alice's first allowed request would be refused as `replay_full`.
    const CAPACITY: usize = 4;
    let guard = ReplayGuard::local_with_capacity(CAPACITY);
    let gateway = Gateway::start_guarded("", "", "rate_burst = 1000\n", true, Some(guard)).await;
    let fleet = gateway.london.start_fleet(4).await;
    let mut client = signed_only(&gateway).await;
    let now = Now::system();

    // bob's certificate, each request signed anew: as cert= no rule maps it into london, and as
    // choria= policy allows it nothing.
    for n in 0..3 * CAPACITY {
        for (caller, code) in [
            ("cert=bob.mcollective", "unmapped"),
            ("choria=bob.mcollective", "denied"),
        ] {
            let id = format!("{code}-{n}");
            let (message, _) = signed_ping_as("edge", "bob", Some(caller), &id, now, 60);
            let error = client.call(&message, |_| {}).await.unwrap();
            assert_eq!(error["code"], code, "{error}");
        }
    }
    // Every claim is still free for alice's allowed requests.
    for n in 0..CAPACITY {
        let (message, _) = signed_ping_as("edge", "alice", None, &format!("a{n}"), now, 60);
        let done = client.call(&message, |_| {}).await.unwrap();
        assert_eq!(done["responses"].as_u64(), Some(4), "{done}");
    }
    // A full guard refuses the next one rather than admit it unguarded.
    let (message, requestid) = signed_ping_as("edge", "alice", None, "full", now, 60);
    let error = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("full"),
        "{error}"
    );
    client.close().await;
    assert_eq!(
        fleet.stats().total,
        (CAPACITY * 4) as u64,
        "only the admitted requests reached the nodes"
    );

    let records = audit_records(&gateway.audit_file());
    let refused: Vec<(&str, &str, Option<&str>)> = records
        .iter()
        .filter(|r| r.event.request_id.as_deref() == Some(requestid.as_str()))
        .map(|r| {
            (
                r.event.stage.as_str(),
                r.event.code.as_str(),
                r.event.mapped_caller.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [("replay", "replay_full", Some("choria=alice.mcollective"))]
    );
    assert_eq!(decisions(&records, Verdict::Allow).len(), CAPACITY);
    gateway.edge.unwrap().shutdown().await;
}
