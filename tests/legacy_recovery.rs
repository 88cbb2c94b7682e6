//! `fedgate run` bridging a legacy collective across broker outages and its own restarts: it
//! keeps reconnecting for as long as it runs (well past lapin's old give-up point), it refuses
//! to start when the broker cannot be reached, and the durable request queue holds requests
//! while it is down (served when it is back, or refused with a signed answer once expired).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fedgate::security::legacy::LegacySigner;
use fedgate::wire::mcollective::Serializer;
use support::BrokerProcess;
use support::legacy::{LegacySite, Publisher, collect_replies, ping, send, write_bridge_config};
use tokio::sync::watch;

/// Simulated Choria nodes in london that answer bridged requests.
const NODES: usize = 5;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Relays to the broker.
    Open,
    /// Accepts each connection and closes it at once (counted), open ones dropped.
    Drop,
}

/// A TCP proxy in front of the local RabbitMQ that this test alone can cut and restore, so the
/// shared broker and the other tests' connections are never disturbed.
struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Connections accepted and closed at once while cut.
    dropped: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Open);
        let dropped = Arc::new(AtomicUsize::new(0));
        tokio::spawn(serve(listener, upstream, watching, dropped.clone()));
        Proxy {
            addr,
            mode,
            dropped,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Accepts until the test ends: relays while open, drops (and counts) while cut; a cut also
/// ends every relay in progress.
async fn serve(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    dropped: Arc<AtomicUsize>,
) {
    let mut relays = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if *mode.borrow() == Mode::Drop {
                    relays.abort_all();
                }
            }
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                if *mode.borrow() == Mode::Drop {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    drop(inbound);
                    continue;
                }
                relays.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

fn now() -> i64 {
    fedgate::security::Now::system().unix_seconds()
}

fn id(n: u16) -> String {
    format!("{n:032x}")
}

async fn wait_until(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_reconnects_after_more_failed_attempts_than_lapin_used_to_allow() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let _fleet = london.start_fleet(NODES).await;
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let amqp = site
        .amqp_url()
        .replace("127.0.0.1:5672", &proxy.addr.to_string());
    // Back-off shortened so that the old limit of 1,000 attempts passes in a few seconds.
    let config = write_bridge_config(
        dir.path(),
        &site,
        &london,
        &amqp,
        "reconnect_min_ms = 1\nreconnect_max_ms = 2",
    );
    let mut fedgate = BrokerProcess::spawn(&config, "bridge1").await;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    send(&publisher, &ping(&alice, (now(), 60), &id(1)), 60).await;
    let before = collect_replies(&site, &publisher, Duration::from_secs(20), |r| {
        r.get(&id(1)).is_some_and(|v| v.len() == NODES)
    })
    .await;
    assert_eq!(before.get(&id(1)).map(Vec::len), Some(NODES), "{before:?}");

    // The broker is gone: every reconnection attempt is accepted and closed at once.
    proxy.set(Mode::Drop);
    let attempts = wait_until(120, || proxy.dropped.load(Ordering::Relaxed) > 1_500).await;
    assert!(
        attempts,
        "only {} reconnection attempts",
        proxy.dropped.load(Ordering::Relaxed)
    );
    // Requests sent meanwhile wait in the durable queue.
    send(&publisher, &ping(&alice, (now(), 60), &id(2)), 60).await;
    assert!(fedgate.is_running(), "fedgate run exited during the outage");

    proxy.set(Mode::Open);
    let after = collect_replies(&site, &publisher, Duration::from_secs(30), |r| {
        r.get(&id(2)).is_some_and(|v| v.len() == NODES)
    })
    .await;
    let statuses: Vec<i64> = after
        .get(&id(2))
        .map(|v| v.iter().map(|r| r.1).collect())
        .unwrap_or_default();
    assert_eq!(
        statuses,
        vec![0; NODES],
        "after {} failed attempts the bridge serves again: {after:?}\n{}",
        proxy.dropped.load(Ordering::Relaxed),
        fedgate.logs().join("\n")
    );
    // And it keeps serving.
    send(&publisher, &ping(&alice, (now(), 60), &id(3)), 60).await;
    let again = collect_replies(&site, &publisher, Duration::from_secs(20), |r| {
        r.get(&id(3)).is_some_and(|v| v.len() == NODES)
    })
    .await;
    assert_eq!(again.get(&id(3)).map(Vec::len), Some(NODES), "{again:?}");
    fedgate.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedgate_run_refuses_to_start_when_the_broker_cannot_be_reached() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let amqp = site
        .amqp_url()
        .replace("127.0.0.1:5672", &closed.to_string());
    let config = write_bridge_config(dir.path(), &site, &london, &amqp, "");
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(support::fedgate_bin())
            .args(["run", "--instance", "bridge1", "--config"])
            .arg(&config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fedgate run gave up within a minute")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the broker at {closed}")),
        "{stderr}"
    );
    assert!(!stderr.contains("guest:guest"), "no password in: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_sent_while_fedgate_run_is_down_are_served_or_refused_when_it_is_back() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let _fleet = london.start_fleet(NODES).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_bridge_config(dir.path(), &site, &london, &site.amqp_url(), "");
    let mut fedgate = BrokerProcess::spawn(&config, "bridge1").await;
    assert!(fedgate.terminate().await.success());

    // fedgate is down; mco users go on sending.
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let sent = now();
    send(&publisher, &ping(&alice, (sent, 60), &id(1)), 60).await;
    send(&publisher, &ping(&alice, (sent, 2), &id(2)), 2).await;
    // Until the short one is past its TTL, yet still in the queue (its expiration is 12 s).
    while now() <= sent + 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut fedgate = BrokerProcess::spawn(&config, "bridge1").await;
    let replies = collect_replies(&site, &publisher, Duration::from_secs(10), |r| {
        r.get(&id(1)).is_some_and(|v| v.len() == NODES) && r.contains_key(&id(2))
    })
    .await;
    let live: Vec<i64> = replies[&id(1)].iter().map(|r| r.1).collect();
    assert_eq!(live, vec![0; NODES], "the live request was served");
    let expired = &replies[&id(2)];
    assert_eq!(expired.len(), 1, "{expired:?}");
    let (sender, status, message) = &expired[0];
    assert_eq!(*status, 1, "{message}");
    assert!(
        message.starts_with("fedgate refused the request") && message.contains("ttl_expired"),
        "{message}"
    );
    assert!(sender.starts_with("fedgate-bridge-"), "{sender}");
    let records = support::audit_records(&dir.path().join("audit/audit.log"));
    let codes = |n: u16| {
        records
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .filter(|r| r.event.request_id.as_deref() == Some(id(n).as_str()))
            .map(|r| r.event.code.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(1), ["allowed"]);
    assert_eq!(codes(2), ["ttl_expired"]);
    fedgate.terminate().await;
}
