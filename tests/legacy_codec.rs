//! The legacy codecs against every message captured from the real Debian mcollective 2.12:
//! Marshal and YAML documents decode and encode back to the same bytes, envelopes decode, and
//! their bodies are exactly the bytes that were signed.

mod support;

use std::path::{Path, PathBuf};

use fedgate::wire::mcollective::envelope::{LegacyReply, LegacyRequest, base64_decode};
use fedgate::wire::mcollective::{Ruby, Serializer, marshal, yaml};

/// The captured messages: (path, serializer, is a request).
fn captured() -> Option<Vec<(PathBuf, Serializer, bool)>> {
    let Some(root) = support::vectors_dir() else {
        eprintln!(
            "skipping: ../shared/vectors is not present (set FEDGATE_VECTORS to point at it)"
        );
        return None;
    };
    let mut out = Vec::new();
    for (dir, serializer) in [("marshal", Serializer::Marshal), ("yaml", Serializer::Yaml)] {
        let dir = root.join("mcollective").join(dir);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.ends_with(".bin")
                    && !name.ends_with(".frame.bin")
                    && !name.ends_with(".inner.bin")
                    && !name.ends_with(".sig.bin")
            })
            .collect();
        names.sort();
        for path in names {
            let request = path.to_str().unwrap().contains("-request");
            out.push((path, serializer, request));
        }
    }
    assert_eq!(out.len(), 40, "40 captured messages");
    Some(out)
}

fn sibling(path: &Path, suffix: &str) -> Vec<u8> {
    let name = path.to_str().unwrap().replace(".bin", suffix);
    std::fs::read(name).unwrap()
}

#[test]
fn every_captured_document_round_trips_byte_for_byte() {
    let Some(messages) = captured() else { return };
    for (path, serializer, _) in &messages {
        let bytes = std::fs::read(path).unwrap();
        let inner = sibling(path, ".inner.bin");
        for doc in [&bytes, &inner] {
            let again = match serializer {
                Serializer::Marshal => marshal::encode_raw(&marshal::decode_raw(doc).unwrap()),
                Serializer::Yaml => yaml::encode(&yaml::decode(doc).unwrap()).into_bytes(),
            };
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(doc),
                "{}",
                path.display()
            );
            assert_eq!(&again, doc, "{}", path.display());
        }
    }
}

#[test]
fn envelopes_decode_and_their_bodies_are_the_signed_bytes() {
    let Some(messages) = captured() else { return };
    for (path, serializer, request) in &messages {
        let bytes = std::fs::read(path).unwrap();
        let inner = sibling(path, ".inner.bin");
        let signature = sibling(path, ".sig.bin");
        if *request {
            let envelope = LegacyRequest::decode(*serializer, &bytes, 1 << 20).unwrap();
            assert_eq!(envelope.body, inner, "{}", path.display());
            assert_eq!(base64_decode(&envelope.hash).unwrap(), signature);
            assert_eq!(envelope.callerid, "cert=alice");
            let body = envelope.signed_body(*serializer).unwrap();
            assert_eq!((body.ttl, body.msgtime), (envelope.ttl, envelope.msgtime));
            // Re-encoded envelopes read back the same (byte-exact in YAML, where no links differ).
            let again = envelope.encode(*serializer);
            assert_eq!(
                LegacyRequest::decode(*serializer, &again, 1 << 20).unwrap(),
                envelope
            );
            if *serializer == Serializer::Yaml {
                assert_eq!(again, bytes, "{}", path.display());
            }
            match &body.msg {
                Ruby::Str(ping) => assert_eq!(ping, "ping"),
                rpc => assert_eq!(
                    rpc.get("agent").and_then(Ruby::as_str),
                    Some(envelope.agent.as_str())
                ),
            }
        } else {
            let envelope = LegacyReply::decode(*serializer, &bytes, 1 << 20).unwrap();
            assert_eq!(envelope.body, inner, "{}", path.display());
            assert_eq!(base64_decode(&envelope.hash).unwrap(), signature);
            let again = envelope.encode(*serializer);
            assert_eq!(
                LegacyReply::decode(*serializer, &again, 1 << 20).unwrap(),
                envelope
            );
            if *serializer == Serializer::Yaml {
                assert_eq!(again, bytes, "{}", path.display());
            }
            let body = envelope.reply_body(*serializer).unwrap();
            assert!(
                body == Ruby::str("pong") || body.get("statuscode").is_some(),
                "{body:?}"
            );
        }
    }
}

#[test]
fn a_size_limit_is_checked_before_parsing() {
    let big = vec![b'x'; 2048];
    assert!(LegacyRequest::decode(Serializer::Yaml, &big, 1024).is_err());
    assert!(LegacyReply::decode(Serializer::Marshal, &big, 1024).is_err());
}
