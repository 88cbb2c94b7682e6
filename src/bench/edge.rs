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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::relay::{LatencyRow, latency_row};
use super::{BenchError, Row, row, setup_err};
use crate::client::{RpcCall, RpcClient};
use crate::edge::auth::TokenKeys;
use crate::edge::client::{Connect, WsClient, open};
use crate::nats::NatsEndpoint;
use crate::natsd::NatsServer;
use crate::security::devpki::{self, DevPki};
use crate::security::{CallerId, Now, Signer};
use crate::wire::Limits;
use crate::wire::choria_v1::{
    Reply, ReplyEnvelope, RpcReply, SecureReply, SecureRequest, StatusCode, Transport,
    TransportHeaders,
};

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

/// The agent the relay source answers for; no simulated node has it.
const RELAY_AGENT: &str = "relay";

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
        };
        async move {
            crate::nats::connect(&endpoint, "fedgate-bench")
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
    let relay = relay_rates(&nats, nats_client, &connect, options.relay_messages).await?;
    throughput.push(row(
        "relay msgs/s to one WebSocket client".into(),
        "nats-server WebSocket",
        relay,
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

/// The edge's config: token users map to `choria=<user>.mcollective` in london, policy allows
/// everything, every decision goes to an audit file, and the limits are out of the way.
pub(crate) fn write_config(
    dir: &Path,
    pki: &DevPki,
    url: &str,
) -> Result<(PathBuf, PathBuf), BenchError> {
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let privileged = london
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(setup_err)?;
        }
        std::fs::write(&path, text).map_err(setup_err)?;
        Ok::<_, BenchError>(path)
    };
    let key = write("token.key", &TokenKeys::generate_pem().map_err(setup_err)?)?;
    let rules = write(
        "identity.toml",
        "[[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n",
    )?;
    write("policies/default.policy", "policy default allow\n")?;
    std::fs::create_dir_all(dir.join("audit")).map_err(setup_err)?;
    let config = write(
        "fedgate.toml",
        &format!(
            "[instance]\nname = \"bench\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n\
             [collectives.london]\nnats = [{url:?}]\nca = {:?}\n\
             tls = {{ certificate = {:?}, key = {:?} }}\n\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\nmax_connections = 20000\n\
             rate_per_second = 1000000\nrate_burst = 1000000\nmax_in_flight = 64\n\
             idle_timeout_s = 600\nping_interval_s = 600\n",
            dir.join("policies"),
            dir.join("audit/audit.log"),
            london.ca,
            london.fedgate.cert,
            london.fedgate.key,
            privileged.cert,
            privileged.key,
        ),
    )?;
    Ok((config, key))
}

/// The edge as a `fedgate run` child.
pub(crate) struct EdgeProcess {
    child: tokio::process::Child,
    pub(crate) url: String,
}

impl EdgeProcess {
    pub(crate) async fn start(exe: &Path, config: &Path) -> Result<EdgeProcess, BenchError> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(exe)
            .args(["run", "--instance", "bench", "--config"])
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(setup_err)?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| BenchError("no stderr".into()))?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once(": edge on ") {
                    return Some(url.trim().to_string());
                }
                said.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            BenchError(format!(
                "fedgate run did not start its edge: {}",
                said.join("; ")
            ))
        })?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(EdgeProcess { child, url })
    }

    fn rss_kib(&self) -> Result<u64, BenchError> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| BenchError("the edge exited".into()))?;
        rss_kib(pid)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(setup_err)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError(format!("no VmRSS for pid {pid}")))
}

