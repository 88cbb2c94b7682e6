//! Logins and revoked tokens at a real `fedgate run` edge: a flood of made-up user names from
//! one address does not turn away a real user's logins from another (each address is
//! rate-limited, and password checks are queued fairly per address), and a token the users file
//! revokes is refused at the upgrade and closes the sockets it holds open within seconds, while
//! other users' sockets keep working.

mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fedgate::edge::auth::{TokenKeys, hash_password};
use fedgate::edge::client::{Connect, WsClient, WsError, login};
use serde_json::json;
use support::{BrokerProcess, EDGE_USERS_TO_LONDON, Network, collective_block, gate_block};

const NODES: usize = 3;
const PASSWORD: &str = "correct horse";
/// The real user's address, and the flood's (Linux routes all of 127/8 to lo).
const REAL: &str = "127.0.0.1";
const FLOOD: &str = "127.0.0.2";

struct Edge {
    _london: Network,
    _fleet: fedgate_dev::fleet::Fleet,
    dir: tempfile::TempDir,
    process: BrokerProcess,
    keys: TokenKeys,
    hash: String,
}

impl Edge {
    /// An edge whose users file holds alice and carol (both with [`PASSWORD`]); `extra` is
    /// more of `[edge]`.
    async fn start(extra: &str) -> Edge {
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("identity.toml");
        std::fs::write(&rules, EDGE_USERS_TO_LONDON).unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let hash = hash_password(PASSWORD).unwrap();
        let edge = Edge::write_users_in(&dir, &hash, "");
        let text = format!(
            "[instance]\nname = \"logins\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\nusers = {edge:?}\n{extra}\n",
            gate_block(
                dir.path(),
                &[("rpcutil.policy", "policy default allow\n")],
                ""
            ),
            collective_block("collectives.london", &london),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let process = BrokerProcess::spawn(&config, "logins").await;
        Edge {
            _london: london,
            _fleet: fleet,
            dir,
            process,
            keys: TokenKeys::load(&key).unwrap(),
            hash,
        }
    }

    /// Writes the users file: alice and carol with `hash`, then `more`.
    fn write_users_in(dir: &tempfile::TempDir, hash: &str, more: &str) -> PathBuf {
        let path = dir.path().join("users.toml");
        let text = format!(
            "[users.alice]\npassword = {hash:?}\n\n[users.carol]\npassword = {hash:?}\n\n{more}"
        );
        // Replaced whole, as an editor or a deploy tool does.
        let staging = dir.path().join("users.toml.new");
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, &path).unwrap();
        path
    }

    fn write_users(&self, text: &str) {
        let path = self.dir.path().join("users.toml");
        let staging = self.dir.path().join("users.toml.new");
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, &path).unwrap();
    }

    fn from(&self, address: &str) -> Connect {
        Connect {
            url: self.process.edge.clone().expect("an edge"),
            local_address: Some(address.parse::<IpAddr>().unwrap()),
            ..Connect::default()
        }
    }
}

/// The flood tests one at a time: each floods the machine's two cores.
static FLOODING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Logins of made-up users from [`FLOOD`], `workers` at a time, until `stop`; counts them.
fn flood(
    edge: &Edge,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..workers)
        .map(|w| {
            let connect = edge.from(FLOOD);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("nobody-{w}-{sent}");
                    let answer = login(&connect, &user, "guess").await;
                    sent += 1;
                    // A login turned away at once is tried again a little later: the flood
                    // keeps every password check it can get busy, but does not just burn the
                    // small test machine's CPU on refusals.
                    if !matches!(answer, Ok((401, _))) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                sent
            })
        })
        .collect()
}

