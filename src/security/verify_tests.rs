//! Verifier tests with certificates made on the spot: TTL bounds, untrusted privileged signers,
//! weak keys and the Go CN rule.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    RsaKeySize,
};

use super::*;
use crate::security::Reason;
use crate::wire::choria_v1::{Filter, RequestEnvelope};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca() -> Ca {
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf signed by `ca` (or self-signed), with the given CNs in order.
fn leaf(ca: Option<&Ca>, common_names: &[&str]) -> (String, String) {
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    for cn in common_names {
        params.distinguished_name.push(DnType::CommonName, *cn);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

fn signed(cert_key: &(String, String), callerid: &str, time: i64) -> SecureRequest {
    let chain = CertChain::from_pem(&cert_key.0, "leaf", 8).unwrap();
    let signer = crate::security::Signer::new(chain, cert_key.1.as_bytes(), "key").unwrap();
    let request = Request::new(
        r#"{"agent":"rpcutil","action":"ping","data":{}}"#.into(),
        RequestEnvelope {
            requestid: "0".repeat(32),
            senderid: "test".into(),
            callerid: callerid.into(),
            collective: "c".into(),
            agent: "rpcutil".into(),
            ttl: 60,
            time,
            filter: Filter::default(),
        },
    );
    signer.sign_request(&request).unwrap()
}

fn verifier(ca: &Ca) -> Verifier {
    Verifier::with_defaults(
        CaBundle::from_pem(ca.pem.as_bytes(), "test CA").unwrap(),
        Limits::default(),
    )
}

#[test]
fn ttl_bounds_are_strict_on_both_sides() {
    let ca = new_ca();
    let alice = leaf(Some(&ca), &["alice.mcollective"]);
    let v = verifier(&ca);
    let now = Now::system();
    let t = now.unix_seconds();
    // `now` carries nanoseconds, so pin it to a whole second for exact bounds.
    let pinned = Now::at_unix(t as u64);
    let reason = |time: i64| {
        v.verify(signed(&alice, "choria=alice.mcollective", time), pinned)
            .err()
            .map(|e| e.reason())
    };
    assert_eq!(reason(t), None);
    assert_eq!(reason(t - 59), None);
    assert_eq!(reason(t + 59), None);
    assert_eq!(reason(t - 60), Some(crate::security::Reason::TtlExpired));
    assert_eq!(
        reason(t + 60),
        Some(crate::security::Reason::TtlExpired),
        "future-dated beyond the ttl"
    );
}

#[test]
fn a_privileged_name_from_an_untrusted_ca_is_refused() {
    let ca = new_ca();
    let rogue = new_ca();
    let v = verifier(&ca);
    let now = Now::system();
    for cert in [
        leaf(None, &["evil.privileged.mcollective"]),
        leaf(Some(&rogue), &["evil.privileged.mcollective"]),
    ] {
        let err = v
            .verify(signed(&cert, "up=admin", now.unix_seconds()), now)
            .unwrap_err();
        assert_eq!(err.reason(), crate::security::Reason::UnknownCa, "{err}");
    }
    let trusted = leaf(Some(&ca), &["fedgate.privileged.mcollective"]);
    let ok = v
        .verify(signed(&trusted, "up=admin", now.unix_seconds()), now)
        .unwrap();
    assert!(ok.privileged());
}

#[test]
fn the_last_common_name_decides_as_in_go() {
    let ca = new_ca();
    let v = verifier(&ca);
    let now = Now::system();
    let cert = leaf(
        Some(&ca),
        &["x.privileged.mcollective", "alice.mcollective"],
    );
    let signed_as_bob = signed(&cert, "choria=bob.mcollective", now.unix_seconds());
    let err = v.verify(signed_as_bob, now).unwrap_err();
    assert_eq!(
        err.reason(),
        crate::security::Reason::NameMismatch,
        "not privileged: {err}"
    );
    let ok = v
        .verify(
            signed(&cert, "choria=alice.mcollective", now.unix_seconds()),
            now,
        )
        .unwrap();
    assert!(!ok.privileged());
}

#[test]
fn expiry_errors_name_the_dates() {
    let ca = new_ca();
    let alice = leaf(Some(&ca), &["alice.mcollective"]);
    let later = Now::at_unix(Now::system().unix_seconds() as u64 + 7 * 86_400);
    let err = verifier(&ca)
        .verify(
            signed(&alice, "choria=alice.mcollective", later.unix_seconds()),
            later,
        )
        .unwrap_err();
    assert_eq!(err.reason(), crate::security::Reason::ExpiredCertificate);
    let text = err.to_string();
    let expiry_day = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .date()
        .to_string();
    assert!(
        text.contains("alice.mcollective") && text.contains(&expiry_day),
        "{text}"
    );
}

#[test]
fn a_remembered_chain_is_rechecked_outside_its_validity_and_never_skips_the_rest() {
    let ca = new_ca();
    let alice = leaf(Some(&ca), &["alice.mcollective"]);
    let v = verifier(&ca);
    let now = Now::system();
    let at = now.unix_seconds();
    // A valid chain carrying a bad signature is not remembered.
    let mut forged = signed(&alice, "choria=alice.mcollective", at);
    forged.message = forged.message.replace("ping", "pong");
    let err = v.verify(forged, now).unwrap_err();
    assert_eq!(err.reason(), Reason::BadSignature);
    assert_eq!(v.trusted.0.len(), 0, "a failed request teaches nothing");
    v.verify(signed(&alice, "choria=alice.mcollective", at), now)
        .unwrap();
    assert_eq!(v.trusted.0.len(), 1, "the chain is remembered");
    // Padded text with a forged signature verifies its chain but is not remembered.
    let mut padded = signed(&alice, "choria=alice.mcollective", at);
    padded.pubcert = format!("junk 1\n{}\njunk 2\n", padded.pubcert);
    padded.signature = signed(&alice, "choria=alice.mcollective", at - 1).signature;
    assert_eq!(
        v.verify(padded, now).unwrap_err().reason(),
        Reason::BadSignature
    );
    assert_eq!(v.trusted.0.len(), 1);
    // Same chain: the caller name, the signature and the TTL are still checked every time.
    let err = v
        .verify(signed(&alice, "choria=bob.mcollective", at), now)
        .unwrap_err();
    assert_eq!(err.reason(), Reason::NameMismatch);
    let mut forged = signed(&alice, "choria=alice.mcollective", at);
    forged.message = forged.message.replace("ping", "pong");
    let err = v.verify(forged, now).unwrap_err();
    assert_eq!(err.reason(), Reason::BadSignature);
    // Two days on the leaf has expired: the remembered result is not used.
    let later = Now::at_unix(u64::try_from(at).unwrap() + 2 * 86_400);
    let err = v
        .verify_signature(signed(&alice, "choria=alice.mcollective", at), later)
        .unwrap_err();
    assert_eq!(err.reason(), Reason::ExpiredCertificate, "{err}");
    // A clone shares what was learnt; a verifier for another CA does not trust the chain.
    assert_eq!(v.clone().trusted.0.len(), 1);
    let err = verifier(&new_ca())
        .verify(signed(&alice, "choria=alice.mcollective", at), now)
        .unwrap_err();
    assert_eq!(err.reason(), Reason::UnknownCa);
}
