//! The WebSocket edge in process, against a real TLS nats-server and a simulated fleet: token
//! and client-certificate sockets, the JSON protocol end to end, and each refusal's error.

mod support;

use std::time::{Duration, SystemTime};

use fedgate::audit::{Kind, Verdict};
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient, WsError};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::edge::{
    Gateway, TOKYO_RULES, close_code, connect_options, next_json, open, reqwest_realms, rpc, send,
    signed_ping, tls,
};
use support::{Network, audit_records, collective_block, realm};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const NODES: usize = 500;

fn ping(id: &str) -> Value {
    json!({"type":"rpc","id":id,"collective":"london","agent":"rpcutil","action":"ping","timeout_ms":20000,"limit":NODES})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_and_certificate_clients_ping_the_fleet() {
    let gateway = Gateway::start("").await;
    let fleet = gateway.london.start_fleet(NODES).await;

    // A token user: up=alice maps to choria=alice.mcollective, which policy allows to ping.
    let token = gateway.token("alice", Duration::from_secs(300));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    let welcome = next_json(&mut socket).await;
    assert_eq!(
        (
            welcome["type"].as_str(),
            welcome["caller"].as_str(),
            welcome["method"].as_str()
        ),
        (Some("welcome"), Some("up=alice"), Some("token"))
    );
    let (replies, done) = rpc(&mut socket, ping("c1")).await;
    assert_eq!(replies.len(), NODES, "{done}");
    assert_eq!(
        (
            done["type"].as_str(),
            done["id"].as_str(),
            done["responses"].as_u64(),
            done["ok"].as_u64(),
            done["failed"].as_u64(),
            done["ended"].as_str()
        ),
        (
            Some("done"),
            Some("c1"),
            Some(NODES as u64),
            Some(NODES as u64),
            Some(0),
            Some("complete")
        )
    );
    assert!(
        replies
            .iter()
            .all(|r| r["id"] == "c1" && r["statuscode"] == 0 && r["data"]["pong"].is_number())
    );
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        NODES as u64
    );
    // Without a limit, a broadcast ends a second after its last reply, and says so.
    let mut unlimited = ping("c0");
    unlimited.as_object_mut().unwrap().remove("limit");
    let (replies, done) = rpc(&mut socket, unlimited).await;
    assert_eq!(replies.len(), NODES, "{done}");
    assert_eq!(done["ended"], "idle", "{done}");
    assert!(done["elapsed_ms"].as_u64().unwrap() < 20_000, "{done}");

    // A client certificate from the edge CA: choria=carol.mcollective... is not a user of the
    // PKI, so alice's certificate is used; it speaks as choria=alice.mcollective.
    let mut socket = open(&gateway.url, None, Some("alice"), None).await.unwrap();
    let welcome = next_json(&mut socket).await;
    assert_eq!(
        (welcome["caller"].as_str(), welcome["method"].as_str()),
        (Some("choria=alice.mcollective"), Some("certificate"))
    );
    let (replies, done) = rpc(&mut socket, ping("c2")).await;
    assert_eq!(
        (replies.len(), done["responses"].as_u64()),
        (NODES, Some(NODES as u64))
    );

    // The three decisions (c1, c0, c2) and their completions are in the audit trail.
    drop(socket);
    let records = audit_records(&gateway.audit_file());
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 3);
    assert_eq!(allowed[0].event.edge, "websocket");
    assert_eq!(allowed[0].event.caller.as_deref(), Some("up=alice"));
    assert_eq!(
        allowed[0].event.mapped_caller.as_deref(),
        Some("choria=alice.mcollective")
    );
    assert_eq!(
        allowed[0].event.request_id.as_deref(),
        done_requestid(&records, 0)
    );
    let completions: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Completion)
        .collect();
    assert_eq!(completions.len(), 3);
    assert_eq!(completions[0].event.replies, Some(NODES as u64));
    assert_eq!(completions[0].event.links, [allowed[0].id.clone()]);
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_id_is_free_again_as_soon_as_its_request_is_done() {
    let gateway = Gateway::start("rate_per_second = 100000\nrate_burst = 100000\n").await;
    let _fleet = gateway.london.start_fleet(2).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    // 16 ids at once, each sent again the moment its last request's `done` or `error` is read,
    // alternating a ping and a refusal: the id is never still "in flight", however the
    // gateway orders its work.
    const IDS: usize = 16;
    const ROUNDS: usize = 100;
    let request = |n: usize, round: usize| {
        let collective = if round.is_multiple_of(2) {
            "london"
        } else {
            "nowhere"
        };
        json!({"type":"rpc","id":format!("id{n}"),"collective":collective,"agent":"rpcutil","action":"ping","limit":2})
    };
    for n in 0..IDS {
        send(&mut socket, request(n, 0)).await;
    }
    let mut rounds = [0usize; IDS];
    while rounds.iter().any(|&r| r < ROUNDS) {
        let message = next_json(&mut socket).await;
        let kind = message["type"].as_str().unwrap_or_default();
        if kind == "reply" {
            continue;
        }
        let n: usize = message["id"].as_str().unwrap()[2..].parse().unwrap();
        let expected = if rounds[n].is_multiple_of(2) {
            "done"
        } else {
            "error"
        };
        assert_eq!(kind, expected, "round {}: {message}", rounds[n]);
        if kind == "error" {
            assert_eq!(message["code"], "unknown_collective", "{message}");
        }
        rounds[n] += 1;
        if rounds[n] < ROUNDS {
            send(&mut socket, request(n, rounds[n])).await;
        }
    }
}

