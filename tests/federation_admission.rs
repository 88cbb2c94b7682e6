//! The Federation Broker in resign mode through the admission path: hand-made federated
//! requests that a hostile federation client could send, against real nats-servers, a
//! simulated london fleet and `fedgate run` processes sharing a JetStream replay guard.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fedgate::subjects;
use fedgate_dev::fleet::Fleet;
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};
use futures::StreamExt;
use support::federated::{rpc, send, sign};
use support::{BrokerProcess, Network, audit_records, gate_block, network_block, realm, user};

const NODES: usize = 12;

const RULES: &str = support::PROD_CALLERS_TO_LONDON;

const RPCUTIL: &str = "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n";
const SERVICE: &str = "policy default allow\n";
const ECHO: &str = "policy default deny\n";
const DISCOVERY: &str = "policy default deny\nallow\tchoria=alice.mcollective\t*\t*\t*\n";

struct Topology {
    prod: Network,
    london: Network,
    replay: NatsServer,
    dir: tempfile::TempDir,
    fleet: Fleet,
}

impl Topology {
    async fn start() -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let replay = NatsServer::start(
            &dir.path().join("replay-nats"),
            NatsServerConfig {
                jetstream: true,
                ..NatsServerConfig::default()
            },
        )
        .unwrap();
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        Topology {
            prod: Network::start("prod"),
            london,
            replay,
            dir,
            fleet,
        }
    }

    fn config(&self) -> PathBuf {
        let rules = self.dir.path().join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\nworkers = 2\n\n[identity]\nrules = {rules:?}\n\n\
             [replay]\nnats = [{:?}]\nmin_life_s = 10\n\n[ddl]\ndir = {:?}\n\n{}{}{}",
            self.replay.url(),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl"),
            gate_block(
                self.dir.path(),
                &[
                    ("rpcutil.policy", RPCUTIL),
                    ("echo.policy", ECHO),
                    ("discovery.policy", DISCOVERY),
                    ("service.policy", SERVICE),
                ],
                ""
            ),
            network_block("federations.prod", &self.prod, ""),
            network_block(
                "federations.prod.collectives.london",
                &self.london,
                &format!(
                    "signer = {{ certificate = {:?}, key = {:?} }}",
                    privileged.cert, privileged.key
                ),
            ),
        );
        let path = self.dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn audit(&self) -> Vec<fedgate::audit::Record> {
        audit_records(&self.dir.path().join("audit/audit.log"))
    }
}

/// The replay refusals recorded for `requestid` (in the audit trail all instances share here).
async fn replays(topo: &Topology, requestid: &str) -> usize {
    topo.audit()
        .iter()
        .filter(|r| r.event.request_id.as_deref() == Some(requestid) && r.event.code == "replay")
        .count()
}

