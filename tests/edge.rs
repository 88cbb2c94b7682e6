//! The WebSocket edge in process, against a real TLS nats-server and a simulated fleet: token
//! and client-certificate sockets, the JSON protocol end to end, and each refusal's error.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedgate::audit::{Kind, Verdict};
use fedgate::config::Config;
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::{Dispatcher, Edge};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Network, audit_records, gate_block, network_block, realm};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const NODES: usize = 500;

const RULES: &str = r#"
[[rule]]
from = "edge"
to = ["london"]
glob = "up=*"
as = "choria=$1.mcollective"

[[rule]]
from = "edge"
to = ["london"]
glob = "choria=*.mcollective"
as = "$0"
"#;

const RPCUTIL: &str = "policy default deny\n\
    allow\tchoria=alice.mcollective\tping\t*\t*\n\
    allow\tchoria=carol.mcollective\tping\t*\t*\n";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Gateway {
    london: Network,
    dir: tempfile::TempDir,
    keys: TokenKeys,
    edge: Option<Edge>,
    url: String,
}

impl Gateway {
    async fn start(extra: &str) -> Gateway {
        let london = Network::start("london");
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let edge_pki = realm("edge");
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nname = \"edge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\
             [edge]\nlisten = \"127.0.0.1:0\"\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n\
             origins = [\"https://ops.example\"]\ntoken_key = {key:?}\n{extra}\n",
            gate_block(dir.path(), &[("rpcutil.policy", RPCUTIL)], ""),
            network_block(
                "collectives.london",
                &london,
                &format!(
                    "signer = {{ certificate = {:?}, key = {:?} }}",
                    privileged.cert, privileged.key
                )
            ),
            edge_pki.ca,
            edge_pki.server.cert,
            edge_pki.server.key,
        );
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let gate = fedgate::federation::open_gate(&config, "edge", "edge1")
            .await
            .unwrap();
        let dispatcher = Dispatcher::connect(&config, gate, "edge1").await.unwrap();
        let edge = Edge::start(&config, dispatcher, None).await.unwrap();
        let url = format!("wss://localhost:{}/ws", edge.local_addr().port());
        Gateway {
            london,
            dir,
            keys: TokenKeys::load(&key).unwrap(),
            edge: Some(edge),
            url,
        }
    }

    fn token(&self, user: &str, ttl: Duration) -> String {
        self.keys.issue(user, ttl, None, SystemTime::now()).unwrap()
    }

    fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }
}

/// TLS trusting the edge CA, with the edge certificate of `client_cert` for mTLS.
fn tls(client_cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    let edge = realm("edge");
    let identity = client_cert.map(|user| {
        let pair = &edge.users[user];
        (pair.cert.clone(), pair.key.clone())
    });
    Arc::new(fedgate::nats::tls_config(&edge.ca, identity.as_ref()).unwrap())
}

/// Opens a socket; Err carries the HTTP status of a refused upgrade.
async fn open(
    url: &str,
    token: Option<&str>,
    cert: Option<&str>,
    origin: Option<&str>,
) -> Result<Socket, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls(cert));
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
        .await
    {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("connect: {err}"),
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// The code of the close frame the server sends next (other messages are skipped).
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Sends an rpc and collects replies until `done` or `error`.
async fn rpc(socket: &mut Socket, request: Value) -> (Vec<Value>, Value) {
    send(socket, request).await;
    let mut replies = Vec::new();
    loop {
        let message = next_json(socket).await;
        match message["type"].as_str() {
            Some("reply") => replies.push(message),
            Some("done" | "error") => return (replies, message),
            _ => panic!("unexpected {message}"),
        }
    }
}

fn ping(id: &str) -> Value {
    json!({"type":"rpc","id":id,"collective":"london","agent":"rpcutil","action":"ping","timeout_ms":20000,"limit":NODES})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_and_certificate_clients_ping_the_fleet() {
    let gateway = Gateway::start("").await;
    let fleet = gateway.london.start_fleet(NODES).await;

    // A token user: up=alice maps to choria=alice.mcollective, which policy allows to ping.
    let token = gateway.token("alice", Duration::from_secs(300));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    let welcome = next_json(&mut socket).await;
    assert_eq!(
        (
            welcome["type"].as_str(),
            welcome["caller"].as_str(),
            welcome["method"].as_str()
        ),
        (Some("welcome"), Some("up=alice"), Some("token"))
    );
    let (replies, done) = rpc(&mut socket, ping("c1")).await;
    assert_eq!(replies.len(), NODES, "{done}");
    assert_eq!(
        (
            done["type"].as_str(),
            done["id"].as_str(),
            done["responses"].as_u64(),
            done["ok"].as_u64(),
            done["failed"].as_u64()
        ),
        (
            Some("done"),
            Some("c1"),
            Some(NODES as u64),
            Some(NODES as u64),
            Some(0)
        )
    );
    assert!(
        replies
            .iter()
            .all(|r| r["id"] == "c1" && r["statuscode"] == 0 && r["data"]["pong"].is_number())
    );
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        NODES as u64
    );

    // A client certificate from the edge CA: choria=carol.mcollective... is not a user of the
    // PKI, so alice's certificate is used; it speaks as choria=alice.mcollective.
    let mut socket = open(&gateway.url, None, Some("alice"), None).await.unwrap();
    let welcome = next_json(&mut socket).await;
    assert_eq!(
        (welcome["caller"].as_str(), welcome["method"].as_str()),
        (Some("choria=alice.mcollective"), Some("certificate"))
    );
    let (replies, done) = rpc(&mut socket, ping("c2")).await;
    assert_eq!(
        (replies.len(), done["responses"].as_u64()),
        (NODES, Some(NODES as u64))
    );

    // Both decisions and their completions are in the audit trail.
    drop(socket);
    let records = audit_records(&gateway.audit_file());
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 2);
    assert_eq!(allowed[0].event.edge, "websocket");
    assert_eq!(allowed[0].event.caller.as_deref(), Some("up=alice"));
    assert_eq!(
        allowed[0].event.mapped_caller.as_deref(),
        Some("choria=alice.mcollective")
    );
    assert_eq!(
        allowed[0].event.request_id.as_deref(),
        done_requestid(&records, 0)
    );
    let completions: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Completion)
        .collect();
    assert_eq!(completions.len(), 2);
    assert_eq!(completions[0].event.replies, Some(NODES as u64));
    assert_eq!(completions[0].event.links, [allowed[0].id.clone()]);
    gateway.edge.unwrap().shutdown().await;
}

