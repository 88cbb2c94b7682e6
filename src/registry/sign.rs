//! Signed revisions: each manifest carries its author's Ed25519 signature over
//! [`signed_bytes`], and an instance applies only a manifest that an author in its own
//! `[registry] authors` signed, whatever the registry's NATS permissions let others write.
//!
//! The signed bytes are a line-based form with every string length-prefixed, so no two
//! manifests share them:
//!
//! ```text
//! fedgate registry revision v1
//! schema 2
//! revision 7
//! parent 6
//! created 1700000000
//! author 5:alice
//! message 11:allow alice
//! documents 2
//! document 13:identity.toml 4 120 64:<sha256 hex>
//! document 23:policies/rpcutil.policy 9 61 64:<sha256 hex>
//! ```
//!
//! Numbers are decimal, a string is its length in bytes, `:` and its bytes, and documents come
//! in byte order of their paths. The digests pin every document's bytes, so a changed document
//! needs a new signature.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::store::{Manifest, SCHEMA};
use crate::config::RegistryConfig;
pub use crate::config::{AuthorKey, check_author_name};

/// The first line of the signed bytes: what they are, in which form.
const DOMAIN: &str = "fedgate registry revision v1";

/// A manifest's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The fingerprint of the key that signed (a hint for people: the author's trusted key
    /// decides).
    pub key: String,
    /// The Ed25519 signature over [`signed_bytes`], base64.
    pub ed25519: String,
}

/// Why a manifest is not signed by a trusted author.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature (also every manifest of schema 1, from before revisions were signed).
    #[error("it is not signed; instances apply only revisions signed by a trusted author")]
    Unsigned,
    /// Signed in the name of an author this config does not trust.
    #[error("signed as {author:?} (key {key}), who is not a trusted author here")]
    UnknownAuthor {
        /// The manifest's author.
        author: String,
        /// The fingerprint the signature names.
        key: String,
    },
    /// The author's trusted key does not verify the signature: the manifest (or a document
    /// digest in it) changed after signing, or another key signed it.
    #[error(
        "bad signature: {author}'s trusted key does not verify it (the manifest was changed after signing, or key {key} signed it)"
    )]
    BadSignature {
        /// The manifest's author.
        author: String,
        /// The fingerprint the signature names.
        key: String,
    },
}

impl SignatureError {
    /// A stable code, for metrics and reports.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Unsigned => "unsigned",
            SignatureError::UnknownAuthor { .. } => "unknown_author",
            SignatureError::BadSignature { .. } => "bad_signature",
        }
    }
}

/// A manifest whose signature a trusted author's key verified; only [`Authors::verify`]
/// makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified(Manifest);

impl Verified {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.0
    }

    /// The author whose key verified it.
    pub fn author(&self) -> &str {
        &self.0.author
    }

    /// The manifest, leaving the proof behind.
    pub fn into_manifest(self) -> Manifest {
        self.0
    }
}

/// The authors an instance trusts, from `[registry] authors`.
#[derive(Clone, Debug)]
pub struct Authors {
    keys: BTreeMap<String, AuthorKey>,
}

impl Authors {
    /// The keys the config loaded.
    pub fn from_config(config: &RegistryConfig) -> Authors {
        Authors::new(config.trusted.clone())
    }

    /// These authors' keys, by name.
    pub fn new(keys: BTreeMap<String, AuthorKey>) -> Authors {
        Authors { keys }
    }

    /// The trusted key of `author`.
    pub fn key(&self, author: &str) -> Option<&AuthorKey> {
        self.keys.get(author)
    }

    /// Checks that the manifest's author is trusted and that the author's key signed exactly
    /// this manifest.
    pub fn verify(&self, manifest: Manifest) -> Result<Verified, SignatureError> {
        self.check(&manifest)?;
        Ok(Verified(manifest))
    }

    /// [`Authors::verify`] without taking the manifest.
    pub fn check(&self, manifest: &Manifest) -> Result<(), SignatureError> {
        let Some(signature) = manifest
            .signature
            .as_ref()
            .filter(|_| manifest.schema == SCHEMA)
        else {
            return Err(SignatureError::Unsigned);
        };
        let key = clip(&signature.key);
        let Some(trusted) = self.keys.get(&manifest.author) else {
            return Err(SignatureError::UnknownAuthor {
                author: clip(&manifest.author),
                key,
            });
        };
        let bad = || SignatureError::BadSignature {
            author: clip(&manifest.author),
            key: key.clone(),
        };
        // 64 bytes are 88 base64 characters; anything much longer is not worth decoding.
        if signature.ed25519.len() > 128 {
            return Err(bad());
        }
        let bytes = BASE64.decode(&signature.ed25519).map_err(|_| bad())?;
        UnparsedPublicKey::new(&ED25519, trusted.bytes())
            .verify(&signed_bytes(manifest), &bytes)
            .map_err(|_| bad())
    }
}

