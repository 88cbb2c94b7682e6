//! `fedgate run`'s log for operators (issue 22, logs): every status line goes through tracing
//! (target `fedgate::status`, shown at the default verbosity), text carries no ANSI escapes when
//! stderr is not a terminal, and `--log-format json` / `FEDGATE_LOG_FORMAT` / `[instance]
//! log_format` give one JSON object a line. Real `fedgate run` and nats-server.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate::edge::auth::TokenKeys;
use support::{BrokerProcess, Network, collective_block, gate_block, realm};
use tokio::io::AsyncBufReadExt;

/// A config serving london's collective and the edge, with `instance` as its `[instance]` table.
fn config(dir: &Path, london: &Network, instance: &str) -> PathBuf {
    let key = dir.join("token.key");
    std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
    let rules = dir.join("identity.toml");
    std::fs::write(&rules, "").unwrap();
    let edge = realm("edge");
    let path = dir.join("fedgate.toml");
    std::fs::write(
        &path,
        format!(
            "{instance}[identity]\nrules = {rules:?}\n\n{}{}\n[edge]\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ certificate = {:?}, key = {:?} }}\ntoken_key = {key:?}\n",
            gate_block(dir, &[], ""),
            collective_block("collectives.london", london),
            edge.server.cert,
            edge.server.key,
        ),
    )
    .unwrap();
    path
}

/// `fedgate run` with `config` and `env`: its stderr lines up to and including the one that
/// names the edge (60 s at most), then it is killed.
async fn lines_until_the_edge(config: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let mut child = tokio::process::Command::new(support::fedgate_bin())
        .args(["run", "--instance", "logs", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Ok(Some(line)) = stderr.next_line().await {
            let done = line.contains("edge on ");
            lines.push(line);
            if done {
                return;
            }
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(60), read).await;
    let _ = child.kill().await;
    assert!(finished.is_ok(), "no edge line within 60 s: {lines:#?}");
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lines_go_through_tracing_without_escapes_on_a_pipe() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &london, "");
    let mut run = BrokerProcess::spawn(&config, "logs").await;
    let logs = run.logs();
    assert!(logs.iter().all(|l| !l.contains('\u{1b}')), "{logs:#?}");
    let edge = logs
        .iter()
        .find(|l| l.contains(": edge on "))
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert!(
        edge.contains(" INFO fedgate::status: fedgate logs: edge on wss://"),
        "{edge}"
    );
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_come_from_the_config_and_the_flag_or_environment_overrides_it() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &london, "[instance]\nlog_format = \"json\"\n\n");
    let lines = lines_until_the_edge(&config, &[]).await;
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
    }
    let edge: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(edge["target"], "fedgate::status");
    assert_eq!(edge["level"], "INFO");
    let message = edge["fields"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("fedgate logs: edge on wss://"),
        "{message}"
    );

    // FEDGATE_LOG_FORMAT (as --log-format) wins over the config.
    let lines = lines_until_the_edge(&config, &[("FEDGATE_LOG_FORMAT", "text")]).await;
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    );
    assert!(
        lines
            .last()
            .unwrap()
            .contains(" INFO fedgate::status: fedgate logs: edge on ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_at_any_moment_of_start_up_stops_the_process_cleanly() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &london, "");
    // The first status line (metrics) comes early in start-up, the edge's last: a SIGTERM at
    // either is kept and acted on, never lost with the process left running.
    for after in ["metrics on", "edge on"] {
        let mut child = tokio::process::Command::new(support::fedgate_bin())
            .args([
                "run",
                "--metrics",
                "127.0.0.1:0",
                "--instance",
                "logs",
                "--config",
            ])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains(after) {
                break;
            }
        }
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .arg(&pid)
            .status()
            .unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running 15 s after SIGTERM at {after:?}"))
            .unwrap();
        assert!(status.success(), "{after}: {status}");
    }
}
