//! Development PKI: one CA per realm, user, server, privileged and fleet certificates (rcgen).
//!
//! `fedgate-dev certs dev DIR` lays out one Puppet-ssldir-like tree per realm:
//!
//! ```text
//! DIR/pki.json                        manifest, paths relative to DIR
//! DIR/<realm>/certs/ca.pem            root CA certificate (the realm's trust bundle)
//! DIR/<realm>/ca/ca_key.pem           root CA key
//! DIR/<realm>/certs/intermediate.pem  issuing CA (only for `intermediate: true`)
//! DIR/<realm>/ca/intermediate_key.pem issuing CA key
//! DIR/<realm>/certs/<cn>.pem          leaf certificate (then the intermediate, if any)
//! DIR/<realm>/private_keys/<cn>.pem   leaf key, PKCS#8 PEM, mode 0600
//! ```
//!
//! Every key is RSA and every signature RSA PKCS#1 v1.5 SHA-256, as Choria protocol v1 requires.

mod fsio;
mod issue;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use validate::{check_manifest_realm, same_layout, validate};

pub use rcgen::RsaKeySize;

/// File name of the manifest inside the PKI directory.
pub const MANIFEST: &str = "pki.json";

/// What a realm is, which decides the leaves it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealmKind {
    /// A Choria federation: users, fedgate and the privileged signer.
    Federation,
    /// A collective with a (simulated) fleet: adds the fleet identity.
    Collective,
    /// The WebSocket edge: users and fedgate only.
    Edge,
}

impl RealmKind {
    /// Whether the realm gets a `fedgate.privileged.mcollective` signer.
    pub fn has_privileged(self) -> bool {
        matches!(self, RealmKind::Federation | RealmKind::Collective)
    }

    /// Whether the realm gets a `fleet.mcollective` identity.
    pub fn has_fleet(self) -> bool {
        matches!(self, RealmKind::Collective)
    }
}

/// One realm to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmSpec {
    /// Realm name, also its directory name (`^[a-z0-9][a-z0-9_-]*$`).
    pub name: String,
    /// The kind of realm.
    pub kind: RealmKind,
    /// Whether leaves are signed by an issuing CA below the root.
    pub intermediate: bool,
}

impl RealmSpec {
    /// A realm whose leaves are signed directly by its root CA.
    pub fn new(name: impl Into<String>, kind: RealmKind) -> Self {
        Self {
            name: name.into(),
            kind,
            intermediate: false,
        }
    }
}

/// What `generate` produces.
#[derive(Debug, Clone)]
pub struct DevPkiOptions {
    /// Realms, each with its own CA.
    pub realms: Vec<RealmSpec>,
    /// User names; each gets `<user>.mcollective` in every realm.
    pub users: Vec<String>,
    /// RSA key size of every key.
    pub key_size: RsaKeySize,
    /// Regenerate even if `pki.json` already describes the same PKI.
    pub force: bool,
}

impl Default for DevPkiOptions {
    fn default() -> Self {
        let tokyo = RealmSpec {
            intermediate: true,
            ..RealmSpec::new("tokyo", RealmKind::Collective)
        };
        Self {
            realms: vec![
                RealmSpec::new("prod", RealmKind::Federation),
                RealmSpec::new("london", RealmKind::Collective),
                tokyo,
                RealmSpec::new("edge", RealmKind::Edge),
            ],
            users: vec!["alice".into(), "bob".into()],
            key_size: RsaKeySize::_2048,
            force: false,
        }
    }
}

/// Paths of one certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// Certificate PEM (leaf, then the intermediate if the realm has one).
    pub cert: PathBuf,
    /// PKCS#8 private key PEM.
    pub key: PathBuf,
}

/// The generated files of one realm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmPki {
    /// Realm name.
    pub name: String,
    /// Realm kind.
    pub kind: RealmKind,
    /// Root CA certificate: the realm's trust bundle.
    pub ca: PathBuf,
    /// The realm's listener (nats-server or the WebSocket edge).
    pub server: CertPair,
    /// fedgate's own TLS client identity, `fedgate.mcollective`.
    pub fedgate: CertPair,
    /// The privileged signer, `fedgate.privileged.mcollective` (not for edge realms).
    pub privileged: Option<CertPair>,
    /// The simulated fleet's identity, `fleet.mcollective` (collective realms only).
    pub fleet: Option<CertPair>,
    /// User certificates, `<user>.mcollective`, by user name.
    pub users: BTreeMap<String, CertPair>,
    /// Issuing CA certificate, if leaves are signed by one.
    pub intermediate: Option<PathBuf>,
}

/// A generated development PKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevPki {
    /// The PKI directory; not stored in the manifest.
    #[serde(skip)]
    pub root: PathBuf,
    /// Realms by name.
    pub realms: BTreeMap<String, RealmPki>,
}

