//! Subscription loops of a broker: requests in from the federation, replies back from members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::gate::{self, Gate};
use super::resign::{self, ResignRules};
use super::stats::{ClusterStats, Direction};
use super::transform::{
    ClusterRules, Egress, Refusal, RoutedRequest, route_chained_reply, route_reply, route_request,
};
use crate::audit::{Event, Verdict};
use crate::nats::connected_server;
use crate::policy::Query;
use crate::security::Now;
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

/// Resign mode: verify once, then per destination collective map the caller, authorize the
/// mapped caller with actionpolicy, re-sign (with the policy's conditions added to the filter),
/// record the decision, and only then publish. A caller refused in one collective still reaches
/// the others; every refusal of a verified caller is answered on its reply subject.
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
        request_id: Some(routed.request_id().to_string()),
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
    event.caller = Some(verified.caller().as_str().to_string());
    event.agent = Some(request.envelope.agent.clone());
    event.filter = gate::summarize(&request.envelope.filter);
    let rpc = match request.rpc(rules.verifier.limits()) {
        Ok(rpc) => rpc,
        Err(err) => {
            let refusal = Refusal::Malformed(err);
            deny(&mut event, "decode", &refusal);
            return answer_refusal(ctx, gate, routed, event, &refusal).await;
        }
    };
    event.action = Some(rpc.action.clone());
    event.data_keys = rpc.data.keys().cloned().collect();
    if gate.auditor.records_values(&rpc.agent, &rpc.action) {
        event.data = Some(rpc.data.clone());
    }
    let ttl = Duration::from_secs(request.envelope.ttl.clamp(0, rules.max_ttl) as u64);
    // One set of rules maps and authorizes every copy of the request.
    let book = gate.rules();
    event.revision = book.revision;
    let inbound = connected_server(&ctx.federation);
    for (destination, targets) in routed.groups() {
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let mut event = Event {
            collectives: vec![destination.network().to_string()],
            targets: targets.len(),
            ..event.clone()
        };
        let mapped =
            match resign::map_caller(rules, &book.identity, &verified, destination.network()) {
                Ok(mapped) => mapped,
                Err(refusal) => {
                    if let Refusal::Identity(denial) = &refusal {
                        event.rule = denial.rule().map(|r| r.to_string());
                    }
                    log_denial(ctx, routed, &refusal);
                    deny(&mut event, "map", &refusal);
                    answer_refusal(ctx, gate, routed, event, &refusal).await;
                    continue;
                }
            };
        event.mapped_caller = Some(mapped.callerid.as_str().to_string());
        let query = Query {
            collective: mapped.collective,
            agent: &rpc.agent,
            action: &rpc.action,
            caller: mapped.callerid.as_str(),
        };
        let mut filter = request.envelope.filter.clone();
        match gate.authorize(&book, &query, &mut filter, &mut event) {
            Ok(rule) => {
                event.reason = match &event.restricted {
                    Some(conditions) => format!("allowed by {rule} on nodes matching {conditions}"),
                    None => format!("allowed by {rule}"),
                };
                event.rule = Some(rule);
            }
            Err(denied) => {
                let refusal = Refusal::Denied(denied.reason.clone());
                tracing::info!(cluster = %ctx.rules.cluster, req = routed.request_id(), caller = mapped.callerid.as_str(), collective = mapped.collective, rule = %denied.source, kind = denied.kind.as_str(), "request denied by policy");
                deny(&mut event, "authorize", &refusal);
                event.rule = Some(denied.source.to_string());
                event.reason = denied.reason.clone();
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                continue;
            }
        }
        let outbound = connected_server(client);
        let hops = (inbound.as_str(), outbound.as_str());
        let cluster = (&ctx.rules, rules);
        let resigned = match resign::resign_for(
            routed,
            &verified,
            destination,
            targets,
            cluster,
            hops,
            mapped,
            &filter,
            now,
        ) {
            Ok(resigned) => resigned,
            Err(refusal) => {
                deny(&mut event, "resign", &refusal);
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                continue;
            }
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            let refusal = Refusal::Unreachable(destination.network().to_string());
            deny(&mut event, "publish", &refusal);
            answer_refusal(ctx, gate, routed, event, &refusal).await;
            continue;
        }
        event.decision = Some(Verdict::Allow);
        event.stage = "authorize".into();
        event.code = "allowed".into();
        let link = match gate.record(event.clone()).await {
            Ok(id) => id,
            Err(err) => {
                let refusal = Refusal::AuditFailed(err.0);
                deny(&mut event, "audit", &refusal);
                event.reason = format!(
                    "the decision could not be recorded, so the request was not forwarded: {}",
                    err_text(&refusal)
                );
                reply_to_caller(ctx, gate, routed, &event).await;
                refuse(ctx, Direction::Request, &refusal);
                continue;
            }
        };
        tracing::debug!(cluster = %ctx.rules.cluster, req = routed.request_id(), identity = ?resigned.identity, "re-signed request");
        publish_all(ctx, client, resigned.egress).await;
        gate.track(routed.request_id(), link, &event, ttl).await;
    }
}

/// The audit edge name of the Federation Broker.
const EDGE: &str = "federation";

/// Marks `event` as refused at `stage` for `refusal`.
fn deny(event: &mut Event, stage: &str, refusal: &Refusal) {
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

async fn publish_all(ctx: &ClusterContext, client: &Client, egress: Vec<Egress>) {
    for egress in egress {
        let payload = Bytes::from(egress.payload);
        for subject in egress.subjects {
            publish(ctx, Direction::Request, client, subject, payload.clone()).await;
        }
    }
}

/// Logs a mapping denial at warn level, with the rule that decided; other refusals are only
/// counted (and logged at debug by [`refuse`]).
fn log_denial(ctx: &ClusterContext, routed: &RoutedRequest<'_>, refusal: &Refusal) {
    if let Refusal::Identity(denial) = refusal {
        tracing::warn!(
            cluster = %ctx.rules.cluster,
            req = routed.request_id(),
            reason = denial.reason(),
            rule = denial.rule().map(|r| r.to_string()),
            "{}", clip(&denial.to_string()),
        );
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
    ctx.stats.refused(direction, refusal);
}

/// Text that came off the wire, cut to [`LOG_CLIP`] characters for a log line.
fn clip(text: &str) -> String {
    text.chars().take(LOG_CLIP).collect()
}
