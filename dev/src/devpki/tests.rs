//! Tests for the development PKI: layout, chains, key files, reuse and name checks.

use std::error::Error;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::signature::KeyPair as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("fedgate-devpki-{tag}-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(realms: Vec<RealmSpec>, users: &[&str]) -> DevPkiOptions {
    let users = users.iter().map(|u| u.to_string()).collect();
    DevPkiOptions {
        realms,
        users,
        ..DevPkiOptions::default()
    }
}

fn small_options() -> DevPkiOptions {
    let tokyo = RealmSpec {
        intermediate: true,
        ..RealmSpec::new("tokyo", RealmKind::Collective)
    };
    options(
        vec![tokyo, RealmSpec::new("edge", RealmKind::Edge)],
        &["alice"],
    )
}

fn certs(path: &Path) -> TestResult<Vec<CertificateDer<'static>>> {
    Ok(CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?)
}

/// Verifies the chain in `leaf` (leaf, then intermediates) up to the root in `ca`.
fn verify(leaf: &Path, ca: &Path) -> TestResult {
    let roots = certs(ca)?;
    let anchors = [webpki::anchor_from_trusted_cert(
        roots.first().ok_or("empty CA file")?,
    )?];
    let chain = certs(leaf)?;
    let (ee, intermediates) = chain.split_first().ok_or("empty certificate file")?;
    let ee = webpki::EndEntityCert::try_from(ee)?;
    let usage = webpki::KeyUsage::client_auth();
    let now = UnixTime::now();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )?;
    Ok(())
}

fn common_name(cert: &X509Certificate<'_>) -> TestResult<String> {
    let cn = cert.subject().iter_common_name().next().ok_or("no CN")?;
    Ok(cn.as_str()?.to_string())
}

/// Checks key usage, EKU, CA:false and that the key file holds the certificate's key.
fn check_leaf(pair: &CertPair) -> TestResult<String> {
    let mode = std::fs::metadata(&pair.key)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", pair.key.display());
    let der = certs(&pair.cert)?.into_iter().next().ok_or("no leaf")?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let eku = cert.extended_key_usage()?.ok_or("no EKU")?.value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = cert.key_usage()?.ok_or("no key usage")?.value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(
        !cert
            .basic_constraints()?
            .ok_or("no basicConstraints")?
            .value
            .ca
    );
    let PrivateKeyDer::Pkcs8(key) = PrivateKeyDer::from_pem_file(&pair.key)? else {
        return Err("key is not PKCS#8".into());
    };
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der())?;
    assert_eq!(
        key.public_key().as_ref(),
        cert.public_key().subject_public_key.data.as_ref()
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 365);
    common_name(&cert)
}

fn sans(path: &Path) -> TestResult<(Vec<String>, Vec<IpAddr>)> {
    let der = certs(path)?.into_iter().next().ok_or("no leaf")?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in &cert
        .subject_alternative_name()?
        .ok_or("no SAN")?
        .value
        .general_names
    {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b)?))
            }
            GeneralName::IPAddress(b) => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b)?)),
            other => return Err(format!("unexpected SAN {other:?}").into()),
        }
    }
    Ok((dns, ips))
}

fn check_ca(path: &Path, cn: &str) -> TestResult {
    let ders = certs(path)?;
    assert_eq!(ders.len(), 1, "{} holds one certificate", path.display());
    let (_, cert) = X509Certificate::from_der(&ders[0])?;
    assert_eq!(common_name(&cert)?, cn);
    let bc = cert
        .basic_constraints()?
        .ok_or("no basicConstraints")?
        .value;
    assert!(bc.ca && bc.path_len_constraint.is_none());
    let ku = cert.key_usage()?.ok_or("no key usage")?.value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    Ok(())
}

