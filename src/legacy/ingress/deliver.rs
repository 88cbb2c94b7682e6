//! One delivery's way: its route and signature checked, then admitted into each target
//! collective (mapped, authorized, recorded), published, and its replies carried back; or
//! refused, recorded, counted, and told to a caller whose signature verified.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde_json::Value;
use tracing::Instrument;

use super::checks::{self, Route};
use super::replies::{Answer, refusal_body};
use super::{RETRY_PAUSE, Shared, Target};
use crate::audit::Event;
use crate::gateway::replay::BodyCopy;
use crate::gateway::{Ask, Claim, Cleared, Code, Mode, Refusal as AdmissionRefusal, Stage, admit};
use crate::rules::Rules;
use crate::security::legacy::{LegacyCall, LegacyRefusal, VerifiedLegacyRequest, is_request_id};
use crate::security::{CallerId, Now};
use crate::wire::choria_v1::Filter;
use crate::wire::mcollective::envelope::LegacyRequest;

/// Seconds past its TTL an expired request's caller is still told: mco's `expiration` keeps a
/// request in the queue for its TTL plus 10 s, and the broker drops it after that.
const EXPIRY_GRACE: i64 = 10;

/// Why a request was refused, and the record to write.
pub(super) type Refusal = (AdmissionRefusal, Event);

/// A delivery refused for good, and whom to tell (none before the signature verified).
pub(super) struct Refused {
    refusal: Box<Refusal>,
    answer: Option<Answer>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            refusal: Box::new(refusal),
            answer: None,
        }
    }
}

/// Why a target collective did not take a request.
enum NotAdmitted {
    /// Refused: the record to write.
    Refused(Box<Refusal>),
    /// Allowed, but the decision could not be recorded.
    Unrecorded(String),
}

/// What became of a delivery that was not refused.
pub(super) enum Handled {
    /// Forwarded and acknowledged.
    Forwarded,
    /// fedgate could not act on it now (its audit trail or the Choria network failed): it goes
    /// back on the queue, and is taken again until it expires.
    Retry(&'static str, String),
}

/// A request admitted into one target: mapped, authorized and recorded.
pub(super) struct Admitted<'s> {
    pub(super) target: &'s Target,
    /// What it may be published as.
    pub(super) cleared: Cleared,
    pub(super) event: Event,
    pub(super) link: String,
}

/// A delivery whose route, signature, caller and lifetime checked out.
pub(super) struct Inbound {
    pub(super) verified: VerifiedLegacyRequest,
    pub(super) caller: CallerId,
    pub(super) agent: String,
    pub(super) action: String,
    pub(super) data: serde_json::Map<String, Value>,
    pub(super) replies_wanted: bool,
    pub(super) filter: Filter,
    /// The TTL it is re-issued with.
    /// The Unix second the original request stops being valid.
    pub(super) until: i64,
    pub(super) route: Route,
    /// Where replies go, and who they are from.
    pub(super) answer: Answer,
    /// Who signed it, as the replay guard keys it: this legacy realm and the key's name (the
    /// ssl plugin signs the body only, so two callers may sign identical bodies).
    pub(super) signed_by: String,
    /// What identifies the signed request: the signed body (with the envelope's TTL and time
    /// for a bare pre-2.0 body, which holds neither).
    pub(super) signed: Vec<u8>,
    /// What a replay repeats: [`Inbound::signed`] and the request id it came under. The body
    /// under another id is a copy, counted apart ([`BodyCopy`]).
    pub(super) exact: Vec<u8>,
    pub(super) event: Event,
}

impl Shared {
    pub(super) async fn handle(&self, delivery: Delivery) {
        self.handle_one(delivery)
            .instrument(crate::gateway::request_span("legacy-amqp"))
            .await
    }

