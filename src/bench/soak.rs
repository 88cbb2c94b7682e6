//! `fedgate bench soak`: one `fedgate run` child serving a federation broker, the WebSocket edge
//! and a legacy bridge, driven for minutes with mixed traffic at a fixed offered rate, sampled
//! every second. The run fails when a request is lost or when memory, open files, threads,
//! tasks or a queue keep growing: each is judged by comparing the median of the last fifth of
//! the run with the median of the second fifth (the first fifth is warm-up).
//!
//! Traffic, each at its own rate:
//! - WebSocket: `rpcutil ping` through the edge with a token, on a small pool of sockets; every
//!   50th request opens a socket of its own and closes it, so socket churn is part of the load.
//! - Federation: a prod client's ping published on the federation network, relayed and
//!   re-signed by the broker into london.
//! - Legacy: an MCollective request signed with the legacy client's RSA key, published on
//!   RabbitMQ and bridged into london.
//!
//! Every request must get a reply from every node. Run it for 5 minutes or more: the gate holds
//! each request for its TTL (60 s) to count its replies, so a shorter run is still in the
//! warm-up of that map when it is judged. The report (JSON, Markdown and an SVG plot
//! of resident memory) is written to the output directory.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};

use super::{BenchError, setup_err};
use crate::client::{RpcCall, RpcClient};
use crate::edge::auth::TokenKeys;
use crate::edge::client::{Connect, WsClient};
use crate::nats::NatsEndpoint;
use crate::natsd::{NatsServer, NatsServerConfig};
use crate::security::devpki::{self, DevPki, DevPkiOptions, RealmPki};
use crate::security::legacy::{LegacySigner, NewLegacyRequest};
use crate::security::{CallerId, Now, Signer};
use crate::wire::Limits;
use crate::wire::mcollective::envelope::LegacyReply;
use crate::wire::mcollective::{Ruby, Serializer};

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long traffic runs.
    pub duration: Duration,
    /// WebSocket requests per second.
    pub ws_rate: f64,
    /// Federation requests per second.
    pub federation_rate: f64,
    /// Legacy requests per second.
    pub legacy_rate: f64,
    /// Simulated nodes in london; every request reaches all of them.
    pub nodes: usize,
    /// Requests of one kind in flight at most; a tick with none free is counted as skipped.
    pub window: usize,
    /// The `fedgate` binary to run.
    pub exe: PathBuf,
    /// The RabbitMQ the legacy side uses.
    pub amqp: String,
    /// Where the report goes.
    pub out: PathBuf,
}

/// One second's reading of the `fedgate run` child.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since traffic started.
    pub t: f64,
    /// Resident memory, KiB.
    pub rss_kib: f64,
    /// Open file descriptors.
    pub fds: f64,
    /// OS threads.
    pub threads: f64,
    /// Tokio tasks alive (`fedgate_runtime_alive_tasks`).
    pub tasks: f64,
    /// Queues and maps, by metric name.
    pub queues: BTreeMap<String, f64>,
    /// Requests the load generator has in flight, all kinds.
    pub in_flight: f64,
}

/// How one series moved between the second fifth of the run and the last.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    /// The series.
    pub series: String,
    /// Median over the second fifth.
    pub early: f64,
    /// Median over the last fifth.
    pub late: f64,
    /// Least-squares slope over the second half, per minute.
    pub slope_per_minute: f64,
    /// The most `late` may exceed `early` by.
    pub allowed: f64,
    /// `late <= early + allowed`.
    pub bounded: bool,
}

/// Requests of one kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindReport {
    /// Traffic kind.
    pub kind: String,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered by every node.
    pub ok: u64,
    /// Requests that failed or came back short, with the first few reasons.
    pub failed: u64,
    /// Ticks skipped because the window was full.
    pub skipped: u64,
    /// Latency, milliseconds: median.
    pub p50_ms: f64,
    /// Latency, milliseconds: 99th percentile.
    pub p99_ms: f64,
    /// The first reasons a request failed.
    pub errors: Vec<String>,
}

