//! The edge under measurement: its config, and the `fedgate run` child that serves it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::{BenchError, setup_err};
use crate::devpki::DevPki;
use fedgate::edge::auth::TokenKeys;

/// The edge's config: token users map to `choria=<user>.mcollective` in london, policy allows
/// everything, every decision goes to an audit file, and the limits are out of the way.
pub(crate) fn write_config(
    dir: &Path,
    pki: &DevPki,
    url: &str,
) -> Result<(PathBuf, PathBuf), BenchError> {
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let privileged = london
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let write = |name: &str, text: &str| crate::bench::write_file(dir, name, text);
    let key = write("token.key", &TokenKeys::generate_pem().map_err(setup_err)?)?;
    let rules = write(
        "identity.toml",
        "[[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n",
    )?;
    write("policies/default.policy", "policy default allow\n")?;
    std::fs::create_dir_all(dir.join("audit")).map_err(setup_err)?;
    let config = write(
        "fedgate.toml",
        &format!(
            "[instance]\nname = \"bench\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n\
             [collectives.london]\nnats = [{url:?}]\nca = {:?}\n\
             tls = {{ certificate = {:?}, key = {:?} }}\n\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\nmax_connections = 20000\n\
             rate_per_second = 1000000\nrate_burst = 1000000\nmax_in_flight = 64\n\
             idle_timeout_s = 600\nping_interval_s = 600\n",
            dir.join("policies"),
            dir.join("audit/audit.log"),
            london.ca,
            london.fedgate.cert,
            london.fedgate.key,
            privileged.cert,
            privileged.key,
        ),
    )?;
    Ok((config, key))
}

/// The edge as a `fedgate run` child.
pub(crate) struct EdgeProcess {
    child: tokio::process::Child,
    pub(crate) url: String,
}

impl EdgeProcess {
    pub(crate) async fn start(exe: &Path, config: &Path) -> Result<EdgeProcess, BenchError> {
        let (child, mut lines) = crate::bench::spawn_run(exe, config)?;
        let mut said = Vec::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once(": edge on ") {
                    return Some(url.trim().to_string());
                }
                said.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            BenchError(format!(
                "fedgate run did not start its edge: {}",
                said.join("; ")
            ))
        })?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(EdgeProcess { child, url })
    }

    fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .id()
            .ok_or_else(|| BenchError("the edge exited".into()))
    }

    pub(super) fn rss_kib(&self) -> Result<u64, BenchError> {
        rss_kib(self.pid()?)
    }

    /// CPU time the edge has used so far, every thread.
    pub(super) fn cpu(&self) -> Result<Duration, BenchError> {
        cpu_time(self.pid()?)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// VmRSS of a process, KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(setup_err)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError(format!("no VmRSS for pid {pid}")))
}

/// CPU time a process has used so far: the sum over its threads of the nanoseconds on a CPU in
/// `/proc/PID/task/TID/schedstat` (nanosecond resolution, where `/proc/PID/stat` counts ticks).
pub(super) fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(setup_err)?;
    let mut nanos = 0u64;
    for task in tasks.flatten() {
        // A thread that ended since the listing is no longer there, and no longer counts.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        nanos += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| BenchError(format!("unreadable schedstat for pid {pid}: {stat:?}")))?;
    }
    Ok(Duration::from_nanos(nanos))
}
