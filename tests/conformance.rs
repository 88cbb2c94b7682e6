//! Conformance with the published Choria v1 material in `../shared/vectors` (skipped when absent):
//! every message fedgate emits validates against the v1 schemas, and the examples verify with
//! `fedgate inspect`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use fedgate::client::RpcCall;
use fedgate::security::{CaBundle, Now, Reason, Signer, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FactFilter, Filter, Request, RequestEnvelope, SecureReply, SecureRequest, Transport,
};
use futures::StreamExt;
use serde_json::Value;
use support::{Network, fedgate_bin, vectors_dir};

fn vectors() -> Option<PathBuf> {
    let dir = vectors_dir();
    if dir.is_none() {
        eprintln!(
            "skipping: ../shared/vectors is not present (set FEDGATE_VECTORS to point at it)"
        );
    }
    dir
}

fn schema(vectors: &Path, name: &str) -> jsonschema::Validator {
    let path = vectors
        .join("choria/schemas/choria/protocol/v1")
        .join(format!("{name}.json"));
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_valid(vectors: &Path, name: &str, bytes: &[u8]) {
    let doc: Value =
        serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let validator = schema(vectors, name);
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not validate: {errors:?}\n{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitted_requests_and_replies_validate_against_the_v1_schemas() {
    let Some(vectors) = vectors() else { return };
    let network = Network::start("london");
    let fleet = network.start_fleet(3).await;
    let client = network.client(support::user("london", "alice"), None).await;
    let nats = network.connect_as("alice").await;

    for agent_action in [("rpcutil", "inventory"), ("discovery", "ping")] {
        let mut call = RpcCall::new("london", agent_action.0, agent_action.1);
        call.filter.fact = vec![FactFilter::parse("country=uk").unwrap()];
        call.filter.cf_class = vec!["base".into()];
        call.filter.identity = vec!["london-0000".into()];
        let (request, transport) = client.build(&call, &"f".repeat(32), Now::system()).unwrap();
        let transport_bytes = transport.encode();
        assert_valid(&vectors, "transport", &transport_bytes);
        assert_valid(&vectors, "secure_request", &transport.data);
        let secure = SecureRequest::decode(&transport.data, &Limits::default()).unwrap();
        assert_valid(&vectors, "request", secure.message.as_bytes());
        if agent_action.0 != "discovery" {
            assert!(
                request.message.starts_with('{'),
                "the payload is emitted as raw JSON"
            );
        }

        let reply_to = transport.headers.reply_to.clone().unwrap();
        let mut replies = nats.subscribe(reply_to).await.unwrap();
        nats.flush().await.unwrap();
        let subject = format!("london.broadcast.agent.{}", agent_action.0);
        nats.publish(subject, Bytes::from(transport_bytes))
            .await
            .unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), replies.next())
            .await
            .unwrap()
            .unwrap();
        assert_valid(&vectors, "transport", &reply.payload);
        let reply_transport = Transport::decode(&reply.payload, &Limits::default()).unwrap();
        assert_valid(&vectors, "secure_reply", &reply_transport.data);
        let secure_reply = SecureReply::decode(&reply_transport.data, &Limits::default()).unwrap();
        assert_valid(&vectors, "reply", secure_reply.message.as_bytes());
    }
    fleet.shutdown().await;
}

#[test]
fn published_examples_verify_with_fedgate_inspect() {
    let Some(vectors) = vectors() else { return };
    let examples = vectors.join("choria/examples");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(examples.join("manifest.json")).unwrap()).unwrap();
    let now = manifest["now_unix"].as_u64().unwrap().to_string();
    let ca = vectors.join("choria/certs/good/certs/ca.pem");
    let mut checked = 0;
    for vector in manifest["vectors"].as_array().unwrap() {
        for (role, file) in vector["files"].as_object().unwrap() {
            if ["request", "reply", "rpc_reply"].contains(&role.as_str()) {
                continue; // bare inner layers, not wire messages
            }
            let out = inspect(&ca, &now, &examples.join(file.as_str().unwrap()));
            assert_eq!(out["valid"], true, "{file}: {out}");
            checked += 1;
            let expect = &vector["expect"];
            if out["kind"] == "request" {
                if let Some(privileged) = expect.get("privileged") {
                    assert_eq!(&out["privileged"], privileged, "{file}");
                }
                if let Some(identity) = expect["caller_identity"].as_str() {
                    assert!(
                        out["callerid"]
                            .as_str()
                            .unwrap()
                            .ends_with(&format!("={identity}")),
                        "{file}: {out}"
                    );
                }
            }
        }
    }
    assert!(checked >= 9, "only {checked} example files were checked");

    // The same request judged against an unrelated CA, and long after its TTL.
    let foreign = vectors.join("choria/certs/foreign/foreign-ca.pem");
    let out = inspect(&foreign, &now, &examples.join("01_transport.json"));
    assert_eq!(
        (out["valid"].clone(), out["code"].clone()),
        (Value::Bool(false), Value::from("unknown_ca"))
    );
    let late = (manifest["now_unix"].as_u64().unwrap() + 3600).to_string();
    let out = inspect(&ca, &late, &examples.join("01_transport.json"));
    assert_eq!(out["code"], "ttl_expired", "{out}");
}

