//! Verifying a secure request as a Choria server does, with a distinct reason for each refusal.
//!
//! [`Verifier::verify_signature`] checks what go-choria's `SecureRequest.Valid()` checks and
//! yields a [`SignedRequest`]; only [`SignedRequest::check_ttl`] turns that into a
//! [`VerifiedRequest`], so nothing stale can pass as verified.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use webpki::EndEntityCert;

use super::{CaBundle, CallerId, CertChain, CertInfo, NamePatterns, Now, VerifyError};
use crate::wire::choria_v1::{Request, SecureRequest};
use crate::wire::{Limits, decode_base64_lenient};

/// Smallest RSA key accepted from a signer. Go accepts 1024 bits; fedgate does not.
pub const MIN_RSA_BITS: usize = 2048;

/// A request whose signer chains to the CA, whose caller the signer may speak for, and whose
/// signature verifies. Its TTL is not checked yet.
#[derive(Clone, Debug)]
pub struct SignedRequest {
    secure: SecureRequest,
    request: Request,
    caller: CallerId,
    signer: String,
    privileged: bool,
}

/// A [`SignedRequest`] that is also inside its TTL window. Only [`SignedRequest::check_ttl`]
/// builds one.
#[derive(Clone, Debug)]
pub struct VerifiedRequest(SignedRequest);

impl SignedRequest {
    /// The decoded request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The secure request exactly as received.
    pub fn secure(&self) -> &SecureRequest {
        &self.secure
    }

    /// The verified caller id.
    pub fn caller(&self) -> &CallerId {
        &self.caller
    }

    /// The signing certificate's certname.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// True when a privileged certificate signed for this caller.
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Applies Choria's TTL rule at `now`.
    pub fn check_ttl(self, now: Now) -> Result<VerifiedRequest, VerifyError> {
        check_ttl(&self.request, now)?;
        Ok(VerifiedRequest(self))
    }
}

impl std::ops::Deref for VerifiedRequest {
    type Target = SignedRequest;

    fn deref(&self) -> &SignedRequest {
        &self.0
    }
}

/// Checks secure requests against one realm's CA and name rules.
///
/// Chains that signed a valid request are remembered by the SHA-256 of their PEM, with the period in which
/// every certificate in them is valid, so a known signer costs one signature check. Inside that
/// period the chain check cannot come out differently: the CA bundle never changes and webpki's
/// result depends only on the certificates and the time. Clones share the cache.
#[derive(Clone, Debug)]
pub struct Verifier {
    ca: CaBundle,
    privileged: NamePatterns,
    allowlist: NamePatterns,
    limits: Limits,
    trusted: Arc<TrustedChains>,
}

/// Most signer chains a [`Verifier`] remembers.
pub const TRUSTED_CHAINS: usize = 4096;

/// Chains that verified against the CA, by the SHA-256 of their PEM.
struct TrustedChains(quick_cache::sync::Cache<[u8; 32], Arc<TrustedSigner>>);

impl std::fmt::Debug for TrustedChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedChains({} of {TRUSTED_CHAINS})", self.0.len())
    }
}

/// What a verified chain decided about its leaf, and until when.
struct TrustedSigner {
    info: CertInfo,
    /// The leaf's RSA key, parsed once; `None` when aws-lc-rs refuses it, which
    /// `check_signer_key` reports first.
    key: Option<ParsedPublicKey>,
    privileged: bool,
    valid_from: i64,
    valid_until: i64,
}

impl Verifier {
    /// A verifier for one realm.
    pub fn new(
        ca: CaBundle,
        privileged: NamePatterns,
        allowlist: NamePatterns,
        limits: Limits,
    ) -> Self {
        Verifier {
            ca,
            privileged,
            allowlist,
            limits,
            trusted: Arc::new(TrustedChains(quick_cache::sync::Cache::new(TRUSTED_CHAINS))),
        }
    }

    /// A verifier with Choria's default privileged and allow-list patterns.
    pub fn with_defaults(ca: CaBundle, limits: Limits) -> Self {
        Self::new(
            ca,
            NamePatterns::default_privileged(),
            NamePatterns::default_allowlist(),
            limits,
        )
    }

