//! The bodies of the cargo-fuzz targets in `fuzz/`, here so that `tests/fuzz_regressions.rs`
//! replays every input a fuzzer ever crashed on (`fuzz/regressions/<target>/`) through exactly
//! what the fuzzer ran. Each takes arbitrary bytes and panics only on a broken invariant: a
//! decoder may refuse anything, but what it accepts must encode to something it accepts again.

use std::path::Path;

use fedgate::config::Config;
use fedgate::edge::dispatch::Job;
use fedgate::edge::protocol::ClientMessage;
use fedgate::policy::{Effect, Groups, PolicyFile, PolicySet, Query, Vantage, authorize};
use fedgate::security::Now;
use fedgate::security::v2::{Issuers, V2Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{RelayTransport, SecureReply, SecureRequest, Transport};
use fedgate::wire::choria_v2;
use fedgate::wire::mcollective::envelope::{LegacyReply, LegacyRequest};
use fedgate::wire::mcollective::{Serializer, marshal, yaml};

/// What a fuzz target runs on one input.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/Cargo.toml` names them.
pub const TARGETS: &[(&str, Target)] = &[
    ("choria", choria),
    ("choria_v2", choria_v2),
    ("marshal", marshal),
    ("yaml", yaml),
    ("edge_json", edge_json),
    ("actionpolicy", actionpolicy),
    ("config", config),
];

/// The Choria v1 decoders: transport (and its relay form), secure request and secure reply
/// with the documents inside them.
pub fn choria(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(transport) = Transport::decode(data, &limits) {
        let again =
            Transport::decode(&transport.encode(), &limits).expect("an encoded transport decodes");
        assert_eq!(again, transport);
    }
    if let Ok(relay) = RelayTransport::decode(data, &limits) {
        let encoded = relay.encode();
        let again = RelayTransport::decode(&encoded, &limits).expect("a relayed transport decodes");
        assert_eq!(again.headers, relay.headers);
    }
    if let Ok(secure) = SecureRequest::decode(data, &limits) {
        SecureRequest::decode(&secure.encode(), &limits)
            .expect("an encoded secure request decodes");
        if let Ok(request) = secure.request(&limits) {
            let _ = request.rpc(&limits);
        }
    }
    if let Ok(secure) = SecureReply::decode(data, &limits) {
        SecureReply::decode(&secure.encode(), &limits).expect("an encoded secure reply decodes");
        if let Ok(reply) = secure.reply(&limits) {
            let _ = reply.rpc(&limits);
        }
    }
}

/// The issuer the `choria_v2` seeds' tokens were issued by (seed `[1; 32]`).
pub const FUZZ_V2_ISSUER: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";

/// The Choria v2 decoders on one input: transport, secure request (verified against a fixed
/// issuer, so arbitrary tokens reach the token checks) and secure reply with the documents
/// inside them.
pub fn choria_v2(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(transport) = choria_v2::Transport::decode(data, &limits) {
        let again = choria_v2::Transport::decode(&transport.encode(), &limits)
            .expect("an encoded v2 transport decodes");
        assert_eq!(again, transport);
    }
    if let Ok(secure) = choria_v2::SecureRequest::decode(data, &limits) {
        let again = choria_v2::SecureRequest::decode(&secure.encode(), &limits)
            .expect("an encoded v2 secure request decodes");
        assert_eq!(again, secure);
        if let Ok(request) = secure.decode_request(&limits) {
            let _ = request.rpc(&limits);
        }
        let issuers = Issuers::default()
            .with("choria", FUZZ_V2_ISSUER)
            .expect("the fuzz issuer is a key");
        let _ = V2Verifier::new(issuers, limits).verify_secure(secure, Now::at_unix(1_780_000_000));
    }
    if let Ok(secure) = choria_v2::SecureReply::decode(data, &limits) {
        choria_v2::SecureReply::decode(&secure.encode(), &limits)
            .expect("an encoded v2 secure reply decodes");
        if let Ok(reply) = secure.decode_reply(&limits) {
            let _ = reply.rpc(&limits);
        }
    }
}

/// Ruby Marshal: values, raw nodes (which must re-encode to the same bytes) and the legacy
/// request and reply envelopes.
pub fn marshal(data: &[u8]) {
    if let Ok(value) = marshal::decode(data) {
        let encoded = marshal::encode(&value);
        let again = marshal::decode(&encoded).expect("an encoded value decodes");
        assert_eq!(marshal::encode(&again), encoded);
        let raw = marshal::decode_raw(&encoded).expect("an encoded value decodes raw");
        assert_eq!(marshal::encode_raw(&raw), encoded);
    }
    if let Ok(raw) = marshal::decode_raw(data) {
        let encoded = marshal::encode_raw(&raw);
        let again = marshal::decode_raw(&encoded).expect("a re-encoded raw node decodes");
        assert_eq!(again, raw);
    }
    let _ = LegacyRequest::decode(Serializer::Marshal, data, 1 << 20);
    let _ = LegacyReply::decode(Serializer::Marshal, data, 1 << 20);
}

/// YAML as Psych writes it, and the envelopes in YAML: what decodes re-encodes to YAML that
/// decodes, after which encoding is a fixed point.
pub fn yaml(data: &[u8]) {
    if let Ok(value) = yaml::decode(data) {
        let text = yaml::encode(&value);
        let again = yaml::decode(text.as_bytes())
            .unwrap_or_else(|err| panic!("{err}: our own YAML does not decode:\n{text}"));
        assert_eq!(yaml::encode(&again), text);
    }
    let _ = LegacyRequest::decode(Serializer::Yaml, data, 1 << 20);
    let _ = LegacyReply::decode(Serializer::Yaml, data, 1 << 20);
}

/// A WebSocket text frame as the edge reads it, then what the session does with it before any
/// network I/O: the `rpc` checks, and the layers of a `signed` request.
pub fn edge_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Rpc(rpc)) => {
            let _ = Job::from_rpc(*rpc);
        }
        Ok(ClientMessage::Signed(signed)) => {
            let bytes = match &signed.request {
                serde_json::Value::String(text) => text.clone().into_bytes(),
                other => serde_json::to_vec(other).expect("a JSON value serializes"),
            };
            if let Ok(secure) = SecureRequest::decode(&bytes, &limits)
                && let Ok(request) = secure.request(&limits)
            {
                let _ = request.rpc(&limits);
            }
        }
        Ok(ClientMessage::Auth { .. } | ClientMessage::Cancel { .. }) | Err(_) => {}
    }
}

/// An actionpolicy file and a groups file; a policy that parses is asked for a decision, and
/// without an allow in it nothing is permitted.
pub fn actionpolicy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Groups::parse("policy-groups", text);
    let Ok(file) = PolicyFile::parse("rpcutil.policy", text) else {
        return;
    };
    let mut set = PolicySet::empty(Effect::Deny);
    set.insert(None, "rpcutil", file);
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "up=alice",
    };
    if authorize(&set, &query, Vantage::Gateway).allowed() {
        assert!(
            text.contains("allow"),
            "permitted without an allow in the policy:\n{text}"
        );
    }
}

/// `fedgate run`'s config file: TOML, then every check `fedgate run` makes before it starts.
/// Relative paths resolve against a directory that does not exist, so the checks that read
/// files fail cleanly instead of reading this machine's.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(text, Path::new("/nonexistent/fedgate-fuzz/config.toml"));
}
