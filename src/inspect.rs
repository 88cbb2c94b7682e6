//! `fedgate inspect`: decode any Choria v1 layer from bytes, verify it, and describe the result;
//! [`v2`] does the same for Choria protocol v2 and [`legacy`] for legacy MCollective messages.

use serde::Serialize;

pub mod legacy;
pub mod v2;

use crate::security::{Now, Verifier, VerifyError, check_collective};
use crate::wire::choria_v1::{
    Kind, Reply, Request, SecureReply, SecureRequest, Transport, peek_protocol, secure_kind,
};
use crate::wire::{DecodeError, Layer, Limits};

/// What `fedgate inspect` prints: one JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// True when a receiver would accept the message.
    pub valid: bool,
    /// Why not, starting with the refusal category in words (`unknown CA: ...`).
    pub reason: Option<String>,
    /// The refusal category as a code (`unknown_ca`, `ttl_expired`, ...).
    pub code: Option<&'static str>,
    /// Protocol of the outermost layer in the input.
    pub protocol: Option<String>,
    /// Caller id of a request.
    pub callerid: Option<String>,
    /// Collective of a request.
    pub collective: Option<String>,
    /// Agent of the request or reply.
    pub agent: Option<String>,
    /// Request id.
    pub requestid: Option<String>,
    /// True when a privileged certificate signed the request (never for legacy messages).
    pub privileged: bool,
    /// `request` or `reply`.
    pub kind: Option<&'static str>,
    /// Certname of the signing certificate.
    pub signer: Option<String>,
    /// Sender of a reply.
    pub sender: Option<String>,
}

/// Options for one inspection.
#[derive(Clone, Debug)]
pub struct InspectOptions {
    /// Decode limits.
    pub limits: Limits,
    /// The clock for TTL and certificate validity.
    pub now: Now,
    /// When set, a request for another collective is refused as `wrong_collective`.
    pub collective: Option<String>,
}

/// Inspects a transport, secure request, secure reply, or bare request or reply.
pub fn inspect(bytes: &[u8], verifier: &Verifier, options: &InspectOptions) -> Inspection {
    let mut out = Inspection::default();
    if let Err(err) = crate::wire::check_size(
        Layer::Transport,
        bytes.len(),
        options.limits.max_message_bytes,
    ) {
        return out.refused(err.into());
    }
    out.protocol = peek_protocol(bytes);
    let outcome = match out.protocol.as_deref() {
        Some("choria:transport:1") => Transport::decode(bytes, &options.limits)
            .map_err(VerifyError::from)
            .and_then(|t| inspect_secure(&t.data, verifier, options, &mut out)),
        Some("choria:secure:request:1" | "choria:secure:reply:1") => {
            inspect_secure(bytes, verifier, options, &mut out)
        }
        Some("choria:request:1") => bare_request(bytes, options, &mut out),
        Some("choria:reply:1") => bare_reply(bytes, options, &mut out),
        Some(other) => Err(DecodeError::Protocol {
            layer: Layer::Transport,
            found: other.to_string(),
        }
        .into()),
        None => Err(DecodeError::field(
            Layer::Transport,
            "protocol",
            "is missing or the input is not a JSON object",
        )
        .into()),
    };
    match outcome {
        Ok(()) => Inspection { valid: true, ..out },
        Err(err) => out.refused(err),
    }
}

fn inspect_secure(
    data: &[u8],
    verifier: &Verifier,
    options: &InspectOptions,
    out: &mut Inspection,
) -> Result<(), VerifyError> {
    match secure_kind(data)? {
        Kind::Request => {
            out.kind = Some(Kind::Request.as_str());
            let secure = SecureRequest::decode(data, &options.limits)?;
            let signed = match verifier.verify_signature(secure.clone(), options.now) {
                Ok(signed) => signed,
                Err(err) => {
                    // Describe what can be read, then report why it was refused.
                    if let Ok(request) = secure.request(&options.limits) {
                        describe_request(&request, out);
                    }
                    return Err(err);
                }
            };
            describe_request(signed.request(), out);
            out.privileged = signed.privileged();
            out.signer = Some(signed.signer().to_string());
            if let Some(collective) = &options.collective {
                check_collective(signed.request(), std::slice::from_ref(collective))?;
            }
            signed.check_ttl(options.now).map(|_| ())
        }
        Kind::Reply => {
            out.kind = Some(Kind::Reply.as_str());
            let secure = SecureReply::decode(data, &options.limits)?;
            describe_reply(&secure.reply(&options.limits)?, out);
            Ok(())
        }
    }
}

fn bare_request(
    bytes: &[u8],
    options: &InspectOptions,
    out: &mut Inspection,
) -> Result<(), VerifyError> {
    out.kind = Some(Kind::Request.as_str());
    describe_request(&Request::decode(bytes, &options.limits)?, out);
    Err(VerifyError::Unsigned(
        "a bare choria:request:1 carries no signature; inspect its secure request or transport"
            .into(),
    ))
}

fn bare_reply(
    bytes: &[u8],
    options: &InspectOptions,
    out: &mut Inspection,
) -> Result<(), VerifyError> {
    out.kind = Some(Kind::Reply.as_str());
    describe_reply(&Reply::decode(bytes, &options.limits)?, out);
    Err(VerifyError::Unsigned(
        "a bare choria:reply:1 carries no hash; inspect its secure reply or transport".into(),
    ))
}

fn describe_request(request: &Request, out: &mut Inspection) {
    let env = &request.envelope;
    out.callerid = Some(env.callerid.clone());
    out.collective = Some(env.collective.clone());
    out.agent = Some(env.agent.clone());
    out.requestid = Some(env.requestid.clone());
}

fn describe_reply(reply: &Reply, out: &mut Inspection) {
    out.agent = Some(reply.envelope.agent.clone());
    out.requestid = Some(reply.envelope.requestid.clone());
    out.sender = Some(reply.envelope.senderid.clone());
}

impl Inspection {
    fn refused(self, err: VerifyError) -> Self {
        Inspection {
            valid: false,
            code: Some(err.reason().as_str()),
            reason: Some(err.to_string()),
            ..self
        }
    }
}
