//! A direct RPC client, like `choria req`: sign, publish to a collective, collect verified replies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::gateway::Cleared;
use crate::nats::connected_server;
use crate::security::{CallerId, KeyError, Now, Signer};
use crate::subjects;
use crate::wire::choria_v1::{
    FederationHeader, Filter, Request, RequestEnvelope, RpcReply, RpcRequest, SecureReply,
    Transport, TransportHeaders,
};
use crate::wire::{DecodeError, Limits};

mod outcome;
mod v2;

pub use outcome::{Ended, ReplyEvent, Summary};
pub use v2::V2Egress;

/// How a client signs into its collective: as a certificate (Choria v1, fedgate's privileged
/// certificate when it re-signs), or as a v2 delegator.
#[derive(Clone, Debug)]
pub enum Egress {
    /// Choria protocol v1, signed with this certificate's key.
    V1(Arc<Signer>),
    /// Choria protocol v2, signed by fedgate as a delegator for the caller.
    V2(Arc<V2Egress>),
}

impl From<Arc<Signer>> for Egress {
    fn from(signer: Arc<Signer>) -> Self {
        Egress::V1(signer)
    }
}

impl From<Arc<V2Egress>> for Egress {
    fn from(egress: Arc<V2Egress>) -> Self {
        Egress::V2(egress)
    }
}

/// One RPC to make.
#[derive(Clone, Debug)]
pub struct RpcCall {
    /// Target collective.
    pub collective: String,
    /// Agent name.
    pub agent: String,
    /// Action name.
    pub action: String,
    /// Action inputs.
    pub data: Map<String, Value>,
    /// Which nodes should act; the agent filter is added automatically.
    pub filter: Filter,
    /// Identities to address directly; empty means broadcast.
    pub targets: Vec<String>,
    /// Request TTL in seconds.
    pub ttl: i64,
    /// When set, the Unix second the request stops being valid, however late it is published:
    /// a re-signed request ends with its original (`security::resigned_window`).
    pub expires: Option<i64>,
    /// Overall time to wait for replies.
    pub timeout: Duration,
    /// Stop after this many replies (directed calls expect one per target).
    pub expect: Option<usize>,
    /// For broadcasts without `expect`: stop once no reply came for this long after the first.
    pub idle: Duration,
    /// Send through this Federation Broker cluster instead of to the collective directly.
    pub federation: Option<String>,
    /// Node targets per federated message.
    pub batch_size: usize,
}

impl RpcCall {
    /// A broadcast call with Choria's default TTL and a 10 s timeout.
    pub fn new(collective: &str, agent: &str, action: &str) -> Self {
        RpcCall {
            collective: collective.into(),
            agent: agent.into(),
            action: action.into(),
            data: Map::new(),
            filter: Filter::default(),
            targets: Vec::new(),
            ttl: 60,
            expires: None,
            timeout: Duration::from_secs(10),
            expect: None,
            idle: Duration::from_secs(1),
            federation: None,
            batch_size: 200,
        }
    }
}

/// Why a call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The call is not well formed.
    #[error("invalid call: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] KeyError),
    /// NATS refused a subscribe or publish.
    #[error("nats: {0}")]
    Nats(String),
    /// The connection is down (it reconnects by itself); nothing was published.
    #[error("unreachable: no connection to the NATS network at the moment; try again shortly")]
    Unreachable,
}

/// Signs and sends requests as one caller.
pub struct RpcClient {
    nats: async_nats::Client,
    egress: Egress,
    caller: CallerId,
    senderid: String,
    limits: Limits,
}

impl RpcClient {
    /// A client speaking as `caller` from machine `senderid`.
    pub fn new(
        nats: async_nats::Client,
        egress: impl Into<Egress>,
        caller: CallerId,
        senderid: String,
        limits: Limits,
    ) -> Self {
        RpcClient {
            nats,
            egress: egress.into(),
            caller,
            senderid,
            limits,
        }
    }