/// The soak run's findings.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Seconds of traffic.
    pub seconds: f64,
    /// Per traffic kind.
    pub kinds: Vec<KindReport>,
    /// Growth checks.
    pub trends: Vec<Trend>,
    /// Every second's sample.
    pub samples: Vec<Sample>,
    /// No request failed and nothing grew without bound.
    pub passed: bool,
}

impl SoakReport {
    /// A Markdown summary.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# fedgate soak: {:.0} minutes, {}\n\n\
             | traffic | sent | ok | failed | skipped | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
            self.seconds / 60.0,
            if self.passed { "passed" } else { "FAILED" }
        );
        for k in &self.kinds {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} |\n",
                k.kind, k.sent, k.ok, k.failed, k.skipped, k.p50_ms, k.p99_ms
            ));
        }
        out.push_str(
            "\n| series | 2nd fifth (median) | last fifth (median) | slope /min (2nd half) | allowed growth | bounded |\n\
             |---|---:|---:|---:|---:|---|\n",
        );
        for t in &self.trends {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:+.2} | {:.0} | {} |\n",
                t.series,
                t.early,
                t.late,
                t.slope_per_minute,
                t.allowed,
                if t.bounded { "yes" } else { "NO" }
            ));
        }
        for k in &self.kinds {
            for e in &k.errors {
                out.push_str(&format!("\n- {}: {e}", k.kind));
            }
        }
        out.push('\n');
        out
    }
}

/// Runs the soak with its files under `work_dir` and writes `soak.json`, `soak.md` and
/// `soak-memory.svg` to `options.out`.
pub async fn run(work_dir: &Path, options: &SoakOptions) -> Result<SoakReport, BenchError> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let topology = Topology::start(work_dir, options).await?;
    std::fs::create_dir_all(&options.out).map_err(setup_err)?;
    let child = Child::start(
        &options.exe,
        &topology.config,
        &options.out.join("fedgate-run.log"),
    )
    .await?;
    let traffic = Traffic::connect(&topology, &child, options).await?;

    let started = Instant::now();
    let until = started + options.duration;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let samples = samples.clone();
        let pid = child.pid;
        let metrics = child.metrics;
        let in_flight = traffic.in_flight.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(mut sample) = read_sample(pid, metrics).await else {
                    break;
                };
                sample.t = started.elapsed().as_secs_f64();
                sample.in_flight = in_flight.load(Ordering::Relaxed) as f64;
                let mut all = samples.lock().unwrap_or_else(|p| p.into_inner());
                all.push(sample);
                let n = all.len();
                if n % 60 == 0 {
                    let s = &all[n - 1];
                    eprintln!(
                        "soak: {:>5.0}s rss {:.1} MiB, fds {}, tasks {}, in flight {}",
                        s.t,
                        s.rss_kib / 1024.0,
                        s.fds,
                        s.tasks,
                        s.in_flight
                    );
                }
            }
        })
    };
    let kinds = traffic.drive(options, until).await;
    sampler.abort();
    let alive = child.is_running();
    child.stop().await;
    topology.stop().await;

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let trends = trends(&samples);
    let passed = alive
        && samples.len() >= 10
        && kinds.iter().all(|k| k.failed == 0 && k.ok == k.sent)
        && kinds.iter().any(|k| k.ok > 0)
        && trends.iter().all(|t| t.bounded);
    let report = SoakReport {
        seconds: started
            .elapsed()
            .as_secs_f64()
            .min(options.duration.as_secs_f64()),
        kinds,
        trends,
        samples,
        passed,
    };
    std::fs::create_dir_all(&options.out).map_err(setup_err)?;
    let write =
        |name: &str, bytes: &[u8]| std::fs::write(options.out.join(name), bytes).map_err(setup_err);
    write(
        "soak.json",
        &serde_json::to_vec_pretty(&report).map_err(setup_err)?,
    )?;
    write("soak.md", report.markdown().as_bytes())?;
    plot_memory(&report, &options.out.join("soak-memory.svg"))?;
    if !alive {
        return Err(BenchError(
            "the fedgate run child died during the soak".into(),
        ));
    }
    Ok(report)
}

