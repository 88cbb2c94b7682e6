//! A well-behaved WebSocket client's latency while the edge is attacked, next to the same
//! client's latency with no attack, in alternating slices of one run.
//!
//! The edge is a `fedgate run` child with its default handshake limits. The client pings a
//! simulated collective from 127.0.0.2, one request at a time; the attackers come from
//! 127.0.0.1, as another host would:
//! - churn: sockets opened with a token and closed at once, politely or by dropping the TCP
//!   connection, up to 100 a second per attacker;
//! - slowloris: 300 upgrades (more than one address may hold), each dribbling a header line
//!   and never finishing, reopened whenever the edge cuts one off;
//! - oversized: a single frame over the message limit, and a message of small fragments that
//!   adds up to more;
//! - replay: a token that has expired, presented again and again, up to 100 times a second per
//!   attacker.
//!
//! The attackers run at fixed rates, not flat out: on a machine this small they share the
//! edge's cores, and an attacker that only burns CPU measures the machine, not the edge.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::SinkExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::edge::{EdgeProcess, write_config};
use super::relay::{LatencyRow, latency_row};
use super::{BenchError, setup_err};
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient, open};

/// How much to measure.
#[derive(Clone, Debug)]
pub struct AdversarialOptions {
    /// Simulated nodes answering each ping.
    pub nodes: usize,
    /// Pings per side per slice.
    pub samples: usize,
    /// Slices: each one unloaded run, then one under attack.
    pub slices: usize,
    /// Concurrent attackers of each kind.
    pub attackers: usize,
    /// The `fedgate` binary that runs the edge.
    pub exe: std::path::PathBuf,
}

/// What the attackers did while the client was measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackCounts {
    /// Sockets opened and closed.
    pub churned: u64,
    /// Slow upgrades started.
    pub slow_upgrades: u64,
    /// Slow upgrades the edge cut off or refused.
    pub slow_cut_off: u64,
    /// Oversized messages sent (each closes its socket).
    pub oversized: u64,
    /// Expired tokens presented.
    pub replays: u64,
    /// Expired tokens the edge accepted (must be 0).
    pub replays_accepted: u64,
}

/// The benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct AdversarialReport {
    /// The client's latency with no attack and under attack.
    pub latency: Vec<LatencyRow>,
    /// p99 under attack over p99 unloaded.
    pub p99_ratio: f64,
    /// Requests that failed, either side (must be 0).
    pub failed: usize,
    /// The attack.
    pub attack: AttackCounts,
}

#[derive(Default)]
struct Counters {
    churned: AtomicU64,
    slow_upgrades: AtomicU64,
    slow_cut_off: AtomicU64,
    oversized: AtomicU64,
    replays: AtomicU64,
    replays_accepted: AtomicU64,
}

impl Counters {
    fn counts(&self) -> AttackCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AttackCounts {
            churned: load(&self.churned),
            slow_upgrades: load(&self.slow_upgrades),
            slow_cut_off: load(&self.slow_cut_off),
            oversized: load(&self.oversized),
            replays: load(&self.replays),
            replays_accepted: load(&self.replays_accepted),
        }
    }
}

/// Runs the benchmark with its files under `work_dir`.
pub async fn run(
    work_dir: &Path,
    options: &AdversarialOptions,
) -> Result<AdversarialReport, BenchError> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (pki, nats) = super::tls_collective(work_dir, false)?;
    let _fleet = super::fleet_on(&pki, &nats, options.nodes).await?;
    let (config, key) = write_config(work_dir, &pki, nats.url())?;
    let edge = EdgeProcess::start(&options.exe, &config).await?;
    let sockets = Sockets::new(&edge.url, &key)?;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut client = WsClient::connect(&sockets.good).await.map_err(setup_err)?;
    let (mut calm, mut attacked) = (Vec::new(), Vec::new());
    let mut failed = 0;
    let counters = Arc::new(Counters::default());
    let mut pinger = Pinger {
        id: 0,
        nodes: options.nodes,
    };
    // Warm up.
    for _ in 0..20 {
        pinger.ping(&mut client, &mut Vec::new()).await;
    }
    for _ in 0..options.slices {
        failed += pinger.pings(&mut client, options.samples, &mut calm).await;
        let attack = Attack::start(&edge.url, &sockets, options.attackers, &counters)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        failed += pinger
            .pings(&mut client, options.samples, &mut attacked)
            .await;
        attack.stop().await;
        // Let the edge settle: cut-off sockets and dropped connections are cleaned up.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client.close().await;
    edge.stop().await;
    let calm_row = latency_row("no attack", &mut calm, None);
    let attacked_row = latency_row("under attack", &mut attacked, Some(&calm_row));
    let p99_ratio = attacked_row.p99_us / calm_row.p99_us;
    Ok(AdversarialReport {
        latency: vec![calm_row, attacked_row],
        p99_ratio,
        failed,
        attack: counters.counts(),
    })
}

/// How each side connects: the measured client from 127.0.0.2, the attackers from 127.0.0.1,
/// with a good token or one that expires in a second.
struct Sockets {
    good: Connect,
    attacker: Connect,
    expired: Connect,
}

