//! The RPC comparison: `rpcutil ping` through the edge and by `fedgate rpc`'s client on NATS,
//! as a rate with several in flight and as latency one at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::EdgeOptions;
use crate::bench::relay::{LatencyRow, latency_row};
use crate::bench::{BenchError, setup_err};
use fedgate::client::{RpcCall, RpcClient};
use fedgate::edge::client::{Connect, WsClient};

fn ping(id: &str, nodes: usize) -> serde_json::Value {
    json!({"type":"rpc","id":id,"collective":"london","agent":"rpcutil","action":"ping","limit":nodes,"timeout_ms":10000})
}

fn direct_call(nodes: usize) -> RpcCall {
    RpcCall {
        expect: Some(nodes),
        ..RpcCall::new("london", "rpcutil", "ping")
    }
}

async fn direct_ping(client: &RpcClient, nodes: usize) -> Result<(), BenchError> {
    let summary = client
        .call(&direct_call(nodes), |_| {})
        .await
        .map_err(setup_err)?;
    if summary.responses != nodes {
        return Err(BenchError(format!(
            "direct ping: {} of {nodes} replies",
            summary.responses
        )));
    }
    Ok(())
}

async fn edge_ping(client: &mut WsClient, id: &str, nodes: usize) -> Result<(), BenchError> {
    let done = client
        .call(&ping(id, nodes), |_| {})
        .await
        .map_err(setup_err)?;
    if done["responses"].as_u64() != Some(nodes as u64) {
        return Err(BenchError(format!("edge ping: {done}")));
    }
    Ok(())
}

/// Requests per second with `concurrency` callers, in alternating slices.
pub(super) async fn rpc_rates(
    direct: &Arc<RpcClient>,
    connect: &Connect,
    options: &EdgeOptions,
) -> Result<(f64, f64), BenchError> {
    let mut sockets = Vec::new();
    for _ in 0..options.concurrency {
        sockets.push(WsClient::connect(connect).await.map_err(setup_err)?);
    }
    const SLICES: u32 = 4;
    let slice = Duration::from_secs_f64(options.seconds / f64::from(SLICES));
    let (mut direct_done, mut edge_done) = (0usize, 0usize);
    let (mut direct_time, mut edge_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..SLICES {
        let started = Instant::now();
        let runs = (0..options.concurrency).map(|_| {
            let client = direct.clone();
            async move {
                let mut n = 0;
                while started.elapsed() < slice {
                    direct_ping(&client, options.nodes).await?;
                    n += 1;
                }
                Ok::<_, BenchError>(n)
            }
        });
        for n in futures::future::join_all(runs).await {
            direct_done += n?;
        }
        direct_time += started.elapsed();

        let started = Instant::now();
        let counter = AtomicUsize::new(0);
        let runs = sockets.iter_mut().map(|socket| {
            let counter = &counter;
            async move {
                let mut n = 0;
                while started.elapsed() < slice {
                    let id = format!("t{}", counter.fetch_add(1, Ordering::Relaxed));
                    edge_ping(socket, &id, options.nodes).await?;
                    n += 1;
                }
                Ok::<_, BenchError>(n)
            }
        });
        for n in futures::future::join_all(runs).await {
            edge_done += n?;
        }
        edge_time += started.elapsed();
    }
    for socket in sockets {
        socket.close().await;
    }
    Ok((
        direct_done as f64 / direct_time.as_secs_f64(),
        edge_done as f64 / edge_time.as_secs_f64(),
    ))
}

/// One request at a time, the two paths taking turns.
pub(super) async fn rpc_latency(
    direct: &RpcClient,
    connect: &Connect,
    options: &EdgeOptions,
) -> Result<Vec<LatencyRow>, BenchError> {
    let mut socket = WsClient::connect(connect).await.map_err(setup_err)?;
    let (mut base, mut edge) = (Vec::new(), Vec::new());
    for n in 0..options.latency_samples {
        let started = Instant::now();
        direct_ping(direct, options.nodes).await?;
        base.push(started.elapsed());
        let started = Instant::now();
        edge_ping(&mut socket, &format!("l{n}"), options.nodes).await?;
        edge.push(started.elapsed());
    }
    socket.close().await;
    let base_row = latency_row("fedgate rpc on NATS", &mut base, None);
    let edge_row = latency_row("fedgate edge (ws://)", &mut edge, Some(&base_row));
    Ok(vec![base_row, edge_row])
}
