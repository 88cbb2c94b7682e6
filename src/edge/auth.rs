//! Who is on the other end of a socket: tokens fedgate issues (EdDSA JWTs) to the users of the
//! users file ([`crate::users`]) who log in for one, and client certificates from the edge CA.
//!
//! A token carries the user as `sub`, the caller id fedgate gives it (`up=<user>`, as Choria's
//! AAA service names password users), expiry, and optionally the collectives it may use. Tokens
//! are never logged; only their `jti` is. A token `POST /login` issues says so (`amr` `pwd`),
//! and a token is revoked before it expires by the users file in force ([`Users::revocation`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::users::UsersError;
pub use crate::users::{MAX_USERS, Revocation, TokenFacts, User, Users, caller_for, hash_password};

/// The `iss` and `aud` of fedgate's tokens.
const ISSUER: &str = "fedgate";
const AUDIENCE: &str = "fedgate-edge";

/// The claims of an edge token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The caller id requests are made as, before identity mapping.
    pub callerid: String,
    /// Issuer: `fedgate`.
    pub iss: String,
    /// Audience: `fedgate-edge`.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Token id, for logs and audit.
    pub jti: String,
    /// Collectives the token may reach; none means all that policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collectives: Option<Vec<String>>,
    /// How the user authenticated (RFC 8176): `["pwd"]` for a token of `POST /login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
}

/// The `amr` of a token issued for a password.
const PASSWORD: &str = "pwd";

impl Claims {
    /// What a revocation check looks at.
    pub fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            user: &self.sub,
            jti: &self.jti,
            issued: self.iat,
            password: self
                .amr
                .as_ref()
                .is_some_and(|amr| amr.iter().any(|m| m == PASSWORD)),
        }
    }
}

/// Why a token or login was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file could not be used.
    #[error("token key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token does not verify or is malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Wrong user or password (deliberately not saying which).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// The users file could not be used.
    #[error("users file {path}: {message}")]
    Users {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl From<UsersError> for AuthError {
    fn from(error: UsersError) -> AuthError {
        match error {
            UsersError::Invalid(message) => AuthError::Invalid(message),
            UsersError::BadCredentials => AuthError::BadCredentials,
            UsersError::File { path, message } => AuthError::Users { path, message },
        }
    }
}

/// Signs and checks edge tokens with one Ed25519 key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// A new Ed25519 private key as PKCS#8 PEM, for `fedgate token keygen`.
    pub fn generate_pem() -> Result<String, AuthError> {
        let key = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let pem = pem_encode("PRIVATE KEY", key.as_ref());
        Ok(pem)
    }

    /// Loads the PKCS#8 PEM Ed25519 key at `path`.
    pub fn load(path: &Path) -> Result<TokenKeys, AuthError> {
        let error = |message: String| AuthError::Key {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|e| error(format!("not a PKCS#8 PEM key: {e}")))?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| error(format!("not an Ed25519 key: {e}")))?;
        use aws_lc_rs::signature::KeyPair;
        Ok(TokenKeys {
            encoding: EncodingKey::from_ed_der(der.secret_pkcs8_der()),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        })
    }

    /// Issues a token for `user`, valid for `ttl` from `now`.
    pub fn issue(
        &self,
        user: &str,
        ttl: Duration,
        collectives: Option<Vec<String>>,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        self.sign(user, ttl, collectives, now, None)
    }

    /// Issues a token for `user` of the users file, who gave a password: it stays valid only
    /// while the user is in the file in force.
    pub fn issue_login(
        &self,
        user: &str,
        ttl: Duration,
        collectives: Option<Vec<String>>,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        self.sign(user, ttl, collectives, now, Some(vec![PASSWORD.into()]))
    }

    fn sign(
        &self,
        user: &str,
        ttl: Duration,
        collectives: Option<Vec<String>>,
        now: SystemTime,
        amr: Option<Vec<String>>,
    ) -> Result<String, AuthError> {
        let caller = caller_for(user)?;
        let iat = unix(now);
        let claims = Claims {
            sub: user.to_string(),
            callerid: caller.as_str().to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp: iat + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            collectives,
            amr,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Checks a token's signature, issuer, audience and expiry at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        // Expiry is checked below against `now`, without leeway.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.exp <= unix(now) {
            return Err(AuthError::Expired);
        }
        let caller = caller_for(&claims.sub)?;
        if caller.as_str() != claims.callerid {
            return Err(AuthError::Invalid(
                "callerid does not match the subject".into(),
            ));
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// PEM text of `der` under `label`.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_keys() -> TokenKeys {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        std::fs::write(&path, TokenKeys::generate_pem().unwrap()).unwrap();
        TokenKeys::load(&path).unwrap()
    }

    #[test]
    fn tokens_verify_until_they_expire() {
        let keys = new_keys();
        let now = SystemTime::now();
        let token = keys
            .issue(
                "alice",
                Duration::from_secs(60),
                Some(vec!["london".into()]),
                now,
            )
            .unwrap();
        let claims = keys.verify(&token, now).unwrap();
        assert_eq!(claims.callerid, "up=alice");
        assert_eq!(claims.collectives, Some(vec!["london".to_string()]));
        assert!(matches!(
            keys.verify(&token, now + Duration::from_secs(60)),
            Err(AuthError::Expired)
        ));
        // Another key's token, and an edited one, do not verify.
        let other = new_keys()
            .issue("alice", Duration::from_secs(60), None, now)
            .unwrap();
        assert!(matches!(
            keys.verify(&other, now),
            Err(AuthError::Invalid(_))
        ));
        let mut edited = token.clone();
        edited.replace_range(edited.len() - 3.., "AAA");
        assert!(keys.verify(&edited, now).is_err());
    }
}
