//! NATS connections with mutual TLS through rustls and aws-lc-rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::security::load_certs;

/// Where and how to connect to one NATS network.
#[derive(Clone, Debug)]
pub struct NatsEndpoint {
    /// Server URLs, `nats://` or `tls://`.
    pub urls: Vec<String>,
    /// CA bundle that the servers' certificates must chain to; enables TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
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

/// Connects, with TLS when a CA is configured; `name` shows in the server's connection list.
pub async fn connect(endpoint: &NatsEndpoint, name: &str) -> Result<async_nats::Client, NatsError> {
    if endpoint.urls.is_empty() {
        return Err(NatsError::NoUrls);
    }
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::debug!(%event, "nats connection event");
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
    let urls = endpoint.urls.join(",");
    options
        .connect(urls.as_str())
        .await
        .map_err(|source| NatsError::Connect { urls, source })
}

/// The URL of the server a client is connected to, as Choria records it in `seen-by`.
pub fn connected_server(client: &async_nats::Client) -> String {
    let info = client.server_info();
    format!("nats://{}:{}", info.host, info.port)
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
