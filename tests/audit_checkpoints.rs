//! The trail on disk (issue 20): signed checkpoints prove it was not rewritten (finding 2), a
//! budget keeps it off a full disk (finding 3), and it names no server paths (finding 8). A real `fedgate run`
//! with `[audit.checkpoint]` decides requests from a real WebSocket client. Then, with fedgate
//! stopped, copies of its trail are edited the way a dishonest operator would edit them:
//! - a record changed and every later hash recomputed (the chain alone verifies);
//! - the same, with the checkpoints after the change removed;
//! - the tail cut.
//!
//! `fedgate audit verify --key` must refuse the first two and report the unanchored tail, and
//! `fedgate run` must refuse to start on a rewritten trail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fedgate::audit::record::{self, ChainState, Kind, Record};
use fedgate::edge::auth::TokenKeys;
use serde_json::json;
use support::edge::{next_json, open, rpc};
use support::{BrokerProcess, Network, collective_block, fedgate_bin, gate_block, realm};

/// Records between checkpoints in these tests.
const EVERY: usize = 10;

fn run_cli(args: &[&str], files: &[&Path]) -> (i32, String) {
    let out = Command::new(fedgate_bin())
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Site {
    _london: Network,
    dir: tempfile::TempDir,
    config: PathBuf,
    token_key: PathBuf,
    checkpoint_pub: PathBuf,
}

impl Site {
    fn new() -> Site {
        Site::with("")
    }

    /// A site whose `[audit]` table has `audit_extra` too, and whose edge rate is high enough
    /// for a flood.
    fn with(audit_extra: &str) -> Site {
        let london = Network::start("london");
        let dir = tempfile::tempdir().unwrap();
        let token_key = dir.path().join("token.key");
        std::fs::write(&token_key, TokenKeys::generate_pem().unwrap()).unwrap();
        let checkpoint_key = dir.path().join("checkpoint.key");
        let (code, out) = run_cli(&["audit", "keygen", "--out"], &[checkpoint_key.as_path()]);
        assert_eq!(code, 0, "{out}");
        let rules = dir.path().join("identity.toml");
        std::fs::write(&rules, support::EDGE_USERS_TO_LONDON).unwrap();
        let edge = realm("edge");
        let config = dir.path().join("fedgate.toml");
        std::fs::write(
            &config,
            format!(
                "[instance]\nname = \"cp1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\n\
                 [edge]\nlisten = \"127.0.0.1:0\"\n\
                 tls = {{ certificate = {:?}, key = {:?} }}\norigins = [\"https://ops.example\"]\n\
                 token_key = {token_key:?}\nrate_per_second = 100000\nrate_burst = 100000\n",
                gate_block(
                    dir.path(),
                    &[("rpcutil.policy", "policy default allow\n")],
                    &format!(
                        "{audit_extra}[audit.checkpoint]\nkey = {checkpoint_key:?}\nevery = {EVERY}\ninterval_s = 3600\n"
                    ),
                ),
                collective_block("collectives.london", &london),
                edge.server.cert,
                edge.server.key,
            ),
        )
        .unwrap();
        let mut checkpoint_pub = checkpoint_key.into_os_string();
        checkpoint_pub.push(".pub");
        Site {
            _london: london,
            dir,
            config,
            token_key,
            checkpoint_pub: checkpoint_pub.into(),
        }
    }

    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }

    /// A socket to `run`'s edge as alice, past its welcome.
    async fn socket(&self, run: &BrokerProcess) -> support::edge::Socket {
        let token = TokenKeys::load(&self.token_key)
            .unwrap()
            .issue(
                "alice",
                Duration::from_secs(300),
                None,
                std::time::SystemTime::now(),
            )
            .unwrap();
        let url = run.edge.clone().expect("an edge");
        let url = url.replace("127.0.0.1", "localhost");
        let mut socket = open(&url, Some(&token), None, None).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "welcome");
        socket
    }

    /// Starts `fedgate run` and has it refuse `count` requests (policy denies the echo agent),
    /// each one decision record.
    async fn decide(&self, count: usize) {
        let mut run = BrokerProcess::spawn(&self.config, "checkpoints").await;
        let mut socket = self.socket(&run).await;
        for n in 0..count {
            let (_, end) = rpc(
                &mut socket,
                json!({"type":"rpc","id":format!("r{n}"),"collective":"london","agent":"echo","action":"say"}),
            )
            .await;
            assert_eq!(end["type"], "error", "{end}");
        }
        run.terminate().await;
    }
}