    /// Builds and signs the v1 request and its transport for `call`.
    pub fn build(
        &self,
        call: &RpcCall,
        requestid: &str,
        now: Now,
    ) -> Result<(Request, Transport), ClientError> {
        validate(call)?;
        let Egress::V1(signer) = &self.egress else {
            return Err(ClientError::Invalid(format!(
                "collective {} speaks Choria protocol v2",
                call.collective
            )));
        };
        let Signed {
            body,
            filter,
            time,
            ttl,
        } = Signed::of(call, now);
        let envelope = RequestEnvelope {
            requestid: requestid.to_string(),
            senderid: self.senderid.clone(),
            callerid: self.caller.as_str().to_string(),
            collective: call.collective.clone(),
            agent: call.agent.clone(),
            ttl,
            time,
            filter,
        };
        let request = Request::new(payload(call, &body), envelope);
        let secure = signer.sign_request(&request)?;
        let server = connected_server(&self.nats);
        let mut headers = TransportHeaders {
            reply_to: Some(subjects::reply(
                &call.collective,
                self.caller.as_str(),
                requestid,
            )),
            mc_sender: Some(self.senderid.clone()),
            ..TransportHeaders::default()
        };
        headers.record_hop(&server, &self.senderid, &server);
        Ok((request, Transport::new(secure.encode(), headers)))
    }

    /// Makes the call, handing each verified reply to `on_reply` as it arrives.
    pub async fn call(
        &self,
        call: &RpcCall,
        on_reply: impl FnMut(&ReplyEvent) + Send,
    ) -> Result<Summary, ClientError> {
        self.call_many(std::slice::from_ref(call), on_reply).await
    }

    /// Makes several calls at once (one per collective, say) and merges their summaries.
    pub async fn call_many(
        &self,
        calls: &[RpcCall],
        on_reply: impl FnMut(&ReplyEvent) + Send,
    ) -> Result<Summary, ClientError> {
        // The calls run concurrently in this task, so the lock is never contended.
        let on_reply = std::sync::Mutex::new(on_reply);
        let runs = calls.iter().map(|call| {
            self.call_one(call, |event| {
                if let Ok(mut on_reply) = on_reply.lock() {
                    on_reply(event);
                }
            })
        });
        let mut merged = Summary::default();
        for summary in futures::future::join_all(runs).await {
            let summary = summary?;
            merged.requestids.extend(summary.requestids);
            merged.published += summary.published;
            merged.responses += summary.responses;
            merged.ok += summary.ok;
            merged.failed += summary.failed;
            merged.invalid += summary.invalid;
            merged.duplicates += summary.duplicates;
            merged.missing.extend(summary.missing);
            merged.elapsed = merged.elapsed.max(summary.elapsed);
            merged.ended = merged.ended.max(summary.ended);
        }
        Ok(merged)
    }

    async fn call_one(
        &self,
        call: &RpcCall,
        on_reply: impl FnMut(&ReplyEvent),
    ) -> Result<Summary, ClientError> {
        let requestid = uuid::Uuid::new_v4().simple().to_string();
        self.publish_and_collect(call, &requestid, || {}, on_reply)
            .await
    }

    /// Publishes a request the gateway admitted and recorded: as its mapped caller, with its
    /// restricted filter, under the request id on the record.
    pub async fn call_cleared(
        &self,
        cleared: &Cleared,
        call: &RpcCall,
        on_reply: impl FnMut(&ReplyEvent),
    ) -> Result<Summary, ClientError> {
        self.call_observed(cleared, call, || {}, on_reply).await
    }

    /// [`Self::call_cleared`], telling `on_published` once the request is on the wire (the
    /// legacy bridge acknowledges its AMQP delivery then).
    pub async fn call_observed(
        &self,
        cleared: &Cleared,
        call: &RpcCall,
        on_published: impl FnOnce(),
        on_reply: impl FnMut(&ReplyEvent),
    ) -> Result<Summary, ClientError> {
        if cleared.mapped() != &self.caller {
            return Err(ClientError::Invalid(format!(
                "this client signs as {}, but the request was admitted as {}",
                self.caller.as_str(),
                cleared.mapped().as_str()
            )));
        }
        let call = RpcCall {
            filter: cleared.filter().clone(),
            ..call.clone()
        };
        self.publish_and_collect(&call, cleared.requestid(), on_published, on_reply)
            .await
    }

