//! Choria clients to legacy nodes: fedgate serves a legacy collective on a Choria collective's
//! NATS network, so `fedgate rpc --collective oldsite` (or any Choria client) reaches
//! `mcollectived` nodes.
//!
//! fedgate queue-subscribes (shared by its instances) to `<legacy>.broadcast.agent.*` and
//! `<legacy>.node.*`, verifies each secure request against the Choria collective's CA as a
//! Choria server would, maps the caller into the legacy collective (`cert=<name>`), authorizes,
//! audits, and makes the call through its [`LegacyLink`]. Every legacy reply that verifies with
//! the servers' key goes back to the request's reply subject as a Choria reply from the legacy
//! node. A request fedgate's own bridge signed (its sender id says so, under the signature) is
//! never taken back. A refused caller whose request verified hears why: a Choria reply from `fedgate:<instance>`
//! with status 1 (aborted) and `data.fedgate.{code,stage,...}`, the form the federation uses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::LegacyLink;
use super::ingress::BRIDGE_SENDER_PREFIX;
use crate::audit::Event;
use crate::client::RpcCall;
use crate::config::Config;
use crate::gateway::gate::{self, Gate};
use crate::gateway::{
    Ask, Call, CallError, Claim, Code, Mode, Recorded, Refusal, Stage, admit, choria_call,
};
use crate::security::{CaBundle, NamePatterns, Now, VerifiedRequest, Verifier, patterns_defaults};
use crate::subjects::Target;
use crate::wire::Limits;
use crate::wire::choria_v1::{FederationHeader, SecureRequest, Transport, TransportHeaders};

mod replies;
use replies::{Hop, choria_reply, is_federation_collective};

/// Requests handled at once per instance.
const IN_FLIGHT: usize = 256;

/// Why the facade could not start.
#[derive(Debug, thiserror::Error)]
#[error("legacy facade {0}")]
pub struct FacadeError(String);

struct Shared {
    name: String,
    instance: String,
    realm: String,
    verifier: Verifier,
    gate: Arc<Gate>,
    link: Arc<LegacyLink>,
    nats: async_nats::Client,
    limits: Limits,
}

/// A running facade.
pub struct Facade {
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Facade {
    /// Subscribes on the Choria collective named by `[legacy.<name>] choria`.
    pub async fn start(
        config: &Config,
        name: &str,
        link: Arc<LegacyLink>,
        gate: Arc<Gate>,
        instance: &str,
    ) -> Result<Facade, FacadeError> {
        let fail = |m: String| FacadeError(format!("{name}: {m}"));
        let legacy = config
            .legacy
            .get(name)
            .ok_or_else(|| fail("no such legacy collective".into()))?;
        let realm = legacy
            .choria
            .clone()
            .ok_or_else(|| fail("no choria collective to serve on".into()))?;
        let collective = config
            .collectives
            .get(&realm)
            .ok_or_else(|| fail(format!("no collective {realm}")))?;
        let ca = collective
            .ca
            .as_ref()
            .ok_or_else(|| fail(format!("collective {realm} has no ca")))?;
        let limits = Limits::default();
        let verifier = Verifier::new(
            CaBundle::from_file(ca).map_err(|e| fail(e.to_string()))?,
            collective
                .privileged_patterns()
                .map_err(|e| fail(e.to_string()))?,
            NamePatterns::or_defaults(
                collective.certname_allowlist.as_deref(),
                patterns_defaults::ALLOWLIST,
            )
            .map_err(|e| fail(e.to_string()))?,
            limits,
        );
        let nats = crate::nats::connect_watched(
            &collective.endpoint(),
            &format!("fedgate {instance} legacy facade {name}"),
            &format!("nats collective {realm} (legacy {name} served)"),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        let group = format!("fedgate_legacy_{name}");
        let mut subscriptions = Vec::new();
        for subject in [
            format!("{name}.broadcast.agent.*"),
            format!("{name}.node.>"),
        ] {
            subscriptions.push(
                nats.queue_subscribe(subject, group.clone())
                    .await
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        nats.flush().await.map_err(|e| fail(e.to_string()))?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            instance: instance.to_string(),
            realm,
            verifier,
            gate,
            link,
            nats,
            limits,
        });
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut messages = futures::stream::select_all(subscriptions);
        let loop_stop = stop.clone();
        let loop_tasks = tasks.clone();
        tasks.spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = loop_stop.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { return };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let shared = shared.clone();
                loop_tasks.spawn(async move {
                    shared.handle(&message.subject, &message.payload).await;
                    drop(permit);
                });
            }
        });
        Ok(Facade { stop, tasks })
    }

    /// Stops taking requests and waits for those in hand.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}

