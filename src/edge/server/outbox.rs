//! The queue towards one socket, and the writer task that drains it, pings, and ends with the
//! close frame the session chose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::edge::protocol::{ErrorCode, ServerMessage};
use crate::gateway::Refusal;

/// The queue towards one socket, bounded in messages and in bytes: a client that falls further
/// behind than either is disconnected (close 4008) instead of growing the gateway's memory.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes queued and not yet written; the writer takes away what it writes.
    pub(super) queued: Arc<AtomicUsize>,
    max_bytes: usize,
    pub(super) overflow: CancellationToken,
}

impl Outbox {
    /// An outbox of at most `messages` messages and `max_bytes` bytes, and the writer's end.
    pub(super) fn new(messages: usize, max_bytes: usize) -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel::<Utf8Bytes>(messages);
        let outbox = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            overflow: CancellationToken::new(),
        };
        (outbox, rx)
    }

    /// Queues a message, or marks the socket overflowed.
    pub(super) fn push(&self, message: &ServerMessage) {
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
    pub(super) fn reject(&self, id: Option<&str>, code: ErrorCode, message: impl Into<String>) {
        metrics::counter!("fedgate_edge_errors_total", "code" => code.as_str()).increment(1);
        self.push(&ServerMessage::error(id, code, message));
    }

    /// Answers a request the admission path refused, and counts it.
    pub(super) fn refuse(&self, id: Option<&str>, refusal: &Refusal) {
        let message = ServerMessage::refused(id, refusal);
        if let ServerMessage::Error { code, .. } = &message {
            metrics::counter!("fedgate_edge_errors_total", "code" => code.as_str()).increment(1);
        }
        self.push(&message);
    }
}

/// A close frame; the reason is cut to the 123 bytes a close frame can carry.
pub(super) fn close_message(code: u16, reason: &str) -> Message {
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

/// Most frames written before one flush, so a burst of replies costs a few socket writes
/// instead of one each, while a ping or a close still comes through between batches.
const FRAMES_PER_FLUSH: usize = 256;

/// Writes `first` and whatever else is queued already (up to [`FRAMES_PER_FLUSH`] frames),
/// then flushes once. The socket's write buffer (`upgrade::WRITE_BUFFER`) sends full chunks on
/// the way; what is written is taken off the outbox's byte count.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    outbox: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
    queued: &AtomicUsize,
) -> Result<(), axum::Error> {
    let mut len = first.len();
    sink.feed(Message::Text(first)).await?;
    for _ in 1..FRAMES_PER_FLUSH {
        let Ok(message) = outbox.try_recv() else {
            break;
        };
        len += message.len();
        sink.feed(Message::Text(message)).await?;
    }
    sink.flush().await?;
    queued.fetch_sub(len, Ordering::Relaxed);
    Ok(())
}

/// The writer: it owns the sink, writes what is queued, pings every `ping_every`, and ends with
/// the close frame the session sends on `close_rx`.
pub(super) fn spawn_writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
    ping_every: Duration,
    close_rx: oneshot::Receiver<(u16, String)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
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
                    if write_batch(&mut sink, &mut outbox, message, &queued).await.is_err() {
                        return;
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                reason = &mut close_rx => {
                    // Flush what is already queued, then close.
                    while let Ok(message) = outbox.try_recv() {
                        if write_batch(&mut sink, &mut outbox, message, &queued).await.is_err() {
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
    })
}
