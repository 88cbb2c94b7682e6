//! PEM certificates: CA bundles, certificate chains and the names a certificate carries.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::Now;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Why certificate material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text holds no certificate.
    #[error("{what}: no PEM certificate found")]
    Empty {
        /// What was being loaded.
        what: String,
    },
    /// The PEM text is malformed.
    #[error("{what}: invalid PEM: {reason}")]
    Pem {
        /// What was being loaded.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A certificate's DER does not parse.
    #[error("{what}: invalid certificate: {reason}")]
    Der {
        /// What was being loaded.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// More certificates than the configured limit.
    #[error("{what}: {count} certificates exceeds the limit of {limit}")]
    TooMany {
        /// What was being loaded.
        what: String,
        /// Certificates found.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// A leaf certificate followed by any intermediates, with the PEM text it came from.
#[derive(Clone, Debug)]
pub struct CertChain {
    certs: Vec<CertificateDer<'static>>,
    pem: String,
}

impl CertChain {
    /// Parses PEM text holding a leaf and optional intermediates; other PEM sections are ignored.
    pub fn from_pem(pem: &str, what: &str, max_certs: usize) -> Result<Self, CertError> {
        let certs = parse_pem_certs(pem.as_bytes(), what, max_certs)?;
        Ok(CertChain {
            certs,
            pem: pem.to_string(),
        })
    }

    /// Reads a PEM chain from a file.
    pub fn from_file(path: &Path, max_certs: usize) -> Result<Self, CertError> {
        let pem = std::fs::read_to_string(path).map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string(), max_certs)
    }

    /// The signer's own certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certs[0]
    }

    /// Every certificate after the leaf.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.certs[1..]
    }

    /// The PEM text as loaded; this is what goes into `pubcert`.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// Trust anchors from a CA bundle file, which may hold several CAs (for CA rollover).
#[derive(Clone, Debug)]
pub struct CaBundle {
    anchors: Vec<TrustAnchor<'static>>,
    source: String,
}

impl CaBundle {
    /// Reads every certificate in a PEM file as a trust anchor.
    pub fn from_file(path: &Path) -> Result<Self, CertError> {
        let pem = std::fs::read(path).map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// Reads every certificate in PEM bytes as a trust anchor.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, CertError> {
        let anchors = parse_pem_certs(pem, what, usize::MAX)?
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|err| CertError::Der {
                        what: what.to_string(),
                        reason: format!("{err:?}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(CaBundle {
            anchors,
            source: what.to_string(),
        })
    }

    /// The anchors, for chain verification.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// Verifies that `leaf` chains to one of these anchors through `intermediates`, for client
    /// authentication (EKU clientAuth when the certificate has an EKU) at `now`.
    pub fn verify_client(
        &self,
        leaf: &EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        now: Now,
    ) -> Result<(), webpki::Error> {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::since_unix_epoch(now.since_epoch()),
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
    }

    /// Where the bundle came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Reads every certificate in a PEM file; a file without one is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pem_certs(&pem, &path.display().to_string(), usize::MAX)
}

fn parse_pem_certs(
    pem: &[u8],
    what: &str,
    max_certs: usize,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|err| CertError::Pem {
            what: what.to_string(),
            reason: err.to_string(),
        })?;
        certs.push(cert);
        if certs.len() > max_certs {
            return Err(CertError::TooMany {
                what: what.to_string(),
                count: certs.len(),
                limit: max_certs,
            });
        }
    }
    if certs.is_empty() {
        return Err(CertError::Empty {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// The names and key a certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// DER `RSAPublicKey` (or other key) bytes from the subject public key info.
    pub public_key: Vec<u8>,
    /// Modulus size when the key is RSA.
    pub rsa_bits: Option<usize>,
    /// Start of the validity period, unix seconds.
    pub not_before: i64,
    /// End of the validity period, unix seconds (inclusive).
    pub not_after: i64,
}

impl CertInfo {
    /// Reads names and key from a DER certificate.
    pub fn parse(der: &[u8], what: &str) -> Result<Self, CertError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|err| CertError::Der {
            what: what.to_string(),
            reason: err.to_string(),
        })?;
        // Go's `Subject.CommonName` is the last CN attribute, so a certificate with several
        // CNs is judged by the same one here.
        let common_name = cert
            .subject()
            .iter_common_name()
            .last()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    dns_names.push(dns.to_string());
                }
            }
        }
        let rsa_bits = match cert.public_key().parsed() {
            Ok(PublicKey::RSA(rsa)) => Some(rsa.key_size()),
            _ => None,
        };
        Ok(CertInfo {
            common_name,
            dns_names,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            rsa_bits,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The CN followed by the DNS SANs: the names Choria matches callers and patterns against.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_name
            .iter()
            .map(String::as_str)
            .chain(self.dns_names.iter().map(String::as_str))
    }

    /// The first name, used as the certificate's certname.
    pub fn certname(&self) -> Option<&str> {
        self.names().next()
    }
}
