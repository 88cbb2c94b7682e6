//! Self-signed Choria requests on the edge: verified as a Choria server would, a v1 request
//! against the edge CA with the caller's kind bound to its certificate, a v2 request against the
//! edge's token issuers (the caller's token, or a delegator's); then the call as signed is
//! checked as on every ingress, before the request takes the same path as the caller it names.

use serde_json::Value;

use super::{Dispatcher, Job, Principal, Scope};
use crate::audit::Event;
use crate::edge::job::{DEFAULT_TTL, check_id, collection};
use crate::edge::protocol::SignedMessage;
use crate::gateway::{CallError, Code, Refusal, Stage, choria_call};
use crate::security::{CallerId, Now, VerifiedRequest, VerifyError};
use crate::subjects::is_valid_name;
use crate::wire::DecodeError;
use crate::wire::choria_v1::{Request, SecureRequest};
use crate::wire::choria_v2;

impl Dispatcher {
    /// Verifies a self-signed Choria request against the edge CA, as a Choria server would
    /// (chain, caller name, allow list, signature, TTL), binds the caller's kind to the
    /// certificate, checks the call as signed and its lifetime, and returns the verified caller
    /// and the request as a job. Every refusal is recorded with the caller the request claims
    /// (its replay claim comes later, once it is mapped and authorized).
    ///
    /// Refusals before the signature verified are budgeted by `source` (the socket's address):
    /// beyond `[edge] unverified_budget` in an interval, they are counted in one summary record
    /// per source instead of one record each ([`crate::audit::flood`]).
    pub async fn verify_signed(
        &self,
        signed: SignedMessage,
        now: Now,
        source: Option<std::net::IpAddr>,
    ) -> Result<(Principal, Job), Refusal> {
        check_id(&signed.id).map_err(|m| Refusal::framing("invalid", m))?;
        let bytes = match &signed.request {
            Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        };
        let (claimed, checked) = if choria_v2::version(&bytes) == Some(choria_v2::Version::V2) {
            let secure = choria_v2::SecureRequest::decode(&bytes, &self.limits);
            let claimed = secure
                .as_ref()
                .ok()
                .and_then(|s| s.decode_request(&self.limits).ok())
                .map(|r| r.view_v1());
            (claimed, self.check_signed_v2(secure, signed, now))
        } else {
            let secure = SecureRequest::decode(&bytes, &self.limits);
            let claimed = secure
                .as_ref()
                .ok()
                .and_then(|s| s.request(&self.limits).ok());
            (claimed, self.check_signed(secure, signed, now))
        };
        match checked {
            Ok(taken) => Ok(taken),
            Err(refusal) => {
                metrics::counter!("fedgate_edge_signed_refused_total", "reason" => refusal.code.as_str())
                    .increment(1);
                let mut event = self.claimed(claimed.as_ref());
                event.source = source.map(|s| s.to_string());
                Err(self.refused_unverified(event, refusal, source).await)
            }
        }
    }

    /// The record of a signed request that did not verify: what it claims, marked as claimed.
    fn claimed(&self, claimed: Option<&Request>) -> Event {
        Event {
            edge: "websocket".into(),
            realm: self.realm.clone(),
            claimed_caller: claimed.map(|r| r.envelope.callerid.clone()),
            request_id: claimed.map(|r| r.envelope.requestid.clone()),
            collectives: claimed
                .map(|r| r.envelope.collective.clone())
                .into_iter()
                .collect(),
            agent: claimed.map(|r| r.envelope.agent.clone()),
            ..Event::default()
        }
    }

    fn check_signed(
        &self,
        secure: Result<SecureRequest, DecodeError>,
        signed: SignedMessage,
        now: Now,
    ) -> Result<(Principal, Job), Refusal> {
        let Some(verifier) = &self.verifier else {
            let message = "this edge takes no signed requests: [edge] has no ca";
            return Err(Refusal::unverified("no_ca", message));
        };
        let verified = secure
            .map_err(VerifyError::from)
            .and_then(|secure| verifier.verify(secure, now))
            .map_err(|err| {
                let message = format!("signed request refused: {err}");
                Refusal::unverified(err.reason().as_str(), message)
            })?;
        bound_to_certificate(&verified)
            .map_err(|message| Refusal::new(Stage::Verify, Code::CallerKind, message))?;
        let text = verified.secure().message.clone();
        self.take_verified(
            verified.request(),
            verified.caller().clone(),
            text,
            signed,
            now,
        )
    }