/// Lets this process (and its children) open as many files as the hard limit allows.
fn raise_fd_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "could not raise the open-files limit");
    }
}

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
async fn rpc_rates(
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
async fn rpc_latency(
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

/// Messages per second reaching one WebSocket client: from a NATS subscription over
/// nats-server's WebSocket listener, and as `reply` frames from the edge.
async fn relay_rates(
    nats: &NatsServer,
    publisher: async_nats::Client,
    connect: &Connect,
    messages: usize,
) -> Result<(f64, f64), BenchError> {
    let sample = reply_transport("0123456789abcdef0123456789abcdef", "relay00000", "x");
    let payload = Bytes::from(sample.encode());

    // nats-server: a subscriber over WebSocket. A run that loses messages is reported and run
    // again on a fresh connection (it is the baseline's loss, not the edge's).
    let mut attempts = 0;
    let baseline = loop {
        attempts += 1;
        match nats_websocket_rate(nats, &publisher, &payload, messages).await {
            Ok(rate) => break rate,
            Err(err) if attempts < 3 => {
                tracing::warn!(%err, "nats-server WebSocket run failed; again")
            }
            Err(err) => return Err(err),
        }
    };

    // The edge: one broadcast answered by `messages` distinct senders, published at once.
    let source = publisher.clone();
    let mut requests = source
        .subscribe(crate::subjects::broadcast("london", RELAY_AGENT))
        .await
        .map_err(setup_err)?;
    source.flush().await.map_err(setup_err)?;
    let answer = tokio::spawn(async move {
        let message = requests.next().await?;
        let limits = Limits::default();
        let transport = Transport::decode(&message.payload, &limits).ok()?;
        let secure = SecureRequest::decode(&transport.data, &limits).ok()?;
        let request = secure.request(&limits).ok()?;
        let reply_to = transport.headers.reply_to.clone()?;
        let replies: Vec<Bytes> = (0..messages)
            .map(|n| {
                let sender = format!("relay{n:05}");
                Bytes::from(reply_transport(&request.envelope.requestid, &sender, "x").encode())
            })
            .collect();
        for reply in replies {
            source.publish(reply_to.clone(), reply).await.ok()?;
        }
        source.flush().await.ok()
    });
    let mut socket = open(connect).await.map_err(setup_err)?;
    let request = json!({"type":"rpc","id":"relay","collective":"london","agent":RELAY_AGENT,"action":"ping","limit":messages,"timeout_ms":60000});
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .map_err(setup_err)?;
    let (mut first, mut replies) = (None, 0usize);
    let took = loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| BenchError("edge relay: no frame for 60 s".into()))?;
        let Some(Ok(Message::Text(text))) = frame else {
            continue;
        };
        if text.as_str().starts_with(r#"{"type":"reply""#) {
            first.get_or_insert_with(Instant::now);
            replies += 1;
            if replies == messages {
                break first.map_or(Duration::ZERO, |f| f.elapsed());
            }
        } else if !text.as_str().starts_with(r#"{"type":"welcome""#) {
            return Err(BenchError(format!("edge relay: {text}")));
        }
    };
    let _ = answer.await;
    let _ = socket.close(None).await;
    Ok((
        baseline,
        messages.saturating_sub(1) as f64 / took.as_secs_f64(),
    ))
}

/// Messages per second reaching one NATS subscriber over nats-server's WebSocket listener, from
/// its first message to its last.
async fn nats_websocket_rate(
    nats: &NatsServer,
    publisher: &async_nats::Client,
    payload: &Bytes,
    messages: usize,
) -> Result<f64, BenchError> {
    let ws_url = nats
        .websocket_url()
        .ok_or_else(|| BenchError("nats-server reported no websocket port".into()))?;
    let subscriber = async_nats::connect(ws_url).await.map_err(setup_err)?;
    let mut subscription = subscriber
        .subscribe("bench.relay")
        .await
        .map_err(setup_err)?;
    subscriber.flush().await.map_err(setup_err)?;
    let receive = async {
        let mut first = None;
        for n in 0..messages {
            match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
                Ok(Some(_)) => {
                    first.get_or_insert_with(Instant::now);
                }
                Ok(None) => {
                    return Err(BenchError(format!(
                        "nats-server WebSocket: the subscription ended after {n} of {messages} messages"
                    )));
                }
                Err(_) => {
                    return Err(BenchError(format!(
                        "nats-server WebSocket: {n} of {messages} messages arrived, then none for 10 s"
                    )));
                }
            }
        }
        Ok(first.map_or(Duration::ZERO, |f| f.elapsed()))
    };
    let send = async {
        for _ in 0..messages {
            publisher
                .publish("bench.relay", payload.clone())
                .await
                .map_err(setup_err)?;
        }
        publisher.flush().await.map_err(setup_err)
    };
    let (took, sent) = tokio::join!(receive, send);
    sent?;
    Ok(messages.saturating_sub(1) as f64 / took?.as_secs_f64())
}

/// A node's reply transport to `requestid`, as the simulated fleet builds it.
fn reply_transport(requestid: &str, sender: &str, pong: &str) -> Transport {
    let body = RpcReply::new("ping", StatusCode::Ok, "OK", json!({"pong": pong}));
    let envelope = ReplyEnvelope {
        requestid: requestid.to_string(),
        senderid: sender.to_string(),
        agent: RELAY_AGENT.to_string(),
        time: Now::system().unix_seconds(),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let secure = SecureReply::new(Reply::new(body, envelope).encode_string());
    let headers = TransportHeaders {
        mc_sender: Some(sender.to_string()),
        ..TransportHeaders::default()
    };
    Transport::new(secure.encode(), headers)
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

async fn idle_memory_edge(
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

async fn idle_memory_nats(nats: &NatsServer, sockets: usize) -> Result<MemoryRow, BenchError> {
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