    async fn handle_one(&self, delivery: Delivery) {
        let started = std::time::Instant::now();
        let timed = |result: &'static str| {
            metrics::histogram!(
                "fedgate_legacy_request_duration_seconds",
                "legacy" => self.name.clone(),
                "result" => result
            )
            .record(started.elapsed().as_secs_f64());
        };
        let reply_to = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.as_str().to_string());
        let exchange = delivery.exchange.as_str();
        let key = delivery.routing_key.as_str();
        let collective = &self.legacy.collective;
        // Only what came through the bridged bindings: a message put straight on the queue
        // through the default exchange would skip the agent list and the directed bindings.
        let route = if exchange == format!("{collective}_directed") {
            Some(Route::Directed(key.to_string()))
        } else if exchange == format!("{collective}_broadcast")
            && self.bridge.agents.iter().any(|a| a == key)
        {
            Some(Route::Broadcast(key.to_string()))
        } else {
            None
        };
        let result = match route {
            Some(route) => {
                self.bridge_one(&delivery.data, reply_to.as_deref(), route, &delivery)
                    .await
            }
            None => Err(Refused::from((
                AdmissionRefusal::framing(
                    "bad_route",
                    format!(
                        "arrived through exchange {exchange:?} with key {key:?}, not a bridged binding"
                    ),
                ),
                self.event(),
            ))),
        };
        match result {
            Ok(Handled::Forwarded) => timed("forwarded"),
            Ok(Handled::Retry(code, reason)) => {
                timed("requeued");
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
            Err(refused) => {
                self.refuse(refused, &delivery).await;
                timed("refused");
            }
        }
    }

    /// Records and acknowledges a refused delivery, and tells the caller when it may be told.
    async fn refuse(&self, refused: Refused, delivery: &Delivery) {
        let Refused {
            refusal,
            mut answer,
        } = refused;
        let (refusal, event) = *refusal;
        // A delivery the broker hands out again after fedgate forwarded it but before its
        // acknowledgement reached the broker: dropped, never forwarded twice, and its caller,
        // who is being served, is not told otherwise.
        let refusal = if refusal.code == Code::Replay && delivery.redelivered {
            answer = None;
            AdmissionRefusal::new(
                Stage::Replay,
                Code::Framing("duplicate_delivery"),
                "redelivered by the broker after it was forwarded",
            )
        } else {
            refusal
        };
        if refusal.code == Code::OwnRequest {
            self.own_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("fedgate_legacy_own_requests_dropped_total", "legacy" => self.name.clone())
                .increment(1);
        }
        let event = self.record_refusal((refusal, event)).await;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        if let Some(answer) = answer {
            self.send_reply(self.legacy.serializer, &answer, &refusal_body(&event))
                .await;
        }
    }

    /// Counts a refusal and records it as a denied decision; hands back what was recorded.
    async fn record_refusal(&self, (refusal, mut event): Refusal) -> Event {
        metrics::counter!("fedgate_legacy_refused_total", "legacy" => self.name.clone(), "reason" => refusal.code.as_str())
            .increment(1);
        refusal.count("legacy-amqp");
        refusal.mark(&mut event);
        if let Err(err) = self.gate.record(event.clone()).await {
            tracing::error!(legacy = %self.name, %err, "could not record a refusal");
        }
        event
    }

    fn event(&self) -> Event {
        Event {
            edge: "legacy-amqp".into(),
            realm: self.name.clone(),
            collectives: self.targets.iter().map(|t| t.collective.clone()).collect(),
            ..Event::default()
        }
    }

    /// Decodes and verifies a delivery, then checks it against its route and its lifetime.
    fn accept(
        &self,
        bytes: &[u8],
        reply_to: Option<&str>,
        route: Route,
    ) -> Result<Inbound, Refused> {
        let serializer = self.legacy.serializer;
        let mut event = self.event();
        let request = LegacyRequest::decode(serializer, bytes, self.legacy.max_message_bytes)
            .map_err(|e| {
                (
                    AdmissionRefusal::framing(e.code(), e.to_string()),
                    event.clone(),
                )
            })?;
        event.claimed_caller = Some(request.callerid.clone());
        event.request_id = Some(request.requestid.clone());
        event.agent = Some(request.agent.clone());
        let Some(reply_to) = reply_to.and_then(checks::reply_queue).map(str::to_string) else {
            let refusal = AdmissionRefusal::framing("bad_reply_to", "no usable reply_to");
            return Err((refusal, event).into());
        };
        let now = Now::system().unix_seconds();
        // Whom to tell should the request be refused once its signature verified (a discovery
        // ping's answer can only be "pong", and an id fedgate does not take is not sent back).
        let told =
            (request.agent != "discovery" && is_request_id(&request.requestid)).then(|| Answer {
                reply_to: reply_to.clone(),
                requestid: request.requestid.clone(),
                agent: request.agent.clone(),
                sender: route.node().unwrap_or(&self.sender).to_string(),
            });
        let verified = self
            .verifier
            .verify_request(serializer, request, now)
            .map_err(|e| {
                let mut refused = refused_unverified(&e, event.clone());
                // Told once its signature verified, unless it expired so long ago that mco's
                // expiration would have dropped it from the queue (nobody waits for it).
                if e.after_signature() && !expired_long_ago(&e) {
                    refused.answer = told;
                }
                refused
            })?;
        let (agent, action, data, replies_wanted) = call_parts(&verified.call);
        // From here the caller is known: a refusal is told, unless no reply is wanted (or the
        // request is a discovery ping, whose answer can only be "pong").
        let answer = Answer {
            reply_to,
            requestid: verified.request.requestid.clone(),
            agent: verified.request.agent.clone(),
            sender: route.node().unwrap_or(&self.sender).to_string(),
        };
        let tell = replies_wanted && agent != "discovery";
        let refuse = |refusal, event| Refused {
            refusal: Box::new((refusal, event)),
            answer: tell.then(|| answer.clone()),
        };
        let caller = CallerId::parse(&verified.request.callerid).map_err(|e| {
            let refusal = AdmissionRefusal::unverified("bad_callerid", e.to_string());
            refuse(refusal, event.clone())
        })?;
        crate::gateway::note_request(&verified.request.requestid, caller.as_str());
        // On the record under the id it goes into Choria with, and the caller's beside it when
        // that differs.
        let wire_id = crate::legacy::choria_request_id(&verified.request.requestid);
        if wire_id != verified.request.requestid {
            event.legacy_request_id = Some(verified.request.requestid.clone());
        }
        event.request_id = Some(wire_id);
        event.caller = Some(caller.as_str().to_string());
        event.claimed_caller = None;
        event.agent = Some(agent.clone());
        event.action = Some(action.clone());
        event.data_keys = data.keys().cloned().collect();
        checks::agent_agrees(&route, &self.bridge.agents, &agent).map_err(|m| {
            let refusal = AdmissionRefusal::new(Stage::Decode, Code::AgentMismatch, m);
            refuse(refusal, event.clone())
        })?;
        self.gate
            .check_inputs(&agent, &action, &data)
            .map_err(|r| refuse(r, event.clone()))?;
        // The same lifetime rules as every ingress; the re-issued request ends with this one.
        let until = self
            .gate
            .lifetime
            .check(verified.body.msgtime, verified.body.ttl, now)
            .map_err(|r| refuse(r, event.clone()))?;
        let filter = checks::choria_filter(&verified.request.filter).map_err(|m| {
            refuse(
                AdmissionRefusal::framing("unsupported_filter", m),
                event.clone(),
            )
        })?;
        if self.gate.auditor.records_values(&agent, &action) {
            event.data = Some(data.clone());
        }
        let mut signed = verified.request.body.clone();
        if verified.bare {
            // Its TTL and time are unsigned: each pair is another request as far as the guard
            // can tell, which is all mcollectived asks of it.
            metrics::counter!("fedgate_legacy_bare_bodies_total", "legacy" => self.name.clone())
                .increment(1);
            signed.extend_from_slice(
                format!("\0{}\0{}", verified.body.ttl, verified.body.msgtime).as_bytes(),
            );
        }
        let mut exact = signed.clone();
        exact.push(0);
        exact.extend_from_slice(verified.request.requestid.as_bytes());
        Ok(Inbound {
            signed_by: format!("{}/{}", self.name, verified.cert_name),
            signed,
            exact,
            verified,
            caller,
            agent,
            action,
            data,
            replies_wanted,
            filter,
            until,
            route,
            answer,
            event,
        })
    }

    /// One request: Err carries the refusal and whom to tell.
    async fn bridge_one(
        &self,
        bytes: &[u8],
        reply_to: Option<&str>,
        route: Route,
        delivery: &Delivery,
    ) -> Result<Handled, Refused> {
        let inbound = self.accept(bytes, reply_to, route)?;
        let admitted = match self.admit_all(&inbound).await {
            Ok(admitted) => admitted,
            Err(NotAdmitted::Unrecorded(err)) => {
                // Nothing is forwarded that is not on the record (each claim was given back):
                // try again later.
                return Ok(Handled::Retry("audit_failed", err));
            }
            Err(NotAdmitted::Refused(refusal)) => {
                // Every refused caller whose signature verified is told, a replay too (its
                // reply queue may be the replayer's, who learns only that it was refused).
                let tell = inbound.replies_wanted && inbound.agent != "discovery";
                return Err(Refused {
                    refusal,
                    answer: tell.then_some(inbound.answer),
                });
            }
        };
        self.forward(&inbound, admitted, delivery).await
    }

    /// Admits the request into each target collective it goes to (a directed copy: the one
    /// whose discovery found the node). Refused everywhere: the last refusal is the delivery's,
    /// the others are recorded here.
    async fn admit_all(&self, inbound: &Inbound) -> Result<Vec<Admitted<'_>>, NotAdmitted> {
        let home = inbound.route.node().and_then(|node| {
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
            match self.admit(&rules, target, inbound).await {
                Ok(one) => admitted.push(one),
                Err(NotAdmitted::Refused(refusal)) => refused.push(*refusal),
                Err(NotAdmitted::Unrecorded(err)) => unrecorded.push(err),
            }
        }
        if admitted.is_empty() {
            if let Some(err) = unrecorded.pop() {
                return Err(NotAdmitted::Unrecorded(err));
            }
            let last = refused.pop().unwrap_or_else(|| {
                let event = inbound.event.clone();
                let why = "no collective to bridge into";
                (
                    AdmissionRefusal::new(Stage::Map, Code::Unmapped, why),
                    event,
                )
            });
            for refusal in refused {
                self.record_refusal(refusal).await;
            }
            return Err(NotAdmitted::Refused(Box::new(last)));
        }
        // Some collectives took it: the others' refusals are recorded beside it.
        for refusal in refused {
            self.record_refusal(refusal).await;
        }
        for err in unrecorded {
            tracing::error!(legacy = %self.name, %err, "a collective was skipped: its decision could not be recorded");
        }
        Ok(admitted)
    }

    /// Maps, authorizes and records a request for one target collective.
    async fn admit<'s>(
        &self,
        rules: &Rules,
        target: &'s Target,
        inbound: &Inbound,
    ) -> Result<Admitted<'s>, NotAdmitted> {
        let ask = Ask {
            realm: &self.name,
            caller: &inbound.caller,
            collective: &target.collective,
            agent: &inbound.agent,
            action: &inbound.action,
            filter: &inbound.filter,
        };
        // Discovery is decided by policy like any other agent, as on every ingress.
        let mut admitted = admit(&self.gate, rules, &ask, inbound.event.clone())
            .map_err(|not| NotAdmitted::Refused(Box::new((not.refusal, not.event))))?;
        // Once mapped and allowed, the signed body under its request id is claimed for this
        // collective (per node for a directed copy), on every instance that shares the guard.
        let nodes = inbound.nodes();
        let claim = self.claim(inbound, &target.collective, &nodes);
        let now = Now::system().unix_seconds();
        if let Err(err) = self.gate.replay.claim(&claim, inbound.until, now).await {
            let refused = (AdmissionRefusal::from(err), admitted.event().clone());
            return Err(NotAdmitted::Refused(Box::new(refused)));
        }
        // The same body under other request ids: served as mcollectived serves it, a bounded
        // number of times within its TTL, each copy counted and on the record.
        let copy = BodyCopy {
            realm: &inbound.signed_by,
            signed: &inbound.signed,
            collective: &target.collective,
            request_id: &inbound.verified.request.requestid,
        };
        let limit = self.bridge.max_copies;
        match self
            .gate
            .replay
            .copy(&copy, limit, inbound.until, now)
            .await
        {
            Ok(0) => {}
            Ok(place) => {
                metrics::counter!("fedgate_legacy_duplicates_total", "legacy" => self.name.clone())
                    .increment(1);
                admitted.mark_duplicate(place as u64);
            }
            Err(err) => {
                self.gate.replay.release(&claim).await;
                let refused = (AdmissionRefusal::from(err), admitted.event().clone());
                return Err(NotAdmitted::Refused(Box::new(refused)));
            }
        }
        let recorded = match self.gate.record_admitted(admitted).await {
            Ok(recorded) => recorded,
            Err((_, err)) => {
                self.gate.replay.release(&claim).await;
                return Err(NotAdmitted::Unrecorded(err.to_string()));
            }
        };
        Ok(Admitted {
            target,
            cleared: recorded.cleared(),
            event: recorded.event().clone(),
            link: recorded.link().to_string(),
        })
    }
}

