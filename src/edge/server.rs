//! The listener: TLS (optionally mTLS) or loopback `ws://`, the HTTP routes, and one session
//! task per socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::auth::{self, Claims, TokenKeys};
use super::dispatch::{self, Job, Principal};
use super::http::{Reason, refuse};
use super::protocol::{
    BEARER_PROTOCOL, ClientMessage, ErrorCode, SIGNED_SUBPROTOCOL, SUBPROTOCOL, ServerMessage,
    VERSION, close,
};
use crate::config::{Config, EdgeConfig};
use crate::security::{CallerId, CertInfo, Now, load_certs};

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[error("edge: {0}")]
pub struct EdgeError(pub String);

/// The limits and settings sessions read.
#[derive(Debug)]
struct Settings {
    origins: Vec<String>,
    max_message_bytes: usize,
    max_in_flight: usize,
    outbound_queue: usize,
    outbound_queue_bytes: usize,
    idle: Duration,
    ping: Duration,
    auth_timeout: Duration,
    handshake_timeout: Duration,
    grace: Duration,
    token_ttl: Duration,
}

/// Password checks (argon2, 19 MiB each) running at once.
const MAX_LOGINS: usize = 4;

/// How long a socket's writer may wait on a client that does not read before the connection is
/// dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request handler shares.
pub(super) struct Shared {
    settings: Settings,
    tokens: Option<TokenKeys>,
    limiter: DefaultKeyedRateLimiter<String>,
    connections: Arc<Semaphore>,
    /// Connections not upgraded to a WebSocket.
    handshakes: Arc<Semaphore>,
    /// The same, per remote address.
    handshakes_by_address: Arc<AddressSlots>,
    /// Password checks running at once.
    logins: Arc<Semaphore>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    stop: CancellationToken,
    sessions: TaskTracker,
    pub(super) dispatch: dispatch::Dispatcher,
    pub(super) api: super::api::Api,
}

/// Who the TLS layer says the peer is.
#[derive(Clone, Debug, Default)]
pub(super) struct Peer {
    certificate: Option<CallerId>,
}

