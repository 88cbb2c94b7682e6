//! Verifying a secure request as a Choria server does, with a distinct reason for each refusal.

use rustls_pki_types::UnixTime;
use webpki::{EndEntityCert, KeyUsage};

use super::{CaBundle, CallerId, CertChain, CertInfo, NamePatterns, Now};
use crate::wire::choria_v1::{Request, SecureRequest};
use crate::wire::{DecodeError, Limits, decode_base64_lenient};

/// A refusal category, stable for counters, audit and `fedgate inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The message does not decode or breaks the schema.
    Malformed,
    /// The signer's chain does not lead to a trusted CA.
    UnknownCa,
    /// A certificate in the chain is expired or not yet valid.
    ExpiredCertificate,
    /// The chain is otherwise invalid (bad EKU, bad CA flags, bad signature on a certificate).
    InvalidCertificate,
    /// The caller's name is not the certificate's CN or a DNS SAN.
    NameMismatch,
    /// The caller's name is not on the certname allow list.
    NotAllowed,
    /// The request signature does not verify.
    BadSignature,
    /// The request is outside its TTL window.
    TtlExpired,
    /// The request is for a collective the receiver is not in.
    WrongCollective,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 9] = [
        Reason::Malformed,
        Reason::UnknownCa,
        Reason::ExpiredCertificate,
        Reason::InvalidCertificate,
        Reason::NameMismatch,
        Reason::NotAllowed,
        Reason::BadSignature,
        Reason::TtlExpired,
        Reason::WrongCollective,
    ];

    /// The reason as a snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownCa => "unknown_ca",
            Reason::ExpiredCertificate => "expired_certificate",
            Reason::InvalidCertificate => "invalid_certificate",
            Reason::NameMismatch => "name_mismatch",
            Reason::NotAllowed => "not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::TtlExpired => "ttl_expired",
            Reason::WrongCollective => "wrong_collective",
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The request does not decode.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// `pubcert` or the caller id cannot be used.
    #[error("malformed: {0}")]
    MalformedIdentity(String),
    /// The chain does not lead to a trusted CA.
    #[error("unknown CA: {subject} is not issued by a CA in {bundle}")]
    UnknownCa {
        /// The signer's certname.
        subject: String,
        /// The CA bundle consulted.
        bundle: String,
    },
    /// A certificate is outside its validity period.
    #[error("expired certificate: {0}")]
    ExpiredCertificate(String),
    /// The chain is invalid for another reason.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The caller name is not in the certificate.
    #[error("name mismatch: caller {identity:?} is not the certificate's CN or SAN ({names:?})")]
    NameMismatch {
        /// Identity taken from the caller id.
        identity: String,
        /// CN and DNS SANs of the certificate.
        names: Vec<String>,
    },
    /// The caller name is not on the allow list.
    #[error("not allowed: {identity:?} does not match the certname allow list {allowlist:?}")]
    NotAllowed {
        /// Identity taken from the caller id.
        identity: String,
        /// The allow-list patterns.
        allowlist: Vec<String>,
    },
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Outside `now-ttl < time < now+ttl`.
    #[error("ttl expired: request time {time} with ttl {ttl}s is outside the window around {now}")]
    TtlExpired {
        /// Request time, unix seconds.
        time: i64,
        /// Request ttl, seconds.
        ttl: i64,
        /// The receiver's clock, unix seconds.
        now: i64,
    },
    /// The collective is not one of the receiver's.
    #[error("wrong collective: {collective:?} is not one of {member_of:?}")]
    WrongCollective {
        /// The request's collective.
        collective: String,
        /// The receiver's collectives.
        member_of: Vec<String>,
    },
}

impl VerifyError {
    /// The refusal category.
    pub fn reason(&self) -> Reason {
        match self {
            VerifyError::Malformed(_) | VerifyError::MalformedIdentity(_) => Reason::Malformed,
            VerifyError::UnknownCa { .. } => Reason::UnknownCa,
            VerifyError::ExpiredCertificate(_) => Reason::ExpiredCertificate,
            VerifyError::InvalidCertificate(_) => Reason::InvalidCertificate,
            VerifyError::NameMismatch { .. } => Reason::NameMismatch,
            VerifyError::NotAllowed { .. } => Reason::NotAllowed,
            VerifyError::BadSignature(_) => Reason::BadSignature,
            VerifyError::TtlExpired { .. } => Reason::TtlExpired,
            VerifyError::WrongCollective { .. } => Reason::WrongCollective,
        }
    }
}

