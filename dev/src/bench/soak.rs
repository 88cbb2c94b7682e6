//! `fedgate-dev bench soak`: one `fedgate run` child serving a federation broker, the WebSocket edge
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

mod child;
mod legacy_client;
mod report;
mod topology;
mod traffic;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BenchError, setup_err};
use child::{Child, spawn_sampler};
use report::{trends, write_report};
use topology::Topology;
use traffic::Traffic;

pub use report::{KindReport, Sample, SoakReport, Trend};

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

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

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
    let sampler = spawn_sampler(&child, traffic.in_flight.clone(), started, samples.clone());
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
    write_report(&report, &options.out)?;
    if !alive {
        return Err(BenchError(
            "the fedgate run child died during the soak".into(),
        ));
    }
    Ok(report)
}
