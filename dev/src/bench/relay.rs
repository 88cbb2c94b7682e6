//! Relay throughput and added latency on loopback: one fedgate broker instance, next to a
//! nats-server leafnode link (the native way to bridge two NATS networks), a bare async-nats
//! relay (subscribe on one server, publish on the other, no parsing) and a direct publish.

mod relays;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{BenchError, Row, row, setup_err};
use crate::natsd::{NatsServer, NatsServerConfig};
use fedgate::wire::choria_v1::{FederationHeader, Transport, TransportHeaders};

use relays::{RunningBroker, bare_relay};

/// How much traffic to send.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Messages per path for the throughput run, split over the rounds.
    pub messages: usize,
    /// Round trips per path for the latency run, split over the rounds.
    pub latency_samples: usize,
    /// Rounds; the paths take turns in each, so drift hits them alike.
    pub rounds: usize,
    /// Messages in flight at most (publisher waits for the subscriber beyond that).
    pub window: usize,
    /// Broker worker tasks per subject.
    pub workers: usize,
    /// Run the broker as this `fedgate` binary (`fedgate run`), as in production; `None` runs
    /// it inside the benchmark process.
    pub broker_exe: Option<std::path::PathBuf>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            messages: 60_000,
            latency_samples: 3_000,
            rounds: 3,
            window: 1_000,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            broker_exe: None,
        }
    }
}

/// One path's one-way latency from publish to receipt.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    /// The path.
    pub path: String,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Median added over a direct publish, microseconds.
    pub added_p50_us: f64,
    /// 99th percentile added over a direct publish, microseconds.
    pub added_p99_us: f64,
}

/// The relay benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct RelayReport {
    /// Size of each message, bytes.
    pub message_bytes: usize,
    /// Throughput of fedgate against each baseline.
    pub throughput: Vec<Row>,
    /// Latency of each path.
    pub latency: Vec<LatencyRow>,
}

/// One way from a publisher to a subscriber.
struct Path {
    name: &'static str,
    publisher: Client,
    subject: &'static str,
    payload: Bytes,
    subscriber: Subscriber,
}

const TARGET: &str = "london.broadcast.agent.rpcutil";
const INGEST: &str = "choria.federation.bench.federation";
/// What the bare relay takes in on the federation network.
const BARE: &str = "bench.bare.relay";
/// Where the bare relay publishes on the collective's network: apart from fedgate's target, so
/// neither path's subscriber sees the other's messages.
const BARE_OUT: &str = "bench.bare.out";

/// Runs the benchmark with nats-server work files under `work_dir`.
pub async fn run(
    work_dir: &std::path::Path,
    options: &RelayOptions,
) -> Result<RelayReport, BenchError> {
    let servers = Servers::start(work_dir)?;
    let config_path = work_dir.join("fedgate.toml");
    let text = format!(
        "[instance]\nworkers = {}\n\n[federations.bench]\nnats = [{:?}]\nmode = \"pass-through\"\n\n[federations.bench.collectives.london]\nnats = [{:?}]\n",
        options.workers.max(1),
        servers.federation.url(),
        servers.collective.url()
    );
    std::fs::write(&config_path, text).map_err(setup_err)?;
    let broker = RunningBroker::start(&config_path, options).await?;
    let bare = bare_relay(servers.federation.url(), servers.collective.url()).await?;

    let (plain, federated) = payloads();
    let message_bytes = federated.len();
    let mut paths = servers.paths(plain, federated).await?;
    for p in &mut paths {
        warm_up(p).await?;
    }
    let (rates, mut latencies) = measure(&mut paths, options).await?;
    broker.stop().await;
    bare.abort();
    Ok(report(message_bytes, &paths, &rates, &mut latencies))
}

/// The nats-servers: the federation and the collective fedgate relays between, and a hub with
/// a leafnode.
struct Servers {
    federation: NatsServer,
    collective: NatsServer,
    hub: NatsServer,
    leaf: NatsServer,
}

