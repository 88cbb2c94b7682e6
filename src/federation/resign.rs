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
use crate::client::Egress as Signing;
use crate::gateway::{Code, Refusal as Admission, Stage, agents_agree, request_ids_agree};
use crate::security::v2::{SignedV2Request, check_ttl};
use crate::security::{CallerId, Now, Resign, VerifiedRequest};
use crate::subjects::Target;
use crate::wire::choria_v1::{Filter, RelayTransport, Reply, Request, SecureReply, SecureRequest};
use crate::wire::choria_v2::{self, derived_request_id};
use crate::wire::{DecodeError, Layer, decode_base64_lenient};

pub(crate) mod translate;

/// A federated request that verified: a v1 one against the federation's CA, or a Choria
/// protocol v2 one against its token issuer.
#[derive(Debug)]
pub enum Verified {
    /// A v1 request.
    V1(VerifiedRequest),
    /// A v2 request, and the same request in v1's terms (seconds, base64 payload), which every
    /// check after verification reads.
    V2 {
        /// The verified request and tokens.
        signed: Box<SignedV2Request>,
        /// It in v1's terms.
        view: Request,
    },
}

impl Verified {
    /// The request, in v1's terms.
    pub fn request(&self) -> &Request {
        match self {
            Verified::V1(verified) => verified.request(),
            Verified::V2 { view, .. } => view,
        }
    }

    /// The caller its signature vouches for.
    pub fn caller(&self) -> &CallerId {
        match self {
            Verified::V1(verified) => verified.caller(),
            Verified::V2 { signed, .. } => &signed.caller,
        }
    }

    /// The bytes the caller signed, which the replay guard claims.
    pub fn signed_bytes(&self) -> &[u8] {
        match self {
            Verified::V1(verified) => verified.secure().message.as_bytes(),
            Verified::V2 { signed, .. } => &signed.secure.request,
        }
    }

    /// Whether the caller speaks Choria protocol v2.
    pub fn is_v2(&self) -> bool {
        matches!(self, Verified::V2 { .. })
    }
}

/// Verifies the secure request inside a routed request against the federation's realm: a v1
/// request against its CA as a Choria server would, a v2 request against its token issuer as a
/// v2 server would (tokens, delegation, signature, nanosecond TTL).
pub fn verify(
    routed: &RoutedRequest<'_>,
    rules: &ResignRules,
    now: Now,
) -> Result<Verified, Refusal> {
    let data = secure_data(routed.transport())?;
    if routed.transport().is_v2() {
        let Some(verifier) = &rules.v2_verifier else {
            return Err(Refusal::Admission(Admission::unverified(
                "unknown_ca",
                format!(
                    "federation {} takes no Choria protocol v2 callers: it names no issuers",
                    rules.realm
                ),
            )));
        };
        let secure = choria_v2::SecureRequest::decode(&data, &rules.limits)?;
        let signed = verifier.verify_secure(secure, now)?;
        check_ttl(&signed.request, now)?;
        // A v2 request names no audience: one fedgate published into a v2 collective verifies
        // here too when the federation trusts the same issuer.
        if signed.made_by_any_of(&rules.own_v2_keys) {
            return Err(Refusal::Admission(Admission::new(
                Stage::Verify,
                Code::OwnRequest,
                "fedgate published this request into a collective itself; it does not come back in",
            )));
        }
        signed
            .caller
            .check_v2_in_realm_with_ca(rules.verifier.is_some())
            .map_err(|message| {
                Refusal::Admission(Admission::new(Stage::Verify, Code::CallerKind, message))
            })?;
        let view = signed.request.view_v1();
        return Ok(Verified::V2 {
            signed: Box::new(signed),
            view,
        });
    }
    let Some(verifier) = &rules.verifier else {
        return Err(Refusal::Admission(Admission::unverified(
            "unknown_ca",
            format!(
                "federation {} takes Choria protocol v2 callers only: it names no ca",
                rules.realm
            ),
        )));
    };
    let secure = SecureRequest::decode(&data, &rules.limits)?;
    Ok(Verified::V1(verifier.verify(secure, now)?))
}