    /// [`Self::check_signed`] for a Choria v2 request: its tokens and signature against the
    /// edge's issuers, as a v2 server checks them, and its TTL. The token (the caller's own, or
    /// a delegator's word) binds the caller, so there is no certificate to bind it to.
    fn check_signed_v2(
        &self,
        secure: Result<choria_v2::SecureRequest, DecodeError>,
        signed: SignedMessage,
        now: Now,
    ) -> Result<(Principal, Job), Refusal> {
        let Some(verifier) = &self.v2_verifier else {
            let message = "this edge takes no signed v2 requests: [edge] has no issuers";
            return Err(Refusal::unverified("no_issuers", message));
        };
        let verified = secure
            .map_err(VerifyError::from)
            .and_then(|secure| verifier.verify_secure(secure, now))
            .and_then(|verified| {
                crate::security::v2::check_ttl(&verified.request, now).map(|()| verified)
            })
            .map_err(|err| {
                let message = format!("signed request refused: {err}");
                Refusal::unverified(err.reason().as_str(), message)
            })?;
        // A v2 request names no audience: one fedgate itself published into a v2 collective
        // (signed with its key, for a caller token it issued) verifies here too, and would
        // otherwise run again under a second mapping.
        if verified.made_by_any_of(&self.own_v2_keys) {
            let message = "signed request refused: fedgate published this request into a collective itself; it does not come back in";
            return Err(Refusal::unverified("not_allowed", message));
        }
        verified
            .caller
            .check_v2_in_realm_with_ca(self.verifier.is_some())
            .map_err(|message| Refusal::new(Stage::Verify, Code::CallerKind, message))?;
        let text = String::from_utf8_lossy(&verified.secure.request).into_owned();
        let request = verified.request.view_v1();
        self.take_verified(&request, verified.caller, text, signed, now)
    }

    /// The call as a verified request signed it, checked as on every ingress, as a job for
    /// `caller`; `text` is what the caller signed, which the replay guard claims.
    fn take_verified(
        &self,
        request: &Request,
        caller: CallerId,
        text: String,
        signed: SignedMessage,
        now: Now,
    ) -> Result<(Principal, Job), Refusal> {
        let envelope = &request.envelope;
        let invalid = |message: String| Refusal::new(Stage::Decode, Code::Invalid, message);
        // The call as signed, decided as on every ingress: discovery is `discovery#ping`, and
        // the payload must be for the envelope's agent.
        let body = choria_call(request, &self.limits).map_err(|err| match err {
            CallError::Refused(mismatch) => mismatch,
            CallError::Malformed(err) => {
                invalid(format!("the payload is not an RPC request: {err}"))
            }
        })?;
        if !is_valid_name(&body.action) {
            return Err(invalid(format!(
                "action {:?} is not a valid name",
                body.action
            )));
        }
        let (timeout, limit) =
            collection(&signed.targets, signed.timeout_ms, signed.limit).map_err(invalid)?;
        // The same lifetime rules as every ingress: a capped signed TTL, and enough life left;
        // the published request ends with the original (`RpcCall::expires`).
        let until = self
            .gate
            .lifetime
            .check(envelope.time, envelope.ttl, now.unix_seconds())
            .map_err(|window| Refusal {
                reason: format!("request {}: {}", envelope.requestid, window.reason),
                ..window
            })?;
        let principal = Principal {
            caller,
            method: "signed",
            expires: None,
            collectives: None,
            token: None,
        };
        let job = Job {
            id: signed.id,
            scope: Scope::Collective(envelope.collective.clone()),
            agent: body.agent,
            action: body.action,
            data: body.data,
            filter: envelope.filter.clone(),
            targets: signed.targets,
            timeout,
            limit,
            // Valid no longer than the client's own request is.
            ttl: DEFAULT_TTL,
            expires: Some(until),
            requestid: Some(envelope.requestid.clone()),
            signed: Some(text),
        };
        Ok((principal, job))
    }
}

/// A certificate speaks only as `choria=<name>` or `cert=<name>` of a name it carries (which
/// the verifier checked), with nothing after the name; a password or token user is `up=`, and
/// a certificate is not. A privileged certificate may speak for anyone, as in Choria.
fn bound_to_certificate(verified: &VerifiedRequest) -> Result<(), String> {
    let caller = verified.caller();
    if verified.privileged() || (caller.is_certificate_kind() && caller.is_exact()) {
        return Ok(());
    }
    Err(format!(
        "the certificate of {} speaks as choria={} or cert={}, not as {}",
        verified.signer(),
        caller.identity(),
        caller.identity(),
        caller.as_str()
    ))
}
