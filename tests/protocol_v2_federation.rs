//! Choria protocol v2 through the Federation Broker (resign mode), with real nats-servers: prod
//! is the federation (a v1 CA and a v2 token issuer), london a v1 collective and tokyo a v2 one.
//! A v1 client reaches tokyo and a v2 client reaches london (and tokyo); replies come back in
//! each caller's own protocol; a fact-conditioned policy narrows the fleet both ways; and a v2
//! caller's bad requests are refused, recorded and never forwarded.

mod support;

use std::time::Duration;

use fedgate::audit::{Kind, Verdict};
use fedgate::client::{RpcCall, RpcClient, Summary};
use fedgate::security::Now;
use fedgate::security::v2::V2Signer;
use fedgate::security::v2::tokens::ClientPermissions;
use fedgate::wire::Limits;
use fedgate::wire::choria_v2::{
    FederationHeader, Reply, Request, SecureReply, Transport, TransportHeaders, new_request_id,
};
use fedgate_dev::fleet::Fleet;
use futures::StreamExt;
use support::v2::{FEDGATE_CALLER, V2Org};
use support::{BrokerProcess, Network, audit_records, gate_block, network_block, realm, user};

const NODES: usize = 12;
const PRIVILEGED: &str = "fedgate.privileged.mcollective";

/// prod's v1 callers keep their names; its v2 callers `up=<name>` become `choria=<name>.mcollective`.
const RULES: &str = r#"
[[rule]]
from = "prod"
to = ["london", "tokyo"]
glob = "choria=*.mcollective"
as = "$0"

[[rule]]
from = "prod"
to = ["london", "tokyo"]
glob = "up=*"
as = "choria=$1.mcollective"
"#;

/// alice (v1) and dave (v2) may ping anywhere; bob (v1) and carol (v2) only nodes in the uk.
const RPCUTIL_POLICY: &str = "policy default deny\n\
allow\tchoria=alice.mcollective choria=dave.mcollective\tping\t*\t*\n\
allow\tchoria=bob.mcollective choria=carol.mcollective\tping\tcountry=uk\t*\n";

struct Topology {
    prod: Network,
    london: Network,
    tokyo: Network,
    /// prod's v2 organization: its callers.
    callers: V2Org,
    /// tokyo's v2 organization: its servers, and fedgate's delegating token there.
    tokyo_org: V2Org,
    dir: tempfile::TempDir,
}

