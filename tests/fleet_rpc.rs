//! The real nats-server, 200 simulated nodes and `fedgate rpc`: broadcast, directed and filtered.

mod support;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use fedgate::client::{Ended, RpcCall};
use serde_json::Value;
use support::{Network, fedgate_bin, wait_for_stats};

const NODES: usize = 200;

/// Runs the `fedgate rpc` binary and returns its JSON reply lines and summary.
async fn rpc(args: &[&str]) -> (Output, Vec<Value>, Value) {
    let output = tokio::process::Command::new(fedgate_bin())
        .arg("rpc")
        .arg("--json")
        .args(args)
        .output()
        .await
        .expect("run fedgate rpc");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("summary line")["summary"]
        .clone();
    let replies = lines
        .into_iter()
        .filter(|l| l["type"] == "reply")
        .map(|l| l["reply"].clone())
        .collect();
    (output, replies, summary)
}

fn senders(replies: &[Value]) -> BTreeSet<String> {
    replies
        .iter()
        .map(|r| r["sender"].as_str().expect("sender").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reaches_every_node_and_filters_select_exactly() {
    let network = Network::start("london");
    let fleet = network.start_fleet(NODES).await;
    let dir = tempfile::tempdir().unwrap();
    let config = network.write_config(dir.path(), "alice");
    let config = config.to_str().unwrap();

    // Broadcast ping: all 200 replies arrive, every one hash-checked and for this request id.
    let (output, replies, summary) = rpc(&[
        "--config",
        config,
        "--collective",
        "london",
        "rpcutil",
        "ping",
        "--expect",
        "200",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all: BTreeSet<String> = (0..NODES).map(|i| format!("london-{i:04}")).collect();
    assert_eq!(senders(&replies), all);
    assert!(
        replies
            .iter()
            .all(|r| r["statuscode"] == 0 && r["data"]["pong"].as_i64().unwrap() > 0)
    );
    assert_eq!(
        (
            summary["responses"].as_u64(),
            summary["invalid"].as_u64(),
            summary["ended"].as_str()
        ),
        (Some(200), Some(0), Some("complete"))
    );
    let stats = wait_for_stats(&fleet, Duration::from_secs(5), |s| s.replies >= 200).await;
    assert_eq!(stats.replies, 200);
    assert_eq!(stats.unvalidated, 0);

    // Directed to three identities: exactly three replies, and no other node acted.
    let before = fleet.stats();
    let (output, replies, summary) = rpc(&[
        "--config",
        config,
        "--collective",
        "london",
        "rpcutil",
        "inventory",
        "--target",
        "london-0003",
        "--target",
        "london-0077",
        "--target",
        "london-0150",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        senders(&replies),
        ["london-0003", "london-0077", "london-0150"]
            .map(String::from)
            .into()
    );
    assert_eq!(summary["missing"], Value::Array(vec![]));
    assert_eq!(replies[0]["data"]["main_collective"], "london");
    wait_for_stats(&fleet, Duration::from_secs(5), |s| {
        s.replies - before.replies >= 3
    })
    .await;
    // Give any stray delivery time to show up before asserting there was none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = fleet.stats();
    assert_eq!(after.total - before.total, 3);
    assert_eq!(after.replies - before.replies, 3);

    // A fact filter on a broadcast: only the UK nodes (every fourth) act.
    let before = fleet.stats();
    let (output, replies, _) = rpc(&[
        "--config",
        config,
        "--collective",
        "london",
        "rpcutil",
        "ping",
        "--fact",
        "country=uk",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let uk: BTreeSet<String> = (0..NODES)
        .step_by(4)
        .map(|i| format!("london-{i:04}"))
        .collect();
    assert_eq!(senders(&replies), uk);
    let after = wait_for_stats(&fleet, Duration::from_secs(5), |s| {
        s.filtered - before.filtered >= 150
    })
    .await;
    assert_eq!(after.filtered - before.filtered, 150);
    assert_eq!(after.passed - before.passed, 50);

    // Fact, class and identity filters combine with AND, as on a Choria server.
    let (_, replies, _) = rpc(&[
        "--config",
        config,
        "--collective",
        "london",
        "rpcutil",
        "ping",
        "--fact",
        "cpus>=8",
        "--class",
        "role::web",
        "--identity",
        "/^london-00/",
    ])
    .await;
    let expected: BTreeSet<String> =
        fedgate_dev::fleet::generate("london", 100, &["london".into()])
            .into_iter()
            .filter(|n| {
                n.facts["cpus"].as_u64().unwrap() >= 8
                    && n.classes.contains(&"role::web".to_string())
            })
            .map(|n| n.identity)
            .collect();
    assert!(!expected.is_empty());
    assert_eq!(senders(&replies), expected);

    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_errors_and_missing_targets_are_reported() {
    let network = Network::start("london");
    let fleet = network.start_fleet(5).await;
    let alice = support::user("london", "alice");
    let client = network.client(alice, None).await;

    let mut call = RpcCall::new("london", "echo", "echo");
    call.data.insert("message".into(), "hello".into());
    call.expect = Some(5);
    let mut messages = Vec::new();
    let summary = client
        .call(&call, |r| messages.push(r.data["message"].clone()))
        .await
        .unwrap();
    assert_eq!(summary.ok, 5);
    assert!(messages.iter().all(|m| m == "hello"));

    let mut call = RpcCall::new("london", "echo", "echo");
    call.expect = Some(5);
    let summary = client
        .call(&call, |r| assert_eq!(r.statuscode, 3))
        .await
        .unwrap();
    assert_eq!((summary.ok, summary.failed), (0, 5));

    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.targets = vec!["london-0001".into(), "nosuch-node".into()];
    call.timeout = Duration::from_millis(800);
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!(summary.responses, 1);
    assert_eq!(summary.missing, vec!["nosuch-node".to_string()]);
    assert_eq!(summary.ended, Ended::Timeout);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_says_why_it_stopped_collecting() {
    let network = Network::start("london");
    let fleet = network.start_fleet(5).await;
    let alice = support::user("london", "alice");
    let client = network.client(alice, None).await;

    // Every expected reply came.
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.expect = Some(5);
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!((summary.responses, summary.ended), (5, Ended::Complete));

    // A broadcast with no count to wait for stops on the idle gap after its last reply, well
    // before its timeout, and says so: a fleet slower than the gap is cut short visibly.
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.idle = Duration::from_millis(300);
    call.timeout = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!((summary.responses, summary.ended), (5, Ended::Idle));
    assert!(started.elapsed() < Duration::from_secs(10));

    // A broadcast no node answers runs to its timeout.
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.filter.identity = vec!["nobody".into()];
    call.timeout = Duration::from_millis(500);
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!((summary.responses, summary.ended), (0, Ended::Timeout));
    fleet.shutdown().await;
}
