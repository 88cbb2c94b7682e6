//! One socket's session: authenticate if needed, then read requests and hand them to the
//! dispatcher until the client, a limit or shutdown ends it, and close it cleanly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::limits::WRITE_TIMEOUT;
use super::outbox::{Outbox, close_message, spawn_writer};
use super::requests::Requests;
use super::shared::Shared;
use crate::edge::auth;
use crate::edge::dispatch::{Job, Principal};
use crate::edge::protocol::{ClientMessage, ErrorCode, ServerMessage, VERSION, close};
use crate::security::Now;

/// One socket: authenticate if needed, then read requests and write answers until either side
/// ends it.
pub(super) async fn session(
    shared: Arc<Shared>,
    socket: WebSocket,
    principal: Option<Principal>,
    unverified: Option<String>,
    source: std::net::IpAddr,
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
    let (out, outbox) = Outbox::new(settings.outbound_queue, settings.outbound_queue_bytes);
    out.push(&welcome(principal.as_ref()));
    // The writer owns the sink; it ends with a close frame chosen by the reader.
    let (closing, close_rx) = oneshot::channel::<(u16, String)>();
    let writer = spawn_writer(sink, outbox, out.queued.clone(), settings.ping, close_rx);

    let (finished, finished_rx) = mpsc::unbounded_channel::<String>();
    let mut requests = Requests {
        shared: shared.clone(),
        in_flight: HashMap::new(),
        tasks: TaskTracker::new(),
        finished,
        out: out.clone(),
    };
    let reader = Reader {
        shared: &shared,
        principal: principal.map(Arc::new),
        unverified,
        source,
        out: &out,
    };
    let close = reader.run(&mut stream, &mut requests, finished_rx).await;
    for token in requests.in_flight.values() {
        token.cancel();
    }
    requests.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), requests.tasks.wait()).await;
    let broken = matches!(close.0, close::TOO_BIG | close::POLICY);
    let _ = closing.send(close);
    drop(out);
    drop(requests);
    finish(writer, stream, broken).await;
}

/// The first message of a session.
fn welcome(principal: Option<&Principal>) -> ServerMessage {
    ServerMessage::Welcome {
        protocol: VERSION,
        caller: principal.map(|p| p.caller.as_str().to_string()),
        method: principal.map_or("signed", |p| p.method),
        expires: principal.and_then(|p| p.expires),
    }
}

/// The reading side of a session.
struct Reader<'a> {
    shared: &'a Shared,
    /// Who the socket speaks for; `None` on a socket that takes only signed requests.
    principal: Option<Arc<Principal>>,
    /// The rate-limit key of a signed-only socket (its address).
    unverified: Option<String>,
    /// The address the socket came from: refusals before verification are budgeted by it.
    source: std::net::IpAddr,
    out: &'a Outbox,
}

