//! A real user's logins and pings while the edge is flooded, next to the same user with no
//! flood, in phases of one `fedgate run`; and how fast each flood grows the audit trail.
//!
//! The user alice logs in (`POST /login`) and pings a simulated collective over her socket from
//! 127.0.0.1, at a steady pace, in every phase. The floods come from 127.0.0.2, as another host:
//! - logins: made-up user names, as fast as the edge answers; the edge's address rate is lifted
//!   (`login_rate_per_address`), so the one flooding address stands for the many addresses of
//!   a distributed flood and reaches the password checks;
//! - signed garbage: sockets without credentials (`fedgate.v1.signed`) sending signed requests
//!   whose signature does not verify and whose claimed caller id is 8,000 characters long;
//! - a token holder: a valid token sending requests that policy denies, as fast as answered.
//!
//! Every other limit is the edge's default (request rate 20 a second per identity, and per
//! address for signed requests), since the floods are what those limits are for.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::edge::EdgeProcess;
use super::{BenchError, setup_err};
use crate::devpki::DevPki;
use fedgate::edge::auth::{TokenKeys, hash_password};
use fedgate::edge::client::{Connect, SignedCall, WsClient, login, sign_request, signed_message};
use fedgate::security::{CallerId, Now, Signer};
use fedgate::wire::choria_v1::Filter;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// Simulated nodes answering each ping.
    pub nodes: usize,
    /// Seconds each phase lasts.
    pub seconds: f64,
    /// Concurrent flooders of each kind.
    pub flooders: usize,
    /// The `fedgate` binary that runs the edge.
    pub exe: PathBuf,
}

/// What alice saw in one phase, and how fast the trail grew.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `no flood`, `login flood`, `signed garbage` or `token holder`.
    pub name: String,
    /// Alice's logins, and how many were answered 200.
    pub logins: u64,
    /// Of those, answered with a token.
    pub logins_ok: u64,
    /// `logins_ok / logins`.
    pub login_success: f64,
    /// Median login time, milliseconds.
    pub login_p50_ms: f64,
    /// 99th percentile login time, milliseconds.
    pub login_p99_ms: f64,
    /// Alice's pings, and how many did not get every node's reply.
    pub pings: u64,
    /// Pings that failed.
    pub pings_failed: u64,
    /// Median ping time, milliseconds.
    pub ping_p50_ms: f64,
    /// 99th percentile ping time, milliseconds.
    pub ping_p99_ms: f64,
    /// `ping_p99_ms` over the no-flood phase's.
    pub ping_p99_ratio: f64,
    /// Login p99 over the no-flood phase's.
    pub login_p99_ratio: f64,
    /// Audit trail growth, bytes a minute (alice's own records included).
    pub audit_bytes_per_minute: f64,
    /// `audit_bytes_per_minute` over the no-flood phase's.
    pub audit_ratio: f64,
    /// Flood messages or logins sent.
    pub flood_sent: u64,
}

/// The benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct FloodReport {
    /// Seconds each phase lasted.
    pub seconds: f64,
    /// One row per phase, the no-flood baseline first.
    pub phases: Vec<Phase>,
}

/// The floods, one per phase after the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    None,
    Logins,
    SignedGarbage,
    TokenHolder,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::None => "no flood",
            Flood::Logins => "login flood",
            Flood::SignedGarbage => "signed garbage",
            Flood::TokenHolder => "token holder",
        }
    }
}

const PASSWORD: &str = "alice's password";
const REAL: &str = "127.0.0.1";
const FLOODER: &str = "127.0.0.2";
/// Alice's pace: under the default 20 requests a second per identity.
const PING_EVERY: Duration = Duration::from_millis(100);
const LOGIN_EVERY: Duration = Duration::from_millis(250);

