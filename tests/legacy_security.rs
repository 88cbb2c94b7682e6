//! The legacy `ssl` plugin's signatures and the checks fedgate adds, with keys made here and
//! against the messages captured from the real Debian mcollective.

mod support;

use std::path::Path;

use fedgate::security::legacy::{
    LegacyCall, LegacyRefusal, LegacySigner, LegacyVerifier, NewLegacyRequest,
};
use fedgate::wire::mcollective::envelope::{LegacyReply, LegacyRequest};
use fedgate::wire::mcollective::{Ruby, Serializer};

const NOW: i64 = 1_795_237_728;

/// A directory with `server.pem`/`server-public.pem`, `alice.pem` (private), the client
/// directory `clients/alice.pem` (public), and `mallory.pem`, a key nobody trusts.
fn keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clients")).unwrap();
    for name in ["server", "alice", "mallory"] {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.pem")),
            key.private_key_to_pem().unwrap(),
        )
        .unwrap();
        let public = key.public_key_to_pem().unwrap();
        let target = match name {
            "server" => dir.path().join("server-public.pem"),
            "alice" => dir.path().join("clients/alice.pem"),
            _ => dir.path().join("mallory-public.pem"),
        };
        std::fs::write(target, public).unwrap();
    }
    dir
}

fn filter(agent: &str) -> Ruby {
    Ruby::Hash(
        ["fact", "cf_class", "agent", "identity", "compound"]
            .iter()
            .map(|k| {
                let items = if *k == "agent" {
                    vec![Ruby::str(agent)]
                } else {
                    Vec::new()
                };
                (Ruby::str(k), Ruby::Array(items))
            })
            .collect(),
    )
}

fn rpc(agent: &str, action: &str) -> Ruby {
    Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str(agent)),
        (Ruby::sym("action"), Ruby::str(action)),
        (Ruby::sym("caller"), Ruby::str("cert=alice")),
        (
            Ruby::sym("data"),
            Ruby::Hash(vec![(Ruby::sym("process_results"), Ruby::Bool(true))]),
        ),
    ])
}

fn signed(dir: &Path, serializer: Serializer, msgtime: i64, requestid: &str) -> LegacyRequest {
    let signer = LegacySigner::from_file(&dir.join("alice.pem"), "alice").unwrap();
    signer
        .sign_request(
            serializer,
            &NewLegacyRequest {
                msg: rpc("rpcutil", "ping"),
                senderid: "client.example.net",
                requestid,
                filter: filter("rpcutil"),
                collective: "mcollective",
                agent: "rpcutil",
                ttl: 60,
                msgtime,
            },
        )
        .unwrap()
}

fn verifier(dir: &Path) -> LegacyVerifier {
    LegacyVerifier::new(&dir.join("clients"), &dir.join("server-public.pem"), 30).unwrap()
}

const ID: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn signed_requests_and_replies_verify_in_both_serializers() {
    let dir = keys();
    for serializer in [Serializer::Marshal, Serializer::Yaml] {
        let verifier = verifier(dir.path());
        let request = signed(dir.path(), serializer, NOW, ID);
        // Through the wire and back.
        let bytes = request.encode(serializer);
        let request = LegacyRequest::decode(serializer, &bytes, 1 << 20).unwrap();
        let verified = verifier
            .verify_request(serializer, request, NOW + 5)
            .unwrap();
        assert_eq!(verified.cert_name, "alice");
        assert!(matches!(
            verified.call,
            LegacyCall::Rpc { ref agent, ref action, process_results: true, .. }
                if agent == "rpcutil" && action == "ping"
        ));

        let server = LegacySigner::from_file(&dir.path().join("server.pem"), "server").unwrap();
        let body = Ruby::Hash(vec![
            (Ruby::sym("statuscode"), Ruby::Int(0)),
            (Ruby::sym("statusmsg"), Ruby::str("OK")),
            (
                Ruby::sym("data"),
                Ruby::Hash(vec![(Ruby::sym("pong"), Ruby::Int(NOW))]),
            ),
        ]);
        let reply = server
            .sign_reply(serializer, "node1", ID, "rpcutil", NOW, &body)
            .unwrap();
        let reply = LegacyReply::decode(serializer, &reply.encode(serializer), 1 << 20).unwrap();
        verifier.verify_reply(&reply).unwrap();
        assert_eq!(reply.reply_body(serializer).unwrap(), body);
        // A reply signed by anyone else is refused.
        let forged = LegacySigner::from_file(&dir.path().join("mallory.pem"), "x")
            .unwrap()
            .sign_reply(serializer, "node1", ID, "rpcutil", NOW, &body)
            .unwrap();
        assert!(matches!(
            verifier.verify_reply(&forged),
            Err(LegacyRefusal::BadSignature(_))
        ));
    }
}