/// The series judged for growth and how much slack each gets: a fraction of its early value
/// and an absolute amount (allocator and pool plateaus, a socket more or less).
fn trends(samples: &[Sample]) -> Vec<Trend> {
    let mut series: Vec<(String, Vec<f64>, f64, f64)> = vec![
        (
            "rss_kib".into(),
            samples.iter().map(|s| s.rss_kib).collect(),
            0.10,
            8192.0,
        ),
        (
            "fds".into(),
            samples.iter().map(|s| s.fds).collect(),
            0.10,
            16.0,
        ),
        (
            "threads".into(),
            samples.iter().map(|s| s.threads).collect(),
            0.0,
            4.0,
        ),
        (
            "tasks".into(),
            samples.iter().map(|s| s.tasks).collect(),
            0.25,
            64.0,
        ),
    ];
    let names: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.queues.keys()).collect();
    for name in names {
        series.push((
            name.clone(),
            samples
                .iter()
                .map(|s| s.queues.get(name).copied().unwrap_or(0.0))
                .collect(),
            0.25,
            64.0,
        ));
    }
    series
        .into_iter()
        .map(|(name, values, relative, absolute)| trend(name, &values, relative, absolute))
        .collect()
}

fn trend(series: String, values: &[f64], relative: f64, absolute: f64) -> Trend {
    let n = values.len();
    let fifth = (n / 5).max(1);
    let early = median(&values[fifth.min(n)..(2 * fifth).min(n)]);
    let late = median(&values[n.saturating_sub(fifth)..]);
    let allowed = early * relative + absolute;
    Trend {
        series,
        early,
        late,
        slope_per_minute: slope(&values[n / 2..]) * 60.0,
        allowed,
        bounded: late <= early + allowed,
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Least-squares slope per sample.
fn slope(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn plot_memory(report: &SoakReport, path: &Path) -> Result<(), BenchError> {
    use plotters::prelude::*;
    let points: Vec<(f64, f64)> = report
        .samples
        .iter()
        .map(|s| (s.t / 60.0, s.rss_kib / 1024.0))
        .collect();
    let max_t = points.last().map_or(1.0, |p| p.0).max(1.0 / 60.0);
    let max_mib = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(setup_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "fedgate run: resident memory under mixed traffic ({:.0} min)",
                report.seconds / 60.0
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_t, 0.0..max_mib)
        .map_err(setup_err)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(setup_err)?;
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(setup_err)?;
    root.present().map_err(setup_err)?;
    Ok(())
}

/// The networks, the fleet and the files of the soak.
struct Topology {
    pki: DevPki,
    prod: NatsServer,
    _london: NatsServer,
    _fleet: crate::fleet::Fleet,
    config: PathBuf,
    token_key: PathBuf,
    legacy_keys: PathBuf,
    collective: String,
    amqp: Connection,
}

fn realm<'a>(pki: &'a DevPki, name: &str) -> Result<&'a RealmPki, BenchError> {
    pki.realm(name)
        .ok_or_else(|| BenchError(format!("no {name} realm")))
}

fn endpoint(server: &NatsServer, realm: &RealmPki, pair: &devpki::CertPair) -> NatsEndpoint {
    NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: Some(realm.ca.clone()),
        identity: Some((pair.cert.clone(), pair.key.clone())),
    }
}

