//! `fedgate inspect` for Choria protocol v2: a transport, secure request or secure reply decoded
//! and verified against the issuers given, as a v2 server would.

use super::{InspectOptions, Inspection};
use crate::security::v2::{V2Verifier, check_ttl};
use crate::security::{VerifyError, check_collective_name};
use crate::wire::choria_v1::Kind;
use crate::wire::choria_v2::{Reply, Request, SecureReply, SecureRequest, Transport, secure_kind};
use crate::wire::{DecodeError, Layer};

/// Inspects a v2 transport, secure request, secure reply, or bare request or reply.
pub fn inspect_v2(bytes: &[u8], verifier: &V2Verifier, options: &InspectOptions) -> Inspection {
    let mut out = Inspection {
        protocol: crate::wire::choria_v1::peek_protocol(bytes),
        ..Inspection::default()
    };
    let outcome = match out.protocol.as_deref() {
        Some(p) if p == Layer::TransportV2.protocol() => Transport::decode(bytes, &options.limits)
            .map_err(VerifyError::from)
            .and_then(|t| inspect_secure(&t.data, verifier, options, &mut out)),
        Some(p)
            if p == Layer::SecureRequestV2.protocol() || p == Layer::SecureReplyV2.protocol() =>
        {
            inspect_secure(bytes, verifier, options, &mut out)
        }
        Some(p) if p == Layer::RequestV2.protocol() => {
            out.kind = Some(Kind::Request.as_str());
            Request::decode(bytes, &options.limits)
                .map_err(VerifyError::from)
                .and_then(|request| {
                    describe_request(&request, &mut out);
                    Err(VerifyError::Unsigned(
                        "a bare v2 request carries no signature; inspect its secure request or transport".into(),
                    ))
                })
        }
        Some(p) if p == Layer::ReplyV2.protocol() => {
            out.kind = Some(Kind::Reply.as_str());
            Reply::decode(bytes, &options.limits)
                .map_err(VerifyError::from)
                .and_then(|reply| {
                    describe_reply(&reply, &mut out);
                    Err(VerifyError::Unsigned(
                        "a bare v2 reply carries no hash; inspect its secure reply or transport"
                            .into(),
                    ))
                })
        }
        other => Err(DecodeError::Protocol {
            layer: Layer::TransportV2,
            found: other.unwrap_or_default().to_string(),
        }
        .into()),
    };
    match outcome {
        Ok(()) => Inspection { valid: true, ..out },
        Err(err) => out.refused(err),
    }
}

fn inspect_secure(
    data: &[u8],
    verifier: &V2Verifier,
    options: &InspectOptions,
    out: &mut Inspection,
) -> Result<(), VerifyError> {
    match secure_kind(data)? {
        Kind::Request => {
            out.kind = Some(Kind::Request.as_str());
            let secure = SecureRequest::decode(data, &options.limits)?;
            let signed = match verifier.verify_secure(secure.clone(), options.now) {
                Ok(signed) => signed,
                Err(err) => {
                    if let Ok(request) = secure.decode_request(&options.limits) {
                        describe_request(&request, out);
                    }
                    return Err(err);
                }
            };
            describe_request(&signed.request, out);
            out.privileged = signed.delegator.is_some();
            out.signer = Some(signed.signer().to_string());
            if let Some(collective) = &options.collective {
                check_collective_name(
                    &signed.request.collective,
                    std::slice::from_ref(collective),
                )?;
            }
            check_ttl(&signed.request, options.now)
        }
        Kind::Reply => {
            out.kind = Some(Kind::Reply.as_str());
            let secure = SecureReply::decode(data, &options.limits)?;
            describe_reply(&secure.decode_reply(&options.limits)?, out);
            if let Some(server) = verifier.check_reply_signature(&secure, options.now)? {
                out.signer = Some(server.identity);
            }
            Ok(())
        }
    }
}

fn describe_request(request: &Request, out: &mut Inspection) {
    out.callerid = Some(request.caller.clone());
    out.collective = Some(request.collective.clone());
    out.agent = Some(request.agent.clone());
    out.requestid = Some(request.id.clone());
}

fn describe_reply(reply: &Reply, out: &mut Inspection) {
    out.agent = Some(reply.agent.clone());
    out.requestid = Some(reply.request.clone());
    out.sender = Some(reply.sender.clone());
}
