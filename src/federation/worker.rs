//! Subscription loops of a broker: requests in from the federation, replies back from members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::stats::{ClusterStats, Direction};
use super::transform::{ClusterRules, Refusal, route_chained_reply, route_reply, route_request};
use crate::nats::connected_server;

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
    /// `choria.federation.<cluster>.collective` on a member collective's network.
    Replies(Arc<ClusterContext>, Client),
    /// `choria.federation.<cluster>.reply.>` on a member federation's network.
    ChainedReplies(Arc<ClusterContext>, Client),
}

impl Worker {
    /// Serves `subscription` until shutdown, then drains it: unsubscribe, finish what was delivered.
    pub(super) async fn run(self, mut subscription: Subscriber, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
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
            Worker::Replies(ctx, member) => {
                let (inbound, outbound) =
                    (connected_server(member), connected_server(&ctx.federation));
                let routed = route_reply(&message.payload, &ctx.rules, &inbound, &outbound);
                relay_reply(ctx, routed).await;
            }
            Worker::ChainedReplies(ctx, member) => {
                let (inbound, outbound) =
                    (connected_server(member), connected_server(&ctx.federation));
                let routed = route_chained_reply(
                    &message.subject,
                    &message.payload,
                    &ctx.rules,
                    &inbound,
                    &outbound,
                );
                relay_reply(ctx, routed).await;
            }
        }
    }
}

async fn relay_request(ctx: &ClusterContext, message: &Message) {
    let started = Instant::now();
    ctx.stats.received(Direction::Request);
    let routed = match route_request(&message.payload, &ctx.rules) {
        Ok(routed) => routed,
        Err(refusal) => return refuse(ctx, Direction::Request, &refusal),
    };
    let inbound = connected_server(&ctx.federation);
    for destination in routed.groups().keys() {
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let outbound = connected_server(client);
        let Some(egress) = routed.egress(destination, &ctx.rules, &inbound, &outbound) else {
            continue;
        };
        let payload = Bytes::from(egress.payload);
        for subject in egress.subjects {
            publish(ctx, Direction::Request, client, subject, payload.clone()).await;
        }
    }
    tracing::debug!(cluster = %ctx.rules.cluster, req = routed.request_id(), "relayed request");
    ctx.stats.timed(Direction::Request, started.elapsed());
}

async fn relay_reply(ctx: &ClusterContext, routed: Result<(String, Vec<u8>), Refusal>) {
    let started = Instant::now();
    ctx.stats.received(Direction::Reply);
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

fn refuse(ctx: &ClusterContext, direction: Direction, refusal: &Refusal) {
    tracing::info!(cluster = %ctx.rules.cluster, reason = refusal.reason(), %refusal, "refused federated message");
    ctx.stats.refused(direction, refusal);
}