impl Shared {
    /// The replay claim of `inbound` in `collective`: the signed body, per node when directed.
    pub(super) fn claim<'a>(
        &'a self,
        inbound: &'a Inbound,
        collective: &'a str,
        nodes: &'a [String],
    ) -> Claim<'a> {
        Claim {
            realm: &inbound.signed_by,
            signed: &inbound.exact,
            collective,
            mode: if nodes.is_empty() {
                Mode::Broadcast
            } else {
                Mode::Directed(nodes)
            },
        }
    }
}

impl Inbound {
    /// The node a directed copy is for, as a list.
    pub(super) fn nodes(&self) -> Vec<String> {
        self.route.node().map(str::to_string).into_iter().collect()
    }
}

/// A request refused as older than its TTL by more than [`EXPIRY_GRACE`]: past the expiration
/// mco gives it in the queue, so no caller waits for an answer.
fn expired_long_ago(err: &LegacyRefusal) -> bool {
    matches!(err, LegacyRefusal::Expired { age, ttl, .. } if *age > ttl.saturating_add(EXPIRY_GRACE))
}

/// A verification failure: recorded; told to the caller only once the signature verified (before
/// that, the sender is not known to be the signer).
fn refused_unverified(err: &LegacyRefusal, event: Event) -> Refused {
    let refusal = match err {
        LegacyRefusal::OwnRequest(_) => {
            AdmissionRefusal::new(Stage::Verify, Code::OwnRequest, err.to_string())
        }
        _ => AdmissionRefusal::unverified(err.code(), err.to_string()),
    };
    (refusal, event).into()
}

/// The agent, action, inputs, and whether replies are wanted.
fn call_parts(call: &LegacyCall) -> (String, String, serde_json::Map<String, Value>, bool) {
    match call {
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
    }
}
