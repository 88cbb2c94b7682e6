//! The `fedgate run` under test, and its figures: memory, files and threads from `/proc`, tasks
//! and queues from its metrics endpoint.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::report::Sample;
use crate::bench::{BenchError, setup_err};

/// The `fedgate run` under test.
pub(super) struct Child {
    child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) edge: String,
    pub(super) metrics: std::net::SocketAddr,
}

impl Child {
    pub(super) async fn start(exe: &Path, config: &Path, log: &Path) -> Result<Child, BenchError> {
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

    pub(super) fn is_running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub(super) async fn stop(mut self) {
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
    "fedgate_gate_pending_completions",
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

/// Reads the child's figures every second into `samples` until it has gone, with a line on
/// stderr each minute.
pub(super) fn spawn_sampler(
    child: &Child,
    in_flight: Arc<AtomicU64>,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
) -> tokio::task::JoinHandle<()> {
    let (pid, metrics) = (child.pid, child.metrics);
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
            if n.is_multiple_of(60) {
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
}
