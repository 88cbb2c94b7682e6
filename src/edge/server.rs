//! The listener: TLS (optionally mTLS) or loopback `ws://`, the HTTP routes, and one session
//! task per socket.
//!
//! - `limits`: the settings sessions read and the per-address handshake slots;
//! - `logins`: password checks queued fairly per source address, and each source's login rate;
//! - `shared`: what every route and session shares, and who a request is from;
//! - `listener`: accepting connections up to HTTP; `routes`: the HTTP routes;
//! - `upgrade`: the checks before a socket opens; `session`: one socket's session, with its
//!   `requests` in flight and its bounded `outbox`.

mod limits;
mod listener;
mod logins;
mod outbox;
mod requests;
mod routes;
mod session;
mod shared;
mod upgrade;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::limits::{
    AddressSlots, LOGIN_WAIT, LOGINS_WAITING, LOGINS_WAITING_PER_SOURCE, MAX_LOGINS, Settings,
};
use self::logins::{LoginQueue, LoginRate};
use self::shared::Shared;
use super::auth::TokenKeys;
use super::dispatch;
use crate::config::{Config, EdgeConfig};
use crate::security::load_certs;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[error("edge: {0}")]
pub struct EdgeError(pub String);

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
    ) -> Result<Edge, EdgeError> {
        let edge = config
            .edge
            .as_ref()
            .ok_or_else(|| EdgeError("no [edge] section".into()))?;
        super::http::count_from_zero();
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
            settings: Settings::new(edge),
            tokens,
            limiter: RateLimiter::keyed(quota),
            connections: Arc::new(Semaphore::new(edge.max_connections.max(1))),
            handshakes: Arc::new(Semaphore::new(edge.max_handshakes.max(1))),
            handshakes_by_address: Arc::new(AddressSlots::new(edge.max_handshakes_per_address)),
            logins: Arc::new(LoginQueue::new(
                MAX_LOGINS,
                LOGINS_WAITING_PER_SOURCE,
                LOGINS_WAITING,
                LOGIN_WAIT,
            )),
            login_rate: LoginRate::new(edge.login_rate_per_address, edge.login_burst_per_address),
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
        tokio::spawn(limiter_upkeep(shared.clone()));
        let router = routes::router(shared.clone(), edge);
        let accept = tokio::spawn(listener::accept_loop(
            listener,
            tls.clone(),
            router,
            shared.clone(),
        ));
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

/// The rate limiters keep a bucket per identity and login source; forget idle ones so the maps
/// stay small.
async fn limiter_upkeep(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = ticker.tick() => {
                shared.limiter.retain_recent();
                shared.limiter.shrink_to_fit();
                shared.login_rate.upkeep();
            }
        }
    }
}
