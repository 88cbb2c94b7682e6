//! How the legacy bridge and facade refuse: a request routed by one agent's key that signs
//! another, a request with too little life left, fedgate's own requests coming back, and the
//! answer a refused caller hears (the real `mco`, and a Choria client of the facade).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedgate::config::Config;
use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::wire::mcollective::{Ruby, Serializer};
use support::gate_block;
use support::legacy::{LegacySite, Publisher};

/// fedgate bridging `site`'s legacy clients into london's simulated nodes, and, with `facade`,
/// serving the legacy collective to london's Choria clients as well.
struct Setup {
    london: support::Network,
    fleet: fedgate_dev::fleet::Fleet,
    nodes: Vec<String>,
    ingress: fedgate::legacy::ingress::Ingress,
    facade: Option<fedgate::legacy::facade::Facade>,
    dir: tempfile::TempDir,
}

const IDENTITY_RULES: &str = "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n\n\
    [[rule]]\nfrom = \"london\"\nto = [\"oldsite\"]\nglob = \"choria=*.mcollective\"\nas = \"cert=fedgate\"\n";

async fn setup(site: &LegacySite, policies: &[(&str, &str)], facade: bool) -> Setup {
    let london = support::Network::start("london");
    let nodes: Vec<String> = fedgate_dev::fleet::generate("london", 5, &["london".into()])
        .into_iter()
        .map(|n| n.identity)
        .collect();
    let fleet = london.start_fleet(5).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(&rules, IDENTITY_RULES).unwrap();
    let served = if facade { "choria = \"london\"\n" } else { "" };
    let text = format!(
        "[instance]\nname = \"gw1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(dir.path(), policies, ""),
        support::collective_block("collectives.london", &london),
        site.config_block(
            "oldsite",
            &format!("{served}bridge = {{ collective = \"london\", refresh_s = 5 }}")
        ),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "gw1")
        .await
        .unwrap();
    let ingress = fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate.clone(), "gw1")
        .await
        .unwrap();
    let facade = if facade {
        let link =
            fedgate::legacy::LegacyLink::connect("oldsite", &config.legacy["oldsite"], "gw1")
                .await
                .unwrap();
        let started =
            fedgate::legacy::facade::Facade::start(&config, "oldsite", Arc::new(link), gate, "gw1")
                .await
                .unwrap();
        Some(started)
    } else {
        None
    };
    assert!(
        wait_until(60, || ingress.directed_bindings() == 5).await,
        "directed bindings: {}",
        ingress.directed_bindings()
    );
    Setup {
        london,
        fleet,
        nodes,
        ingress,
        facade,
        dir,
    }
}

impl Setup {
    fn records(&self) -> Vec<fedgate::audit::Record> {
        support::audit_records(&self.dir.path().join("audit/audit.log"))
    }

    /// The decision codes recorded for `requestid`, in order.
    fn decisions(&self, requestid: &str) -> Vec<String> {
        self.records()
            .into_iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .filter(|r| r.event.request_id.as_deref() == Some(requestid))
            .map(|r| r.event.code)
            .collect()
    }

    async fn shutdown(self) {
        if let Some(facade) = self.facade {
            facade.shutdown(Duration::from_secs(2)).await;
        }
        self.ingress.shutdown(Duration::from_secs(2)).await;
    }
}

/// Waits up to `seconds` for `done` to hold.
async fn wait_until(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// A Marshal request for `agent`'s `action`, the envelope, filter and signed body all naming
/// `agent`, signed by `signer` at `msgtime` with `ttl`.
fn request(
    signer: &LegacySigner,
    (agent, action): (&str, &str),
    (msgtime, ttl): (i64, i64),
    requestid: &str,
) -> Vec<u8> {
    let msg = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str(agent)),
        (Ruby::sym("action"), Ruby::str(action)),
        (Ruby::sym("data"), Ruby::Hash(Vec::new())),
    ]);
    let new = NewLegacyRequest {
        msg,
        senderid: "client.example.net",
        requestid,
        filter: fedgate::legacy::legacy_filter(&Default::default(), agent).unwrap(),
        collective: "mcollective",
        agent,
        ttl,
        msgtime,
    };
    signer
        .sign_request(Serializer::Marshal, &new)
        .unwrap()
        .encode(Serializer::Marshal)
}

