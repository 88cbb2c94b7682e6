//! What the buckets hold: revision manifests and the documents they pin, and instance status
//! reports; a manifest is read only in a schema this fedgate knows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::RegistryError;
use crate::registry::set::{Set, digest};
use crate::registry::sign::Signature;

/// The manifest schema this fedgate writes: signed manifests.
pub const SCHEMA: u32 = 2;
/// The schema of manifests from before revisions were signed: read (for history), never
/// applied.
pub const UNSIGNED_SCHEMA: u32 = 1;
/// Largest manifest, bytes.
pub(super) const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// One revision: what it holds and who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format; a reader refuses a newer one.
    pub schema: u32,
    /// Revision number, from 1.
    pub revision: u64,
    /// The revision this one replaced (0 for the first).
    pub parent: u64,
    /// Unix seconds.
    pub created: u64,
    /// The author whose key signed it, by the name instances trust it under
    /// (`[registry] authors`); `user@host` in unsigned manifests of schema 1.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// Each document by path.
    pub documents: BTreeMap<String, Document>,
    /// The author's signature over everything above ([`crate::registry::sign`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl Manifest {
    /// Whether `set` holds exactly this revision's documents, byte for byte.
    pub fn describes(&self, set: &Set) -> bool {
        self.documents.len() == set.documents().len()
            && set.documents().iter().all(|(path, bytes)| {
                self.documents
                    .get(path)
                    .is_some_and(|d| d.sha256 == digest(bytes))
            })
    }
}

/// Where a revision's document is and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The value's sequence in its bucket.
    pub sequence: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Size, bytes.
    pub bytes: u64,
}

/// An instance's report of which revision it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The instance's name.
    pub instance: String,
    /// fedgate's version.
    pub version: String,
    /// The revision it runs.
    pub revision: u64,
    /// Where that revision came from at start-up or last change: `registry` or `cache`.
    pub source: String,
    /// When it was applied, Unix seconds.
    pub applied: u64,
    /// When the instance last heard from the registry, Unix seconds (0: never).
    pub heard: u64,
    /// When this report was written, Unix seconds.
    pub reported: u64,
    /// A newer revision it refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Membership of the running revision the instance does not serve yet: federations
    /// while their broker is handed over, and `federation:member` for members on networks it
    /// connects to only at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership_pending: Vec<String>,
}

/// A revision an instance would not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The revision.
    pub revision: u64,
    /// Why, as a stable code: `unsigned`, `unknown_author`, `bad_signature`, `schema`,
    /// `older` (at start-up, older than the cached revision), `manifest` (a document missing
    /// or changed) or `invalid` (the set does not validate).
    #[serde(default)]
    pub code: String,
    /// Why, in words.
    pub reason: String,
}

/// Parses a manifest, refusing a schema this fedgate does not know before anything else.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, RegistryError> {
    #[derive(Deserialize)]
    struct Probe {
        schema: u32,
        #[serde(default)]
        revision: u64,
    }
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(RegistryError::Manifest(format!(
            "larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Manifest(format!("not a manifest: {e}")))?;
    if probe.schema != SCHEMA && probe.schema != UNSIGNED_SCHEMA {
        return Err(RegistryError::Schema {
            revision: probe.revision,
            schema: probe.schema,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Manifest(format!("revision {}: not a manifest: {e}", probe.revision))
    })
}
