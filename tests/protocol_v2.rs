//! Choria protocol v2: the messages fedgate builds validate against go-choria's v2 schemas
//! (from `../shared/vectors`, skipped when absent), and `fedgate inspect` tells v2 from v1 by
//! the message and verifies v2 against the issuers it is given.

mod support;

use std::path::Path;
use std::process::Command;

use fedgate::security::v2::tokens::ClientPermissions;
use fedgate::security::v2::{TokenIssuer, V2Signer};
use fedgate::wire::choria_v2::{
    FederationHeader, Reply, Request, SecureReply, SecureRequest, Transport, TransportHeaders,
    new_request_id,
};
use serde_json::Value;
use support::{fedgate_bin, vectors_dir};

const NOW: i64 = 1_780_000_000;

fn signer(
    issuer: &TokenIssuer,
    seed: u8,
    callerid: &str,
    permissions: ClientPermissions,
) -> V2Signer {
    issuer
        .client_signer(
            &[seed; 32],
            callerid,
            "choria",
            permissions,
            (NOW - 60, 3600),
        )
        .unwrap()
}

fn fleet() -> ClientPermissions {
    ClientPermissions::fleet()
}

fn request(caller: &str) -> Request {
    let mut request = Request::new(
        br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
        new_request_id(),
        "client.example.net".into(),
        caller.into(),
        "choria".into(),
        "rpcutil".into(),
        60,
        NOW * 1_000_000_000,
    );
    if let Some(filter) = request.filter.as_mut() {
        filter.agent = vec!["rpcutil".into()];
    }
    request
}

fn transport(secure: &SecureRequest) -> Transport {
    Transport::new(
        secure.encode(),
        TransportHeaders {
            reply: Some(fedgate::subjects::reply("choria", "up=alice", "x")),
            sender: "client.example.net".into(),
            ..TransportHeaders::default()
        },
    )
}

fn inspect(dir: &Path, issuer: &str, bytes: &[u8], now: i64) -> Value {
    let file = dir.join("message.json");
    std::fs::write(&file, bytes).unwrap();
    let output = Command::new(fedgate_bin())
        .args([
            "inspect",
            "--issuer",
            &format!("choria={issuer}"),
            "--now",
            &now.to_string(),
        ])
        .arg(&file)
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    let expected = if value["valid"] == true { 0 } else { 1 };
    assert_eq!(output.status.code(), Some(expected), "{value}");
    value
}

#[test]
fn inspect_verifies_v2_requests_against_the_issuer_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let org = TokenIssuer::org(&[1; 32]).unwrap();
    let issuer = org.public_key();
    let alice = signer(&org, 2, "up=alice", fleet());
    let secure = alice.sign_request(&request("up=alice"));

    let out = inspect(dir.path(), &issuer, &transport(&secure).encode(), NOW);
    assert_eq!(out["valid"], true, "{out}");
    assert_eq!(out["protocol"], "io.choria.protocol.v2.transport");
    assert_eq!(out["callerid"], "up=alice");
    assert_eq!(out["signer"], "up=alice");
    assert_eq!(out["privileged"], false);
    assert_eq!(out["kind"], "request");
    // The secure request on its own, too.
    assert_eq!(
        inspect(dir.path(), &issuer, &secure.encode(), NOW)["valid"],
        true
    );

    // Each refusal with its code.
    let stranger = TokenIssuer::org(&[9; 32]).unwrap();
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        ("ttl_expired", secure.encode(), NOW + 120),
        ("expired_certificate", secure.encode(), NOW + 4000),
        (
            "invalid_certificate",
            signer(&stranger, 3, "up=mallory", fleet())
                .sign_request(&request("up=mallory"))
                .encode(),
            NOW,
        ),
        (
            "name_mismatch",
            alice.sign_request(&request("up=bob")).encode(),
            NOW,
        ),
        (
            "not_allowed",
            alice
                .sign_delegated(&request("up=alice"), alice.token())
                .encode(),
            NOW,
        ),
        (
            "bad_signature",
            {
                let mut forged = secure.clone();
                forged.signature = signer(&org, 4, "up=eve", fleet()).sign(&secure.request);
                forged.encode()
            },
            NOW,
        ),
        ("unsigned", request("up=alice").encode(), NOW),
    ];
    for (code, bytes, now) in cases {
        let out = inspect(dir.path(), &issuer, &bytes, now);
        assert_eq!(out["valid"], false, "{code}: {out}");
        assert_eq!(out["code"], code, "{out}");
    }

    // A delegator with the permission speaks for the caller.
    let fedgate = signer(&org, 5, "choria=fedgate", ClientPermissions::delegator());
    let erin = signer(&org, 6, "up=erin", ClientPermissions::signed_fleet());
    let out = inspect(
        dir.path(),
        &issuer,
        &fedgate
            .sign_delegated(&request("up=erin"), erin.token())
            .encode(),
        NOW,
    );
    assert_eq!(
        (out["valid"].clone(), out["privileged"].clone()),
        (true.into(), true.into()),
        "{out}"
    );
    assert_eq!(out["signer"], "choria=fedgate");

    // A v1 message still needs --ca, and says so.
    let file = dir.path().join("v1.json");
    std::fs::write(&file, br#"{"protocol":"choria:transport:1"}"#).unwrap();
    let output = Command::new(fedgate_bin())
        .args(["inspect", "--issuer", &format!("choria={issuer}")])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("needs --ca"),
        "{output:?}"
    );
}