    /// The decode limits requests are read with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Full verification: [`Self::verify_signature`], then the TTL.
    pub fn verify(&self, secure: SecureRequest, now: Now) -> Result<VerifiedRequest, VerifyError> {
        self.verify_signature(secure, now)?.check_ttl(now)
    }

    /// What go-choria's `SecureRequest.Valid()` checks, in its order: caller id, privileged name
    /// or chain plus name plus allow list, then the signature. The TTL is left to
    /// [`SignedRequest::check_ttl`], so a node can filter before it checks freshness, as Choria does.
    pub fn verify_signature(
        &self,
        secure: SecureRequest,
        now: Now,
    ) -> Result<SignedRequest, VerifyError> {
        let malformed =
            |err: &dyn std::fmt::Display| VerifyError::MalformedIdentity(err.to_string());
        let request = secure.request(&self.limits)?;
        let caller = CallerId::parse(&request.envelope.callerid).map_err(|e| malformed(&e))?;
        let key = pubcert_key(&secure.pubcert);
        let (signer, learnt) = match self.remembered(&key, now) {
            Some(signer) => (signer, false),
            None => {
                let chain =
                    CertChain::from_pem(&secure.pubcert, "pubcert", self.limits.max_chain_certs)
                        .map_err(|e| malformed(&e))?;
                (self.check_chain(&chain, now)?, true)
            }
        };
        let info = &signer.info;
        if !signer.privileged {
            self.check_caller_name(&caller, info)?;
        }
        check_signer_key(info)?;
        let signature = decode_base64_lenient(&secure.signature)
            .map_err(|err| VerifyError::BadSignature(format!("signature is not base64: {err}")))?;
        let public_key = signer.key.as_ref().ok_or_else(|| {
            VerifyError::InvalidCertificate(format!("{} has an unusable RSA key", certname(info)))
        })?;
        public_key.verify_sig(secure.signed_bytes(), &signature)
            .map_err(|_| {
                VerifyError::BadSignature(format!(
                    "the message is not signed by {} (RSA PKCS#1 v1.5 SHA-256 over the message bytes)",
                    certname(info)
                ))
            })?;

        let result = SignedRequest {
            signer: certname(info).to_string(),
            privileged: signer.privileged,
            secure,
            request,
            caller,
        };
        // Only a chain that has signed a valid request is remembered, so junk cannot evict
        // real signers.
        if learnt {
            self.trusted.0.insert(key, signer);
        }
        Ok(result)
    }

    /// A remembered signer whose chain is valid at `now`.
    fn remembered(&self, key: &[u8; 32], now: Now) -> Option<Arc<TrustedSigner>> {
        let at = now.unix_seconds();
        self.trusted
            .0
            .get(key)
            .filter(|signer| signer.valid_from <= at && at <= signer.valid_until)
    }

    /// Chain-checks `chain` against the CA at `now` and reads what it says about its leaf.
    fn check_chain(&self, chain: &CertChain, now: Now) -> Result<Arc<TrustedSigner>, VerifyError> {
        let malformed =
            |err: &dyn std::fmt::Display| VerifyError::MalformedIdentity(err.to_string());
        let info = CertInfo::parse(chain.leaf(), "pubcert").map_err(|e| malformed(&e))?;
        let leaf = EndEntityCert::try_from(chain.leaf())
            .map_err(|e| malformed(&format!("pubcert: {e}")))?;
        self.ca
            .verify_client(&leaf, chain.intermediates(), now)
            .map_err(|err| chain_error(err, &info, self.ca.source()))?;
        let (mut valid_from, mut valid_until) = (info.not_before, info.not_after);
        for intermediate in chain.intermediates() {
            let issuer = CertInfo::parse(intermediate, "pubcert").map_err(|e| malformed(&e))?;
            valid_from = valid_from.max(issuer.not_before);
            valid_until = valid_until.min(issuer.not_after);
        }
        let privileged = info.names().any(|name| self.privileged.matches(name));
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &info.public_key).ok();
        Ok(Arc::new(TrustedSigner {
            privileged,
            key,
            info,
            valid_from,
            valid_until,
        }))
    }

    fn check_caller_name(&self, caller: &CallerId, info: &CertInfo) -> Result<(), VerifyError> {
        let identity = caller.identity();
        if !info.names().any(|name| name == identity) {
            return Err(VerifyError::NameMismatch {
                identity: identity.to_string(),
                names: info.names().map(str::to_string).collect(),
            });
        }
        if !self.allowlist.matches(identity) {
            return Err(VerifyError::NotAllowed {
                identity: identity.to_string(),
                allowlist: self.allowlist.as_strings(),
            });
        }
        Ok(())
    }
}