/// Runs the benchmark with its files under `work_dir`.
pub async fn run(work_dir: &Path, options: &FloodOptions) -> Result<FloodReport, BenchError> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (pki, nats) = super::tls_collective(work_dir, false)?;
    let _fleet = super::fleet_on(&pki, &nats, options.nodes).await?;
    let (config, key) = write_config(work_dir, &pki, nats.url())?;
    let edge = EdgeProcess::start(&options.exe, &config).await?;
    let keys = TokenKeys::load(&key).map_err(setup_err)?;
    let token = |user: &str| {
        keys.issue(user, Duration::from_secs(3600), None, SystemTime::now())
            .map_err(setup_err)
    };
    let from = |address: &str| -> Result<Connect, BenchError> {
        Ok(Connect {
            url: edge.url.clone(),
            local_address: Some(address.parse::<IpAddr>().map_err(setup_err)?),
            ..Connect::default()
        })
    };
    let alice = Alice {
        socket: Connect {
            token: Some(token("alice")?),
            ..from(REAL)?
        },
        nodes: options.nodes,
    };
    let floods = Floods {
        logins: from(FLOODER)?,
        signed: Connect {
            signed_only: true,
            ..from(FLOODER)?
        },
        garbage: garbage(&pki)?,
        holder: Connect {
            token: Some(token("mallory")?),
            ..from(FLOODER)?
        },
        flooders: options.flooders,
    };
    let audit = work_dir.join("audit");
    let phase_time = Duration::from_secs_f64(options.seconds.max(1.0));
    let mut phases = Vec::new();
    for flood in [
        Flood::None,
        Flood::Logins,
        Flood::SignedGarbage,
        Flood::TokenHolder,
    ] {
        let phase = measure(&alice, &floods, flood, phase_time, &audit).await?;
        phases.push(phase);
        // Let the edge drain what the flood left queued.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    edge.stop().await;
    relate(&mut phases);
    Ok(FloodReport {
        seconds: phase_time.as_secs_f64(),
        phases,
    })
}

/// Each phase's ratios to the first (no flood).
fn relate(phases: &mut [Phase]) {
    let Some(base) = phases.first().cloned() else {
        return;
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for phase in phases {
        phase.ping_p99_ratio = ratio(phase.ping_p99_ms, base.ping_p99_ms);
        phase.login_p99_ratio = ratio(phase.login_p99_ms, base.login_p99_ms);
        phase.audit_ratio = ratio(phase.audit_bytes_per_minute, base.audit_bytes_per_minute);
    }
}

/// The measured user.
struct Alice {
    socket: Connect,
    nodes: usize,
}

/// How each flood connects, and the garbage it sends.
struct Floods {
    logins: Connect,
    signed: Connect,
    garbage: Value,
    holder: Connect,
    flooders: usize,
}

/// One phase: alice's logins and pings for `time` while `flood` runs.
async fn measure(
    alice: &Alice,
    floods: &Floods,
    flood: Flood,
    time: Duration,
    audit: &Path,
) -> Result<Phase, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooders = floods.start(flood, &stop, &sent);
    // Let the flood take hold before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit_before = dir_bytes(audit);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + time;
    let (logins, pings) = tokio::join!(
        alice_logins(&alice.socket, deadline),
        alice_pings(alice, deadline)
    );
    let elapsed = started.elapsed();
    let audit_after = dir_bytes(audit);
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let (mut login_times, logins_tried) = logins;
    let (mut ping_times, pings_tried) = pings?;
    let logins_ok = login_times.len() as u64;
    let pings_ok = ping_times.len() as u64;
    Ok(Phase {
        name: flood.name().into(),
        logins: logins_tried,
        logins_ok,
        login_success: if logins_tried > 0 {
            logins_ok as f64 / logins_tried as f64
        } else {
            0.0
        },
        login_p50_ms: quantile_ms(&mut login_times, 0.50),
        login_p99_ms: quantile_ms(&mut login_times, 0.99),
        pings: pings_tried,
        pings_failed: pings_tried - pings_ok,
        ping_p50_ms: quantile_ms(&mut ping_times, 0.50),
        ping_p99_ms: quantile_ms(&mut ping_times, 0.99),
        ping_p99_ratio: 0.0,
        login_p99_ratio: 0.0,
        audit_bytes_per_minute: audit_after.saturating_sub(audit_before) as f64 * 60.0
            / elapsed.as_secs_f64(),
        audit_ratio: 0.0,
        flood_sent: sent.load(Ordering::Relaxed),
    })
}

