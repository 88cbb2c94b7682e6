//! Sign and verify rates of fedgate's request paths next to raw aws-lc-rs.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair as RcKeyPair, RsaKeySize,
};

use super::{BenchError, Row, interleaved, row, setup_err};
use fedgate::security::{CaBundle, CertChain, Now, Signer, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    Filter, Request, RequestEnvelope, SecureRequest, Transport, TransportHeaders,
};

/// A CA, a signer of the given size, and a verifier trusting the CA.
struct Fixture {
    signer: Signer,
    raw_key: RsaKeyPair,
    verifier: Verifier,
    bits: usize,
}

/// A fresh CA and one client leaf `cn` with a `size` RSA key: the leaf's signer, the same key
/// for raw aws-lc-rs, and the CA.
pub(crate) fn issue(
    cn: &str,
    size: RsaKeySize,
) -> Result<(Signer, RsaKeyPair, CaBundle), BenchError> {
    let ca_key = RcKeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(setup_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(setup_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(setup_err)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = RcKeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(setup_err)?;
    let mut leaf_params = CertificateParams::new(vec![cn.to_string()]).map_err(setup_err)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(setup_err)?;

    let key_pem = leaf_key.serialize_pem();
    let chain = CertChain::from_pem(&leaf.pem(), "bench leaf", 8).map_err(setup_err)?;
    let signer = Signer::new(chain, key_pem.as_bytes(), "bench key").map_err(setup_err)?;
    let raw_key = RsaKeyPair::from_pkcs8(&leaf_key.serialize_der()).map_err(setup_err)?;
    let ca = CaBundle::from_pem(ca_cert.pem().as_bytes(), "bench CA").map_err(setup_err)?;
    Ok((signer, raw_key, ca))
}

fn fixture(size: RsaKeySize) -> Result<Fixture, BenchError> {
    let (signer, raw_key, ca) = issue("bench.mcollective", size)?;
    let bits = signer.key_bits();
    Ok(Fixture {
        signer,
        raw_key,
        verifier: Verifier::with_defaults(ca, Limits::default()),
        bits,
    })
}

pub(crate) fn request(now: Now) -> Request {
    Request::new(
        r#"{"agent":"rpcutil","action":"ping","data":{}}"#.into(),
        RequestEnvelope {
            requestid: "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into(),
            senderid: "bench.example.net".into(),
            callerid: "choria=bench.mcollective".into(),
            collective: "london".into(),
            agent: "rpcutil".into(),
            ttl: 60,
            time: now.unix_seconds(),
            filter: Filter {
                agent: vec!["rpcutil".into()],
                ..Filter::default()
            },
        },
    )
}

/// The baseline of every signing row: raw aws-lc-rs RSA PKCS#1 v1.5 SHA-256 over `message`.
pub(crate) fn raw_sign<'a>(key: &'a RsaKeyPair, message: &'a [u8]) -> impl FnMut() + 'a {
    let rng = SystemRandom::new();
    let mut signature = vec![0; key.public_modulus_len()];
    move || {
        let _ = key.sign(&RSA_PKCS1_SHA256, &rng, black_box(message), &mut signature);
    }
}

/// The whole client path: encode the request, sign it, wrap secure request and transport.
pub(crate) fn sign_and_encode(signer: &Signer, request: &Request) -> Vec<u8> {
    let secure = signer
        .sign_request(request)
        .unwrap_or_else(|_| SecureRequest::new(String::new(), String::new(), String::new()));
    let mut headers = TransportHeaders {
        reply_to: Some("london.reply.0.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into()),
        mc_sender: Some("bench.example.net".into()),
        ..TransportHeaders::default()
    };
    headers.record_hop(
        "nats://127.0.0.1:4222",
        "bench.example.net",
        "nats://127.0.0.1:4222",
    );
    Transport::new(secure.encode(), headers).encode()
}

/// The whole receiving path: decode transport and secure request, verify chain, names, signature, TTL.
fn decode_and_verify(verifier: &Verifier, bytes: &[u8], now: Now) -> bool {
    let limits = Limits::default();
    Transport::decode(bytes, &limits)
        .ok()
        .and_then(|t| SecureRequest::decode(&t.data, &limits).ok())
        .is_some_and(|secure| verifier.verify(secure, now).is_ok())
}

/// Choria protocol v2: a caller signing its own request, and a server verifying it (the caller's
/// token against its issuer, the permissions, the ed25519 signature, the TTL), each next to raw
/// aws-lc-rs ed25519. The verify row checks two signatures, the token's and the request's.
fn v2_rows(budget: Duration) -> Result<Vec<Row>, BenchError> {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair};
    use fedgate::security::v2::tokens::ClientPermissions;
    use fedgate::security::v2::{Issuers, TokenIssuer, V2Verifier, check_ttl};
    use fedgate::wire::choria_v2;

    let now = Now::system();
    let org = TokenIssuer::org(&[1; 32]).map_err(setup_err)?;
    let caller = org
        .client_signer(
            &[2; 32],
            "up=bench",
            "choria",
            ClientPermissions::fleet(),
            (now.unix_seconds() - 60, 3600),
        )
        .map_err(setup_err)?;
    let issuers = Issuers::default()
        .with("choria", &org.public_key())
        .map_err(setup_err)?;
    let verifier = V2Verifier::new(issuers, Limits::default());
    let request = choria_v2::Request::new(
        br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
        "2IR5hjVmS3Jc3DjuKMFo0vGWLzD".into(),
        "bench.example.net".into(),
        "up=bench".into(),
        "choria".into(),
        "rpcutil".into(),
        60,
        now.unix_nanos(),
    );
    let signed_bytes = request.encode();
    let raw = Ed25519KeyPair::from_seed_unchecked(&[2; 32]).map_err(setup_err)?;
    let headers = || choria_v2::TransportHeaders {
        reply: Some("choria.reply.0.2IR5hjVmS3Jc3DjuKMFo0vGWLzD".into()),
        sender: "bench.example.net".into(),
        ..choria_v2::TransportHeaders::default()
    };
    let sign = |request: &choria_v2::Request| {
        choria_v2::Transport::new(caller.sign_request(request).encode(), headers()).encode()
    };
    let wire = sign(&request);
    let verify = |bytes: &[u8]| {
        let limits = Limits::default();
        choria_v2::Transport::decode(bytes, &limits)
            .ok()
            .and_then(|t| verifier.verify(&t.data, now).ok())
            .is_some_and(|signed| check_ttl(&signed.request, now).is_ok())
    };
    if !verify(&wire) {
        return Err(BenchError("the signed v2 request does not verify".into()));
    }
    let signature = raw.sign(&signed_bytes);
    let public = UnparsedPublicKey::new(&ED25519, raw.public_key().as_ref().to_vec());
    Ok(vec![
        row(
            "v2 sign ed25519 (encode+sign+wrap)".into(),
            "aws-lc-rs Ed25519KeyPair::sign",
            interleaved(
                budget,
                || {
                    black_box(raw.sign(black_box(&signed_bytes)));
                },
                || {
                    black_box(sign(black_box(&request)));
                },
            ),
        ),
        row(
            "v2 verify ed25519 (decode+token+sig+ttl)".into(),
            "aws-lc-rs ed25519 verify",
            interleaved(
                budget,
                || {
                    black_box(
                        public
                            .verify(black_box(&signed_bytes), signature.as_ref())
                            .is_ok(),
                    );
                },
                || {
                    black_box(verify(black_box(&wire)));
                },
            ),
        ),
    ])
}

/// Sign and verify rates for 2048- and 4096-bit keys, each next to raw aws-lc-rs, and the v2
/// rows.
pub fn run(budget: Duration) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for size in [RsaKeySize::_2048, RsaKeySize::_4096] {
        let fx = fixture(size)?;
        let now = Now::system();
        let req = request(now);
        let signed_bytes = req.encode();
        let full_sign = || {
            black_box(sign_and_encode(&fx.signer, black_box(&req)));
        };
        rows.push(row(
            format!("sign {} (encode+sign+wrap)", fx.bits),
            "aws-lc-rs RsaKeyPair::sign",
            interleaved(budget, raw_sign(&fx.raw_key, &signed_bytes), full_sign),
        ));

        let wire = sign_and_encode(&fx.signer, &req);
        let raw_sig = fx.signer.sign(&signed_bytes).map_err(setup_err)?;
        let public = UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            fx.raw_key.public_key().as_ref().to_vec(),
        );
        let raw_verify = || {
            black_box(public.verify(black_box(&signed_bytes), &raw_sig).is_ok());
        };
        let full_verify = || {
            black_box(decode_and_verify(&fx.verifier, black_box(&wire), now));
        };
        if !decode_and_verify(&fx.verifier, &wire, now) {
            return Err(BenchError("the signed request does not verify".into()));
        }
        rows.push(row(
            format!("verify {} (decode+chain+names+sig+ttl)", fx.bits),
            "aws-lc-rs UnparsedPublicKey::verify",
            interleaved(budget, raw_verify, full_verify),
        ));
    }
    rows.extend(v2_rows(budget)?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_request_from_the_bench_path_verifies() {
        let fx = fixture(RsaKeySize::_2048).unwrap();
        let now = Now::system();
        let wire = sign_and_encode(&fx.signer, &request(now));
        assert!(decode_and_verify(&fx.verifier, &wire, now));
        let mut tampered = wire.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        assert!(!decode_and_verify(&fx.verifier, &tampered, now));
    }
}
