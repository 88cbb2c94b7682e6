//! A client of the edge's protocol, for `fedgate ws-rpc`, the benchmarks and the tests: open a
//! socket with a token, a client certificate, or none (signed requests only), send requests,
//! and collect their replies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::protocol::{SIGNED_SUBPROTOCOL, SUBPROTOCOL};
use crate::security::{CallerId, KeyError, Now, Signer};
use crate::wire::choria_v1::{Filter, Request, RequestEnvelope, RpcRequest, SecureRequest};

/// The socket type.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How to open a socket.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    /// `ws://` or `wss://…/ws`.
    pub url: String,
    /// A bearer token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// A client certificate and key from the edge CA (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The CA that issued the edge's server certificate; the system's roots when unset.
    pub ca: Option<PathBuf>,
    /// An `Origin` header, as a browser sends.
    pub origin: Option<String>,
    /// Offer `fedgate.v1.signed`: no credentials, signed requests only.
    pub signed_only: bool,
    /// Connect from this local address (on loopback, any of 127.0.0.0/8), not the default.
    pub local_address: Option<std::net::IpAddr>,
}

/// Why a socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The upgrade was refused with this HTTP status and body.
    #[error("the edge refused the socket: HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
    /// The socket closed, with the server's close code and reason when it sent one.
    #[error("the socket closed: {code} {reason}")]
    Closed {
        /// The close code; 1006 when there was no close frame.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for WsError {
    fn from(err: std::io::Error) -> Self {
        WsError::Other(format!("connecting: {err}"))
    }
}

impl From<tungstenite::Error> for WsError {
    fn from(err: tungstenite::Error) -> Self {
        match err {
            tungstenite::Error::Http(response) => WsError::Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                WsError::Closed {
                    code: 1006,
                    reason: String::new(),
                }
            }
            other => WsError::Other(other.to_string()),
        }
    }
}

/// One reply, with the time since the request was sent.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The `reply` message.
    pub message: Value,
    /// Time since the request was sent.
    pub elapsed: Duration,
}

/// A socket to the edge.
pub struct WsClient {
    socket: Socket,
    /// The `welcome` message.
    pub welcome: Value,
}

impl WsClient {
    /// Opens a socket and reads its `welcome`.
    pub async fn connect(options: &Connect) -> Result<WsClient, WsError> {
        let mut socket = open(options).await?;
        let welcome = next_message(&mut socket).await?;
        if welcome["type"] != "welcome" {
            return Err(WsError::Other(format!("expected welcome, got {welcome}")));
        }
        Ok(WsClient { socket, welcome })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Value) -> Result<(), WsError> {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await?;
        Ok(())
    }

    /// The next protocol message.
    pub async fn next(&mut self) -> Result<Value, WsError> {
        next_message(&mut self.socket).await
    }

    /// Sends a request (`rpc` or `signed`) and collects its replies until its `done` or
    /// `error`, which is returned.
    pub async fn call(
        &mut self,
        request: &Value,
        mut on_reply: impl FnMut(Reply),
    ) -> Result<Value, WsError> {
        let id = request["id"].clone();
        let started = Instant::now();
        self.send(request).await?;
        loop {
            let message = self.next().await?;
            if message["id"] != id {
                continue;
            }
            match message["type"].as_str() {
                Some("reply") => on_reply(Reply {
                    message,
                    elapsed: started.elapsed(),
                }),
                Some("done" | "error") => return Ok(message),
                _ => {}
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Some(Ok(_)) = self.socket.next().await {}
    }

    /// The socket, for callers that drive it themselves.
    pub fn into_inner(self) -> Socket {
        self.socket
    }
}

/// Opens the socket without reading anything.
pub async fn open(options: &Connect) -> Result<Socket, WsError> {
    let mut request = options.url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    let header = |value: &str| {
        value
            .parse()
            .map_err(|_| WsError::Other(format!("{value:?} is not a valid header value")))
    };
    if let Some(token) = &options.token {
        headers.insert("Authorization", header(&format!("Bearer {token}"))?);
    }
    if let Some(origin) = &options.origin {
        headers.insert("Origin", header(origin)?);
    }
    let protocol = if options.signed_only {
        SIGNED_SUBPROTOCOL
    } else {
        SUBPROTOCOL
    };
    headers.insert("Sec-WebSocket-Protocol", header(protocol)?);
    let connector = if options.url.starts_with("wss://") {
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls(
            options,
        )?)))
    } else {
        None
    };
    let Some(local) = options.local_address else {
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
                .await?;
        return Ok(socket);
    };
    let (host, port) = host_port(options, request.uri());
    let stream = connect_from(&host, port, local).await?;
    let (socket, _) =
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector).await?;
    Ok(socket)
}

/// The host and port of `uri`, the port defaulting by the scheme of `options.url`.
fn host_port(options: &Connect, uri: &tungstenite::http::Uri) -> (String, u16) {
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if options.url.starts_with("wss://") {
            443
        } else {
            80
        });
    (host.to_string(), port)
}

