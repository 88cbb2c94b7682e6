//! Resign mode: verify at the source, map the identity, re-sign for each target collective.
//!
//! A federation whose members keep their own CAs cannot pass signed bytes through: the member's
//! servers would not trust the federation's signers, and the collective name and caller id are
//! signed. So the broker verifies each request against the federation's realm, maps the caller
//! into every target collective with the identity rules (no rule, no entry), and signs a fresh
//! request there with the privileged certificate that collective's CA issued to fedgate. Replies
//! are checked against the request id their headers carry and re-encoded with a fresh hash.
//! Everything still travels in headers, so instances stay stateless and share the work.

pub use super::signers::{ResignRules, ResignTarget};
use super::transform::{
    ClusterRules, Destination, Egress, Refusal, RoutedRequest, take_reply_header,
};
use crate::gateway::{agents_agree, request_ids_agree};
use crate::security::{CallerId, Now, Resign, VerifiedRequest};
use crate::subjects::Target;
use crate::wire::choria_v1::{Filter, RelayTransport, Reply, SecureReply, SecureRequest};
use crate::wire::{DecodeError, Layer, decode_base64_lenient};

/// Verifies the secure request inside a routed request against the federation's realm.
pub fn verify(
    routed: &RoutedRequest<'_>,
    rules: &ResignRules,
    now: Now,
) -> Result<VerifiedRequest, Refusal> {
    let data = secure_data(routed.transport())?;
    let secure = SecureRequest::decode(&data, rules.verifier.limits())?;
    Ok(rules.verifier.verify(secure, now)?)
}

/// Checks what a verified request's unsigned headers add: the header's request id must be the
/// signed one, and a broadcast target may only name the signed agent.
pub fn check_headers(
    routed: &RoutedRequest<'_>,
    verified: &VerifiedRequest,
) -> Result<(), Refusal> {
    let envelope = &verified.request().envelope;
    request_ids_agree(&envelope.requestid, routed.request_id())?;
    for target in routed.groups().values().flatten() {
        if let Some(Target::Broadcast { agent: named, .. }) = Target::parse(target) {
            agents_agree(&envelope.agent, &envelope.agent, Some(named))?;
        }
    }
    Ok(())
}

/// The secure request or reply a transport carries.
fn secure_data(transport: &RelayTransport<'_>) -> Result<Vec<u8>, Refusal> {
    decode_base64_lenient(transport.data()).map_err(|err| {
        Refusal::Malformed(DecodeError::field(
            Layer::Transport,
            "data",
            format!("is not base64: {err}"),
        ))
    })
}

/// One collective's share of a re-signed request: what to publish.
#[derive(Debug)]
pub struct Resigned {
    /// The publishes.
    pub egress: Vec<Egress>,
}

/// The caller as a target collective will see it.
#[derive(Debug)]
pub struct Mapped<'r> {
    /// Its internal name and fedgate's signer there.
    pub target: &'r ResignTarget,
    /// Who the collective sees.
    pub callerid: &'r CallerId,
}

impl ResignRules {
    /// The collective `collective` and fedgate's signer there; a collective without one is not
    /// a member this cluster re-signs into.
    pub fn target(&self, collective: &str) -> Result<&ResignTarget, Refusal> {
        self.targets.get(collective).ok_or_else(|| {
            Refusal::NotMember(format!("{collective} (no privileged signer for it)"))
        })
    }
}

/// Re-signs for a mapped caller with `filter` (the caller's, perhaps restricted by policy), and
/// builds the publishes: headers as in pass-through, targets renamed to the collective's internal
/// name.
#[allow(clippy::too_many_arguments)]
pub fn resign_for(
    routed: &RoutedRequest<'_>,
    verified: &VerifiedRequest,
    destination: &Destination,
    targets: &[String],
    (cluster, rules): (&ClusterRules, &ResignRules),
    (inbound, outbound): (&str, &str),
    mapped: Mapped<'_>,
    filter: &Filter,
    now: Now,
) -> Result<Resigned, Refusal> {
    let Mapped { target, callerid } = mapped;
    let resign = Resign {
        callerid,
        collective: &target.internal_name,
        filter,
        max_ttl: rules.max_ttl,
    };
    let secure = resign
        .sign(verified, &target.signer, now)
        .map_err(|e| Refusal::ResignFailed(e.to_string()))?;
    let transport = routed.transport().with_data(&secure.encode());
    let renamed: Vec<String> = targets
        .iter()
        .map(|subject| rename_target(subject, &target.internal_name))
        .collect();
    let egress = routed.egress_with(
        &transport,
        destination,
        &renamed,
        cluster,
        inbound,
        outbound,
    );
    Ok(Resigned { egress })
}

