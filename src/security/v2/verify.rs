//! Verifying a v2 secure request as a v2 Choria server does, and a v2 reply as its client should.
//!
//! A request signed by its caller verifies with the public key in the caller's token; that token
//! must allow fleet management, must not require a delegator, and must name the request's
//! caller. A request signed by a delegator verifies with the key in the `signer` token, which
//! must be a client token with `authentication_delegator`; the caller's token must allow fleet
//! management (signed or not) and is verified with the delegator's issuer, and the request's
//! caller is the delegator's word. Only then is the TTL checked (nanoseconds, strictly inside
//! `time ± ttl`).

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

use super::tokens::{self, ClientClaims, Issuers, ServerClaims, parse_public_key};
use crate::security::{CallerId, Now, VerifyError};
use crate::wire::Limits;
use crate::wire::choria_v2::{Reply, Request, SecureReply, SecureRequest};

/// A v2 request whose signature and tokens check out. Its TTL is not checked yet.
#[derive(Clone, Debug)]
pub struct SignedV2Request {
    /// The secure request exactly as received.
    pub secure: SecureRequest,
    /// The decoded request.
    pub request: Request,
    /// The caller, from the request, which its own token or a delegator vouches for.
    pub caller: CallerId,
    /// The caller's verified token.
    pub caller_token: Arc<ClientClaims>,
    /// The delegator's verified token, when one signed.
    pub delegator: Option<Arc<ClientClaims>>,
}

impl SignedV2Request {
    /// Whether the caller's token or the delegator's names a key `own` holds: a request signed
    /// with one of fedgate's own v2 keys, or for a caller token fedgate issued.
    pub fn made_by_any_of(&self, own: &std::collections::BTreeSet<String>) -> bool {
        own.contains(&self.caller_token.standard.public_key)
            || self
                .delegator
                .as_ref()
                .is_some_and(|d| own.contains(&d.standard.public_key))
    }

    /// Who made the signature: the delegator's caller id, or the caller's.
    pub fn signer(&self) -> &str {
        self.delegator
            .as_ref()
            .map_or(&self.caller_token.callerid, |d| &d.callerid)
    }
}

/// Client tokens remembered once verified.
pub const TRUSTED_TOKENS: usize = 4096;

/// A verified client token, and the span it is valid in (unix seconds).
struct Trusted {
    claims: Arc<ClientClaims>,
    from: i64,
    until: i64,
}

/// Checks v2 secure requests against one realm's issuers.
///
/// Client tokens that verified are remembered by the SHA-256 of their text, with the span in
/// which they are valid (from `nbf`, before `exp` and a chain issuer's `issexp`), so a known
/// caller costs one signature check, the request's. Inside that span the token's check cannot
/// come out differently: the issuers never change and the check depends only on the token and
/// the time. Clones share the cache.
#[derive(Clone)]
pub struct V2Verifier {
    issuers: Issuers,
    limits: Limits,
    trusted: Arc<quick_cache::sync::Cache<[u8; 32], Arc<Trusted>>>,
}

impl std::fmt::Debug for V2Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "V2Verifier({:?}, {} of {TRUSTED_TOKENS} tokens remembered)",
            self.issuers,
            self.trusted.len()
        )
    }
}

impl V2Verifier {
    /// A verifier trusting `issuers`.
    pub fn new(issuers: Issuers, limits: Limits) -> Self {
        V2Verifier {
            issuers,
            limits,
            trusted: Arc::new(quick_cache::sync::Cache::new(TRUSTED_TOKENS)),
        }
    }

