//! An admitted request's way into Choria: one re-signed copy per admitted collective,
//! acknowledged once published, every reply carried back to the legacy caller, and each
//! decision closed by its completion record.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;

use super::checks::MAX_TTL;
use super::deliver::{Admitted, Handled, Inbound};
use super::replies::legacy_reply_body;
use super::{MAX_COLLECT, Shared};
use crate::client::{ClientError, RpcCall, RpcClient, Summary};
use crate::wire::Limits;
use crate::wire::mcollective::Ruby;

impl Shared {
    /// Publishes `inbound` into every admitted collective and carries the replies back.
    pub(super) async fn forward(
        &self,
        inbound: &Inbound,
        admitted: Vec<Admitted<'_>>,
        delivery: &Delivery,
    ) -> Result<Handled, super::deliver::Refused> {
        let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<(String, Ruby)>(4096);
        let mut published = Vec::new();
        let calls: Vec<_> = admitted
            .iter()
            .map(|one| {
                let (published_tx, published_rx) = tokio::sync::oneshot::channel::<()>();
                published.push(published_rx);
                self.call_one(inbound, one, published_tx, reply_tx.clone())
            })
            .collect();
        drop(reply_tx);
        // Acknowledged once published everywhere it was admitted (and recorded); a request
        // published nowhere is put back on the queue instead.
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
                let answer = super::replies::Answer {
                    sender,
                    ..inbound.answer.clone()
                };
                self.send_reply(self.legacy.serializer, &answer, &body)
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
                // Published nowhere: each collective's claim goes back for the redelivery.
                let nodes = inbound.nodes();
                for one in &admitted {
                    let claim = self.claim(inbound, &one.target.collective, &nodes);
                    self.gate.replay.release(&claim).await;
                }
                Ok(Handled::Retry("publish_failed", err))
            }
            _ => Ok(Handled::Forwarded),
        }
    }

    /// The re-signed copy for one admitted collective: signed now for what is left of the
    /// original's life, so it never outlives it.
    async fn call_one(
        &self,
        inbound: &Inbound,
        one: &Admitted<'_>,
        published: tokio::sync::oneshot::Sender<()>,
        replies: tokio::sync::mpsc::Sender<(String, Ruby)>,
    ) -> Result<Summary, ClientError> {
        let nodes: Vec<String> = inbound
            .route
            .node()
            .map(str::to_string)
            .into_iter()
            .collect();
        let call = RpcCall {
            data: inbound.data.clone(),
            filter: one.cleared.filter().clone(),
            expect: (!nodes.is_empty()).then_some(nodes.len()),
            targets: nodes,
            ttl: MAX_TTL,
            expires: Some(inbound.until),
            timeout: Duration::from_secs(life_left(inbound.until)).min(MAX_COLLECT),
            idle: Duration::from_secs(2),
            ..RpcCall::new(&one.target.internal, &inbound.agent, &inbound.action)
        };
        let client = RpcClient::new(
            one.target.nats.clone(),
            one.target.signer.clone(),
            one.cleared.mapped().clone(),
            self.sender.clone(),
            Limits::default(),
        );
        let wanted = inbound.replies_wanted;
        let agent = inbound.agent.as_str();
        client
            .call_observed(
                &one.cleared,
                &call,
                move || {
                    let _ = published.send(());
                },
                // The closure owns a sender: the forwarder ends when every call has.
                move |reply| {
                    if wanted {
                        let body = legacy_reply_body(agent, reply);
                        if replies.try_send((reply.sender.clone(), body)).is_err() {
                            metrics::counter!("fedgate_legacy_replies_dropped_total").increment(1);
                        }
                    }
                },
            )
            .await
    }
}

/// Seconds until `until`, at least one.
fn life_left(until: i64) -> u64 {
    let now = crate::security::Now::system().unix_seconds();
    until.saturating_sub(now).max(1).unsigned_abs()
}
