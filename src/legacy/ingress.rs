//! Legacy clients to Choria: fedgate takes `mco` requests from RabbitMQ, verifies them as the
//! `ssl` plugin would (and more), maps `cert=<name>` into the Choria collective, authorizes,
//! audits, re-signs with its privileged certificate, and answers each Choria reply with a
//! legacy reply signed by the servers' shared key, to the request's `reply_to`.
//!
//! Requests arrive on one durable queue per legacy collective, shared by every fedgate instance:
//! bound to `<collective>_broadcast` for the bridged agents and to `<collective>_directed` for
//! every node the Choria collective's discovery reports (refreshed periodically). A delivery is
//! acknowledged once its request is published to NATS, or once it is refused and recorded. A
//! request that waits in the queue past its TTL is refused as `ttl_expired` and its caller told;
//! the broker drops it 10 s later (mco sets `expiration` to its TTL plus 10 s).
//!
//! Before anything is allowed, a delivery must agree with its route (a broadcast's routing key
//! is the signed agent; a directed copy's agent is bridged), have at least a Choria request's
//! least TTL left (the copy re-signed into Choria lives only as long as what is left), and not
//! be signed with one of fedgate's own keys (`signers`): what fedgate publishes into the legacy
//! collective never comes back in. A refused caller whose signature verified is answered with a
//! signed SimpleRPC reply, status 1 (aborted), naming the refusal.

mod checks;
mod deliver;
mod directed;
mod forward;
mod replies;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LegacyBridgeConfig, LegacyConfig};
use crate::gateway::gate::Gate;
use crate::security::Signer;
use crate::security::legacy::{LegacySigner, LegacyVerifier, OwnKeys};

/// How the sender id of every request the bridge signs into Choria begins (then the instance).
/// It is signed with the request, so no one can strip it from fedgate's requests; a caller who
/// puts it in its own only has its own requests dropped.
pub const BRIDGE_SENDER_PREFIX: &str = "fedgate-bridge-";
/// Most node identities bound for directed requests.
pub const MAX_DIRECTED: usize = 100_000;
/// Requests collecting replies at once per instance. A broadcast collects until its replies
/// have been quiet for 2 s, so this bounds throughput at about `IN_FLIGHT / 2` per second
/// (each costs a reply subscription and a small task).
const IN_FLIGHT: usize = 8192;
/// Longest a bridged request collects Choria replies.
const MAX_COLLECT: Duration = Duration::from_secs(60);
/// How long a request fedgate could not act on waits before it goes back on the queue.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
#[error("legacy bridge {name}: {message}")]
pub struct IngressError {
    name: String,
    message: String,
}

/// What every delivery's task shares.
struct Shared {
    name: String,
    legacy: LegacyConfig,
    bridge: LegacyBridgeConfig,
    verifier: LegacyVerifier,
    server: LegacySigner,
    gate: Arc<Gate>,
    /// The collective, or each member collective of the federation, requests go to.
    targets: Vec<Target>,
    /// Which target's discovery found each node, for directed requests.
    homes: std::sync::RwLock<std::collections::HashMap<String, usize>>,
    sender: String,
    publisher: lapin::Channel,
    /// fedgate's own requests dropped.
    own_dropped: Arc<AtomicU64>,
}

/// A Choria collective the bridge re-signs into.
struct Target {
    collective: String,
    internal: String,
    nats: async_nats::Client,
    signer: Arc<Signer>,
}

/// A running legacy-to-Choria bridge for one legacy collective.
pub struct Ingress {
    bound: Arc<AtomicUsize>,
    own_dropped: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    _connection: Connection,
    /// The AMQP connection's readiness, watched while the bridge runs.
    _ready: Arc<crate::health::Status>,
}

