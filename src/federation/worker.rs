//! Subscription loops of a broker: requests in from the federation, replies back from members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::resign::{self, ResignRules};
use super::stats::{ClusterStats, Direction};
use super::transform::{
    ClusterRules, Destination, Egress, Refusal, RoutedRequest, route_chained_reply, route_reply,
    route_request,
};
use crate::audit::{Event, Verdict};
use crate::gateway::gate::{self, Gate};
use crate::gateway::{
    Ask, Call, CallError, Claim, Mode, Recorded, Refusal as Admission, Why, admit, choria_call,
};
use crate::nats::connected_server;
use crate::rules::Rules;
use crate::security::{Now, VerifiedRequest};
use crate::subjects::Target;
use crate::wire::choria_v1::SecureRequest;

/// Longest piece of an untrusted message that goes into a log line.
const LOG_CLIP: usize = 256;

/// What one cluster's workers share.
pub(super) struct ClusterContext {
    pub rules: ClusterRules,
    pub stats: Arc<ClusterStats>,
    /// The federation network.
    pub federation: Client,
    /// Member networks by name.
    pub networks: Arc<BTreeMap<String, Client>>,
    /// Policy and audit; present in resign mode.
    pub gate: Option<Arc<Gate>>,
}

/// The kind of subscription a worker serves.
#[derive(Clone)]
pub(super) enum Worker {
    /// `choria.federation.<cluster>.federation` on the federation network.
    Requests(Arc<ClusterContext>),
    /// Replies on a member's network: `choria.federation.<cluster>.collective` from a collective,
    /// or `choria.federation.<cluster>.reply.>` from a member federation (`chained`).
    Replies {
        ctx: Arc<ClusterContext>,
        member: Client,
        chained: bool,
    },
}

impl Worker {
    /// Serves `subscription` until `stop`, then drains it: unsubscribe, finish what was delivered.
    pub(super) async fn run(self, mut subscription: Subscriber, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                message = subscription.next() => message,
            };
            match message {
                Some(message) => self.handle(message).await,
                None => return,
            }
        }
        if let Err(err) = subscription.drain().await {
            tracing::warn!(%err, "could not drain a subscription");
            return;
        }
        while let Some(message) = subscription.next().await {
            self.handle(message).await;
        }
    }

    async fn handle(&self, message: Message) {
        match self {
            Worker::Requests(ctx) => relay_request(ctx, &message).await,
            Worker::Replies {
                ctx,
                member,
                chained,
            } => {
                let started = Instant::now();
                ctx.stats.received(Direction::Reply);
                let (inbound, outbound) =
                    (connected_server(member), connected_server(&ctx.federation));
                let routed = if ctx.rules.resign.is_some() {
                    resign::route_reply(&message.payload, &ctx.rules, &inbound, &outbound).map(
                        |(reply_to, payload, req)| {
                            if let Some(gate) = &ctx.gate {
                                gate.replied(&req);
                            }
                            (reply_to, payload)
                        },
                    )
                } else if *chained {
                    route_chained_reply(
                        &message.subject,
                        &message.payload,
                        &ctx.rules,
                        &inbound,
                        &outbound,
                    )
                } else {
                    route_reply(&message.payload, &ctx.rules, &inbound, &outbound)
                };
                match routed {
                    Ok((reply_to, payload)) => {
                        publish(
                            ctx,
                            Direction::Reply,
                            &ctx.federation,
                            reply_to,
                            Bytes::from(payload),
                        )
                        .await;
                        ctx.stats.timed(Direction::Reply, started.elapsed());
                    }
                    Err(refusal) => refuse(ctx, Direction::Reply, &refusal),
                }
            }
        }
    }
}

/// Relays one federated request: headers only in pass-through mode, the full gate in resign mode.
async fn relay_request(ctx: &ClusterContext, message: &Message) {
    relay_one(ctx, message)
        .instrument(crate::gateway::request_span(EDGE))
        .await
}

