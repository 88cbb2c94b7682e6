//! RSA private keys (PKCS#1 or PKCS#8) and request signing with aws-lc-rs.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::{CertChain, CertError, CertInfo};
use crate::wire::choria_v1::{Request, SecureRequest};
use crate::wire::encode_base64;

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM holds no usable private key.
    #[error("{what}: {reason}")]
    Invalid {
        /// The key file.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate could not be loaded.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The key does not belong to the certificate.
    #[error("{key} does not match the public key of {cert}")]
    Mismatch {
        /// The key file.
        key: String,
        /// The certificate's certname.
        cert: String,
    },
    /// aws-lc-rs refused to sign.
    #[error("signing failed")]
    Sign,
}

/// An RSA key with its certificate chain: signs requests as that certificate's holder.
pub struct Signer {
    key: RsaKeyPair,
    chain: CertChain,
    info: CertInfo,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("certname", &self.certname())
            .field("key", &"MASKED")
            .finish()
    }
}

impl Signer {
    /// Loads a certificate chain and its RSA key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, KeyError> {
        let chain = CertChain::from_file(cert, crate::wire::Limits::default().max_chain_certs)?;
        let key_pem = std::fs::read(key).map_err(|source| KeyError::Io {
            path: key.to_path_buf(),
            source,
        })?;
        Self::new(chain, &key_pem, &key.display().to_string())
    }

    /// Builds a signer from a loaded chain and PEM key bytes, checking that they belong together.
    pub fn new(chain: CertChain, key_pem: &[u8], key_name: &str) -> Result<Self, KeyError> {
        let key = load_rsa_key(key_pem, key_name)?;
        let info = CertInfo::parse(chain.leaf(), "signer certificate")?;
        if key.public_key().as_ref() != info.public_key.as_slice() {
            return Err(KeyError::Mismatch {
                key: key_name.to_string(),
                cert: info.certname().unwrap_or("certificate").to_string(),
            });
        }
        Ok(Signer {
            key,
            chain,
            info,
            rng: SystemRandom::new(),
        })
    }

    /// Signs bytes with RSA PKCS#1 v1.5 over SHA-256.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| KeyError::Sign)?;
        Ok(signature)
    }

    /// Encodes a request, signs those exact bytes and wraps them in a secure request.
    pub fn sign_request(&self, request: &Request) -> Result<SecureRequest, KeyError> {
        let message = request.encode_string();
        let signature = encode_base64(&self.sign(message.as_bytes())?);
        Ok(SecureRequest::new(
            message,
            signature,
            self.chain.pem().to_string(),
        ))
    }

    /// The PEM chain that goes into `pubcert`.
    pub fn pubcert(&self) -> &str {
        self.chain.pem()
    }

    /// The certificate's first name (CN, else first DNS SAN).
    pub fn certname(&self) -> &str {
        self.info.certname().unwrap_or("")
    }

    /// Modulus size in bits.
    pub fn key_bits(&self) -> usize {
        self.key.public_modulus_len() * 8
    }
}

fn load_rsa_key(pem: &[u8], what: &str) -> Result<RsaKeyPair, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        what: what.to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|err| invalid(format!("no private key in PEM: {err}")))?;
    let key = match &der {
        PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(pkcs8) => RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(_) => {
            return Err(invalid("an EC key; Choria v1 signs with RSA only".into()));
        }
        _ => {
            return Err(invalid(
                "unsupported key type; Choria v1 signs with RSA only".into(),
            ));
        }
    };
    key.map_err(|err| invalid(format!("not a usable RSA key: {err}")))
}
