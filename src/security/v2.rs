//! Choria protocol v2 identities: ed25519 keys vouched for by JWTs from trusted issuers.
//!
//! A v2 caller signs its request JSON with an ed25519 seed, and sends its token (a
//! `choria_client_id` JWT) beside it; the token is signed by its organization's issuer, or by a
//! chain issuer the organization vouched for, and carries the caller's public key. A delegating
//! signer (Choria's AAA service, or fedgate re-signing en route) signs with its own key and adds
//! its own token, which must hold the `authentication_delegator` permission. [`Issuers`] holds
//! the trusted issuer keys, [`tokens`] parses and checks tokens, [`V2Verifier`] verifies a
//! request as a v2 Choria server does, [`V2Signer`] signs as a caller or as a delegator, and
//! [`TokenIssuer`] issues tokens as an organization or chain issuer (for the development PKI
//! and tests).

mod issue;
mod sign;
pub mod tokens;
mod verify;

pub use issue::TokenIssuer;
pub use sign::{SeedError, V2Signer, public_key_hex};
pub use tokens::{ClientClaims, ClientPermissions, Issuers, ServerClaims, TokenKind};
pub use verify::{SignedV2Request, V2Verifier, check_reply, check_ttl};

#[cfg(test)]
mod tests;
