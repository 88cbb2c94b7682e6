//! `fedgate inspect --legacy` as a program: messages fedgate signs itself, usage errors, and,
//! when `../shared/vectors` is present, every message captured from the real Debian
//! mcollective, in both serializers.

mod support;

use std::path::Path;
use std::process::Command;

use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::wire::mcollective::{Ruby, Serializer};
use serde_json::Value;

const NOW: i64 = 1_795_237_728;
const ID: &str = "0123456789abcdef0123456789abcdef";

/// `alice.pem`/`server.pem` (private), `clients/alice.pem` and `server-public.pem` (public).
fn keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clients")).unwrap();
    for (name, public) in [
        ("alice", "clients/alice.pem"),
        ("server", "server-public.pem"),
    ] {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        let private = dir.path().join(format!("{name}.pem"));
        std::fs::write(private, key.private_key_to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join(public), key.public_key_to_pem().unwrap()).unwrap();
    }
    dir
}

fn discovery(dir: &Path, serializer: Serializer) -> Vec<u8> {
    let signer = LegacySigner::from_file(&dir.join("alice.pem"), "alice").unwrap();
    let new = NewLegacyRequest {
        msg: Ruby::str("ping"),
        senderid: "client.example.net",
        requestid: ID,
        filter: Ruby::Hash(Vec::new()),
        collective: "mcollective",
        agent: "discovery",
        ttl: 60,
        msgtime: NOW,
    };
    signer
        .sign_request(serializer, &new)
        .unwrap()
        .encode(serializer)
}

fn pong(dir: &Path, serializer: Serializer) -> Vec<u8> {
    let signer = LegacySigner::from_file(&dir.join("server.pem"), "server").unwrap();
    signer
        .sign_reply(
            serializer,
            "node1",
            ID,
            "discovery",
            NOW,
            &Ruby::str("pong"),
        )
        .unwrap()
        .encode(serializer)
}

/// Runs `fedgate inspect --legacy` on `file`; returns the exit code and the printed JSON.
fn inspect(clients: &Path, server: &Path, now: i64, file: &Path) -> (Option<i32>, Value) {
    let output = Command::new(support::fedgate_bin())
        .args(["inspect", "--legacy", "--client-certs"])
        .arg(clients)
        .arg("--server-cert")
        .arg(server)
        .args(["--now", &now.to_string()])
        .arg(file)
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; stderr: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), value)
}

#[test]
fn signed_messages_inspect_as_valid_twice_and_expired_ones_do_not() {
    let dir = keys();
    let (clients, server) = (
        dir.path().join("clients"),
        dir.path().join("server-public.pem"),
    );
    for serializer in [Serializer::Marshal, Serializer::Yaml] {
        let request = dir.path().join(format!("request.{serializer}"));
        std::fs::write(&request, discovery(dir.path(), serializer)).unwrap();
        for _ in 0..2 {
            let (code, out) = inspect(&clients, &server, NOW + 1, &request);
            assert_eq!(code, Some(0), "{out}");
            assert_eq!(out["protocol"], format!("mcollective:ssl:{serializer}"));
            assert_eq!(
                (
                    &out["kind"],
                    &out["callerid"],
                    &out["agent"],
                    &out["signer"]
                ),
                (
                    &Value::from("request"),
                    &Value::from("cert=alice"),
                    &Value::from("discovery"),
                    &Value::from("alice")
                )
            );
            assert_eq!(out["privileged"], false);
        }
        let (code, out) = inspect(&clients, &server, NOW + 61, &request);
        assert_eq!((code, &out["code"]), (Some(1), &Value::from("ttl_expired")));

        let reply = dir.path().join(format!("reply.{serializer}"));
        std::fs::write(&reply, pong(dir.path(), serializer)).unwrap();
        let (code, out) = inspect(&clients, &server, NOW, &reply);
        assert_eq!(
            (code, &out["kind"]),
            (Some(0), &Value::from("reply")),
            "{out}"
        );
        assert_eq!(out["sender"], "node1");
        // Verified with a client's key instead of the servers' one, it fails.
        let wrong = clients.join("alice.pem");
        let (code, out) = inspect(&clients, &wrong, NOW, &reply);
        assert_eq!(
            (code, &out["code"]),
            (Some(1), &Value::from("bad_signature"))
        );
    }
}

#[test]
fn missing_or_mixed_flags_are_usage_errors() {
    let dir = keys();
    let file = dir.path().join("request");
    std::fs::write(&file, discovery(dir.path(), Serializer::Yaml)).unwrap();
    let run = |args: &[&str]| {
        Command::new(support::fedgate_bin())
            .arg("inspect")
            .args(args)
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    for args in [
        &["--legacy", "--client-certs", "clients"][..],
        &["--legacy", "--server-cert", "server-public.pem"],
        &[
            "--client-certs",
            "clients",
            "--server-cert",
            "server-public.pem",
        ],
        &[
            "--legacy",
            "--ca",
            "server-public.pem",
            "--client-certs",
            "clients",
            "--server-cert",
            "server-public.pem",
        ],
        &[
            "--legacy",
            "--client-certs",
            "nowhere",
            "--server-cert",
            "server-public.pem",
        ],
        &[
            "--legacy",
            "--client-certs",
            "clients",
            "--server-cert",
            "missing.pem",
        ],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn captured_legacy_messages_inspect_as_valid() {
    let Some(root) = support::vectors_dir() else {
        eprintln!("skipping: ../shared/vectors is not present");
        return;
    };
    let root = root.join("mcollective");
    let keys = root.join("keys");
    let (clients, server) = (keys.join("clients"), keys.join("server-public.pem"));
    let mut checked = 0;
    for dir in ["marshal", "yaml"] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with("request.bin") || name.ends_with("reply.bin")
            })
            .collect();
        names.sort();
        for path in names {
            let decoded: Value = serde_json::from_slice(
                &std::fs::read(path.with_extension("decoded.json")).unwrap(),
            )
            .unwrap();
            let outer = &decoded["outer"];
            let now = outer[":msgtime"].as_i64().unwrap();
            let (code, out) = inspect(&clients, &server, now, &path);
            let name = path.display();
            assert_eq!(code, Some(0), "{name}: {out}");
            assert_eq!(out["protocol"], format!("mcollective:ssl:{dir}"), "{name}");
            assert_eq!(out["requestid"], outer[":requestid"], "{name}");
            assert_eq!(out["kind"], decoded["kind"], "{name}");
            if out["kind"] == "request" {
                assert_eq!(out["callerid"], outer[":callerid"], "{name}");
                assert_eq!(out["collective"], outer[":collective"], "{name}");
                assert_eq!(out["agent"], outer[":agent"], "{name}");
            } else {
                assert_eq!(out["sender"], outer[":senderid"], "{name}");
                assert_eq!(out["agent"], outer[":senderagent"], "{name}");
            }
            // An hour later a request has expired; a reply carries no TTL.
            let (code, out) = inspect(&clients, &server, now + 3600, &path);
            let expired = out["kind"] == "request";
            assert_eq!(code, Some(if expired { 1 } else { 0 }), "{name}: {out}");
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
}