/// A TCP connection to `host:port` from the local address `local`.
async fn connect_from(
    host: &str,
    port: u16,
    local: std::net::IpAddr,
) -> Result<tokio::net::TcpStream, WsError> {
    let remote = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| WsError::Other(format!("{host} has no address like {local}")))?;
    let socket = match local {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    let stream = socket.connect(remote).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Largest `POST /login` answer read.
const MAX_LOGIN_ANSWER: u64 = 64 * 1024;

/// `POST /login` at the edge of `options.url` (from `options.local_address` when set, over TLS
/// for `wss://`): the HTTP status and the JSON answer (`null` when the body is not JSON).
pub async fn login(options: &Connect, user: &str, password: &str) -> Result<(u16, Value), WsError> {
    let request = options.url.as_str().into_client_request()?;
    let (host, port) = host_port(options, request.uri());
    let local = options.local_address.unwrap_or(if host.contains(':') {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    });
    let stream = connect_from(&host, port, local).await?;
    let body = json!({"user": user, "password": password}).to_string();
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = if options.url.starts_with("wss://") {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| WsError::Other(format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls(options)?));
        let stream = connector.connect(name, stream).await?;
        exchange(stream, request.as_bytes()).await?
    } else {
        exchange(stream, request.as_bytes()).await?
    };
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| WsError::Other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Writes `request` and reads the answer until the server closes the connection.
async fn exchange<S>(mut stream: S, request: &[u8]) -> Result<Vec<u8>, WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    match stream.take(MAX_LOGIN_ANSWER).read_to_end(&mut answer).await {
        // A TLS server may close without close_notify once it has answered.
        Err(_) if !answer.is_empty() => Ok(answer),
        Err(err) => Err(err.into()),
        Ok(_) => Ok(answer),
    }
}

fn tls(options: &Connect) -> Result<rustls::ClientConfig, WsError> {
    match &options.ca {
        Some(ca) => crate::nats::tls_config(ca, options.identity.as_ref())
            .map_err(|e| WsError::Other(e.to_string())),
        None => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| WsError::Other(e.to_string()))?
                .with_root_certificates(roots);
            match &options.identity {
                Some((cert, key)) => {
                    use rustls_pki_types::PrivateKeyDer;
                    use rustls_pki_types::pem::PemObject;
                    let chain = crate::security::load_certs(cert)
                        .map_err(|e| WsError::Other(e.to_string()))?;
                    let key = PrivateKeyDer::from_pem_file(key)
                        .map_err(|e| WsError::Other(format!("{}: {e}", key.display())))?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| WsError::Other(e.to_string()))
                }
                None => Ok(builder.with_no_client_auth()),
            }
        }
    }
}

async fn next_message(socket: &mut Socket) -> Result<Value, WsError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| WsError::Other(format!("not JSON from the edge: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(WsError::Closed {
                    code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
            None => {
                return Err(WsError::Closed {
                    code: 1006,
                    reason: String::new(),
                });
            }
        }
    }
}

/// What a self-signed request asks for.
#[derive(Clone, Debug)]
pub struct SignedCall<'a> {
    /// The collective, as the edge names it.
    pub collective: &'a str,
    /// Agent.
    pub agent: &'a str,
    /// Action.
    pub action: &'a str,
    /// Inputs.
    pub data: Map<String, Value>,
    /// Filter; the agent is added.
    pub filter: Filter,
    /// Seconds the request is valid around now.
    pub ttl: i64,
}

/// A Choria v1 secure request for `call`, signed by `signer` as `caller`, as a Choria client
/// would publish it; send it in a `signed` message.
pub fn sign_request(
    signer: &Signer,
    caller: &CallerId,
    senderid: &str,
    call: &SignedCall<'_>,
    now: Now,
) -> Result<SecureRequest, KeyError> {
    let body = RpcRequest {
        agent: call.agent.to_string(),
        action: call.action.to_string(),
        data: call.data.clone(),
    };
    let mut filter = call.filter.clone();
    if !filter.agent.iter().any(|a| a == call.agent) {
        filter.agent.push(call.agent.to_string());
    }
    let envelope = RequestEnvelope {
        requestid: uuid::Uuid::new_v4().simple().to_string(),
        senderid: senderid.to_string(),
        callerid: caller.as_str().to_string(),
        collective: call.collective.to_string(),
        agent: call.agent.to_string(),
        ttl: call.ttl,
        time: now.unix_seconds(),
        filter,
    };
    let message = serde_json::to_string(&body).unwrap_or_default();
    signer.sign_request(&Request::new(message, envelope))
}

/// The `signed` message carrying `secure`.
pub fn signed_message(id: &str, secure: &SecureRequest, collect: Map<String, Value>) -> Value {
    let request: Value = serde_json::from_slice(&secure.encode()).unwrap_or(Value::Null);
    let mut message = json!({"type": "signed", "id": id, "request": request});
    if let Value::Object(fields) = &mut message {
        fields.extend(collect);
    }
    message
}