#[test]
fn every_bad_request_is_refused_with_its_own_code() {
    let dir = keys();
    let s = Serializer::Marshal;
    let code = |request: LegacyRequest, now: i64| {
        verifier(dir.path())
            .verify_request(s, request, now)
            .err()
            .map(|e| e.code())
    };
    let good = signed(dir.path(), s, NOW, ID);

    let mut tampered = good.clone();
    let at = tampered.body.len() - 3;
    tampered.body[at] ^= 1;
    assert_eq!(code(tampered, NOW), Some("bad_signature"));

    // Signed by a key that is not the caller's.
    let mallory = LegacySigner::from_file(&dir.path().join("mallory.pem"), "alice").unwrap();
    let mut wrong_key = good.clone();
    wrong_key.hash = mallory.sign(&wrong_key.body).unwrap();
    assert_eq!(code(wrong_key, NOW), Some("bad_signature"));

    let mut unknown = good.clone();
    unknown.callerid = "cert=mallory".into();
    assert_eq!(code(unknown, NOW), Some("unknown_caller"));
    let mut odd = good.clone();
    odd.callerid = "cert=../etc/passwd".into();
    assert_eq!(code(odd, NOW), Some("bad_callerid"));

    assert_eq!(code(good.clone(), NOW + 61), Some("ttl_expired"));
    assert_eq!(code(good.clone(), NOW - 31), Some("future_msgtime"));

    let mut outer_ttl = good.clone();
    outer_ttl.ttl = 3600;
    assert_eq!(code(outer_ttl, NOW), Some("ttl_mismatch"));

    // The unsigned :agent and filter must agree with the signed agent.
    let mut agent = good.clone();
    agent.agent = "puppet".into();
    assert_eq!(code(agent, NOW), Some("unsigned_field_disagrees"));
    let mut filter_agent = good.clone();
    filter_agent.filter = filter("puppet");
    assert_eq!(code(filter_agent, NOW), Some("unsigned_field_disagrees"));

    // The ssl plugin does not sign the request id, so the legacy ingress claims the signed body
    // under its request id: the same frame again is a replay, and directed copies pass once per
    // node, never also as a broadcast. The body under another request id is a copy, which is
    // served a bounded number of times within its TTL, as mcollectived serves each one.
    let verifier = verifier(dir.path());
    let guard = fedgate::gateway::ReplayGuard::local();
    let again = |request: &LegacyRequest, target: Option<&str>| {
        let verified = verifier.verify_request(s, request.clone(), NOW).unwrap();
        let nodes: Vec<String> = target.map(str::to_string).into_iter().collect();
        let exact = [&request.body[..], b"\0", request.requestid.as_bytes()].concat();
        let claim = fedgate::gateway::Claim {
            realm: &verified.cert_name,
            signed: &exact,
            collective: "london",
            mode: match nodes.as_slice() {
                [] => fedgate::gateway::Mode::Broadcast,
                nodes => fedgate::gateway::Mode::Directed(nodes),
            },
        };
        futures::executor::block_on(guard.claim(&claim, NOW + 60, NOW))
            .err()
            .map(|e| e.code())
    };
    let copy = |request: &LegacyRequest| {
        let copy = fedgate::gateway::replay::BodyCopy {
            realm: "alice",
            signed: &request.body,
            collective: "london",
            request_id: &request.requestid,
        };
        futures::executor::block_on(guard.copy(&copy, 2, NOW + 60, NOW)).map_err(|e| e.code())
    };
    assert_eq!(again(&good, None), None);
    assert_eq!(again(&good, None), Some("replay"));
    assert_eq!(copy(&good), Ok(0));
    let mut renamed = good.clone();
    renamed.requestid = "ffffffffffffffffffffffffffffffff".into();
    assert_eq!(again(&renamed, None), None);
    assert_eq!(copy(&renamed), Ok(1));
    assert_eq!(copy(&good), Ok(0));
    renamed.requestid = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".into();
    assert_eq!(copy(&renamed), Err("replay"));
    // Claimed as a broadcast, so not directed as well.
    assert_eq!(again(&good, Some("node1")), Some("replay"));
    let directed = signed(dir.path(), s, NOW - 1, ID);
    assert_eq!(again(&directed, Some("node1")), None);
    assert_eq!(again(&directed, Some("node2")), None);
    assert_eq!(again(&directed, Some("node2")), Some("replay"));
    assert_eq!(again(&directed, None), Some("replay"));
}

#[test]
fn malformed_marshal_and_yaml_are_refused_with_a_typed_error() {
    for (serializer, bytes) in [
        (Serializer::Marshal, &b"\x04\x08{\x06:\x09body"[..]),
        (Serializer::Marshal, b"\x04\x08o:\x0bObject\x00"),
        (Serializer::Marshal, b"\x04\x07{\x00"),
        (Serializer::Yaml, b"---\n:body: [unclosed\n"),
        (Serializer::Yaml, b"--- !ruby/object:Gem::Installer\ni: x\n"),
        (Serializer::Yaml, b"---\n:body: &a x\n:hash: *a\n"),
    ] {
        let err = LegacyRequest::decode(serializer, bytes, 1 << 20).unwrap_err();
        assert!(
            ["malformed_marshal", "malformed_yaml"].contains(&err.code()),
            "{err}"
        );
    }
}

#[test]
fn captured_messages_verify_and_fedgate_signs_the_same_bytes() {
    let Some(root) = support::vectors_dir() else {
        eprintln!("skipping: ../shared/vectors is not present");
        return;
    };
    let root = root.join("mcollective");
    let keys = root.join("keys");
    let verifier =
        LegacyVerifier::new(&keys.join("clients"), &keys.join("server-public.pem"), 30).unwrap();
    let alice = LegacySigner::from_file(&keys.join("alice-private.pem"), "alice").unwrap();
    let server = LegacySigner::from_file(&keys.join("server-private.pem"), "server").unwrap();
    let mut checked = 0;
    for (dir, serializer) in [("marshal", Serializer::Marshal), ("yaml", Serializer::Yaml)] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if !name.ends_with("request.bin") && !name.ends_with("reply.bin") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if name.ends_with("request.bin") {
                let request = LegacyRequest::decode(serializer, &bytes, 1 << 20).unwrap();
                assert_eq!(alice.sign(&request.body).unwrap(), request.hash, "{name}");
                let now = request.msgtime;
                verifier
                    .verify_request(serializer, request, now)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                let reply = LegacyReply::decode(serializer, &bytes, 1 << 20).unwrap();
                assert_eq!(server.sign(&reply.body).unwrap(), reply.hash, "{name}");
                verifier.verify_reply(&reply).unwrap();
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
}
