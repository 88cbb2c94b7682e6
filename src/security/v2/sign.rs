//! Signing as a v2 caller or delegator: an ed25519 seed and the token that vouches for its key.

use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use crate::wire::choria_v2::{Request, SecureRequest};

/// Why a seed or token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SeedError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// An ed25519 key with its token: what a v2 caller, server or delegator signs with.
pub struct V2Signer {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
    token: String,
}

impl std::fmt::Debug for V2Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "V2Signer({})", public_key_hex(&self.pair))
    }
}

/// The hex public key of a pair, as tokens carry it.
pub fn public_key_hex(pair: &Ed25519KeyPair) -> String {
    hex::encode(pair.public_key().as_ref())
}

impl V2Signer {
    /// A signer from a 32-byte seed and its token.
    pub fn from_seed(seed: &[u8; 32], token: String) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| "the seed is not an ed25519 seed".to_string())?;
        Ok(V2Signer {
            pair,
            seed: *seed,
            token: token.trim().to_string(),
        })
    }

    /// Loads go-choria's files: the seed as 64 hex characters, the token as a JWT. Surrounding
    /// white space is ignored in both (go-choria refuses a newline after the seed).
    pub fn from_files(seed: &Path, token: &Path) -> Result<Self, SeedError> {
        let error = |path: &Path, message: String| SeedError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(seed).map_err(|e| error(seed, e.to_string()))?;
        let bytes = hex::decode(text.trim())
            .map_err(|e| error(seed, format!("the seed is not hex: {e}")))?;
        let seed_bytes = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| error(seed, format!("the seed is {} bytes, not 32", bytes.len())))?;
        let jwt = std::fs::read_to_string(token).map_err(|e| error(token, e.to_string()))?;
        Self::from_seed(&seed_bytes, jwt).map_err(|message| error(seed, message))
    }

    /// The seed, for issuing tokens with the same key ([`super::TokenIssuer::chain`]).
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The token that goes beside this key's signatures.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The hex public key.
    pub fn public_key(&self) -> String {
        public_key_hex(&self.pair)
    }

    /// The ed25519 signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.pair.sign(bytes).as_ref().to_vec()
    }

    /// Signs `request` as its caller: the caller token is this signer's, no delegator.
    pub fn sign_request(&self, request: &Request) -> SecureRequest {
        let bytes = request.encode();
        let signature = self.sign(&bytes);
        SecureRequest::new(bytes, signature, self.token.clone(), String::new())
    }

    /// Signs `request` on behalf of the caller whose token is `caller_token`, as a delegator:
    /// the signature is this key's and this signer's token goes in `signer`.
    pub fn sign_delegated(&self, request: &Request, caller_token: &str) -> SecureRequest {
        let bytes = request.encode();
        let signature = self.sign(&bytes);
        SecureRequest::new(
            bytes,
            signature,
            caller_token.to_string(),
            self.token.clone(),
        )
    }
}