impl Servers {
    fn start(work_dir: &std::path::Path) -> Result<Servers, BenchError> {
        let start = |name: &str, config: NatsServerConfig| {
            NatsServer::start(
                &work_dir.join(name),
                NatsServerConfig {
                    name: name.into(),
                    ..config
                },
            )
            .map_err(setup_err)
        };
        let federation = start("federation", NatsServerConfig::default())?;
        let collective = start("collective", NatsServerConfig::default())?;
        let hub = start(
            "hub",
            NatsServerConfig {
                leafnode_listen: true,
                ..Default::default()
            },
        )?;
        let hub_leaf_url = hub
            .leafnode_url()
            .ok_or_else(|| BenchError("the hub reported no leafnode port".into()))?;
        let leaf = start(
            "leaf",
            NatsServerConfig {
                leafnode_remotes: vec![hub_leaf_url],
                ..Default::default()
            },
        )?;
        Ok(Servers {
            federation,
            collective,
            hub,
            leaf,
        })
    }

    /// The four paths: a direct publish, the leafnode link, fedgate's broker and the bare relay.
    async fn paths(&self, plain: Bytes, federated: Bytes) -> Result<Vec<Path>, BenchError> {
        Ok(vec![
            path(
                "direct publish",
                self.federation.url(),
                self.federation.url(),
                (TARGET, TARGET),
                plain.clone(),
            )
            .await?,
            path(
                "nats-server leafnode link",
                self.hub.url(),
                self.leaf.url(),
                (TARGET, TARGET),
                plain,
            )
            .await?,
            path(
                "fedgate broker",
                self.federation.url(),
                self.collective.url(),
                (INGEST, TARGET),
                federated.clone(),
            )
            .await?,
            path(
                "bare async-nats relay",
                self.federation.url(),
                self.collective.url(),
                (BARE, BARE_OUT),
                federated,
            )
            .await?,
        ])
    }
}

/// Each path's messages and time taken, and its latency samples, with the paths taking turns
/// in each round.
async fn measure(
    paths: &mut [Path],
    options: &RelayOptions,
) -> Result<(Vec<(usize, Duration)>, Vec<Vec<Duration>>), BenchError> {
    let mut rates = vec![(0usize, Duration::ZERO); paths.len()];
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    let rounds = options.rounds.max(1);
    for _ in 0..rounds {
        for (i, p) in paths.iter_mut().enumerate() {
            let n = options.messages / rounds;
            rates[i].0 += n;
            rates[i].1 += throughput(p, n, options.window).await?;
            latencies[i].extend(latency(p, options.latency_samples / rounds).await?);
        }
    }
    Ok((rates, latencies))
}

async fn path(
    name: &'static str,
    publish_on: &str,
    receive_on: &str,
    (subject, received): (&'static str, &'static str),
    payload: Bytes,
) -> Result<Path, BenchError> {
    let connect = |url: String| async move { async_nats::connect(url).await.map_err(setup_err) };
    let publisher = connect(publish_on.to_string()).await?;
    let receiver = connect(receive_on.to_string()).await?;
    let subscriber = receiver.subscribe(received).await.map_err(setup_err)?;
    receiver.flush().await.map_err(setup_err)?;
    std::mem::forget(receiver);
    Ok(Path {
        name,
        publisher,
        subject,
        payload,
        subscriber,
    })
}

/// Publishes until a message comes through (leafnode interest takes a moment), then 1,000 more.
async fn warm_up(path: &mut Path) -> Result<(), BenchError> {
    for _ in 0..500 {
        publish(path).await?;
        if tokio::time::timeout(Duration::from_millis(20), path.subscriber.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    throughput(path, 1_000, 100).await?;
    while tokio::time::timeout(Duration::from_millis(100), path.subscriber.next())
        .await
        .is_ok()
    {}
    Ok(())
}

async fn publish(path: &Path) -> Result<(), BenchError> {
    path.publisher
        .publish(path.subject, path.payload.clone())
        .await
        .map_err(setup_err)
}

/// Time to move `n` messages with at most `window` in flight.
async fn throughput(path: &mut Path, n: usize, window: usize) -> Result<Duration, BenchError> {
    let credits = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let receive = async {
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(10), path.subscriber.next()).await {
                Ok(Some(_)) => credits.add_permits(1),
                _ => return Err(BenchError(format!("{}: messages were lost", path.name))),
            }
        }
        Ok(started.elapsed())
    };
    let send = async {
        for _ in 0..n {
            credits.acquire().await.map_err(setup_err)?.forget();
            path.publisher
                .publish(path.subject, path.payload.clone())
                .await
                .map_err(setup_err)?;
        }
        path.publisher.flush().await.map_err(setup_err)
    };
    let (elapsed, sent) = tokio::join!(receive, send);
    sent?;
    elapsed
}

