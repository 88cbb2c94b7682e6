//! fedgate's AMQP connections to a legacy collective's broker, the one way every part that
//! talks to RabbitMQ (link, bridge, facade) connects: TLS trusting the site's `ca` alone and
//! presenting its `tls` identity, a first connection that fails at once with the reason, and a
//! recovery that never gives up.
//!
//! At start-up the broker must answer: fedgate first opens a plain probe (TCP, then TLS, then
//! the AMQP greeting) and refuses to start, naming what failed, when it cannot, as it does for
//! an unreachable NATS network. Once connected, lapin recovers a lost connection by itself, its
//! channels, queues, bindings and consumers included, retrying with back-off from
//! `reconnect_min_ms` doubling to `reconnect_max_ms` for as long as fedgate runs.

use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::{AMQPUriTcpExt, RustlsConnector, TLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::LegacyConfig;

/// How long the first connection may take: the probe's TCP, TLS and greeting, then lapin's own
/// handshake.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// What an AMQP 0-9-1 client sends first.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// The first byte of a method frame: the broker's `connection.start`.
const METHOD_FRAME: u8 = 1;

/// Why fedgate could not connect to a legacy broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The URL or the TLS settings cannot be used.
    #[error("{0}")]
    Settings(String),
    /// No TCP connection.
    #[error("cannot reach the broker at {addr}: {reason}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The system's error.
        reason: String,
    },
    /// The TLS handshake failed, or the broker refused fedgate's client certificate.
    #[error("TLS with the broker at {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// rustls's error or the broker's alert, and what to check.
        reason: String,
    },
    /// Connected, but no AMQP 0-9-1 greeting came back.
    #[error("the broker at {addr} did not greet as AMQP 0-9-1: {reason}")]
    Greeting {
        /// `host:port`.
        addr: String,
        /// What came instead.
        reason: String,
    },
    /// The AMQP handshake failed (credentials, vhost) or took too long.
    #[error("AMQP with the broker at {addr}: {reason}")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// lapin's error.
        reason: String,
    },
}

