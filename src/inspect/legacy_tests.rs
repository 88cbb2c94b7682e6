//! Legacy inspection of messages fedgate signs itself, in both serializers.

use std::path::Path;

use super::{LegacyInspectOptions, inspect_legacy};
use crate::inspect::Inspection;
use crate::security::Now;
use crate::security::legacy::{LegacySigner, LegacyVerifier, NewLegacyRequest};
use crate::wire::mcollective::envelope::LegacyRequest;
use crate::wire::mcollective::{Ruby, Serializer};

const NOW: i64 = 1_795_237_728;
const ID: &str = "0123456789abcdef0123456789abcdef";
const BOTH: [Serializer; 2] = [Serializer::Marshal, Serializer::Yaml];

/// `alice.pem` and `server.pem` (private), `clients/alice.pem` and `server-public.pem`
/// (public), and `mallory.pem`, a private key nobody trusts.
fn keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clients")).unwrap();
    for name in ["server", "alice", "mallory"] {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        let private = dir.path().join(format!("{name}.pem"));
        std::fs::write(private, key.private_key_to_pem().unwrap()).unwrap();
        let public = match name {
            "server" => dir.path().join("server-public.pem"),
            "alice" => dir.path().join("clients/alice.pem"),
            _ => dir.path().join("mallory-public.pem"),
        };
        std::fs::write(public, key.public_key_to_pem().unwrap()).unwrap();
    }
    dir
}

fn verifier(dir: &Path) -> LegacyVerifier {
    LegacyVerifier::new(&dir.join("clients"), &dir.join("server-public.pem"), 30).unwrap()
}

fn at(now: i64) -> LegacyInspectOptions {
    LegacyInspectOptions {
        max_message_bytes: 1 << 20,
        now: Now::at_unix(u64::try_from(now).unwrap()),
    }
}

/// A request for `rpcutil#ping`, signed by the key in `key_file` as `cert=alice`.
fn request(dir: &Path, key_file: &str, serializer: Serializer, msgtime: i64) -> Vec<u8> {
    let signer = LegacySigner::from_file(&dir.join(key_file), "alice").unwrap();
    let msg = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str("rpcutil")),
        (Ruby::sym("action"), Ruby::str("ping")),
        (Ruby::sym("caller"), Ruby::str("cert=alice")),
        (Ruby::sym("data"), Ruby::Hash(Vec::new())),
    ]);
    let filter = Ruby::Hash(vec![(
        Ruby::str("agent"),
        Ruby::Array(vec![Ruby::str("rpcutil")]),
    )]);
    let new = NewLegacyRequest {
        msg,
        senderid: "client.example.net",
        requestid: ID,
        filter,
        collective: "mcollective",
        agent: "rpcutil",
        ttl: 60,
        msgtime,
    };
    signer
        .sign_request(serializer, &new)
        .unwrap()
        .encode(serializer)
}

/// A reply to [`ID`] from `legacy1.example.net`, signed by the key in `key_file`.
fn reply(dir: &Path, key_file: &str, serializer: Serializer) -> Vec<u8> {
    let signer = LegacySigner::from_file(&dir.join(key_file), "server").unwrap();
    let body = Ruby::Hash(vec![
        (Ruby::sym("statuscode"), Ruby::Int(0)),
        (Ruby::sym("statusmsg"), Ruby::str("OK")),
    ]);
    signer
        .sign_reply(serializer, "legacy1.example.net", ID, "rpcutil", NOW, &body)
        .unwrap()
        .encode(serializer)
}

fn protocol(serializer: Serializer) -> Option<String> {
    Some(format!("mcollective:ssl:{serializer}"))
}

#[test]
fn a_valid_request_is_described_in_the_choria_fields() {
    let dir = keys();
    for serializer in BOTH {
        let out = inspect_legacy(
            &request(dir.path(), "alice.pem", serializer, NOW),
            &verifier(dir.path()),
            &at(NOW + 5),
        );
        let expected = Inspection {
            valid: true,
            protocol: protocol(serializer),
            callerid: Some("cert=alice".into()),
            collective: Some("mcollective".into()),
            agent: Some("rpcutil".into()),
            requestid: Some(ID.into()),
            privileged: false,
            kind: Some("request"),
            signer: Some("alice".into()),
            ..Inspection::default()
        };
        assert_eq!(out, expected, "{serializer}");
    }
}

