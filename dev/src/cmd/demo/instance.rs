//! The `fedgate run` children of `fedgate-dev demo`: started, watched until their edge is up, and
//! stopped with a drain.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;

/// How long an instance may take to drain and exit before it is killed.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(10);

/// A `fedgate run` child; its log goes to `<dir>/<name>.log`.
pub(super) struct Instance {
    child: tokio::process::Child,
    /// Its instance name.
    pub(super) name: String,
    /// The web page.
    pub(super) http_url: String,
    /// The WebSocket edge.
    pub(super) ws_url: String,
}

impl Instance {
    /// Starts `fedgate run` with `config` and waits until its edge is up.
    pub(super) async fn spawn(dir: &Path, name: &str, config: &Path) -> anyhow::Result<Instance> {
        let exe = fedgate_dev::gateway_exe();
        let mut child = tokio::process::Command::new(exe)
            .args([
                "run",
                "--instance",
                name,
                "--metrics",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Ctrl-C reaches only the demo, which drains this child before it stops the rest.
            .process_group(0)
            .spawn()
            .context("starting fedgate run")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log_path = dir.join(format!("{name}.log"));
        let mut log = std::fs::File::create(&log_path)?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if let Some(url) = line.split("edge on ").nth(1) {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await;
        let Ok(Some(ws_url)) = ready else {
            drop(log);
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fedgate {name} did not start; see {}; its last lines:\n{}",
                log_path.display(),
                tail.join("\n")
            );
        };
        // Keep draining its log, so it never blocks on a full pipe.
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        let http_url = ws_url
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1)
            .trim_end_matches("/ws")
            .to_string()
            + "/";
        eprintln!("fedgate-dev demo: {name} is up at {http_url}");
        Ok(Instance {
            child,
            name: name.to_string(),
            http_url,
            ws_url,
        })
    }

    /// SIGTERM, so it drains; killed if it has not exited within [`STOP_WAIT`]. Says when it
    /// is done.
    pub(super) async fn stop(mut self) {
        let began = std::time::Instant::now();
        if let Some(pid) = self.child.id() {
            let pid = libc::pid_t::try_from(pid).unwrap_or(0);
            if pid > 0 {
                // SAFETY: kill(2) on our own child's pid; no memory is touched.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        match tokio::time::timeout(STOP_WAIT, self.child.wait()).await {
            Ok(_) => eprintln!(
                "fedgate-dev demo: {} drained and stopped in {:.1} s",
                self.name,
                began.elapsed().as_secs_f64()
            ),
            Err(_) => {
                let _ = self.child.kill().await;
                eprintln!(
                    "fedgate-dev demo: {} did not stop within {} s; killed it",
                    self.name,
                    STOP_WAIT.as_secs()
                );
            }
        }
    }
}
