//! The link to one legacy collective over AMQP: requests signed as a cleared caller, published
//! to the collective's exchanges, and their replies routed back by request id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::{ReplyEvent, RpcCall, Summary};
use crate::config::LegacyConfig;
use crate::gateway::Cleared;
use crate::security::CallerId;
use crate::security::legacy::{LegacySigner, LegacyVerifier, NewLegacyRequest, cert_name};
use crate::wire::mcollective::envelope::LegacyReply;
use crate::wire::mcollective::{Ruby, Serializer};

use super::{legacy_filter, translate};

/// Calls in flight on one link at most.
pub const MAX_PENDING: usize = 4096;
/// Replies queued for one call before more are dropped (and counted).
const REPLY_QUEUE: usize = 8192;
/// Legacy signers kept loaded.
const SIGNER_CACHE: usize = 256;

/// Where the replies of each call in flight go, by the request id it went out under.
type Pending = Arc<Mutex<HashMap<String, mpsc::Sender<LegacyReply>>>>;

/// Why a legacy call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LegacyCallError {
    /// AMQP failed.
    #[error("amqp: {0}")]
    Amqp(String),
    /// The mapped caller has no legacy key, or it is unusable.
    #[error("{0}")]
    Signer(String),
    /// Too many calls in flight.
    #[error("too many legacy calls in flight (at most {MAX_PENDING})")]
    Busy,
    /// The filter has no legacy form that selects the same nodes.
    #[error("{0}")]
    Filter(String),
}

/// fedgate as a client of one legacy collective.
pub struct LegacyLink {
    name: String,
    collective: String,
    serializer: Serializer,
    identity: String,
    signers_dir: std::path::PathBuf,
    signers: quick_cache::sync::Cache<String, Arc<LegacySigner>>,
    verifier: Arc<LegacyVerifier>,
    channel: lapin::Channel,
    _connection: Connection,
    /// The AMQP connection's readiness, watched while the link lives.
    _ready: Arc<crate::health::Status>,
    reply_queue: String,
    pending: Pending,
}

impl std::fmt::Debug for LegacyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyLink")
            .field("name", &self.name)
            .field("collective", &self.collective)
            .field("reply_queue", &self.reply_queue)
            .finish()
    }
}

