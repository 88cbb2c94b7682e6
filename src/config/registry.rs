//! `[registry]`, and the fragment of a configuration a registry revision carries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::network::{TlsIdentity, endpoint};
use crate::nats::{NatsAuth, NatsEndpoint};

/// The federation registry: JetStream key-value buckets on a NATS network.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// NATS server URLs of the network holding the registry (JetStream enabled).
    pub nats: Vec<String>,
    /// CA bundle of that network; connections use TLS when it is set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity there.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// How fedgate authenticates there beyond `tls`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// Where this instance keeps the last good revision, to start and serve without the
    /// registry.
    pub cache: PathBuf,
    /// Bucket names start with this: `<prefix>-policies`, `-identity`, `-users`, `-config`,
    /// `-revisions`, `-instances`.
    #[serde(default = "defaults::registry_prefix")]
    pub prefix: String,
    /// Replicas when the buckets are created.
    #[serde(default = "defaults::audit_replicas")]
    pub replicas: usize,
    /// How long start-up waits for the registry before it uses the cached revision, ms.
    #[serde(default = "defaults::registry_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds between this instance's status reports (and checks of the head revision).
    #[serde(default = "defaults::registry_heartbeat")]
    pub heartbeat_s: u64,
    /// The authors whose signed revisions this instance applies: name and public key file
    /// (`fedgate registry keygen`). At least one; a revision no key here verifies is refused.
    #[serde(default)]
    pub authors: BTreeMap<String, PathBuf>,
    /// The keys of `authors`, read when the config is loaded.
    #[serde(skip)]
    pub trusted: BTreeMap<String, AuthorKey>,
}

impl RegistryConfig {
    /// The registry network's endpoint with fedgate's TLS identity and auth.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(
            &self.nats,
            self.ca.as_deref(),
            self.tls.as_ref(),
            &self.auth,
        )
    }
}

/// Checks a registry bucket name prefix (`[registry] prefix`).
pub fn check_registry_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 32 letters, digits, - or _".into())
    }
}

/// Most trusted authors in `[registry] authors`.
pub const MAX_AUTHORS: usize = 64;

/// A registry author's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorKey([u8; 32]);

/// The DER an Ed25519 SubjectPublicKeyInfo starts with, before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl AuthorKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> AuthorKey {
        AuthorKey(bytes)
    }

    /// Reads a `PUBLIC KEY` PEM file holding an Ed25519 key.
    pub fn load(path: &std::path::Path) -> Result<AuthorKey, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        AuthorKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses `PUBLIC KEY` PEM text holding an Ed25519 key.
    pub fn from_pem(pem: &[u8]) -> Result<AuthorKey, String> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PUBLIC KEY PEM file: {e}"))?;
        der.as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .map(AuthorKey)
            .ok_or_else(|| "not an Ed25519 public key".to_string())
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The SubjectPublicKeyInfo DER, as a `PUBLIC KEY` PEM file holds it.
    pub fn spki_der(&self) -> Vec<u8> {
        [&ED25519_SPKI_PREFIX[..], &self.0[..]].concat()
    }

    /// `SHA256:` and the hex SHA-256 of the key bytes: how logs and manifests name a key.
    pub fn fingerprint(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        format!("SHA256:{}", hex::encode(digest))
    }
}

impl std::fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthorKey({})", self.fingerprint())
    }
}

/// Checks an author name (`[registry] authors` keys, `--author`): what a manifest records.
pub fn check_author_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to 64 letters, digits, -, _, . or @"
        ))
    }
}

/// The part of a configuration a registry revision carries (`config.toml` of a set).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    /// Policy settings besides the files.
    #[serde(default)]
    pub policy: Option<FragmentPolicy>,
    /// Federation membership: each named federation's `members` replace the local list.
    #[serde(default)]
    pub federations: BTreeMap<String, FragmentFederation>,
}

/// `[policy]` of a registry fragment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentPolicy {
    /// What applies when no policy file does.
    #[serde(default = "defaults::unconfigured")]
    pub unconfigured: crate::policy::Effect,
}

/// `[federations.<name>]` of a registry fragment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentFederation {
    /// The federation's members, by name; each must be defined in the instance's config.
    pub members: Vec<String>,
}