/// A running edge.
pub struct Edge {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// Binds the listener and starts serving, with the gate (policy and audit) of `dispatcher`.
    pub async fn start(
        config: &Config,
        dispatcher: dispatch::Dispatcher,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<Edge, EdgeError> {
        let edge = config
            .edge
            .as_ref()
            .ok_or_else(|| EdgeError("no [edge] section".into()))?;
        let tls = match &edge.tls {
            Some(_) => Some(tls_acceptor(edge)?),
            None => {
                if !edge.listen.ip().is_loopback() && !edge.allow_plaintext {
                    return Err(EdgeError(format!(
                        "{} is not a loopback address: plain ws:// needs allow_plaintext = true, or configure tls",
                        edge.listen
                    )));
                }
                None
            }
        };
        let tokens = edge
            .token_key
            .as_deref()
            .map(TokenKeys::load)
            .transpose()
            .map_err(|e| EdgeError(e.to_string()))?;
        let quota = Quota::per_second(
            NonZeroU32::new(edge.rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(edge.rate_burst.max(1)).unwrap_or(NonZeroU32::MIN));
        let stop = CancellationToken::new();
        let api = super::api::Api::start(config, stop.clone())
            .await
            .map_err(EdgeError)?;
        let shared = Arc::new(Shared {
            settings: Settings {
                origins: edge.origins.clone(),
                max_message_bytes: edge.max_message_bytes,
                max_in_flight: edge.max_in_flight.max(1),
                outbound_queue: edge.outbound_queue.max(4),
                outbound_queue_bytes: edge.outbound_queue_bytes.max(64 * 1024),
                idle: Duration::from_secs(edge.idle_timeout_s.max(1)),
                ping: Duration::from_secs(edge.ping_interval_s.max(1)),
                auth_timeout: Duration::from_secs(edge.auth_timeout_s.max(1)),
                handshake_timeout: Duration::from_secs(edge.handshake_timeout_s.max(1)),
                grace: Duration::from_secs(edge.shutdown_grace_s),
                token_ttl: Duration::from_secs(edge.token_ttl_s.max(60)),
            },
            tokens,
            limiter: RateLimiter::keyed(quota),
            connections: Arc::new(Semaphore::new(edge.max_connections.max(1))),
            handshakes: Arc::new(Semaphore::new(edge.max_handshakes.max(1))),
            handshakes_by_address: Arc::new(AddressSlots::new(edge.max_handshakes_per_address)),
            logins: Arc::new(Semaphore::new(MAX_LOGINS)),
            metrics,
            stop,
            sessions: TaskTracker::new(),
            dispatch: dispatcher,
            api,
        });
        let listener = tokio::net::TcpListener::bind(edge.listen)
            .await
            .map_err(|e| EdgeError(format!("binding {}: {e}", edge.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EdgeError(e.to_string()))?;
        // The rate limiter keeps a bucket per identity; forget idle ones so the map stays small.
        let upkeep = shared.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = upkeep.stop.cancelled() => return,
                    _ = ticker.tick() => {
                        upkeep.limiter.retain_recent();
                        upkeep.limiter.shrink_to_fit();
                    }
                }
            }
        });
        let router = router(shared.clone(), edge);
        let accept = tokio::spawn(accept_loop(listener, tls.clone(), router, shared.clone()));
        Ok(Edge {
            addr,
            tls: tls.is_some(),
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the federations' membership from `config`; see [`Dispatcher::set_membership`].
    pub fn set_membership(&self, config: &Config) -> Result<Vec<String>, String> {
        self.shared.dispatch.set_membership(config)
    }

    /// The `ws://` or `wss://` URL of the socket endpoint.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, sends every
    /// socket a close frame, and waits for the sessions to end.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.shared.stop.cancel();
        self.shared.sessions.close();
        let wait = self.shared.settings.grace + Duration::from_secs(2);
        let _ = tokio::time::timeout(wait, self.shared.sessions.wait()).await;
    }
}

fn tls_acceptor(edge: &EdgeConfig) -> Result<tokio_rustls::TlsAcceptor, EdgeError> {
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let Some(identity) = &edge.tls else {
        return Err(EdgeError("no tls".into()));
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = load_certs(&identity.certificate).map_err(|e| EdgeError(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&identity.key)
        .map_err(|e| EdgeError(format!("{}: {e}", identity.key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| EdgeError(e.to_string()))?;
    let builder = match &edge.ca {
        Some(ca) => {
            let roots = crate::nats::root_store(ca).map_err(|e| EdgeError(e.to_string()))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| EdgeError(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| EdgeError(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shared: Arc<Shared>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "edge accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A connection holds a handshake slot until it is upgraded or closed, so connections
        // that never get to a WebSocket (slowloris, idle keep-alives) cannot pile up.
        let slots = shared
            .handshakes
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(AddressSlots::take(
                &shared.handshakes_by_address,
                remote.ip(),
            ));
        let Some(slot) = slots else {
            metrics::counter!("fedgate_edge_refused_total", "reason" => "handshakes").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stop = shared.stop.clone();
        let timeout = shared.settings.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                    let Ok(Ok(stream)) = handshake else {
                        metrics::counter!("fedgate_edge_refused_total", "reason" => "tls")
                            .increment(1);
                        return;
                    };
                    let peer = Peer {
                        certificate: stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|leaf| certificate_caller(leaf.as_ref())),
                    };
                    serve(TokioIo::new(stream), router, peer, remote, stop, timeout).await;
                }
                None => {
                    let io = TokioIo::new(stream);
                    serve(io, router, Peer::default(), remote, stop, timeout).await;
                }
            }
        });
    }
}

/// Connections held per remote address, each at most `limit`; an address leaves the map with
/// its last connection, so the map is never larger than the connections held.
struct AddressSlots {
    held: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    limit: usize,
}

/// One connection's place in [`AddressSlots`], given back on drop.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: std::net::IpAddr,
}

impl AddressSlots {
    fn new(limit: usize) -> AddressSlots {
        AddressSlots {
            held: std::sync::Mutex::default(),
            limit: limit.max(1),
        }
    }

    fn take(slots: &Arc<AddressSlots>, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut held = slots.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(address).or_default();
        if *count >= slots.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: slots.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// `choria=<CN>` of a verified client certificate.
fn certificate_caller(der: &[u8]) -> Option<CallerId> {
    let info = CertInfo::parse(der, "client certificate").ok()?;
    CallerId::parse(&format!("choria={}", info.common_name?)).ok()
}

async fn serve<S>(
    io: TokioIo<S>,
    router: Router,
    peer: Peer,
    remote: SocketAddr,
    stop: CancellationToken,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(peer.clone());
        request.extensions_mut().insert(remote);
        router.clone().oneshot(request)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client has `header_timeout` for each request's headers, the first and every one on a
    // kept-alive connection; HTTP/2 connections are pinged and closed when they stop answering.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn router(shared: Arc<Shared>, edge: &EdgeConfig) -> Router {
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_page))
        .route("/api/realms", get(super::api::realms))
        .route("/api/ddl", get(super::api::agents))
        .route("/api/ddl/{agent}", get(super::api::ddl))
        .route("/api/audit", get(super::api::audit))
        .route("/api/instances", get(super::api::instances))
        .route("/login", post(login));
    if let Some(root) = &edge.web_root {
        router = router.fallback_service(tower_http::services::ServeDir::new(root));
    }
    router.with_state(shared)
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

/// The bearer token of `Authorization: Bearer …`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// What the client offered in `Sec-WebSocket-Protocol`.
#[derive(Default)]
struct Offered {
    /// A bearer token, as `bearer.<token>`.
    token: Option<String>,
    /// `fedgate.v1`.
    v1: bool,
    /// `fedgate.v1.signed`: no credentials, only signed requests.
    signed: bool,
}

fn subprotocols(headers: &HeaderMap) -> Offered {
    let mut offered = Offered::default();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        for protocol in value.split(',').map(str::trim) {
            if protocol == SUBPROTOCOL {
                offered.v1 = true;
            } else if protocol == SIGNED_SUBPROTOCOL {
                offered.signed = true;
            } else if let Some(t) = protocol.strip_prefix(BEARER_PROTOCOL) {
                offered.token = Some(t.to_string());
            }
        }
    }
    offered
}

impl Shared {
    fn principal_from_token(&self, token: &str) -> Result<Principal, String> {
        let Some(keys) = &self.tokens else {
            return Err("this edge does not accept tokens".into());
        };
        let claims: Claims = keys
            .verify(token, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let caller = CallerId::parse(&claims.callerid).map_err(|e| e.to_string())?;
        Ok(Principal {
            caller,
            method: "token",
            expires: Some(claims.exp),
            collectives: claims.collectives,
            token_id: Some(claims.jti),
        })
    }

    /// Who a request is from: its token if it has one (which must verify), else the client
    /// certificate; `None` when it has neither.
    pub(super) fn principal(
        &self,
        token: Option<&str>,
        peer: &Peer,
    ) -> Result<Option<Principal>, String> {
        match (token, &peer.certificate) {
            (Some(token), _) => self.principal_from_token(token).map(Some),
            (None, Some(caller)) => Ok(Some(Principal {
                caller: caller.clone(),
                method: "certificate",
                expires: None,
                collectives: None,
                token_id: None,
            })),
            (None, None) => Ok(None),
        }
    }
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Extension(remote): Extension<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if shared.stop.is_cancelled() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::ShuttingDown,
            "shutting down",
        );
    }
    let offered = subprotocols(&headers);
    let token = bearer(&headers)
        .map(str::to_string)
        .or(offered.token.clone());
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    // A socket without credentials that takes only signed requests carries no ambient
    // authority for another site to borrow, so it needs no Origin.
    let signed_only = token.is_none() && peer.certificate.is_none() && offered.signed;
    if signed_only && !shared.dispatch.takes_signed() {
        return refuse(
            StatusCode::FORBIDDEN,
            Reason::SignedRequests,
            "this edge takes no signed requests: [edge] has no ca",
        );
    }
    match origin {
        Some(origin) if !shared.settings.origins.iter().any(|o| o == origin) => {
            return refuse(
                StatusCode::FORBIDDEN,
                Reason::Origin,
                &format!("origin {origin} is not allowed"),
            );
        }
        None if token.is_none() && peer.certificate.is_none() && !signed_only => {
            return refuse(
                StatusCode::FORBIDDEN,
                Reason::Origin,
                "a socket without an Origin must present a client certificate or a token, or offer the subprotocol fedgate.v1.signed",
            );
        }
        _ => {}
    }
    let principal = match shared.principal(token.as_deref(), &peer) {
        Ok(principal) => principal,
        Err(message) => return refuse(StatusCode::UNAUTHORIZED, Reason::Token, &message),
    };
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Connections,
            "too many connections",
        );
    };
    let ws = if signed_only {
        ws.protocols([SIGNED_SUBPROTOCOL])
    } else if offered.v1 {
        ws.protocols([SUBPROTOCOL])
    } else {
        ws
    };
    let limit = shared.settings.max_message_bytes;
    let tracker = shared.sessions.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                metrics::gauge!("fedgate_edge_sockets").increment(1.0);
                // A signed-only socket has no identity until a request verifies: its
                // verification attempts count against its address's rate.
                let unverified = signed_only.then(|| format!("addr:{}", remote.ip()));
                session(shared, socket, principal, unverified).await;
                metrics::gauge!("fedgate_edge_sockets").decrement(1.0);
                drop(permit);
            })
        })
}

