//! NATS connections with mutual TLS through rustls and aws-lc-rs, and the network's own
//! authentication ([`NatsAuth`]) on top.

mod auth;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::security::load_certs;

pub use auth::{AuthError, Inline, MAX_SECRET_BYTES, Method, NatsAuth};

/// Where and how to connect to one NATS network.
#[derive(Clone, Debug)]
pub struct NatsEndpoint {
    /// Server URLs, `nats://` or `tls://`.
    pub urls: Vec<String>,
    /// CA bundle that the servers' certificates must chain to; enables TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// How fedgate authenticates beyond its certificate: creds, nkey, user and password, token.
    pub auth: Option<NatsAuth>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// TLS material could not be loaded.
    #[error("{}: {reason}", path.display())]
    Tls {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `auth` block's secret could not be used.
    #[error("auth: {error}")]
    Auth {
        /// What is wrong, shown in this message (so not again as its source).
        error: AuthError,
    },
    /// The servers refused fedgate's credentials (NATS says no more than that).
    #[error("{urls} refused {method}: authorization violation")]
    Refused {
        /// The URLs tried.
        urls: String,
        /// How fedgate authenticated (files are named, secrets never).
        method: String,
    },
    /// No URL was configured.
    #[error("no NATS server URL configured")]
    NoUrls,
    /// The servers could not be reached.
    #[error("could not connect to {urls}: {source}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
}

impl From<AuthError> for NatsError {
    fn from(error: AuthError) -> NatsError {
        NatsError::Auth { error }
    }
}

/// Connects, with TLS when a CA is configured; `name` shows in the server's connection list.
pub async fn connect(endpoint: &NatsEndpoint, name: &str) -> Result<async_nats::Client, NatsError> {
    connect_with(endpoint, name, name, None, DEFAULT_SUBSCRIPTION_BUFFER).await
}

/// Connects as [`connect`] does, and reports the connection to `/readyz` as `what` (e.g.
/// `collective london (edge)`) for as long as the connection lives: ready while connected.
pub async fn connect_watched(
    endpoint: &NatsEndpoint,
    name: &str,
    what: &str,
) -> Result<async_nats::Client, NatsError> {
    connect_with(
        endpoint,
        name,
        what,
        Some(crate::health::watch(what)),
        DEFAULT_SUBSCRIPTION_BUFFER,
    )
    .await
}

/// Messages held for a subscription whose reader falls behind before they are dropped:
/// async-nats' own default, which every connection but the edge's keeps.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 65_536;

/// Connects as [`connect_watched`] does, holding up to `buffer` messages for each
/// subscription whose reader falls behind (async-nats' default is 65,536) before dropping
/// them: for the edge, whose reply subscriptions take a whole fleet's answers in a burst.
pub async fn connect_buffered(
    endpoint: &NatsEndpoint,
    name: &str,
    what: &str,
    buffer: usize,
) -> Result<async_nats::Client, NatsError> {
    connect_with(
        endpoint,
        name,
        what,
        Some(crate::health::watch(what)),
        buffer,
    )
    .await
}

/// Warn about a slow consumer at most this often per connection (every drop is counted).
const SLOW_CONSUMER_WARN_EVERY: Duration = Duration::from_secs(10);

/// `what`: the connection in logs and metric labels.
async fn connect_with(
    endpoint: &NatsEndpoint,
    name: &str,
    what: &str,
    status: Option<Arc<crate::health::Status>>,
    buffer: usize,
) -> Result<async_nats::Client, NatsError> {
    if endpoint.urls.is_empty() {
        return Err(NatsError::NoUrls);
    }
    // The callback lives as long as the connection, and with it the watched status.
    let connection = what.to_string();
    let last_slow_warning = std::sync::Mutex::new(None::<std::time::Instant>);
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .subscription_capacity(buffer)
        .event_callback(move |event| {
            if let Some(status) = &status {
                match &event {
                    async_nats::Event::Connected => status.ready(),
                    async_nats::Event::Disconnected => status.not_ready("disconnected"),
                    async_nats::Event::Closed => status.not_ready("closed"),
                    async_nats::Event::LameDuckMode => status.not_ready("server in lame duck mode"),
                    _ => {}
                }
            }
            // A subject the server's permissions refuse shows to the caller only as a
            // timeout; the server's reason is what an operator needs.
            if let async_nats::Event::ServerError(error) = &event {
                tracing::warn!(%connection, %error, "NATS server error");
            }
            // The client's buffer for one subscription was full, so a message for it was
            // dropped here, where no server log sees it: a reply or request is lost.
            if let async_nats::Event::SlowConsumer(subscription) = &event {
                metrics::counter!("fedgate_nats_slow_consumer_total", "connection" => connection.clone())
                    .increment(1);
                if let Ok(mut last) = last_slow_warning.lock()
                    && last.is_none_or(|at| at.elapsed() >= SLOW_CONSUMER_WARN_EVERY)
                {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(
                        %connection,
                        subscription,
                        "NATS slow consumer: the client dropped messages for a subscription whose reader fell behind (counted in fedgate_nats_slow_consumer_total)"
                    );
                }
            }
            async move {
                tracing::debug!(%event, "nats connection event");
            }
        });
    match (&endpoint.ca, &endpoint.identity) {
        (Some(ca), identity) => {
            let config = tls_config(ca, identity.as_ref())?;
            options = options.require_tls(true).tls_client_config(config);
        }
        (None, Some((cert, _))) => {
            return Err(NatsError::Tls {
                path: cert.clone(),
                reason: "a TLS client identity needs a CA to verify the server with".into(),
            });
        }
        (None, None) => {}
    }
    let mut method = "fedgate without an `auth` block".to_string();
    if let Some(auth) = &endpoint.auth {
        method = format!("fedgate, authenticating with {}", auth.method()?);
        options = auth.apply(options)?;
    }
    // Each URL is a server of its own: async-nats reads a single string as one URL.
    let connected = options.connect(endpoint.urls.as_slice()).await;
    let urls = endpoint.urls.join(",");
    connected.map_err(|source| {
        if source.kind() == async_nats::ConnectErrorKind::AuthorizationViolation {
            NatsError::Refused { urls, method }
        } else {
            NatsError::Connect { urls, source }
        }
    })
}

/// Warns when `stream`, which holds `what`, keeps a single replica although the server `client`
/// is connected to belongs to a NATS cluster: losing the one server that holds it stops `what`
/// until that server is back, which is what the cluster was meant to prevent.
pub fn warn_if_one_replica(client: &async_nats::Client, what: &str, stream: &str, replicas: usize) {
    if replicas > 1 {
        return;
    }
    if let Some(cluster) = client.server_info().cluster.filter(|c| !c.is_empty()) {
        tracing::warn!(
            stream,
            cluster = %cluster,
            "{what}: JetStream stream {stream} has 1 replica on NATS cluster {cluster}; losing the server that holds it stops {what} until that server is back. Set replicas = 3 before the stream is created, or raise it with `nats stream edit {stream} --replicas 3` (docs/deployment.md)"
        );
    }
}

/// The URL of the server a client is connected to, as Choria records it in `seen-by`.
pub fn connected_server(client: &async_nats::Client) -> String {
    let info = client.server_info();
    format!("nats://{}:{}", info.host, info.port)
}

/// How long a [`ServerUrls`] entry is used before the client is asked again.
pub const SERVER_URL_TTL: Duration = Duration::from_millis(250);

/// [`connected_server`] for each of a fixed set of networks, read again at most every
/// [`SERVER_URL_TTL`]. Asking the client copies its whole server `INFO` (a dozen strings); a
/// broker names two servers in every message it relays, so it asks here instead. After a
/// reconnect, `seen-by` may name the previous server for up to the TTL; nothing but the trace
/// reads those URLs (loops are found by the processor's label).
#[derive(Debug, Default)]
pub struct ServerUrls {
    cached: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<str>)>>,
}

