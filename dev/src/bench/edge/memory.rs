//! The memory comparison: resident memory per idle socket, the edge's next to nats-server's
//! WebSocket listener's.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::process::{EdgeProcess, rss_kib};
use crate::bench::{BenchError, setup_err};
use crate::natsd::NatsServer;
use fedgate::edge::client::{Connect, WsClient};

/// Resident memory per idle socket.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryRow {
    /// What holds the sockets.
    pub server: String,
    /// Sockets open.
    pub sockets: usize,
    /// Resident memory before, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with the sockets open, KiB.
    pub rss_after_kib: u64,
    /// Growth per socket, KiB.
    pub per_socket_kib: f64,
}

/// Opens `count` sockets, `batch` at a time, with `open_one`, and returns them.
async fn open_many<T, F, Fut>(count: usize, open_one: F) -> Result<Vec<T>, BenchError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    const BATCH: usize = 200;
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let n = BATCH.min(count - open.len());
        for socket in futures::future::join_all((0..n).map(|_| open_one())).await {
            open.push(socket?);
        }
    }
    Ok(open)
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

pub(super) async fn idle_memory_edge(
    edge: &EdgeProcess,
    connect: &Connect,
    sockets: usize,
) -> Result<MemoryRow, BenchError> {
    settle().await;
    let before = edge.rss_kib()?;
    let open = open_many(sockets, || async {
        WsClient::connect(connect).await.map_err(setup_err)
    })
    .await?;
    settle().await;
    let after = edge.rss_kib()?;
    drop(open);
    Ok(memory_row("fedgate edge (token)", sockets, before, after))
}

pub(super) async fn idle_memory_nats(
    nats: &NatsServer,
    sockets: usize,
) -> Result<MemoryRow, BenchError> {
    let url = nats
        .websocket_url()
        .ok_or_else(|| BenchError("nats-server reported no websocket port".into()))?;
    settle().await;
    let before = rss_kib(nats.pid())?;
    let open = open_many(sockets, || async {
        // A NATS client over WebSocket: read INFO, send CONNECT and PING, wait for PONG.
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(setup_err)?;
        socket.next().await;
        socket
            .send(Message::Binary(Bytes::from_static(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n",
            )))
            .await
            .map_err(setup_err)?;
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(data))) if data.starts_with(b"PONG") => break,
                Some(Ok(Message::Text(text))) if text.as_str().starts_with("PONG") => break,
                Some(Ok(_)) => continue,
                _ => return Err(BenchError("nats-server WebSocket: no PONG".into())),
            }
        }
        Ok(socket)
    })
    .await?;
    settle().await;
    let after = rss_kib(nats.pid())?;
    drop(open);
    Ok(memory_row("nats-server WebSocket", sockets, before, after))
}

fn memory_row(server: &str, sockets: usize, before: u64, after: u64) -> MemoryRow {
    MemoryRow {
        server: server.into(),
        sockets,
        rss_before_kib: before,
        rss_after_kib: after,
        per_socket_kib: after.saturating_sub(before) as f64 / sockets.max(1) as f64,
    }
}

/// Renders the memory rows as a table.
pub fn memory_table(rows: &[MemoryRow]) -> String {
    let mut out = format!(
        "{:<28} {:>8} {:>12} {:>12} {:>14}\n",
        "memory per idle socket", "sockets", "RSS before", "RSS after", "KiB per socket"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:>8} {:>9} KiB {:>9} KiB {:>14.1}\n",
            r.server, r.sockets, r.rss_before_kib, r.rss_after_kib, r.per_socket_kib
        ));
    }
    out
}