impl Topology {
    async fn start(dir: &Path, options: &SoakOptions) -> Result<Topology, BenchError> {
        let pki =
            devpki::generate(&dir.join("pki"), &DevPkiOptions::default()).map_err(setup_err)?;
        let start = |name: &str| {
            let realm = realm(&pki, name)?;
            NatsServer::start(
                &dir.join(format!("nats-{name}")),
                NatsServerConfig {
                    name: format!("soak-{name}"),
                    tls: Some(realm.nats_tls()),
                    ..NatsServerConfig::default()
                },
            )
            .map_err(setup_err)
        };
        let (prod, london) = (start("prod")?, start("london")?);
        let london_pki = realm(&pki, "london")?;
        let fleet_pair = london_pki
            .fleet
            .as_ref()
            .ok_or_else(|| BenchError("no fleet identity".into()))?;
        let fleet_client =
            crate::nats::connect(&endpoint(&london, london_pki, fleet_pair), "soak-fleet")
                .await
                .map_err(setup_err)?;
        let fleet = super::start_fleet(&pki, fleet_client, options.nodes).await?;

        let legacy_keys = dir.join("legacy");
        super::legacy::write_keys(&legacy_keys)?;
        let collective = format!("fgsoak{}", std::process::id());
        let amqp = Connection::connect(&options.amqp, ConnectionProperties::default())
            .await
            .map_err(setup_err)?;
        let channel = amqp.create_channel().await.map_err(setup_err)?;
        for (suffix, kind) in [
            ("broadcast", ExchangeKind::Topic),
            ("directed", ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(
                    format!("{collective}_{suffix}").as_str().into(),
                    kind,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(setup_err)?;
        }
        channel.close(200, "done".into()).await.map_err(setup_err)?;
        let (config, token_key) = write_config(
            dir,
            &pki,
            &prod,
            &london,
            &options.amqp,
            &collective,
            &legacy_keys,
        )?;
        Ok(Topology {
            pki,
            prod,
            _london: london,
            _fleet: fleet,
            config,
            token_key,
            legacy_keys,
            collective,
            amqp,
        })
    }

    async fn stop(self) {
        if let Ok(channel) = self.amqp.create_channel().await {
            for suffix in ["broadcast", "directed"] {
                let _ = channel
                    .exchange_delete(
                        format!("{}_{suffix}", self.collective).as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = channel
                .queue_delete(
                    format!("{}.requests", self.collective).as_str().into(),
                    Default::default(),
                )
                .await;
            let _ = channel.close(200, "done".into()).await;
        }
        let _ = self.amqp.close(200, "done".into()).await;
    }
}

fn write_config(
    dir: &Path,
    pki: &DevPki,
    prod: &NatsServer,
    london: &NatsServer,
    amqp: &str,
    collective: &str,
    keys: &Path,
) -> Result<(PathBuf, PathBuf), BenchError> {
    let (prod_pki, london_pki) = (realm(pki, "prod")?, realm(pki, "london")?);
    let privileged = london_pki
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(setup_err)?;
        }
        std::fs::write(&path, text).map_err(setup_err)?;
        Ok::<_, BenchError>(path)
    };
    let token_key = write("token.key", &TokenKeys::generate_pem().map_err(setup_err)?)?;
    let rules = write(
        "identity.toml",
        "[[rule]]\nfrom = \"prod\"\nto = [\"london\"]\nglob = \"choria=*.mcollective\"\nas = \"$0\"\n\n\
         [[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n\n\
         [[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )?;
    write("policies/default.policy", "policy default allow\n")?;
    std::fs::create_dir_all(dir.join("audit")).map_err(setup_err)?;
    let network = |table: &str, server: &NatsServer, realm: &RealmPki| {
        format!(
            "[{table}]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n",
            server.url(),
            realm.ca,
            realm.fedgate.cert,
            realm.fedgate.key
        )
    };
    let config = write(
        "fedgate.toml",
        &format!(
            "[instance]\nname = \"soak\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n{}\n{}\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {token_key:?}\n\n\
             [legacy.oldsite]\namqp = {amqp:?}\ncollective = {collective:?}\nserver_public = {:?}\n\
             server_private = {:?}\nclient_keys = {:?}\nsigners = {:?}\n\
             bridge = {{ collective = \"london\", agents = [\"rpcutil\"], refresh_s = 3600, queue = \"{collective}.requests\" }}\n",
            dir.join("policies"),
            dir.join("audit/audit.log"),
            network("federations.prod", prod, prod_pki),
            network("federations.prod.collectives.london", london, london_pki),
            privileged.cert,
            privileged.key,
            keys.join("server-public.pem"),
            keys.join("server-private.pem"),
            keys.join("clients"),
            keys.join("signers"),
        ),
    )?;
    Ok((config, token_key))
}

/// The `fedgate run` under test.
struct Child {
    child: tokio::process::Child,
    pid: u32,
    edge: String,
    metrics: std::net::SocketAddr,
}

impl Child {
    async fn start(exe: &Path, config: &Path, log: &Path) -> Result<Child, BenchError> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(exe)
            .args(["run", "--instance", "soak", "--metrics", "127.0.0.1:0"])
            .arg("--config")
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(setup_err)?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError("fedgate run exited at once".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| BenchError("no stderr".into()))?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let (mut edge, mut metrics) = (None, None);
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("metrics on http://").nth(1) {
                    metrics = url.trim().trim_end_matches("/metrics").parse().ok();
                }
                if let Some(url) = line.split(": edge on ").nth(1) {
                    edge = Some(url.trim().to_string());
                }
                said.push(line);
                if edge.is_some() && metrics.is_some() {
                    return true;
                }
            }
            false
        })
        .await;
        let (Ok(true), Some(edge), Some(metrics)) = (ready, edge, metrics) else {
            return Err(BenchError(format!(
                "fedgate run did not start: {}",
                said.join("; ")
            )));
        };
        let Ok(mut log) = std::fs::File::create(log) else {
            return Err(BenchError(format!("cannot write {}", log.display())));
        };
        // Keep reading its log so it never blocks on a full pipe: into `log`, and what goes
        // wrong to stderr too.
        tokio::spawn(async move {
            use std::io::Write;
            for line in said {
                let _ = writeln!(log, "{line}");
            }
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
                if line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("soak: fedgate run: {line}");
                }
            }
        });
        Ok(Child {
            child,
            pid,
            edge,
            metrics,
        })
    }

    fn is_running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The process's figures from `/proc` and its metrics endpoint; `None` once it has gone.
