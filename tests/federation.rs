//! The Federation Broker end to end: a federation nats-server, london and tokyo collectives with
//! 500 simulated nodes each, and three `fedgate run` instances sharing the work.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedgate::client::{RpcCall, RpcClient};
use fedgate::federation::stats::ClusterSnapshot;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::Transport;
use futures::StreamExt;
use support::{BrokerProcess, Network, network_block, user};

const NODES: usize = 500;

struct Topology {
    prod: Network,
    london: Network,
    tokyo: Network,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Topology {
    fn start() -> Topology {
        let (prod, london, tokyo) = (
            Network::start("prod"),
            Network::start("london"),
            Network::start("tokyo"),
        );
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\ndrain_timeout = 5\nworkers = 2\n\n{}{}{}",
            network_block("federations.prod", &prod, "mode = \"pass-through\""),
            network_block("federations.prod.collectives.london", &london, ""),
            network_block("federations.prod.collectives.tokyo", &tokyo, ""),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        Topology {
            prod,
            london,
            tokyo,
            config,
            _dir: dir,
        }
    }

    /// A client on the federation network, signing as prod's alice (trusted by both fleets).
    async fn client(&self) -> RpcClient {
        self.prod.client(user("prod", "alice"), None).await
    }

    /// The latest stats of each instance, as `fedgate observe --once` reports them.
    async fn observe(&self) -> BTreeMap<String, ClusterSnapshot> {
        let output = tokio::process::Command::new(support::fedgate_bin())
            .args(["observe", "--federation", "prod", "--once", "2", "--config"])
            .arg(&self.config)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let snapshots: Vec<ClusterSnapshot> = serde_json::from_slice(&output.stdout).unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains("Federation Broker: prod") && text.contains("Received:"),
            "{text}"
        );
        snapshots
            .into_iter()
            .map(|s| (s.instance.clone(), s))
            .collect()
    }
}

fn federated(collective: &str, agent: &str, action: &str) -> RpcCall {
    let mut call = RpcCall::new(collective, agent, action);
    call.federation = Some("prod".into());
    call.timeout = Duration::from_secs(20);
    call
}

/// A federated ping to every node of both collectives, one request per collective.
fn ping_both(timeout: Duration) -> Vec<RpcCall> {
    ["london", "tokyo"]
        .map(|c| RpcCall {
            expect: Some(NODES),
            timeout,
            ..federated(c, "rpcutil", "ping")
        })
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_relay_broadcasts_batches_and_survive_a_crash() {
    let topo = Topology::start();
    let london = topo
        .london
        .start_fleet_trusting(
            fedgate_dev::fleet::generate("london", NODES, &["london".into()]),
            &["prod"],
        )
        .await;
    let tokyo = topo
        .tokyo
        .start_fleet_trusting(
            fedgate_dev::fleet::generate("tokyo", NODES, &["tokyo".into()]),
            &["prod"],
        )
        .await;
    let mut brokers = Vec::new();
    for name in ["fb1", "fb2", "fb3"] {
        brokers.push(BrokerProcess::spawn(&topo.config, name).await);
    }
    let client = topo.client().await;

    // A broadcast ping to both collectives over the federation: all 1,000 replies.
    let summary = client
        .call_many(&ping_both(Duration::from_secs(20)), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.responses, summary.ok, summary.invalid),
        (1000, 1000, 0),
        "{summary:?}"
    );

    // The same through the command line, with a client config that names the federation.
    let alice = user("prod", "alice");
    let client_config = topo._dir.path().join("client.toml");
    let text = format!(
        "[client]\ncertificate = {:?}\nkey = {:?}\n\n[federations.prod]\nnats = [{:?}]\nca = {:?}\n",
        alice.cert,
        alice.key,
        topo.prod.server.url(),
        topo.prod.realm.ca
    );
    std::fs::write(&client_config, text).unwrap();
    let output = tokio::process::Command::new(support::fedgate_bin())
        .args([
            "rpc",
            "--federation",
            "prod",
            "--collective",
            "london",
            "--collective",
            "tokyo",
        ])
        .args(["rpcutil", "ping", "--expect", "500", "--config"])
        .arg(&client_config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("responses: 1000  ok: 1000  failed: 0  invalid: 0  published: 2"),
        "{stdout}"
    );

    // A directed request to 450 identities travels as three messages of 200, 200 and 50 targets.
    let watcher = topo.prod.connect_as("bob").await;
    let mut seen = watcher
        .subscribe("choria.federation.prod.federation")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let mut call = federated("london", "rpcutil", "ping");
    call.targets = (0..450).map(|i| format!("london-{i:04}")).collect();
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!(
        (summary.responses, summary.published),
        (450, 3),
        "{summary:?}"
    );
    assert!(summary.missing.is_empty());
    let mut batches = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), seen.next())
            .await
            .unwrap()
            .unwrap();
        let transport = Transport::decode(&message.payload, &Limits::default()).unwrap();
        batches.push(transport.headers.federation.unwrap().target.len());
    }
    assert_eq!(batches, vec![200, 200, 50]);

    // 300 requests spread over the three instances: each takes 33% ± 15% of them.
    let before = topo.observe().await;
    for chunk in (0..300).collect::<Vec<_>>().chunks(20) {
        let calls: Vec<RpcCall> = chunk
            .iter()
            .map(|i| RpcCall {
                targets: vec![format!("tokyo-{:04}", i % NODES)],
                ..federated("tokyo", "rpcutil", "ping")
            })
            .collect();
        let summary = client.call_many(&calls, |_| {}).await.unwrap();
        assert_eq!(summary.ok, 20);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = topo.observe().await;
    let shares: BTreeMap<&str, u64> = after
        .iter()
        .map(|(name, s)| {
            (
                name.as_str(),
                s.federation.received - before.get(name).map_or(0, |b| b.federation.received),
            )
        })
        .collect();
    assert_eq!(shares.values().sum::<u64>(), 300, "{shares:?}");
    for (name, share) in &shares {
        assert!(
            (54..=144).contains(share),
            "{name} took {share} of 300 requests: {shares:?}"
        );
    }

    // Prometheus metrics mirror go-choria's names, labelled by cluster, identity (the instance,
    // as go-choria labels it) and direction; its time is a summary, with a histogram beside it.
    let metrics = brokers[0].scrape().await;
    assert!(metrics.contains("choria_federation_received_msgs{cluster=\"prod\",identity=\"fb1\",direction=\"request\"}"), "{metrics}");
    assert!(
        metrics.contains("# TYPE choria_federation_time summary"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fedgate_federation_processing_duration_seconds_bucket"),
        "{metrics}"
    );

    // Kill one instance mid-run; later requests still get every reply.
    let mut crashed = brokers.remove(1);
    let during = tokio::spawn({
        // Messages the killed instance held are lost; this call may end short.
        let calls = ping_both(Duration::from_secs(3));
        let client = topo.client().await;
        async move { client.call_many(&calls, |_| {}).await }
    });
    crashed.kill().await;
    // The call in flight may lose what the killed instance held, but it ends, it does not hang.
    let ended = tokio::time::timeout(Duration::from_secs(10), during).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(_)))),
        "the call in flight ended: {ended:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let summary = client
            .call_many(&ping_both(Duration::from_secs(20)), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.ok, 1000, "after the crash: {summary:?}");
    }

    // A clean stop drains and exits successfully.
    let status = brokers[0].terminate().await;
    assert!(status.success(), "{status:?}");
    london.shutdown().await;
    tokyo.shutdown().await;
}