impl Shared {
    async fn handle(&self, subject: &str, payload: &[u8]) {
        self.handle_one(subject, payload)
            .instrument(crate::gateway::request_span("choria-nats"))
            .await
    }

    async fn handle_one(&self, subject: &str, payload: &[u8]) {
        let mut event = Event {
            edge: "choria-nats".into(),
            realm: self.realm.clone(),
            collectives: vec![self.name.clone()],
            stage: "decode".into(),
            ..Event::default()
        };
        let mut answer = None;
        match self.serve(subject, payload, &mut event, &mut answer).await {
            Ok(()) => {}
            Err(refusal) => {
                let code = refusal.code.as_str();
                metrics::counter!("fedgate_legacy_facade_refused_total", "legacy" => self.name.clone(), "reason" => code)
                    .increment(1);
                refusal.count("choria-nats");
                refusal.mark(&mut event);
                if let Err(err) = self.gate.record(event.clone()).await {
                    tracing::error!(legacy = %self.name, %err, "could not record a refusal");
                }
                // A replay's reply subject is the replayer's choice: it is not told.
                if let Some(answer) = answer.filter(|_| refusal.stage != Stage::Replay) {
                    self.tell(&answer, &event).await;
                }
            }
        }
    }

    /// Answers a refused caller with the federation's refusal reply, routed as the request was.
    async fn tell(&self, answer: &Answer, event: &Event) {
        let mut reply = gate::refusal_reply(
            &self.instance,
            &answer.requestid,
            &answer.agent,
            &answer.action,
            event,
        );
        if let Some(federation) = &answer.headers.federation {
            reply.headers.federation = Some(FederationHeader {
                req: federation.req.clone(),
                reply_to: federation.reply_to.clone(),
                target: Vec::new(),
            });
            reply.headers.seen_by = answer.headers.seen_by.clone();
        }
        let bytes = Bytes::from(reply.encode());
        if let Err(err) = self.nats.publish(answer.reply_to.clone(), bytes).await {
            tracing::warn!(legacy = %self.name, %err, "could not answer a refused caller");
        }
    }

    async fn serve(
        &self,
        subject: &str,
        payload: &[u8],
        event: &mut Event,
        answer: &mut Option<Answer>,
    ) -> Result<(), Refusal> {
        let taken = self.take(subject, payload, event, answer)?;
        let recorded = self.admit(&taken, event).await?;
        self.forward(taken, recorded, event).await;
        Ok(())
    }

