//! The WebSocket edge next to its baselines, in one run on loopback:
//!
//! - RPC: the same `rpcutil ping` to a simulated collective made through the edge (verify,
//!   map, authorize, audit, re-sign, publish, relay replies as JSON) and by `fedgate rpc`'s
//!   client straight on NATS; requests per second with several in flight, and latency one at a
//!   time, interleaved.
//! - Relay: messages delivered per second to one WebSocket client, by nats-server's own
//!   WebSocket listener (a NATS subscription over WebSocket) and by the edge (node replies
//!   relayed as `reply` frames).
//! - Memory: resident memory per idle socket with many open, the edge (authenticated with a
//!   token) next to nats-server's WebSocket listener (a connected NATS client).
//!
//! The edge runs as a `fedgate run` child process, as in production, so its memory can be read
//! from `/proc`.

mod memory;
mod process;
mod rpc;
mod ws_relay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::relay::LatencyRow;
use super::{BenchError, Row, row, setup_err};
use crate::devpki;
use fedgate::client::RpcClient;
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::Connect;
use fedgate::nats::NatsEndpoint;
use fedgate::security::{CallerId, Signer};
use fedgate::wire::Limits;
use memory::{idle_memory_edge, idle_memory_nats};
use rpc::{rpc_latency, rpc_rates};
use ws_relay::relay_rates;

pub use memory::{MemoryRow, memory_table};
pub(crate) use process::{EdgeProcess, write_config};

/// How much to measure.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Simulated nodes answering each ping.
    pub nodes: usize,
    /// Time each side of the throughput comparison runs.
    pub seconds: f64,
    /// Requests in flight during the throughput comparison.
    pub concurrency: usize,
    /// Requests per side of the latency comparison.
    pub latency_samples: usize,
    /// Messages per side of the relay comparison.
    pub relay_messages: usize,
    /// Idle sockets per side of the memory comparison.
    pub sockets: usize,
    /// The `fedgate` binary that runs the edge.
    pub exe: PathBuf,
}

/// The edge benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeReport {
    /// Requests per second and relayed messages per second against their baselines.
    pub throughput: Vec<Row>,
    /// Request latency of each path.
    pub latency: Vec<LatencyRow>,
    /// Memory per idle socket.
    pub memory: Vec<MemoryRow>,
}

/// Runs the benchmark with its files under `work_dir`.
pub async fn run(work_dir: &Path, options: &EdgeOptions) -> Result<EdgeReport, BenchError> {
    raise_fd_limit();
    // nats-server's WebSocket listener is plain, like the edge's ws:// here.
    let (pki, nats) = super::tls_collective(work_dir, true)?;
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let connect_as = |pair: &devpki::CertPair| {
        let endpoint = NatsEndpoint {
            urls: vec![nats.url().to_string()],
            ca: Some(london.ca.clone()),
            identity: Some((pair.cert.clone(), pair.key.clone())),
            auth: None,
        };
        async move {
            fedgate::nats::connect(&endpoint, "fedgate-bench")
                .await
                .map_err(setup_err)
        }
    };
    let fleet_identity = london
        .fleet
        .as_ref()
        .ok_or_else(|| BenchError("no fleet identity".into()))?;
    let fleet = super::start_fleet(&pki, connect_as(fleet_identity).await?, options.nodes).await?;
    let (config, key) = write_config(work_dir, &pki, nats.url())?;
    let edge = EdgeProcess::start(&options.exe, &config).await?;
    let keys = TokenKeys::load(&key).map_err(setup_err)?;
    let token = keys
        .issue("alice", Duration::from_secs(3600), None, SystemTime::now())
        .map_err(setup_err)?;
    let connect = Connect {
        url: edge.url.clone(),
        token: Some(token),
        ..Connect::default()
    };
    let alice = &london.users["alice"];
    let signer = Arc::new(Signer::from_files(&alice.cert, &alice.key).map_err(setup_err)?);
    let caller = CallerId::parse("choria=alice.mcollective").map_err(setup_err)?;
    let nats_client = connect_as(alice).await?;
    let direct = Arc::new(RpcClient::new(
        nats_client.clone(),
        signer,
        caller,
        "bench.example".into(),
        Limits::default(),
    ));

    let mut throughput = Vec::new();
    let rpc = rpc_rates(&direct, &connect, options).await?;
    throughput.push(row(
        format!(
            "rpc req/s ({} nodes, {} in flight)",
            options.nodes, options.concurrency
        ),
        "fedgate rpc on NATS",
        rpc,
    ));
    let latency = rpc_latency(&direct, &connect, options).await?;
    let (base, relay) =
        relay_rates(&nats, nats_client, &edge, &connect, options.relay_messages).await?;
    throughput.push(row(
        "relay msgs/s to one WebSocket client".into(),
        "nats-server WebSocket",
        (base.per_second, relay.per_second),
    ));
    // What each relaying process spends on a message: how close the edge is to the bound of
    // its own CPU, apart from the cores it shares with the client, nats-server and the source.
    throughput.push(row(
        "  the same, msgs per CPU second of the relay".into(),
        "nats-server WebSocket",
        (base.per_cpu_second, relay.per_cpu_second),
    ));
    drop(fleet);
    let memory = vec![
        idle_memory_nats(&nats, options.sockets).await?,
        idle_memory_edge(&edge, &connect, options.sockets).await?,
    ];
    edge.stop().await;
    Ok(EdgeReport {
        throughput,
        latency,
        memory,
    })
}

/// Lets this process (and its children) open as many files as the hard limit allows.
fn raise_fd_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "could not raise the open-files limit");
    }
}