#[test]
fn generates_realms_that_chain_to_their_own_ca_only() -> TestResult {
    let tmp = TempDir::new("chain");
    let pki = generate(&tmp.0, &small_options())?;
    let (tokyo, edge) = (
        pki.realm("tokyo").ok_or("tokyo")?,
        pki.realm("edge").ok_or("edge")?,
    );
    assert_eq!(tokyo.ca, tmp.0.join("tokyo/certs/ca.pem"));
    assert_eq!(
        edge.users["alice"].key,
        tmp.0.join("edge/private_keys/alice.mcollective.pem")
    );
    assert!(tmp.0.join("tokyo/ca/ca_key.pem").is_file());
    assert!(tmp.0.join("tokyo/ca/intermediate_key.pem").is_file());
    check_ca(&tokyo.ca, "fedgate dev tokyo CA")?;
    check_ca(
        tokyo.intermediate.as_deref().ok_or("no intermediate")?,
        "fedgate dev tokyo issuing CA",
    )?;
    check_ca(&edge.ca, "fedgate dev edge CA")?;
    assert!(edge.privileged.is_none() && edge.fleet.is_none() && edge.intermediate.is_none());
    for (realm, other, chain_len) in [(tokyo, edge, 2), (edge, tokyo, 1)] {
        for pair in realm.leaves() {
            verify(&pair.cert, &realm.ca)?;
            assert!(
                verify(&pair.cert, &other.ca).is_err(),
                "{} chains to the wrong CA",
                pair.cert.display()
            );
            assert_eq!(certs(&pair.cert)?.len(), chain_len);
            let cn = check_leaf(pair)?;
            let stem = pair.cert.file_stem().ok_or("no stem")?;
            if stem != "server" {
                assert_eq!(Path::new(&cn), Path::new(stem));
                assert_eq!(sans(&pair.cert)?, (vec![cn], vec![]));
            }
        }
    }
    let privileged = check_leaf(tokyo.privileged.as_ref().ok_or("no privileged")?)?;
    assert!(regex::Regex::new(r"\.privileged\.mcollective$")?.is_match(&privileged));
    assert_eq!(
        check_leaf(tokyo.fleet.as_ref().ok_or("no fleet")?)?,
        "fleet.mcollective"
    );
    assert_eq!(check_leaf(&tokyo.users["alice"])?, "alice.mcollective");
    assert_eq!(check_leaf(&tokyo.server)?, "tokyo.fedgate.local");
    let loopback: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?];
    let server_dns = vec!["localhost".to_string(), "tokyo.fedgate.local".to_string()];
    assert_eq!(sans(&tokyo.server.cert)?, (server_dns, loopback));
    assert_eq!(DevPki::load(&tmp.0)?, pki);
    Ok(())
}

fn snapshot(pki: &DevPki) -> TestResult<Vec<(Vec<u8>, std::time::SystemTime)>> {
    let read = |p: &Path| Ok((std::fs::read(p)?, std::fs::metadata(p)?.modified()?));
    pki.files().into_iter().map(read).collect()
}

#[test]
fn reuses_matching_pki_and_regenerates_on_force_or_change() -> TestResult {
    let tmp = TempDir::new("reuse");
    let mut opts = options(vec![RealmSpec::new("edge", RealmKind::Edge)], &["alice"]);
    let first = generate(&tmp.0, &opts)?;
    let before = snapshot(&first)?;
    let second = generate(&tmp.0, &opts)?;
    assert_eq!(second, first);
    assert_eq!(snapshot(&second)?, before, "files were rewritten");
    assert_eq!(DevPki::load(&tmp.0)?, first);
    opts.force = true;
    let forced = generate(&tmp.0, &opts)?;
    assert_ne!(std::fs::read(&forced.edge()?.ca)?, before[0].0);
    opts.force = false;
    opts.users.push("bob".into());
    let changed = generate(&tmp.0, &opts)?;
    assert!(changed.edge()?.users["bob"].cert.is_file());
    Ok(())
}

impl DevPki {
    fn edge(&self) -> TestResult<&RealmPki> {
        Ok(self.realm("edge").ok_or("no edge realm")?)
    }
}