    /// Decodes and verifies a request, and checks its route, call, inputs and lifetime.
    fn take(
        &self,
        subject: &str,
        payload: &[u8],
        event: &mut Event,
        answer: &mut Option<Answer>,
    ) -> Result<Taken, Refusal> {
        let (headers, reply_to, verified) = self.verified(payload, event, answer)?;
        let envelope = &verified.request().envelope;
        if envelope.collective != self.name {
            return Err(Refusal::unverified(
                "wrong_collective",
                format!(
                    "the request is for {}, not {}",
                    envelope.collective, self.name
                ),
            ));
        }
        let targets = match Target::parse(subject) {
            Some(Target::Node { identity, .. }) => vec![identity.to_string()],
            Some(Target::Broadcast { agent, .. }) if agent == envelope.agent => Vec::new(),
            Some(Target::Broadcast { agent, .. }) => {
                return Err(Refusal::new(
                    Stage::Decode,
                    Code::AgentMismatch,
                    format!(
                        "{subject} is for agent {agent}, but the signed agent is {}",
                        envelope.agent
                    ),
                ));
            }
            _ => {
                return Err(Refusal::framing(
                    "bad_target",
                    format!(
                        "{subject} is not a broadcast or node subject of {}",
                        self.name
                    ),
                ));
            }
        };
        let call = choria_call(verified.request(), &self.limits).map_err(|e| match e {
            CallError::Malformed(err) => Refusal::framing("malformed", err.to_string()),
            CallError::Refused(refusal) => refusal,
        })?;
        if let Some(answer) = answer.as_mut() {
            answer.action = call.action.clone();
        }
        event.action = Some(call.action.clone());
        event.data_keys = call.data.keys().cloned().collect();
        self.gate
            .check_inputs(&call.agent, &call.action, &call.data)?;
        let now = Now::system().unix_seconds();
        let until = self.gate.lifetime.check(envelope.time, envelope.ttl, now)?;
        // A filter the legacy nodes cannot apply as Choria nodes would is refused, not widened.
        crate::legacy::legacy_filter(&envelope.filter, &envelope.agent)
            .map_err(|why| Refusal::framing("unsupported_filter", why))?;
        Ok(Taken {
            headers,
            reply_to,
            verified,
            call,
            targets,
            until,
            now,
        })
    }

    /// Decodes a request and verifies it as a Choria server would; once verified, a refusal
    /// is told to the caller (set in `answer`), unless it is a discovery ping, whose answer can
    /// only be a pong.
    fn verified(
        &self,
        payload: &[u8],
        event: &mut Event,
        answer: &mut Option<Answer>,
    ) -> Result<(TransportHeaders, String, VerifiedRequest), Refusal> {
        let transport = Transport::decode(payload, &self.limits)
            .map_err(|e| Refusal::framing("malformed", e.to_string()))?;
        // A client's reply subject, or, for a request a Federation Broker relayed, its cluster's
        // collective subject (the client's own travels in the federation header).
        let federated = transport.headers.federation.is_some();
        let reply_to = transport
            .headers
            .reply_to
            .clone()
            .filter(|r| {
                r.starts_with(&format!("{}.reply.", self.name))
                    || (federated && is_federation_collective(r))
            })
            .ok_or_else(|| {
                Refusal::framing(
                    "bad_reply_to",
                    format!(
                        "reply-to must be a {}.reply. subject, or choria.federation.<cluster>.collective for a federated request",
                        self.name
                    ),
                )
            })?;
        let secure = SecureRequest::decode(&transport.data, &self.limits)
            .map_err(|e| Refusal::framing("malformed", e.to_string()))?;
        // What it claims, recorded as claimed should it not verify.
        if let Ok(claimed) = secure.request(&self.limits) {
            event.request_id = Some(claimed.envelope.requestid.chars().take(64).collect());
            event.claimed_caller = Some(claimed.envelope.callerid.chars().take(256).collect());
        }
        let verified: VerifiedRequest = self
            .verifier
            .verify(secure, Now::system())
            .map_err(|e| Refusal::unverified(e.reason().as_str(), e.to_string()))?;
        let envelope = &verified.request().envelope;
        crate::gateway::note_request(&envelope.requestid, verified.caller().as_str());
        event.caller = Some(verified.caller().as_str().to_string());
        event.claimed_caller = None;
        event.request_id = Some(envelope.requestid.clone());
        event.agent = Some(envelope.agent.clone());
        // What fedgate's own bridge published into this collective: never taken back.
        if envelope.senderid.starts_with(BRIDGE_SENDER_PREFIX) {
            metrics::counter!("fedgate_legacy_own_requests_dropped_total", "legacy" => self.name.clone())
                .increment(1);
            return Err(Refusal::new(
                Stage::Verify,
                Code::OwnRequest,
                format!(
                    "sent by fedgate's bridge as {}: fedgate published it itself",
                    envelope.senderid
                ),
            ));
        }
        // Verified: a refusal from here on is told (a discovery ping's answer can only be a
        // pong, so it is not).
        if envelope.agent != "discovery" {
            *answer = Some(Answer {
                reply_to: reply_to.clone(),
                requestid: envelope.requestid.clone(),
                agent: envelope.agent.clone(),
                action: String::new(),
                headers: transport.headers.clone(),
            });
        }
        Ok((transport.headers, reply_to, verified))
    }