fn schema(name: &str) -> Option<jsonschema::Validator> {
    let path = vectors_dir()?
        .join("choria/schemas/choria/protocol/v2")
        .join(format!("{name}.json"));
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).unwrap();
    Some(jsonschema::draft7::new(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn errors(validator: &jsonschema::Validator, bytes: &[u8]) -> Vec<String> {
    let doc: Value = serde_json::from_slice(bytes).unwrap();
    validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_v2_messages_fedgate_builds_validate_against_go_choria_s_schemas() {
    let Some(request_schema) = schema("request") else {
        eprintln!(
            "skipping: ../shared/vectors is not present (set FEDGATE_VECTORS to point at it)"
        );
        return;
    };
    let org = TokenIssuer::org(&[1; 32]).unwrap();
    let alice = signer(&org, 2, "up=alice", fleet());
    let request = request("up=alice");
    let secure = alice.sign_request(&request);
    let mut federated = transport(&secure);
    federated.headers.federation = Some(FederationHeader {
        request: request.id.clone(),
        reply: None,
        targets: vec!["choria.broadcast.agent.rpcutil".into()],
    });
    let reply = Reply::new(
        br#"{"action":"ping","statuscode":0,"statusmsg":"OK","data":{}}"#.to_vec(),
        request.id.clone(),
        "n1.example.net".into(),
        "rpcutil".into(),
        NOW * 1_000_000_000,
    )
    .encode();
    let secure_reply =
        SecureReply::new(reply.clone()).signed(alice.sign(&reply), alice.token().into());
    for (name, bytes) in [
        ("request", request.encode()),
        ("secure_request", secure.encode()),
        ("transport", transport(&secure).encode()),
        ("transport", federated.encode()),
        ("secure_reply", secure_reply.encode()),
    ] {
        let validator = if name == "request" {
            request_schema.clone()
        } else {
            schema(name).unwrap()
        };
        assert_eq!(errors(&validator, &bytes), Vec::<String>::new(), "{name}");
    }
    // go-choria's reply schema names the request's protocol where the reply's belongs; a reply
    // as go-choria's own code writes it fails there and nowhere else.
    let reply_errors = errors(&schema("reply").unwrap(), &reply);
    assert_eq!(reply_errors.len(), 1, "{reply_errors:?}");
    assert!(reply_errors[0].starts_with("/protocol"), "{reply_errors:?}");
}

/// The edge reaches a v2 collective like any other: the token caller is admitted, mapped,
/// authorized and audited at the edge, and the request reaches the v2 servers signed by fedgate
/// as a delegator for the mapped caller, who are told the caller and check fedgate's delegation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_caller_reaches_a_v2_collective_through_fedgate_s_delegation() {
    use fedgate::audit::{Kind, Verdict};
    use fedgate::security::Reason;
    use support::edge::{Gateway, TOKYO_RULES, next_json, open, rpc};
    use support::v2::{FEDGATE_CALLER, V2Org};
    use support::{Network, audit_records, network_block};

    let tokyo = Network::start("tokyo");
    let org = V2Org::new(40);
    let top = network_block("collectives.tokyo", &tokyo, &org.config_line());
    let gateway = Gateway::start_with(&top, TOKYO_RULES, "").await;
    let fleet = org.start_fleet(&tokyo, 7).await;

    let token = gateway.token("alice", std::time::Duration::from_secs(300));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    let _welcome = next_json(&mut socket).await;
    let ping = serde_json::json!({"type":"rpc","id":"v2a","collective":"tokyo","agent":"rpcutil","action":"ping","timeout_ms":10000,"limit":7});
    let (replies, done) = rpc(&mut socket, ping).await;
    assert_eq!((replies.len(), done["ok"].as_u64()), (7, Some(7)), "{done}");
    assert!(
        replies.iter().all(|r| r["data"]["pong"].is_number()),
        "{replies:?}"
    );
    // Each server verified fedgate's delegation for the mapped caller.
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", FEDGATE_CALLER),
        7
    );

    // A fact filter narrows the v2 broadcast as it does a v1 one.
    let narrowed = serde_json::json!({"type":"rpc","id":"v2b","collective":"tokyo","agent":"rpcutil","action":"ping","timeout_ms":3000,"filter":{"identity":["tokyo-0003"]}});
    let (replies, done) = rpc(&mut socket, narrowed).await;
    assert_eq!(replies.len(), 1, "{done}");

    // Decided and completed at the edge, as for any collective.
    drop(socket);
    let records = audit_records(&gateway.audit_file());
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 2, "{records:?}");
    assert_eq!(allowed[0].event.collectives, ["tokyo"]);
    assert_eq!(
        allowed[0].event.mapped_caller.as_deref(),
        Some("choria=alice.mcollective")
    );
    assert_eq!(fleet.stats().refused(Reason::NotAllowed), 0);
    fleet.shutdown().await;
    gateway.edge.unwrap().shutdown().await;
}