/// A name or fingerprint off the wire, cut for messages.
fn clip(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    cut.escape_debug().to_string()
}

/// The bytes an author signs: see the module's overview.
pub fn signed_bytes(manifest: &Manifest) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, value: &str) {
        out.extend_from_slice(format!("{}:", value.len()).as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    let mut out = Vec::with_capacity(256 + 160 * manifest.documents.len());
    out.extend_from_slice(DOMAIN.as_bytes());
    for (name, number) in [
        ("schema", u64::from(manifest.schema)),
        ("revision", manifest.revision),
        ("parent", manifest.parent),
        ("created", manifest.created),
    ] {
        out.extend_from_slice(format!("\n{name} {number}").as_bytes());
    }
    out.extend_from_slice(b"\nauthor ");
    text(&mut out, &manifest.author);
    out.extend_from_slice(b"\nmessage ");
    text(&mut out, &manifest.message);
    out.extend_from_slice(format!("\ndocuments {}", manifest.documents.len()).as_bytes());
    for (path, document) in &manifest.documents {
        out.extend_from_slice(b"\ndocument ");
        text(&mut out, path);
        out.extend_from_slice(format!(" {} {} ", document.sequence, document.bytes).as_bytes());
        text(&mut out, &document.sha256);
    }
    out.push(b'\n');
    out
}

/// Why an author's private key could not be made or used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// An author's private key, to sign revisions with.
pub struct AuthorSigner {
    name: String,
    pair: Ed25519KeyPair,
    public: AuthorKey,
}

impl std::fmt::Debug for AuthorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthorSigner({}, {})",
            self.name,
            self.public().fingerprint()
        )
    }
}

impl AuthorSigner {
    /// A new Ed25519 private key as PKCS#8 PEM, and its public key as `PUBLIC KEY` PEM.
    pub fn generate() -> Result<(String, String), KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| KeyError(e.to_string()))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| KeyError(e.to_string()))?;
        let public = public_of(&pair)?;
        Ok((
            crate::edge::auth::pem_encode("PRIVATE KEY", pkcs8.as_ref()),
            crate::edge::auth::pem_encode("PUBLIC KEY", &public.spki_der()),
        ))
    }

    /// Loads the PKCS#8 PEM Ed25519 key at `path` to sign as author `name`.
    pub fn load(path: &Path, name: &str) -> Result<AuthorSigner, KeyError> {
        let pem = std::fs::read(path).map_err(|e| KeyError(format!("{}: {e}", path.display())))?;
        AuthorSigner::from_pem(&pem, name)
            .map_err(|KeyError(e)| KeyError(format!("{}: {e}", path.display())))
    }

    /// Parses a PKCS#8 PEM Ed25519 key to sign as author `name`.
    pub fn from_pem(pem: &[u8], name: &str) -> Result<AuthorSigner, KeyError> {
        check_author_name(name).map_err(|e| KeyError(format!("author name {e}")))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| KeyError(format!("not a PKCS#8 PEM key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| KeyError(format!("not an Ed25519 key: {e}")))?;
        let public = public_of(&pair)?;
        Ok(AuthorSigner {
            name: name.to_string(),
            pair,
            public,
        })
    }

    /// The author's name, recorded in each manifest it signs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn public(&self) -> &AuthorKey {
        &self.public
    }

    /// Sets the manifest's author to this one and signs it.
    pub fn sign(&self, manifest: &mut Manifest) {
        manifest.author = self.name.clone();
        manifest.signature = None;
        let signature = self.pair.sign(&signed_bytes(manifest));
        manifest.signature = Some(Signature {
            key: self.public().fingerprint(),
            ed25519: BASE64.encode(signature.as_ref()),
        });
    }
}

fn public_of(pair: &Ed25519KeyPair) -> Result<AuthorKey, KeyError> {
    <[u8; 32]>::try_from(pair.public_key().as_ref())
        .map(AuthorKey::from_bytes)
        .map_err(|_| KeyError("not a 32-byte Ed25519 public key".into()))
}