async fn relay_one(ctx: &ClusterContext, message: &Message) {
    let started = Instant::now();
    ctx.stats.received(Direction::Request);
    let routed = match route_request(&message.payload, &ctx.rules) {
        Ok(routed) => routed,
        Err(refusal) => {
            if let Some(gate) = &ctx.gate {
                let mut event = Event {
                    edge: EDGE.into(),
                    realm: ctx
                        .rules
                        .resign
                        .as_ref()
                        .map(|r| r.realm.clone())
                        .unwrap_or_default(),
                    ..Event::default()
                };
                deny(&mut event, "decode", &refusal);
                let _ = gate.record(event).await;
            }
            return refuse(ctx, Direction::Request, &refusal);
        }
    };
    match (&ctx.rules.resign, &ctx.gate) {
        (Some(rules), Some(gate)) => relay_resigned(ctx, rules, gate, &routed).await,
        _ => relay_pass_through(ctx, &routed).await,
    }
    tracing::debug!(cluster = %ctx.rules.cluster, req = routed.request_id(), "relayed request");
    ctx.stats.timed(Direction::Request, started.elapsed());
}

/// go-choria's broker: only transport headers change.
async fn relay_pass_through(ctx: &ClusterContext, routed: &RoutedRequest<'_>) {
    let inbound = connected_server(&ctx.federation);
    for (destination, targets) in routed.groups() {
        // Every destination network is connected at start-up (`Broker::start`).
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let outbound = connected_server(client);
        let egress = routed.egress(destination, targets, &ctx.rules, &inbound, &outbound);
        publish_all(ctx, client, egress).await;
    }
}

/// Resign mode through the admission path: verify once and check the call as signed (agents,
/// request id, lifetime), then per destination collective admit (map, authorize), claim the
/// signed bytes against replays, re-sign, record, and only then publish. A caller refused in one
/// collective still reaches the others; every refusal of a verified caller is answered on its
/// reply subject.
async fn relay_resigned(
    ctx: &ClusterContext,
    rules: &ResignRules,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
) {
    let now = Now::system();
    let mut event = Event {
        edge: EDGE.into(),
        realm: rules.realm.clone(),
        collectives: routed
            .groups()
            .keys()
            .map(|d| d.network().to_string())
            .collect(),
        targets: routed.groups().values().map(Vec::len).sum(),
        ..Event::default()
    };
    let verified = match resign::verify(routed, rules, now) {
        Ok(verified) => verified,
        Err(refusal) => {
            claimed(&mut event, routed, rules);
            deny(&mut event, "verify", &refusal);
            let _ = gate.record(event).await;
            return refuse(ctx, Direction::Request, &refusal);
        }
    };
    let request = verified.request();
    crate::gateway::note_request(&request.envelope.requestid, verified.caller().as_str());
    event.request_id = Some(request.envelope.requestid.clone());
    event.caller = Some(verified.caller().as_str().to_string());
    event.agent = Some(request.envelope.agent.clone());
    event.caller_filter = gate::summarize(&request.envelope.filter);
    if let Err(refusal) = resign::check_headers(routed, &verified) {
        deny(&mut event, "decode", &refusal);
        return answer_refusal(ctx, gate, routed, event, &refusal).await;
    }
    let call = match choria_call(request, rules.verifier.limits()) {
        Ok(call) => call,
        Err(err) => {
            let refusal = match err {
                CallError::Malformed(err) => Refusal::Malformed(err),
                CallError::Refused(refusal) => Refusal::Admission(refusal),
            };
            deny(&mut event, "decode", &refusal);
            return answer_refusal(ctx, gate, routed, event, &refusal).await;
        }
    };
    event.action = Some(call.action.clone());
    event.data_keys = call.data.keys().cloned().collect();
    if gate.auditor.records_values(&call.agent, &call.action) {
        event.data = Some(call.data.clone());
    }
    if let Err(refusal) = gate.check_inputs(&call.agent, &call.action, &call.data) {
        let refusal = Refusal::Admission(refusal);
        deny(&mut event, "validate", &refusal);
        return answer_refusal(ctx, gate, routed, event, &refusal).await;
    }
    let until = match gate.lifetime.check(
        request.envelope.time,
        request.envelope.ttl,
        now.unix_seconds(),
    ) {
        Ok(until) => until,
        Err(refusal) => {
            let refusal = Refusal::Admission(refusal);
            deny(&mut event, "verify", &refusal);
            return answer_refusal(ctx, gate, routed, event, &refusal).await;
        }
    };
    let ttl = Duration::from_secs(request.envelope.ttl.clamp(0, rules.max_ttl) as u64);
    // One set of rules maps and authorizes every copy of the request.
    let book = gate.rules();
    event.revision = book.revision;
    let share = Share {
        ctx,
        rules,
        gate,
        routed,
        verified: &verified,
        call: &call,
        until,
        now,
    };
    for (destination, targets) in routed.groups() {
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let event = Event {
            targets: targets.len(),
            ..event.clone()
        };
        if let Some(recorded) = share
            .admit(&book, destination, targets, client, event)
            .await
        {
            let (recorded, egress) = recorded;
            publish_recorded(ctx, client, &recorded, egress).await;
            gate.track(
                &request.envelope.requestid,
                recorded.link().to_string(),
                recorded.event(),
                ttl,
            )
            .await;
        }
    }
}