#[test]
fn refuses_invalid_names_before_writing() {
    let tmp = TempDir::new("names");
    let edge = || vec![RealmSpec::new("edge", RealmKind::Edge)];
    for user in [
        "",
        "Alice",
        "../x",
        "a/b",
        ".a",
        "-a",
        "a b",
        "fedgate",
        "fleet",
        "x.privileged",
    ] {
        let err = generate(&tmp.0, &options(edge(), &[user]));
        assert!(
            matches!(err, Err(DevPkiError::InvalidName { what: "user", .. })),
            "{user:?}: {err:?}"
        );
    }
    for realm in ["", "a.b", "..", "../x", "_x", "Prod", "a/b"] {
        let err = generate(
            &tmp.0,
            &options(vec![RealmSpec::new(realm, RealmKind::Edge)], &["alice"]),
        );
        assert!(
            matches!(err, Err(DevPkiError::InvalidName { what: "realm", .. })),
            "{realm:?}: {err:?}"
        );
    }
    let twice = options(vec![RealmSpec::new("a", RealmKind::Edge); 2], &[]);
    assert!(matches!(
        generate(&tmp.0, &twice),
        Err(DevPkiError::Options(_))
    ));
    assert!(!tmp.0.exists());
}

#[test]
fn never_removes_foreign_directories() -> TestResult {
    let tmp = TempDir::new("foreign");
    std::fs::create_dir_all(tmp.0.join("edge/certs"))?;
    std::fs::write(tmp.0.join("edge/notes.txt"), "mine")?;
    let opts = options(vec![RealmSpec::new("edge", RealmKind::Edge)], &[]);
    let err = generate(
        &tmp.0,
        &DevPkiOptions {
            force: true,
            ..opts
        },
    );
    assert!(
        matches!(&err, Err(DevPkiError::NotOwned { path }) if path.ends_with("edge")),
        "{err:?}"
    );
    assert!(tmp.0.join("edge/notes.txt").is_file());
    Ok(())
}

#[test]
fn load_rejects_bad_manifests() -> TestResult {
    let tmp = TempDir::new("manifest");
    std::fs::create_dir_all(&tmp.0)?;
    let pair = |p: &str| format!(r#"{{"cert":"{p}","key":"{p}"}}"#);
    let realm = |ca: &str| {
        let (s, f) = (pair("edge/certs/server.pem"), pair("edge/certs/f.pem"));
        format!(
            r#"{{"realms":{{"edge":{{"name":"edge","kind":"edge","ca":"{ca}","server":{s},"fedgate":{f},"privileged":null,"fleet":null,"users":{{}},"intermediate":null}}}}}}"#
        )
    };
    for (json, needle) in [
        ("{".to_string(), "EOF"),
        (realm("../../etc/passwd"), "not inside"),
        (realm("/etc/passwd"), "not inside"),
        (
            realm("edge/certs/ca.pem").replace(r#""kind":"edge""#, r#""kind":"mars""#),
            "unknown variant",
        ),
        (realm("edge/certs/ca.pem"), "missing"),
    ] {
        std::fs::write(tmp.0.join(MANIFEST), &json)?;
        let err = DevPki::load(&tmp.0).map(|_| ()).map_err(|e| e.to_string());
        let message = err.err().ok_or("manifest accepted")?;
        assert!(
            message.contains("pki.json") && message.contains(needle),
            "{message}"
        );
    }
    let unforced = generate(
        &tmp.0,
        &options(vec![RealmSpec::new("edge", RealmKind::Edge)], &[]),
    );
    assert!(matches!(unforced, Err(DevPkiError::Manifest { .. })));
    Ok(())
}

/// `cargo test --lib devpki -- --ignored --nocapture` prints how long the default PKI takes.
#[test]
#[ignore = "timing only; generates the full default PKI"]
fn default_pki_generation_time() -> TestResult {
    let tmp = TempDir::new("timing");
    let start = std::time::Instant::now();
    let pki = generate(&tmp.0, &DevPkiOptions::default())?;
    let elapsed = start.elapsed();
    let leaves: usize = pki.realms.values().map(|r| r.leaves().count()).sum();
    println!(
        "default dev PKI: {} realms, {leaves} leaves in {elapsed:?}",
        pki.realms.len()
    );
    for realm in pki.realms.values() {
        for pair in realm.leaves() {
            verify(&pair.cert, &realm.ca)?;
        }
    }
    Ok(())
}
