//! Keys and certificates with rcgen: one root CA per realm, an optional issuing CA, and leaves.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};

use super::{CertPair, DevPkiError, DevPkiOptions, RealmKind, RealmPki, RealmSpec, fsio};

const HOUR: Duration = Duration::from_secs(3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
const CA_VALIDITY: Duration = Duration::from_secs(3652 * 86_400);

/// A CA that signs, with the PEM appended to every leaf it signs (empty for a root).
struct Signer {
    issuer: CertifiedIssuer<'static, KeyPair>,
    chain: String,
}

/// Where one realm is written: `dir/rel/...`; returned paths are relative to `dir`.
struct RealmDir<'a> {
    dir: &'a Path,
    rel: PathBuf,
    key_size: RsaKeySize,
}

/// Generates every realm, one thread per realm; paths in the result are relative to `dir`.
pub(super) fn all_realms(
    dir: &Path,
    options: &DevPkiOptions,
) -> Result<BTreeMap<String, RealmPki>, DevPkiError> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (options.realms.iter())
            .map(|spec| (spec, scope.spawn(move || realm(dir, spec, options))))
            .collect();
        let mut realms = BTreeMap::new();
        for (spec, worker) in workers {
            let pki = worker.join().map_err(|_| DevPkiError::Certificate {
                path: dir.join(&spec.name),
                message: "generator thread panicked".into(),
            })??;
            realms.insert(spec.name.clone(), pki);
        }
        Ok(realms)
    })
}

/// Generates one realm: CA(s), server, fedgate, privileged, fleet and user certificates.
fn realm(dir: &Path, spec: &RealmSpec, options: &DevPkiOptions) -> Result<RealmPki, DevPkiError> {
    let out = RealmDir {
        dir,
        rel: PathBuf::from(&spec.name),
        key_size: options.key_size,
    };
    out.create_dirs()?;
    let name = &spec.name;
    let (root, ca) = out.ca(&format!("fedgate dev {name} CA"), "ca", None)?;
    let (signer, intermediate) = match spec.intermediate {
        true => {
            let issuing = format!("fedgate dev {name} issuing CA");
            let (signer, path) = out.ca(&issuing, "intermediate", Some(&root))?;
            (signer, Some(path))
        }
        false => (root, None),
    };
    let leaf = |cn: &str| out.leaf(cn, cn, &[cn], &[], &signer);
    let server_cn = format!("{name}.fedgate.local");
    let loopback = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let server = out.leaf(
        "server",
        &server_cn,
        &["localhost", &server_cn],
        &loopback,
        &signer,
    )?;
    let users = (options.users.iter())
        .map(|user| Ok((user.clone(), leaf(&format!("{user}.mcollective"))?)))
        .collect::<Result<_, DevPkiError>>()?;
    Ok(RealmPki {
        name: name.clone(),
        kind: spec.kind,
        ca,
        server,
        fedgate: leaf("fedgate.mcollective")?,
        privileged: optional(spec.kind.has_privileged(), || {
            leaf("fedgate.privileged.mcollective")
        })?,
        fleet: optional(spec.kind == RealmKind::Collective, || {
            leaf("fleet.mcollective")
        })?,
        users,
        intermediate,
    })
}

fn optional<T>(
    wanted: bool,
    make: impl FnOnce() -> Result<T, DevPkiError>,
) -> Result<Option<T>, DevPkiError> {
    wanted.then(make).transpose()
}

impl RealmDir<'_> {
    fn create_dirs(&self) -> Result<(), DevPkiError> {
        fsio::create_dir(&self.dir.join(&self.rel).join("certs"), 0o755)?;
        fsio::create_dir(&self.dir.join(&self.rel).join("ca"), 0o700)?;
        fsio::create_dir(&self.dir.join(&self.rel).join("private_keys"), 0o700)
    }

    /// A CA: `certs/<stem>.pem` and `ca/<stem>_key.pem`; self-signed unless `parent` is given.
    fn ca(
        &self,
        cn: &str,
        stem: &str,
        parent: Option<&Signer>,
    ) -> Result<(Signer, PathBuf), DevPkiError> {
        let cert_rel = self.rel.join("certs").join(format!("{stem}.pem"));
        let cert_path = self.dir.join(&cert_rel);
        let failed = rcgen_error(&cert_path);
        let key = new_key(self.key_size).map_err(&failed)?;
        let mut params = base_params(cn, CA_VALIDITY).map_err(&failed)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "fedgate dev");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = match parent {
            Some(parent) => {
                params.use_authority_key_identifier_extension = true;
                CertifiedIssuer::signed_by(params, key, &parent.issuer)
            }
            None => CertifiedIssuer::self_signed(params, key),
        }
        .map_err(&failed)?;
        let key_path = self
            .dir
            .join(&self.rel)
            .join("ca")
            .join(format!("{stem}_key.pem"));
        fsio::write_atomic(&key_path, issuer.key().serialize_pem().as_bytes(), 0o600)?;
        fsio::write_atomic(&cert_path, issuer.pem().as_bytes(), 0o644)?;
        let chain = if parent.is_some() {
            issuer.pem()
        } else {
            String::new()
        };
        Ok((Signer { issuer, chain }, cert_rel))
    }

    /// A leaf: `certs/<stem>.pem` (leaf then chain) and `private_keys/<stem>.pem`.
    fn leaf(
        &self,
        stem: &str,
        cn: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
        signer: &Signer,
    ) -> Result<CertPair, DevPkiError> {
        let file = format!("{stem}.pem");
        let pair = CertPair {
            cert: self.rel.join("certs").join(&file),
            key: self.rel.join("private_keys").join(&file),
        };
        let cert_path = self.dir.join(&pair.cert);
        let failed = rcgen_error(&cert_path);
        let key = new_key(self.key_size).map_err(&failed)?;
        let mut params = base_params(cn, LEAF_VALIDITY).map_err(&failed)?;
        params.subject_alt_names = sans(dns_names, ips).map_err(&failed)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &signer.issuer).map_err(&failed)?;
        let pem = format!("{}{}", cert.pem(), signer.chain);
        fsio::write_atomic(
            &self.dir.join(&pair.key),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        fsio::write_atomic(&cert_path, pem.as_bytes(), 0o644)?;
        Ok(pair)
    }
}

/// Subject CN only, valid from an hour ago for `validity`, with a random serial.
fn base_params(cn: &str, validity: Duration) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    let now = SystemTime::now();
    params.not_before = (now - HOUR).into();
    params.not_after = (now + validity).into();
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// 16 random bytes, positive and without a leading zero byte.
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn new_key(key_size: RsaKeySize) -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, key_size)
}

fn sans(dns_names: &[&str], ips: &[IpAddr]) -> Result<Vec<SanType>, rcgen::Error> {
    let dns = dns_names
        .iter()
        .map(|name| Ok(SanType::DnsName((*name).try_into()?)));
    dns.chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect()
}

fn rcgen_error(path: &Path) -> impl Fn(rcgen::Error) -> DevPkiError + '_ {
    move |e| DevPkiError::Certificate {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
