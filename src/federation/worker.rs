//! Subscription loops of a broker: requests in from the federation, replies back from members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::resign;
use super::stats::{ClusterStats, Direction};
use super::transform::{
    ClusterRules, Refusal, RoutedRequest, route_chained_reply, route_reply, route_request,
};
use crate::nats::connected_server;
use crate::security::Now;

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
                    resign::route_reply(&message.payload, &ctx.rules, &inbound, &outbound)
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

/// Relays one federated request. In resign mode the request is verified once, then mapped and
/// re-signed per destination collective; a caller denied in one collective still reaches the
/// others its rules allow.
async fn relay_request(ctx: &ClusterContext, message: &Message) {
    let started = Instant::now();
    ctx.stats.received(Direction::Request);
    let routed = match route_request(&message.payload, &ctx.rules) {
        Ok(routed) => routed,
        Err(refusal) => return refuse(ctx, Direction::Request, &refusal),
    };
    let now = Now::system();
    let resign = match &ctx.rules.resign {
        Some(rules) => match resign::verify(&routed, rules, now) {
            Ok(verified) => Some((rules.as_ref(), verified)),
            Err(refusal) => return refuse(ctx, Direction::Request, &refusal),
        },
        None => None,
    };
    let inbound = connected_server(&ctx.federation);
    for (destination, targets) in routed.groups() {
        // Every destination network is connected at start-up (`Broker::start`).
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let outbound = connected_server(client);
        let egress = match &resign {
            None => routed.egress(destination, targets, &ctx.rules, &inbound, &outbound),
            Some((rules, verified)) => {
                let hops = (inbound.as_str(), outbound.as_str());
                match resign::resign_for(
                    &routed,
                    verified,
                    destination,
                    targets,
                    (&ctx.rules, rules),
                    hops,
                    now,
                ) {
                    Ok(resigned) => {
                        tracing::debug!(cluster = %ctx.rules.cluster, req = routed.request_id(), identity = ?resigned.identity, "re-signed request");
                        resigned.egress
                    }
                    Err(refusal) => {
                        log_denial(ctx, &routed, &refusal);
                        refuse(ctx, Direction::Request, &refusal);
                        continue;
                    }
                }
            }
        };
        for egress in egress {
            let payload = Bytes::from(egress.payload);
            for subject in egress.subjects {
                publish(ctx, Direction::Request, client, subject, payload.clone()).await;
            }
        }
    }
    tracing::debug!(cluster = %ctx.rules.cluster, req = routed.request_id(), "relayed request");
    ctx.stats.timed(Direction::Request, started.elapsed());
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
