//! Checks a TLS client identity before start-up: key privacy, key-cert match, chain to the CA.

use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use webpki::EndEntityCert;

use super::{CaBundle, CertInfo, MIN_RSA_BITS, NamePatterns, Now};

/// Why a certificate and key cannot serve as an identity; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file is missing or unreadable.
    #[error("{}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The private key is readable by group or others.
    #[error("{}: private key is readable by group or others (mode {mode:o}); chmod 600 it", path.display())]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key does not belong to the certificate.
    #[error("{}: key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A signer certificate whose names match none of the collective's privileged patterns.
    #[error("{}: {names:?} match none of the privileged patterns {patterns:?}, so the collective's servers would not accept requests it signs for other callers", cert.display())]
    NotPrivileged {
        /// The certificate file.
        cert: PathBuf,
        /// Its CN and DNS names.
        names: Vec<String>,
        /// The privileged patterns.
        patterns: Vec<String>,
    },
    /// A signer certificate without an RSA key of at least [`MIN_RSA_BITS`] bits.
    #[error("{}: {problem}; Choria v1 signs with RSA of at least {MIN_RSA_BITS} bits", cert.display())]
    WeakSigner {
        /// The certificate file.
        cert: PathBuf,
        /// What the key is.
        problem: String,
    },
    /// The certificate does not chain to the CA.
    #[error("{}: does not chain to the CA {}: {reason}", cert.display(), ca.display())]
    NotIssuedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA bundle.
        ca: PathBuf,
        /// webpki's complaint.
        reason: String,
    },
}

/// Checks that `key` is private to its owner, belongs to `cert`, and that `cert` chains to `ca`
/// for client authentication at `now`.
pub fn check_identity(cert: &Path, key: &Path, ca: &Path, now: Now) -> Result<(), IdentityError> {
    check_key_mode(key)?;
    let chain = load_chain(cert)?;
    key_matches(&chain, cert, key)?;
    let not_issued = |reason: String| IdentityError::NotIssuedByCa {
        cert: cert.to_path_buf(),
        ca: ca.to_path_buf(),
        reason,
    };
    let bundle = CaBundle::from_file(ca).map_err(|e| not_issued(e.to_string()))?;
    let leaf = EndEntityCert::try_from(&chain[0]).map_err(|e| not_issued(format!("{e:?}")))?;
    bundle
        .verify_client(&leaf, &chain[1..], now)
        .map_err(|e| not_issued(format!("{e:?}")))
}

/// Checks fedgate's privileged signer for a collective: everything [`check_identity`] checks,
/// plus a name matching the collective's `privileged` patterns and an RSA key Choria accepts.
pub fn check_privileged_signer(
    cert: &Path,
    key: &Path,
    ca: &Path,
    privileged: &NamePatterns,
    now: Now,
) -> Result<(), IdentityError> {
    check_identity(cert, key, ca, now)?;
    let chain = load_chain(cert)?;
    let info = CertInfo::parse(&chain[0], &cert.display().to_string())
        .map_err(|e| unreadable(cert, e.to_string()))?;
    if !info.names().any(|name| privileged.matches(name)) {
        return Err(IdentityError::NotPrivileged {
            cert: cert.to_path_buf(),
            names: info.names().map(str::to_string).collect(),
            patterns: privileged.as_strings(),
        });
    }
    match info.rsa_bits {
        Some(bits) if bits >= MIN_RSA_BITS => Ok(()),
        found => Err(IdentityError::WeakSigner {
            cert: cert.to_path_buf(),
            problem: found.map_or("not an RSA key".into(), |bits| {
                format!("a {bits}-bit RSA key")
            }),
        }),
    }
}

/// Checks that `key` belongs to the first certificate in `cert`.
pub fn check_key_pair(cert: &Path, key: &Path) -> Result<(), IdentityError> {
    key_matches(&load_chain(cert)?, cert, key)
}

fn load_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    super::load_certs(cert).map_err(|e| unreadable(cert, e.to_string()))
}

fn unreadable(path: &Path, reason: String) -> IdentityError {
    IdentityError::Unreadable {
        path: path.to_path_buf(),
        reason,
    }
}

/// Checks that the key in `key` belongs to the first certificate of `chain` (read from `cert`).
fn key_matches(
    chain: &[CertificateDer<'static>],
    cert: &Path,
    key: &Path,
) -> Result<(), IdentityError> {
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, e.to_string()))?;
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der)
        .map_err(|e| unreadable(key, e.to_string()))?;
    CertifiedKey::new(chain.to_vec(), signing_key)
        .keys_match()
        .map_err(|_| IdentityError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
        })
}

/// Refuses a key file that group or others can read or write.
pub fn check_key_mode(key: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(key).map_err(|e| IdentityError::Unreadable {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyExposed {
            path: key.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
