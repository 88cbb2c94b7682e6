//! fedgate's own legacy keys: a request whose signature verified with the public half of a
//! private key in the `signers` folder was made by fedgate (or by whoever holds that key, which
//! is fedgate's own key material), whatever name its unsigned `callerid` gives.
//!
//! Keys are compared by the SHA-256 of their PKCS#1 `RSAPublicKey`, not by name: a client-key
//! folder may hold fedgate's public key under another name, and `callerid` is not signed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};

/// Signer files read at start-up at most.
const MAX_SIGNER_FILES: usize = 4096;
/// Largest signer file read, bytes.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// The SHA-256 of a PKCS#1 `RSAPublicKey` DER: what names a key here.
pub type KeyPrint = [u8; 32];

/// The print of a PKCS#1 `RSAPublicKey` DER.
pub fn key_print(rsa_public_der: &[u8]) -> KeyPrint {
    digest(&SHA256, rsa_public_der)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

/// The print of the public half of the private key in `path`, if it is one.
fn private_key_print(path: &Path) -> Option<KeyPrint> {
    if std::fs::metadata(path).ok()?.len() > MAX_KEY_BYTES {
        return None;
    }
    let pem = std::fs::read(path).ok()?;
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).ok()?;
    let der = key.rsa().ok()?.public_key_to_der_pkcs1().ok()?;
    Some(key_print(&der))
}

/// The keys fedgate signs legacy requests with.
pub struct OwnKeys {
    dir: PathBuf,
    /// Every key in the folder at start-up.
    known: HashSet<KeyPrint>,
    /// Keys read later, by name.
    later: quick_cache::sync::Cache<String, KeyPrint>,
}

impl std::fmt::Debug for OwnKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnKeys")
            .field("dir", &self.dir)
            .field("known", &self.known.len())
            .finish()
    }
}

impl OwnKeys {
    /// Reads the `<name>.pem` private keys in `dir` (unreadable files are skipped: a key
    /// fedgate cannot read, it cannot sign with either).
    pub fn load(dir: &Path) -> OwnKeys {
        let known = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "pem"))
            .take(MAX_SIGNER_FILES)
            .filter_map(|path| private_key_print(&path))
            .collect();
        OwnKeys {
            dir: dir.to_path_buf(),
            known,
            later: quick_cache::sync::Cache::new(256),
        }
    }

    /// Whether the key printed `print`, which verified a request as `cert=<name>`, is one of
    /// fedgate's: any key of the folder at start-up, or the folder's `<name>.pem` now.
    pub fn holds(&self, print: &KeyPrint, name: &str) -> bool {
        if self.known.contains(print) {
            return true;
        }
        if let Some(known) = self.later.get(name) {
            return &known == print;
        }
        match private_key_print(&self.dir.join(format!("{name}.pem"))) {
            Some(found) => {
                self.later.insert(name.to_string(), found);
                &found == print
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_known_by_its_public_half_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let ours = openssl::rsa::Rsa::generate(2048).unwrap();
        let theirs = openssl::rsa::Rsa::generate(2048).unwrap();
        std::fs::write(
            dir.path().join("fedgate.pem"),
            ours.private_key_to_pem().unwrap(),
        )
        .unwrap();
        let own = OwnKeys::load(dir.path());
        let print = |k: &openssl::rsa::Rsa<openssl::pkey::Private>| {
            key_print(&k.public_key_to_der_pkcs1().unwrap())
        };
        assert!(own.holds(&print(&ours), "fedgate"));
        assert!(own.holds(&print(&ours), "someone-else"));
        assert!(!own.holds(&print(&theirs), "alice"));
        // Added after start-up: found by name.
        std::fs::write(
            dir.path().join("late.pem"),
            theirs.private_key_to_pem().unwrap(),
        )
        .unwrap();
        assert!(own.holds(&print(&theirs), "late"));
    }
}