/// One socket: authenticate if needed, then read requests and write answers until either side
/// ends it.
async fn session(
    shared: Arc<Shared>,
    socket: WebSocket,
    principal: Option<Principal>,
    unverified: Option<String>,
) {
    let (mut sink, mut stream) = socket.split();
    let principal = match principal {
        Some(principal) => Some(principal),
        None if unverified.is_some() => None,
        None => match first_message_auth(&shared, &mut stream).await {
            Ok(principal) => Some(principal),
            Err(reason) => {
                metrics::counter!("fedgate_edge_refused_total", "reason" => "auth").increment(1);
                let _ = sink
                    .send(close_message(close::UNAUTHENTICATED, &reason))
                    .await;
                return;
            }
        },
    };
    let settings = &shared.settings;
    let (tx, mut outbox) = mpsc::channel::<Utf8Bytes>(settings.outbound_queue);
    let overflow = CancellationToken::new();
    let queued = Arc::new(AtomicUsize::new(0));
    let out = Outbox {
        tx,
        queued: queued.clone(),
        max_bytes: settings.outbound_queue_bytes,
        overflow: overflow.clone(),
    };
    let welcome = ServerMessage::Welcome {
        protocol: VERSION,
        caller: principal.as_ref().map(|p| p.caller.as_str().to_string()),
        method: principal.as_ref().map_or("signed", |p| p.method),
        expires: principal.as_ref().and_then(|p| p.expires),
    };
    out.push(&welcome);
    // The writer owns the sink; it ends with a close frame chosen by the reader.
    let (closing, close_rx) = tokio::sync::oneshot::channel::<(u16, String)>();
    let ping_every = settings.ping;
    let writer = tokio::spawn(async move {
        let mut close_rx = close_rx;
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        loop {
            tokio::select! {
                message = outbox.recv() => {
                    let Some(message) = message else {
                        // Every sender is gone: the session has chosen its close.
                        if let Ok((code, text)) = (&mut close_rx).await {
                            let _ = sink.send(close_message(code, &text)).await;
                        }
                        return;
                    };
                    let len = message.len();
                    if sink.send(Message::Text(message)).await.is_err() {
                        return;
                    }
                    queued.fetch_sub(len, Ordering::Relaxed);
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                reason = &mut close_rx => {
                    // Flush what is already queued, then close.
                    while let Ok(message) = outbox.try_recv() {
                        if sink.send(Message::Text(message)).await.is_err() {
                            return;
                        }
                    }
                    if let Ok((code, text)) = reason {
                        let _ = sink.send(close_message(code, &text)).await;
                    }
                    return;
                }
            }
        }
    });

    let (finished, mut finished_rx) = mpsc::unbounded_channel::<String>();
    let mut requests = Requests {
        shared: shared.clone(),
        in_flight: HashMap::new(),
        tasks: TaskTracker::new(),
        finished,
        out: out.clone(),
    };
    let expiry = principal.as_ref().and_then(|p| p.expires).map(|exp| {
        let now = auth::unix(SystemTime::now());
        tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now))
    });
    // A socket without credentials (signed requests only) must start talking as soon as one
    // that authenticates by message would, or give its slot back.
    let first_wait = if principal.is_some() {
        settings.idle
    } else {
        settings.auth_timeout
    };
    let mut idle_deadline = tokio::time::Instant::now() + first_wait;
    let principal = principal.map(Arc::new);
    let close: (u16, String) = loop {
        let expired = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.stop.cancelled() => {
                // Let in-flight requests finish within the grace period.
                let _ = tokio::time::timeout(settings.grace, async {
                    requests.tasks.close();
                    requests.tasks.wait().await;
                }).await;
                break (close::GOING_AWAY, "fedgate is shutting down".into());
            }
            _ = overflow.cancelled() => {
                metrics::counter!("fedgate_edge_refused_total", "reason" => "slow_consumer").increment(1);
                break (close::SLOW_CONSUMER, format!("client is not reading: more than {} messages or {} bytes queued", settings.outbound_queue, settings.outbound_queue_bytes));
            }
            _ = expired => {
                metrics::counter!("fedgate_edge_closed_total", "reason" => "token_expired").increment(1);
                break (close::TOKEN_EXPIRED, "token expired".into());
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                metrics::counter!("fedgate_edge_closed_total", "reason" => "idle").increment(1);
                break (close::IDLE, "idle timeout".into());
            }
            Some(id) = finished_rx.recv() => {
                requests.in_flight.remove(&id);
            }
            message = stream.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => {
                        // Only requests keep a socket open: pongs come from the client's library
                        // whether or not anyone is using it.
                        idle_deadline = tokio::time::Instant::now() + settings.idle;
                        // Ids of requests whose last message has gone out are free again, even
                        // if this loop has not yet picked up their release.
                        while let Ok(id) = finished_rx.try_recv() {
                            requests.in_flight.remove(&id);
                        }
                        text
                    }
                    Some(Ok(Message::Binary(_))) => {
                        out.reject(None, ErrorCode::Invalid, "binary frames are not part of the protocol; send JSON text frames");
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break (1000, String::new()),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => {
                        let too_big = err.to_string().contains("too long") || err.to_string().contains("too big");
                        if too_big {
                            metrics::counter!("fedgate_edge_refused_total", "reason" => "too_big").increment(1);
                            break (close::TOO_BIG, format!("message larger than {} bytes", settings.max_message_bytes));
                        }
                        break (close::POLICY, "protocol error".into());
                    }
                };
                match serde_json::from_str::<ClientMessage>(text.as_str()) {
                    Err(err) => out.reject(None, ErrorCode::Invalid, format!("not a valid message: {err}")),
                    Ok(ClientMessage::Auth { .. }) => out.reject(None, ErrorCode::Invalid, "already authenticated"),
                    Ok(ClientMessage::Cancel { id }) => {
                        if let Some(token) = requests.in_flight.get(&id) {
                            token.cancel();
                        }
                    }
                    Ok(ClientMessage::Rpc(rpc)) => {
                        let Some(principal) = &principal else {
                            out.reject(Some(&rpc.id), ErrorCode::Invalid, "this socket takes only signed requests");
                            continue;
                        };
                        if !requests.room_for(&rpc.id) {
                            continue;
                        }
                        let job = match Job::from_rpc(*rpc) {
                            Ok(job) => job,
                            Err((id, message)) => {
                                shared.dispatch.refused_invalid(principal, &message).await;
                                out.reject(Some(&id), ErrorCode::Invalid, message);
                                continue;
                            }
                        };
                        requests.start(principal.clone(), job).await;
                    }
                    Ok(ClientMessage::Signed(signed)) => {
                        if !requests.room_for(&signed.id) {
                            continue;
                        }
                        let id = signed.id.clone();
                        if let Some(key) = &unverified
                            && shared.limiter.check_key(key).is_err()
                        {
                            out.reject(Some(&id), ErrorCode::RateLimited, "rate limit exceeded; slow down");
                            continue;
                        }
                        match shared.dispatch.verify_signed(*signed, Now::system()).await {
                            Ok((principal, job)) => requests.start(Arc::new(principal), job).await,
                            Err((code, message)) => out.reject(Some(&id), code, message),
                        }
                    }
                }
            }
        }
    };
    for token in requests.in_flight.values() {
        token.cancel();
    }
    requests.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), requests.tasks.wait()).await;
    let broken = matches!(close.0, close::TOO_BIG | close::POLICY);
    let _ = closing.send(close);
    drop(out);
    drop(requests);
    // A client that never reads leaves the writer stuck on a full connection: give it a
    // moment to take the close frame, then drop the connection.
    let mut writer = writer;
    if tokio::time::timeout(WRITE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        metrics::counter!("fedgate_edge_closed_total", "reason" => "write_timeout").increment(1);
        return;
    }
    if broken {
        // The client's frame was not read to its end, and closing a connection with unread
        // bytes resets it, which can destroy the close frame before the client reads it: give
        // the client a moment to read it first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    }
    // Wait for the client's answering close frame: closing the connection with its frames unread
    // would reset it, and the client could lose our close frame.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// A socket's requests in flight.
struct Requests {
    shared: Arc<Shared>,
    in_flight: HashMap<String, CancellationToken>,
    tasks: TaskTracker,
    /// Each request task sends its id here when it ends.
    finished: mpsc::UnboundedSender<String>,
    out: Outbox,
}

impl Requests {
    /// Whether a request `id` may start: not a duplicate, and under the socket's limit. Sends
    /// the error when not.
    fn room_for(&self, id: &str) -> bool {
        let (code, message) = if self.in_flight.contains_key(id) {
            (
                ErrorCode::DuplicateId,
                "a request with this id is in flight".to_string(),
            )
        } else if self.in_flight.len() >= self.shared.settings.max_in_flight {
            (
                ErrorCode::TooManyInFlight,
                format!(
                    "at most {} requests in flight per socket",
                    self.shared.settings.max_in_flight
                ),
            )
        } else {
            return true;
        };
        self.out.reject(Some(id), code, message);
        false
    }

    /// Applies the caller's rate limit, then runs the job in its own task.
    async fn start(&mut self, principal: Arc<Principal>, job: Job) {
        let shared = self.shared.clone();
        if shared
            .limiter
            .check_key(&principal.caller.as_str().to_string())
            .is_err()
        {
            shared
                .dispatch
                .refused_early(&principal, &job, "rate_limited", "rate limit exceeded")
                .await;
            self.out.reject(
                Some(&job.id),
                ErrorCode::RateLimited,
                "rate limit exceeded; slow down",
            );
            return;
        }
        let cancel = CancellationToken::new();
        let id = job.id.clone();
        self.in_flight.insert(id.clone(), cancel.clone());
        let out = self.out.clone();
        let finished = self.finished.clone();
        self.tasks.spawn(async move {
            // The id is released before the request's last message is queued: a client may
            // reuse it as soon as it reads `done` or `error`.
            let release = std::sync::Once::new();
            let send = |message: ServerMessage| {
                if message.ends_request() {
                    release.call_once(|| drop(finished.send(id.clone())));
                }
                out.push(&message);
            };
            shared.dispatch.run(&principal, job, cancel, &send).await;
            release.call_once(|| drop(finished.send(id.clone())));
        });
    }
}

/// The queue towards one socket, bounded in messages and in bytes: a client that falls further
/// behind than either is disconnected (close 4008) instead of growing the gateway's memory.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes queued and not yet written; the writer takes away what it writes.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    overflow: CancellationToken,
}