/// Alice's logins until `deadline`: the times of those answered with a token, and how many
/// she tried.
async fn alice_logins(from: &Connect, deadline: tokio::time::Instant) -> (Vec<Duration>, u64) {
    let mut times = Vec::new();
    let mut tried = 0;
    while tokio::time::Instant::now() < deadline {
        let started = Instant::now();
        tried += 1;
        if let Ok((200, _)) = login(from, "alice", PASSWORD).await {
            times.push(started.elapsed());
        }
        tokio::time::sleep(LOGIN_EVERY).await;
    }
    (times, tried)
}

/// Alice's pings over one socket until `deadline`: the times of those every node answered, and
/// how many she sent.
async fn alice_pings(
    alice: &Alice,
    deadline: tokio::time::Instant,
) -> Result<(Vec<Duration>, u64), BenchError> {
    let mut client = WsClient::connect(&alice.socket).await.map_err(setup_err)?;
    let (mut times, mut sent) = (Vec::new(), 0u64);
    let mut tick = tokio::time::interval(PING_EVERY);
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        sent += 1;
        let request = json!({
            "type": "rpc", "id": format!("p{sent}"), "collective": "london", "agent": "rpcutil",
            "action": "ping", "limit": alice.nodes, "timeout_ms": 10_000,
        });
        let started = Instant::now();
        match client.call(&request, |_| {}).await {
            Ok(done) if done["responses"].as_u64() == Some(alice.nodes as u64) => {
                times.push(started.elapsed());
            }
            Ok(_) => {}
            Err(err) => return Err(BenchError(format!("alice's socket: {err}"))),
        }
    }
    client.close().await;
    Ok((times, sent))
}

impl Floods {
    /// The flooders of `flood`, running until `stop`, counting what they send in `sent`.
    fn start(
        &self,
        flood: Flood,
        stop: &Arc<AtomicBool>,
        sent: &Arc<AtomicU64>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let count = if flood == Flood::None {
            0
        } else {
            self.flooders
        };
        (0..count)
            .map(|n| {
                let (stop, sent) = (stop.clone(), sent.clone());
                match flood {
                    Flood::Logins => tokio::spawn(login_flood(self.logins.clone(), n, stop, sent)),
                    Flood::SignedGarbage => tokio::spawn(socket_flood(
                        self.signed.clone(),
                        self.garbage.clone(),
                        stop,
                        sent,
                    )),
                    Flood::TokenHolder | Flood::None => tokio::spawn(socket_flood(
                        self.holder.clone(),
                        json!({"type": "rpc", "id": "", "collective": "london",
                            "agent": "rpcutil", "action": "ping", "timeout_ms": 1000}),
                        stop,
                        sent,
                    )),
                }
            })
            .collect()
    }
}

/// Logins of made-up users, one after another, until `stop`.
async fn login_flood(from: Connect, n: usize, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let answer = login(&from, &format!("nobody-{n}-{i}"), "guess").await;
        sent.fetch_add(1, Ordering::Relaxed);
        if answer.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `message` (with a fresh id each time) on one socket, each sent once the last is answered,
/// until `stop`; the socket is opened again if the edge closes it.
async fn socket_flood(from: Connect, message: Value, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = WsClient::connect(&from).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let mut message = message.clone();
            message["id"] = json!(format!("f{i}"));
            if client.call(&message, |_| {}).await.is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
        client.close().await;
    }
}

/// A `signed` message whose request claims an 8,000-character caller id and whose signature
/// therefore does not verify.
fn garbage(pki: &DevPki) -> Result<Value, BenchError> {
    let edge = pki
        .realm("edge")
        .ok_or_else(|| BenchError("no edge realm".into()))?;
    let pair = edge
        .users
        .get("bob")
        .ok_or_else(|| BenchError("no edge user bob".into()))?;
    let signer = Signer::from_files(&pair.cert, &pair.key).map_err(setup_err)?;
    let caller = CallerId::for_certname(signer.certname()).map_err(setup_err)?;
    let call = SignedCall {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        data: Map::new(),
        filter: Filter::default(),
        ttl: 60,
    };
    // Valid for an hour of flooding: the garbage is refused for its signature, not its age.
    let secure =
        sign_request(&signer, &caller, "bench", &call, Now::system()).map_err(setup_err)?;
    let mut message = signed_message("", &secure, Map::new());
    let text = message["request"]["message"]
        .as_str()
        .ok_or_else(|| BenchError("a signed request without a message".into()))?;
    let mut request: Value = serde_json::from_str(text).map_err(setup_err)?;
    let long = format!("choria={}", "x".repeat(8000));
    match request.get_mut("callerid") {
        Some(callerid) => *callerid = json!(long),
        None => request["envelope"]["callerid"] = json!(long),
    }
    message["request"]["message"] = json!(request.to_string());
    Ok(message)
}