#[test]
fn a_valid_reply_names_its_sender() {
    let dir = keys();
    for serializer in BOTH {
        let out = inspect_legacy(
            &reply(dir.path(), "server.pem", serializer),
            &verifier(dir.path()),
            &at(NOW),
        );
        let expected = Inspection {
            valid: true,
            protocol: protocol(serializer),
            agent: Some("rpcutil".into()),
            requestid: Some(ID.into()),
            kind: Some("reply"),
            sender: Some("legacy1.example.net".into()),
            ..Inspection::default()
        };
        assert_eq!(out, expected, "{serializer}");
    }
}

#[test]
fn inspecting_the_same_request_twice_gives_the_same_verdict() {
    let dir = keys();
    let verifier = verifier(dir.path());
    for serializer in BOTH {
        let bytes = request(dir.path(), "alice.pem", serializer, NOW);
        let first = inspect_legacy(&bytes, &verifier, &at(NOW));
        let second = inspect_legacy(&bytes, &verifier, &at(NOW));
        assert!(first.valid, "{first:?}");
        assert_eq!(first, second);
    }
}

#[test]
fn a_tampered_body_fails_its_signature() {
    let dir = keys();
    for serializer in BOTH {
        let bytes = request(dir.path(), "alice.pem", serializer, NOW);
        // Ask for another action inside the signed body.
        let tampered = replace(&bytes, b"ping", b"pong");
        let out = inspect_legacy(&tampered, &verifier(dir.path()), &at(NOW));
        assert_eq!(
            (out.valid, out.code, out.kind),
            (false, Some("bad_signature"), Some("request")),
            "{serializer}: {out:?}"
        );
        assert_eq!(out.signer, None);
        assert_eq!(out.callerid.as_deref(), Some("cert=alice"));

        let bytes = reply(dir.path(), "server.pem", serializer);
        let tampered = replace(&bytes, b"OK", b"KO");
        let out = inspect_legacy(&tampered, &verifier(dir.path()), &at(NOW));
        assert_eq!((out.valid, out.code), (false, Some("bad_signature")));
    }
}

#[test]
fn a_message_signed_with_the_wrong_key_is_refused() {
    let dir = keys();
    for serializer in BOTH {
        let forged = request(dir.path(), "mallory.pem", serializer, NOW);
        let out = inspect_legacy(&forged, &verifier(dir.path()), &at(NOW));
        assert_eq!((out.valid, out.code), (false, Some("bad_signature")));
        // A reply signed by a client key is not a server's.
        let forged = reply(dir.path(), "alice.pem", serializer);
        let out = inspect_legacy(&forged, &verifier(dir.path()), &at(NOW));
        assert_eq!(
            (out.valid, out.code, out.kind),
            (false, Some("bad_signature"), Some("reply"))
        );
    }
}

#[test]
fn a_request_past_its_ttl_or_from_the_future_is_refused_at_now() {
    let dir = keys();
    for serializer in BOTH {
        let bytes = request(dir.path(), "alice.pem", serializer, NOW);
        let verifier = verifier(dir.path());
        assert!(inspect_legacy(&bytes, &verifier, &at(NOW + 60)).valid);
        let late = inspect_legacy(&bytes, &verifier, &at(NOW + 61));
        assert_eq!((late.valid, late.code), (false, Some("ttl_expired")));
        assert!(late.reason.unwrap_or_default().contains("61 seconds old"));
        let early = inspect_legacy(&bytes, &verifier, &at(NOW - 31));
        assert_eq!((early.valid, early.code), (false, Some("future_msgtime")));
    }
}

#[test]
fn garbage_and_unknown_callers_get_their_own_codes() {
    let dir = keys();
    let verifier = verifier(dir.path());
    let out = inspect_legacy(b"--- just text\n", &verifier, &at(NOW));
    assert_eq!(
        (out.valid, out.code, out.protocol.as_deref()),
        (
            false,
            Some("malformed_envelope"),
            Some("mcollective:ssl:yaml")
        )
    );
    let out = inspect_legacy(b"\x04\x08{", &verifier, &at(NOW));
    assert_eq!((out.valid, out.code), (false, Some("malformed_marshal")));
    let bytes = request(dir.path(), "alice.pem", Serializer::Yaml, NOW);
    let mut stranger = LegacyRequest::decode(Serializer::Yaml, &bytes, 1 << 20).unwrap();
    stranger.callerid = "cert=carol".into();
    let out = inspect_legacy(&stranger.encode(Serializer::Yaml), &verifier, &at(NOW));
    assert_eq!((out.valid, out.code), (false, Some("unknown_caller")));
    let small = LegacyInspectOptions {
        max_message_bytes: 16,
        ..at(NOW)
    };
    let out = inspect_legacy(&bytes, &verifier, &small);
    assert_eq!((out.valid, out.code), (false, Some("too_large")));
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}