/// The simulated v2 servers check what a v2 Choria server checks, and answer a good caller
/// with signed replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_servers_refuse_what_a_v2_choria_server_refuses() {
    use fedgate::security::v2::V2Verifier;
    use fedgate::security::{Now, Reason};
    use fedgate::wire::Limits;
    use futures::StreamExt;
    use support::Network;
    use support::v2::V2Org;

    let tokyo = Network::start("tokyo");
    let org = V2Org::new(50);
    let servers = org.start_fleet(&tokyo, 3).await;
    let nats = tokyo.connect_as("alice").await;
    let now = fedgate::security::Now::system().unix_seconds();
    let request_for = |caller: &str| {
        let mut request = Request::new(
            br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
            new_request_id(),
            "client.example.net".into(),
            caller.into(),
            "tokyo".into(),
            "rpcutil".into(),
            60,
            now * 1_000_000_000,
        );
        request.filter.as_mut().unwrap().agent = vec!["rpcutil".into()];
        request
    };
    let send = |secure: SecureRequest, reply: String| {
        let nats = nats.clone();
        async move {
            let transport = Transport::new(
                secure.encode(),
                TransportHeaders {
                    reply: Some(reply),
                    sender: "client.example.net".into(),
                    ..TransportHeaders::default()
                },
            );
            nats.publish("tokyo.broadcast.agent.rpcutil", transport.encode().into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
        }
    };

    // A caller with fleet management signs its own request: three signed replies.
    let zoe = org.caller(51, "up=zoe", fleet());
    let mut inbox = nats.subscribe("tokyo.reply.zoe.>").await.unwrap();
    send(
        zoe.sign_request(&request_for("up=zoe")),
        "tokyo.reply.zoe.1".into(),
    )
    .await;
    let verifier = V2Verifier::new(org.issuers(), Limits::default());
    for _ in 0..3 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.next())
            .await
            .expect("a reply")
            .unwrap();
        let transport = Transport::decode(&message.payload, &Limits::default()).unwrap();
        let secure = SecureReply::decode(&transport.data, &Limits::default()).unwrap();
        let server = verifier
            .check_reply_signature(&secure, Now::system())
            .unwrap()
            .expect("the servers sign their replies");
        assert_eq!(server.identity, "fleet.example.net");
        assert!(transport.headers.sender.starts_with("tokyo-"));
    }

    // Each of these is refused by every server, for its own reason.
    let stranger = TokenIssuer::org(&[59; 32]).unwrap();
    let outsider = stranger
        .client_signer(&[52; 32], "up=mallory", "choria", fleet(), (now - 60, 3600))
        .unwrap();
    let stale = org
        .issuer
        .client_signer(&[53; 32], "up=old", "choria", fleet(), (now - 7200, 3600))
        .unwrap();
    let erin = org.caller(54, "up=erin", ClientPermissions::signed_fleet());
    let mut tampered = zoe.sign_request(&request_for("up=zoe"));
    tampered.request = request_for("up=zoe").encode();
    let not_a_delegator = org.caller(55, "up=frank", fleet());
    let cases = [
        (
            outsider.sign_request(&request_for("up=mallory")),
            Reason::InvalidCertificate,
        ),
        (
            stale.sign_request(&request_for("up=old")),
            Reason::ExpiredCertificate,
        ),
        (
            erin.sign_request(&request_for("up=erin")),
            Reason::NotAllowed,
        ),
        (
            zoe.sign_request(&request_for("up=bob")),
            Reason::NameMismatch,
        ),
        (tampered, Reason::BadSignature),
        (
            not_a_delegator.sign_delegated(&request_for("up=erin"), erin.token()),
            Reason::NotAllowed,
        ),
    ];
    for (secure, reason) in cases {
        let before = servers.stats().refused(reason);
        send(secure, "tokyo.reply.nobody.1".into()).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while servers.stats().refused(reason) < before + 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(servers.stats().refused(reason), before + 3, "{reason:?}");
    }
    servers.shutdown().await;
}