fn done_requestid(records: &[fedgate::audit::Record], n: usize) -> Option<&str> {
    records
        .iter()
        .filter(|r| r.kind == Kind::Completion)
        .nth(n)
        .and_then(|r| r.event.request_id.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_has_its_own_error() {
    let gateway = Gateway::start("rate_per_second = 2\nrate_burst = 3\n").await;
    let _fleet = gateway.london.start_fleet(4).await;

    // Upgrades: a wrong Origin, an expired token, a forged token, no credentials without Origin.
    let token = gateway.token("alice", Duration::from_secs(300));
    assert_eq!(
        open(
            &gateway.url,
            Some(&token),
            None,
            Some("https://evil.example")
        )
        .await
        .err(),
        Some(403)
    );
    let expired = gateway
        .keys
        .issue(
            "alice",
            Duration::from_secs(60),
            None,
            SystemTime::now() - Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(
        open(&gateway.url, Some(&expired), None, None).await.err(),
        Some(401)
    );
    let forged = TokenKeys::load(&{
        let path = gateway.dir.path().join("other.key");
        std::fs::write(&path, TokenKeys::generate_pem().unwrap()).unwrap();
        path
    })
    .unwrap()
    .issue("alice", Duration::from_secs(60), None, SystemTime::now())
    .unwrap();
    assert_eq!(
        open(&gateway.url, Some(&forged), None, None).await.err(),
        Some(401)
    );
    assert_eq!(open(&gateway.url, None, None, None).await.err(), Some(403));

    // A browser with an allowed Origin authenticates with its first message.
    let mut socket = open(&gateway.url, None, None, Some("https://ops.example"))
        .await
        .unwrap();
    send(&mut socket, json!({"type":"auth","token":token})).await;
    assert_eq!(next_json(&mut socket).await["type"], "welcome");

    // Bad JSON, an unknown collective, a denied action.
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    let error = next_json(&mut socket).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("invalid"))
    );
    let (_, error) = rpc(
        &mut socket,
        json!({"type":"rpc","id":"u1","collective":"atlantis","agent":"rpcutil","action":"ping"}),
    )
    .await;
    assert_eq!(
        (error["id"].as_str(), error["code"].as_str()),
        (Some("u1"), Some("unknown_collective"))
    );
    let (_, error) = rpc(&mut socket, json!({"type":"rpc","id":"d1","collective":"london","agent":"rpcutil","action":"inventory"})).await;
    assert_eq!(error["code"], "denied", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rpcutil.policy"),
        "{error}"
    );

    // Rate limit: the burst of 3 is spent (u1, d1 and the next), then requests are refused.
    // Six at once: the bucket refills at 2/s, so at least two are refused.
    for n in 0..6 {
        send(&mut socket, json!({"type":"rpc","id":format!("r{n}"),"collective":"london","agent":"rpcutil","action":"ping","timeout_ms":500})).await;
    }
    let (mut ended, mut limited) = (0, 0);
    while ended < 6 {
        let message = next_json(&mut socket).await;
        match message["type"].as_str() {
            Some("done") => ended += 1,
            Some("error") => {
                ended += 1;
                assert_eq!(message["code"], "rate_limited", "{message}");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(limited >= 2, "{limited}");

    // An oversize frame closes the socket with 1009.
    let big = "x".repeat(70 * 1024);
    socket
        .send(Message::Text(
            json!({"type":"rpc","id":"big","agent":"a","action":"b","data":{"x":big}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1009);

    // Refusals with a known identity are audited.
    let records = audit_records(&gateway.audit_file());
    let codes: Vec<&str> = records
        .iter()
        .filter(|r| r.event.decision == Some(Verdict::Deny))
        .map(|r| r.event.code.as_str())
        .collect();
    assert!(codes.contains(&"unknown_collective"), "{codes:?}");
    assert!(codes.contains(&"denied"), "{codes:?}");
    assert!(codes.contains(&"rate_limited"), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires() {
    let gateway = Gateway::start("").await;
    let token = gateway.token("alice", Duration::from_secs(2));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    assert_eq!(close_code(&mut socket).await, 4001);
}