    async fn publish_and_collect(
        &self,
        call: &RpcCall,
        requestid: &str,
        on_published: impl FnOnce(),
        mut on_reply: impl FnMut(&ReplyEvent),
    ) -> Result<Summary, ClientError> {
        // A request admitted from a v2 caller keeps its id where it fits: a v1 collective takes
        // only 32-character ids, so there it travels under one derived from it.
        let requestid = match self.egress {
            Egress::V1(_) => v1_request_id(requestid),
            Egress::V2(_) => requestid.to_string(),
        };
        let (reply_subject, messages) = self.messages(call, &requestid, Now::system())?;
        let mut replies = self
            .nats
            .subscribe(reply_subject)
            .await
            .map_err(|err| ClientError::Nats(err.to_string()))?;
        let started = Instant::now();
        let published = self.publish(messages).await?;
        on_published();

        let mut summary = Summary {
            requestids: vec![requestid.clone()],
            published,
            ..Summary::default()
        };
        let mut seen = BTreeSet::new();
        let expect = call
            .expect
            .or((!call.targets.is_empty()).then_some(call.targets.len()));
        let deadline = tokio::time::Instant::from_std(started + call.timeout);
        let mut last_reply = None;
        while expect.is_none_or(|n| summary.responses < n) {
            let wait = if expect.is_none() && summary.responses > 0 {
                deadline.min(tokio::time::Instant::now() + call.idle)
            } else {
                deadline
            };
            let message = match tokio::time::timeout_at(wait, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    summary.ended = Ended::Closed;
                    break;
                }
                Err(_) if wait < deadline => {
                    summary.ended = Ended::Idle;
                    break;
                }
                Err(_) => {
                    summary.ended = Ended::Timeout;
                    break;
                }
            };
            match self.check_reply(&message.payload, &requestid, started) {
                // A directed call takes replies from its targets only: copies of one request for
                // other nodes (the legacy bridge sends each separately) share its reply subject.
                Ok(event) if !call.targets.is_empty() && !call.targets.contains(&event.sender) => {}
                Ok(event) if seen.insert(event.sender.clone()) => {
                    summary.responses += 1;
                    if event.statuscode == 0 {
                        summary.ok += 1
                    } else {
                        summary.failed += 1
                    }
                    last_reply = Some(event.elapsed);
                    on_reply(&event);
                }
                Ok(_) => summary.duplicates += 1,
                Err(err) => {
                    tracing::warn!(%err, "invalid reply");
                    summary.invalid += 1;
                }
            }
        }
        // A broadcast that ended on the idle gap finished when its last reply arrived.
        summary.elapsed = match (summary.ended, last_reply) {
            (Ended::Idle, Some(last)) => last,
            _ => started.elapsed(),
        };
        summary.missing = call
            .targets
            .iter()
            .filter(|t| !seen.contains(*t))
            .cloned()
            .collect();
        Ok(summary)
    }

    /// The reply subject and the NATS messages of `call`, signed as this client's egress signs.
    fn messages(
        &self,
        call: &RpcCall,
        requestid: &str,
        now: Now,
    ) -> Result<(String, Vec<(String, Bytes)>), ClientError> {
        match &self.egress {
            Egress::V1(_) => {
                let (_, transport) = self.build(call, requestid, now)?;
                let reply = transport.headers.reply_to.clone().unwrap_or_default();
                Ok((reply, outgoing(call, &transport, requestid)))
            }
            Egress::V2(egress) => {
                validate(call)?;
                let (reply, transport) =
                    egress.build(call, requestid, &self.caller, &self.senderid, now)?;
                Ok((reply, v2::outgoing(call, &transport)?))
            }
        }
    }

    async fn publish(&self, messages: Vec<(String, Bytes)>) -> Result<usize, ClientError> {
        // A publish while disconnected would wait in the client's buffer and go out after the
        // reconnect, perhaps long after the caller gave up: refuse it now instead.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(ClientError::Unreachable);
        }
        let count = messages.len();
        for (subject, payload) in messages {
            self.nats
                .publish(subject, payload)
                .await
                .map_err(|err| ClientError::Nats(err.to_string()))?;
        }
        self.nats
            .flush()
            .await
            .map_err(|err| ClientError::Nats(err.to_string()))?;
        Ok(count)
    }

    fn check_reply(
        &self,
        payload: &[u8],
        requestid: &str,
        started: Instant,
    ) -> Result<ReplyEvent, DecodeError> {
        if let Egress::V2(egress) = &self.egress {
            return egress.check_reply(payload, requestid, &self.limits, started);
        }
        let transport = Transport::decode(payload, &self.limits)?;
        let reply = SecureReply::decode(&transport.data, &self.limits)?.reply(&self.limits)?;
        if reply.envelope.requestid != requestid {
            return Err(DecodeError::field(
                crate::wire::Layer::Reply,
                "envelope.requestid",
                format!("is {}, expected {requestid}", reply.envelope.requestid),
            ));
        }
        let rpc = if reply.envelope.agent == "discovery" {
            RpcReply::new(
                "discovery",
                crate::wire::choria_v1::StatusCode::Ok,
                "OK",
                Value::String(reply.message.clone()),
            )
        } else {
            reply.rpc(&self.limits)?
        };
        Ok(ReplyEvent {
            sender: reply.envelope.senderid,
            statuscode: rpc.statuscode,
            statusmsg: rpc.statusmsg,
            data: rpc.data,
            elapsed: started.elapsed(),
        })
    }
}