impl Ingress {
    /// Connects to RabbitMQ and to the Choria collective, declares and binds the request queue,
    /// and starts consuming.
    pub async fn start(
        config: &Config,
        name: &str,
        gate: Arc<Gate>,
        instance: &str,
    ) -> Result<Ingress, IngressError> {
        let fail = |message: String| IngressError {
            name: name.to_string(),
            message,
        };
        let legacy = config
            .legacy
            .get(name)
            .ok_or_else(|| fail("no such legacy collective".into()))?
            .clone();
        let bridge = legacy
            .bridge
            .clone()
            .ok_or_else(|| fail("no [bridge]".into()))?;
        let (Some(client_keys), Some(server_private)) =
            (&legacy.client_keys, &legacy.server_private)
        else {
            return Err(fail("needs client_keys and server_private".into()));
        };
        // fedgate's own signing keys are refused whatever the client-key folder holds.
        let verifier = LegacyVerifier::new(client_keys, &legacy.server_public, legacy.max_skew_s)
            .map_err(|e| fail(e.to_string()))?
            .refusing_own(OwnKeys::load(&legacy.signers))
            .enforcing_ttl(bridge.enforce_ttl);
        let server =
            LegacySigner::from_file(server_private, "server").map_err(|e| fail(e.to_string()))?;
        let targets = connect_targets(config, &bridge, instance)
            .await
            .map_err(fail)?;
        let connection = super::amqp::Broker::new(&legacy)
            .map_err(|e| fail(format!("amqp: {e}")))?
            .connect(&format!("fedgate {instance} bridge {name}"))
            .await
            .map_err(|e| fail(format!("amqp: {e}")))?;
        let consumer_channel = connection
            .create_channel()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let queue = bridge
            .queue
            .clone()
            .unwrap_or_else(|| format!("fedgate.{name}.requests"));
        let consumer = open_queue(&consumer_channel, &queue, &legacy, &bridge, instance)
            .await
            .map_err(fail)?;
        let own_dropped = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            legacy,
            bridge,
            verifier,
            server,
            gate,
            targets,
            homes: Default::default(),
            sender: format!("{BRIDGE_SENDER_PREFIX}{instance}"),
            publisher,
            own_dropped: own_dropped.clone(),
        });
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        // The directed bindings follow the Choria collective's nodes.
        let bound = Arc::new(AtomicUsize::new(0));
        let directed = directed::Directed {
            shared: shared.clone(),
            channel: consumer_channel.clone(),
            queue: queue.clone(),
            bound: BTreeSet::new(),
            count: bound.clone(),
        };
        directed.refresh_forever(stop.clone(), &tasks).await;
        consume(shared, consumer, stop.clone(), tasks.clone());
        Ok(Ingress {
            bound,
            own_dropped,
            stop,
            tasks,
            _ready: super::amqp::watch(&connection, format!("amqp legacy {name} (bridge)")),
            _connection: connection,
        })
    }

    /// How many nodes directed requests are bound for now.
    pub fn directed_bindings(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    /// How many requests fedgate published itself came back and were dropped.
    pub fn own_requests_dropped(&self) -> u64 {
        self.own_dropped.load(Ordering::Relaxed)
    }

    /// Stops consuming and waits for requests in hand (unacknowledged ones are redelivered).
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        let _ = self._connection.close(200, "shutdown".into()).await;
    }
}

/// Connects to each collective the bridge re-signs into, with its signer.
async fn connect_targets(
    config: &Config,
    bridge: &LegacyBridgeConfig,
    instance: &str,
) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for name in config.bridge_targets(bridge)? {
        let collective = config
            .collectives
            .get(&name)
            .ok_or_else(|| format!("no collective {name}"))?;
        let signer_files = collective
            .signer
            .as_ref()
            .ok_or_else(|| format!("collective {name} has no signer"))?;
        let signer = Signer::from_files(&signer_files.certificate, &signer_files.key)
            .map_err(|e| e.to_string())?;
        let nats = crate::nats::connect_watched(
            &collective.endpoint(),
            &format!("fedgate legacy bridge {instance}"),
            &format!("nats collective {name} (legacy bridge)"),
        )
        .await
        .map_err(|e| format!("{name}: {e}"))?;
        targets.push(Target {
            internal: collective.internal_name(&name).to_string(),
            collective: name,
            nats,
            signer: Arc::new(signer),
        });
    }
    Ok(targets)
}

/// Declares the durable request queue, binds it to the bridged agents' broadcasts, and
/// starts consuming it.
async fn open_queue(
    channel: &lapin::Channel,
    queue: &str,
    legacy: &LegacyConfig,
    bridge: &LegacyBridgeConfig,
    instance: &str,
) -> Result<lapin::Consumer, String> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .map_err(|e| format!("declaring {queue}: {e}"))?;
    let broadcast = format!("{}_broadcast", legacy.collective);
    for agent in &bridge.agents {
        channel
            .queue_bind(
                queue.into(),
                broadcast.as_str().into(),
                agent.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("binding {queue} to {broadcast}/{agent}: {e}"))?;
    }
    channel
        .basic_qos(bridge.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    channel
        .basic_consume(
            queue.into(),
            format!("fedgate-{instance}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Takes deliveries until `stop`, each in a task of its own, at most [`IN_FLIGHT`] at once.
fn consume(
    shared: Arc<Shared>,
    mut consumer: lapin::Consumer,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let delivery_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return,
                delivery = consumer.next() => delivery,
            };
            let Some(delivery) = delivery else { return };
            let Ok(delivery) = delivery else {
                // lapin recovers the connection and re-creates the consumer.
                continue;
            };
            // Deliveries are acknowledged once published, so prefetch alone does not bound
            // the requests still collecting replies.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let shared = shared.clone();
            delivery_tasks.spawn(async move {
                shared.handle(delivery).await;
                drop(permit);
            });
        }
    });
}
