//! Requests into a Choria protocol v2 collective: fedgate signs as a delegator for the caller
//! the gateway admitted, and checks v2 replies.
//!
//! A v2 server accepts a request signed on someone else's behalf only with two tokens: the
//! signer's, which must hold `authentication_delegator`, and the caller's, which must allow fleet
//! management. A caller mapped from another realm has no token of its own, so fedgate, holding a
//! chain issuer's token with the delegation permission, issues one for the request: for the
//! mapped caller id, with `signed_fleet_management` only (useless without a delegator), bound to
//! fedgate's key, and valid for the request's TTL and a minute more.

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::{ClientError, ReplyEvent, RpcCall};
use crate::security::v2::tokens::{ClientClaims, ClientPermissions, StandardClaims};
use crate::security::v2::{Issuers, TokenIssuer, V2Signer, V2Verifier, tokens};
use crate::security::{CallerId, Now};
use crate::subjects;
use crate::wire::choria_v1::{RpcReply, StatusCode};
use crate::wire::choria_v2::{Request, SecureReply, SecureRequest, Transport, TransportHeaders};
use crate::wire::{DecodeError, Layer, Limits};

/// Seconds a caller token issued for one request outlives the request's TTL, and is dated
/// before it was made: go-choria checks `nbf` without leeway, so a server whose clock is behind
/// fedgate's would otherwise refuse it as not valid yet.
const CALLER_TOKEN_MARGIN: i64 = 60;

/// fedgate's standing in one v2 collective: its delegating key and token, the issuer that token
/// makes it, and the issuers whose servers' reply signatures it checks.
pub struct V2Egress {
    delegator: V2Signer,
    issuer: TokenIssuer,
    org: String,
    verifier: V2Verifier,
    /// Whether the collective's servers sign their replies, so an unsigned one is refused.
    signed_replies: bool,
}

impl std::fmt::Debug for V2Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "V2Egress({:?} in {})", self.delegator, self.org)
    }
}

impl V2Egress {
    /// Loads fedgate's seed and token for a v2 collective and checks the token as the
    /// collective's servers will: issued by one of `issuers`, valid now, holding
    /// `authentication_delegator`, and vouched for as a chain issuer, so that the caller tokens
    /// fedgate issues verify.
    pub fn load(
        seed: &std::path::Path,
        token: &std::path::Path,
        issuers: Issuers,
        limits: Limits,
        now: Now,
    ) -> Result<Self, String> {
        let delegator = V2Signer::from_files(seed, token).map_err(|e| e.to_string())?;
        let claims = tokens::parse_client(delegator.token(), &issuers, now)
            .map_err(|e| format!("{}: {e}", token.display()))?;
        if !claims.permissions().authentication_delegator {
            return Err(format!(
                "{}: the token of {} lacks the authentication_delegator permission a v2 server requires of whoever signs for others",
                token.display(),
                claims.callerid
            ));
        }
        tokens::check_chain_issuer(&claims, &issuers)
            .map_err(|e| format!("{}: {e}", token.display()))?;
        let seed_bytes = delegator.seed();
        let issuer = TokenIssuer::chain(&seed_bytes, &claims)
            .map_err(|e| format!("{}: {e}", token.display()))?;
        Ok(V2Egress {
            delegator,
            issuer,
            org: claims.ou,
            verifier: V2Verifier::new(issuers, limits),
            signed_replies: true,
        })
    }

    /// Whether the collective's servers sign their replies (go-choria's default); when they
    /// do not, replies are checked by hash alone.
    pub fn with_signed_replies(mut self, signed: bool) -> Self {
        self.signed_replies = signed;
        self
    }

    /// Checks a v2 reply's signature against the collective's issuers; an unsigned reply
    /// passes only where the servers do not sign.
    pub fn check_reply_signature(&self, secure: &SecureReply, now: Now) -> Result<(), String> {
        match self.verifier.check_reply_signature(secure, now) {
            Ok(Some(_)) => Ok(()),
            Ok(None) if !self.signed_replies => Ok(()),
            Ok(None) => Err(
                "the reply is not signed, and this collective's servers sign their replies".into(),
            ),
            Err(err) => Err(err.to_string()),
        }
    }

    /// The hex public key fedgate signs with here, which every caller token it issues carries.
    pub fn public_key(&self) -> String {
        self.delegator.public_key()
    }