/// The cache key of a `pubcert`: the SHA-256 of its text. The same text always parses to the
/// same chain; other text around the same certificates only makes another entry, and entries
/// are added only after a valid signature, so only a caller who can sign can add them.
fn pubcert_key(pubcert: &str) -> [u8; 32] {
    digest(&SHA256, pubcert.as_bytes())
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

fn certname(info: &CertInfo) -> &str {
    info.certname().unwrap_or("the certificate")
}

/// Choria v1 signs with RSA; keys under [`MIN_RSA_BITS`] are refused by name rather than
/// surfacing later as a bad signature.
fn check_signer_key(info: &CertInfo) -> Result<(), VerifyError> {
    match info.rsa_bits {
        Some(bits) if bits >= MIN_RSA_BITS => Ok(()),
        Some(bits) => Err(VerifyError::InvalidCertificate(format!(
            "{} has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required",
            certname(info)
        ))),
        None => Err(VerifyError::InvalidCertificate(format!(
            "{} does not have an RSA key; Choria v1 signs with RSA",
            certname(info)
        ))),
    }
}

fn chain_error(err: webpki::Error, info: &CertInfo, bundle: &str) -> VerifyError {
    let subject = certname(info);
    match err {
        webpki::Error::UnknownIssuer => VerifyError::UnknownCa {
            subject: subject.to_string(),
            bundle: bundle.to_string(),
        },
        // An issuer named like a trusted CA whose signature does not verify with its key: an
        // impostor CA, so the chain does not lead to a trusted CA either.
        webpki::Error::InvalidSignatureForPublicKey => VerifyError::UnknownCa {
            subject: format!("{subject} (its issuer has a trusted CA's name but not its key)"),
            bundle: bundle.to_string(),
        },
        webpki::Error::CertExpired { time, not_after } => VerifyError::ExpiredCertificate(format!(
            "a certificate in the chain of {subject} expired at {} (now {})",
            date(not_after.as_secs()),
            date(time.as_secs())
        )),
        webpki::Error::CertNotValidYet { time, not_before } => {
            VerifyError::ExpiredCertificate(format!(
                "a certificate in the chain of {subject} is not valid until {} (now {})",
                date(not_before.as_secs()),
                date(time.as_secs())
            ))
        }
        other => {
            VerifyError::InvalidCertificate(format!("the chain of {subject} is invalid: {other:?}"))
        }
    }
}

fn date(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {unix}"))
}

/// Choria's TTL rule: accept iff `now - ttl < time < now + ttl`, both bounds strict.
pub fn check_ttl(request: &Request, now: Now) -> Result<(), VerifyError> {
    let env = &request.envelope;
    let now_ns = i128::try_from(now.since_epoch().as_nanos()).unwrap_or(i128::MAX);
    let time_ns = i128::from(env.time) * 1_000_000_000;
    let ttl_ns = i128::from(env.ttl) * 1_000_000_000;
    if now_ns - ttl_ns < time_ns && time_ns < now_ns + ttl_ns {
        return Ok(());
    }
    Err(VerifyError::TtlExpired {
        time: env.time,
        ttl: env.ttl,
        now: now.unix_seconds(),
    })
}

/// Refuses a request for a collective that is not in `member_of`.
pub fn check_collective(request: &Request, member_of: &[String]) -> Result<(), VerifyError> {
    check_collective_name(&request.envelope.collective, member_of)
}

/// Refuses a request for `collective` unless it is one of `member_of`, in either protocol.
pub fn check_collective_name(collective: &str, member_of: &[String]) -> Result<(), VerifyError> {
    if member_of.iter().any(|c| c == collective) {
        return Ok(());
    }
    Err(VerifyError::WrongCollective {
        collective: collective.to_string(),
        member_of: member_of.to_vec(),
    })
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
