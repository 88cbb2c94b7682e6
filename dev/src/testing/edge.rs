//! The WebSocket edge in process for tests: a gateway with one collective, sockets, and signed
//! requests as a Choria client makes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedgate::config::Config;
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, SignedCall, sign_request, signed_message};
use fedgate::edge::{Dispatcher, Edge};
use fedgate::gateway::ReplayGuard;
use fedgate::security::{CallerId, Now, Signer};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::Filter;
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{EDGE_USERS_TO_LONDON, Network, collective_block, gate_block, realm};

/// Edge users map by name; edge certificates keep theirs.
pub const CERTIFICATE_RULE: &str = r#"
[[rule]]
from = "edge"
to = ["london"]
glob = "choria=*.mcollective"
as = "$0"
"#;

/// Rules for a gateway that also has the collective tokyo.
pub const TOKYO_RULES: &str = r#"
[[rule]]
from = "edge"
to = ["tokyo"]
glob = "up=alice"
as = "choria=alice.mcollective"
"#;

/// The rpcutil policy: alice and carol of london may ping.
pub const RPCUTIL: &str = "policy default deny\n\
    allow\tchoria=alice.mcollective\tping\t*\t*\n\
    allow\tchoria=carol.mcollective\tping\t*\t*\n";

/// The echo policy: alice of london may do anything.
pub const ECHO: &str = "policy default deny\nallow\tchoria=alice.mcollective\t*\t*\t*\n";

/// A client socket to the edge.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket edge in process, in front of the london collective, with its work folder.
pub struct Gateway {
    /// The london collective's nats-server.
    pub london: Network,
    /// The config, policies, users and audit trail.
    pub dir: tempfile::TempDir,
    /// The edge's token key.
    pub keys: TokenKeys,
    /// The running edge; taken to stop it.
    pub edge: Option<Edge>,
    /// Its `ws://` URL.
    pub url: String,
}

impl Gateway {
    /// Starts an edge with `extra` appended to its config.
    pub async fn start(extra: &str) -> Gateway {
        Gateway::start_with("", "", extra).await
    }

    /// `top` is more of the config's tables, `rules` more identity rules, `extra` more of
    /// `[edge]`.
    pub async fn start_with(top: &str, rules: &str, extra: &str) -> Gateway {
        Gateway::start_config(top, rules, extra, true).await
    }

    /// [`Gateway::start_with`]; `edge_ca` says whether `[edge]` has a `ca`.
    pub async fn start_config(top: &str, rules: &str, extra: &str, edge_ca: bool) -> Gateway {
        Gateway::start_guarded(top, rules, extra, edge_ca, None).await
    }

    /// [`Gateway::start_config`] with `guard` in place of the replay guard of the config.
    pub async fn start_guarded(
        top: &str,
        rules: &str,
        extra: &str,
        edge_ca: bool,
        guard: Option<ReplayGuard>,
    ) -> Gateway {
        let london = Network::start("london");
        let dir = tempfile::tempdir().unwrap();
        let rules_file = dir.path().join("identity.toml");
        std::fs::write(
            &rules_file,
            format!("{EDGE_USERS_TO_LONDON}{CERTIFICATE_RULE}{rules}"),
        )
        .unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let edge_pki = realm("edge");
        let text = format!(
            "[instance]\nname = \"edge1\"\n\n[identity]\nrules = {rules_file:?}\n\n{}{}{top}\n\
             [edge]\nlisten = \"127.0.0.1:0\"\n{}tls = {{ certificate = {:?}, key = {:?} }}\n\
             origins = [\"https://ops.example\"]\ntoken_key = {key:?}\n{extra}\n",
            gate_block(
                dir.path(),
                &[("rpcutil.policy", RPCUTIL), ("echo.policy", ECHO)],
                ""
            ),
            collective_block("collectives.london", &london),
            if edge_ca {
                format!("ca = {:?}\n", edge_pki.ca)
            } else {
                String::new()
            },
            edge_pki.server.cert,
            edge_pki.server.key,
        );
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let mut gate = fedgate::gateway::open_gate(&config, "edge", "edge1")
            .await
            .unwrap();
        if let Some(guard) = guard {
            let opened = Arc::into_inner(gate).expect("nothing else holds a gate just opened");
            let lifetime = opened.lifetime;
            gate = Arc::new(opened.with_replay(guard, lifetime));
        }
        let dispatcher = Dispatcher::connect(&config, gate, "edge1").await.unwrap();
        let edge = Edge::start(&config, dispatcher).await.unwrap();
        let url = format!("wss://localhost:{}/ws", edge.local_addr().port());
        Gateway {
            london,
            dir,
            keys: TokenKeys::load(&key).unwrap(),
            edge: Some(edge),
            url,
        }
    }

