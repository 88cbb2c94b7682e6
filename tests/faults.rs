//! Faults under load, with real nats-servers and real `fedgate run` processes: a collective's
//! server and the federation's server killed and restarted in the middle of broadcasts, and one
//! of three instances killed. In each, requests in flight end (with their replies so far or a
//! clear refusal, never a hang), later requests succeed without restarting fedgate, and no
//! request is forwarded into the collective twice, by what a spy on the collective sees and by
//! the decisions in the audit trail.
//!
//! The other faults of this kind are tested beside what they break: closing every AMQP
//! connection in `legacy_bridge`, an audit file that cannot be written and then can again, and
//! SIGHUP during load, in `policy_audit`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedgate::audit::{Kind, Verdict};
use fedgate::client::{RpcCall, RpcClient, Summary};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{SecureRequest, Transport};
use futures::StreamExt;
use support::{BrokerProcess, Network, audit_records, gate_block, network_block, realm, user};

const NODES: usize = 30;
/// How long each call under load collects replies.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

const RULES: &str = support::PROD_CALLERS_TO_LONDON;

struct Topology {
    prod: Network,
    london: Network,
    dir: tempfile::TempDir,
}

impl Topology {
    fn start() -> Topology {
        Topology {
            prod: Network::start("prod"),
            london: Network::start("london"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A re-signing broker config: every instance writes its own audit file.
    fn config(&self, instance: &str) -> PathBuf {
        let dir = self.dir.path().join(instance);
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nworkers = 2\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
            gate_block(&dir, &[("rpcutil.policy", "policy default allow\n")], ""),
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
        let path = dir.join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn audit_file(&self, instance: &str) -> PathBuf {
        self.dir.path().join(instance).join("audit/audit.log")
    }

    async fn client(&self) -> RpcClient {
        self.prod.client(user("prod", "alice"), None).await
    }

    /// Counts every request published into london by request id, across reconnects.
    async fn spy(&self) -> Arc<Mutex<HashMap<String, usize>>> {
        let client = self.london.connect_as("bob").await;
        let mut requests = client.subscribe("london.>").await.unwrap();
        client.flush().await.unwrap();
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = seen.clone();
        tokio::spawn(async move {
            let _client = client;
            let limits = Limits::default();
            while let Some(message) = requests.next().await {
                let Some(requestid) = Transport::decode(&message.payload, &limits)
                    .ok()
                    .and_then(|t| SecureRequest::decode(&t.data, &limits).ok())
                    .and_then(|s| s.request(&limits).ok())
                    .map(|r| r.envelope.requestid)
                else {
                    continue;
                };
                *counted.lock().unwrap().entry(requestid).or_default() += 1;
            }
        });
        seen
    }
}

fn ping(timeout: Duration) -> RpcCall {
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.federation = Some("prod".into());
    call.expect = Some(NODES);
    call.timeout = timeout;
    call
}

/// One call made under load: how long it took and how it ended.
#[derive(Debug)]
struct Outcome {
    took: Duration,
    result: Result<Summary, String>,
    /// The refusal codes fedgate answered with.
    refusals: Vec<String>,
}

/// Callers making back-to-back broadcast pings until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    async fn start(topo: &Topology, callers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let client = topo.client().await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let mut refusals = Vec::new();
                    let result = client
                        .call(&ping(CALL_TIMEOUT), |reply| {
                            if let Some(code) = reply.data["fedgate"]["code"].as_str() {
                                refusals.push(code.to_string());
                            }
                        })
                        .await
                        .map_err(|e| e.to_string());
                    if result.is_err() {
                        // A call refused at once (no connection) is retried after a pause,
                        // as a person or a script would.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    outcomes.push(Outcome {
                        took: started.elapsed(),
                        result,
                        refusals,
                    });
                }
                outcomes
            }));
        }
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            let outcomes = tokio::time::timeout(CALL_TIMEOUT * 4, task)
                .await
                .expect("a caller under load hung")
                .unwrap();
            all.extend(outcomes);
        }
        all
    }
}

/// Every call ended by its own deadline; returns (complete, short, refused, failed at once).
fn tally(outcomes: &[Outcome]) -> (usize, usize, usize, usize) {
    let (mut complete, mut short, mut refused, mut failed) = (0, 0, 0, 0);
    for outcome in outcomes {
        assert!(
            outcome.took < CALL_TIMEOUT + Duration::from_secs(2),
            "a call ran past its deadline: {outcome:?}"
        );
        match &outcome.result {
            Ok(summary) if summary.ok == NODES => complete += 1,
            Ok(_) if !outcome.refusals.is_empty() => {
                for code in &outcome.refusals {
                    assert_eq!(code, "unreachable", "{outcome:?}");
                }
                refused += 1;
            }
            Ok(_) => short += 1,
            Err(message) => {
                assert!(message.contains("unreachable"), "{message}");
                failed += 1;
            }
        }
    }
    (complete, short, refused, failed)
}

/// Pings until one is answered by every node; panics after `seconds`.
async fn until_served(client: &RpcClient, seconds: u64) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(summary) = client.call(&ping(Duration::from_secs(2)), |_| {}).await
            && summary.ok == NODES
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(seconds),
            "requests were not served again within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Nothing reached london twice, and each request has at most one allowed decision per