fn inspect(ca: &Path, now: &str, file: &Path) -> Value {
    let output = Command::new(fedgate_bin())
        .args(["inspect", "--ca"])
        .arg(ca)
        .args(["--now", now])
        .arg(file)
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(
        output.status.code(),
        Some(if value["valid"] == true { 0 } else { 1 }),
        "{value}"
    );
    value
}

#[test]
fn ruby_style_encoding_of_a_published_request_still_verifies() {
    let Some(vectors) = vectors() else { return };
    let examples = vectors.join("choria/examples");
    let original: Value =
        serde_json::from_slice(&std::fs::read(examples.join("01_transport.json")).unwrap())
            .unwrap();
    let data = original["data"].as_str().unwrap();
    let secure: Value =
        serde_json::from_slice(&fedgate::wire::decode_base64_lenient(data).unwrap()).unwrap();
    // Ruby: Base64.encode64 wraps at 60 characters; keys come in another order; pubcert is chomped.
    let signature = wrap60(secure["signature"].as_str().unwrap());
    let ruby_secure = serde_json::json!({
        "pubcert": secure["pubcert"].as_str().unwrap().trim_end(),
        "signature": signature,
        "message": secure["message"],
        "protocol": "choria:secure:request:1",
    });
    let ruby = serde_json::json!({
        "headers": original["headers"],
        "data": wrap60(&fedgate::wire::encode_base64(ruby_secure.to_string().as_bytes())),
        "protocol": "choria:transport:1",
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ruby.json");
    std::fs::write(&file, ruby.to_string()).unwrap();
    let now = "1780000010";
    let out = inspect(&vectors.join("choria/certs/good/certs/ca.pem"), now, &file);
    assert_eq!(out["valid"], true, "{out}");
}

fn wrap60(b64: &str) -> String {
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out
}

#[test]
fn published_test_keys_sign_requests_that_verify_as_choria_would() {
    let Some(vectors) = vectors() else { return };
    let certs = vectors.join("choria/certs");
    let now = Now::at_unix(1_780_000_010);
    let verify = |ca: &str, signer: &Signer, callerid: &str| {
        let verifier = Verifier::with_defaults(
            CaBundle::from_file(&certs.join(ca)).unwrap(),
            Limits::default(),
        );
        let request = request(callerid, now);
        let secure = signer.sign_request(&request).unwrap();
        verifier
            .verify(secure, now)
            .map(|v| v.privileged())
            .map_err(|e| e.reason())
    };

    // PKCS#1 4096-bit key from a Puppet CA, CN only, no SANs.
    let rip = Signer::from_files(
        &certs.join("good/certs/rip.mcollective.pem"),
        &certs.join("good/private_keys/rip.mcollective.pem"),
    )
    .unwrap();
    assert_eq!(rip.key_bits(), 4096);
    assert_eq!(
        verify("good/certs/ca.pem", &rip, "choria=rip.mcollective"),
        Ok(false)
    );
    assert_eq!(
        verify("foreign/foreign-ca.pem", &rip, "choria=rip.mcollective"),
        Err(Reason::UnknownCa)
    );
    assert_eq!(
        verify("good/certs/ca.pem", &rip, "choria=1.mcollective"),
        Err(Reason::NameMismatch)
    );

    // A privileged certificate signs for any caller, and the allow list is not consulted.
    let privileged = Signer::from_files(
        &certs.join("good/certs/1.privileged.mcollective.pem"),
        &certs.join("good/private_keys/1.privileged.mcollective.pem"),
    )
    .unwrap();
    assert_eq!(verify("good/certs/ca.pem", &privileged, "up=bob"), Ok(true));

    // A leaf plus intermediate in pubcert chains to its root, and not to another root.
    let chained = Signer::from_files(
        &certs.join("intermediate/rip.mcollective.pem"),
        &certs.join("intermediate/rip.mcollective-key.pem"),
    )
    .unwrap();
    assert_eq!(
        verify("intermediate/ca.pem", &chained, "choria=rip.mcollective"),
        Ok(false)
    );
    assert_eq!(
        verify("good/certs/ca.pem", &chained, "choria=rip.mcollective"),
        Err(Reason::UnknownCa)
    );
}

fn request(callerid: &str, now: Now) -> Request {
    Request::new(
        r#"{"agent":"rpcutil","action":"ping","data":{}}"#.into(),
        RequestEnvelope {
            requestid: "0123456789abcdef0123456789abcdef".into(),
            senderid: "conformance".into(),
            callerid: callerid.into(),
            collective: "mcollective".into(),
            agent: "rpcutil".into(),
            ttl: 60,
            time: now.unix_seconds(),
            filter: Filter::default(),
        },
    )
}

#[test]
fn federation_transforms_reproduce_the_go_broker_byte_for_byte() {
    use fedgate::federation::transform::{ClusterRules, Destination, route_reply, route_request};
    let Some(vectors) = vectors() else { return };
    let examples = vectors.join("choria/examples");
    let read = |name: &str| std::fs::read(examples.join(name)).unwrap();
    let fed = "nats://broker.federation.example.net:4222";
    let col = "nats://broker.collective.example.net:4222";
    let mut rules = ClusterRules {
        cluster: "london".into(),
        routes: [("mcollective".to_string(), Destination::Collective("mcollective".into()))].into(),
        max_hops: 8,
        max_targets: 200,
        label: "fb1.example.net (choria_nats_ingest:3, choria_request_transformer:7, choria_nats_egest:2)".into(),
        limits: Limits::default(),
        resign: None,
    };

    let a = read("09a_fed_client_request.json");
    let routed = route_request(&a, &rules).unwrap();
    let (destination, targets) = routed.groups().iter().next().unwrap();
    assert_eq!(destination, &Destination::Collective("mcollective".into()));
    let mut egresses = routed.egress(destination, targets, &rules, fed, col);
    assert_eq!(egresses.len(), 1);
    let egress = egresses.remove(0);
    assert_eq!(egress.subjects, vec!["mcollective.broadcast.agent.rpcutil"]);
    assert_eq!(
        String::from_utf8(egress.payload).unwrap(),
        String::from_utf8(read("09b_fed_broker_to_collective.json")).unwrap()
    );

    rules.label =
        "fb2.example.net (choria_nats_ingest:0, choria_reply_transformer:5, choria_nats_egest:9)"
            .into();
    let (reply_to, payload) =
        route_reply(&read("09c_fed_server_reply.json"), &rules, col, fed).unwrap();
    assert_eq!(
        reply_to,
        "mcollective.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
    );
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        String::from_utf8(read("09d_fed_broker_reply.json")).unwrap()
    );
}