impl Reader<'_> {
    /// Reads until the session ends; the close code and reason to send.
    async fn run(
        &self,
        stream: &mut SplitStream<WebSocket>,
        requests: &mut Requests,
        mut finished_rx: mpsc::UnboundedReceiver<String>,
    ) -> (u16, String) {
        let settings = &self.shared.settings;
        let expiry = self.principal.as_ref().and_then(|p| p.expires).map(|exp| {
            let now = auth::unix(SystemTime::now());
            Instant::now() + Duration::from_secs(exp.saturating_sub(now))
        });
        // A socket without credentials (signed requests only) must start talking as soon as one
        // that authenticates by message would, or give its slot back.
        let first_wait = if self.principal.is_some() {
            settings.idle
        } else {
            settings.auth_timeout
        };
        let mut idle_deadline = Instant::now() + first_wait;
        // A change of the rules in force may revoke this socket's token.
        let mut rules = self.shared.dispatch.rule_changes();
        loop {
            let expired = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shared.stop.cancelled() => {
                    // Let in-flight requests finish within the grace period.
                    let _ = tokio::time::timeout(settings.grace, async {
                        requests.tasks.close();
                        requests.tasks.wait().await;
                    }).await;
                    return (close::GOING_AWAY, "fedgate is shutting down".into());
                }
                _ = self.out.overflow.cancelled() => {
                    metrics::counter!("fedgate_edge_refused_total", "reason" => "slow_consumer").increment(1);
                    return (close::SLOW_CONSUMER, format!("client is not reading: more than {} messages or {} bytes queued", settings.outbound_queue, settings.outbound_queue_bytes));
                }
                _ = expired => {
                    metrics::counter!("fedgate_edge_closed_total", "reason" => "token_expired").increment(1);
                    return (close::TOKEN_EXPIRED, "token expired".into());
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    metrics::counter!("fedgate_edge_closed_total", "reason" => "idle").increment(1);
                    return (close::IDLE, "idle timeout".into());
                }
                Some(id) = finished_rx.recv() => {
                    requests.in_flight.remove(&id);
                }
                Ok(()) = rules.changed() => {
                    if let Some(close) = self.revoked().await {
                        return close;
                    }
                }
                message = stream.next() => {
                    let text = match self.frame(message) {
                        Frame::Text(text) => text,
                        Frame::Skip => continue,
                        Frame::Close(code, reason) => return (code, reason),
                    };
                    // Only requests keep a socket open: pongs come from the client's library
                    // whether or not anyone is using it.
                    idle_deadline = Instant::now() + settings.idle;
                    // Ids of requests whose last message has gone out are free again, even
                    // if this loop has not yet picked up their release.
                    while let Ok(id) = finished_rx.try_recv() {
                        requests.in_flight.remove(&id);
                    }
                    if let Some(close) = self.revoked().await {
                        return close;
                    }
                    self.on_text(&text, requests).await;
                }
            }
        }
    }

    /// The close of a socket whose token the users file in force now revokes (counted, logged
    /// and recorded); `None` while it is not revoked.
    async fn revoked(&self) -> Option<(u16, String)> {
        let principal = self.principal.as_ref()?;
        let revocation = self.shared.revocation(principal)?;
        let message = self
            .shared
            .refused_revoked(principal, &revocation, "socket")
            .await;
        Some((close::TOKEN_REVOKED, message))
    }

    /// What a frame read from the socket means to the session.
    fn frame(&self, message: Option<Result<Message, axum::Error>>) -> Frame {
        match message {
            Some(Ok(Message::Text(text))) => Frame::Text(text),
            Some(Ok(Message::Binary(_))) => {
                self.out.reject(
                    None,
                    ErrorCode::Invalid,
                    "binary frames are not part of the protocol; send JSON text frames",
                );
                Frame::Skip
            }
            Some(Ok(Message::Close(_))) | None => Frame::Close(1000, String::new()),
            Some(Ok(_)) => Frame::Skip,
            Some(Err(err)) => {
                let too_big =
                    err.to_string().contains("too long") || err.to_string().contains("too big");
                if too_big {
                    metrics::counter!("fedgate_edge_refused_total", "reason" => "too_big")
                        .increment(1);
                    return Frame::Close(
                        close::TOO_BIG,
                        format!(
                            "message larger than {} bytes",
                            self.shared.settings.max_message_bytes
                        ),
                    );
                }
                Frame::Close(close::POLICY, "protocol error".into())
            }
        }
    }

    /// Acts on one text message of the client.
    async fn on_text(&self, text: &str, requests: &mut Requests) {
        let out = self.out;
        match serde_json::from_str::<ClientMessage>(text) {
            Err(err) => out.reject(
                None,
                ErrorCode::Invalid,
                format!("not a valid message: {err}"),
            ),
            Ok(ClientMessage::Auth { .. }) => {
                out.reject(None, ErrorCode::Invalid, "already authenticated")
            }
            Ok(ClientMessage::Cancel { id }) => {
                if let Some(token) = requests.in_flight.get(&id) {
                    token.cancel();
                }
            }
            Ok(ClientMessage::Rpc(rpc)) => {
                let Some(principal) = &self.principal else {
                    out.reject(
                        Some(&rpc.id),
                        ErrorCode::Invalid,
                        "this socket takes only signed requests",
                    );
                    return;
                };
                if !requests.room_for(&rpc.id) {
                    return;
                }
                let job = match Job::from_rpc(*rpc) {
                    Ok(job) => job,
                    Err((id, message)) => {
                        self.shared
                            .dispatch
                            .refused_invalid(principal, &message)
                            .await;
                        out.reject(Some(&id), ErrorCode::Invalid, message);
                        return;
                    }
                };
                requests.start(principal.clone(), job).await;
            }
            Ok(ClientMessage::Signed(signed)) => {
                if !requests.room_for(&signed.id) {
                    return;
                }
                let id = signed.id.clone();
                if let Some(key) = &self.unverified
                    && self.shared.limiter.check_key(key).is_err()
                {
                    out.reject(
                        Some(&id),
                        ErrorCode::RateLimited,
                        "rate limit exceeded; slow down",
                    );
                    return;
                }
                match self
                    .shared
                    .dispatch
                    .verify_signed(*signed, Now::system(), Some(self.source))
                    .await
                {
                    Ok((principal, job)) => requests.start(Arc::new(principal), job).await,
                    Err(refusal) => out.refuse(Some(&id), &refusal),
                }
            }
        }
    }
}

/// A frame read from the socket, as the session takes it.
enum Frame {
    /// A message to act on.
    Text(Utf8Bytes),
    /// Nothing to act on (a binary frame was answered with an error; a ping or pong).
    Skip,
    /// The session ends with this close code and reason.
    Close(u16, String),
}

/// Lets the writer send the close frame, then waits for the client's answering close.
async fn finish(mut writer: JoinHandle<()>, mut stream: SplitStream<WebSocket>, broken: bool) {
    // A client that never reads leaves the writer stuck on a full connection: give it a
    // moment to take the close frame, then drop the connection.
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
        Ok(ClientMessage::Auth { token }) => shared.principal_from_token(&token).await,
        _ => Err("the first message must be {\"type\":\"auth\",\"token\":...}".into()),
    }
}
