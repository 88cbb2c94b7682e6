//! `fedgate inspect --legacy`: decode one legacy MCollective `ssl`-plugin message in either
//! serializer, verify it as the legacy ingress does, and describe it in the same fields as a
//! Choria inspection.
//!
//! A request goes through [`LegacyVerifier::check_request`], every check of the ingress's
//! `verify_request` except the replay claim, so inspecting the same file twice gives the same
//! verdict. A reply's signature is checked with the servers' shared key, as `mco` does; replies
//! carry no TTL.

use super::Inspection;
use crate::security::Now;
use crate::security::legacy::{LegacyRefusal, LegacyVerifier};
use crate::wire::mcollective::Serializer;
use crate::wire::mcollective::envelope::{LegacyMessage, LegacyReply, LegacyRequest};

/// Options for one legacy inspection.
#[derive(Clone, Copy, Debug)]
pub struct LegacyInspectOptions {
    /// Largest message decoded, bytes.
    pub max_message_bytes: usize,
    /// The clock for the TTL and skew checks.
    pub now: Now,
}

/// The `protocol` a legacy message is reported with: `mcollective:ssl:marshal` or
/// `mcollective:ssl:yaml`.
pub fn protocol(serializer: Serializer) -> String {
    format!("mcollective:ssl:{serializer}")
}

/// Inspects a legacy request or reply envelope, in whichever serializer wrote it.
pub fn inspect_legacy(
    bytes: &[u8],
    verifier: &LegacyVerifier,
    options: &LegacyInspectOptions,
) -> Inspection {
    let serializer = Serializer::sniff(bytes);
    let mut out = Inspection {
        protocol: Some(protocol(serializer)),
        ..Inspection::default()
    };
    let outcome = match LegacyMessage::decode(serializer, bytes, options.max_message_bytes) {
        Ok(LegacyMessage::Request(request)) => {
            describe_request(&request, &mut out);
            verifier
                .check_request(serializer, &request, options.now.unix_seconds())
                .map(|name| out.signer = Some(name))
        }
        Ok(LegacyMessage::Reply(reply)) => {
            describe_reply(&reply, &mut out);
            verifier.verify_reply(&reply)
        }
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(()) => Inspection { valid: true, ..out },
        Err(err) => refused(out, &err),
    }
}

fn describe_request(request: &LegacyRequest, out: &mut Inspection) {
    out.kind = Some("request");
    out.callerid = Some(request.callerid.clone());
    out.collective = Some(request.collective.clone());
    out.agent = Some(request.agent.clone());
    out.requestid = Some(request.requestid.clone());
}

fn describe_reply(reply: &LegacyReply, out: &mut Inspection) {
    out.kind = Some("reply");
    out.agent = Some(reply.senderagent.clone());
    out.requestid = Some(reply.requestid.clone());
    out.sender = Some(reply.senderid.clone());
}

fn refused(out: Inspection, err: &LegacyRefusal) -> Inspection {
    Inspection {
        valid: false,
        code: Some(err.code()),
        reason: Some(err.to_string()),
        // Only a verified signature names its signer.
        signer: None,
        ..out
    }
}

#[cfg(test)]
#[path = "legacy_tests.rs"]
mod tests;