    /// Maps, authorizes, claims and records the request.
    async fn admit(&self, taken: &Taken, event: &mut Event) -> Result<Recorded, Refusal> {
        let Taken {
            verified,
            call,
            targets,
            until,
            now,
            ..
        } = taken;
        let envelope = &verified.request().envelope;
        let rules = self.gate.rules();
        let ask = Ask {
            realm: &self.realm,
            caller: verified.caller(),
            collective: &self.name,
            agent: &call.agent,
            action: &call.action,
            filter: &envelope.filter,
        };
        let admitted = match admit(&self.gate, &rules, &ask, event.clone()) {
            Ok(admitted) => admitted,
            Err(not) => {
                *event = not.event;
                return Err(not.refusal);
            }
        };
        *event = admitted.event().clone();
        // The request is re-signed with a fresh time for the legacy side, so a replay would be
        // new there: the signed bytes are claimed for this collective (per node when directed).
        let claim = Claim {
            realm: &self.realm,
            signed: verified.secure().message.as_bytes(),
            collective: &self.name,
            mode: match targets.as_slice() {
                [] => Mode::Broadcast,
                nodes => Mode::Directed(nodes),
            },
        };
        self.gate.replay.claim(&claim, *until, *now).await?;
        match self.gate.record_admitted(admitted).await {
            Ok(recorded) => Ok(recorded),
            Err((_, err)) => {
                // Not sent: the request may be tried again.
                self.gate.replay.release(&claim).await;
                Err(Refusal::unrecorded(&err))
            }
        }
    }

    /// Sends the recorded request to the legacy collective and carries the replies back.
    async fn forward(&self, taken: Taken, recorded: Recorded, event: &Event) {
        let Taken {
            headers,
            reply_to,
            verified,
            call,
            targets,
            until,
            now,
        } = taken;
        let envelope = &verified.request().envelope;
        let (cleared, link) = (recorded.cleared(), recorded.link().to_string());
        // Valid on the legacy side no longer than the Choria request is.
        let ttl = until.saturating_sub(now).clamp(1, 60);
        let rpc = RpcCall {
            data: call.data,
            filter: recorded.filter().clone(),
            expect: (!targets.is_empty()).then_some(targets.len()),
            targets,
            ttl,
            timeout: Duration::from_secs(ttl.unsigned_abs()).min(Duration::from_secs(30)),
            idle: Duration::from_secs(2),
            ..RpcCall::new(&self.name, &envelope.agent, &call.action)
        };
        let requestid = envelope.requestid.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4096);
        let (id, agent, action) = (requestid.clone(), rpc.agent.clone(), rpc.action.clone());
        let server = crate::nats::connected_server(&self.nats);
        let hop = Hop {
            request: &headers,
            server: &server,
            legacy: &self.name,
        };
        // The closure owns the sender: when the call ends, the forwarder sees the channel close.
        let call = self.link.call(&cleared, &rpc, move |reply| {
            let _ = tx.try_send(choria_reply(&id, &agent, &action, reply, &hop));
        });
        let forward = async {
            while let Some(bytes) = rx.recv().await {
                let _ = self.nats.publish(reply_to.clone(), bytes).await;
            }
        };
        let (summary, ()) = tokio::join!(call, forward);
        let replies = summary.as_ref().map_or(0, |s| s.responses as u64);
        self.gate.complete_now(event, link, replies).await;
    }
}

/// A request that verified and checked out, ready for admission.
struct Taken {
    headers: TransportHeaders,
    reply_to: String,
    verified: VerifiedRequest,
    call: Call,
    /// Directed targets; none for a broadcast.
    targets: Vec<String>,
    /// When the request stops being valid.
    until: i64,
    now: i64,
}

/// Whom a refusal is told to, and how the reply is routed.
struct Answer {
    reply_to: String,
    requestid: String,
    agent: String,
    action: String,
    headers: TransportHeaders,
}
