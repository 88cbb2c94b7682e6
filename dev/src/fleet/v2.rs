//! The fleet as Choria protocol v2 servers: a request is verified as go-choria's `choria`
//! security provider verifies it (the caller's or a delegator's token from a trusted issuer,
//! fleet management and delegation permissions, the ed25519 signature), then filter, collective
//! and the nanosecond TTL; replies are hashed and signed with the servers' key and token.

use std::sync::Arc;

use bytes::Bytes;

use super::node::NodeSpec;
use fedgate::security::v2::{SignedV2Request, V2Signer, V2Verifier, check_ttl};
use fedgate::security::{Now, VerifyError, check_collective_name};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::Request as ViewRequest;
use fedgate::wire::choria_v2::{
    FederationHeader, Reply, SecureReply, SecureRequest, Transport, TransportHeaders, Version,
    version,
};

/// What makes a fleet a v2 one: the issuers its servers trust, and the key and server token
/// they sign replies with (every simulated node shares them).
#[derive(Clone, Debug)]
pub struct FleetV2 {
    /// Verifies requests against the collective's issuers.
    pub verifier: V2Verifier,
    /// Signs replies (`plugin.security.choria.sign_replies`, on by default in go-choria).
    pub server: Arc<V2Signer>,
}

/// A v2 request as the handler needs it: the transport it came in, what verified, and the same
/// request seen as v1, which the simulated agents and filters read.
pub(super) struct Accepted {
    pub transport: Transport,
    pub signed: SignedV2Request,
    pub view: ViewRequest,
}

impl FleetV2 {
    /// Decodes and verifies a v2 request; a v1 message is refused as a v2 server refuses it.
    pub(super) fn verify(
        &self,
        payload: &[u8],
        limits: &Limits,
        now: Now,
    ) -> Result<Accepted, VerifyError> {
        if version(payload) != Some(Version::V2) {
            return Err(VerifyError::MalformedIdentity(
                "a v2 server takes io.choria.protocol.v2 messages only".into(),
            ));
        }
        let transport = Transport::decode(payload, limits)?;
        let secure = SecureRequest::decode(&transport.data, limits)?;
        let signed = self.verifier.verify_secure(secure, now)?;
        let view = signed.request.view_v1();
        Ok(Accepted {
            transport,
            signed,
            view,
        })
    }

    /// The collective and TTL checks a node makes after its filter matched.
    pub(super) fn check(
        &self,
        accepted: &Accepted,
        node: &NodeSpec,
        now: Now,
    ) -> Result<(), VerifyError> {
        check_collective_name(&accepted.signed.request.collective, &node.collectives)?;
        check_ttl(&accepted.signed.request, now)
    }

    /// The reply subject and payload of `node`'s reply: the body hashed and signed, federation
    /// data and hops copied from a federated request, the node's hop recorded.
    pub(super) fn reply(
        &self,
        node: &NodeSpec,
        accepted: &Accepted,
        body: String,
        server: &str,
    ) -> Option<(String, Bytes)> {
        let reply_to = accepted.transport.headers.reply.clone()?;
        let request = &accepted.signed.request;
        let now_ns = Now::system().unix_nanos();
        let reply = Reply::new(
            body.into_bytes(),
            request.id.clone(),
            node.identity.clone(),
            request.agent.clone(),
            now_ns,
        )
        .encode();
        let signature = self.server.sign(&reply);
        let secure = SecureReply::new(reply).signed(signature, self.server.token().to_string());
        let mut headers = TransportHeaders {
            sender: node.identity.clone(),
            ..TransportHeaders::default()
        };
        if let Some(federation) = &accepted.transport.headers.federation {
            headers.federation = Some(FederationHeader {
                request: federation.request.clone(),
                reply: federation.reply.clone(),
                targets: federation.targets.clone(),
            });
            headers.trace = accepted.transport.headers.trace.clone();
        }
        headers.trace.push([
            server.to_string(),
            node.identity.clone(),
            server.to_string(),
        ]);
        let payload = Transport::new(secure.encode(), headers).encode();
        Some((reply_to, Bytes::from(payload)))
    }
}