    /// An egress from parts, for tests and tooling.
    pub fn new(
        delegator: V2Signer,
        issuer: TokenIssuer,
        org: String,
        verifier: V2Verifier,
    ) -> Self {
        V2Egress {
            delegator,
            issuer,
            org,
            verifier,
            signed_replies: true,
        }
    }

    /// The signed request for `call` as `caller`, and the reply subject.
    pub(super) fn build(
        &self,
        call: &RpcCall,
        requestid: &str,
        caller: &CallerId,
        senderid: &str,
        now: Now,
    ) -> Result<(String, Transport), ClientError> {
        let super::Signed {
            body,
            filter,
            time,
            ttl,
        } = super::Signed::of(call, now);
        let time_ns = if call.expires.is_some() {
            time.saturating_mul(1_000_000_000)
        } else {
            now.unix_nanos()
        };
        let mut request = Request::new(
            body.encode_string().into_bytes(),
            requestid.to_string(),
            senderid.to_string(),
            caller.as_str().to_string(),
            call.collective.clone(),
            call.agent.clone(),
            ttl,
            time_ns,
        );
        request.filter = Some(filter);
        let secure = self.delegate(&request, now);
        let reply = subjects::reply(&call.collective, caller.as_str(), requestid);
        let headers = TransportHeaders {
            reply: Some(reply.clone()),
            sender: senderid.to_string(),
            ..TransportHeaders::default()
        };
        Ok((reply, Transport::new(secure.encode(), headers)))
    }

    /// Signs `request` as the delegator for the caller it names, with a caller token issued for
    /// it alone: valid for its TTL and the margin either side.
    pub fn delegate(&self, request: &Request, now: Now) -> SecureRequest {
        let caller_token = self.caller_token(&request.caller, request.ttl, now);
        self.delegator.sign_delegated(request, &caller_token)
    }

    /// A token for `caller` that only fedgate's delegation makes usable.
    fn caller_token(&self, caller: &str, ttl: i64, now: Now) -> String {
        let claims = ClientClaims {
            callerid: caller.to_string(),
            ou: self.org.clone(),
            permissions: Some(ClientPermissions::signed_fleet()),
            standard: StandardClaims {
                public_key: self.delegator.public_key(),
                ..StandardClaims::default()
            },
            ..ClientClaims::default()
        };
        self.issuer.issue_client(
            claims,
            now.unix_seconds().saturating_sub(CALLER_TOKEN_MARGIN),
            ttl.saturating_add(2 * CALLER_TOKEN_MARGIN),
        )
    }

    /// Checks one v2 reply: the transport and secure reply decode, the hash matches, a signature
    /// (when the server signed) verifies with a server token from a trusted issuer, and the reply
    /// answers `requestid`.
    pub(super) fn check_reply(
        &self,
        payload: &[u8],
        requestid: &str,
        limits: &Limits,
        started: Instant,
    ) -> Result<ReplyEvent, DecodeError> {
        let transport = Transport::decode(payload, limits)?;
        let secure = SecureReply::decode(&transport.data, limits)?;
        self.check_reply_signature(&secure, Now::system())
            .map_err(|problem| DecodeError::field(Layer::SecureReplyV2, "signature", problem))?;
        let reply = secure.decode_reply(limits)?;
        if reply.request != requestid {
            return Err(DecodeError::field(
                Layer::ReplyV2,
                "request",
                format!("is {}, expected {requestid}", reply.request),
            ));
        }
        let rpc = if reply.agent == "discovery" {
            RpcReply::new(
                "discovery",
                StatusCode::Ok,
                "OK",
                Value::String(String::from_utf8_lossy(&reply.message).into_owned()),
            )
        } else {
            reply.rpc(limits)?
        };
        Ok(ReplyEvent {
            sender: reply.sender,
            statuscode: rpc.statuscode,
            statusmsg: rpc.statusmsg,
            data: rpc.data,
            elapsed: started.elapsed(),
        })
    }
}

/// The NATS messages of a v2 call: straight to the collective's subjects.
pub(super) fn outgoing(
    call: &RpcCall,
    transport: &Transport,
) -> Result<Vec<(String, Bytes)>, ClientError> {
    if call.federation.is_some() {
        return Err(ClientError::Invalid(format!(
            "collective {} speaks Choria protocol v2, which fedgate reaches directly, not through a federation cluster",
            call.collective
        )));
    }
    let payload = Bytes::from(transport.encode());
    Ok(super::request_subjects(call)
        .into_iter()
        .map(|subject| (subject, payload.clone()))
        .collect())
}