/// fedgate refuses to start with a v2 identity the collective's servers would refuse, and
/// says which key and why.
#[test]
fn a_v2_identity_without_delegation_is_a_config_error() {
    use fedgate::security::v2::tokens::ClientPermissions;
    use support::v2::V2Org;

    let dir = tempfile::tempdir().unwrap();
    for (org, problem) in [
        (
            V2Org::with_fedgate(60, ClientPermissions::fleet()),
            "authentication_delegator",
        ),
        (V2Org::new(70), ""),
    ] {
        let config = dir.path().join("fedgate.toml");
        std::fs::write(
            &config,
            format!(
                "[collectives.tokyo]\nnats = [\"nats://127.0.0.1:1\"]\n{}\n",
                org.config_line()
            ),
        )
        .unwrap();
        let output = Command::new(fedgate_bin())
            .args(["config", "check"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if problem.is_empty() {
            assert!(output.status.success(), "{stderr}");
        } else {
            assert!(!output.status.success());
            assert!(
                stderr.contains("collectives.tokyo.v2.token") && stderr.contains(problem),
                "{stderr}"
            );
        }
    }
}

/// A v2 caller sends its own signed v2 request over the edge: verified against the edge's
/// issuers as a v2 server would, mapped and authorized like any caller of the edge's realm,
/// audited, then re-signed as v1 with london's privileged certificate, or as v2 by fedgate's
/// delegation for tokyo. Unknown issuers, expired tokens, missing delegation, tampering and
/// replays are refused, recorded and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v2_caller_reaches_v1_and_v2_collectives_through_the_edge() {
    use fedgate::audit::{Kind, Verdict};
    use serde_json::json;
    use support::edge::{Gateway, TOKYO_RULES, next_json, open, send};
    use support::v2::V2Org;
    use support::{Network, audit_records, network_block};

    let tokyo = Network::start("tokyo");
    let org = V2Org::new(80);
    let top = network_block("collectives.tokyo", &tokyo, &org.config_line());
    let extra = format!("issuers = {{ choria = {:?} }}\n", org.issuer.public_key());
    let gateway = Gateway::start_with(&top, TOKYO_RULES, &extra).await;
    let london_fleet = gateway.london.start_fleet(4).await;
    let tokyo_fleet = org.start_fleet(&tokyo, 3).await;
    let token = gateway.token("carol", std::time::Duration::from_secs(300));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    let _welcome = next_json(&mut socket).await;
    // What fedgate publishes into tokyo, as any tokyo server sees it.
    let tokyo_nats = tokyo.connect_as("alice").await;
    let mut published = tokyo_nats
        .subscribe("tokyo.broadcast.agent.rpcutil")
        .await
        .unwrap();
    tokyo_nats.flush().await.unwrap();

    let now = fedgate::security::Now::system().unix_seconds();
    let ping = |collective: &str, caller: &str, at: i64| {
        let mut request = Request::new(
            br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
            new_request_id(),
            "script.example".into(),
            caller.into(),
            collective.into(),
            "rpcutil".into(),
            60,
            at * 1_000_000_000,
        );
        request.filter.as_mut().unwrap().agent = vec!["rpcutil".into()];
        request
    };
    let message = |id: &str, secure: &SecureRequest| {
        let request: Value = serde_json::from_slice(&secure.encode()).unwrap();
        let limit = if secure
            .decode_request(&fedgate::wire::Limits::default())
            .unwrap()
            .collective
            == "tokyo"
        {
            3
        } else {
            4
        };
        json!({"type":"signed","id":id,"request":request,"limit":limit,"timeout_ms":10000})
    };
    // Sends one signed message; the replies and the final `done` or `error`.
    async fn call(socket: &mut support::edge::Socket, message: Value) -> (usize, Value) {
        send(socket, message).await;
        let mut replies = 0;
        loop {
            let frame = next_json(socket).await;
            match frame["type"].as_str() {
                Some("reply") => replies += 1,
                _ => return (replies, frame),
            }
        }
    }

    // alice's own v2 token: up=alice maps to choria=alice.mcollective in london and in tokyo.
    let alice = org.caller(91, "up=alice", fleet());
    let (replies, done) = call(
        &mut socket,
        message("s1", &alice.sign_request(&ping("london", "up=alice", now))),
    )
    .await;
    assert_eq!(
        (replies, done["type"].as_str()),
        (4, Some("done")),
        "{done}"
    );
    assert_eq!(
        london_fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        4
    );
    let (replies, done) = call(
        &mut socket,
        message("s2", &alice.sign_request(&ping("tokyo", "up=alice", now))),
    )
    .await;
    assert_eq!(
        (replies, done["type"].as_str()),
        (3, Some("done")),
        "{done}"
    );
    assert_eq!(
        tokyo_fleet
            .stats()
            .acted_for("choria=alice.mcollective", support::v2::FEDGATE_CALLER),
        3
    );

    // fedgate's own delegated request, taken off tokyo's NATS, does not come back in at the
    // edge, though the edge trusts tokyo's issuer and the request verifies.
    use futures::StreamExt;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), published.next())
        .await
        .unwrap()
        .unwrap();
    let own = SecureRequest::decode(
        &Transport::decode(&seen.payload, &fedgate::wire::Limits::default())
            .unwrap()
            .data,
        &fedgate::wire::Limits::default(),
    )
    .unwrap();
    assert!(
        !own.signer.is_empty(),
        "fedgate signs into tokyo as a delegator"
    );
    let (replies, refused) = call(&mut socket, message("s2b", &own)).await;
    assert_eq!(
        (replies, refused["reason"].as_str()),
        (0, Some("not_allowed")),
        "{refused}"
    );
    assert_eq!(
        tokyo_fleet.stats().validated,
        3,
        "the request did not run again"
    );

    // The same signed request again is a replay.
    let again = alice.sign_request(&ping("london", "up=alice", now));
    let (_, first) = call(&mut socket, message("s3", &again)).await;
    assert_eq!(first["type"], "done", "{first}");
    let (_, replayed) = call(&mut socket, message("s4", &again)).await;
    assert_eq!(replayed["reason"], "replay", "{replayed}");

    // Each refused before anything is forwarded.
    let stranger = TokenIssuer::org(&[89; 32]).unwrap();
    let outsider = stranger
        .client_signer(&[92; 32], "up=alice", "choria", fleet(), (now - 60, 3600))
        .unwrap();
    let stale = org
        .issuer
        .client_signer(&[93; 32], "up=alice", "choria", fleet(), (now - 7200, 3600))
        .unwrap();
    let erin = org.caller(94, "up=erin", ClientPermissions::signed_fleet());
    let frank = org.caller(95, "up=frank", fleet());
    let mut tampered = alice.sign_request(&ping("london", "up=alice", now));
    tampered.request = ping("london", "up=alice", now).encode();
    let before = london_fleet.stats();
    for (id, secure, code) in [
        (
            "r1",
            outsider.sign_request(&ping("london", "up=alice", now)),
            "invalid_certificate",
        ),
        (
            "r2",
            stale.sign_request(&ping("london", "up=alice", now)),
            "expired_certificate",
        ),
        (
            "r3",
            frank.sign_delegated(&ping("london", "up=erin", now), erin.token()),
            "not_allowed",
        ),
        ("r4", tampered, "bad_signature"),
        (
            "r5",
            alice.sign_request(&ping("london", "up=alice", now - 3600)),
            "ttl_expired",
        ),
    ] {
        let (replies, refused) = call(&mut socket, message(id, &secure)).await;
        assert_eq!(
            (replies, refused["type"].as_str()),
            (0, Some("error")),
            "{id}: {refused}"
        );
        assert_eq!(refused["reason"], code, "{id}: {refused}");
    }
    assert_eq!(
        london_fleet.stats().total,
        before.total,
        "nothing refused was forwarded"
    );

    drop(socket);
    let records = audit_records(&gateway.audit_file());
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision)
        .collect();
    let allowed = decisions
        .iter()
        .filter(|r| r.event.decision == Some(Verdict::Allow))
        .count();
    assert_eq!(allowed, 3, "{decisions:?}");
    // The replay and the five refusals are each on the record.
    let denied = decisions
        .iter()
        .filter(|r| r.event.decision == Some(Verdict::Deny))
        .count();
    assert!(denied >= 6, "{decisions:?}");
    london_fleet.shutdown().await;
    tokyo_fleet.shutdown().await;
    gateway.edge.unwrap().shutdown().await;
}