fn done_requestid(records: &[fedgate::audit::Record], n: usize) -> Option<&str> {
    records
        .iter()
        .filter(|r| r.kind == Kind::Completion)
        .nth(n)
        .and_then(|r| r.event.request_id.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_has_its_own_error() {
    let gateway = Gateway::start("rate_per_second = 2\nrate_burst = 3\n").await;
    let _fleet = gateway.london.start_fleet(4).await;

    // Upgrades: a wrong Origin, an expired token, a forged token, no credentials without Origin.
    let token = gateway.token("alice", Duration::from_secs(300));
    assert_eq!(
        open(
            &gateway.url,
            Some(&token),
            None,
            Some("https://evil.example")
        )
        .await
        .err(),
        Some(403)
    );
    let expired = gateway
        .keys
        .issue(
            "alice",
            Duration::from_secs(60),
            None,
            SystemTime::now() - Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(
        open(&gateway.url, Some(&expired), None, None).await.err(),
        Some(401)
    );
    let forged = TokenKeys::load(&{
        let path = gateway.dir.path().join("other.key");
        std::fs::write(&path, TokenKeys::generate_pem().unwrap()).unwrap();
        path
    })
    .unwrap()
    .issue("alice", Duration::from_secs(60), None, SystemTime::now())
    .unwrap();
    assert_eq!(
        open(&gateway.url, Some(&forged), None, None).await.err(),
        Some(401)
    );
    assert_eq!(open(&gateway.url, None, None, None).await.err(), Some(403));

    // A browser with an allowed Origin authenticates with its first message.
    let mut socket = open(&gateway.url, None, None, Some("https://ops.example"))
        .await
        .unwrap();
    send(&mut socket, json!({"type":"auth","token":token})).await;
    assert_eq!(next_json(&mut socket).await["type"], "welcome");

    // Bad JSON, an unknown collective, a denied action.
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    let error = next_json(&mut socket).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("invalid"))
    );
    let (_, error) = rpc(
        &mut socket,
        json!({"type":"rpc","id":"u1","collective":"atlantis","agent":"rpcutil","action":"ping"}),
    )
    .await;
    assert_eq!(
        (error["id"].as_str(), error["code"].as_str()),
        (Some("u1"), Some("unknown_collective"))
    );
    let (_, error) = rpc(&mut socket, json!({"type":"rpc","id":"d1","collective":"london","agent":"rpcutil","action":"inventory"})).await;
    assert_eq!(error["code"], "denied", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rpcutil.policy"),
        "{error}"
    );

    // Rate limit: the burst of 3 is spent (u1, d1 and the next), then requests are refused.
    // Six at once: the bucket refills at 2/s, so at least two are refused.
    for n in 0..6 {
        send(&mut socket, json!({"type":"rpc","id":format!("r{n}"),"collective":"london","agent":"rpcutil","action":"ping","timeout_ms":500})).await;
    }
    let (mut ended, mut limited) = (0, 0);
    while ended < 6 {
        let message = next_json(&mut socket).await;
        match message["type"].as_str() {
            Some("done") => ended += 1,
            Some("error") => {
                ended += 1;
                assert_eq!(message["code"], "rate_limited", "{message}");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(limited >= 2, "{limited}");

    // An oversize frame closes the socket with 1009.
    let big = "x".repeat(70 * 1024);
    socket
        .send(Message::Text(
            json!({"type":"rpc","id":"big","agent":"a","action":"b","data":{"x":big}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1009);

    // Refusals with a known identity are audited.
    let records = audit_records(&gateway.audit_file());
    let codes: Vec<&str> = records
        .iter()
        .filter(|r| r.event.decision == Some(Verdict::Deny))
        .map(|r| r.event.code.as_str())
        .collect();
    assert!(codes.contains(&"unknown_collective"), "{codes:?}");
    assert!(codes.contains(&"denied"), "{codes:?}");
    assert!(codes.contains(&"rate_limited"), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires() {
    let gateway = Gateway::start("").await;
    let token = gateway.token("alice", Duration::from_secs(2));
    let mut socket = open(&gateway.url, Some(&token), None, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    assert_eq!(close_code(&mut socket).await, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_signed_requests_are_verified_and_mapped() {
    let gateway = Gateway::start("").await;
    let fleet = gateway.london.start_fleet(4).await;

    // No token, no certificate, no Origin: the signed-only subprotocol.
    let mut client = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    assert_eq!(
        (
            client.welcome["method"].as_str(),
            client.welcome.get("caller")
        ),
        (Some("signed"), None)
    );

    // alice of the edge CA signs; the edge maps choria=alice.mcollective into london, where
    // fedgate's privileged certificate speaks for it, and keeps the client's request id.
    let (message, requestid) = signed_ping("edge", "alice", "s1");
    let mut replies = Vec::new();
    let done = client.call(&message, |r| replies.push(r)).await.unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(
        (done["responses"].as_u64(), replies.len()),
        (Some(4), 4),
        "{done}"
    );
    assert_eq!(done["requestids"], json!([requestid]));
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        4
    );

    // The same signed request again is a replay.
    let error = client.call(&message, |_| {}).await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("unverified")),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already forwarded")
    );

    // A request signed under another realm's CA, and one whose signature was tampered with.
    let (foreign, _) = signed_ping("london", "alice", "s2");
    let error = client.call(&foreign, |_| {}).await.unwrap();
    assert_eq!(error["code"], "unverified", "{error}");
    assert!(error["message"].as_str().unwrap().contains("unknown CA"));
    let (mut tampered, _) = signed_ping("edge", "alice", "s3");
    let signature = tampered["request"]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    tampered["request"]["signature"] = json!(format!("{flipped}{}", &signature[1..]));
    let error = client.call(&tampered, |_| {}).await.unwrap();
    assert_eq!(error["code"], "unverified", "{error}");

    // A plain rpc on a signed-only socket is refused.
    let error = client.call(&ping("p1"), |_| {}).await.unwrap();
    assert_eq!(error["code"], "invalid", "{error}");
    client.close().await;

    let records = audit_records(&gateway.audit_file());
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(
        (
            allowed[0].event.caller.as_deref(),
            allowed[0].event.mapped_caller.as_deref(),
            allowed[0].event.request_id.as_deref()
        ),
        (
            Some("choria=alice.mcollective"),
            Some("choria=alice.mcollective"),
            Some(requestid.as_str())
        )
    );
    let refused: Vec<&str> = records
        .iter()
        .filter(|r| r.event.decision == Some(Verdict::Deny))
        .map(|r| r.event.code.as_str())
        .collect();
    assert_eq!(refused, ["replay", "unknown_ca", "bad_signature"]);
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_request_reaches_each_member_the_caller_maps_into() {
    let tokyo = Network::start("tokyo");
    let top = format!(
        "{}[federations.prod]\nnats = [\"nats://127.0.0.1:1\"]\nca = {:?}\nmembers = [\"london\", \"tokyo\"]\n",
        collective_block("collectives.tokyo", &tokyo),
        realm("prod").ca,
    );
    let gateway = Gateway::start_with(&top, TOKYO_RULES, "").await;
    let _london = gateway.london.start_fleet(3).await;
    let _tokyo = tokyo.start_fleet(2).await;

    // up=alice maps into both; up=carol only into london, and tokyo says why.
    let alice = gateway.token("alice", Duration::from_secs(300));
    let mut client = WsClient::connect(&Connect {
        token: Some(alice.clone()),
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let request = json!({"type":"rpc","id":"f1","federation":"prod","agent":"rpcutil","action":"ping","timeout_ms":10000,"limit":5});
    let mut senders = Vec::new();
    let done = client
        .call(&request, |r| {
            senders.push(r.message["sender"].as_str().unwrap().to_string())
        })
        .await
        .unwrap();
    assert_eq!(
        (
            done["responses"].as_u64(),
            done["requestids"].as_array().map(Vec::len)
        ),
        (Some(5), Some(2)),
        "{done}"
    );
    assert_eq!(senders.len(), 5);
    assert!(done.get("refused").is_none(), "{done}");
    client.close().await;

    let carol = gateway.token("carol", Duration::from_secs(300));
    let mut client = WsClient::connect(&Connect {
        token: Some(carol),
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let request = json!({"type":"rpc","id":"f2","federation":"prod","agent":"rpcutil","action":"ping","timeout_ms":10000,"limit":3});
    let done = client.call(&request, |_| {}).await.unwrap();
    assert_eq!(done["responses"].as_u64(), Some(3), "{done}");
    assert!(
        done["refused"]["tokyo"]
            .as_str()
            .is_some_and(|why| why.starts_with("unmapped")),
        "{done}"
    );
    client.close().await;

    // /api/realms lists the federation for both, since each reaches a member.
    let realms = reqwest_realms(&gateway, &alice).await;
    assert_eq!(realms["federations"], json!(["prod"]), "{realms}");
    assert_eq!(
        realms["collectives"],
        json!(["london", "tokyo"]),
        "{realms}"
    );
    // A token that does not verify is refused, like an upgrade with it.
    let refused = reqwest_realms(&gateway, "not-a-token").await;
    assert_eq!(refused["error"], "token", "{refused}");
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_sockets_each_complete_a_request() {
    const SOCKETS: usize = 1000;
    const FLEET: usize = 5;
    let gateway =
        Gateway::start("rate_per_second = 100000\nrate_burst = 100000\nmax_connections = 1100\n")
            .await;
    let _fleet = gateway.london.start_fleet(FLEET).await;
    let token = gateway.token("alice", Duration::from_secs(600));
    let options = Connect {
        token: Some(token),
        ..connect_options(&gateway)
    };
    // Open them all first, so they are all open at once.
    let mut clients = Vec::with_capacity(SOCKETS);
    for chunk in 0..SOCKETS / 100 {
        let opened = futures::future::join_all((0..100).map(|_| WsClient::connect(&options))).await;
        for client in opened {
            clients.push(client.unwrap_or_else(|e| panic!("socket {chunk}: {e}")));
        }
    }
    assert_eq!(clients.len(), SOCKETS);
    let runs = clients.into_iter().enumerate().map(|(n, mut client)| async move {
        let request = json!({"type":"rpc","id":format!("k{n}"),"collective":"london","agent":"rpcutil","action":"ping","timeout_ms":30000,"limit":FLEET});
        let done = client.call(&request, |_| {}).await.unwrap();
        client.close().await;
        done
    });
    let dones = futures::future::join_all(runs).await;
    let complete = dones
        .iter()
        .filter(|d| d["type"] == "done" && d["responses"].as_u64() == Some(FLEET as u64))
        .count();
    assert_eq!(
        complete,
        SOCKETS,
        "{:?}",
        dones
            .iter()
            .find(|d| d["responses"].as_u64() != Some(FLEET as u64))
    );
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_disconnected_at_the_queue_limit() {
    const QUEUE: usize = 16;
    let gateway = Gateway::start(&format!("outbound_queue = {QUEUE}\n")).await;
    let _fleet = gateway.london.start_fleet(100).await;
    let token = gateway.token("alice", Duration::from_secs(300));

    // A small receive buffer, so the connection fills quickly; then the client stops reading.
    let addr = gateway.edge.as_ref().unwrap().local_addr();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(addr).await.unwrap();
    let mut request = gateway.url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(tls(None))),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    // Four echoes of 40 KiB from 100 nodes: 16 MB of replies, far more than the socket buffers.
    let message = "x".repeat(40 * 1024);
    for n in 0..4 {
        send(&mut socket, json!({"type":"rpc","id":format!("e{n}"),"collective":"london","agent":"echo","action":"echo","data":{"message":message},"timeout_ms":20000})).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Reading again: what was buffered, then the close the edge chose. At most the queue's
    // worth of replies beyond what the connection held were ever kept for this client.
    let mut texts = 0usize;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(_))) => texts += 1,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    assert_eq!(code, 4008);
    assert!(
        texts < 400,
        "{texts} replies reached a client that did not read"
    );

    // The gateway is fine: another socket works.
    let mut client = WsClient::connect(&Connect {
        token: Some(gateway.token("alice", Duration::from_secs(60))),
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    // Ten nodes: their replies fit the 16-message queue even if this client reads slowly.
    let request = json!({"type":"rpc","id":"after","collective":"london","agent":"rpcutil","action":"ping","filter":{"identity":["/^london-000/"]},"limit":10,"timeout_ms":10000});
    let done = client.call(&request, |_| {}).await.unwrap();
    assert_eq!(done["responses"].as_u64(), Some(10), "{done}");
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_requests_finish_then_closes_every_socket() {
    let mut gateway = Gateway::start("shutdown_grace_s = 10\n").await;
    let _fleet = gateway.london.start_fleet(4).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let options = Connect {
        token: Some(token),
        ..connect_options(&gateway)
    };
    let mut busy = WsClient::connect(&options).await.unwrap();
    let mut idle = WsClient::connect(&options).await.unwrap();
    busy.send(&json!({"type":"rpc","id":"slow","collective":"london","agent":"echo","action":"sleep","data":{"seconds":2},"limit":4,"timeout_ms":10000}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let edge = gateway.edge.take().unwrap();
    let addr = edge.local_addr();
    let stopping = tokio::spawn(edge.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No new sockets while draining.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err()
            || WsClient::connect(&options).await.is_err()
    );
    // The request in flight finishes, then its socket is closed with 1001.
    let mut replies = 0;
    let done = loop {
        let message = busy.next().await.unwrap();
        match message["type"].as_str() {
            Some("reply") => replies += 1,
            _ => break message,
        }
    };
    assert_eq!(
        (done["type"].as_str(), replies),
        (Some("done"), 4),
        "{done}"
    );
    match busy.next().await {
        Err(WsError::Closed { code, .. }) => assert_eq!(code, 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    match idle.next().await {
        Err(WsError::Closed { code, .. }) => assert_eq!(code, 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown ends")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_completes_a_request() {
    let gateway = Gateway::start("").await;
    let _fleet = gateway.london.start_fleet(3).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let python = std::env::var("FEDGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ws_ping.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&gateway.url)
        .arg(&token)
        .arg(&realm("edge").ca)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{python} {script} failed (scripts/test installs the websockets package):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replies = lines.iter().filter(|l| l["type"] == "reply").count();
    let done = lines.last().unwrap();
    assert_eq!(
        (replies, done["type"].as_str(), done["responses"].as_u64()),
        (3, Some("done"), Some(3)),
        "{stdout}"
    );
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rpc_prints_what_rpc_prints() {
    let gateway = Gateway::start("").await;
    let _fleet = gateway.london.start_fleet(3).await;
    let token = gateway.token("alice", Duration::from_secs(300));
    let edge = realm("edge");
    let run = |args: Vec<String>| async move {
        let output = tokio::process::Command::new(support::fedgate_bin())
            .args(&args)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let common = |extra: &[&str]| {
        let mut args: Vec<String> = ["ws-rpc", "--url", &gateway.url, "--ca"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(edge.ca.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--collective", "london", "--json", "rpcutil", "ping"].map(String::from));
        args
    };
    let alice = &edge.users["alice"];
    let (cert, key) = (
        alice.cert.display().to_string(),
        alice.key.display().to_string(),
    );
    for lines in [
        run(common(&["--token", &token])).await,
        run(common(&["--cert", &cert, "--key", &key])).await,
        run(common(&["--cert", &cert, "--key", &key, "--sign"])).await,
    ] {
        // `fedgate rpc --json`: one {"type":"reply","reply":{...}} per node, then the summary.
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[..3].iter().all(|l| l["type"] == "reply"
            && l["reply"]["statuscode"] == 0
            && l["reply"]["sender"].is_string()));
        assert_eq!(lines[3]["type"], "summary");
        assert_eq!(lines[3]["summary"]["responses"], 3);
        assert_eq!(
            lines[3]["summary"]["requestids"].as_array().unwrap().len(),
            1
        );
    }
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_attempts_count_against_the_address_rate() {
    let gateway = Gateway::start("rate_per_second = 1\nrate_burst = 2\n").await;
    let mut client = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let mut codes = Vec::new();
    for n in 0..4 {
        let garbage =
            json!({"type":"signed","id":format!("g{n}"),"request":{"protocol":"nonsense"}});
        let error = client.call(&garbage, |_| {}).await.unwrap();
        codes.push(error["code"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        ["unverified", "unverified", "rate_limited", "rate_limited"]
    );
    client.close().await;
    gateway.edge.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_signed_only_socket_gives_its_slot_back() {
    let gateway = Gateway::start("auth_timeout_s = 1\n").await;
    let client = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let mut socket = client.into_inner();
    assert_eq!(close_code(&mut socket).await, 4000);
    gateway.edge.unwrap().shutdown().await;
}

/// The console is part of the binary (issue 22): served at `/` with no page files or Node.js
/// at run time, its hashed assets cacheable for good, the rest revalidated by ETag, never
/// framed by another site; `console = false` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_built_into_the_binary_is_served_at_the_root() {
    assert!(
        fedgate::edge::console::embedded(),
        "this build holds no web console: build web-demo (scripts/setup-deps), then rebuild"
    );
    let gateway = Gateway::start("").await;
    let (head, body) = support::edge::https_get(&gateway, "/", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(
        head.contains("content-security-policy: frame-ancestors 'none'"),
        "{head}"
    );
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("<title>fedgate console</title>"), "{page}");

    // The script the page loads: immutable, and a revalidation with its ETag is answered 304.
    let script = page
        .split('"')
        .find_map(|s| s.strip_prefix("./assets/").filter(|s| s.ends_with(".js")))
        .map(|s| format!("/assets/{s}"))
        .unwrap_or_else(|| panic!("no script in {page}"));
    let (head, body) = support::edge::https_get(&gateway, &script, "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(head.contains("max-age=31536000, immutable"), "{head}");
    assert!(!body.is_empty());
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .to_string();
    let (head, body) =
        support::edge::https_get(&gateway, &script, &format!("If-None-Match: {etag}\r\n")).await;
    assert!(head.starts_with("http/1.1 304"), "{head}");
    assert!(body.is_empty());

    let (head, _) = support::edge::https_get(&gateway, "/assets/none.js", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");

    let off = Gateway::start("console = false\n").await;
    let (head, _) = support::edge::https_get(&off, "/", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}
