//! The users file: who may log in at the edge with a password (argon2 PHC hashes), and the
//! `up=<user>` caller id a password or token user speaks as.

use std::collections::BTreeMap;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use serde::Deserialize;

use crate::security::CallerId;

/// Longest user name accepted.
const MAX_USER: usize = 64;
/// Most users one users file may hold.
pub const MAX_USERS: usize = 10_000;

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
        for (name, user) in &file.users {
            caller_for(name).map_err(|e| error(e.to_string()))?;
            PasswordHash::new(&user.password)
                .map_err(|e| error(format!("user {name}: password is not a PHC hash: {e}")))?;
        }
        Ok(Users { users: file.users })
    }

    /// Checks a password; the user's record when it matches.
    pub fn check(&self, name: &str, password: &str) -> Result<&User, UsersError> {
        let user = self.users.get(name);
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
}
