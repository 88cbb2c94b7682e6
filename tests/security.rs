//! Refusals, each with its own reason, seen by the verifier and by simulated nodes over real NATS.

mod support;

use std::time::Duration;

use bytes::Bytes;
use fedgate::client::{RpcCall, RpcClient};
use fedgate::security::{CaBundle, CertChain, Now, Reason, Signer, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{SecureRequest, Transport};
use fedgate_dev::devpki::CertPair;
use support::{Network, realm, user, wait_for_stats};

fn verifier(realm_name: &str) -> Verifier {
    Verifier::with_defaults(
        CaBundle::from_file(&realm(realm_name).ca).unwrap(),
        Limits::default(),
    )
}

fn signer(pair: &CertPair) -> Signer {
    Signer::from_files(&pair.cert, &pair.key).unwrap()
}

/// A signed ping transport built by a client that signs as `signer` with `callerid`.
async fn signed(
    network: &Network,
    signer_pair: &CertPair,
    callerid: Option<&str>,
    edit: impl FnOnce(&mut RpcCall),
) -> (RpcClient, Transport) {
    let client = network.client(signer_pair, callerid).await;
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    edit(&mut call);
    let (_, transport) = client.build(&call, &"a".repeat(32), Now::system()).unwrap();
    (client, transport)
}

fn secure(transport: &Transport) -> SecureRequest {
    SecureRequest::decode(&transport.data, &Limits::default()).unwrap()
}

fn reason(verifier: &Verifier, transport: &Transport, now: Now) -> Option<Reason> {
    verifier
        .verify(secure(transport), now)
        .err()
        .map(|e| e.reason())
}

/// Publishes `payload` to london's rpcutil broadcast and waits for the fleet to count `reason`.
async fn fleet_refuses(
    network: &Network,
    fleet: &fedgate_dev::fleet::Fleet,
    payload: Vec<u8>,
    reason: Reason,
    nodes: u64,
) {
    let before = fleet.stats().refused(reason);
    let nats = network.connect_as("alice").await;
    nats.publish("london.broadcast.agent.rpcutil", Bytes::from(payload))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let stats = wait_for_stats(fleet, Duration::from_secs(5), |s| {
        s.refused(reason) >= before + nodes
    })
    .await;
    assert_eq!(stats.refused(reason), before + nodes, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_own_reason() {
    let network = Network::start("london");
    let fleet = network.start_fleet(4).await;
    let london = verifier("london");
    let now = Now::system();
    let replies_before = fleet.stats().replies;

    // Wrong CA: alice of tokyo signs for london.
    let (_, t) = signed(&network, user("tokyo", "alice"), None, |_| {}).await;
    assert_eq!(reason(&london, &t, now), Some(Reason::UnknownCa));
    fleet_refuses(&network, &fleet, t.encode(), Reason::UnknownCa, 4).await;

    // Name mismatch: alice's certificate signs as bob.
    let (_, t) = signed(
        &network,
        user("london", "alice"),
        Some("choria=bob.mcollective"),
        |_| {},
    )
    .await;
    assert_eq!(reason(&london, &t, now), Some(Reason::NameMismatch));
    fleet_refuses(&network, &fleet, t.encode(), Reason::NameMismatch, 4).await;

    // Not allowed: a certificate whose name is not on the .mcollective allow list.
    let (_, t) = signed(
        &network,
        &realm("london").server,
        Some("choria=london.fedgate.local"),
        |_| {},
    )
    .await;
    assert_eq!(reason(&london, &t, now), Some(Reason::NotAllowed));
    fleet_refuses(&network, &fleet, t.encode(), Reason::NotAllowed, 4).await;

    // Tampered envelope: the signed message is changed after signing.
    let (_, mut t) = signed(&network, user("london", "alice"), None, |_| {}).await;
    let mut s = secure(&t);
    s.message = s.message.replace(r#""ttl":60"#, r#""ttl":600"#);
    t.data = s.encode();
    assert_eq!(reason(&london, &t, now), Some(Reason::BadSignature));
    fleet_refuses(&network, &fleet, t.encode(), Reason::BadSignature, 4).await;

    // Expired TTL: created two minutes ago with a 60 s ttl.
    let (client, _) = signed(&network, user("london", "alice"), None, |_| {}).await;
    let old = Now::at_unix(now.unix_seconds() as u64 - 120);
    let (_, t) = client
        .build(
            &RpcCall::new("london", "rpcutil", "ping"),
            &"b".repeat(32),
            old,
        )
        .unwrap();
    assert_eq!(reason(&london, &t, now), Some(Reason::TtlExpired));
    fleet_refuses(&network, &fleet, t.encode(), Reason::TtlExpired, 4).await;

    // Wrong collective: signed for tokyo, delivered on london's subject.
    let (client, _) = signed(&network, user("london", "alice"), None, |_| {}).await;
    let (_, t) = client
        .build(
            &RpcCall::new("tokyo", "rpcutil", "ping"),
            &"c".repeat(32),
            now,
        )
        .unwrap();
    assert_eq!(
        reason(&london, &t, now),
        None,
        "the signature itself is fine"
    );
    fleet_refuses(&network, &fleet, t.encode(), Reason::WrongCollective, 4).await;

    // Malformed: not a transport at all.
    fleet_refuses(
        &network,
        &fleet,
        b"{\"protocol\":\"choria:transport:1\"".to_vec(),
        Reason::Malformed,
        4,
    )
    .await;

    // Expired certificate: the same valid request, judged two years from now.
    let (_, t) = signed(&network, user("london", "alice"), None, |_| {}).await;
    let later = Now::at_unix(now.unix_seconds() as u64 + 2 * 365 * 86_400);
    assert_eq!(reason(&london, &t, later), Some(Reason::ExpiredCertificate));

    // None of the refused requests produced a reply, not even late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.stats().replies, replies_before);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_signers_get_replies() {
    // tokyo issues through an intermediate CA that travels in pubcert.
    let tokyo = Network::start("tokyo");
    let fleet = tokyo.start_fleet(3).await;
    let alice = user("tokyo", "alice");
    let chain = CertChain::from_file(&alice.cert, 8).unwrap();
    assert_eq!(
        chain.intermediates().len(),
        1,
        "tokyo leaves carry their intermediate"
    );
    let client = tokyo.client(alice, None).await;
    let mut call = RpcCall::new("tokyo", "rpcutil", "ping");
    call.expect = Some(3);
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!(summary.ok, 3, "a chain with an intermediate is accepted");

    // Without the intermediate the chain does not reach the root.
    let (_, mut t) = client.build(&call, &"d".repeat(32), Now::system()).unwrap();
    let mut s = secure(&t);
    let leaf_only = s
        .pubcert
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap()
        .to_string();
    s.pubcert = leaf_only;
    t.data = s.encode();
    assert_eq!(
        reason(&verifier("tokyo"), &t, Now::system()),
        Some(Reason::UnknownCa)
    );
    fleet.shutdown().await;

    // A privileged certificate may sign for any caller id.
    let london = Network::start("london");
    let fleet = london.start_fleet(3).await;
    let privileged = realm("london").privileged.as_ref().unwrap();
    let client = london.client(privileged, Some("up=carol")).await;
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.expect = Some(3);
    assert_eq!(client.call(&call, |_| {}).await.unwrap().ok, 3);
    let (_, t) = client.build(&call, &"e".repeat(32), Now::system()).unwrap();
    let verified = verifier("london")
        .verify(secure(&t), Now::system())
        .unwrap();
    assert!(verified.privileged());
    assert_eq!(verified.caller().as_str(), "up=carol");
    assert_eq!(verified.signer(), "fedgate.privileged.mcollective");
    fleet.shutdown().await;
}

#[test]
fn signer_refuses_a_key_that_is_not_the_certificates() {
    let alice = user("london", "alice");
    let bob = user("london", "bob");
    let chain = CertChain::from_file(&alice.cert, 8).unwrap();
    let err = Signer::new(chain, &std::fs::read(&bob.key).unwrap(), "bob.key").unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(signer(alice).certname(), "alice.mcollective");
}

/// Signs `request_json` exactly as given, so tests can craft what a client could send.
fn sign_raw(pair: &CertPair, request_json: &str, reply_to: &str) -> Vec<u8> {
    let signer = signer(pair);
    let signature = fedgate::wire::encode_base64(&signer.sign(request_json.as_bytes()).unwrap());
    let secure = SecureRequest::new(request_json.into(), signature, signer.pubcert().into());
    let headers = fedgate::wire::choria_v1::TransportHeaders {
        reply_to: Some(reply_to.into()),
        ..Default::default()
    };
    Transport::new(secure.encode(), headers).encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_go_would_read_differently_are_refused_or_denied() {
    let network = Network::start("london");
    let fleet = network.start_fleet(2).await;
    let alice = user("london", "alice");
    let now = Now::system().unix_seconds();
    let request = |callerid_keys: &str, body: &str| {
        format!(
            r#"{{"protocol":"choria:request:1","message":{},"envelope":{{"requestid":"{}","senderid":"t",{callerid_keys},"collective":"london","agent":"rpcutil","ttl":60,"time":{now},"filter":{{"fact":[],"cf_class":[],"agent":[],"identity":[],"compound":[]}}}}}}"#,
            serde_json::to_string(body).unwrap(),
            "9".repeat(32)
        )
    };
    // A case variant of callerid: Go would read bob, so nothing may act on it.
    let smuggled = request(
        r#""callerid":"choria=alice.mcollective","CallerID":"choria=bob.mcollective""#,
        r#"{"agent":"rpcutil","action":"ping","data":{}}"#,
    );
    fleet_refuses(
        &network,
        &fleet,
        sign_raw(alice, &smuggled, "london.reply.x.y"),
        Reason::Malformed,
        2,
    )
    .await;

    // The body names another agent than the envelope. Without rpcauthorization a Choria server
    // never reads the body's agent: rpcutil, the envelope's agent, is asked for `sleep`, which it
    // lacks. (With a node policy mcorpc denies the mismatch: `fleet::agents` unit tests.)
    let nats = network.connect_as("alice").await;
    let mut replies = nats.subscribe("london.reply.deny.me").await.unwrap();
    nats.flush().await.unwrap();
    let other_agent = request(
        r#""callerid":"choria=alice.mcollective""#,
        r#"{"agent":"echo","action":"sleep","data":{"seconds":30}}"#,
    );
    nats.publish(
        "london.broadcast.agent.rpcutil",
        Bytes::from(sign_raw(alice, &other_agent, "london.reply.deny.me")),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let message = tokio::time::timeout(
            Duration::from_secs(5),
            futures::StreamExt::next(&mut replies),
        )
        .await
        .unwrap()
        .unwrap();
        let transport = Transport::decode(&message.payload, &Limits::default()).unwrap();
        let reply =
            fedgate::wire::choria_v1::SecureReply::decode(&transport.data, &Limits::default())
                .unwrap()
                .reply(&Limits::default())
                .unwrap();
        let rpc = reply.rpc(&Limits::default()).unwrap();
        assert_eq!(
            (rpc.statuscode, rpc.statusmsg.as_str()),
            (2, "Unknown action sleep for agent rpcutil")
        );
    }
    fleet.shutdown().await;
}