impl ServerUrls {
    /// The URL of the server `client`, the connection to `network`, is connected to.
    pub fn get(&self, network: &str, client: &async_nats::Client) -> Arc<str> {
        let now = std::time::Instant::now();
        if let Ok(cached) = self.cached.lock()
            && let Some((read, url)) = cached.get(network)
            && now.duration_since(*read) < SERVER_URL_TTL
        {
            return url.clone();
        }
        let url: Arc<str> = connected_server(client).into();
        if let Ok(mut cached) = self.cached.lock() {
            // Keyed by the broker's networks, a set fixed at start-up.
            cached.insert(network.to_string(), (now, url.clone()));
        }
        url
    }
}

/// The certificates of the PEM bundle `ca` as a rustls root store.
pub fn root_store(ca: &Path) -> Result<RootCertStore, NatsError> {
    let tls_err = |reason: String| NatsError::Tls {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca).map_err(|e| tls_err(e.to_string()))? {
        roots.add(cert).map_err(|e| tls_err(e.to_string()))?;
    }
    Ok(roots)
}

/// A TLS client configuration (aws-lc-rs) trusting `ca`, with an optional client certificate
/// and key: for NATS, and for WebSocket clients of the edge.
pub fn tls_config(
    ca: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, NatsError> {
    let tls_err = |path: &Path, reason: String| NatsError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let roots = root_store(ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(ca, e.to_string()))?
        .with_root_certificates(roots);
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = load_certs(cert).map_err(|e| tls_err(cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| tls_err(cert, e.to_string()))
}

#[cfg(test)]
mod tests;