async fn read_sample(pid: u32, metrics: std::net::SocketAddr) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64;
    let mut sample = Sample {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
        ..Sample::default()
    };
    let text = scrape(metrics).await.unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let bare = name.split('{').next().unwrap_or(name);
        if bare == "fedgate_runtime_alive_tasks" {
            sample.tasks = value;
        } else if QUEUE_GAUGES.contains(&bare) {
            *sample.queues.entry(bare.to_string()).or_default() += value;
        }
    }
    Some(sample)
}

/// The gauges that measure something that could pile up.
const QUEUE_GAUGES: &[&str] = &[
    "fedgate_runtime_global_queue_depth",
    "fedgate_gate_pending",
    "fedgate_edge_sockets",
];

/// `GET /metrics` of the child.
async fn scrape(addr: std::net::SocketAddr) -> Result<String, BenchError> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(setup_err)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(setup_err)?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(setup_err)?;
    let response = sender.send_request(request).await.map_err(setup_err)?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(setup_err)?
        .to_bytes();
    driver.abort();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Counters and latencies of one traffic kind.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn report(&self, kind: &str) -> KindReport {
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        KindReport {
            kind: kind.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// The three load generators.
struct Traffic {
    nodes: usize,
    edge: Connect,
    sockets: Arc<Pool>,
    federation: Arc<RpcClient>,
    legacy: Arc<LegacyClient>,
    in_flight: Arc<AtomicU64>,
}

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl Traffic {
    async fn connect(
        topology: &Topology,
        child: &Child,
        options: &SoakOptions,
    ) -> Result<Traffic, BenchError> {
        let keys = TokenKeys::load(&topology.token_key).map_err(setup_err)?;
        let token = keys
            .issue(
                "alice",
                options.duration + Duration::from_secs(3600),
                None,
                SystemTime::now(),
            )
            .map_err(setup_err)?;
        let edge = Connect {
            url: child.edge.clone(),
            token: Some(token),
            ..Connect::default()
        };
        let prod = realm(&topology.pki, "prod")?;
        let alice = &prod.users["alice"];
        let client = crate::nats::connect(&endpoint(&topology.prod, prod, alice), "soak-client")
            .await
            .map_err(setup_err)?;
        let federation = Arc::new(RpcClient::new(
            client,
            Arc::new(Signer::from_files(&alice.cert, &alice.key).map_err(setup_err)?),
            CallerId::parse("choria=alice.mcollective").map_err(setup_err)?,
            "soak.example".into(),
            Limits::default(),
        ));
        let legacy = Arc::new(
            LegacyClient::connect(
                &options.amqp,
                &topology.collective,
                &topology.legacy_keys.join("alice-private.pem"),
            )
            .await?,
        );
        Ok(Traffic {
            nodes: options.nodes,
            edge,
            sockets: Arc::default(),
            federation,
            legacy,
            in_flight: Arc::default(),
        })
    }

    /// Drives all three kinds until `until`, then waits for the requests in flight.
    async fn drive(&self, options: &SoakOptions, until: Instant) -> Vec<KindReport> {
        let nodes = self.nodes;
        let ws = Arc::new(Tally::default());
        let federation = Arc::new(Tally::default());
        let legacy = Arc::new(Tally::default());
        let edge = self.edge.clone();
        let sockets = self.sockets.clone();
        let ws_run = drive(
            options.ws_rate,
            until,
            options.window,
            ws.clone(),
            self.in_flight.clone(),
            move |n| {
                let (edge, sockets) = (edge.clone(), sockets.clone());
                async move { ws_ping(&edge, &sockets, n, nodes).await }
            },
        );
        let client = self.federation.clone();
        let federation_run = drive(
            options.federation_rate,
            until,
            options.window,
            federation.clone(),
            self.in_flight.clone(),
            move |_| {
                let client = client.clone();
                async move {
                    let mut call = RpcCall::new("london", "rpcutil", "ping");
                    call.federation = Some("prod".into());
                    call.expect = Some(nodes);
                    call.timeout = REQUEST_TIMEOUT;
                    let summary = client
                        .call(&call, |_| {})
                        .await
                        .map_err(|e| e.to_string())?;
                    if summary.ok != nodes {
                        return Err(format!("{} of {nodes} replies ok", summary.ok));
                    }
                    Ok(())
                }
            },
        );
        let client = self.legacy.clone();
        let legacy_run = drive(
            options.legacy_rate,
            until,
            options.window,
            legacy.clone(),
            self.in_flight.clone(),
            move |n| {
                let client = client.clone();
                async move { client.ping(n, nodes).await }
            },
        );
        tokio::join!(ws_run, federation_run, legacy_run);
        let sockets = std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|p| p.into_inner()));
        for (socket, _) in sockets {
            socket.close().await;
        }
        self.legacy.close().await;
        vec![
            ws.report("websocket"),
            federation.report("federation"),
            legacy.report("legacy"),
        ]
    }
}

