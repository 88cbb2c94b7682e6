//! Federated messages a broker must refuse: each is counted under its own reason and nothing is
//! published into any member network. Also a ring of two federations, stopped by max_hops, and
//! the audit records of routing refusals in resign mode.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fedgate::config::Config;
use fedgate::federation::stats::ClusterSnapshot;
use fedgate::federation::{Broker, BrokerOptions};
use fedgate::security::Signer;
use fedgate::subjects;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Filter, Request, RequestEnvelope, Transport, TransportHeaders,
};
use futures::StreamExt;
use serde_json::{Value, json};
use support::{BrokerProcess, Network, audit_records, gate_block, network_block};

const REQ: &str = "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";
const REPLY_TO: &str =
    "london.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";

async fn start_broker(config_text: &str, dir: &std::path::Path, instance: &str) -> Broker {
    let path = dir.join(format!("{instance}.toml"));
    std::fs::write(&path, config_text).unwrap();
    let config = Config::load(&path).unwrap();
    let options = BrokerOptions {
        instance: instance.into(),
        workers: 1,
        stats_interval: Duration::from_secs(60),
        limits: Limits::default(),
        gate: None,
    };
    Broker::start(&config, options).await.unwrap()
}

fn request(targets: &[&str], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
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
    edit(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

async fn wait_for(broker: &Broker, done: impl Fn(&ClusterSnapshot) -> bool) -> ClusterSnapshot {
    for _ in 0..500 {
        let snapshot = broker.snapshots().remove(0);
        if done(&snapshot) {
            return snapshot;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "broker counters never reached the expected state: {:?}",
        broker.snapshots()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_and_never_published() {
    let (prod, london, tokyo) = (
        Network::start("prod"),
        Network::start("london"),
        Network::start("tokyo"),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}{}",
        network_block(
            "federations.prod",
            &prod,
            "members = [\"tokyo\"]\nmode = \"pass-through\"",
        ),
        network_block("federations.prod.collectives.london", &london, ""),
        network_block("collectives.tokyo", &tokyo, ""),
    );
    let broker = start_broker(&text, dir.path(), "fb1").await;

    // Anything published on either member network shows up here.
    // Anything published on any network, except the federation's own subjects, shows up here.
    let (mut watchers, mut leaks) = (Vec::new(), Vec::new());
    for network in [&prod, &london, &tokyo] {
        let client = network.connect_as("alice").await;
        leaks.push(client.subscribe(">").await.unwrap());
        client.flush().await.unwrap();
        watchers.push(client);
    }
    let mut leaks = futures::stream::select_all(leaks);

    let no_federation = request(&[], |d| {
        d["headers"].as_object_mut().unwrap().remove("federation");
    });
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not_member",
            request(&["paris.broadcast.agent.rpcutil"], |_| {}),
        ),
        (
            "not_member",
            request(&["london.node.a", "paris.node.b"], |_| {}),
        ),
        ("bad_target", request(&["london.reply.abc.def"], |_| {})),
        (
            "bad_target",
            request(&["choria.federation.prod.federation"], |_| {}),
        ),
        (
            "bad_reply_to",
            request(&["london.broadcast.agent.rpcutil"], |d| {
                d["headers"]["reply-to"] = json!("tokyo.broadcast.agent.rpcutil")
            }),
        ),
        ("not_federated", no_federation),
        ("malformed", b"not json".to_vec()),
    ];
    let sender = prod.connect_as("alice").await;
    for (i, (reason, payload)) in cases.iter().enumerate() {
        let before = broker.snapshots()[0].federation.refused(reason);
        sender
            .publish(
                "choria.federation.prod.federation",
                Bytes::from(payload.clone()),
            )
            .await
            .unwrap();
        sender.flush().await.unwrap();
        let after = wait_for(&broker, |s| s.federation.refused(reason) > before).await;
        assert_eq!(after.federation.refused(reason), before + 1, "case {i}");
        assert_eq!(after.federation.received as usize, i + 1, "case {i}");
    }
    let snapshot = broker.snapshots().remove(0);
    assert_eq!(snapshot.federation.sent, 0);
    assert_eq!(
        snapshot.federation.refused.values().sum::<u64>(),
        cases.len() as u64
    );

    // A reply from a member that tries to escape into a request subject is refused too.
    let member = london.connect_as("alice").await;
    let escape = json!({
        "protocol": "choria:transport:1",
        "data": "e30=",
        "headers": {"mc_sender": "n1", "federation": {"req": REQ, "reply-to": "london.broadcast.agent.rpcutil"}}
    });
    member
        .publish(
            "choria.federation.prod.collective",
            Bytes::from(escape.to_string()),
        )
        .await
        .unwrap();
    member.flush().await.unwrap();
    let after = wait_for(&broker, |s| s.collective.refused("bad_reply_to") == 1).await;
    assert_eq!(after.collective.sent, 0);

    // Nothing was published anywhere but the test's own messages to the broker's subjects.
    let mut seen = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(300), leaks.next()).await
    {
        if ![
            "choria.federation.prod.federation",
            "choria.federation.prod.collective",
        ]
        .contains(&message.subject.as_str())
        {
            seen.push(message.subject.to_string());
        }
    }
    assert_eq!(seen, Vec::<String>::new(), "nothing escaped");
    broker.shutdown(Duration::from_secs(2)).await;
}

/// Two federation networks whose brokers each believe london is behind the other, with one
/// request for london sent into `a`. Returns both brokers and the networks that keep them up.
async fn ring(hop_limit: &str) -> (Broker, Broker, (Network, Network), tempfile::TempDir) {
    let (net_a, net_b) = (Network::start("prod"), Network::start("prod"));
    let dir = tempfile::tempdir().unwrap();
    let config = |served: &str, other: &str, (mine, theirs): (&Network, &Network)| {
        format!(
            "[instance]\nserve = [\"{served}\"]\n\n{}{}",
            network_block(
                &format!("federations.{served}"),
                mine,
                &format!("members = [\"{other}\"]\nmode = \"pass-through\"\n{hop_limit}")
            ),
            network_block(
                &format!("federations.{other}"),
                theirs,
                "members = [\"london\"]"
            ),
        )
    };
    let broker_a = start_broker(&config("a", "b", (&net_a, &net_b)), dir.path(), "fa1").await;
    let broker_b = start_broker(&config("b", "a", (&net_b, &net_a)), dir.path(), "fb1").await;
    let sender = net_a.connect_as("alice").await;
    let payload = request(&["london.broadcast.agent.rpcutil"], |_| {});
    sender
        .publish("choria.federation.a.federation", Bytes::from(payload))
        .await
        .unwrap();
    sender.flush().await.unwrap();
    (broker_a, broker_b, (net_a, net_b), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_two_federations_is_stopped_by_max_hops() {
    let (broker_a, broker_b, _networks, _dir) = ring("max_hops = 3").await;
    // a -> b -> a: the third arrival carries three hops and is refused.
    let a = wait_for(&broker_a, |s| s.federation.refused("max_hops") == 1).await;
    let b = broker_b.snapshots().remove(0);
    assert_eq!((a.federation.received, a.federation.sent), (2, 1), "{a:?}");
    assert_eq!((b.federation.received, b.federation.sent), (1, 1), "{b:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = broker_a.snapshots().remove(0);
    assert_eq!(a.federation.received, 2, "the ring stopped: {a:?}");
    broker_a.shutdown(Duration::from_secs(2)).await;
    broker_b.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_within_the_hop_limit_is_stopped_by_the_loop_check() {
    let (broker_a, broker_b, _networks, _dir) = ring("").await;
    // With the default limit of 8 hops, a's instance sees its own hop on the second pass.
    let a = wait_for(&broker_a, |s| s.federation.refused("loop") == 1).await;
    let figures = (
        a.federation.received,
        a.federation.sent,
        a.federation.refused("max_hops"),
    );
    assert_eq!(figures, (2, 1, 0), "{a:?}");
    broker_a.shutdown(Duration::from_secs(2)).await;
    broker_b.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_every_message_it_took() {
    let (prod, london) = (Network::start("prod"), Network::start("london"));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}",
        network_block("federations.prod", &prod, "mode = \"pass-through\""),
        network_block("federations.prod.collectives.london", &london, ""),
    );
    let broker = start_broker(&text, dir.path(), "fb1").await;
    let member = london.connect_as("alice").await;
    let mut arrivals = member
        .subscribe("london.broadcast.agent.rpcutil")
        .await
        .unwrap();
    member.flush().await.unwrap();

    let sender = prod.connect_as("alice").await;
    let payload = Bytes::from(request(&["london.broadcast.agent.rpcutil"], |_| {}));
    // The stream keeps coming until the broker has shut down, so shutdown lands in its middle.
    const MOST: u64 = 2_000_000;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let publisher = tokio::spawn(async move {
        let mut sent = 0;
        while sent < MOST && !stopped.load(Ordering::Relaxed) {
            sender
                .publish("choria.federation.prod.federation", payload.clone())
                .await
                .unwrap();
            sent += 1;
        }
        sender.flush().await.unwrap();
        sent
    });
    wait_for(&broker, |s| s.federation.received >= 100).await;
    let drained = broker.shutdown(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    assert!(drained.complete);
    let figures = &drained.clusters[0].federation;
    assert!(
        figures.received > 0 && figures.received < published,
        "shutdown came mid-stream ({published} published): {figures:?}"
    );
    assert_eq!(
        figures.sent, figures.received,
        "every message taken was relayed: {figures:?}"
    );
    let mut delivered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), arrivals.next()).await
    {
        delivered += 1;
    }
    assert_eq!(delivered, figures.sent, "and arrived in the member network");
}

/// A request signed by prod's alice for `rpcutil#ping` in london, in a transport with the
/// federation header's `req` set to its request id, edited by `edit` before it is sent.
fn signed_request(edit: impl FnOnce(&mut TransportHeaders)) -> (Vec<u8>, String, String) {
    let pair = support::user("prod", "alice");
    let signer = Signer::from_files(&pair.cert, &pair.key).unwrap();
    let caller = format!("choria={}", signer.certname());
    let requestid = uuid::Uuid::new_v4().simple().to_string();
    let request = Request::new(
        r#"{"agent":"rpcutil","action":"ping","data":{}}"#.into(),
        RequestEnvelope {
            requestid: requestid.clone(),
            senderid: "test-client".into(),
            callerid: caller.clone(),
            collective: "london".into(),
            agent: "rpcutil".into(),
            ttl: 60,
            time: fedgate::security::Now::system().unix_seconds(),
            filter: Filter::default(),
        },
    );
    let secure = signer.sign_request(&request).unwrap();
    let mut headers = TransportHeaders {
        reply_to: Some(subjects::reply("london", &caller, &requestid)),
        mc_sender: Some("test-client".into()),
        federation: Some(FederationHeader {
            req: Some(requestid.clone()),
            reply_to: None,
            target: vec![subjects::broadcast("london", "rpcutil")],
        }),
        ..TransportHeaders::default()
    };
    edit(&mut headers);
    let transport = Transport::new(secure.encode(), headers);
    (transport.encode(), requestid, caller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_refusals_in_resign_mode_record_the_request_id_and_the_claimed_caller() {
    let (prod, london) = (Network::start("prod"), Network::start("london"));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"prod\"\nto = [\"london\"]\nglob = \"choria=*.mcollective\"\nas = \"$0\"\n",
    )
    .unwrap();
    let privileged = support::realm("london").privileged.as_ref().unwrap();
    let text = format!(
        "[instance]\nstats_interval = 1\nworkers = 1\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(
            dir.path(),
            &[("rpcutil.policy", "policy default allow\n")],
            ""
        ),
        network_block("federations.prod", &prod, "max_hops = 2"),
        network_block(
            "federations.prod.collectives.london",
            &london,
            &format!(
                "signer = {{ certificate = {:?}, key = {:?} }}",
                privileged.cert, privileged.key
            ),
        ),
    );
    let config = dir.path().join("fedgate.toml");
    std::fs::write(&config, text).unwrap();
    let _broker = BrokerProcess::spawn(&config, "fr1").await;

    let hop = |n: usize| -> [String; 3] {
        [
            "nats://fed:4222".into(),
            format!("fb{n} (fedgate federation other)"),
            "nats://fed:4222".into(),
        ]
    };
    let cases = [
        (
            "bad_reply_to",
            signed_request(|h| h.reply_to = Some("london.broadcast.agent.rpcutil".into())),
        ),
        (
            "not_member",
            signed_request(|h| {
                h.federation.as_mut().unwrap().target =
                    vec![subjects::broadcast("paris", "rpcutil")]
            }),
        ),
        (
            "max_hops",
            signed_request(|h| h.seen_by = vec![hop(1), hop(2)]),
        ),
    ];
    let sender = prod.connect_as("alice").await;
    for (_, (payload, _, _)) in &cases {
        sender
            .publish(
                subjects::federation_ingest("prod"),
                Bytes::from(payload.clone()),
            )
            .await
            .unwrap();
    }
    sender.flush().await.unwrap();

    let trail = dir.path().join("audit/audit.log");
    let recorded = |requestid: &str, code: &str| {
        audit_records(&trail)
            .into_iter()
            .find(|r| r.event.code == code && r.event.request_id.as_deref() == Some(requestid))
    };
    for (code, (_, requestid, caller)) in &cases {
        let mut record = None;
        for _ in 0..100 {
            record = recorded(requestid, code);
            if record.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(record) = record else {
            let codes: Vec<_> = audit_records(&trail)
                .into_iter()
                .map(|r| (r.event.code, r.event.request_id))
                .collect();
            panic!("no {code} record for request {requestid}: {codes:?}");
        };
        let event = &record.event;
        assert_eq!(
            event.decision,
            Some(fedgate::audit::Verdict::Deny),
            "{code}"
        );
        assert_eq!(
            event.claimed_caller.as_deref(),
            Some(caller.as_str()),
            "{code}"
        );
        assert_eq!(
            event.caller, None,
            "{code}: a claim is never a verified caller"
        );
        assert_eq!(event.agent.as_deref(), Some("rpcutil"), "{code}");
    }
    let not_member = recorded(&cases[1].1.1, "not_member").unwrap();
    assert_eq!(not_member.event.collectives, vec!["paris".to_string()]);

    let query = std::process::Command::new(support::fedgate_bin())
        .args([
            "audit",
            "query",
            "--format",
            "json",
            "--caller",
            "^choria=alice",
        ])
        .arg(&trail)
        .output()
        .unwrap();
    assert!(query.status.success(), "{query:?}");
    let listed: Vec<(String, String)> = String::from_utf8(query.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let record: fedgate::audit::Record = serde_json::from_str(line).unwrap();
            (
                record.event.code,
                record.event.request_id.unwrap_or_default(),
            )
        })
        .collect();
    for (code, (_, requestid, _)) in &cases {
        assert!(
            listed.contains(&(code.to_string(), requestid.clone())),
            "audit query lists the {code} refusal: {listed:?}"
        );
    }
}
