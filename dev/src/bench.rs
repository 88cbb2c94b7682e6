//! Side-by-side benchmarks: each fedgate path measured against its baseline in the same run.

pub mod adversarial;
pub mod crypto;
pub mod edge;
pub mod flood;
pub mod gate;
pub mod legacy;
pub mod relay;
pub mod replay;
pub mod resign;
pub mod soak;

use std::time::{Duration, Instant};

use serde::Serialize;

/// One benchmark row: the fedgate path and its baseline, measured interleaved.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// What it is compared with.
    pub baseline: String,
    /// Baseline operations per second.
    pub baseline_ops: f64,
    /// fedgate operations per second.
    pub fedgate_ops: f64,
    /// `fedgate_ops / baseline_ops`.
    pub ratio: f64,
}

/// Why a benchmark could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("benchmark setup failed: {0}")]
pub struct BenchError(String);

pub(crate) fn setup_err(err: impl std::fmt::Display) -> BenchError {
    BenchError(err.to_string())
}

/// Runs `baseline` and `subject` in alternating slices for `budget` each; returns ops/s of both.
/// Writes `text` to `dir/name` (creating its folders) and returns the path.
pub(crate) fn write_file(
    dir: &std::path::Path,
    name: &str,
    text: &str,
) -> Result<std::path::PathBuf, BenchError> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(setup_err)?;
    }
    std::fs::write(&path, text).map_err(setup_err)?;
    Ok(path)
}

/// Starts `exe run --instance bench --config CONFIG` (killed on drop) and hands back the child
/// and its stderr lines, which say when it serves.
pub(crate) fn spawn_run(
    exe: &std::path::Path,
    config: &std::path::Path,
) -> Result<
    (
        tokio::process::Child,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    ),
    BenchError,
> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(exe)
        .args(["run", "--instance", "bench", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(setup_err)?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| BenchError("no stderr".into()))?;
    Ok((child, tokio::io::BufReader::new(stderr).lines()))
}

pub(crate) fn interleaved(
    budget: Duration,
    mut baseline: impl FnMut(),
    mut subject: impl FnMut(),
) -> (f64, f64) {
    const SLICES: u32 = 8;
    let slice = budget / SLICES;
    let (mut base_ops, mut base_time, mut sub_ops, mut sub_time) =
        (0u64, Duration::ZERO, 0u64, Duration::ZERO);
    baseline();
    subject();
    for _ in 0..SLICES {
        let (ops, took) = run_for(slice, &mut baseline);
        base_ops += ops;
        base_time += took;
        let (ops, took) = run_for(slice, &mut subject);
        sub_ops += ops;
        sub_time += took;
    }
    (
        base_ops as f64 / base_time.as_secs_f64(),
        sub_ops as f64 / sub_time.as_secs_f64(),
    )
}

fn run_for(slice: Duration, op: &mut impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut ops = 0;
    while ops == 0 || start.elapsed() < slice {
        op();
        ops += 1;
    }
    (ops, start.elapsed())
}

/// A dev PKI under `work_dir` and the collective london as Choria runs it: a nats-server with
/// TLS and client certificates (and a plain WebSocket listener when `websocket`).
pub(crate) fn tls_collective(
    work_dir: &std::path::Path,
    websocket: bool,
) -> Result<(crate::devpki::DevPki, crate::natsd::NatsServer), BenchError> {
    use crate::devpki::{self, DevPkiOptions};
    use crate::natsd::{NatsServer, NatsServerConfig};
    let pki =
        devpki::generate(&work_dir.join("pki"), &DevPkiOptions::default()).map_err(setup_err)?;
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let nats = NatsServer::start(
        &work_dir.join("nats"),
        NatsServerConfig {
            name: "bench-london".into(),
            tls: Some(london.nats_tls()),
            websocket_listen: websocket,
            ..NatsServerConfig::default()
        },
    )
    .map_err(setup_err)?;
    Ok((pki, nats))
}

/// `nodes` simulated nodes of london on their own connection to `nats`, as the fleet identity.
pub(crate) async fn fleet_on(
    pki: &crate::devpki::DevPki,
    nats: &crate::natsd::NatsServer,
    nodes: usize,
) -> Result<crate::fleet::Fleet, BenchError> {
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let pair = london
        .fleet
        .as_ref()
        .ok_or_else(|| BenchError("no fleet identity".into()))?;
    let endpoint = fedgate::nats::NatsEndpoint {
        urls: vec![nats.url().to_string()],
        ca: Some(london.ca.clone()),
        identity: Some((pair.cert.clone(), pair.key.clone())),
        auth: None,
    };
    let client = fedgate::nats::connect(&endpoint, "bench-fleet")
        .await
        .map_err(setup_err)?;
    start_fleet(pki, client, nodes).await
}

/// `nodes` simulated nodes of london on `client`, checking requests against london's CA.
pub(crate) async fn start_fleet(
    pki: &crate::devpki::DevPki,
    client: async_nats::Client,
    nodes: usize,
) -> Result<crate::fleet::Fleet, BenchError> {
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    use crate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig};
    use fedgate::security::{CaBundle, Verifier};
    let limits = fedgate::wire::Limits::default();
    let config = FleetConfig {
        nodes: fleet::generate("london", nodes, &["london".into()]),
        verifier: Verifier::with_defaults(
            CaBundle::from_file(&london.ca).map_err(setup_err)?,
            limits,
        ),
        limits,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        v2: None,
        policy: None,
        ddl: None,
    };
    Fleet::start(client, config).await.map_err(setup_err)
}

pub(crate) fn row(name: String, baseline: &str, (baseline_ops, fedgate_ops): (f64, f64)) -> Row {
    Row {
        name,
        baseline: baseline.to_string(),
        baseline_ops,
        fedgate_ops,
        ratio: fedgate_ops / baseline_ops,
    }
}

/// Renders rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<42} {:>14} {:>14} {:>7}  baseline\n",
        "benchmark", "baseline/s", "fedgate/s", "ratio"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<42} {:>14.0} {:>14.0} {:>7.3}  {}\n",
            r.name, r.baseline_ops, r.fedgate_ops, r.ratio, r.baseline
        ));
    }
    out
}