/// Bytes of every file in `dir` (the audit file and any rotated ones).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The `q` quantile of `samples` (sorted in place), milliseconds; 0 when there are none.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    if samples.is_empty() {
        return 0.0;
    }
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at].as_secs_f64() * 1000.0
}

/// The edge's config: alice in the users file, only alice's pings allowed, signed requests
/// verified against the edge CA, the default limits but the address login rate.
fn write_config(dir: &Path, pki: &DevPki, url: &str) -> Result<(PathBuf, PathBuf), BenchError> {
    let realm = |name: &str| {
        pki.realm(name)
            .ok_or_else(|| BenchError(format!("no {name} realm")))
    };
    let (london, edge) = (realm("london")?, realm("edge")?);
    let privileged = london
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let write = |name: &str, text: &str| super::write_file(dir, name, text);
    let key = write("token.key", &TokenKeys::generate_pem().map_err(setup_err)?)?;
    let hash = hash_password(PASSWORD).map_err(setup_err)?;
    let users = write(
        "users.toml",
        &format!("[users.alice]\npassword = {hash:?}\n"),
    )?;
    let rules = write(
        "identity.toml",
        "[[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n\n\
         [[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"choria=*\"\nas = \"$0\"\n",
    )?;
    write(
        "policies/rpcutil.policy",
        "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n",
    )?;
    std::fs::create_dir_all(dir.join("audit")).map_err(setup_err)?;
    let config = write(
        "fedgate.toml",
        &format!(
            "[instance]\nname = \"bench\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n\
             [collectives.london]\nnats = [{url:?}]\nca = {:?}\n\
             tls = {{ certificate = {:?}, key = {:?} }}\n\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [edge]\nlisten = \"127.0.0.1:0\"\nca = {:?}\ntoken_key = {key:?}\nusers = {users:?}\n\
             login_rate_per_address = 1000000\nlogin_burst_per_address = 1000000\n",
            dir.join("policies"),
            dir.join("audit/audit.log"),
            london.ca,
            london.fedgate.cert,
            london.fedgate.key,
            privileged.cert,
            privileged.key,
            edge.ca,
        ),
    )?;
    Ok((config, key))
}

/// The phases as a table.
pub fn table(report: &FloodReport) -> String {
    let mut out = format!(
        "{:<15} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>12} {:>7} {:>9}\n",
        "phase",
        "logins",
        "login p50",
        "login p99",
        "x p99",
        "ping p50",
        "ping p99",
        "x p99",
        "audit B/min",
        "x audit",
        "flood"
    );
    for p in &report.phases {
        out.push_str(&format!(
            "{:<15} {:>6.0}% {:>7.1}ms {:>7.1}ms {:>7.2} {:>7.1}ms {:>7.1}ms {:>7.2} {:>12.0} {:>7.2} {:>9}\n",
            p.name,
            p.login_success * 100.0,
            p.login_p50_ms,
            p.login_p99_ms,
            p.login_p99_ratio,
            p.ping_p50_ms,
            p.ping_p99_ms,
            p.ping_p99_ratio,
            p.audit_bytes_per_minute,
            p.audit_ratio,
            p.flood_sent,
        ));
    }
    out.push_str(&format!(
        "{} s a phase; logins: alice's from {REAL} answered with a token ({} tried in all); \
         pings failed: {}\n",
        report.seconds,
        report.phases.iter().map(|p| p.logins).sum::<u64>(),
        report.phases.iter().map(|p| p.pings_failed).sum::<u64>(),
    ));
    out
}