impl Topology {
    fn start() -> Topology {
        Topology {
            prod: Network::start("prod"),
            london: Network::start("london"),
            tokyo: Network::start("tokyo"),
            callers: V2Org::new(60),
            tokyo_org: V2Org::new(70),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> std::path::PathBuf {
        let rules = self.dir.path().join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let signer = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\nworkers = 2\n\n[identity]\nrules = {rules:?}\n\n{}{}{}{}",
            gate_block(
                self.dir.path(),
                &[
                    ("default.policy", "policy default allow\n"),
                    ("rpcutil.policy", RPCUTIL_POLICY),
                ],
                ""
            ),
            network_block(
                "federations.prod",
                &self.prod,
                &format!(
                    "issuers = {{ choria = {:?} }}",
                    self.callers.issuer.public_key()
                ),
            ),
            network_block(
                "federations.prod.collectives.london",
                &self.london,
                &format!(
                    "signer = {{ certificate = {:?}, key = {:?} }}",
                    signer.cert, signer.key
                ),
            ),
            network_block(
                "federations.prod.collectives.tokyo",
                &self.tokyo,
                &self.tokyo_org.config_line(),
            ),
        );
        let path = self.dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn fleets(&self) -> (Fleet, Fleet) {
        let london = self.london.start_fleet(NODES).await;
        let tokyo = self.tokyo_org.start_fleet(&self.tokyo, NODES).await;
        (london, tokyo)
    }

    fn audit(&self) -> Vec<fedgate::audit::Record> {
        audit_records(&self.dir.path().join("audit/audit.log"))
    }
}

fn uk_nodes() -> usize {
    fedgate_dev::fleet::generate("london", NODES, &["london".into()])
        .iter()
        .filter(|n| n.facts["country"] == "uk")
        .count()
}

fn ping(collective: &str, expect: usize) -> RpcCall {
    let mut call = RpcCall::new(collective, "rpcutil", "ping");
    call.federation = Some("prod".into());
    call.expect = Some(expect);
    call.timeout = Duration::from_secs(if expect > 0 { 20 } else { 2 });
    call
}

async fn v1_call(client: &RpcClient, collective: &str, expect: usize) -> Summary {
    client
        .call_many(&[ping(collective, expect)], |_| {})
        .await
        .unwrap()
}

/// A v2 caller's federated ping of `collective`, as go-choria's v2 client builds it: a KSUID
/// id, the reply subject ending with it, the federation header naming the broadcast target.
fn v2_ping(caller: &V2Signer, callerid: &str, collective: &str) -> (String, String, Vec<u8>) {
    v2_ping_signed(callerid, collective, |request| caller.sign_request(request))
}

/// [`v2_ping`] with the secure request `sign` makes.
fn v2_ping_signed(
    callerid: &str,
    collective: &str,
    sign: impl FnOnce(&Request) -> fedgate::wire::choria_v2::SecureRequest,
) -> (String, String, Vec<u8>) {
    let id = new_request_id();
    let mut request = Request::new(
        br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
        id.clone(),
        "client.example.net".into(),
        callerid.into(),
        collective.into(),
        "rpcutil".into(),
        60,
        Now::system().unix_nanos(),
    );
    if let Some(filter) = request.filter.as_mut() {
        filter.agent = vec!["rpcutil".into()];
    }
    let reply = fedgate::subjects::reply(collective, callerid, &id);
    let headers = TransportHeaders {
        reply: Some(reply.clone()),
        sender: "client.example.net".into(),
        federation: Some(FederationHeader {
            request: id.clone(),
            reply: None,
            targets: vec![format!("{collective}.broadcast.agent.rpcutil")],
        }),
        ..TransportHeaders::default()
    };
    let bytes = Transport::new(sign(&request).encode(), headers).encode();
    (id, reply, bytes)
}

/// Publishes `bytes` into prod's federation and collects the v2 replies on `reply`, each checked
/// as a v2 client would read it: `expect` of them, or as many as come within `wait`.
async fn v2_send(
    nats: &async_nats::Client,
    reply: &str,
    bytes: Vec<u8>,
    (expect, wait): (usize, Duration),
) -> Vec<Reply> {
    let mut replies = nats.subscribe(reply.to_string()).await.unwrap();
    nats.flush().await.unwrap();
    nats.publish("choria.federation.prod.federation", bytes.into())
        .await
        .unwrap();
    let limits = Limits::default();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        let transport = Transport::decode(&message.payload, &limits).unwrap();
        let secure = SecureReply::decode(&transport.data, &limits).unwrap();
        out.push(secure.decode_reply(&limits).unwrap());
        if out.len() == expect {
            break;
        }
    }
    out
}

fn statuses(replies: &[Reply]) -> Vec<i64> {
    let limits = Limits::default();
    replies
        .iter()
        .map(|r| r.rpc(&limits).unwrap().statuscode)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_and_v2_callers_reach_collectives_of_the_other_protocol_through_the_federation() {
    let topo = Topology::start();
    let (london, tokyo) = topo.fleets().await;
    let broker = BrokerProcess::spawn(&topo.config(), "v2f1").await;
    let uk = uk_nodes();
    assert!(0 < uk && uk < NODES, "{uk} of {NODES} nodes in the uk");

    // A v1 client reaches the v2 collective: tokyo's v2 servers verify fedgate's delegation
    // for the mapped caller, and the client reads v1 replies under its own request id.
    let alice = topo.prod.client(user("prod", "alice"), None).await;
    let summary = v1_call(&alice, "tokyo", NODES).await;
    assert_eq!(
        (summary.responses, summary.ok, summary.invalid),
        (NODES, NODES, 0),
        "{summary:?}"
    );
    assert_eq!(
        tokyo
            .stats()
            .acted_for("choria=alice.mcollective", FEDGATE_CALLER),
        NODES as u64
    );

    // A v2 client reaches the v1 collective: london's servers accept fedgate's privileged
    // signature for the mapped caller, and the client reads v2 replies under its own id.
    let nats = topo.prod.connect_as("alice").await;
    let dave = topo
        .callers
        .caller(61, "up=dave", ClientPermissions::fleet());
    let (id, reply, bytes) = v2_ping(&dave, "up=dave", "london");
    let replies = v2_send(&nats, &reply, bytes, (NODES, Duration::from_secs(10))).await;
    assert_eq!(replies.len(), NODES, "{replies:?}");
    assert!(replies.iter().all(|r| r.request == id), "{replies:?}");
    assert_eq!(statuses(&replies), vec![0; NODES]);
    assert_eq!(
        london
            .stats()
            .acted_for("choria=dave.mcollective", PRIVILEGED),
        NODES as u64
    );
    // ... and the v2 collective, v2 all the way.
    let (id, reply, bytes) = v2_ping(&dave, "up=dave", "tokyo");
    let replies = v2_send(&nats, &reply, bytes, (NODES, Duration::from_secs(10))).await;
    assert_eq!(replies.len(), NODES);
    assert!(replies.iter().all(|r| r.request == id));

    // A fact-conditioned policy narrows both ways: bob (v1) reaches only tokyo's uk nodes,
    // carol (v2) only london's.
    let bob = topo.prod.client(user("prod", "bob"), None).await;
    let summary = v1_call(&bob, "tokyo", uk).await;
    assert_eq!((summary.responses, summary.ok), (uk, uk), "{summary:?}");
    assert_eq!(
        tokyo
            .stats()
            .acted_for("choria=bob.mcollective", FEDGATE_CALLER),
        uk as u64
    );
    let carol = topo
        .callers
        .caller(62, "up=carol", ClientPermissions::fleet());
    let (_, reply, bytes) = v2_ping(&carol, "up=carol", "london");
    let replies = v2_send(&nats, &reply, bytes, (uk, Duration::from_secs(10))).await;
    assert_eq!(replies.len(), uk, "{replies:?}");
    assert_eq!(
        london
            .stats()
            .acted_for("choria=carol.mcollective", PRIVILEGED),
        uk as u64
    );

    // Every request was decided, and the policy's restriction recorded, at the broker.
    let records = topo.audit();
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 5, "{allowed:#?}");
    let carol_record = allowed
        .iter()
        .find(|r| r.event.caller.as_deref() == Some("up=carol"))
        .expect("carol's decision");
    assert_eq!(
        carol_record.event.mapped_caller.as_deref(),
        Some("choria=carol.mcollective")
    );
    assert!(
        serde_json::to_string(&carol_record.event)
            .unwrap()
            .contains("country"),
        "{carol_record:?}"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v2_caller_s_bad_requests_are_refused_recorded_and_never_forwarded() {
    let topo = Topology::start();
    let (london, tokyo) = topo.fleets().await;
    let broker = BrokerProcess::spawn(&topo.config(), "v2f2").await;
    let nats = topo.prod.connect_as("alice").await;
    let quiet = Duration::from_millis(1500);
    let refused = |reason: &'static str| {
        let broker = &broker;
        async move {
            broker
                .counter(
                    "fedgate_refusals_total",
                    &[("edge", "federation"), ("code", reason)],
                )
                .await
        }
    };

    // A caller from an organization prod does not trust, and one whose token claims prod's
    // organization but was signed by another issuer.
    let elsewhere = V2Org::new(90);
    let stranger = elsewhere
        .issuer
        .client_signer(
            &[91; 32],
            "up=mallory",
            "acme",
            ClientPermissions::fleet(),
            (Now::system().unix_seconds() - 60, 3600),
        )
        .unwrap();
    let (_, reply, bytes) = v2_ping(&stranger, "up=mallory", "london");
    assert!(v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty());
    assert_eq!(refused("unknown_ca").await, 1.0);
    let forger = elsewhere.caller(92, "up=mallory", ClientPermissions::fleet());
    let (_, reply, bytes) = v2_ping(&forger, "up=mallory", "london");
    assert!(v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty());
    assert_eq!(refused("invalid_certificate").await, 1.0);

    // An expired token.
    let expired = topo
        .callers
        .issuer
        .client_signer(
            &[63; 32],
            "up=erin",
            "choria",
            ClientPermissions::fleet(),
            (Now::system().unix_seconds() - 7200, 3600),
        )
        .unwrap();
    let (_, reply, bytes) = v2_ping(&expired, "up=erin", "london");
    assert!(v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty());
    assert_eq!(refused("expired_certificate").await, 1.0);

    // A caller without the delegation permission signing for someone else.
    let frank = topo
        .callers
        .caller(64, "up=frank", ClientPermissions::fleet());
    let alice_token = topo
        .callers
        .caller(65, "up=alice", ClientPermissions::signed_fleet());
    let (_, reply, bytes) = v2_ping_signed("up=alice", "london", |request| {
        frank.sign_delegated(request, alice_token.token())
    });
    assert!(v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty());
    assert_eq!(refused("not_allowed").await, 1.0);

    // A tampered request: the signature no longer matches.
    let dave = topo
        .callers
        .caller(61, "up=dave", ClientPermissions::fleet());
    let (_, reply, bytes) = v2_ping(&dave, "up=dave", "london");
    let mut transport = Transport::decode(&bytes, &Limits::default()).unwrap();
    let mut secure: serde_json::Value = serde_json::from_slice(&transport.data).unwrap();
    let request = secure["request"].as_str().unwrap().to_string();
    let tampered = fedgate::wire::encode_base64(
        &String::from_utf8(fedgate::wire::decode_base64_lenient(&request).unwrap())
            .unwrap()
            .replace("\"ttl\":60", "\"ttl\":61")
            .into_bytes(),
    );
    secure["request"] = tampered.into();
    transport.data = serde_json::to_vec(&secure).unwrap();
    assert!(
        v2_send(&nats, &reply, transport.encode(), (0, quiet))
            .await
            .is_empty()
    );
    assert_eq!(refused("bad_signature").await, 1.0);

    // Verified but refused: each is answered in v2, under the caller's own id, with the reason.
    let answer = |replies: Vec<Reply>, id: &str| -> String {
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].request, id);
        assert_eq!(replies[0].sender, "fedgate:v2f2");
        let rpc = replies[0].rpc(&Limits::default()).unwrap();
        assert_eq!(rpc.statuscode, 1, "{rpc:?}");
        rpc.data["fedgate"]["code"].as_str().unwrap().to_string()
    };
    // zed maps into london, where no policy line allows him.
    let zed = topo
        .callers
        .caller(66, "up=zed", ClientPermissions::fleet());
    let (id, reply, bytes) = v2_ping(&zed, "up=zed", "london");
    let replies = v2_send(&nats, &reply, bytes, (1, Duration::from_secs(5))).await;
    assert_eq!(answer(replies, &id), "denied");
    // A token may not name a caller of the kind prod's certificates speak as.
    let posing = topo
        .callers
        .caller(67, "choria=alice.mcollective", ClientPermissions::fleet());
    let (id, reply, bytes) = v2_ping(&posing, "choria=alice.mcollective", "london");
    assert!(
        v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty(),
        "{id}"
    );
    assert_eq!(refused("caller_kind").await, 1.0);
    // A reply subject other than go-choria's for the caller: replies from london could not be
    // told back to it, nor kept to its own inbox.
    let (id, _, bytes) = v2_ping(&dave, "up=dave", "london");
    let mut transport = Transport::decode(&bytes, &Limits::default()).unwrap();
    let elsewhere_inbox = fedgate::subjects::reply("london", "up=erin", &id);
    transport.headers.reply = Some(elsewhere_inbox.clone());
    let replies = v2_send(
        &nats,
        &elsewhere_inbox,
        transport.encode(),
        (1, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(answer(replies, &id), "bad_reply_to");

    // A replay: the first copy runs, the second is refused.
    let (_, reply, bytes) = v2_ping(&dave, "up=dave", "london");
    let first = v2_send(
        &nats,
        &reply,
        bytes.clone(),
        (NODES, Duration::from_secs(10)),
    )
    .await;
    assert_eq!(first.len(), NODES);
    assert!(v2_send(&nats, &reply, bytes, (0, quiet)).await.is_empty());
    assert_eq!(refused("replay").await, 1.0);

    // None of them reached a server; each is on the record as a refusal.
    assert_eq!(
        london.stats().total,
        NODES as u64,
        "only dave's first copy reached london"
    );
    let mut denied: Vec<String> = topo
        .audit()
        .into_iter()
        .filter(|r| r.kind == Kind::Decision && r.event.decision == Some(Verdict::Deny))
        .map(|r| r.event.code)
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        [
            "bad_reply_to",
            "bad_signature",
            "caller_kind",
            "denied",
            "expired_certificate",
            "invalid_certificate",
            "not_allowed",
            "replay",
            "unknown_ca"
        ]
    );
    assert_eq!(tokyo.stats().total, 0);
    drop(broker);
}