/// Waits up to 20 s for `done`, calling `again` every 2 s (a broker that just started may not
/// be subscribed yet).
async fn wait_for_records<F, D, A, AF>(_topo: &Topology, done: D, again: &A) -> bool
where
    D: Fn() -> F,
    F: std::future::Future<Output = bool>,
    A: Fn() -> AF,
    AF: std::future::Future<Output = ()>,
{
    for round in 0..100 {
        if done().await {
            return true;
        }
        if round % 10 == 9 {
            again().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Counts what reaches london's subjects: every request fedgate forwards.
async fn spy(london: &Network) -> (async_nats::Client, async_nats::Subscriber) {
    let client = london.connect_as("alice").await;
    let sub = client.subscribe("london.>").await.unwrap();
    client.flush().await.unwrap();
    (client, sub)
}

/// Messages the spy saw so far.
async fn forwarded(sub: &mut async_nats::Subscriber) -> usize {
    let mut seen = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        seen += 1;
    }
    seen
}

fn broadcast(agent: &str) -> Vec<String> {
    vec![subjects::broadcast("london", agent)]
}

fn nodes(names: &[usize]) -> Vec<String> {
    names
        .iter()
        .map(|n| subjects::node("london", &format!("london-{n:04}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_for_another_agent_than_the_envelope_is_refused_and_never_forwarded() {
    let topo = Topology::start().await;
    let broker = BrokerProcess::spawn(&topo.config(), "adm1").await;
    let client = topo.prod.connect_as("alice").await;
    let (_spy_client, mut spy) = spy(&topo.london).await;

    // alice may ping rpcutil, nothing on echo: a body for rpcutil in an envelope for echo
    // (the agent nodes dispatch on) would run echo#ping with rpcutil's permit.
    let confused = sign(
        user("prod", "alice"),
        "echo",
        &rpc("rpcutil", "ping"),
        60,
        0,
    );
    let sent = send(&client, &confused, &confused.requestid, &broadcast("echo")).await;
    assert_eq!(sent.refusal().await, "agent_mismatch");
    // Routed by one agent, signed for another.
    let routed = sign(user("prod", "alice"), "echo", &rpc("echo", "ping"), 60, 0);
    let sent = send(&client, &routed, &routed.requestid, &broadcast("rpcutil")).await;
    assert_eq!(sent.refusal().await, "agent_mismatch");
    assert_eq!(forwarded(&mut spy).await, 0, "nothing reached london");
    assert_eq!(topo.fleet.stats().total, 0);

    let record = topo
        .audit()
        .into_iter()
        .find(|r| r.event.request_id.as_deref() == Some(confused.requestid.as_str()))
        .expect("a decision record");
    assert_eq!(
        (record.event.stage.as_str(), record.event.code.as_str()),
        ("decode", "agent_mismatch")
    );
    let counted = broker
        .counter(
            "fedgate_federation_refused_total",
            &[("direction", "request"), ("reason", "agent_mismatch")],
        )
        .await;
    assert_eq!(counted, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_request_id_that_is_not_the_signed_one_is_refused() {
    let topo = Topology::start().await;
    let broker = BrokerProcess::spawn(&topo.config(), "adm1").await;
    let client = topo.prod.connect_as("alice").await;
    let (_spy_client, mut spy) = spy(&topo.london).await;

    let signed = sign(
        user("prod", "alice"),
        "rpcutil",
        &rpc("rpcutil", "ping"),
        60,
        0,
    );
    let other = uuid::Uuid::new_v4().simple().to_string();
    let sent = send(&client, &signed, &other, &broadcast("rpcutil")).await;
    assert_eq!(sent.refusal().await, "request_id_mismatch");
    assert_eq!(forwarded(&mut spy).await, 0);
    let counted = broker
        .counter(
            "fedgate_federation_refused_total",
            &[("reason", "request_id_mismatch")],
        )
        .await;
    assert_eq!(counted, 1.0);
    // Recorded under the signed id, never the header's.
    let records = topo.audit();
    assert!(records.iter().any(|r| {
        r.event.request_id.as_deref() == Some(signed.requestid.as_str())
            && r.event.code == "request_id_mismatch"
    }));
    assert!(
        !records
            .iter()
            .any(|r| r.event.request_id.as_deref() == Some(other.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_request_sent_again_is_refused_on_any_instance_and_after_a_restart() {
    let topo = Topology::start().await;
    let config = topo.config();
    let mut first = BrokerProcess::spawn(&config, "adm1").await;
    let client = topo.prod.connect_as("alice").await;
    let (_spy_client, mut spy) = spy(&topo.london).await;

    let ping = sign(
        user("prod", "alice"),
        "rpcutil",
        &rpc("rpcutil", "ping"),
        60,
        0,
    );
    let replies = send(&client, &ping, &ping.requestid, &broadcast("rpcutil"))
        .await
        .collect(NODES, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), NODES, "{replies:?}");
    assert_eq!(forwarded(&mut spy).await, 1);

    // The same bytes with a fresh reply subject: a replay, recorded and never forwarded.
    let sent = send(&client, &ping, &ping.requestid, &broadcast("rpcutil")).await;
    sent.unanswered().await;
    assert_eq!(replays(&topo, &ping.requestid).await, 1);

    // A directed request may come in several batches, each target once, and never turns into
    // a broadcast.
    let directed = sign(
        user("prod", "alice"),
        "rpcutil",
        &rpc("rpcutil", "ping"),
        60,
        0,
    );
    let replies = send(&client, &directed, &directed.requestid, &nodes(&[0, 1]))
        .await
        .collect(2, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), 2);
    let replies = send(&client, &directed, &directed.requestid, &nodes(&[2]))
        .await
        .collect(1, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), 1);
    let sent = send(&client, &directed, &directed.requestid, &nodes(&[1])).await;
    sent.unanswered().await;
    let sent = send(
        &client,
        &directed,
        &directed.requestid,
        &broadcast("rpcutil"),
    )
    .await;
    sent.unanswered().await;
    // A refused batch keeps none of its targets: london-0003, new in a batch with a replayed
    // target, may still come in a batch of its own.
    let sent = send(&client, &directed, &directed.requestid, &nodes(&[3, 1])).await;
    sent.unanswered().await;
    assert_eq!(replays(&topo, &directed.requestid).await, 3);
    let replies = send(&client, &directed, &directed.requestid, &nodes(&[3]))
        .await
        .collect(1, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(forwarded(&mut spy).await, 4, "three batches, four targets");

    // Another instance, after the first is gone: the claims are shared and outlive it.
    first.kill().await;
    let _second = BrokerProcess::spawn(&config, "adm2").await;
    // The new instance refuses both (its subscriptions may take a moment after start-up).
    let before = (
        replays(&topo, &ping.requestid).await,
        replays(&topo, &directed.requestid).await,
    );
    let again = || async {
        send(&client, &ping, &ping.requestid, &broadcast("rpcutil")).await;
        send(&client, &directed, &directed.requestid, &nodes(&[0])).await;
    };
    again().await;
    let refused = wait_for_records(
        &topo,
        || async {
            replays(&topo, &ping.requestid).await > before.0
                && replays(&topo, &directed.requestid).await > before.1
        },
        &again,
    )
    .await;
    assert!(refused, "the second instance refused the replays");
    assert_eq!(forwarded(&mut spy).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_goes_through_policy_in_a_resign_federation() {
    let topo = Topology::start().await;
    let _broker = BrokerProcess::spawn(&topo.config(), "adm1").await;
    let client = topo.prod.connect_as("alice").await;

    let ping = fedgate::wire::encode_base64(b"ping");
    let alice = sign(user("prod", "alice"), "discovery", &ping, 60, 0);
    let replies = send(&client, &alice, &alice.requestid, &broadcast("discovery"))
        .await
        .collect(NODES, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), NODES, "{replies:?}");
    assert!(
        replies.iter().all(|(_, body)| body == "pong"),
        "{replies:?}"
    );

    let bob = sign(user("prod", "bob"), "discovery", &ping, 60, 0);
    let sent = send(&client, &bob, &bob.requestid, &broadcast("discovery")).await;
    assert_eq!(sent.refusal().await, "denied");
    let record = topo
        .audit()
        .into_iter()
        .find(|r| r.event.request_id.as_deref() == Some(bob.requestid.as_str()))
        .expect("bob's decision");
    assert_eq!(
        (
            record.event.agent.as_deref(),
            record.event.action.as_deref()
        ),
        (Some("discovery"), Some("ping"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_for_too_long_or_with_too_little_life_left_is_refused_before_allow() {
    let topo = Topology::start().await;
    let _broker = BrokerProcess::spawn(&topo.config(), "adm1").await;
    let client = topo.prod.connect_as("alice").await;
    let (_spy_client, mut spy) = spy(&topo.london).await;

    let year = sign(
        user("prod", "alice"),
        "rpcutil",
        &rpc("rpcutil", "ping"),
        31_536_000,
        0,
    );
    let sent = send(&client, &year, &year.requestid, &broadcast("rpcutil")).await;
    assert_eq!(sent.refusal().await, "ttl_too_long");

    // Five seconds of its 60 left, under the 10 s needed: with 1 s left it would expire on the
    // way if a second ticked, and be refused for that instead.
    let old = sign(
        user("prod", "alice"),
        "rpcutil",
        &rpc("rpcutil", "ping"),
        60,
        55,
    );
    let sent = send(&client, &old, &old.requestid, &broadcast("rpcutil")).await;
    assert_eq!(sent.refusal().await, "expiring");
    assert_eq!(forwarded(&mut spy).await, 0);
    let allowed = topo
        .audit()
        .into_iter()
        .filter(|r| r.event.code == "allowed")
        .count();
    assert_eq!(allowed, 0, "no allow record was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_checked_against_the_ddl_before_any_fan_out() {
    let topo = Topology::start().await;
    let broker = BrokerProcess::spawn(&topo.config(), "adm1").await;
    let client = topo.prod.connect_as("alice").await;
    let (_spy_client, mut spy) = spy(&topo.london).await;

    let cases = [
        (
            "service",
            r#"{"service":"nginx; rm -rf /"}"#,
            "status",
            "invalid_input",
        ),
        ("service", "{}", "status", "invalid_input"),
        (
            "service",
            r#"{"service":"nginx"}"#,
            "reboot",
            "unknown_action",
        ),
        ("puppet", "{}", "runonce", "unknown_agent"),
    ];
    for (agent, data, action, code) in cases {
        let body = format!(r#"{{"agent":"{agent}","action":"{action}","data":{data}}}"#);
        let signed = sign(user("prod", "alice"), agent, &body, 60, 0);
        let sent = send(&client, &signed, &signed.requestid, &broadcast(agent)).await;
        assert_eq!(sent.refusal().await, code, "{agent}#{action} {data}");
        let record = topo
            .audit()
            .into_iter()
            .find(|r| r.event.request_id.as_deref() == Some(signed.requestid.as_str()))
            .expect("a decision record");
        assert_eq!(
            (record.event.stage.as_str(), record.event.code.as_str()),
            ("validate", code)
        );
    }
    assert_eq!(forwarded(&mut spy).await, 0, "nothing reached london");
    assert_eq!(topo.fleet.stats().total, 0);
    let counted = broker
        .counter(
            "fedgate_federation_refused_total",
            &[("reason", "invalid_input")],
        )
        .await;
    assert_eq!(counted, 2.0);

    // A valid call passes the same check.
    let body = r#"{"agent":"service","action":"status","data":{"service":"nginx"}}"#;
    let signed = sign(user("prod", "alice"), "service", body, 60, 0);
    let replies = send(&client, &signed, &signed.requestid, &broadcast("service"))
        .await
        .collect(NODES, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), NODES, "{replies:?}");
}
