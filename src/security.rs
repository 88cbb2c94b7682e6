//! Who sent a request and may they: PEM loading, chain checks, caller rules, TTL and signing.
//!
//! Only [`Verifier`] builds a [`SignedRequest`], and only its TTL check turns one into a
//! [`VerifiedRequest`], so nothing that was not checked against its realm's CA can reach a publisher.

mod caller;
mod certs;
pub mod identity;
mod keys;
pub mod legacy;
mod patterns;
mod refusal;
pub mod replay;
mod resign;
mod tls_identity;
pub mod v2;
mod verify;

pub use caller::{CallerId, InvalidCallerId};
pub use certs::{CaBundle, CertChain, CertError, CertInfo, load_certs};
pub use keys::{KeyError, Signer};
pub use patterns::{NamePatterns, PatternError};
/// Choria's default name patterns.
pub mod patterns_defaults {
    pub use super::patterns::{DEFAULT_ALLOWLIST as ALLOWLIST, DEFAULT_PRIVILEGED as PRIVILEGED};
}
pub use refusal::{Reason, VerifyError};
pub use resign::{Resign, resigned_window};
pub use tls_identity::{
    IdentityError, check_identity, check_key_mode, check_key_pair, check_privileged_signer,
};
pub use verify::{
    MIN_RSA_BITS, SignedRequest, TRUSTED_CHAINS, VerifiedRequest, Verifier, check_collective,
    check_collective_name, check_ttl,
};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time for validity and TTL checks, in unix nanoseconds so tests can pin it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now(Duration);

impl Now {
    /// The system clock.
    pub fn system() -> Self {
        Now(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default())
    }

    /// A fixed unix time in seconds.
    pub fn at_unix(seconds: u64) -> Self {
        Now(Duration::from_secs(seconds))
    }

    /// Time since the unix epoch.
    pub fn since_epoch(self) -> Duration {
        self.0
    }

    /// Whole unix seconds.
    pub fn unix_seconds(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }

    /// Unix nanoseconds, as Choria protocol v2 times are.
    pub fn unix_nanos(self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }
}