/// `<collective>.<rest>` as `<internal>.<rest>`; targets were parsed when the request was routed.
fn rename_target(subject: &str, internal: &str) -> String {
    match Target::parse(subject) {
        Some(target) => format!("{internal}{}", &subject[target.collective().len()..]),
        None => subject.to_string(),
    }
}

/// A reply on `choria.federation.<cluster>.collective` in resign mode: as in pass-through, plus
/// the secure reply must decode with a good hash, and carry the request id its federation header
/// names; it is re-encoded with a fresh hash. Returns the client's reply subject, the reply and
/// the request id.
pub fn route_reply(
    bytes: &[u8],
    rules: &ClusterRules,
    inbound: &str,
    outbound: &str,
) -> Result<(String, Vec<u8>, String), Refusal> {
    let mut transport = RelayTransport::decode(bytes, &rules.limits)?;
    let (req, reply_to) = take_reply_header(&mut transport)?;
    let secure = SecureReply::decode(&secure_data(&transport)?, &rules.limits)?;
    let reply = secure.reply(&rules.limits)?;
    if reply.envelope.requestid != req {
        return Err(Refusal::ReplyMismatch {
            reply: reply.envelope.requestid,
            header: req,
        });
    }
    let fresh = SecureReply::new(Reply::new(reply.message, reply.envelope).encode_string());
    let mut out = transport.with_data(&fresh.encode());
    out.headers.record_hop(inbound, &rules.label, outbound);
    Ok((reply_to, out.encode(), req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::transform::hop_label;
    use crate::wire::Limits;
    use crate::wire::choria_v1::{
        FederationHeader, ReplyEnvelope, SecureReply, Transport, TransportHeaders,
    };
    use std::collections::BTreeMap;

    const REQ: &str = "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";
    const CLIENT_REPLY: &str =
        "london.reply.0123456789abcdef0123456789abcdef.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b";

    fn rules() -> ClusterRules {
        ClusterRules {
            cluster: "prod".into(),
            routes: BTreeMap::new(),
            max_hops: 4,
            max_targets: 3,
            label: hop_label("fb1", "prod"),
            limits: Limits::default(),
            resign: None,
        }
    }

    fn reply(requestid: &str, header_req: &str) -> Transport {
        let envelope = ReplyEnvelope {
            requestid: requestid.into(),
            senderid: "node1".into(),
            agent: "rpcutil".into(),
            time: 1_780_000_001,
        };
        let secure =
            SecureReply::new(Reply::new(r#"{"statuscode":0}"#.into(), envelope).encode_string());
        let headers = TransportHeaders {
            mc_sender: Some("node1".into()),
            federation: Some(FederationHeader {
                req: Some(header_req.into()),
                reply_to: Some(CLIENT_REPLY.into()),
                target: Vec::new(),
            }),
            ..TransportHeaders::default()
        };
        Transport::new(secure.encode(), headers)
    }

    #[test]
    fn replies_are_checked_and_re_encoded_for_the_client() {
        let (reply_to, out, _) = route_reply(
            &reply(REQ, REQ).encode(),
            &rules(),
            "nats://l:1",
            "nats://f:1",
        )
        .unwrap();
        assert_eq!(reply_to, CLIENT_REPLY);
        let out = Transport::decode(&out, &Limits::default()).unwrap();
        assert!(out.headers.federation.is_none());
        assert_eq!(
            out.headers.seen_by.last().unwrap()[1],
            hop_label("fb1", "prod")
        );
        let secure = SecureReply::decode(&out.data, &Limits::default()).unwrap();
        assert_eq!(
            secure.reply(&Limits::default()).unwrap().envelope.requestid,
            REQ
        );
    }

    #[test]
    fn replies_for_another_request_or_with_a_bad_hash_are_refused() {
        let other = "ffffffffffffffffffffffffffffffff";
        let err = route_reply(&reply(other, REQ).encode(), &rules(), "a", "b").unwrap_err();
        assert_eq!(err.reason(), "reply_mismatch");
        assert!(err.to_string().contains(other), "{err}");

        let mut tampered = reply(REQ, REQ);
        let mut secure: serde_json::Value = serde_json::from_slice(&tampered.data).unwrap();
        secure["hash"] = "AAAA".into();
        tampered.data = serde_json::to_vec(&secure).unwrap();
        let err = route_reply(&tampered.encode(), &rules(), "a", "b").unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("hash"), "{err}");
    }
}