/// Checks what a verified request's unsigned headers add: the header's request id must be the
/// signed one, and a broadcast target may only name the signed agent.
pub fn check_headers(routed: &RoutedRequest<'_>, verified: &Verified) -> Result<(), Refusal> {
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
/// name. A v1 collective gets a v1 request signed with fedgate's privileged certificate; a v2
/// collective a v2 request fedgate signs as delegator. A request that crosses protocols travels
/// under [`derived_request_id`], so its replies are known to need translating back.
#[allow(clippy::too_many_arguments)]
pub fn resign_for(
    routed: &RoutedRequest<'_>,
    verified: &Verified,
    destination: &Destination,
    targets: &[String],
    (cluster, rules): (&ClusterRules, &ResignRules),
    (inbound, outbound): (&str, &str),
    mapped: Mapped<'_>,
    filter: &Filter,
    now: Now,
) -> Result<Resigned, Refusal> {
    let Mapped { target, callerid } = mapped;
    let original = verified.request();
    let caller_id = &original.envelope.requestid;
    let to_v2 = matches!(target.signer, Signing::V2(_));
    let requestid = if to_v2 == verified.is_v2() {
        caller_id.clone()
    } else {
        derived_request_id(caller_id)
    };
    let resign = Resign {
        requestid: &requestid,
        callerid,
        collective: &target.internal_name,
        filter,
        max_ttl: rules.max_ttl,
    };
    let (secure, header_id) = match &target.signer {
        Signing::V1(signer) => {
            // A v1 member's replies are told apart by the caller's reply subject: a v2 caller's
            // must end with its id, and a v1 caller's must not pose as a v2 caller's.
            let reply_to = routed.reply_to();
            if verified.is_v2() {
                translate::check_v2_reply_subject(reply_to, verified.caller(), caller_id)?;
            } else if translate::v2_caller_id(reply_to, caller_id).is_some() {
                return Err(Refusal::BadReplyTo(format!(
                    "{reply_to} (its last token is not the request id {caller_id}, but one it derives from, which marks a Choria protocol v2 caller's replies)"
                )));
            }
            let secure = resign
                .sign(original, signer, now)
                .map_err(|e| Refusal::ResignFailed(e.to_string()))?;
            // A v1 header holds a 32-character id: the one the request travels under, which
            // the reply subject's last token derives for a v2 caller.
            (secure.encode(), requestid.clone())
        }
        Signing::V2(egress) => {
            let request = resign.request(original, now);
            let (time, ttl) = (request.envelope.time, request.envelope.ttl);
            let mut v2 = choria_v2::Request::new(
                original.payload().into_owned(),
                requestid.clone(),
                request.envelope.senderid,
                request.envelope.callerid,
                request.envelope.collective,
                request.envelope.agent,
                ttl,
                time.saturating_mul(1_000_000_000),
            );
            v2.filter = Some(request.envelope.filter);
            (egress.delegate(&v2, now).encode(), caller_id.clone())
        }
    };
    let mut transport = routed.transport().with_data_in(to_v2, &secure);
    if to_v2 && transport.headers.mc_sender.is_none() {
        // v2 requires a sender; v1 leaves it optional.
        transport.headers.mc_sender = Some(original.envelope.senderid.clone());
    }
    let renamed: Vec<String> = targets
        .iter()
        .map(|subject| rename_target(subject, &target.internal_name))
        .collect();
    let egress = routed.egress_with(
        &transport,
        &header_id,
        destination,
        &renamed,
        cluster,
        inbound,
        outbound,
    );
    Ok(Resigned { egress })
}

/// Checks a v2 reply's signature against the issuers of the cluster's v2 members, until one
/// accepts it (an unsigned reply passes only where a member's servers do not sign); refused
/// when the cluster has no v2 member or none accepts it.
fn check_member_signature(
    secure: &choria_v2::SecureReply,
    rules: Option<&ResignRules>,
) -> Result<(), Refusal> {
    let now = Now::system();
    let mut first = None;
    for target in rules.iter().flat_map(|r| r.targets.values()) {
        let Signing::V2(egress) = &target.signer else {
            continue;
        };
        match egress.check_reply_signature(secure, now) {
            Ok(()) => return Ok(()),
            Err(problem) => {
                first.get_or_insert(problem);
            }
        }
    }
    let problem = first
        .unwrap_or_else(|| "a v2 reply, but this cluster re-signs into no v2 collective".into());
    Err(Refusal::Malformed(DecodeError::field(
        Layer::SecureReplyV2,
        "signature",
        problem,
    )))
}

/// `<collective>.<rest>` as `<internal>.<rest>`; targets were parsed when the request was routed.
fn rename_target(subject: &str, internal: &str) -> String {
    match Target::parse(subject) {
        Some(target) => format!("{internal}{}", &subject[target.collective().len()..]),
        None => subject.to_string(),
    }
}

/// A reply on `choria.federation.<cluster>.collective` in resign mode: as in pass-through, plus
/// the secure reply must decode with a good hash (and a v2 reply's signature, when its server
/// signed, must verify against the issuers of one of the cluster's v2 members: collectives that
/// share a NATS network share this subject, so the network it came in on does not say which
/// member sent it) and answer the request id its federation header names. A reply to a caller
/// of the same protocol is re-encoded with a fresh hash (v1) or passed on (v2); one to a caller
/// of the other protocol is translated into the caller's protocol under the caller's own
/// request id. Returns the client's reply subject, the reply and the caller's request id.
pub fn route_reply(
    bytes: &[u8],
    rules: &ClusterRules,
    inbound: &str,
    outbound: &str,
) -> Result<(String, Vec<u8>, String), Refusal> {
    let mut transport = RelayTransport::decode(bytes, &rules.limits)?;
    let (req, reply_to) = take_reply_header(&mut transport)?;
    let (mut out, caller_id) = if transport.is_v2() {
        let secure = choria_v2::SecureReply::decode(&secure_data(&transport)?, &rules.limits)?;
        check_member_signature(&secure, rules.resign.as_deref())?;
        let reply = secure.decode_reply(&rules.limits)?;
        if reply.request == req {
            (transport, req)
        } else if reply.request == derived_request_id(&req) {
            let v1 = translate::v2_to_v1(&reply, &req)?;
            (transport.with_data_in(false, &v1), req)
        } else {
            return Err(Refusal::ReplyMismatch {
                reply: reply.request,
                header: req,
            });
        }
    } else {
        let secure = SecureReply::decode(&secure_data(&transport)?, &rules.limits)?;
        let reply = secure.reply(&rules.limits)?;
        if reply.envelope.requestid != req {
            return Err(Refusal::ReplyMismatch {
                reply: reply.envelope.requestid,
                header: req,
            });
        }
        match translate::v2_caller_id(&reply_to, &req) {
            Some(caller_id) => {
                let v2 = translate::v1_to_v2(&reply, caller_id);
                let mut out = transport.with_data_in(true, &v2);
                if out.headers.mc_sender.is_none() {
                    out.headers.mc_sender = Some(reply.envelope.senderid.clone());
                }
                (out, caller_id.to_string())
            }
            None => {
                let fresh =
                    SecureReply::new(Reply::new(reply.message, reply.envelope).encode_string());
                (transport.with_data(&fresh.encode()), req)
            }
        }
    };
    out.headers.record_hop(inbound, &rules.label, outbound);
    Ok((reply_to, out.encode(), caller_id))
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