/// Why the development PKI could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// Reading, writing or removing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rcgen could not build a key or certificate.
    #[error("{}: certificate generation failed: {message}", path.display())]
    Certificate {
        /// The certificate or key being generated.
        path: PathBuf,
        /// rcgen's message.
        message: String,
    },
    /// `pki.json` is unreadable or inconsistent.
    #[error("{}: invalid manifest: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A realm or user name is not allowed.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// `realm` or `user`.
        what: &'static str,
        /// The refused name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The options are inconsistent (no realms, duplicates).
    #[error("invalid options: {0}")]
    Options(String),
    /// A realm directory holds files fedgate did not create; it is never removed.
    #[error("{}: exists and holds files fedgate did not create; remove it or choose another DIR", path.display())]
    NotOwned {
        /// The directory.
        path: PathBuf,
    },
}

impl DevPki {
    /// The realm called `name`.
    pub fn realm(&self, name: &str) -> Option<&RealmPki> {
        self.realms.get(name)
    }

    /// Reads DIR/pki.json (paths inside are stored relative to DIR and resolved on load).
    pub fn load(dir: &Path) -> Result<DevPki, DevPkiError> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|source| DevPkiError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |message: String| DevPkiError::Manifest {
            path: path.clone(),
            message,
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let mut pki: DevPki =
            serde_path_to_error::deserialize(&mut de).map_err(|e| bad(e.to_string()))?;
        for (name, realm) in &pki.realms {
            check_manifest_realm(name, realm).map_err(bad)?;
        }
        pki.root = dir.to_path_buf();
        pki.map_paths(|p| dir.join(p));
        for file in pki.files() {
            if !file.is_file() {
                return Err(bad(format!("{} is missing", file.display())));
            }
        }
        Ok(pki)
    }

    /// Every certificate and key file of the PKI.
    pub fn files(&self) -> Vec<&Path> {
        self.realms.values().flat_map(RealmPki::files).collect()
    }

    fn map_paths(&mut self, f: impl Fn(&Path) -> PathBuf + Copy) {
        self.realms.values_mut().for_each(|r| r.map_paths(f));
    }
}

impl RealmPki {
    /// TLS for this realm's nats-server: its server certificate, and client certificates
    /// required from the realm's CA.
    pub fn nats_tls(&self) -> crate::natsd::ServerTls {
        crate::natsd::ServerTls {
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
            ca: self.ca.clone(),
            verify_clients: true,
        }
    }

    /// The leaves of this realm: server, fedgate, privileged, fleet, then users.
    pub fn leaves(&self) -> impl Iterator<Item = &CertPair> {
        let fixed = [
            Some(&self.server),
            Some(&self.fedgate),
            self.privileged.as_ref(),
            self.fleet.as_ref(),
        ];
        fixed.into_iter().flatten().chain(self.users.values())
    }

    /// Every certificate and key file of this realm (CA keys excluded).
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.ca.as_path()];
        files.extend(self.intermediate.as_deref());
        files.extend(
            self.leaves()
                .flat_map(|p| [p.cert.as_path(), p.key.as_path()]),
        );
        files
    }

    fn map_paths(&mut self, f: impl Fn(&Path) -> PathBuf + Copy) {
        self.ca = f(&self.ca);
        self.intermediate = self.intermediate.as_deref().map(f);
        let pairs = [
            Some(&mut self.server),
            Some(&mut self.fedgate),
            self.privileged.as_mut(),
            self.fleet.as_mut(),
        ];
        for pair in pairs.into_iter().flatten().chain(self.users.values_mut()) {
            pair.cert = f(&pair.cert);
            pair.key = f(&pair.key);
        }
    }
}

/// Generates the PKI. If DIR/pki.json exists and lists the same realms and users, and !force,
/// returns DevPki::load (no regeneration). With force, removes and regenerates the realm dirs
/// it owns. Otherwise generates everything.
pub fn generate(dir: &Path, options: &DevPkiOptions) -> Result<DevPki, DevPkiError> {
    validate(options)?;
    let manifest = dir.join(MANIFEST);
    let previous = match manifest.exists() {
        true => Some(DevPki::load(dir)),
        false => None,
    };
    let previous = match previous {
        Some(Ok(pki)) if !options.force && same_layout(&pki, options) => return Ok(pki),
        Some(Ok(pki)) => pki.realms.into_keys().collect(),
        Some(Err(e)) if !options.force => return Err(e),
        _ => BTreeSet::new(),
    };
    let stale = previous
        .iter()
        .chain(options.realms.iter().map(|r| &r.name));
    let stale: Vec<PathBuf> = stale
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|n| dir.join(n))
        .collect();
    stale
        .iter()
        .try_for_each(|realm_dir| fsio::check_owned(realm_dir))?;
    stale
        .iter()
        .try_for_each(|realm_dir| fsio::remove_dir(realm_dir))?;
    fsio::remove_file(&manifest)?;
    let mut pki = DevPki {
        root: PathBuf::new(),
        realms: issue::all_realms(dir, options)?,
    };
    let json = serde_json::to_vec_pretty(&pki).map_err(|e| DevPkiError::Manifest {
        path: manifest.clone(),
        message: e.to_string(),
    })?;
    fsio::write_atomic(&manifest, &json, 0o644)?;
    pki.root = dir.to_path_buf();
    pki.map_paths(|p| dir.join(p));
    Ok(pki)
}