fn read(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes `records` as a trail, sealing each again on the chain (as someone who rewrites a trail
/// would), keeping every field but `prev`, `seq` and `hash`.
fn rechain(records: &[Record], path: &Path) {
    let mut state = ChainState::genesis();
    let mut text = Vec::new();
    for r in records {
        let (_, line) = record::seal(
            r.kind,
            r.id.clone(),
            &r.instance,
            r.time.clone(),
            r.event.clone(),
            &mut state,
        );
        text.extend_from_slice(&line);
        text.push(b'\n');
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_fails_at_the_first_checkpoint_after_it() {
    let site = Site::new();
    site.decide(3 * EVERY + 4).await;
    let audit = site.audit();
    let records = read(&audit);
    let checkpoints: Vec<u64> = records
        .iter()
        .filter(|r| r.kind == Kind::Checkpoint)
        .map(|r| r.seq)
        .collect();
    // One at start-up, then one every EVERY records, and none more than EVERY records apart.
    assert!(checkpoints.len() >= 4, "{checkpoints:?}");
    assert!(
        checkpoints
            .windows(2)
            .all(|w| w[1] - w[0] <= EVERY as u64 + 1),
        "{checkpoints:?}"
    );
    let key = site.checkpoint_pub.to_str().unwrap();
    let (code, out) = run_cli(&["audit", "verify", "--key", key], &[audit.as_path()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("anchored:"), "{out}");

    // A decision in the middle rewritten: denied becomes allowed, and the chain recomputed.
    let middle = records
        .iter()
        .position(|r| r.kind == Kind::Decision && r.seq > checkpoints[1])
        .unwrap();
    let mut forged = records.clone();
    forged[middle].event.decision = Some(fedgate::audit::Verdict::Allow);
    forged[middle].event.reason = "allowed".into();
    let rewritten = site.dir.path().join("rewritten.log");
    rechain(&forged, &rewritten);
    // The chain alone cannot tell.
    let (code, out) = run_cli(&["audit", "verify"], &[rewritten.as_path()]);
    assert_eq!(code, 0, "{out}");
    // The checkpoint after the change can.
    let (code, out) = run_cli(&["audit", "verify", "--key", key], &[rewritten.as_path()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rewritten"), "{out}");
    let next = records[middle..]
        .iter()
        .find(|r| r.kind == Kind::Checkpoint)
        .unwrap();
    assert!(
        out.contains(&format!(":{}:", next.seq + 1)),
        "fails at the checkpoint's line {}: {out}",
        next.seq + 1
    );

    // Removing the checkpoints after the change leaves a gap a checkpoint would have filled.
    let stripped: Vec<Record> = forged
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < middle || r.kind != Kind::Checkpoint)
        .map(|(_, r)| r.clone())
        .collect();
    let gapped = site.dir.path().join("gapped.log");
    rechain(&stripped, &gapped);
    let (code, out) = run_cli(&["audit", "verify", "--key", key], &[gapped.as_path()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("checkpoints were removed"), "{out}");

    // A key that did not sign the trail proves nothing.
    let other = site.dir.path().join("other.key");
    let (code, _) = run_cli(&["audit", "keygen", "--out"], &[other.as_path()]);
    assert_eq!(code, 0);
    let other_pub = format!("{}.pub", other.display());
    let (code, out) = run_cli(
        &["audit", "verify", "--key", &other_pub],
        &[audit.as_path()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not among the keys given"), "{out}");

    // fedgate refuses to start on the rewritten trail, naming the problem.
    std::fs::copy(&rewritten, &audit).unwrap();
    let output = tokio::process::Command::new(fedgate_bin())
        .args(["run", "--config"])
        .arg(&site.config)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("fedgate run exits")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("altered since its last checkpoint"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_after_the_last_checkpoint_are_reported_as_an_unanchored_tail() {
    let site = Site::new();
    site.decide(EVERY + 3).await;
    let audit = site.audit();
    let records = read(&audit);
    // A clean stop anchors the tail: the trail ends with a checkpoint.
    assert_eq!(records.last().unwrap().kind, Kind::Checkpoint);
    // The checkpoint before that one, which records follow.
    let last = records[..records.len() - 1]
        .iter()
        .rposition(|r| r.kind == Kind::Checkpoint)
        .unwrap();
    let key = site.checkpoint_pub.to_str().unwrap();

    // The tail cut two records after that checkpoint (the final checkpoint with it): the trail
    // verifies, and says how many records no checkpoint covers.
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = last + 1 + 2;
    let cut = site.dir.path().join("tail-cut.log");
    assert!(keep < lines.len());
    std::fs::write(&cut, lines[..keep].join("\n") + "\n").unwrap();
    let (code, out) = run_cli(&["audit", "verify", "--key", key], &[cut.as_path()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unanchored tail: 2 record(s)"), "{out}");

    // A restart on the cut trail checks back to the last checkpoint and anchors the tail at
    // once (and, with nothing after it, writes no other checkpoint at its stop).
    std::fs::copy(&cut, &audit).unwrap();
    let mut run = BrokerProcess::spawn(&site.config, "checkpoints").await;
    run.terminate().await;
    let records = read(&audit);
    assert_eq!(records.len(), keep + 1);
    assert_eq!(records.last().unwrap().kind, Kind::Checkpoint);
    let (code, out) = run_cli(
        &["audit", "verify", "--key", key, "--json"],
        &[audit.as_path()],
    );
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["unanchored"], 0, "{report}");
}

/// A disk budget for the trail (finding 3): the fill is a metric, `fedgate run` warns at 80% and
/// at 90%, and at the budget it refuses requests (fail closed) before the disk itself is full,
/// leaving an intact trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_warns_before_its_budget_and_refuses_at_it() {
    let site = Site::with("rotate_bytes = 65536\nbudget_bytes = 262144\n");
    let mut run = BrokerProcess::spawn(&site.config, "budget").await;
    let mut socket = site.socket(&run).await;
    // Refusals fill the trail up to its budget (each is still refused when it cannot be
    // recorded)...
    let audit = site.audit();
    let trail_bytes = || -> u64 {
        fedgate::audit::review::trail(&audit)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let mut n = 0;
    while trail_bytes() < 262_144 - 2048 {
        n += 1;
        assert!(
            n < 5000,
            "the trail stopped growing at {} bytes",
            trail_bytes()
        );
        let (_, end) = rpc(
            &mut socket,
            json!({"type":"rpc","id":format!("b{n}"),"collective":"london","agent":"echo","action":"say"}),
        )
        .await;
        assert_eq!(end["type"], "error", "{end}");
    }
    for extra in 0..20 {
        rpc(
            &mut socket,
            json!({"type":"rpc","id":format!("x{extra}"),"collective":"london","agent":"echo","action":"say"}),
        )
        .await;
    }
    // ... then an allowed request is refused, because it cannot be recorded.
    let (_, end) = rpc(
        &mut socket,
        json!({"type":"rpc","id":"allowed","collective":"london","agent":"rpcutil","action":"ping","timeout_ms":1000}),
    )
    .await;
    assert_eq!(end["code"], "audit_failed", "{end}");
    let logs = run.logs().join("\n");
    for level in ["80%", "90%"] {
        assert!(
            logs.contains(&format!("over {level} full of its budget")),
            "{logs}"
        );
    }
    assert!(logs.contains("budget of 262144 bytes is spent"), "{logs}");
    let trail = fedgate::audit::review::trail(&site.audit());
    let bytes: u64 = trail
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(bytes <= 262_144 + 4096, "{bytes} bytes");

    // The runbook: the rotated files but the newest go to the archive. The same process finds
    // the room without a restart (it counts the files again before it refuses).
    let archive = site.dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let rotated = &trail[..trail.len() - 1];
    let rotated = &rotated[..rotated.len() - 1];
    assert!(!rotated.is_empty(), "{trail:?}");
    let mut archived = Vec::new();
    for file in rotated {
        let to = archive.join(file.file_name().unwrap());
        std::fs::rename(file, &to).unwrap();
        archived.push(to);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, end) = rpc(
        &mut socket,
        json!({"type":"rpc","id":"after-archive","collective":"london","agent":"rpcutil","action":"ping","timeout_ms":1000}),
    )
    .await;
    assert_ne!(end["code"], "audit_failed", "{end}");
    run.terminate().await;

    // The archive and what is left on the server are one intact chain.
    let key = site.checkpoint_pub.to_str().unwrap();
    let mut files = archived;
    files.extend(fedgate::audit::review::trail(&site.audit()));
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let (code, out) = run_cli(&["audit", "verify", "--key", key], &paths);
    assert_eq!(code, 0, "{out}");
}

/// Records and the answers callers get name rules relative to their configured place
/// (`rpcutil.policy:1`, `identity.toml#1`), never by a server path (finding 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_answers_carry_no_server_paths() {
    let site = Site::new();
    let mut run = BrokerProcess::spawn(&site.config, "paths").await;
    let mut socket = site.socket(&run).await;
    let mut answers = Vec::new();
    for (id, agent, action) in [("p1", "rpcutil", "ping"), ("e1", "echo", "say")] {
        let (replies, end) = rpc(
            &mut socket,
            json!({"type":"rpc","id":id,"collective":"london","agent":agent,"action":action,"timeout_ms":1000}),
        )
        .await;
        answers.push(end.to_string());
        answers.extend(replies.iter().map(|r| r.to_string()));
    }
    run.terminate().await;

    let dir = site.dir.path().display().to_string();
    let trail = std::fs::read_to_string(site.audit()).unwrap();
    let allowed = read(&site.audit())
        .into_iter()
        .find(|r| r.event.decision == Some(fedgate::audit::Verdict::Allow))
        .expect("the ping was allowed");
    assert!(
        allowed.event.reason.contains("mapped by identity.toml#"),
        "{}",
        allowed.event.reason
    );
    assert!(
        !trail.contains(&dir),
        "a record names a server path: {trail}"
    );
    for answer in &answers {
        assert!(
            !answer.contains(&dir),
            "an answer names a server path: {answer}"
        );
    }
}
