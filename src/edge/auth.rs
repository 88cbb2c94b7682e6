//! Who is on the other end of a socket: tokens fedgate issues (EdDSA JWTs), users with argon2
//! password hashes who log in for one, and client certificates from the edge CA.
//!
//! A token carries the user as `sub`, the caller id fedgate gives it (`up=<user>`, as Choria's
//! AAA service names password users), expiry, and optionally the collectives it may use. Tokens
//! are never logged; only their `jti` is.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::security::CallerId;

/// The `iss` and `aud` of fedgate's tokens.
const ISSUER: &str = "fedgate";
const AUDIENCE: &str = "fedgate-edge";
/// Longest user name accepted.
const MAX_USER: usize = 64;
/// Most users one users file may hold.
pub const MAX_USERS: usize = 10_000;

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

/// The caller id of a token or password user: `up=<user>`.
pub fn caller_for(user: &str) -> Result<CallerId, AuthError> {
    if user.is_empty()
        || user.len() > MAX_USER
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(AuthError::Invalid(format!(
            "user name {:?} must be 1 to {MAX_USER} letters, digits, '.', '_', '-' or '@'",
            user.chars().take(MAX_USER).collect::<String>()
        )));
    }
    CallerId::parse(&format!("up={user}")).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
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

/// One user of the users file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The argon2 PHC hash of the password (`fedgate token hash-password`).
    pub password: String,
    /// Collectives this user's tokens may reach; none means all that policy allows.
    #[serde(default)]
    pub collectives: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, User>,
}

/// The users who may log in with a password.
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
}

/// Compared against when the user does not exist, so a login takes as long either way.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no such user").unwrap_or_default());

impl Users {
    /// Loads a TOML users file: `[users.<name>] password = "$argon2id$..."`.
    pub fn load(path: &Path) -> Result<Users, AuthError> {
        let error = |message: String| AuthError::Users {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        if file.users.len() > MAX_USERS {
            return Err(error(format!("more than {MAX_USERS} users")));
        }
        for (name, user) in &file.users {
            caller_for(name).map_err(|e| error(e.to_string()))?;
            PasswordHash::new(&user.password)
                .map_err(|e| error(format!("user {name}: password is not a PHC hash: {e}")))?;
        }
        Ok(Users { users: file.users })
    }

    /// Checks a password; the user's record when it matches.
    pub fn check(&self, name: &str, password: &str) -> Result<&User, AuthError> {
        let user = self.users.get(name);
        let hash = user.map_or(DUMMY_HASH.as_str(), |u| u.password.as_str());
        let parsed = PasswordHash::new(hash).map_err(|_| AuthError::BadCredentials)?;
        let good = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match user {
            Some(user) if good => Ok(user),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

/// An argon2id PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Invalid(e.to_string()))
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

    #[test]
    fn user_names_become_up_caller_ids() {
        assert_eq!(
            caller_for("bob@example").unwrap().as_str(),
            "up=bob@example"
        );
        assert!(caller_for("bob smith").is_err());
        assert!(caller_for("").is_err());
        assert!(caller_for("a=b").is_err());
    }

    #[test]
    fn passwords_check_against_argon2_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(
            &path,
            format!("[users.alice]\npassword = {hash:?}\ncollectives = [\"london\"]\n"),
        )
        .unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.check("alice", "s3cret").is_ok());
        assert!(matches!(
            users.check("alice", "wrong"),
            Err(AuthError::BadCredentials)
        ));
        assert!(matches!(
            users.check("mallory", "s3cret"),
            Err(AuthError::BadCredentials)
        ));
        std::fs::write(&path, "[users.alice]\npassword = \"plain\"\n").unwrap();
        assert!(Users::load(&path).unwrap_err().to_string().contains("PHC"));
    }
}