/// instance trail, and no more than one over all of them.
fn assert_forwarded_once(seen: &Mutex<HashMap<String, usize>>, trails: &[PathBuf]) {
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published into london twice: {twice:?}");
    let mut allowed: BTreeMap<String, usize> = BTreeMap::new();
    for trail in trails {
        for record in audit_records(trail) {
            if record.kind == Kind::Decision && record.event.decision == Some(Verdict::Allow) {
                *allowed
                    .entry(record.event.request_id.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = allowed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "allowed twice: {twice:?}");
    // Everything london saw was allowed on the record first.
    let unrecorded: Vec<_> = seen
        .keys()
        .filter(|id| !allowed.contains_key(*id))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "forwarded unrecorded: {unrecorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collective_server_restarted_mid_broadcast_is_served_again() {
    let mut topo = Topology::start();
    let _fleet = topo.london.start_fleet(NODES).await;
    let mut broker = BrokerProcess::spawn(&topo.config("c1"), "c1").await;
    let seen = topo.spy().await;
    let client = topo.client().await;
    until_served(&client, 10).await;

    let load = Load::start(&topo, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    topo.london.server.stop();
    // While london is down, requests are refused at once, saying why.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut summary, mut codes) = (Summary::default(), Vec::new());
    for _ in 0..20 {
        codes.clear();
        summary = client
            .call(&ping(Duration::from_secs(2)), |r| {
                codes.push(r.data["fedgate"]["code"].clone());
            })
            .await
            .unwrap();
        if summary.responses > 0 {
            break;
        }
    }
    assert_eq!((summary.responses, summary.failed), (1, 1), "{summary:?}");
    assert_eq!(codes, vec![serde_json::json!("unreachable")]);
    let refused_id = summary.requestids[0].clone();

    topo.london.server.restart().unwrap();
    let back = until_served(&client, 30).await;
    eprintln!("served again {back:?} after london's server restarted");
    let outcomes = load.finish().await;
    let (complete, short, refused, failed) = tally(&outcomes);
    eprintln!("under load: {complete} complete, {short} short, {refused} refused, {failed} failed");
    assert!(complete > 0 && refused > 0, "{outcomes:?}");
    assert_eq!(failed, 0, "the federation side never went away");
    for _ in 0..5 {
        let summary = client
            .call(&ping(Duration::from_secs(10)), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.ok, NODES, "{summary:?}");
    }
    assert!(broker.is_running());
    assert!(
        broker
            .counter(
                "fedgate_federation_refused_total",
                &[("reason", "unreachable")]
            )
            .await
            >= 1.0
    );
    assert!(broker.terminate().await.success());
    // What was refused as unreachable was not held for later either.
    assert!(!seen.lock().unwrap().contains_key(&refused_id));
    assert_forwarded_once(&seen, &[topo.audit_file("c1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_server_restarted_mid_broadcast_is_served_again() {
    let mut topo = Topology::start();
    let _fleet = topo.london.start_fleet(NODES).await;
    let mut broker = BrokerProcess::spawn(&topo.config("f1"), "f1").await;
    let seen = topo.spy().await;
    let client = topo.client().await;
    until_served(&client, 10).await;

    let load = Load::start(&topo, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    topo.prod.server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The caller's own connection is down too: its call fails at once, saying so.
    let err = client
        .call(&ping(Duration::from_secs(2)), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");

    topo.prod.server.restart().unwrap();
    let back = until_served(&client, 30).await;
    eprintln!("served again {back:?} after the federation's server restarted");
    let outcomes = load.finish().await;
    let (complete, short, refused, failed) = tally(&outcomes);
    eprintln!("under load: {complete} complete, {short} short, {refused} refused, {failed} failed");
    assert!(complete > 0, "{outcomes:?}");
    // The outage was felt: a call came back short or failed, or it waited the outage out (the
    // callers' connections reconnect by themselves, so a call in flight may still complete).
    let waited = outcomes
        .iter()
        .filter(|o| o.took >= Duration::from_secs(1))
        .count();
    assert!(
        short + failed + waited > 0,
        "the outage was felt: {outcomes:?}"
    );
    for _ in 0..5 {
        let summary = client
            .call(&ping(Duration::from_secs(10)), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.ok, NODES, "{summary:?}");
    }
    assert!(broker.is_running());
    assert!(broker.terminate().await.success());
    assert_forwarded_once(&seen, &[topo.audit_file("f1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_three_instances_killed_under_load_loses_no_later_request() {
    let topo = Topology::start();
    let _fleet = topo.london.start_fleet(NODES).await;
    let mut brokers = Vec::new();
    for name in ["k1", "k2", "k3"] {
        brokers.push(BrokerProcess::spawn(&topo.config(name), name).await);
    }
    let seen = topo.spy().await;
    let client = topo.client().await;
    until_served(&client, 10).await;

    let load = Load::start(&topo, 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    brokers[1].kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcomes = load.finish().await;
    let (complete, short, refused, failed) = tally(&outcomes);
    eprintln!("under load: {complete} complete, {short} short, {refused} refused, {failed} failed");
    assert!(complete > 0, "{outcomes:?}");
    assert_eq!((refused, failed), (0, 0), "{outcomes:?}");
    // Later requests all reach every node, through the two that are left.
    for _ in 0..20 {
        let summary = client
            .call(&ping(Duration::from_secs(10)), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.ok, NODES, "{summary:?}");
    }
    for n in [0, 2] {
        assert!(brokers[n].is_running());
        assert!(brokers[n].terminate().await.success());
    }
    let trails: Vec<PathBuf> = ["k1", "k2", "k3"]
        .iter()
        .map(|n| topo.audit_file(n))
        .collect();
    assert_forwarded_once(&seen, &trails);
}