    /// A token for `user`, valid for `ttl`.
    pub fn token(&self, user: &str, ttl: Duration) -> String {
        self.keys.issue(user, ttl, None, SystemTime::now()).unwrap()
    }

    /// The edge's audit trail.
    pub fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }
}

/// TLS trusting the edge CA, with the edge certificate of `client_cert` for mTLS.
pub fn tls(client_cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    let edge = realm("edge");
    let identity = client_cert.map(|user| {
        let pair = &edge.users[user];
        (pair.cert.clone(), pair.key.clone())
    });
    Arc::new(fedgate::nats::tls_config(&edge.ca, identity.as_ref()).unwrap())
}

/// Opens a socket; Err carries the HTTP status of a refused upgrade.
pub async fn open(
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

/// The next text frame on `socket` as JSON (other frames are skipped; a close panics), within 30 s.
pub async fn next_json(socket: &mut Socket) -> Value {
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
pub async fn close_code(socket: &mut Socket) -> u16 {
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

/// Sends `value` as a text frame.
pub async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Sends an rpc and collects replies until `done` or `error`.
pub async fn rpc(socket: &mut Socket, request: Value) -> (Vec<Value>, Value) {
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

/// The socket options of the library client for this gateway.
pub fn connect_options(gateway: &Gateway) -> Connect {
    Connect {
        url: gateway.url.clone(),
        ca: Some(realm("edge").ca.clone()),
        ..Connect::default()
    }
}

/// A `rpcutil ping` to london signed by `user` of `realm_name`, as a Choria client signs it.
pub fn signed_ping(realm_name: &str, user: &str, id: &str) -> (Value, String) {
    signed_ping_as(realm_name, user, None, id, Now::system(), 60)
}

/// A signed `rpcutil ping` to london by `user` of `realm_name` speaking as `caller` (default
/// `choria=<certname>`), made at `at` with `ttl`; the message and its request id.
pub fn signed_ping_as(
    realm_name: &str,
    user: &str,
    caller: Option<&str>,
    id: &str,
    at: Now,
    ttl: i64,
) -> (Value, String) {
    let pair = &realm(realm_name).users[user];
    let signer = Signer::from_files(&pair.cert, &pair.key).unwrap();
    let caller = match caller {
        Some(caller) => CallerId::parse(caller).unwrap(),
        None => CallerId::for_certname(signer.certname()).unwrap(),
    };
    let call = SignedCall {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        data: Map::new(),
        filter: Filter::default(),
        ttl,
    };
    let secure = sign_request(&signer, &caller, "script.example", &call, at).unwrap();
    let requestid = secure
        .request(&Limits::default())
        .unwrap()
        .envelope
        .requestid;
    let collect = json!({"limit": 4, "timeout_ms": 10000});
    let Value::Object(collect) = collect else {
        unreachable!()
    };
    (signed_message(id, &secure, collect), requestid)
}

/// One `GET path` over the edge's TLS, by hand, with extra header lines (each ending `\r\n`):
/// the response's head (status line and headers, lower-cased) and its body.
pub async fn https_get(gateway: &Gateway, path: &str, headers: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.edge.as_ref().unwrap().local_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls(None));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    (head, body)
}

/// `GET /api/realms` with a bearer token.
pub async fn reqwest_realms(gateway: &Gateway, token: &str) -> Value {
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (head, body) = https_get(gateway, "/api/realms", &auth).await;
    serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{head}"))
}
