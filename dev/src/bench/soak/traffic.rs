//! The three load generators (WebSocket, federation and legacy), each at its own fixed rate,
//! and the tally of what became of their requests.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use super::child::Child;
use super::legacy_client::LegacyClient;
use super::report::KindReport;
use super::topology::{Topology, endpoint, realm};
use super::{REQUEST_TIMEOUT, SoakOptions};
use crate::bench::{BenchError, setup_err};
use fedgate::client::{RpcCall, RpcClient};
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient};
use fedgate::security::{CallerId, Signer};
use fedgate::wire::Limits;

/// Counters and latencies of one traffic kind.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn report(&self, kind: &str) -> KindReport {
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        KindReport {
            kind: kind.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// The three load generators.
pub(super) struct Traffic {
    nodes: usize,
    edge: Connect,
    sockets: Arc<Pool>,
    federation: Arc<RpcClient>,
    legacy: Arc<LegacyClient>,
    pub(super) in_flight: Arc<AtomicU64>,
}

impl Traffic {
    pub(super) async fn connect(
        topology: &Topology,
        child: &Child,
        options: &SoakOptions,
    ) -> Result<Traffic, BenchError> {
        let keys = TokenKeys::load(&topology.token_key).map_err(setup_err)?;
        let token = keys
            .issue(
                "alice",
                options.duration + Duration::from_secs(3600),
                None,
                SystemTime::now(),
            )
            .map_err(setup_err)?;
        let edge = Connect {
            url: child.edge.clone(),
            token: Some(token),
            ..Connect::default()
        };
        let prod = realm(&topology.pki, "prod")?;
        let alice = &prod.users["alice"];
        let client = fedgate::nats::connect(&endpoint(&topology.prod, prod, alice), "soak-client")
            .await
            .map_err(setup_err)?;
        let federation = Arc::new(RpcClient::new(
            client,
            Arc::new(Signer::from_files(&alice.cert, &alice.key).map_err(setup_err)?),
            CallerId::parse("choria=alice.mcollective").map_err(setup_err)?,
            "soak.example".into(),
            Limits::default(),
        ));
        let legacy = Arc::new(
            LegacyClient::connect(
                &options.amqp,
                &topology.collective,
                &topology.legacy_keys.join("alice-private.pem"),
            )
            .await?,
        );
        Ok(Traffic {
            nodes: options.nodes,
            edge,
            sockets: Arc::default(),
            federation,
            legacy,
            in_flight: Arc::default(),
        })
    }

    /// Drives all three kinds until `until`, then waits for the requests in flight.
    pub(super) async fn drive(&self, options: &SoakOptions, until: Instant) -> Vec<KindReport> {
        let nodes = self.nodes;
        let ws = Arc::new(Tally::default());
        let federation = Arc::new(Tally::default());
        let legacy = Arc::new(Tally::default());
        let edge = self.edge.clone();
        let sockets = self.sockets.clone();
        let ws_run = drive(
            options.ws_rate,
            until,
            options.window,
            ws.clone(),
            self.in_flight.clone(),
            move |n| {
                let (edge, sockets) = (edge.clone(), sockets.clone());
                async move { ws_ping(&edge, &sockets, n, nodes).await }
            },
        );
        let client = self.federation.clone();
        let federation_run = drive(
            options.federation_rate,
            until,
            options.window,
            federation.clone(),
            self.in_flight.clone(),
            move |_| {
                let client = client.clone();
                async move {
                    let mut call = RpcCall::new("london", "rpcutil", "ping");
                    call.federation = Some("prod".into());
                    call.expect = Some(nodes);
                    call.timeout = REQUEST_TIMEOUT;
                    let summary = client
                        .call(&call, |_| {})
                        .await
                        .map_err(|e| e.to_string())?;
                    if summary.ok != nodes {
                        return Err(format!("{} of {nodes} replies ok", summary.ok));
                    }
                    Ok(())
                }
            },
        );
        let client = self.legacy.clone();
        let legacy_run = drive(
            options.legacy_rate,
            until,
            options.window,
            legacy.clone(),
            self.in_flight.clone(),
            move |n| {
                let client = client.clone();
                async move { client.ping(n, nodes).await }
            },
        );
        tokio::join!(ws_run, federation_run, legacy_run);
        let sockets = std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|p| p.into_inner()));
        for (socket, _) in sockets {
            socket.close().await;
        }
        self.legacy.close().await;
        vec![
            ws.report("websocket"),
            federation.report("federation"),
            legacy.report("legacy"),
        ]
    }
}

/// Starts one request every `1 / rate` seconds until `until`, at most `window` in flight, and
/// waits for the last to end.
async fn drive<F, Fut>(
    rate: f64,
    until: Instant,
    window: usize,
    tally: Arc<Tally>,
    in_flight: Arc<AtomicU64>,
    request: F,
) where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if rate <= 0.0 {
        return;
    }
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        n += 1;
        tally.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.fetch_add(1, Ordering::Relaxed);
        let future = request(n);
        let (tally, in_flight) = (tally.clone(), in_flight.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(REQUEST_TIMEOUT, future)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
            match result {
                Ok(()) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    let mut latencies = tally.latencies.lock().unwrap_or_else(|p| p.into_inner());
                    // About 10 requests a second for hours: bounded all the same.
                    if latencies.len() < 1_000_000 {
                        latencies.push(started.elapsed());
                    }
                }
                Err(err) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    let mut errors = tally.errors.lock().unwrap_or_else(|p| p.into_inner());
                    if errors.len() < 10 {
                        errors.push(err);
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A pooled socket unused for this long is closed and replaced, as a client's pool would:
/// the edge closes sockets that send nothing for `idle_timeout_s` (300 s by default).
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Sockets of the WebSocket traffic, with when each was last used.
type Pool = Mutex<Vec<(WsClient, Instant)>>;

/// A ping through the edge on a pooled socket, or on a socket of its own every 50th time.
async fn ws_ping(edge: &Connect, pool: &Pool, n: u64, nodes: usize) -> Result<(), String> {
    let churn = n.is_multiple_of(50);
    let pooled = if churn {
        None
    } else {
        pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
    };
    let pooled = match pooled {
        Some((socket, used)) if used.elapsed() > POOL_IDLE => {
            socket.close().await;
            None
        }
        other => other.map(|(socket, _)| socket),
    };
    let mut socket = match pooled {
        Some(socket) => socket,
        None => WsClient::connect(edge)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    };
    let request = serde_json::json!({
        "type": "rpc", "id": format!("s{n}"), "collective": "london",
        "agent": "rpcutil", "action": "ping", "limit": nodes,
        "timeout_ms": REQUEST_TIMEOUT.as_millis() as u64,
    });
    let done = socket
        .call(&request, |_| {})
        .await
        .map_err(|e| format!("socket: {e}"))?;
    if done["type"] != "done" || done["responses"].as_u64() != Some(nodes as u64) {
        return Err(format!("edge answered {done}"));
    }
    if churn {
        socket.close().await;
    } else {
        pool.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((socket, Instant::now()));
    }
    Ok(())
}
