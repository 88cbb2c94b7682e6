//! `GET /ws`: what a socket must show before it opens (Origin, credentials, subprotocol, a
//! connection slot), and the upgrade into its session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::session::session;
use super::shared::{Peer, Shared, bearer};
use crate::edge::http::{Reason, refuse};
use crate::edge::protocol::{BEARER_PROTOCOL, SIGNED_SUBPROTOCOL, SUBPROTOCOL};

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

/// Checks a socket's request and upgrades it.
pub(super) async fn upgrade(
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
    let credentials = token.is_some() || peer.certificate.is_some();
    if let Some(refusal) = origin_refusal(&shared, origin, credentials, signed_only) {
        return refusal;
    }
    let principal = match shared.principal(token.as_deref(), &peer).await {
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
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                metrics::gauge!("fedgate_edge_sockets").increment(1.0);
                // A signed-only socket has no identity until a request verifies: its
                // verification attempts count against its address's rate.
                let unverified = signed_only.then(|| format!("addr:{}", remote.ip()));
                session(shared, socket, principal, unverified, remote.ip()).await;
                metrics::gauge!("fedgate_edge_sockets").decrement(1.0);
                drop(permit);
            })
        })
}

/// Bytes of frames a socket gathers before it writes them out: the writer flushes after each
/// batch anyway, so this only splits a big batch into writes of this size. Small, because a
/// socket keeps the buffer's capacity while it lives.
const WRITE_BUFFER: usize = 16 * 1024;

/// The refusal of a socket whose `Origin` is not allowed, or that has none and neither
/// credentials nor the signed-only subprotocol.
fn origin_refusal(
    shared: &Shared,
    origin: Option<&str>,
    credentials: bool,
    signed_only: bool,
) -> Option<Response> {
    match origin {
        Some(origin) if !shared.settings.origins.iter().any(|o| o == origin) => Some(refuse(
            StatusCode::FORBIDDEN,
            Reason::Origin,
            &format!("origin {origin} is not allowed"),
        )),
        None if !credentials && !signed_only => Some(refuse(
            StatusCode::FORBIDDEN,
            Reason::Origin,
            "a socket without an Origin must present a client certificate or a token, or offer the subprotocol fedgate.v1.signed",
        )),
        _ => None,
    }
}
