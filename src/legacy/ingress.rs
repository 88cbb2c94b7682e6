//! Legacy clients to Choria: fedgate takes `mco` requests from RabbitMQ, verifies them as the
//! `ssl` plugin would (and more), maps `cert=<name>` into the Choria collective, authorizes,
//! audits, re-signs with its privileged certificate, and answers each Choria reply with a
//! legacy reply signed by the servers' shared key, to the request's `reply_to`.
//!
//! Requests arrive on one durable queue per legacy collective, shared by every fedgate instance:
//! bound to `<collective>_broadcast` for the bridged agents and to `<collective>_directed` for
//! every node the Choria collective's discovery reports (refreshed periodically). A delivery is
//! acknowledged once its request is published to NATS, or once it is refused and recorded; a
//! request that waits in the queue past its TTL expires there (mco sets `expiration`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::audit::{Event, Verdict};
use crate::client::{RpcCall, RpcClient};
use crate::config::{Config, LegacyBridgeConfig, LegacyConfig};
use crate::gateway::gate::{self, Gate};
use crate::policy::Query;
use crate::rules::Rules;
use crate::security::identity::Mapping;
use crate::security::legacy::{LegacyCall, LegacySigner, LegacyVerifier};
use crate::security::{CallerId, Now, Signer};
use crate::wire::Limits;
use crate::wire::choria_v1::{FactFilter, FactOperator, Filter};
use crate::wire::mcollective::envelope::LegacyRequest;
use crate::wire::mcollective::{Ruby, Serializer};

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

/// Why a delivery was refused for good: the code, the reason, and the record to write.
type Refusal = (&'static str, String, Event);

/// Why a target collective did not take a request.
enum NotAdmitted {
    /// Refused: the record to write.
    Refused(Box<Refusal>),
    /// Allowed, but the decision could not be recorded.
    Unrecorded(String),
}

/// What became of a delivery that was not refused.
enum Handled {
    /// Forwarded and acknowledged.
    Forwarded,
    /// fedgate could not act on it now (its audit trail or the Choria network failed): it goes
    /// back on the queue, and is taken again until it expires.
    Retry(&'static str, String),
}

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
}

/// A Choria collective the bridge re-signs into.
struct Target {
    collective: String,
    internal: String,
    nats: async_nats::Client,
    signer: Arc<Signer>,
}

/// A request admitted into one target: mapped, authorized and recorded.
struct Admitted<'s> {
    target: &'s Target,
    mapped: CallerId,
    filter: Filter,
    event: Event,
    link: String,
}

/// A running legacy-to-Choria bridge for one legacy collective.
pub struct Ingress {
    bound: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    _connection: Connection,
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
        let verifier = LegacyVerifier::new(client_keys, &legacy.server_public, legacy.max_skew_s)
            .map_err(|e| fail(e.to_string()))?;
        let server =
            LegacySigner::from_file(server_private, "server").map_err(|e| fail(e.to_string()))?;
        let mut targets = Vec::new();
        for name in config.bridge_targets(&bridge).map_err(fail)? {
            let collective = config
                .collectives
                .get(&name)
                .ok_or_else(|| fail(format!("no collective {name}")))?;
            let signer_files = collective
                .signer
                .as_ref()
                .ok_or_else(|| fail(format!("collective {name} has no signer")))?;
            let signer = Signer::from_files(&signer_files.certificate, &signer_files.key)
                .map_err(|e| fail(e.to_string()))?;
            let nats = crate::nats::connect(
                &collective.endpoint(),
                &format!("fedgate legacy bridge {instance}"),
            )
            .await
            .map_err(|e| fail(format!("{name}: {e}")))?;
            targets.push(Target {
                internal: collective.internal_name(&name).to_string(),
                collective: name,
                nats,
                signer: Arc::new(signer),
            });
        }

