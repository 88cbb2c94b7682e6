//! Why a request was refused: one stable reason per kind of refusal, with the details.

use crate::wire::DecodeError;

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
    /// A bare request with no signature at all.
    Unsigned,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 10] = [
        Reason::Malformed,
        Reason::UnknownCa,
        Reason::ExpiredCertificate,
        Reason::InvalidCertificate,
        Reason::NameMismatch,
        Reason::NotAllowed,
        Reason::BadSignature,
        Reason::TtlExpired,
        Reason::WrongCollective,
        Reason::Unsigned,
    ];

    /// Position in [`Self::ALL`], for arrays of counters.
    pub const fn index(self) -> usize {
        self as usize
    }

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
            Reason::Unsigned => "unsigned",
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
    /// A bare request layer, which carries no signature.
    #[error("unsigned: {0}")]
    Unsigned(String),
    /// A v2 token names an organization whose issuer is not trusted here.
    #[error("unknown issuer: {0}")]
    UnknownIssuer(String),
    /// A v2 token, or its chain issuer, is outside its validity period.
    #[error("expired token: {0}")]
    ExpiredToken(String),
    /// A v2 token does not verify, or is not the kind of token its place needs.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A v2 token lacks the permission its use needs (fleet management, delegation).
    #[error("not allowed: {0}")]
    NotPermitted(String),
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
            VerifyError::UnknownCa { .. } | VerifyError::UnknownIssuer(_) => Reason::UnknownCa,
            VerifyError::ExpiredToken(_) => Reason::ExpiredCertificate,
            VerifyError::InvalidToken(_) => Reason::InvalidCertificate,
            VerifyError::NotPermitted(_) => Reason::NotAllowed,
            VerifyError::ExpiredCertificate(_) => Reason::ExpiredCertificate,
            VerifyError::InvalidCertificate(_) => Reason::InvalidCertificate,
            VerifyError::NameMismatch { .. } => Reason::NameMismatch,
            VerifyError::NotAllowed { .. } => Reason::NotAllowed,
            VerifyError::BadSignature(_) => Reason::BadSignature,
            VerifyError::TtlExpired { .. } => Reason::TtlExpired,
            VerifyError::WrongCollective { .. } => Reason::WrongCollective,
            VerifyError::Unsigned(_) => Reason::Unsigned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_the_list() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }
}
