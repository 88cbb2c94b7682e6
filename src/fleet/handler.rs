//! One request through a simulated node, in go-choria's order: decode, verify, filter,
//! collective, TTL, agent, reply.

use std::sync::Arc;

use bytes::Bytes;

use super::agents::{self, AgentAnswer};
use super::node::NodeSpec;
use super::{FleetStats, Roster};
use crate::filter;
use crate::security::{
    Now, Reason, VerifiedRequest, Verifier, VerifyError, check_collective, check_ttl,
};
use crate::wire::Limits;
use crate::wire::choria_v1::{
    FederationHeader, Reply, ReplyEnvelope, SecureReply, SecureRequest, Transport, TransportHeaders,
};

/// Shared state for every message handler task.
pub(super) struct Handler {
    client: async_nats::Client,
    roster: Roster,
    verifier: Verifier,
    limits: Limits,
    stats: Arc<FleetStats>,
}

impl Handler {
    pub(super) fn new(
        client: async_nats::Client,
        roster: Roster,
        verifier: Verifier,
        limits: Limits,
        stats: Arc<FleetStats>,
    ) -> Self {
        Handler {
            client,
            roster,
            verifier,
            limits,
            stats,
        }
    }

    /// Handles one NATS message for every local node subscribed to its subject.
    pub(super) async fn handle(&self, subject: &str, payload: &[u8]) {
        let recipients = self.roster.recipients(subject);
        if recipients.is_empty() {
            return;
        }
        let count = recipients.len() as u64;
        self.stats.received(count);
        let now = Now::system();
        let (transport, verified) = match self.verify(payload, now) {
            Ok(ok) => ok,
            Err(err) => {
                tracing::debug!(%subject, reason = err.reason().as_str(), %err, "refused request");
                self.stats.refuse(err.reason(), count);
                return;
            }
        };
        for node in recipients {
            if let Some(answer) = self.accept(node, &verified, now) {
                self.reply(node, &transport, &verified, answer).await;
            }
        }
    }

    fn verify(
        &self,
        payload: &[u8],
        now: Now,
    ) -> Result<(Transport, VerifiedRequest), VerifyError> {
        let transport = Transport::decode(payload, &self.limits)?;
        let secure = SecureRequest::decode(&transport.data, &self.limits)?;
        let verified = self.verifier.verify_signature(secure, now)?;
        Ok((transport, verified))
    }

    /// The per-node checks after verification; `Some` when the node's agent answers.
    fn accept(&self, node: &NodeSpec, verified: &VerifiedRequest, now: Now) -> Option<AgentAnswer> {
        let request = verified.request();
        match filter::matches(&request.envelope.filter, &node.view()) {
            Ok(true) => self.stats.passed(),
            Ok(false) => {
                self.stats.filtered();
                return None;
            }
            Err(err) => {
                tracing::debug!(node = %node.identity, %err, "refused filter");
                self.stats.unsupported_filter();
                return None;
            }
        }
        let checked =
            check_collective(request, &node.collectives).and_then(|()| check_ttl(request, now));
        if let Err(err) = checked {
            tracing::debug!(node = %node.identity, %err, "refused request");
            self.stats.refuse(err.reason(), 1);
            return None;
        }
        self.stats.validated();
        agents::dispatch(node, request, &self.limits, now)
    }

    async fn reply(
        &self,
        node: &NodeSpec,
        request_transport: &Transport,
        verified: &VerifiedRequest,
        answer: AgentAnswer,
    ) {
        let Some(reply_to) = request_transport.headers.reply_to.clone() else {
            tracing::debug!(node = %node.identity, "request has no reply-to; not replying");
            self.stats.refuse(Reason::Malformed, 1);
            return;
        };
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        let transport = reply_transport(
            node,
            request_transport,
            verified,
            answer.body,
            &crate::nats::connected_server(&self.client),
        );
        match self
            .client
            .publish(reply_to, Bytes::from(transport.encode()))
            .await
        {
            Ok(()) => self.stats.replied(),
            Err(err) => {
                tracing::warn!(node = %node.identity, %err, "could not publish reply");
                self.stats.publish_error();
            }
        }
    }
}

/// Builds a node's reply transport as go-choria does: federation data and hops are copied from a
/// federated request, then the node records its own hop.
fn reply_transport(
    node: &NodeSpec,
    request: &Transport,
    verified: &VerifiedRequest,
    body: String,
    server: &str,
) -> Transport {
    let envelope = ReplyEnvelope {
        requestid: verified.request().envelope.requestid.clone(),
        senderid: node.identity.clone(),
        agent: verified.request().envelope.agent.clone(),
        time: Now::system().unix_seconds(),
    };
    let reply = Reply::new(body, envelope);
    let secure = SecureReply::new(String::from_utf8_lossy(&reply.encode()).into_owned());
    let mut headers = TransportHeaders {
        mc_sender: Some(node.identity.clone()),
        ..TransportHeaders::default()
    };
    if let Some(fed) = &request.headers.federation {
        headers.federation = Some(FederationHeader {
            req: fed.req.clone(),
            reply_to: fed.reply_to.clone(),
            target: fed.target.clone(),
        });
        headers.seen_by = request.headers.seen_by.clone();
    }
    headers.record_hop(server, &node.identity, server);
    Transport::new(secure.encode(), headers)
}