/// `n` logins of alice from [`REAL`], one after another, while the flood runs; their statuses.
async fn real_logins(edge: &Edge, n: usize) -> Vec<u16> {
    let connect = edge.from(REAL);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let (status, answer) = login(&connect, "alice", PASSWORD).await.unwrap();
        if status == 200 {
            assert_eq!(answer["caller"], "up=alice", "{answer}");
        } else {
            eprintln!("alice's login: {status} {answer}");
        }
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_from_one_address_does_not_turn_away_another_addresses_logins() {
    let _one_flood = FLOODING.lock().await;
    let edge = Edge::start("").await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(&edge, 16, &stop);
    // Let the flood take every password check there is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses = real_logins(&edge, 5).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for flooder in flooders {
        sent += flooder.await.unwrap();
    }
    assert_eq!(statuses, [200; 5], "alice's logins during the flood");
    // The flood was turned away by its address's rate: of its logins, only its burst (10) and
    // rate (30 a minute) had their passwords checked.
    let refused = edge
        .process
        .counter(
            "fedgate_edge_login_refused_total",
            &[("reason", "source_rate")],
        )
        .await;
    let checked = edge
        .process
        .counter("fedgate_edge_logins_total", &[("result", "refused")])
        .await;
    assert!(refused > 0.0, "none of {sent} flood logins was refused");
    assert!(
        checked <= 16.0,
        "{checked} of {sent} flood logins were checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_checks_are_queued_fairly_per_address_when_the_rate_allows_a_flood() {
    // An address rate high enough for the flood: only the fair queue keeps alice served.
    let _one_flood = FLOODING.lock().await;
    let edge =
        Edge::start("login_rate_per_address = 1000000\nlogin_burst_per_address = 1000000\n").await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(&edge, 16, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let statuses = real_logins(&edge, 5).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    assert_eq!(statuses, [200; 5], "alice's logins during the flood");
    // Each waits for a password check or two of the flood's, not for its queue.
    assert!(
        took < Duration::from_secs(60),
        "alice's logins took {took:?}"
    );
    // The flood waited behind itself: beyond its queue it was turned away.
    let turned_away = edge
        .process
        .counter(
            "fedgate_edge_login_refused_total",
            &[("reason", "source_queue")],
        )
        .await;
    assert!(turned_away > 0.0, "the flood never filled its queue");
}

/// The `jti` of a token (its payload is not checked here).
fn jti(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

fn ping(id: &str) -> serde_json::Value {
    json!({"type":"rpc","id":id,"collective":"london","agent":"rpcutil","action":"ping","limit":NODES,"timeout_ms":5000})
}

async fn pings(client: &mut WsClient, id: &str) {
    let done = client.call(&ping(id), |_| {}).await.unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["responses"], NODES, "{done}");
}

/// The close code and reason the server ends `client` with, within `limit`.
async fn closed_within(client: &mut WsClient, limit: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    let ended = tokio::time::timeout(limit, async {
        loop {
            match client.next().await {
                Ok(_) => continue,
                Err(WsError::Closed { code, reason }) => return (code, reason),
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the socket was still open after {limit:?}"));
    (ended.0, ended.1, started.elapsed())
}

/// A socket with `token`.
async fn socket(edge: &Edge, token: &str) -> Result<WsClient, WsError> {
    WsClient::connect(&Connect {
        token: Some(token.to_string()),
        ..edge.from(REAL)
    })
    .await
}

async fn password_token(edge: &Edge, user: &str) -> String {
    let (status, answer) = login(&edge.from(REAL), user, PASSWORD).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_the_users_file_revokes_is_refused_and_its_open_sockets_are_closed() {
    let edge = Edge::start("").await;
    let alice = password_token(&edge, "alice").await;
    let carol = password_token(&edge, "carol").await;
    // bob is not in the users file: his token comes from `fedgate token issue`.
    let bob = edge
        .keys
        .issue("bob", Duration::from_secs(600), None, SystemTime::now())
        .unwrap();
    let mut alice_socket = socket(&edge, &alice).await.unwrap();
    let mut carol_socket = socket(&edge, &carol).await.unwrap();
    let mut bob_socket = socket(&edge, &bob).await.unwrap();
    pings(&mut alice_socket, "a1").await;
    pings(&mut carol_socket, "c1").await;
    pings(&mut bob_socket, "b1").await;

    // Alice's token is revoked by its id.
    let revoked = jti(&alice);
    let users = |more: &str| {
        format!(
            "[users.alice]\npassword = {:?}\n\n[users.carol]\npassword = {:?}\n\n{more}",
            edge.hash, edge.hash
        )
    };
    edge.write_users(&users(&format!("[revoked]\njti = [{revoked:?}]\n")));
    let (code, reason, took) = closed_within(&mut alice_socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(took < Duration::from_secs(5));
    match socket(&edge, &alice).await {
        Err(WsError::Refused { status, body }) => {
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("revoked"), "{body}");
        }
        other => panic!(
            "a revoked token opened a socket: {:?}",
            other.map(|c| c.welcome)
        ),
    }
    // Everyone else is served as before, alice too with a new token.
    pings(&mut carol_socket, "c2").await;
    pings(&mut bob_socket, "b2").await;
    let mut again = socket(&edge, &password_token(&edge, "alice").await)
        .await
        .unwrap();
    pings(&mut again, "a2").await;

    // Carol leaves the users file: her password token goes with her; bob's, from `token
    // issue`, is revoked by user.
    edge.write_users(&format!(
        "[users.alice]\npassword = {:?}\n\n[revoked]\njti = [{revoked:?}]\nusers = [\"bob\"]\n",
        edge.hash
    ));
    let (code, reason, _) = closed_within(&mut carol_socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(reason.contains("no longer in the users file"), "{reason}");
    let (code, _, _) = closed_within(&mut bob_socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4002);
    pings(&mut again, "a3").await;

    // Each refusal is counted, logged with the token's id (never the token) and recorded.
    let counted = edge
        .process
        .counter("fedgate_edge_revoked_total", &[])
        .await;
    assert_eq!(counted, 4.0, "3 sockets closed and 1 upgrade refused");
    let logs = edge.process.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("revoked token refused") && l.contains(&revoked)),
        "no log line with the jti"
    );
    assert!(
        !logs.iter().any(|l| l.contains(&alice)),
        "a token was logged"
    );
    let records = support::audit_records(&edge.dir.path().join("audit/audit.log"));
    let recorded: Vec<_> = records
        .iter()
        .filter(|r| r.event.code == "token_revoked")
        .collect();
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert!(recorded.iter().any(
        |r| r.event.caller.as_deref() == Some("up=alice") && r.event.reason.contains(&revoked)
    ));
}