        let properties = ConnectionProperties::default()
            .with_connection_name(format!("fedgate {instance} bridge {name}").into())
            .enable_auto_recover()
            .configure_backoff(|b| {
                b.with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(1000)
            });
        let connection = Connection::connect(&legacy.amqp, properties)
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
        consumer_channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(format!("declaring {queue}: {e}")))?;
        let broadcast = format!("{}_broadcast", legacy.collective);
        for agent in &bridge.agents {
            consumer_channel
                .queue_bind(
                    queue.as_str().into(),
                    broadcast.as_str().into(),
                    agent.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| fail(format!("binding {queue} to {broadcast}/{agent}: {e}")))?;
        }
        consumer_channel
            .basic_qos(bridge.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                format!("fedgate-{instance}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;

        let shared = Arc::new(Shared {
            name: name.to_string(),
            legacy,
            bridge,
            verifier,
            server,
            gate,
            targets,
            homes: Default::default(),
            sender: format!("fedgate-bridge-{instance}"),
            publisher,
        });
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        // The directed bindings follow the Choria collective's nodes.
        let bound = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let directed = Directed {
            shared: shared.clone(),
            channel: consumer_channel.clone(),
            queue: queue.clone(),
            bound: BTreeSet::new(),
            count: bound.clone(),
        };
        directed.refresh_forever(stop.clone(), &tasks).await;
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let consume_stop = stop.clone();
        let consume_tasks = tasks.clone();
        tasks.spawn(async move {
            let mut consumer = consumer;
            loop {
                let delivery = tokio::select! {
                    _ = consume_stop.cancelled() => return,
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
                consume_tasks.spawn(async move {
                    shared.handle(delivery).await;
                    drop(permit);
                });
            }
        });
        Ok(Ingress {
            bound,
            stop,
            tasks,
            _connection: connection,
        })
    }

    /// How many nodes directed requests are bound for now.
    pub fn directed_bindings(&self) -> usize {
        self.bound.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops consuming and waits for requests in hand (unacknowledged ones are redelivered).
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        let _ = self._connection.close(200, "shutdown".into()).await;
    }
}

struct Directed {
    shared: Arc<Shared>,
    channel: lapin::Channel,
    queue: String,
    bound: BTreeSet<String>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Directed {
    /// Binds the nodes discovery finds now, then keeps refreshing in the background.
    async fn refresh_forever(
        mut self,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        self.refresh().await;
        let every = Duration::from_secs(self.shared.bridge.refresh_s.max(5));
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => self.refresh().await,
                }
            }
        });
    }

    async fn refresh(&mut self) {
        let shared = &self.shared;
        let mut found = BTreeSet::new();
        let mut homes = std::collections::HashMap::new();
        for (index, target) in shared.targets.iter().enumerate() {
            let caller = match CallerId::parse(&format!("choria={}", target.signer.certname())) {
                Ok(caller) => caller,
                Err(_) => return,
            };
            let client = RpcClient::new(
                target.nats.clone(),
                target.signer.clone(),
                caller,
                shared.sender.clone(),
                Limits::default(),
            );
            let call = RpcCall {
                timeout: Duration::from_secs(5),
                idle: Duration::from_secs(2),
                ..RpcCall::new(&target.internal, "discovery", "ping")
            };
            let discovered = client
                .call(&call, |reply| {
                    // A routing key is at most 255 bytes.
                    let usable = reply.sender.len() <= 255
                        && crate::subjects::is_valid_dotted(&reply.sender);
                    if usable && found.len() < MAX_DIRECTED {
                        found.insert(reply.sender.clone());
                        homes.insert(reply.sender.clone(), index);
                    }
                })
                .await;
            // Bindings are only changed on a complete picture.
            if let Err(err) = discovered {
                tracing::warn!(legacy = %shared.name, collective = %target.collective, %err, "discovery for directed bindings failed");
                return;
            }
        }
        if let Ok(mut current) = shared.homes.write() {
            *current = homes;
        }
        let directed = format!("{}_directed", shared.legacy.collective);
        for node in found.difference(&self.bound.clone()) {
            let bound = self
                .channel
                .queue_bind(
                    self.queue.as_str().into(),
                    directed.as_str().into(),
                    node.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await;
            if bound.is_ok() {
                self.bound.insert(node.clone());
            }
        }
        for node in self.bound.difference(&found).cloned().collect::<Vec<_>>() {
            let unbound = self
                .channel
                .queue_unbind(
                    self.queue.as_str().into(),
                    directed.as_str().into(),
                    node.as_str().into(),
                    FieldTable::default(),
                )
                .await;
            if unbound.is_ok() {
                self.bound.remove(&node);
            }
        }
        metrics::gauge!("fedgate_legacy_directed_bindings", "legacy" => shared.name.clone())
            .set(self.bound.len() as f64);
        self.count
            .store(self.bound.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The queue a reply goes to: a bare name, or one of RabbitMQ's STOMP reply forms.
fn reply_queue(reply_to: &str) -> Option<&str> {
    let name = ["/reply-queue/", "/amq/queue/", "/queue/"]
        .iter()
        .find_map(|p| reply_to.strip_prefix(p))
        .unwrap_or(reply_to);
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    ok.then_some(name)
}

/// The legacy filter Hash as a Choria filter; compound filters are refused.
fn choria_filter(filter: &Ruby) -> Result<Filter, String> {
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match filter.get(key) {
            None | Some(Ruby::Nil) => Ok(Vec::new()),
            Some(Ruby::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("filter {key} holds a non-string"))
                })
                .collect(),
            Some(_) => Err(format!("filter {key} is not an Array")),
        }
    };
    if !strings("compound").unwrap_or_default().is_empty()
        || matches!(filter.get("compound"), Some(Ruby::Array(items)) if !items.is_empty())
    {
        return Err("compound filters are not supported".into());
    }
    let mut fact = Vec::new();
    if let Some(Ruby::Array(items)) = filter.get("fact") {
        for item in items {
            let field = |k: &str| item.get(k).and_then(Ruby::as_str).map(str::to_string);
            let (Some(name), Some(value)) = (field("fact"), field("value")) else {
                return Err("a fact filter without fact or value".into());
            };
            let operator = field("operator").unwrap_or_else(|| "==".into());
            let operator = FactOperator::parse(&operator)
                .ok_or_else(|| format!("fact operator {operator:?}"))?;
            fact.push(FactFilter {
                fact: name,
                operator,
                value,
            });
        }
    }
    Ok(Filter {
        fact,
        cf_class: strings("cf_class")?,
        agent: strings("agent")?,
        identity: strings("identity")?,
        compound: Vec::new(),
    })
}