/// One-way times of `n` messages sent one at a time.
async fn latency(path: &mut Path, n: usize) -> Result<Vec<Duration>, BenchError> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        publish(path).await?;
        match tokio::time::timeout(Duration::from_secs(5), path.subscriber.next()).await {
            Ok(Some(_)) => samples.push(started.elapsed()),
            _ => {
                return Err(BenchError(format!(
                    "{}: a latency probe was lost",
                    path.name
                )));
            }
        }
    }
    Ok(samples)
}

fn report(
    message_bytes: usize,
    paths: &[Path],
    rates: &[(usize, Duration)],
    latencies: &mut [Vec<Duration>],
) -> RelayReport {
    let per_second = |(n, took): (usize, Duration)| n as f64 / took.as_secs_f64();
    let (direct, leaf, fedgate, bare) = (
        per_second(rates[0]),
        per_second(rates[1]),
        per_second(rates[2]),
        per_second(rates[3]),
    );
    let name = format!("relay msgs/s ({message_bytes} B federated request)");
    let throughput = vec![
        row(name.clone(), paths[3].name, (bare, fedgate)),
        row(name.clone(), paths[1].name, (leaf, fedgate)),
        row(name, paths[0].name, (direct, fedgate)),
    ];
    let mut latency: Vec<LatencyRow> = Vec::with_capacity(paths.len());
    for (p, samples) in paths.iter().zip(latencies.iter_mut()) {
        let row = latency_row(p.name, samples, latency.first());
        latency.push(row);
    }
    RelayReport {
        message_bytes,
        throughput,
        latency,
    }
}

/// The quantiles of `samples` (sorted in place), and what they add over `baseline`'s.
pub(crate) fn latency_row(
    path: &str,
    samples: &mut [Duration],
    baseline: Option<&LatencyRow>,
) -> LatencyRow {
    samples.sort();
    let p50 = micros(percentile(samples, 0.50));
    let p99 = micros(percentile(samples, 0.99));
    LatencyRow {
        path: path.to_string(),
        p50_us: p50,
        p99_us: p99,
        added_p50_us: baseline.map_or(0.0, |b| p50 - b.p50_us),
        added_p99_us: baseline.map_or(0.0, |b| p99 - b.p99_us),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A realistic request transport (about 4.5 KiB, like a 4096-bit signer's) and its federated form.
fn payloads() -> (Bytes, Bytes) {
    let filler: Vec<u8> = (0..3_300u32)
        .map(|i| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[(i % 62) as usize]
        })
        .collect();
    let mut headers = TransportHeaders {
        reply_to: Some(
            "london.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into(),
        ),
        mc_sender: Some("client.example.net".into()),
        ..TransportHeaders::default()
    };
    headers.record_hop(
        "nats://127.0.0.1:4222",
        "client.example.net",
        "nats://127.0.0.1:4222",
    );
    let plain = Transport::new(filler, headers);
    let mut federated = plain.clone();
    federated.headers.federation = Some(FederationHeader {
        req: Some("6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into()),
        reply_to: None,
        target: vec![TARGET.into()],
    });
    (Bytes::from(plain.encode()), Bytes::from(federated.encode()))
}

/// Renders the latency rows as a table.
pub fn latency_table(title: &str, rows: &[LatencyRow]) -> String {
    let mut out = format!(
        "{:<28} {:>10} {:>10} {:>14} {:>14}\n",
        title, "p50 µs", "p99 µs", "added p50 µs", "added p99 µs"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:>10.1} {:>10.1} {:>14.1} {:>14.1}\n",
            r.path, r.p50_us, r.p99_us, r.added_p50_us, r.added_p99_us
        ));
    }
    out
}