/// The `(time, ttl)` of every request that reaches london, by request id.
async fn watch_forwarded(london: &support::Network) -> Arc<Mutex<BTreeMap<String, (i64, i64)>>> {
    use fedgate::wire::choria_v1::{SecureRequest, Transport};
    let nats = london.connect_as("alice").await;
    let mut requests = futures::stream::select_all([
        nats.subscribe("london.broadcast.>").await.unwrap(),
        nats.subscribe("london.node.>").await.unwrap(),
    ]);
    nats.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let windows = seen.clone();
    tokio::spawn(async move {
        let _keep = nats;
        let limits = fedgate::wire::Limits::default();
        while let Some(message) = futures::StreamExt::next(&mut requests).await {
            let envelope = Transport::decode(&message.payload, &limits)
                .ok()
                .and_then(|t| SecureRequest::decode(&t.data, &limits).ok())
                .and_then(|s| s.request(&limits).ok())
                .map(|r| r.envelope);
            if let Some(envelope) = envelope {
                windows
                    .lock()
                    .unwrap()
                    .insert(envelope.requestid, (envelope.time, envelope.ttl));
            }
        }
    });
    seen
}

fn now() -> i64 {
    fedgate::security::Now::system().unix_seconds()
}

fn id(n: u8) -> String {
    format!("{n:032x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_routed_by_another_agents_key_is_refused_as_agent_mismatch() {
    let site = LegacySite::new(Serializer::Marshal).await;
    // Policy would allow puppet: only the route is wrong.
    let policies = [
        (
            "rpcutil.policy",
            "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n",
        ),
        (
            "puppet.policy",
            "policy default deny\nallow\tchoria=alice.mcollective\t*\t*\t*\n",
        ),
    ];
    let setup = setup(&site, &policies, false).await;
    let forwarded = watch_forwarded(&setup.london).await;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let node = setup.nodes[2].clone();
    // puppet is not bridged: signed and addressed as puppet, routed by rpcutil's key; and
    // directed at a bridged node.
    let routed = request(&alice, ("puppet", "status"), (now(), 60), &id(1));
    publisher
        .publish(("mcollective_broadcast", "rpcutil"), &routed)
        .await;
    let directed = request(&alice, ("puppet", "run"), (now(), 60), &id(2));
    publisher
        .publish(("mcollective_directed", &node), &directed)
        .await;
    // A good request after them.
    let good = request(&alice, ("rpcutil", "ping"), (now(), 60), &id(3));
    publisher
        .publish(("mcollective_broadcast", "rpcutil"), &good)
        .await;

    assert!(
        wait_until(60, || [1, 2, 3]
            .iter()
            .all(|n| !setup.decisions(&id(*n)).is_empty()))
        .await
    );
    assert_eq!(setup.decisions(&id(1)), ["agent_mismatch"]);
    assert_eq!(setup.decisions(&id(2)), ["agent_mismatch"]);
    assert_eq!(setup.decisions(&id(3)), ["allowed"]);
    assert!(wait_until(30, || forwarded.lock().unwrap().contains_key(&id(3))).await);
    let forwarded = forwarded.lock().unwrap().clone();
    assert!(!forwarded.contains_key(&id(1)) && !forwarded.contains_key(&id(2)));
    let refused = setup
        .records()
        .into_iter()
        .find(|r| r.event.request_id.as_deref() == Some(&id(1)))
        .unwrap();
    assert_eq!(refused.event.stage, "decode", "{:?}", refused.event);
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bridged_request_never_outlives_the_original_and_one_about_to_expire_is_refused_once() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let policies = [(
        "rpcutil.policy",
        "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n",
    )];
    let setup = setup(&site, &policies, false).await;
    let forwarded = watch_forwarded(&setup.london).await;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let ping = ("rpcutil", "ping");
    let broadcast = ("mcollective_broadcast", "rpcutil");
    // 40 s of its 60 left: re-issued to end with it. A TTL of 20, under Choria's 30 s
    // minimum: re-issued with its time set back, so it still ends with the original.
    let aged = now() - 20;
    publisher
        .publish(broadcast, &request(&alice, ping, (aged, 60), &id(1)))
        .await;
    let short = now();
    publisher
        .publish(broadcast, &request(&alice, ping, (short, 20), &id(4)))
        .await;
    // Too little left to forward (under `[replay] min_life_s`, 2 s): an old request, and one
    // signed for more than `max_signed_ttl`.
    publisher
        .publish(broadcast, &request(&alice, ping, (now() - 59, 60), &id(2)))
        .await;
    publisher
        .publish(broadcast, &request(&alice, ping, (now(), 3_600), &id(3)))
        .await;

    for (n, end) in [(1, aged + 60), (4, short + 20)] {
        assert!(wait_until(60, || forwarded.lock().unwrap().contains_key(&id(n))).await);
        let (time, ttl) = forwarded.lock().unwrap()[&id(n)];
        assert!(
            time + ttl <= end,
            "re-issued at {time} for {ttl} s, past the original's end at {end}"
        );
    }
    // Refused once each, before any decision to allow, and never forwarded.
    let refused = |n: u8| {
        setup.records().into_iter().any(|r| {
            r.event.request_id.as_deref() == Some(&id(n))
                && r.event.decision == Some(fedgate::audit::Verdict::Deny)
        })
    };
    assert!(wait_until(90, || refused(2) && refused(3)).await);
    assert_eq!(setup.decisions(&id(2)), ["expiring"]);
    assert_eq!(setup.decisions(&id(3)), ["ttl_too_long"]);
    let forwarded = forwarded.lock().unwrap().clone();
    assert!(!forwarded.contains_key(&id(2)) && !forwarded.contains_key(&id(3)));
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedgate_never_takes_back_a_request_it_published_into_the_legacy_collective() {
    let site = LegacySite::new(Serializer::Marshal).await;
    // A policy that lets anyone ping: only fedgate's own check stops the loop.
    let policies = [("rpcutil.policy", "policy default allow\n")];
    let setup = setup(&site, &policies, true).await;
    // london's alice calls the legacy collective through the facade; fedgate publishes the
    // request into the legacy collective as cert=fedgate, where its own bridge listens.
    let alice = setup
        .london
        .client(support::user("london", "alice"), None)
        .await;
    let mut call = fedgate::client::RpcCall::new("oldsite", "rpcutil", "ping");
    call.timeout = Duration::from_secs(2);
    let summary = alice.call(&call, |_| {}).await.unwrap();
    let requestid = summary.requestids[0].clone();
    let bridged = || {
        setup.records().into_iter().any(|r| {
            r.kind == fedgate::audit::Kind::Decision
                && r.event.edge == "legacy-amqp"
                && r.event.request_id.as_deref() == Some(requestid.as_str())
        })
    };
    assert!(wait_until(60, bridged).await, "the bridge saw nothing");
    assert_eq!(setup.decisions(&requestid), ["allowed", "own_request"]);
    assert_eq!(setup.ingress.own_requests_dropped(), 1);
    assert_eq!(
        setup.fleet.stats().acted_for(
            "choria=fedgate.mcollective",
            "fedgate.privileged.mcollective"
        ),
        0
    );
    setup.shutdown().await;
}

/// `mco rpc` with `args`, its stdout and stderr.
fn mco_rpc(site: &LegacySite, args: &[&str]) -> (String, String) {
    let mut full = vec!["rpc", "--dt", "5", "-t", "20"];
    full.extend_from_slice(args);
    let output = site.mco(&full);
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_mco_caller_hears_fedgates_refusal() {
    for serializer in [Serializer::Marshal, Serializer::Yaml] {
        let site = LegacySite::new(serializer).await;
        let policies = [(
            "rpcutil.policy",
            "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n",
        )];
        let setup = setup(&site, &policies, false).await;
        let node = setup.nodes[3].clone();
        // Directed at one node: the refusal is that node's answer, in mco's own words.
        let (stdout, stderr) = mco_rpc(&site, &["rpcutil", "daemon_stats", "-I", &node]);
        assert!(
            stdout.contains(&node) && stdout.contains("fedgate refused the request"),
            "{stdout}{stderr}"
        );
        println!("mco rpc rpcutil daemon_stats -I {node}:\n{stdout}");
        // After discovery (allowed), each of the five nodes' copies is refused and answered.
        std::thread::sleep(Duration::from_millis(1100));
        let (stdout, stderr) = mco_rpc(&site, &["--json", "rpcutil", "daemon_stats"]);
        let results: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        let results = results.as_array().unwrap();
        assert_eq!(results.len(), 5, "{stdout}");
        for result in results {
            assert_eq!(result["statuscode"], 1, "{result}");
            assert!(
                result["statusmsg"]
                    .as_str()
                    .unwrap()
                    .starts_with("fedgate refused the request"),
                "{result}"
            );
        }
        setup.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_choria_caller_of_the_facade_hears_why() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let policies = [(
        "rpcutil.policy",
        "policy default deny\nallow\tcert=fedgate\tping\t*\t*\n",
    )];
    let setup = setup(&site, &policies, true).await;
    let alice = setup
        .london
        .client(support::user("london", "alice"), None)
        .await;
    let mut call = fedgate::client::RpcCall::new("oldsite", "rpcutil", "inventory");
    call.timeout = Duration::from_secs(20);
    call.expect = Some(1);
    let mut replies = Vec::new();
    let summary = alice
        .call(&call, |reply| replies.push(reply.clone()))
        .await
        .unwrap();
    assert_eq!(replies.len(), 1, "{summary:?}");
    let reply = &replies[0];
    assert_eq!(reply.statuscode, 1, "{reply:?}");
    assert_eq!(reply.data["fedgate"]["code"], "denied", "{reply:?}");
    assert_eq!(reply.data["fedgate"]["stage"], "authorize", "{reply:?}");
    assert!(reply.statusmsg.starts_with("fedgate refused the request"));
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_facade_never_takes_back_a_request_the_bridge_published() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let _fleet = london.start_fleet(2).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(&rules, IDENTITY_RULES).unwrap();
    // london's collective is named oldsite on its wire, where fedgate serves the legacy one: the
    // bridge's requests into london are on the subjects the facade takes.
    let text = format!(
        "[instance]\nname = \"gw1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}internal_name = \"oldsite\"\n{}",
        gate_block(
            dir.path(),
            &[("rpcutil.policy", "policy default allow\n")],
            ""
        ),
        support::collective_block("collectives.london", &london),
        site.config_block(
            "oldsite",
            "choria = \"london\"\nbridge = { collective = \"london\", refresh_s = 5 }"
        ),
    );
    std::fs::write(dir.path().join("fedgate.toml"), text).unwrap();
    let config = Config::load(&dir.path().join("fedgate.toml")).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "gw1")
        .await
        .unwrap();
    let ingress = fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate.clone(), "gw1")
        .await
        .unwrap();
    let link = fedgate::legacy::LegacyLink::connect("oldsite", &config.legacy["oldsite"], "gw1")
        .await
        .unwrap();
    let facade =
        fedgate::legacy::facade::Facade::start(&config, "oldsite", Arc::new(link), gate, "gw1")
            .await
            .unwrap();
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    publisher
        .publish(
            ("mcollective_broadcast", "rpcutil"),
            &request(&alice, ("rpcutil", "ping"), (now(), 60), &id(1)),
        )
        .await;
    let records = || support::audit_records(&dir.path().join("audit/audit.log"));
    let decisions = || {
        records()
            .into_iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .filter(|r| r.event.request_id.as_deref() == Some(id(1).as_str()))
            .map(|r| (r.event.edge, r.event.code))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(60, || decisions()
            .iter()
            .any(|(edge, _)| edge == "choria-nats"))
        .await,
        "{:?}",
        decisions()
    );
    assert_eq!(
        decisions(),
        [
            ("legacy-amqp".to_string(), "allowed".to_string()),
            ("choria-nats".to_string(), "own_request".to_string())
        ]
    );
    facade.shutdown(Duration::from_secs(2)).await;
    ingress.shutdown(Duration::from_secs(2)).await;
}