/// Starts one request every `1 / rate` seconds until `until`, at most `window` in flight, and
/// waits for the last to end.
async fn drive<F, Fut>(
    rate: f64,
    until: Instant,
    window: usize,
    tally: Arc<Tally>,
    in_flight: Arc<AtomicU64>,
    request: F,
) where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if rate <= 0.0 {
        return;
    }
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        n += 1;
        tally.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.fetch_add(1, Ordering::Relaxed);
        let future = request(n);
        let (tally, in_flight) = (tally.clone(), in_flight.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(REQUEST_TIMEOUT, future)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
            match result {
                Ok(()) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    let mut latencies = tally.latencies.lock().unwrap_or_else(|p| p.into_inner());
                    // About 10 requests a second for hours: bounded all the same.
                    if latencies.len() < 1_000_000 {
                        latencies.push(started.elapsed());
                    }
                }
                Err(err) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    let mut errors = tally.errors.lock().unwrap_or_else(|p| p.into_inner());
                    if errors.len() < 10 {
                        errors.push(err);
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A pooled socket unused for this long is closed and replaced, as a client's pool would:
/// the edge closes sockets that send nothing for `idle_timeout_s` (300 s by default).
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Sockets of the WebSocket traffic, with when each was last used.
type Pool = Mutex<Vec<(WsClient, Instant)>>;

/// A ping through the edge on a pooled socket, or on a socket of its own every 50th time.
async fn ws_ping(edge: &Connect, pool: &Pool, n: u64, nodes: usize) -> Result<(), String> {
    let churn = n.is_multiple_of(50);
    let pooled = if churn {
        None
    } else {
        pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
    };
    let pooled = match pooled {
        Some((socket, used)) if used.elapsed() > POOL_IDLE => {
            socket.close().await;
            None
        }
        other => other.map(|(socket, _)| socket),
    };
    let mut socket = match pooled {
        Some(socket) => socket,
        None => WsClient::connect(edge)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    };
    let request = serde_json::json!({
        "type": "rpc", "id": format!("s{n}"), "collective": "london",
        "agent": "rpcutil", "action": "ping", "limit": nodes,
        "timeout_ms": REQUEST_TIMEOUT.as_millis() as u64,
    });
    let done = socket
        .call(&request, |_| {})
        .await
        .map_err(|e| format!("socket: {e}"))?;
    if done["type"] != "done" || done["responses"].as_u64() != Some(nodes as u64) {
        return Err(format!("edge answered {done}"));
    }
    if churn {
        socket.close().await;
    } else {
        pool.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((socket, Instant::now()));
    }
    Ok(())
}

/// Legacy requests waiting for replies: replies still to come, and whom to tell when none are.
type Waiting = HashMap<String, (usize, oneshot::Sender<()>)>;

/// A legacy MCollective client: signs requests with its RSA key, publishes them on the
/// collective's broadcast exchange and matches replies on its private queue by request id.
struct LegacyClient {
    signer: LegacySigner,
    channel: lapin::Channel,
    connection: Connection,
    collective: String,
    reply_to: String,
    waiting: Arc<Mutex<Waiting>>,
    reader: tokio::task::JoinHandle<()>,
}

impl LegacyClient {
    async fn connect(amqp: &str, collective: &str, key: &Path) -> Result<LegacyClient, BenchError> {
        let connection = Connection::connect(amqp, ConnectionProperties::default())
            .await
            .map_err(setup_err)?;
        let channel = connection.create_channel().await.map_err(setup_err)?;
        let queue = crate::legacy::declare_private_queue(&channel, "")
            .await
            .map_err(setup_err)?;
        let reply_to = queue.name().as_str().to_string();
        let mut replies = crate::legacy::consume_unacked(&channel, &reply_to, "soak")
            .await
            .map_err(setup_err)?;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let reader = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = replies.next().await {
                    let Ok(reply) =
                        LegacyReply::decode(Serializer::Marshal, &delivery.data, 1 << 20)
                    else {
                        continue;
                    };
                    let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
                    let finished = match waiting.get_mut(&reply.requestid) {
                        Some((left, _)) => {
                            *left = left.saturating_sub(1);
                            *left == 0
                        }
                        None => false,
                    };
                    if finished && let Some((_, done)) = waiting.remove(&reply.requestid) {
                        let _ = done.send(());
                    }
                }
            })
        };
        Ok(LegacyClient {
            signer: LegacySigner::from_file(key, "alice").map_err(setup_err)?,
            channel,
            connection,
            collective: collective.to_string(),
            reply_to,
            waiting,
            reader,
        })
    }

    async fn ping(&self, n: u64, nodes: usize) -> Result<(), String> {
        let requestid = format!("{:016x}{n:016x}", std::process::id());
        let filter = crate::legacy::legacy_filter(&Default::default(), "rpcutil");
        let msg = Ruby::Hash(vec![
            (Ruby::sym("agent"), Ruby::str("rpcutil")),
            (Ruby::sym("action"), Ruby::str("ping")),
            // The signed body must differ between requests, or the second of two in one
            // second is a replay of the first.
            (
                Ruby::sym("data"),
                Ruby::Hash(vec![(Ruby::sym("n"), Ruby::Int(n as i64))]),
            ),
        ]);
        let request = self
            .signer
            .sign_request(
                Serializer::Marshal,
                &NewLegacyRequest {
                    msg,
                    senderid: "soak.example.net",
                    requestid: &requestid,
                    filter,
                    collective: &self.collective,
                    agent: "rpcutil",
                    ttl: 60,
                    msgtime: Now::system().unix_seconds(),
                },
            )
            .map_err(|e| e.to_string())?;
        let (done, answered) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(requestid.clone(), (nodes, done));
        let published = self
            .channel
            .basic_publish(
                format!("{}_broadcast", self.collective).as_str().into(),
                "rpcutil".into(),
                BasicPublishOptions::default(),
                &request.encode(Serializer::Marshal),
                BasicProperties::default()
                    .with_reply_to(self.reply_to.as_str().into())
                    .with_expiration("60000".into()),
            )
            .await;
        let outcome = match published {
            Err(err) => Err(format!("publish: {err}")),
            Ok(_) => match tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(format!("not every one of {nodes} nodes answered")),
            },
        };
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&requestid);
        outcome
    }

    async fn close(&self) {
        self.reader.abort();
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}