impl Shared {
    async fn handle(&self, delivery: Delivery) {
        let reply_to = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.as_str().to_string());
        let exchange = delivery.exchange.as_str();
        let key = delivery.routing_key.as_str();
        let directed_to =
            (exchange == format!("{}_directed", self.legacy.collective)).then(|| key.to_string());
        // Only what came through the bridged bindings: a message put straight on the queue
        // through the default exchange would skip the agent list and the directed bindings.
        let through_bindings = directed_to.is_some()
            || (exchange == format!("{}_broadcast", self.legacy.collective)
                && self.bridge.agents.iter().any(|a| a == key));
        let result = if through_bindings {
            self.bridge_one(&delivery.data, reply_to.as_deref(), directed_to, &delivery)
                .await
        } else {
            Err((
                "bad_route",
                format!(
                    "arrived through exchange {exchange:?} with key {key:?}, not a bridged binding"
                ),
                self.event(),
            ))
        };
        match result {
            Ok(Handled::Forwarded) => {}
            Ok(Handled::Retry(code, reason)) => {
                metrics::counter!("fedgate_legacy_requeued_total", "legacy" => self.name.clone(), "reason" => code)
                    .increment(1);
                tracing::warn!(legacy = %self.name, code, %reason, "request put back on the queue");
                tokio::time::sleep(RETRY_PAUSE).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.nack(requeue).await;
            }
            Err((code, reason, event)) => {
                // A delivery the broker hands out again after fedgate forwarded it but before
                // its acknowledgement reached the broker: dropped, never forwarded twice.
                let (code, reason) = if code == "replay" && delivery.redelivered {
                    (
                        "duplicate_delivery",
                        "redelivered by the broker after it was forwarded".to_string(),
                    )
                } else {
                    (code, reason)
                };
                self.record_refusal((code, reason, event)).await;
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        }
    }

    /// Counts a refusal and records it as a denied decision.
    async fn record_refusal(&self, (code, reason, mut event): Refusal) {
        metrics::counter!("fedgate_legacy_refused_total", "legacy" => self.name.clone(), "reason" => code)
            .increment(1);
        event.decision = Some(Verdict::Deny);
        event.code = code.into();
        event.reason = reason;
        if let Err(err) = self.gate.record(event).await {
            tracing::error!(legacy = %self.name, %err, "could not record a refusal");
        }
    }

