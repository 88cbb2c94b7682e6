//! How fedgate proves itself to a NATS server besides its TLS certificate: a creds file, an
//! nkey seed, a user and password, or a token, each read from a file and never shown.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest secret file read: a creds file is about 1 KiB, the rest far less.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A network's `auth` block: one method, its secret named by file (so a config holds no secret).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    /// A decentralized-auth `.creds` file: the user JWT and its nkey seed.
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// A file holding a user nkey seed (`SU...`).
    #[serde(default)]
    pub nkey: Option<PathBuf>,
    /// The user name; goes with `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding `user`'s password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A password written inline: refused, its value dropped unread.
    #[serde(default)]
    #[schemars(skip)]
    pub password: Option<Inline>,
    /// A token written inline: refused, its value dropped unread.
    #[serde(default)]
    #[schemars(skip)]
    pub token: Option<Inline>,
}

/// A secret written in the config where a file is expected; its value is never kept, so no
/// error or Debug output can show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inline;

impl<'de> Deserialize<'de> for Inline {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Inline, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Inline)
    }
}

/// The one method an `auth` block names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method<'a> {
    /// A `.creds` file.
    Creds(&'a Path),
    /// A user nkey seed file.
    Nkey(&'a Path),
    /// A user name and a password file.
    UserPassword {
        /// The user name.
        user: &'a str,
        /// The password file.
        password: &'a Path,
    },
    /// A token file.
    Token(&'a Path),
}

/// Why an `auth` block cannot be used; no variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Two methods at once.
    #[error("names both `{first}` and `{second}`: use one method per network")]
    TwoMethods {
        /// The first method's key.
        first: &'static str,
        /// The second method's key.
        second: &'static str,
    },
    /// An empty block.
    #[error("names no method: set `creds`, `nkey`, `user` with `password_file`, or `token_file`")]
    NoMethod,
    /// A secret written in the config itself.
    #[error(
        "`{key}` is written inline: put it in a file (mode 0600) and name that with `{key}_file`"
    )]
    InlineSecret {
        /// `password` or `token`.
        key: &'static str,
    },
    /// An empty `user`.
    #[error("`user` is empty")]
    EmptyUser,
    /// `user` without `password_file`, or the reverse.
    #[error("`{given}` needs `{missing}`")]
    Incomplete {
        /// The key that is set.
        given: &'static str,
        /// The key it needs.
        missing: &'static str,
    },
    /// A secret file could not be read.
    #[error("`{field}`: cannot read {}: {reason}", path.display())]
    Unreadable {
        /// The key naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A secret file was read but is not usable.
    #[error("`{field}`: {} {problem}", path.display())]
    Unusable {
        /// The key naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl NatsAuth {
    /// The one method this block names, or why it names none or two.
    pub fn method(&self) -> Result<Method<'_>, AuthError> {
        for (key, inline) in [("password", self.password), ("token", self.token)] {
            if inline.is_some() {
                return Err(AuthError::InlineSecret { key });
            }
        }
        let user_password = match (&self.user, &self.password_file) {
            (Some(user), _) if user.is_empty() => return Err(AuthError::EmptyUser),
            (Some(user), Some(password)) => Some(Method::UserPassword { user, password }),
            (Some(_), None) => {
                return Err(AuthError::Incomplete {
                    given: "user",
                    missing: "password_file",
                });
            }
            (None, Some(_)) => {
                return Err(AuthError::Incomplete {
                    given: "password_file",
                    missing: "user",
                });
            }
            (None, None) => None,
        };
        let named = [
            ("creds", self.creds.as_deref().map(Method::Creds)),
            ("nkey", self.nkey.as_deref().map(Method::Nkey)),
            ("user", user_password),
            ("token_file", self.token_file.as_deref().map(Method::Token)),
        ];
        let mut set = named
            .into_iter()
            .filter_map(|(key, method)| Some((key, method?)));
        match (set.next(), set.next()) {
            (None, _) => Err(AuthError::NoMethod),
            (Some((_, method)), None) => Ok(method),
            (Some((first, _)), Some((second, _))) => Err(AuthError::TwoMethods { first, second }),
        }
    }

    /// `options` authenticating with this block's method, its secret read from its file: a
    /// file private to its owner, within [`MAX_SECRET_BYTES`], in the form its method needs.
    /// The secret goes only into `options`, whose Debug does not show it.
    pub fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, AuthError> {
        Ok(match self.method()? {
            Method::Creds(path) => options
                .credentials(&read_secret("creds", path)?)
                .map_err(|e| unusable("creds", path, format!("is not a creds file: {e}")))?,
            Method::Nkey(path) => options.nkey(user_seed(path)?),
            Method::UserPassword { user, password } => {
                options.user_and_password(user.to_string(), one_line("password_file", password)?)
            }
            Method::Token(path) => options.token(one_line("token_file", path)?),
        })
    }

    /// Checks the block as [`NatsAuth::apply`] would use it, without connecting.
    pub fn check(&self) -> Result<(), AuthError> {
        self.apply(async_nats::ConnectOptions::new()).map(drop)
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Creds(path) => write!(f, "the creds file {}", path.display()),
            Method::Nkey(path) => write!(f, "the nkey seed in {}", path.display()),
            Method::UserPassword { user, password } => {
                write!(f, "user {user} with the password in {}", password.display())
            }
            Method::Token(path) => write!(f, "the token in {}", path.display()),
        }
    }
}

fn unusable(field: &'static str, path: &Path, problem: impl Into<String>) -> AuthError {
    AuthError::Unusable {
        field,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The whole file, when it is private to its owner and small.
fn read_secret(field: &'static str, path: &Path) -> Result<String, AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |e: std::io::Error| AuthError::Unreadable {
        field,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unusable(field, path, "is not a file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unusable(
            field,
            path,
            format!("is readable by group or others (mode {mode:o}); chmod 600 it"),
        ));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(unusable(
            field,
            path,
            format!("is larger than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

/// A password or token: one non-empty line (a final line ending is not part of it).
fn one_line(field: &'static str, path: &Path) -> Result<String, AuthError> {
    let text = read_secret(field, path)?;
    let line = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if line.is_empty() {
        return Err(unusable(field, path, "is empty"));
    }
    if line.contains(['\n', '\r']) {
        return Err(unusable(field, path, "must hold a single line"));
    }
    Ok(line.to_string())
}

/// A user nkey seed, the file's only content.
fn user_seed(path: &Path) -> Result<String, AuthError> {
    let text = read_secret("nkey", path)?;
    let seed = text.trim();
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| {
        unusable(
            "nkey",
            path,
            "does not hold an nkey seed (one line starting with S, as `nk -gen user` writes)",
        )
    })?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(unusable(
            "nkey",
            path,
            format!(
                "holds a seed of type {:?}; a client signs in with a user seed (SU...)",
                pair.key_pair_type()
            ),
        ));
    }
    Ok(seed.to_string())
}

#[cfg(test)]
mod tests;