/// The NATS messages a call sends: straight to the collective's subjects, or as federated
/// requests to the cluster, with node targets split into batches of `batch_size`.
pub fn outgoing(call: &RpcCall, transport: &Transport, requestid: &str) -> Vec<(String, Bytes)> {
    let targets = request_subjects(call);
    let Some(cluster) = &call.federation else {
        let payload = Bytes::from(transport.encode());
        return targets
            .into_iter()
            .map(|subject| (subject, payload.clone()))
            .collect();
    };
    targets
        .chunks(call.batch_size.max(1))
        .map(|batch| {
            let mut federated = transport.clone();
            federated.headers.federation = Some(FederationHeader {
                req: Some(requestid.to_string()),
                reply_to: None,
                target: batch.to_vec(),
            });
            (
                subjects::federation_ingest(cluster),
                Bytes::from(federated.encode()),
            )
        })
        .collect()
}

/// What a request signs for a call in either protocol: the RPC body, the filter with the
/// call's agent in it, and the time (unix seconds) and TTL; a request that ends with an earlier
/// one (`RpcCall::expires`) gets the window that ends then.
struct Signed {
    body: RpcRequest,
    filter: Filter,
    time: i64,
    ttl: i64,
}

impl Signed {
    fn of(call: &RpcCall, now: Now) -> Self {
        let body = RpcRequest {
            agent: call.agent.clone(),
            action: call.action.clone(),
            data: call.data.clone(),
        };
        let mut filter = call.filter.clone();
        if !filter.agent.contains(&call.agent) {
            filter.agent.push(call.agent.clone());
        }
        let (time, ttl) = match call.expires {
            Some(end) => crate::security::resigned_window(end, 0, now, call.ttl),
            None => (now.unix_seconds(), call.ttl),
        };
        Signed {
            body,
            filter,
            time,
            ttl,
        }
    }
}

/// `id` when it is a v1 request id as Choria makes them (32 lowercase hex digits), else the
/// first 32 hex digits of its SHA-256: the same id always travels under the same v1 id.
pub fn v1_request_id(id: &str) -> String {
    if id.len() == crate::wire::choria_v1::REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return id.to_string();
    }
    crate::wire::choria_v2::derived_request_id(id)
}

/// The subjects a call's request goes to: the agent's broadcast subject, or each target's.
fn request_subjects(call: &RpcCall) -> Vec<String> {
    if call.targets.is_empty() {
        return vec![subjects::broadcast(&call.collective, &call.agent)];
    }
    call.targets
        .iter()
        .map(|t| subjects::node(&call.collective, t))
        .collect()
}

/// The agent payload: raw RPC JSON, except discovery, which Go clients send as base64 `ping`.
fn payload(call: &RpcCall, body: &RpcRequest) -> String {
    if call.agent == "discovery" {
        return crate::wire::encode_base64(b"ping");
    }
    body.encode_string()
}

fn validate(call: &RpcCall) -> Result<(), ClientError> {
    for (what, value) in [
        ("collective", &call.collective),
        ("agent", &call.agent),
        ("action", &call.action),
    ] {
        if !subjects::is_valid_token(value) {
            return Err(ClientError::Invalid(format!(
                "{what} {value:?} is not a valid name"
            )));
        }
    }
    if let Some(bad) = call.targets.iter().find(|t| !subjects::is_valid_dotted(t)) {
        return Err(ClientError::Invalid(format!(
            "target {bad:?} is not a valid identity"
        )));
    }
    if call.ttl < crate::wire::choria_v1::MIN_TTL {
        return Err(ClientError::Invalid(format!(
            "ttl {} is below the minimum of 30",
            call.ttl
        )));
    }
    Ok(())
}