/// Declares a queue only this connection uses, deleted with it (an empty name lets the broker
/// choose one).
pub async fn declare_private_queue(
    channel: &lapin::Channel,
    name: &str,
) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Consumes `queue` without acknowledgements (replies: a lost one is a missing reply, not a lost
/// request).
pub async fn consume_unacked(
    channel: &lapin::Channel,
    queue: &str,
    tag: &str,
) -> lapin::Result<lapin::Consumer> {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

fn amqp(err: impl std::fmt::Display) -> LegacyCallError {
    LegacyCallError::Amqp(err.to_string())
}

/// Hands each decoded reply on the link's reply queue to the call it answers; counts the
/// undecodable, the unknown and those a full call queue drops.
async fn route_replies(
    mut consumer: lapin::Consumer,
    routes: Pending,
    serializer: Serializer,
    max_bytes: usize,
    link_name: String,
) {
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else {
            // lapin recovers the connection and the consumer; keep reading.
            continue;
        };
        let reply = match LegacyReply::decode(serializer, &delivery.data, max_bytes) {
            Ok(reply) => reply,
            Err(err) => {
                metrics::counter!("fedgate_legacy_replies_refused_total", "legacy" => link_name.clone(), "reason" => err.code()).increment(1);
                continue;
            }
        };
        let route = routes
            .lock()
            .ok()
            .and_then(|map| map.get(&reply.requestid).cloned());
        match route {
            Some(tx) => {
                if tx.try_send(reply).is_err() {
                    metrics::counter!("fedgate_legacy_replies_refused_total", "legacy" => link_name.clone(), "reason" => "overflow").increment(1);
                }
            }
            None => {
                metrics::counter!("fedgate_legacy_replies_refused_total", "legacy" => link_name.clone(), "reason" => "unknown_request").increment(1);
            }
        }
    }
}

/// Refuses an agent or action that is not a valid name, and a target that is not a node name.
fn check_names(rpc: &RpcCall) -> Result<(), LegacyCallError> {
    for (what, name) in [("agent", &rpc.agent), ("action", &rpc.action)] {
        if !crate::subjects::is_valid_name(name) || name.len() > 255 {
            return Err(LegacyCallError::Signer(format!(
                "{what} {name:?} is not a valid name"
            )));
        }
    }
    if let Some(bad) = rpc
        .targets
        .iter()
        .find(|t| t.is_empty() || t.len() > 255 || t.chars().any(char::is_whitespace))
    {
        return Err(LegacyCallError::Signer(format!(
            "{bad:?} is not a node name"
        )));
    }
    Ok(())
}

impl LegacyLink {
    /// Connects (see [`super::amqp`]: failing now if the broker cannot be reached, recovering
    /// from every later loss), declares this instance's reply queue and
    /// starts consuming it.
    pub async fn connect(
        name: &str,
        config: &LegacyConfig,
        instance: &str,
    ) -> Result<LegacyLink, LegacyCallError> {
        let verifier = LegacyVerifier::new(
            config
                .client_keys
                .as_deref()
                .unwrap_or(config.signers.as_path()),
            &config.server_public,
            config.max_skew_s,
        )
        .map_err(|e| LegacyCallError::Signer(e.to_string()))?;
        let connection = super::amqp::Broker::new(config)
            .map_err(amqp)?
            .connect(&format!("fedgate {instance} legacy {name}"))
            .await
            .map_err(amqp)?;
        let channel = connection.create_channel().await.map_err(amqp)?;
        let reply_queue = format!("fedgate.reply.{instance}.{}", nuid::next());
        declare_private_queue(&channel, &reply_queue)
            .await
            .map_err(amqp)?;
        let consumer = consume_unacked(&channel, &reply_queue, "fedgate-replies")
            .await
            .map_err(amqp)?;
        let pending = Pending::default();
        tokio::spawn(route_replies(
            consumer,
            pending.clone(),
            config.serializer,
            config.max_message_bytes,
            name.to_string(),
        ));
        Ok(LegacyLink {
            name: name.to_string(),
            collective: config.collective.clone(),
            serializer: config.serializer,
            identity: config.identity.clone(),
            signers_dir: config.signers.clone(),
            signers: quick_cache::sync::Cache::new(SIGNER_CACHE),
            verifier: Arc::new(verifier),
            channel,
            _ready: super::amqp::watch(&connection, format!("amqp legacy {name}")),
            _connection: connection,
            reply_queue,
            pending,
        })
    }

    /// The legacy collective's name in fedgate's config.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn signer(&self, caller: &CallerId) -> Result<Arc<LegacySigner>, LegacyCallError> {
        let name = cert_name(caller.as_str()).ok_or_else(|| {
            LegacyCallError::Signer(format!(
                "{} is not a legacy caller id (cert=<name>); map it to one",
                caller.as_str()
            ))
        })?;
        if let Some(signer) = self.signers.get(name) {
            return Ok(signer);
        }
        let path = self.signers_dir.join(format!("{name}.pem"));
        let signer = LegacySigner::from_file(&path, name)
            .map_err(|e| LegacyCallError::Signer(format!("no legacy key for cert={name}: {e}")))?;
        let signer = Arc::new(signer);
        self.signers.insert(name.to_string(), signer.clone());
        Ok(signer)
    }

    /// Signs `rpc` as the cleared request's mapped caller (a `cert=<name>` fedgate holds a key
    /// for), with its restricted filter and recorded request id, publishes it, and hands each
    /// verified reply to `on_reply`. The call's collective is this link's; its
    /// federation settings do not apply.
    pub async fn call(
        &self,
        cleared: &Cleared,
        rpc: &RpcCall,
        on_reply: impl FnMut(&ReplyEvent),
    ) -> Result<Summary, LegacyCallError> {
        let (caller, requestid) = (cleared.mapped(), cleared.requestid());
        let rpc = &RpcCall {
            filter: cleared.filter().clone(),
            ..rpc.clone()
        };
        let signer = self.signer(caller)?;
        check_names(rpc)?;
        // Replies are routed by request id. Copies of one Choria request for several nodes share
        // theirs, so a call whose id is already in flight here goes out under a fresh one.
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let wire_id = self.register(requestid, tx)?;
        let _unregister = Unregister {
            pending: &self.pending,
            requestid: wire_id.clone(),
        };
        let payload = self.encode_request(&signer, caller, rpc, &wire_id)?;
        let started = Instant::now();
        let published = self.publish(rpc, &payload).await?;
        let summary = Summary {
            requestids: vec![wire_id],
            published,
            ..Summary::default()
        };
        Ok(self.collect(rpc, rx, summary, started, on_reply).await)
    }

    /// Routes replies to `requestid` to `tx`, under a fresh id when that one is in flight here;
    /// gives back the id the request goes out under.
    fn register(
        &self,
        requestid: &str,
        tx: mpsc::Sender<LegacyReply>,
    ) -> Result<String, LegacyCallError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| LegacyCallError::Amqp("poisoned".into()))?;
        if pending.len() >= MAX_PENDING {
            return Err(LegacyCallError::Busy);
        }
        let id = if pending.contains_key(requestid) {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            requestid.to_string()
        };
        pending.insert(id.clone(), tx);
        Ok(id)
    }

    /// The request signed as `caller` and encoded: discovery's `ping`, or the RPC Hash.
    fn encode_request(
        &self,
        signer: &LegacySigner,
        caller: &CallerId,
        rpc: &RpcCall,
        requestid: &str,
    ) -> Result<Vec<u8>, LegacyCallError> {
        let now = crate::security::Now::system().unix_seconds();
        let msg = if rpc.agent == "discovery" {
            Ruby::str("ping")
        } else {
            Ruby::Hash(vec![
                (Ruby::sym("agent"), Ruby::str(&rpc.agent)),
                (Ruby::sym("action"), Ruby::str(&rpc.action)),
                (Ruby::sym("caller"), Ruby::str(caller.as_str())),
                (
                    Ruby::sym("data"),
                    Ruby::from_json(&Value::Object(rpc.data.clone()), true),
                ),
            ])
        };
        let request = signer
            .sign_request(
                self.serializer,
                &NewLegacyRequest {
                    msg,
                    senderid: &self.identity,
                    requestid,
                    filter: legacy_filter(&rpc.filter, &rpc.agent)
                        .map_err(LegacyCallError::Filter)?,
                    collective: &self.collective,
                    agent: &rpc.agent,
                    ttl: rpc.ttl,
                    msgtime: now,
                },
            )
            .map_err(|e| LegacyCallError::Signer(e.to_string()))?;
        Ok(request.encode(self.serializer))
    }

    /// Publishes `payload` to the broadcast exchange, or to the directed one for each target,
    /// with this link's reply queue; gives back how many were published.
    async fn publish(&self, rpc: &RpcCall, payload: &[u8]) -> Result<usize, LegacyCallError> {
        let mut headers = FieldTable::default();
        headers.insert(
            "mc_sender".into(),
            AMQPValue::LongString(self.identity.as_str().into()),
        );
        let properties = BasicProperties::default()
            .with_reply_to(self.reply_queue.as_str().into())
            .with_expiration(((rpc.ttl + 10) * 1000).to_string().into())
            .with_headers(headers);
        let publishes: Vec<(String, String)> = if rpc.targets.is_empty() {
            vec![(format!("{}_broadcast", self.collective), rpc.agent.clone())]
        } else {
            rpc.targets
                .iter()
                .map(|t| (format!("{}_directed", self.collective), t.clone()))
                .collect()
        };
        for (exchange, key) in &publishes {
            self.channel
                .basic_publish(
                    ShortString::from(exchange.as_str()),
                    ShortString::from(key.as_str()),
                    BasicPublishOptions::default(),
                    payload,
                    properties.clone(),
                )
                .await
                .map_err(amqp)?;
        }
        metrics::counter!("fedgate_legacy_requests_published_total", "legacy" => self.name.clone())
            .increment(publishes.len() as u64);
        Ok(publishes.len())
    }

    /// Hands each accepted reply to `on_reply` until the expected number came, the timeout, or
    /// (a broadcast with no expected number) `rpc.idle` after the last one.
    async fn collect(
        &self,
        rpc: &RpcCall,
        mut rx: mpsc::Receiver<LegacyReply>,
        mut summary: Summary,
        started: Instant,
        mut on_reply: impl FnMut(&ReplyEvent),
    ) -> Summary {
        let expect = rpc
            .expect
            .or((!rpc.targets.is_empty()).then_some(rpc.targets.len()));
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::now() + rpc.timeout;
        let mut last_reply = None;
        loop {
            if expect.is_some_and(|n| summary.responses >= n) {
                break;
            }
            let wait_until = match (last_reply, rpc.targets.is_empty() && expect.is_none()) {
                (Some(at), true) => deadline.min(at + rpc.idle),
                _ => deadline,
            };
            let reply = match tokio::time::timeout_at(wait_until, rx.recv()).await {
                Ok(Some(reply)) => reply,
                Ok(None) | Err(_) => break,
            };
            let Some(body) = self.accept(rpc, &reply, &mut seen, &mut summary) else {
                continue;
            };
            let event = translate(&reply.senderid, &body, started.elapsed());
            if event.statuscode == 0 {
                summary.ok += 1;
            } else {
                summary.failed += 1;
            }
            summary.responses += 1;
            last_reply = Some(tokio::time::Instant::now());
            on_reply(&event);
        }
        summary.elapsed = started.elapsed();
        summary.missing = rpc
            .targets
            .iter()
            .filter(|t| !seen.contains(*t))
            .cloned()
            .collect();
        summary
    }

    /// The body of a reply that verifies, comes from a target (when the call has targets) and
    /// is its sender's first; any other is counted as invalid or duplicate.
    fn accept(
        &self,
        rpc: &RpcCall,
        reply: &LegacyReply,
        seen: &mut HashSet<String>,
        summary: &mut Summary,
    ) -> Option<Ruby> {
        if self.verifier.verify_reply(reply).is_err() {
            summary.invalid += 1;
            return None;
        }
        if !rpc.targets.is_empty() && !rpc.targets.contains(&reply.senderid) {
            summary.invalid += 1;
            return None;
        }
        if !seen.insert(reply.senderid.clone()) {
            summary.duplicates += 1;
            return None;
        }
        let Ok(body) = reply.reply_body(self.serializer) else {
            summary.invalid += 1;
            return None;
        };
        Some(body)
    }

    /// Deletes the reply queue and closes the connection.
    pub async fn close(self) {
        let _ = self
            .channel
            .queue_delete(
                self.reply_queue.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = self._connection.close(200, "bye".into()).await;
    }
}

struct Unregister<'a> {
    pending: &'a Pending,
    requestid: String,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&self.requestid);
        }
    }
}