impl Outbox {
    /// Queues a message, or marks the socket overflowed.
    fn push(&self, message: &ServerMessage) {
        let text = message.to_text();
        let len = text.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes
            || self.tx.try_send(Utf8Bytes::from(text)).is_err()
        {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.overflow.cancel();
        }
    }

    /// Sends an error and counts it.
    fn reject(&self, id: Option<&str>, code: ErrorCode, message: impl Into<String>) {
        metrics::counter!("fedgate_edge_errors_total", "code" => code.as_str()).increment(1);
        self.push(&ServerMessage::error(id, code, message));
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// Waits for the `auth` message of a socket opened without credentials.
async fn first_message_auth(
    shared: &Shared,
    stream: &mut futures::stream::SplitStream<WebSocket>,
) -> Result<Principal, String> {
    let first = tokio::time::timeout(shared.settings.auth_timeout, stream.next())
        .await
        .map_err(|_| "no auth message in time".to_string())?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err("expected an auth message".into());
    };
    match serde_json::from_str::<ClientMessage>(text.as_str()) {
        Ok(ClientMessage::Auth { token }) => shared.principal_from_token(&token),
        _ => Err("the first message must be {\"type\":\"auth\",\"token\":...}".into()),
    }
}

/// `GET /api/realms`: the collectives this caller may use.
#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

/// `POST /login`: a token for a user of the users file.
async fn login(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    // The users of the rules in force now (a registry revision may change them).
    let users = shared.dispatch.rules().users.clone();
    let (Some(users), Some(keys)) = (users, &shared.tokens) else {
        return refuse(
            StatusCode::NOT_FOUND,
            Reason::Login,
            "password login is not configured",
        );
    };
    if body.len() > 4096 {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::Login,
            "request too large",
        );
    }
    let Some(login) = serde_json::from_slice::<Login>(&body)
        .ok()
        .filter(|l| auth::caller_for(&l.user).is_ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            Reason::Login,
            "send {\"user\":...,\"password\":...}",
        );
    };
    if shared
        .limiter
        .check_key(&format!("login:{}", login.user))
        .is_err()
    {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::RateLimited,
            "too many login attempts",
        );
    }
    // argon2 is deliberately slow and memory-hungry: keep it off the async workers, and run
    // only a few at once.
    let Ok(_permit) = shared.logins.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::RateLimited,
            "too many logins in progress",
        );
    };
    let name = login.user.clone();
    let checked = tokio::task::spawn_blocking(move || {
        users
            .check(&name, &login.password)
            .map(|user| user.collectives.clone())
    })
    .await;
    let collectives = match checked {
        Ok(Ok(collectives)) => collectives,
        _ => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                Reason::Login,
                "unknown user or wrong password",
            );
        }
    };
    let now = SystemTime::now();
    match keys.issue(&login.user, shared.settings.token_ttl, collectives, now) {
        Ok(token) => axum::Json(json!({
            "token": token,
            "expires": auth::unix(now) + shared.settings.token_ttl.as_secs(),
            "caller": format!("up={}", login.user),
        }))
        .into_response(),
        Err(err) => refuse(StatusCode::BAD_REQUEST, Reason::Login, &err.to_string()),
    }
}