/// What every destination's share of one resigned request is decided with.
struct Share<'a> {
    ctx: &'a ClusterContext,
    rules: &'a ResignRules,
    gate: &'a Gate,
    routed: &'a RoutedRequest<'a>,
    verified: &'a VerifiedRequest,
    call: &'a Call,
    until: i64,
    now: Now,
}

impl Share<'_> {
    /// Admits, claims, re-signs and records one destination's share; `None` when it was refused
    /// (recorded and answered here).
    async fn admit(
        &self,
        book: &Rules,
        destination: &Destination,
        targets: &[String],
        client: &Client,
        event: Event,
    ) -> Option<(Recorded, Vec<Egress>)> {
        let (ctx, gate, routed) = (self.ctx, self.gate, self.routed);
        let collective = destination.network();
        let request = self.verified.request();
        let target = match self.rules.target(collective) {
            Ok(target) => target,
            Err(refusal) => {
                let mut event = event;
                deny(&mut event, "map", &refusal);
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                return None;
            }
        };
        let ask = Ask {
            realm: &self.rules.realm,
            caller: self.verified.caller(),
            collective,
            agent: &self.call.agent,
            action: &self.call.action,
            filter: &request.envelope.filter,
        };
        let admitted = match admit(gate, book, &ask, event) {
            Ok(admitted) => admitted,
            Err(not) => {
                let req = &request.envelope.requestid;
                let rule = not.refusal.rule.as_deref().unwrap_or("none");
                match &not.why {
                    Why::Map(_) => {
                        tracing::warn!(cluster = %ctx.rules.cluster, %req, code = not.refusal.code.as_str(), rule, "{}", clip(&not.refusal.reason))
                    }
                    Why::Policy(denied) => {
                        tracing::info!(cluster = %ctx.rules.cluster, %req, rule, kind = denied.kind.as_str(), "request denied by policy")
                    }
                }
                let refusal = Refusal::Admission(not.refusal);
                answer_refusal(ctx, gate, routed, not.event, &refusal).await;
                return None;
            }
        };
        let mode = match Target::parse(&targets[0]) {
            Some(Target::Broadcast { .. }) | None => Mode::Broadcast,
            Some(Target::Node { .. }) => Mode::Directed(targets),
        };
        let claim = Claim {
            realm: &self.rules.realm,
            signed: self.verified.secure().message.as_bytes(),
            collective,
            mode,
        };
        if let Err(err) = gate
            .replay
            .claim(&claim, self.until, self.now.unix_seconds())
            .await
        {
            let refusal = Refusal::Admission(err.into());
            let mut event = admitted.event().clone();
            deny(&mut event, "replay", &refusal);
            // A replay's reply subject is the replayer's choice, not the caller's: it is
            // recorded and counted, never answered.
            if let Err(err) = gate.record(event).await {
                tracing::error!(error = %err, "could not record a refusal");
            }
            refuse(ctx, Direction::Request, &refusal);
            return None;
        }
        let outbound = connected_server(client);
        let inbound = connected_server(&ctx.federation);
        let mapped = resign::Mapped {
            target,
            callerid: admitted.mapped(),
        };
        let resigned = resign::resign_for(
            routed,
            self.verified,
            destination,
            targets,
            (&ctx.rules, self.rules),
            (inbound.as_str(), outbound.as_str()),
            mapped,
            admitted.filter(),
            self.now,
        );
        let egress = match resigned {
            Err(refusal) => Err(("resign", refusal)),
            Ok(_) if client.connection_state() != async_nats::connection::State::Connected => {
                Err(("publish", Refusal::Unreachable(collective.to_string())))
            }
            Ok(resigned) => Ok(resigned.egress),
        };
        let egress = match egress {
            Ok(egress) => egress,
            Err((stage, refusal)) => {
                gate.replay.release(&claim).await;
                let mut event = admitted.event().clone();
                deny(&mut event, stage, &refusal);
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                return None;
            }
        };
        match gate.record_admitted(admitted).await {
            Ok(recorded) => Some((recorded, egress)),
            Err((admitted, err)) => {
                gate.replay.release(&claim).await;
                let refusal = Refusal::Admission(Admission::unrecorded(&err));
                let mut event = admitted.event().clone();
                deny(&mut event, "audit", &refusal);
                reply_to_caller(ctx, gate, routed, &event).await;
                refuse(ctx, Direction::Request, &refusal);
                None
            }
        }
    }
}

