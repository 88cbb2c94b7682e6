//! Accepting connections: a handshake slot (in all and per address) until the WebSocket
//! upgrade, the TLS handshake with its client certificate, and HTTP serving with header and
//! keep-alive timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::limits::AddressSlots;
use super::shared::{Peer, Shared};
use crate::security::{CallerId, CertInfo};

/// Accepts connections until the task is aborted, each within its handshake slots.
pub(super) async fn accept_loop(
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
