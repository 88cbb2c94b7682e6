//! One request through a simulated node, in go-choria's order: decode, verify, filter,
//! collective, TTL, agent, reply.

use fedgate::ddl::DdlSet;
use fedgate::policy::PolicySet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::agents::{self, AgentAnswer, ServerChecks};
use super::node::NodeSpec;
use super::v2::FleetV2;
use super::{FleetStats, Roster};
use fedgate::filter;
use fedgate::nats::connected_server;
use fedgate::security::{Now, SignedRequest, Verifier, VerifyError, check_collective, check_ttl};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Reply, ReplyEnvelope, SecureReply, SecureRequest, Transport, TransportHeaders,
};

/// Shared state for every message handler task.
pub(super) struct Handler {
    client: async_nats::Client,
    roster: Roster,
    verifier: Verifier,
    limits: Limits,
    stats: Arc<FleetStats>,
    policy: Option<Arc<PolicySet>>,
    ddl: Option<Arc<DdlSet>>,
    v2: Option<FleetV2>,
}

impl Handler {
    pub(super) fn new(
        client: async_nats::Client,
        roster: Roster,
        config: super::FleetConfig,
        stats: Arc<FleetStats>,
    ) -> Self {
        Handler {
            client,
            roster,
            verifier: config.verifier,
            limits: config.limits,
            stats,
            policy: config.policy,
            ddl: config.ddl,
            v2: config.v2,
        }
    }

    /// Handles one NATS message for every local node subscribed to its subject.
    pub(super) async fn handle(&self, subject: &str, payload: &[u8]) {
        let recipients = self.roster.recipients(subject);
        if recipients.is_empty() {
            return;
        }
        self.stats.received(recipients.len() as u64);
        let now = Now::system();
        if let Some(v2) = &self.v2 {
            return self.handle_v2(v2, subject, payload, recipients, now).await;
        }
        let (transport, signed) = match self.verify(payload, now) {
            Ok(ok) => ok,
            Err(err) => {
                tracing::debug!(%subject, reason = err.reason().as_str(), %err, "refused request");
                self.stats.refuse(err.reason(), recipients.len() as u64);
                return;
            }
        };
        let answers: Vec<(&NodeSpec, AgentAnswer)> = recipients
            .into_iter()
            .filter_map(|node| self.accept(node, &signed, now).map(|answer| (node, answer)))
            .collect();
        self.wait_for(&answers).await;
        let server = connected_server(&self.client);
        for (node, answer) in answers {
            self.reply(node, &transport, &signed, answer.body, &server)
                .await;
        }
    }

    /// [`Self::handle`] for a v2 fleet.
    async fn handle_v2(
        &self,
        v2: &FleetV2,
        subject: &str,
        payload: &[u8],
        recipients: Vec<&NodeSpec>,
        now: Now,
    ) {
        let accepted = match v2.verify(payload, &self.limits, now) {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!(%subject, reason = err.reason().as_str(), %err, "refused v2 request");
                self.stats.refuse(err.reason(), recipients.len() as u64);
                return;
            }
        };
        let answers: Vec<(&NodeSpec, AgentAnswer)> = recipients
            .into_iter()
            .filter(|node| self.matches(node, &accepted.view))
            .filter(|node| match v2.check(&accepted, node, now) {
                Ok(()) => true,
                Err(err) => {
                    tracing::debug!(node = %node.identity, %err, "refused v2 request");
                    self.stats.refuse(err.reason(), 1);
                    false
                }
            })
            .filter_map(|node| {
                self.stats
                    .validated(accepted.signed.caller.as_str(), accepted.signed.signer());
                agents::dispatch(node, &accepted.view, now, self.checks()).map(|a| (node, a))
            })
            .collect();
        self.wait_for(&answers).await;
        let server = connected_server(&self.client);
        for (node, answer) in answers {
            let Some((reply_to, reply)) = v2.reply(node, &accepted, answer.body, &server) else {
                self.stats.publish_error();
                continue;
            };
            self.publish(node, reply_to, reply).await;
        }
    }

    /// Whether `node` passes the request's filter, counted.
    fn matches(&self, node: &NodeSpec, request: &fedgate::wire::choria_v1::Request) -> bool {
        match filter::matches(&request.envelope.filter, &node.view()) {
            Ok(true) => {
                self.stats.passed();
                true
            }
            Ok(false) => {
                self.stats.filtered();
                false
            }
            Err(err) => {
                tracing::debug!(node = %node.identity, %err, "refused filter");
                self.stats.unsupported_filter();
                false
            }
        }
    }

    fn checks(&self) -> ServerChecks<'_> {
        ServerChecks {
            limits: self.limits,
            policy: self.policy.as_deref(),
            ddl: self.ddl.as_deref(),
        }
    }

    /// Every node runs the same action, so a delay (echo#sleep) is waited once, not per node.
    async fn wait_for(&self, answers: &[(&NodeSpec, AgentAnswer)]) {
        let delay = answers
            .iter()
            .map(|(_, a)| a.delay)
            .max()
            .unwrap_or(Duration::ZERO);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    async fn publish(&self, node: &NodeSpec, subject: String, payload: Bytes) {
        match self.client.publish(subject, payload).await {
            Ok(()) => self.stats.replied(),
            Err(err) => {
                tracing::warn!(node = %node.identity, %err, "could not publish reply");
                self.stats.publish_error();
            }
        }
    }

    fn verify(&self, payload: &[u8], now: Now) -> Result<(Transport, SignedRequest), VerifyError> {
        let transport = Transport::decode(payload, &self.limits)?;
        let secure = SecureRequest::decode(&transport.data, &self.limits)?;
        let signed = self.verifier.verify_signature(secure, now)?;
        Ok((transport, signed))
    }

    /// The per-node checks after verification; `Some` when the node's agent answers.
    fn accept(&self, node: &NodeSpec, signed: &SignedRequest, now: Now) -> Option<AgentAnswer> {
        let request = signed.request();
        if !self.matches(node, request) {
            return None;
        }
        let checked =
            check_collective(request, &node.collectives).and_then(|()| check_ttl(request, now));
        if let Err(err) = checked {
            tracing::debug!(node = %node.identity, %err, "refused request");
            self.stats.refuse(err.reason(), 1);
            return None;
        }
        self.stats
            .validated(signed.caller().as_str(), signed.signer());
        agents::dispatch(node, request, now, self.checks())
    }

    async fn reply(
        &self,
        node: &NodeSpec,
        request: &Transport,
        signed: &SignedRequest,
        body: String,
        server: &str,
    ) {
        // Like a Choria server, the node has acted; without a reply subject the reply is lost.
        let Some(reply_to) = request.headers.reply_to.clone() else {
            tracing::debug!(node = %node.identity, "request has no reply-to; the reply cannot be sent");
            self.stats.publish_error();
            return;
        };
        let transport = reply_transport(node, request, signed, body, server);
        self.publish(node, reply_to, Bytes::from(transport.encode()))
            .await;
    }
}

/// Builds a node's reply transport as go-choria does: federation data and hops are copied from a
/// federated request, then the node records its own hop.
fn reply_transport(
    node: &NodeSpec,
    request: &Transport,
    signed: &SignedRequest,
    body: String,
    server: &str,
) -> Transport {
    let envelope = ReplyEnvelope {
        requestid: signed.request().envelope.requestid.clone(),
        senderid: node.identity.clone(),
        agent: signed.request().envelope.agent.clone(),
        time: Now::system().unix_seconds(),
    };
    let secure = SecureReply::new(Reply::new(body, envelope).encode_string());
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