    fn event(&self) -> Event {
        Event {
            edge: "legacy-amqp".into(),
            realm: self.name.clone(),
            collectives: self.targets.iter().map(|t| t.collective.clone()).collect(),
            ..Event::default()
        }
    }

    /// One request: Err carries the refusal's code, reason and the event to record.
    async fn bridge_one(
        &self,
        bytes: &[u8],
        reply_to: Option<&str>,
        directed_to: Option<String>,
        delivery: &Delivery,
    ) -> Result<Handled, Refusal> {
        let serializer = self.legacy.serializer;
        let mut event = self.event();
        event.stage = "decode".into();
        let request = LegacyRequest::decode(serializer, bytes, self.legacy.max_message_bytes)
            .map_err(|e| (e.code(), e.to_string(), event.clone()))?;
        event.claimed_caller = Some(request.callerid.clone());
        event.request_id = Some(request.requestid.clone());
        event.agent = Some(request.agent.clone());
        let Some(reply_to) = reply_to.and_then(reply_queue).map(str::to_string) else {
            return Err(("bad_reply_to", "no usable reply_to".into(), event));
        };
        event.stage = "verify".into();
        let now = Now::system().unix_seconds();
        let verified = self
            .verifier
            .verify_request(serializer, request, directed_to.as_deref(), now)
            .map_err(|e| (e.code(), e.to_string(), event.clone()))?;
        let caller = CallerId::parse(&verified.request.callerid)
            .map_err(|e| ("bad_callerid", e.to_string(), event.clone()))?;
        event.caller = Some(caller.as_str().to_string());
        event.claimed_caller = None;
        let (agent, action, data, replies_wanted) = match &verified.call {
            LegacyCall::Discovery => (
                "discovery".to_string(),
                "ping".to_string(),
                serde_json::Map::new(),
                true,
            ),
            LegacyCall::Rpc {
                agent,
                action,
                data,
                process_results,
            } => {
                let data = match data.to_json() {
                    Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                (agent.clone(), action.clone(), data, *process_results)
            }
        };
        event.agent = Some(agent.clone());
        event.action = Some(action.clone());
        event.data_keys = data.keys().cloned().collect();
        event.stage = "decode".into();
        let filter = choria_filter(&verified.request.filter)
            .map_err(|m| ("unsupported_filter", m, event.clone()))?;
        let requestid = verified.request.requestid.clone();
        if self.gate.auditor.records_values(&agent, &action) {
            event.data = Some(data.clone());
        }
        // A directed copy goes to the collective whose discovery found the node.
        let home = directed_to.as_ref().and_then(|node| {
            self.homes
                .read()
                .ok()
                .and_then(|homes| homes.get(node).copied())
        });
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        let mut unrecorded = Vec::new();
        // One set of rules maps and authorizes every copy of the request.
        let rules = self.gate.rules();
        for (index, target) in self.targets.iter().enumerate() {
            if home.is_some_and(|home| home != index) {
                continue;
            }
            let call = (agent.as_str(), action.as_str());
            match self
                .admit(&rules, target, &caller, call, filter.clone(), event.clone())
                .await
            {
                Ok(one) => admitted.push(one),
                Err(NotAdmitted::Refused(refusal)) => refused.push(*refusal),
                Err(NotAdmitted::Unrecorded(err)) => unrecorded.push(err),
            }
        }
        if admitted.is_empty() {
            if let Some(err) = unrecorded.pop() {
                // Nothing is forwarded that is not on the record: try again later.
                self.verifier.release(&verified);
                return Ok(Handled::Retry("audit_failed", err));
            }
            // Every member refused: the last refusal is the delivery's, recorded with it; the
            // others are recorded here, one per member.
            let last = refused
                .pop()
                .unwrap_or_else(|| ("unmapped", "no collective to bridge into".into(), event));
            for refusal in refused {
                self.record_refusal(refusal).await;
            }
            return Err(last);
        }
        // Some collectives took it: the others' refusals are recorded beside it.
        for refusal in refused {
            self.record_refusal(refusal).await;
        }
        for err in unrecorded {
            tracing::error!(legacy = %self.name, %err, "a collective was skipped: its decision could not be recorded");
        }

        let ttl = verified.body.ttl.clamp(1, 60);
        let timeout = Duration::from_secs(ttl.unsigned_abs()).min(MAX_COLLECT);
        let nodes: Vec<String> = directed_to.into_iter().collect();
        let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<(String, Ruby)>(4096);
        let mut published = Vec::new();
        let calls: Vec<_> = admitted
            .iter()
            .map(|one| {
                let call = RpcCall {
                    data: data.clone(),
                    filter: one.filter.clone(),
                    expect: (!nodes.is_empty()).then_some(nodes.len()),
                    targets: nodes.clone(),
                    ttl,
                    timeout,
                    idle: Duration::from_secs(2),
                    ..RpcCall::new(&one.target.internal, &agent, &action)
                };
                let client = RpcClient::new(
                    one.target.nats.clone(),
                    one.target.signer.clone(),
                    one.mapped.clone(),
                    self.sender.clone(),
                    Limits::default(),
                );
                let (published_tx, published_rx) = tokio::sync::oneshot::channel::<()>();
                published.push(published_rx);
                let reply_agent = agent.clone();
                let reply_tx = reply_tx.clone();
                let requestid = requestid.clone();
                async move {
                    client
                        .call_observed(
                            &call,
                            &requestid,
                            move || {
                                let _ = published_tx.send(());
                            },
                            // The closure owns a sender: the forwarder ends when every call has.
                            move |reply| {
                                if replies_wanted {
                                    let body = legacy_reply_body(&reply_agent, reply);
                                    if reply_tx.try_send((reply.sender.clone(), body)).is_err() {
                                        metrics::counter!("fedgate_legacy_replies_dropped_total")
                                            .increment(1);
                                    }
                                }
                            },
                        )
                        .await
                }
            })
            .collect();
        drop(reply_tx);
        // Acknowledged once published everywhere it was admitted (and recorded, above); a
        // request published nowhere is put back on the queue instead.
        let ack = async {
            let outcomes = futures::future::join_all(published).await;
            let published = outcomes.iter().filter(|o| o.is_ok()).count();
            if published > 0 {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            published
        };
        let send_replies = async {
            while let Some((sender, body)) = reply_rx.recv().await {
                self.send_reply(
                    serializer,
                    &reply_to,
                    &sender,
                    &requestid,
                    &verified.request.agent,
                    &body,
                )
                .await;
            }
        };
        let (summaries, published, ()) =
            tokio::join!(futures::future::join_all(calls), ack, send_replies);
        let mut failure = None;
        for (one, summary) in admitted.iter().zip(summaries) {
            let replies = summary.as_ref().map_or(0, |s| s.responses as u64);
            self.gate
                .complete_now(&one.event, one.link.clone(), replies)
                .await;
            if let Err(err) = summary {
                tracing::warn!(legacy = %self.name, collective = %one.target.collective, %err, "bridged request failed");
                failure = Some(err.to_string());
            }
        }
        match failure {
            Some(err) if published == 0 => {
                self.verifier.release(&verified);
                Ok(Handled::Retry("publish_failed", err))
            }
            _ => Ok(Handled::Forwarded),
        }
    }

    /// Maps, authorizes and records a request for one target collective.
    async fn admit<'s>(
        &self,
        rules: &Rules,
        target: &'s Target,
        caller: &CallerId,
        (agent, action): (&str, &str),
        mut filter: Filter,
        mut event: Event,
    ) -> Result<Admitted<'s>, NotAdmitted> {
        let collective = &target.collective;
        event.collectives = vec![collective.clone()];
        event.stage = "map".into();
        event.revision = rules.revision;
        let (mapped, identity_rule) = match rules.identity.map(&self.name, caller, collective) {
            Mapping::Mapped { callerid, rule } => (callerid, rule.to_string()),
            Mapping::Denied(denial) => {
                event.rule = denial.rule().map(ToString::to_string);
                let reason = format!(
                    "{} may not act in {collective}: {}",
                    caller.as_str(),
                    denial.reason()
                );
                return Err(NotAdmitted::Refused(Box::new(("unmapped", reason, event))));
            }
        };
        event.mapped_caller = Some(mapped.as_str().to_string());
        // Discovery is answered by every node; only RPC actions are policy's to decide.
        let mut rule = "discovery".to_string();
        if agent != "discovery" {
            event.stage = "authorize".into();
            let query = Query {
                collective,
                agent,
                action,
                caller: mapped.as_str(),
            };
            match self.gate.authorize(rules, &query, &mut filter, &mut event) {
                Ok(decided_by) => rule = decided_by,
                Err(denied) => {
                    event.rule = Some(denied.source.to_string());
                    return Err(NotAdmitted::Refused(Box::new((
                        "denied",
                        denied.reason,
                        event,
                    ))));
                }
            }
        }
        event.filter = gate::summarize(&filter);
        event.decision = Some(Verdict::Allow);
        event.stage = "authorize".into();
        event.code = "allowed".into();
        event.rule = Some(rule.clone());
        event.reason = format!("allowed by {rule}; mapped by {identity_rule}");
        let link = self
            .gate
            .record(event.clone())
            .await
            .map_err(|e| NotAdmitted::Unrecorded(e.to_string()))?;
        Ok(Admitted {
            target,
            mapped,
            filter,
            event,
            link,
        })
    }