impl Sockets {
    fn new(url: &str, key: &Path) -> Result<Sockets, BenchError> {
        let keys = TokenKeys::load(key).map_err(setup_err)?;
        let token = |ttl: Duration| {
            keys.issue("alice", ttl, None, SystemTime::now())
                .map_err(setup_err)
        };
        let from = |address: &str| -> Result<Connect, BenchError> {
            Ok(Connect {
                url: url.to_string(),
                token: Some(token(Duration::from_secs(3600))?),
                local_address: Some(address.parse::<IpAddr>().map_err(setup_err)?),
                ..Connect::default()
            })
        };
        let good = from("127.0.0.2")?;
        let attacker = from("127.0.0.1")?;
        let expired = Connect {
            token: Some(token(Duration::from_secs(1))?),
            ..attacker.clone()
        };
        Ok(Sockets {
            good,
            attacker,
            expired,
        })
    }
}

/// The well-behaved client's pings, one at a time.
struct Pinger {
    id: u64,
    nodes: usize,
}

impl Pinger {
    /// One ping; its time goes into `samples` when every node answered.
    async fn ping(&mut self, client: &mut WsClient, samples: &mut Vec<Duration>) -> bool {
        self.id += 1;
        let request = serde_json::json!({
            "type": "rpc", "id": format!("p{}", self.id), "collective": "london",
            "agent": "rpcutil", "action": "ping", "limit": self.nodes, "timeout_ms": 10_000,
        });
        let started = Instant::now();
        match client.call(&request, |_| {}).await {
            Ok(done) if done["responses"].as_u64() == Some(self.nodes as u64) => {
                samples.push(started.elapsed());
                true
            }
            _ => false,
        }
    }

    /// `n` pings; gives back how many failed.
    async fn pings(
        &mut self,
        client: &mut WsClient,
        n: usize,
        samples: &mut Vec<Duration>,
    ) -> usize {
        let mut failed = 0;
        for _ in 0..n {
            if !self.ping(client, samples).await {
                failed += 1;
            }
        }
        failed
    }
}

/// The attackers of one slice, running until [`Attack::stop`].
struct Attack {
    stop: Arc<AtomicBool>,
    attackers: tokio::task::JoinSet<()>,
}

impl Attack {
    /// `attackers` of each kind from the attackers' address, and one slowloris.
    fn start(
        url: &str,
        sockets: &Sockets,
        attackers: usize,
        counters: &Arc<Counters>,
    ) -> Result<Attack, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = edge_addr(url)?;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..attackers {
            set.spawn(churn(
                sockets.attacker.clone(),
                stop.clone(),
                counters.clone(),
            ));
            set.spawn(oversized(
                sockets.attacker.clone(),
                stop.clone(),
                counters.clone(),
            ));
            set.spawn(replay(
                sockets.expired.clone(),
                stop.clone(),
                counters.clone(),
            ));
        }
        set.spawn(slowloris(addr, stop.clone(), counters.clone()));
        Ok(Attack {
            stop,
            attackers: set,
        })
    }

    /// Tells every attacker to stop and waits until they have.
    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.attackers.join_next().await.is_some() {}
    }
}

fn edge_addr(url: &str) -> Result<std::net::SocketAddr, BenchError> {
    url.trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .map_err(setup_err)
}

/// Most attempts per second of one churn or replay attacker.
const ATTEMPTS_PER_SECOND: u64 = 100;

/// Sockets opened and closed, one every 10 ms at most.
async fn churn(connect: Connect, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / ATTEMPTS_PER_SECOND));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        match WsClient::connect(&connect).await {
            Ok(client) if n.is_multiple_of(2) => client.close().await,
            Ok(client) => drop(client),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        counters.churned.fetch_add(1, Ordering::Relaxed);
    }
}

/// A single frame over the limit, then a message of 4 KiB fragments that adds up to more.
async fn oversized(connect: Connect, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let big = vec![b' '; 2 << 20];
    let piece = vec![b' '; 4096];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(mut socket) = open(&connect).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if n.is_multiple_of(2) {
            let text = String::from_utf8(big.clone()).unwrap_or_default();
            let _ = socket.send(Message::Text(text.into())).await;
        } else {
            for i in 0..1024 {
                let opcode = if i == 0 {
                    OpCode::Data(Data::Text)
                } else {
                    OpCode::Data(Data::Continue)
                };
                let frame = Frame::message(piece.clone(), opcode, false);
                if socket.send(Message::Frame(frame)).await.is_err() {
                    break;
                }
            }
        }
        counters.oversized.fetch_add(1, Ordering::Relaxed);
        // The edge answers with 1009 and closes; read until it has.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            use futures::StreamExt;
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
}

/// An expired token, presented again and again, every 10 ms at most.
async fn replay(connect: Connect, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / ATTEMPTS_PER_SECOND));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        counters.replays.fetch_add(1, Ordering::Relaxed);
        if let Ok(client) = WsClient::connect(&connect).await {
            counters.replays_accepted.fetch_add(1, Ordering::Relaxed);
            client.close().await;
        }
    }
}

/// Slow upgrades from one address, as many as it may hold; each one cut off is reopened.
async fn slowloris(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut open = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while open.len() < 300 {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                break;
            };
            counters.slow_upgrades.fetch_add(1, Ordering::Relaxed);
            if stream
                .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_err()
            {
                counters.slow_cut_off.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            open.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut kept = Vec::new();
        for mut stream in open.drain(..) {
            if stream.write_all(b"X-Slow: 1\r\n").await.is_ok() {
                kept.push(stream);
            } else {
                counters.slow_cut_off.fetch_add(1, Ordering::Relaxed);
            }
        }
        open = kept;
    }
}