    /// A client token's verified claims: remembered, or parsed and checked (and remembered).
    fn client_token(&self, token: &str, now: Now) -> Result<Arc<ClientClaims>, VerifyError> {
        let key: [u8; 32] = digest(&SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let at = now.unix_seconds();
        if let Some(trusted) = self.trusted.get(&key)
            && trusted.from <= at
            && at < trusted.until
        {
            return Ok(trusted.claims.clone());
        }
        let claims = Arc::new(tokens::parse_client(token, &self.issuers, now)?);
        let standard = &claims.standard;
        let until = standard
            .exp
            .unwrap_or(i64::MIN)
            .min(standard.issexp.unwrap_or(i64::MAX));
        self.trusted.insert(
            key,
            Arc::new(Trusted {
                claims: claims.clone(),
                from: standard.nbf.unwrap_or(i64::MIN),
                until,
            }),
        );
        Ok(claims)
    }

    /// The issuers trusted.
    pub fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// Decodes a secure request and verifies its signature and tokens at `now`.
    pub fn verify(&self, bytes: &[u8], now: Now) -> Result<SignedV2Request, VerifyError> {
        let secure = SecureRequest::decode(bytes, &self.limits)?;
        self.verify_secure(secure, now)
    }

    /// Verifies a decoded secure request's signature and tokens at `now`.
    pub fn verify_secure(
        &self,
        secure: SecureRequest,
        now: Now,
    ) -> Result<SignedV2Request, VerifyError> {
        if tokens::purpose(&secure.caller).as_deref() == Some(tokens::SERVER_PURPOSE) {
            return Err(VerifyError::NotPermitted(
                "a server token cannot make requests (as in go-choria)".into(),
            ));
        }
        let (caller_token, delegator, key) = if secure.signer.is_empty() {
            let caller = self.client_token(&secure.caller, now)?;
            let permissions = caller.permissions();
            if permissions.signed_fleet_management {
                return Err(VerifyError::NotPermitted(format!(
                    "{} may use the fleet only through a delegator's signature",
                    caller.callerid
                )));
            }
            if !permissions.fleet_management {
                return Err(VerifyError::NotPermitted(format!(
                    "{} does not have fleet management access",
                    caller.callerid
                )));
            }
            let key = public_key(&caller)?;
            (caller, None, key)
        } else {
            let delegator = self.client_token(&secure.signer, now)?;
            if !delegator.permissions().authentication_delegator {
                return Err(VerifyError::NotPermitted(format!(
                    "{} signed for another caller without the authentication_delegator permission",
                    delegator.callerid
                )));
            }
            let caller = self.client_token(&secure.caller, now)?;
            if caller.ou != delegator.ou {
                return Err(VerifyError::UnknownIssuer(format!(
                    "the caller's organization {:?} is not the delegator's {:?}",
                    caller.ou, delegator.ou
                )));
            }
            let permissions = caller.permissions();
            if !permissions.fleet_management && !permissions.signed_fleet_management {
                return Err(VerifyError::NotPermitted(format!(
                    "{} does not have fleet management access",
                    caller.callerid
                )));
            }
            let key = public_key(&delegator)?;
            (caller, Some(delegator), key)
        };
        UnparsedPublicKey::new(&ED25519, &key)
            .verify(secure.signed_bytes(), &secure.signature)
            .map_err(|_| {
                VerifyError::BadSignature(format!(
                    "the ed25519 signature does not verify with {}'s key",
                    delegator
                        .as_ref()
                        .map_or(&caller_token.callerid, |d| &d.callerid)
                ))
            })?;
        let request = secure.decode_request(&self.limits)?;
        if delegator.is_none() && request.caller != caller_token.callerid {
            return Err(VerifyError::NameMismatch {
                identity: request.caller.clone(),
                names: vec![caller_token.callerid.clone()],
            });
        }
        let caller = CallerId::parse(&request.caller)
            .map_err(|err| VerifyError::MalformedIdentity(err.to_string()))?;
        Ok(SignedV2Request {
            secure,
            request,
            caller,
            caller_token,
            delegator,
        })
    }

    /// Verifies a server's token and, when the reply is signed, its signature; the hash was
    /// checked when the secure reply decoded. go-choria's clients check the hash only; a reply
    /// that carries a signature here must carry a good one.
    pub fn check_reply_signature(
        &self,
        secure: &SecureReply,
        now: Now,
    ) -> Result<Option<ServerClaims>, VerifyError> {
        if secure.signature.is_empty() {
            return Ok(None);
        }
        let server = tokens::parse_server(&secure.sender, &self.issuers, now)?;
        let key = parse_public_key(&server.standard.public_key)
            .map_err(|err| VerifyError::InvalidToken(format!("public_key {err}")))?;
        UnparsedPublicKey::new(&ED25519, &key)
            .verify(&secure.reply, &secure.signature)
            .map_err(|_| {
                VerifyError::BadSignature(format!(
                    "the reply's signature does not verify with {}'s key",
                    server.identity
                ))
            })?;
        Ok(Some(server))
    }
}

fn public_key(claims: &ClientClaims) -> Result<[u8; 32], VerifyError> {
    parse_public_key(&claims.standard.public_key)
        .map_err(|err| VerifyError::InvalidToken(format!("public_key {err}")))
}

/// Choria's v2 TTL rule: the request's time (nanoseconds) strictly inside `now ± ttl`.
pub fn check_ttl(request: &Request, now: Now) -> Result<(), VerifyError> {
    let now_ns = i128::try_from(now.since_epoch().as_nanos()).unwrap_or(i128::MAX);
    let time_ns = i128::from(request.time);
    let ttl_ns = i128::from(request.ttl) * 1_000_000_000;
    if now_ns - ttl_ns < time_ns && time_ns < now_ns + ttl_ns {
        return Ok(());
    }
    Err(VerifyError::TtlExpired {
        time: request.time.div_euclid(1_000_000_000),
        ttl: request.ttl,
        now: now.unix_seconds(),
    })
}

/// Checks a v2 reply answers `requestid`: the secure reply decodes and its hash matches (in
/// [`SecureReply::decode`]), and the reply names the request.
pub fn check_reply(
    payload: &[u8],
    requestid: &str,
    limits: &Limits,
) -> Result<(SecureReply, Reply), crate::wire::DecodeError> {
    let secure = SecureReply::decode(payload, limits)?;
    let reply = secure.decode_reply(limits)?;
    if reply.request != requestid {
        return Err(crate::wire::DecodeError::field(
            crate::wire::Layer::ReplyV2,
            "request",
            format!("is {}, expected {requestid}", reply.request),
        ));
    }
    Ok((secure, reply))
}
