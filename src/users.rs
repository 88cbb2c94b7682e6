//! The users file: who may log in at the edge with a password (argon2 PHC hashes), the
//! `up=<user>` caller id a password or token user speaks as, and which tokens are revoked
//! before they expire (by token id, by user, or issued before a time).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use serde::Deserialize;

use crate::security::CallerId;

/// Longest user name accepted.
const MAX_USER: usize = 64;
/// Most users one users file may hold.
pub const MAX_USERS: usize = 10_000;
/// Most token ids and users one `[revoked]` table may hold, each.
pub const MAX_REVOKED: usize = 100_000;

/// Why a user name, the users file or a password check was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// A user name that cannot be a caller id, or a password that could not be hashed
    /// (worded as the token error the edge has always reported).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Wrong user or password (deliberately not saying which).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// The users file could not be used.
    #[error("users file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The caller id of a token or password user: `up=<user>`.
pub fn caller_for(user: &str) -> Result<CallerId, UsersError> {
    if user.is_empty()
        || user.len() > MAX_USER
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(UsersError::Invalid(format!(
            "user name {:?} must be 1 to {MAX_USER} letters, digits, '.', '_', '-' or '@'",
            user.chars().take(MAX_USER).collect::<String>()
        )));
    }
    CallerId::parse(&format!("up={user}")).map_err(|e| UsersError::Invalid(e.to_string()))
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
    /// No logins, and every token of this user is refused, also on open sockets.
    #[serde(default)]
    pub disabled: bool,
    /// Tokens of this user issued before this time (Unix seconds) are refused.
    #[serde(default)]
    pub tokens_after: Option<u64>,
}

/// Tokens refused before they expire, whoever they were issued to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Token ids (`jti`).
    #[serde(default)]
    pub jti: BTreeSet<String>,
    /// Users every token of which is refused, also users not in `[users]` (tokens from
    /// `fedgate token issue`).
    #[serde(default)]
    pub users: BTreeSet<String>,
    /// Every token issued before this time (Unix seconds) is refused.
    #[serde(default)]
    pub tokens_after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    revoked: Revoked,
}

/// The users who may log in with a password, and the tokens revoked.
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
    revoked: Revoked,
}

/// What a token shows of itself to a revocation check.
#[derive(Clone, Copy, Debug)]
pub struct TokenFacts<'a> {
    /// Its user (`sub`).
    pub user: &'a str,
    /// Its id (`jti`).
    pub jti: &'a str,
    /// When it was issued, Unix seconds (`iat`).
    pub issued: u64,
    /// Whether `POST /login` issued it for a password of this file.
    pub password: bool,
}

/// Why a token is revoked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Revocation {
    /// Its id is in `[revoked] jti`.
    #[error("token {0} is revoked")]
    Token(String),
    /// Its user is in `[revoked] users`.
    #[error("every token of user {0} is revoked")]
    User(String),
    /// Its user is `disabled`.
    #[error("user {0} is disabled")]
    Disabled(String),
    /// It was issued before `tokens_after` (the user's or `[revoked]`'s).
    #[error("tokens issued before {0} are revoked")]
    IssuedBefore(u64),
    /// A password token whose user is no longer in the users file.
    #[error("user {0} is no longer in the users file")]
    Removed(String),
}

/// Compared against when the user does not exist, so a login takes as long either way.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no such user").unwrap_or_default());

impl Users {
    /// Loads a TOML users file: `[users.<name>] password = "$argon2id$..."`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let error = |message: String| UsersError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        if file.users.len() > MAX_USERS {
            return Err(error(format!("more than {MAX_USERS} users")));
        }
        let revoked = &file.revoked;
        if revoked.jti.len() > MAX_REVOKED || revoked.users.len() > MAX_REVOKED {
            return Err(error(format!(
                "[revoked] holds more than {MAX_REVOKED} token ids or users"
            )));
        }
        if let Some(bad) = revoked.jti.iter().find(|jti| !is_token_id(jti)) {
            return Err(error(format!(
                "[revoked] jti {:?} is not a token id (1 to 64 letters, digits, '-' or '_')",
                bad.chars().take(64).collect::<String>()
            )));
        }
        for name in &revoked.users {
            caller_for(name).map_err(|e| error(format!("[revoked] users: {e}")))?;
        }
        for (name, user) in &file.users {
            caller_for(name).map_err(|e| error(e.to_string()))?;
            PasswordHash::new(&user.password)
                .map_err(|e| error(format!("user {name}: password is not a PHC hash: {e}")))?;
        }
        Ok(Users {
            users: file.users,
            revoked: file.revoked,
        })
    }

    /// Checks a password; the user's record when it matches and the user is not disabled.
    pub fn check(&self, name: &str, password: &str) -> Result<&User, UsersError> {
        let user = self.users.get(name).filter(|u| !u.disabled);
        let hash = user.map_or(DUMMY_HASH.as_str(), |u| u.password.as_str());
        let parsed = PasswordHash::new(hash).map_err(|_| UsersError::BadCredentials)?;
        let good = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match user {
            Some(user) if good => Ok(user),
            _ => Err(UsersError::BadCredentials),
        }
    }
}