/// A request whose signer chains to the CA, whose caller the signer may speak for, whose
/// signature verifies, and which is inside its TTL. Only [`Verifier`] builds one.
#[derive(Clone, Debug)]
pub struct VerifiedRequest {
    secure: SecureRequest,
    request: Request,
    caller: CallerId,
    signer: String,
    privileged: bool,
}

impl VerifiedRequest {
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
}

/// Checks secure requests against one realm's CA and name rules.
#[derive(Clone, Debug)]
pub struct Verifier {
    ca: CaBundle,
    privileged: NamePatterns,
    allowlist: NamePatterns,
    limits: Limits,
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

    /// Full verification: identity and signature as [`Self::verify_signature`], then the TTL.
    pub fn verify(&self, secure: SecureRequest, now: Now) -> Result<VerifiedRequest, VerifyError> {
        let verified = self.verify_signature(secure, now)?;
        check_ttl(&verified.request, now)?;
        Ok(verified)
    }

    /// What go-choria's `SecureRequest.Valid()` checks, in its order: caller id, privileged name
    /// or chain plus name plus allow list, then the signature. The TTL is not checked here, so a
    /// node can filter before it checks freshness, as Choria does; [`Self::verify`] adds it.
    pub fn verify_signature(
        &self,
        secure: SecureRequest,
        now: Now,
    ) -> Result<VerifiedRequest, VerifyError> {
        let request = secure.request(&self.limits)?;
        let caller = CallerId::parse(&request.envelope.callerid)
            .map_err(|err| VerifyError::MalformedIdentity(err.to_string()))?;
        let chain = CertChain::from_pem(&secure.pubcert, "pubcert", self.limits.max_chain_certs)
            .map_err(|err| VerifyError::MalformedIdentity(err.to_string()))?;
        let info = CertInfo::parse(chain.leaf(), "pubcert")
            .map_err(|err| VerifyError::MalformedIdentity(err.to_string()))?;
        let leaf = EndEntityCert::try_from(chain.leaf())
            .map_err(|err| VerifyError::MalformedIdentity(format!("pubcert: {err}")))?;

        let privileged = info.names().any(|name| self.privileged.matches(name));
        self.verify_chain(&leaf, &chain, &info, now)?;
        if !privileged {
            self.check_caller_name(&caller, &info)?;
        }
        let signature = decode_base64_lenient(&secure.signature)
            .map_err(|err| VerifyError::BadSignature(format!("signature is not base64: {err}")))?;
        leaf.verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            secure.signed_bytes(),
            &signature,
        )
        .map_err(|err| {
            VerifyError::BadSignature(format!("{err:?} (RSA PKCS#1 v1.5 SHA-256 over message)"))
        })?;

        Ok(VerifiedRequest {
            signer: info.certname().unwrap_or_default().to_string(),
            secure,
            request,
            caller,
            privileged,
        })
    }

    fn verify_chain(
        &self,
        leaf: &EndEntityCert<'_>,
        chain: &CertChain,
        info: &CertInfo,
        now: Now,
    ) -> Result<(), VerifyError> {
        let time = UnixTime::since_unix_epoch(now.since_epoch());
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            self.ca.anchors(),
            chain.intermediates(),
            time,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|err| match err {
            webpki::Error::UnknownIssuer => VerifyError::UnknownCa {
                subject: info.certname().unwrap_or("certificate").to_string(),
                bundle: self.ca.source().to_string(),
            },
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                VerifyError::ExpiredCertificate(format!("{err:?}"))
            }
            other => VerifyError::InvalidCertificate(format!("{other:?}")),
        })
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
    let collective = &request.envelope.collective;
    if member_of.iter().any(|c| c == collective) {
        return Ok(());
    }
    Err(VerifyError::WrongCollective {
        collective: collective.clone(),
        member_of: member_of.to_vec(),
    })
}