    async fn send_reply(
        &self,
        serializer: Serializer,
        reply_to: &str,
        sender: &str,
        requestid: &str,
        agent: &str,
        body: &Ruby,
    ) {
        let now = Now::system().unix_seconds();
        let reply = match self
            .server
            .sign_reply(serializer, sender, requestid, agent, now, body)
        {
            Ok(reply) => reply,
            Err(err) => {
                tracing::error!(%err, "could not sign a legacy reply");
                return;
            }
        };
        let mut headers = FieldTable::default();
        headers.insert("mc_sender".into(), AMQPValue::LongString(sender.into()));
        let properties = BasicProperties::default()
            .with_expiration("70000".into())
            .with_headers(headers);
        let published = self
            .publisher
            .basic_publish(
                ShortString::from(""),
                ShortString::from(reply_to),
                BasicPublishOptions::default(),
                &reply.encode(serializer),
                properties,
            )
            .await;
        match published {
            Ok(_) => metrics::counter!("fedgate_legacy_replies_sent_total", "legacy" => self.name.clone()).increment(1),
            Err(err) => tracing::warn!(legacy = %self.name, %err, "could not publish a legacy reply"),
        }
    }
}

/// A Choria reply as the legacy reply body: `"pong"` for discovery, else the SimpleRPC Hash with
/// Symbol keys at its top, as MCollective's agents write them.
fn legacy_reply_body(agent: &str, reply: &crate::client::ReplyEvent) -> Ruby {
    if agent == "discovery" {
        return Ruby::str("pong");
    }
    Ruby::Hash(vec![
        (Ruby::sym("statuscode"), Ruby::Int(reply.statuscode)),
        (Ruby::sym("statusmsg"), Ruby::str(&reply.statusmsg)),
        (Ruby::sym("data"), Ruby::from_json(&reply.data, true)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_to_forms_are_accepted_and_junk_is_not() {
        assert_eq!(reply_queue("amq.gen-abc_D-1"), Some("amq.gen-abc_D-1"));
        assert_eq!(reply_queue("/reply-queue/amq.gen-x"), Some("amq.gen-x"));
        assert_eq!(reply_queue(""), None);
        assert_eq!(reply_queue("/exchange/x/y"), None);
        assert_eq!(reply_queue("a b"), None);
    }

    #[test]
    fn legacy_filters_become_choria_filters() {
        let filter = Ruby::Hash(vec![
            (
                Ruby::str("fact"),
                Ruby::Array(vec![Ruby::Hash(vec![
                    (Ruby::sym("fact"), Ruby::str("country")),
                    (Ruby::sym("value"), Ruby::str("uk")),
                    (Ruby::sym("operator"), Ruby::str("==")),
                ])]),
            ),
            (Ruby::str("cf_class"), Ruby::Array(vec![Ruby::str("web")])),
            (Ruby::str("agent"), Ruby::Array(vec![Ruby::str("rpcutil")])),
            (Ruby::str("identity"), Ruby::Array(vec![])),
            (Ruby::str("compound"), Ruby::Array(vec![])),
        ]);
        let choria = choria_filter(&filter).unwrap();
        assert_eq!(choria.fact[0].to_string(), "country==uk");
        assert_eq!((choria.cf_class.len(), choria.agent.len()), (1, 1));
        let compound = Ruby::Hash(vec![(
            Ruby::str("compound"),
            Ruby::Array(vec![Ruby::Array(vec![])]),
        )]);
        assert!(choria_filter(&compound).is_err());
    }
}