impl Users {
    /// Why a token is revoked by this file, if it is.
    pub fn revocation(&self, token: &TokenFacts<'_>) -> Option<Revocation> {
        let user = self.users.get(token.user);
        if self.revoked.jti.contains(token.jti) {
            return Some(Revocation::Token(token.jti.to_string()));
        }
        if self.revoked.users.contains(token.user) {
            return Some(Revocation::User(token.user.to_string()));
        }
        if user.is_some_and(|u| u.disabled) {
            return Some(Revocation::Disabled(token.user.to_string()));
        }
        let after = [self.revoked.tokens_after, user.and_then(|u| u.tokens_after)];
        if let Some(after) = after.into_iter().flatten().find(|&t| token.issued < t) {
            return Some(Revocation::IssuedBefore(after));
        }
        if token.password && user.is_none() {
            return Some(Revocation::Removed(token.user.to_string()));
        }
        None
    }
}

/// Whether `jti` can be a token id: 1 to 64 letters, digits, `-` or `_`.
fn is_token_id(jti: &str) -> bool {
    (1..=64).contains(&jti.len())
        && jti
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// An argon2id PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| UsersError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(UsersError::BadCredentials)
        ));
        assert!(matches!(
            users.check("mallory", "s3cret"),
            Err(UsersError::BadCredentials)
        ));
        std::fs::write(&path, "[users.alice]\npassword = \"plain\"\n").unwrap();
        assert!(Users::load(&path).unwrap_err().to_string().contains("PHC"));
    }

    fn facts<'a>(user: &'a str, jti: &'a str, issued: u64, password: bool) -> TokenFacts<'a> {
        TokenFacts {
            user,
            jti,
            issued,
            password,
        }
    }

    #[test]
    fn tokens_are_revoked_by_id_user_time_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(
            &path,
            format!(
                "[users.alice]\npassword = {hash:?}\ntokens_after = 1000\n\n\
                 [users.dave]\npassword = {hash:?}\ndisabled = true\n\n\
                 [users.erin]\npassword = {hash:?}\n\n\
                 [revoked]\njti = [\"abc123\"]\nusers = [\"bot\"]\n"
            ),
        )
        .unwrap();
        let users = Users::load(&path).unwrap();
        let revoked = |f: TokenFacts<'_>| users.revocation(&f);
        assert_eq!(revoked(facts("alice", "x", 1000, true)), None);
        assert_eq!(
            revoked(facts("alice", "x", 999, true)),
            Some(Revocation::IssuedBefore(1000))
        );
        assert_eq!(
            revoked(facts("erin", "abc123", 5000, true)),
            Some(Revocation::Token("abc123".into()))
        );
        assert_eq!(
            revoked(facts("bot", "y", 5000, false)),
            Some(Revocation::User("bot".into()))
        );
        assert_eq!(
            revoked(facts("dave", "z", 5000, true)),
            Some(Revocation::Disabled("dave".into()))
        );
        // A disabled user cannot log in either.
        assert!(users.check("dave", "s3cret").is_err());
        // A password token needs its user in the file; one from `fedgate token issue` does not.
        assert_eq!(
            revoked(facts("frank", "w", 5000, true)),
            Some(Revocation::Removed("frank".into()))
        );
        assert_eq!(revoked(facts("frank", "w", 5000, false)), None);
        std::fs::write(&path, "[revoked]\njti = [\"a b\"]\n").unwrap();
        assert!(
            Users::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not a token id")
        );
    }
}
