//! The federation registry: policies, identity rules, users and membership, published as
//! numbered revisions in JetStream key-value buckets and followed by every instance.
//!
//! - [`set`]: a revision's documents and the directory layout `fedgate registry push` takes.
//! - [`store`]: the buckets, manifests, pushes and status reports.
//! - [`sign`]: each revision's author signature, and the authors an instance trusts.
//! - [`cache`]: the last good revision on local disk, to start and serve without the registry.
//! - [`follow`]: an instance's side: apply each new revision atomically, or refuse it and say
//!   why.

pub mod cache;
pub mod follow;
pub mod set;
pub mod sign;
pub mod store;
#[cfg(test)]
mod tests;

pub use follow::{Follower, Start};
pub use set::Set;
pub use sign::{AuthorSigner, Authors, SignatureError, Verified};
pub use store::{Manifest, Parent, Registry, SCHEMA, Status};

/// Checks a bucket name prefix; the check lives with the `[registry]` section it validates.
pub use crate::config::check_registry_prefix as check_prefix;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::rules::Rules;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry's NATS network or JetStream could not be used.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// A set directory or document is unusable.
    #[error("{}: {problem}", path.display())]
    Set {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A manifest or the documents it names are unusable.
    #[error("{0}")]
    Manifest(String),
    /// A manifest of a schema this fedgate does not understand.
    #[error(
        "revision {revision} uses registry schema {schema}; this fedgate ({}) understands schema {}: upgrade it to use this revision",
        env!("CARGO_PKG_VERSION"),
        store::SCHEMA
    )]
    Schema {
        /// The revision.
        revision: u64,
        /// Its schema.
        schema: u32,
    },
    /// A manifest no trusted author signed.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// A head older than the revision this instance already ran.
    #[error(
        "revision {revision} is older than revision {cached}, which this instance already ran: revisions only grow, so the registry's head is stale or an old revision published again"
    )]
    Older {
        /// The head's revision.
        revision: u64,
        /// The cache's revision.
        cached: u64,
    },
    /// No such revision.
    #[error("there is no revision {0}")]
    NoRevision(u64),
    /// Another push committed between reading the head and writing it.
    #[error("another push changed the registry meanwhile; nothing was published, run it again")]
    Conflict,
    /// The set does not validate against the config.
    #[error("{0}")]
    Invalid(String),
    /// The local cache could not be used.
    #[error("cache {}: {problem}", path.display())]
    Cache {
        /// The cache directory or file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

impl RegistryError {
    /// A stable code for why a revision was refused, for metrics and status reports.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Signature(e) => e.code(),
            RegistryError::Schema { .. } => "schema",
            RegistryError::Older { .. } => "older",
            RegistryError::Invalid(_) => "invalid",
            RegistryError::Unreachable(_) => "unreachable",
            RegistryError::Cache { .. } => "cache",
            RegistryError::Set { .. }
            | RegistryError::Manifest(_)
            | RegistryError::NoRevision(_)
            | RegistryError::Conflict => "manifest",
        }
    }
}

/// A set checked exactly as start-up checks a config: the completed config and its rules.
#[derive(Debug)]
pub struct Validated {
    /// The config completed with the set.
    pub config: Config,
    /// The rules it decides with.
    pub rules: Rules,
}

/// Validates the set in directory `dir` as revision `revision` of the registry that `base`
/// (read from `path`) follows.
pub fn validate(
    base: &Config,
    path: &Path,
    dir: &Path,
    revision: u64,
) -> Result<Validated, RegistryError> {
    let config = base
        .with_set(dir, revision, path)
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let rules = Rules::load(&config).map_err(RegistryError::Invalid)?;
    Ok(Validated { config, rules })
}

/// Validates a set held in memory, through a temporary directory.
pub fn validate_set(
    base: &Config,
    path: &Path,
    set: &Set,
    revision: u64,
) -> Result<Validated, RegistryError> {
    let scratch = tempfile::tempdir().map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let dir = scratch.path().join("set");
    set.write(&dir)?;
    validate(base, path, &dir, revision)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    crate::edge::auth::unix(std::time::SystemTime::now())
}

/// The status table: one row per instance.
pub fn render_status(head: Option<u64>, statuses: &[Status], now: u64) -> String {
    let mut out = format!(
        "registry head: {}\n{:<24} {:>8} {:<9} {:>12} {:>12}  notes\n",
        head.map_or("none".to_string(), |h| format!("revision {h}")),
        "instance",
        "revision",
        "source",
        "heard",
        "reported"
    );
    for status in statuses {
        let ago = |t: u64| {
            if t == 0 {
                "never".to_string()
            } else {
                format!("{}s ago", now.saturating_sub(t))
            }
        };
        let mut notes = Vec::new();
        if head.is_some_and(|h| h != status.revision) {
            notes.push("behind the head".to_string());
        }
        if let Some(refused) = &status.refused {
            notes.push(format!(
                "refused revision {}: {}",
                refused.revision, refused.reason
            ));
        }
        if !status.membership_pending.is_empty() {
            notes.push(format!(
                "membership not yet served: {}",
                status.membership_pending.join(", ")
            ));
        }
        out.push_str(&format!(
            "{:<24} {:>8} {:<9} {:>12} {:>12}  {}\n",
            status.instance,
            status.revision,
            status.source,
            ago(status.heard),
            ago(status.reported),
            notes.join("; ")
        ));
    }
    out
}