/// Where and how fedgate reaches one legacy collective's broker.
#[derive(Clone)]
pub struct Broker {
    uri: AMQPUri,
    /// For `amqps://`: the CA (or the public web roots) and the client identity.
    tls: Option<Arc<rustls::ClientConfig>>,
    min_delay: Duration,
    max_delay: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds the password.
        f.debug_struct("Broker")
            .field("addr", &self.addr())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Broker {
    /// The broker of `config`, its TLS settings loaded.
    pub fn new(config: &LegacyConfig) -> Result<Broker, AmqpError> {
        let uri: AMQPUri = config
            .amqp
            .parse()
            .map_err(|e| AmqpError::Settings(format!("amqp is not a valid URL: {e}")))?;
        let tls = match (&uri.scheme, &config.ca, &config.tls) {
            (AMQPScheme::AMQPS, Some(ca), tls) => {
                let identity = tls.as_ref().map(|t| (t.certificate.clone(), t.key.clone()));
                let config = crate::nats::tls_config(ca, identity.as_ref())
                    .map_err(|e| AmqpError::Settings(e.to_string()))?;
                Some(Arc::new(config))
            }
            (AMQPScheme::AMQPS, None, None) => Some(Arc::new(public_roots()?)),
            (AMQPScheme::AMQPS, None, Some(_)) => {
                return Err(AmqpError::Settings(
                    "a TLS client identity needs the ca to verify the broker with".into(),
                ));
            }
            (AMQPScheme::AMQP, None, None) => None,
            (AMQPScheme::AMQP, _, _) => {
                return Err(AmqpError::Settings(
                    "ca and tls need an amqps:// URL".into(),
                ));
            }
        };
        Ok(Broker {
            uri,
            tls,
            min_delay: Duration::from_millis(config.reconnect_min_ms),
            max_delay: Duration::from_millis(config.reconnect_max_ms),
        })
    }

    /// `host:port`, as errors and logs name the broker.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    /// Connects as `name` (shown in RabbitMQ's connection list), failing at once if the broker
    /// cannot be reached now; once connected, recovers from every loss until closed.
    pub async fn connect(&self, name: &str) -> Result<Connection, AmqpError> {
        tokio::time::timeout(STARTUP_TIMEOUT, self.probe())
            .await
            .map_err(|_| AmqpError::Unreachable {
                addr: self.addr(),
                reason: format!("no answer within {} s", STARTUP_TIMEOUT.as_secs()),
            })??;
        let handshake = |reason: String| AmqpError::Handshake {
            addr: self.addr(),
            reason,
        };
        let runtime = lapin::runtime::default_runtime().map_err(|e| handshake(e.to_string()))?;
        let (plain, host) = (self.plain_uri(), self.uri.authority.host.clone());
        let tls = self.tls.clone().map(RustlsConnector::from);
        let connecting = Connection::connector(
            self.uri.clone(),
            runtime,
            async move |_uri, runtime| {
                let stream = plain
                    .connect_with_config_async(TLSConfig::default(), &runtime)
                    .await
                    .map_err(lapin::Error::from)?;
                match &tls {
                    Some(tls) => stream
                        .into_rustls(tls, &host)
                        .await
                        .map_err(lapin::Error::from),
                    None => Ok(stream),
                }
            },
            self.properties(name),
        );
        tokio::time::timeout(STARTUP_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                handshake(format!(
                    "no AMQP handshake within {} s",
                    STARTUP_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| handshake(e.to_string()))
    }

    /// lapin's settings: named, recovering by itself, with back-off capped and no attempt limit.
    fn properties(&self, name: &str) -> ConnectionProperties {
        let (min, max) = (self.min_delay, self.max_delay);
        ConnectionProperties::default()
            .with_connection_name(name.into())
            .enable_auto_recover()
            .configure_backoff(move |b| {
                b.with_min_delay(min)
                    .with_max_delay(max)
                    .without_max_times()
            })
    }

    /// The URL with the TLS left to fedgate: lapin's own TLS trusts only the public roots.
    fn plain_uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: AMQPScheme::AMQP,
            ..self.uri.clone()
        }
    }

    /// One connection that says whether the broker can be used now: TCP, TLS (a refused client
    /// certificate shows on the first read), then the broker's `connection.start`.
    async fn probe(&self) -> Result<(), AmqpError> {
        let addr = self.addr();
        let tcp = tokio::net::TcpStream::connect((
            self.uri.authority.host.as_str(),
            self.uri.authority.port,
        ))
        .await
        .map_err(|e| AmqpError::Unreachable {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        match &self.tls {
            None => greet(tcp, &addr, None::<fn(String) -> AmqpError>).await,
            Some(config) => {
                let tls_err = |reason: String| AmqpError::Tls {
                    addr: addr.clone(),
                    reason,
                };
                let name = rustls_pki_types::ServerName::try_from(self.uri.authority.host.clone())
                    .map_err(|e| tls_err(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_err(explain_tls(&e)))?;
                greet(stream, &addr, Some(tls_err)).await
            }
        }
    }
}

/// Sends the protocol header and reads the first frame's type: a method frame is a greeting.
/// An error reading it is the TLS layer's when `tls_err` is given (the broker's alert).
async fn greet<S, F>(mut stream: S, addr: &str, tls_err: Option<F>) -> Result<(), AmqpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn(String) -> AmqpError,
{
    let greeting = |reason: String| AmqpError::Greeting {
        addr: addr.to_string(),
        reason,
    };
    let mut first = [0u8; 1];
    let read = async {
        stream.write_all(PROTOCOL_HEADER).await?;
        stream.flush().await?;
        stream.read(&mut first).await
    };
    let result = match read.await {
        Ok(0) => Err(match &tls_err {
            Some(tls_err) => tls_err(CLOSED_AFTER_TLS.to_string()),
            None => greeting("it closed the connection".into()),
        }),
        Ok(_) if first[0] == METHOD_FRAME => Ok(()),
        Ok(_) => Err(greeting(format!("its first byte was {:#04x}", first[0]))),
        Err(e) => Err(match tls_err {
            Some(tls_err) => tls_err(explain_tls(&e)),
            None => greeting(e.to_string()),
        }),
    };
    let _ = stream.shutdown().await;
    result
}

/// What a broker that closes a TLS connection right after the handshake most likely means.
const CLOSED_AFTER_TLS: &str = "the broker closed the connection once TLS was set up: it may want a client certificate it trusts, check `tls`";

/// rustls's error with a hint at the setting to check.
fn explain_tls(err: &std::io::Error) -> String {
    let text = err.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        " (is `ca` the CA that issued the broker's certificate, and does it name the host?)"
    } else if text.contains("CertificateRequired") || text.contains("HandshakeFailure") {
        " (the broker wants a client certificate it trusts: check `tls`)"
    } else if matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe
    ) {
        // TLS 1.3: a broker that refuses the client's certificate (or its lack) may close the
        // connection before its alert is read.
        &format!(" ({CLOSED_AFTER_TLS})")
    } else if text.contains("alert") {
        " (the broker refused the handshake: check `tls` and the broker's CA)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// The public web roots, what `amqps://` without a `ca` trusts.
fn public_roots() -> Result<rustls::ClientConfig, AmqpError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AmqpError::Settings(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Reports `connection` to `/readyz` as `what` for as long as the returned status lives:
/// ready while lapin says it is connected (not while it recovers), checked every second.
pub fn watch(connection: &Connection, what: String) -> Arc<crate::health::Status> {
    let status = crate::health::watch(what);
    let lapin = connection.status().clone();
    let watched = Arc::downgrade(&status);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticker.tick().await;
            let Some(status) = watched.upgrade() else {
                return;
            };
            if lapin.connected() {
                status.ready();
            } else if lapin.reconnecting() {
                status.not_ready("reconnecting");
            } else {
                status.not_ready("not connected");
            }
        }
    });
    status
}