/// The audit edge name of the Federation Broker.
const EDGE: &str = "federation";

/// Marks `event` as refused at `stage` for `refusal`.
fn deny(event: &mut Event, stage: &str, refusal: &Refusal) {
    if let Refusal::Admission(admission) = refusal {
        return admission.mark(event);
    }
    event.decision = Some(Verdict::Deny);
    event.stage = stage.into();
    event.code = refusal.reason().into();
    event.reason = err_text(refusal);
}

fn err_text(refusal: &Refusal) -> String {
    clip(&refusal.to_string())
}

/// What an unverifiable request claims, for the audit record (marked as claimed, not proven).
fn claimed(event: &mut Event, routed: &RoutedRequest<'_>, rules: &ResignRules) {
    let limits = rules.verifier.limits();
    let Some(request) = crate::wire::decode_base64_lenient(routed.transport().data())
        .ok()
        .and_then(|data| SecureRequest::decode(&data, limits).ok())
        .and_then(|secure| secure.request(limits).ok())
    else {
        return;
    };
    event.claimed_caller = Some(clip(&request.envelope.callerid));
    event.request_id = Some(clip(&request.envelope.requestid));
    event.agent = Some(clip(&request.envelope.agent));
    if let Ok(rpc) = request.rpc(limits) {
        event.action = Some(clip(&rpc.action));
    }
}

/// Records a refusal of a verified caller, answers it, and counts it.
async fn answer_refusal(
    ctx: &ClusterContext,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
    event: Event,
    refusal: &Refusal,
) {
    if let Err(err) = gate.record(event.clone()).await {
        tracing::error!(error = %err, "could not record a refusal");
    }
    reply_to_caller(ctx, gate, routed, &event).await;
    refuse(ctx, Direction::Request, refusal);
}

/// Tells the caller why: a reply from `fedgate:<instance>` with status 1 on its reply subject.
async fn reply_to_caller(
    ctx: &ClusterContext,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
    event: &Event,
) {
    let reply = gate::refusal_reply(
        &gate.instance,
        routed.request_id(),
        event.agent.as_deref().unwrap_or_default(),
        event.action.as_deref().unwrap_or_default(),
        event,
    );
    let subject = routed.reply_to().to_string();
    if let Err(err) = ctx.federation.publish(subject, reply.encode().into()).await {
        tracing::warn!(cluster = %ctx.rules.cluster, %err, "could not tell the caller why its request was refused");
    }
}

/// Publishes a recorded request's messages: in resign mode nothing that is not on the record
/// goes out.
async fn publish_recorded(
    ctx: &ClusterContext,
    client: &Client,
    _recorded: &Recorded,
    egress: Vec<Egress>,
) {
    publish_all(ctx, client, egress).await;
}

/// Publishes messages whose signed bytes pass through untouched (pass-through mode).
async fn publish_all(ctx: &ClusterContext, client: &Client, egress: Vec<Egress>) {
    for egress in egress {
        let payload = Bytes::from(egress.payload);
        for subject in egress.subjects {
            publish(ctx, Direction::Request, client, subject, payload.clone()).await;
        }
    }
}

async fn publish(
    ctx: &ClusterContext,
    direction: Direction,
    client: &Client,
    subject: String,
    payload: Bytes,
) {
    match client.publish(subject, payload).await {
        Ok(()) => ctx.stats.sent(direction),
        Err(err) => {
            tracing::warn!(cluster = %ctx.rules.cluster, %err, "publish failed");
            ctx.stats.error(direction);
        }
    }
}

/// Counts a refusal; the log line is debug-level and clipped, since its text comes off the wire.
fn refuse(ctx: &ClusterContext, direction: Direction, refusal: &Refusal) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(cluster = %ctx.rules.cluster, reason = refusal.reason(), refusal = %clip(&refusal.to_string()), "refused federated message");
    }
    if let Refusal::Admission(admission) = refusal {
        admission.count(EDGE);
    }
    ctx.stats.refused(direction, refusal);
}

/// Text that came off the wire, cut to [`LOG_CLIP`] characters for a log line.
fn clip(text: &str) -> String {
    text.chars().take(LOG_CLIP).collect()
}
