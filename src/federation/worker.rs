//! Subscription loops of a broker: requests in from the federation, replies back from members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::resign;
use super::stats::{ClusterStats, Direction};
use super::transform::{
    ClusterRules, Egress, Refusal, RoutedRequest, route_chained_reply, route_reply, route_request,
};
use crate::audit::Event;
use crate::gateway::gate::Gate;
use crate::nats::ServerUrls;

mod resigned;
use resigned::{claimed_unrouted, deny, relay_resigned};

/// Longest piece of an untrusted message that goes into a log line.
const LOG_CLIP: usize = 256;

/// What one cluster's workers share.
pub(super) struct ClusterContext {
    pub rules: ClusterRules,
    pub stats: Arc<ClusterStats>,
    /// The federation network.
    pub federation: Client,
    /// Its name among `networks`.
    pub federation_network: String,
    /// The server each network's client is connected to, as `seen-by` names it.
    pub urls: ServerUrls,
    /// Member networks by name.
    pub networks: Arc<BTreeMap<String, Client>>,
    /// Policy and audit; present in resign mode.
    pub gate: Option<Arc<Gate>>,
}

impl ClusterContext {
    /// The server the federation network's client is connected to.
    pub fn federation_url(&self) -> Arc<str> {
        self.urls.get(&self.federation_network, &self.federation)
    }
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
        /// The member's name among the networks.
        network: String,
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
                network,
                chained,
            } => {
                let started = Instant::now();
                ctx.stats.received(Direction::Reply);
                let (inbound, outbound) = (ctx.urls.get(network, member), ctx.federation_url());
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
                // Read, not verified: only a request that can be routed is verified.
                claimed_unrouted(&mut event, &message.payload, &ctx.rules);
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
    let inbound = ctx.federation_url();
    for (destination, targets) in routed.groups() {
        // Every destination network is connected at start-up (`Broker::start`).
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let outbound = ctx.urls.get(destination.network(), client);
        let egress = routed.egress(destination, targets, &ctx.rules, &inbound, &outbound);
        publish_all(ctx, client, egress).await;
    }
}

/// The audit edge name of the Federation Broker.
const EDGE: &str = "federation";

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
    if matches!(direction, Direction::Request) {
        // The counter every ingress shares: the admission path's stage and code, or the
        // broker's own (framing and routing, re-signing, publishing).
        let (stage, code) = match refusal {
            Refusal::Admission(admission) => (admission.stage.as_str(), admission.code.as_str()),
            Refusal::ResignFailed(_) => ("resign", refusal.reason()),
            Refusal::Unreachable(_) => ("publish", refusal.reason()),
            _ => ("decode", refusal.reason()),
        };
        metrics::counter!("fedgate_refusals_total", "edge" => EDGE, "stage" => stage, "code" => code)
            .increment(1);
    }
    ctx.stats.refused(direction, refusal);
}

/// Text that came off the wire, cut to [`LOG_CLIP`] characters for a log line.
fn clip(text: &str) -> String {
    text.chars().take(LOG_CLIP).collect()
}
