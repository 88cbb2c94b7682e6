//! One table of admission cases, sent through every ingress that can carry them: the resign
//! federation (hand-made federated requests), the WebSocket edge (a token `rpc` and a `signed`
//! request), the legacy ingress in both serializers (raw AMQP publishes of signed legacy
//! requests) and the legacy facade (Choria requests on the collective's network). Every
//! (case, ingress) cell must write the same decision record (stage, code, rule, mapped caller,
//! restriction) and have the same forwarding outcome.
//!
//! Real nats-servers, RabbitMQ and `mcollectived` (the facade's legacy nodes); simulated Choria
//! fleets of two nodes (`country` uk and jp) behind the other ingresses. One gateway per ingress
//! serves every case, each with fresh request ids.
//!
//! Cells where an ingress disagrees with the others are listed in [`DISAGREEMENTS`]: they keep
//! the uniform expectation and are skipped, unless `FEDGATE_TABLE_ALL=1`.
//! `FEDGATE_TABLE_INGRESS=<name>` runs one ingress.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedgate::audit::{Kind, Record};
use fedgate::config::Config;
use fedgate::edge::client::{Connect, WsClient, signed_message};
use fedgate::fleet::Fleet;
use fedgate::natsd::{NatsServer, NatsServerConfig};
use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::security::{Now, Signer};
use fedgate::subjects;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Filter, Request, RequestEnvelope, SecureReply, SecureRequest, Transport,
    TransportHeaders,
};
use fedgate::wire::mcollective::{Ruby, Serializer};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use support::legacy::{LegacySite, Publisher};
use support::{BrokerProcess, Network, audit_records, gate_block, network_block, realm, user};

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// alice pings: policy allows it.
    Allowed,
    /// alice asks rpcutil#inventory, allowed only on `country=uk` nodes.
    FactCondition,
    /// alice asks rpcutil#collective_info: no rule allows it.
    DeniedAction,
    /// carol: no identity rule names her.
    Unmapped,
    /// bob: a `deny = true` identity rule.
    IdentityDenied,
    /// Signed under another realm's CA.
    WrongCa,
    /// The signed bytes changed after signing.
    Tampered,
    /// Signed 120 s ago with a TTL of 60.
    Expired,
    /// The same signed request sent twice to the same instance: the second is the case.
    Replayed,
    /// The signed payload, the envelope or the route name different agents.
    AgentMismatch,
    /// alice discovers: policy allows her.
    DiscoveryAllowed,
    /// dave (mapped, allowed nothing) discovers.
    DiscoveryDenied,
    /// service#status with `service = "nginx; rm"`, which its DDL refuses.
    DdlInvalid,
    /// Signed 59 s ago with a TTL of 60: 1 s left.
    TooLittleLife,
    /// A request fedgate published itself, coming back in.
    OwnRequest,
}

const CASES: [Case; 15] = [
    Case::Allowed,
    Case::FactCondition,
    Case::DeniedAction,
    Case::Unmapped,
    Case::IdentityDenied,
    Case::WrongCa,
    Case::Tampered,
    Case::Expired,
    Case::Replayed,
    Case::AgentMismatch,
    Case::DiscoveryAllowed,
    Case::DiscoveryDenied,
    Case::DdlInvalid,
    Case::TooLittleLife,
    Case::OwnRequest,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ingress {
    Federation,
    EdgeToken,
    EdgeSigned,
    LegacyMarshal,
    LegacyYaml,
    Facade,
}

const INGRESSES: [Ingress; 6] = [
    Ingress::Federation,
    Ingress::EdgeToken,
    Ingress::EdgeSigned,
    Ingress::LegacyMarshal,
    Ingress::LegacyYaml,
    Ingress::Facade,
];

/// The callers of the cases, whatever their credential on each ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persona {
    /// Mapped; may ping, inventory on uk nodes, and discover.
    Alice,
    /// Denied by a `deny = true` identity rule.
    Bob,
    /// No identity rule.
    Carol,
    /// Mapped; policy allows nothing.
    Dave,
}

/// The decision record's fields the table compares.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    stage: String,
    code: String,
    /// `file:line` of a policy rule, `default`, or `identity.toml rule N` (file names only).
    rule: Option<String>,
    mapped_caller: Option<String>,
    restricted: Option<String>,
}

/// What one (case, ingress) cell did.
#[derive(Debug)]
struct Outcome {
    /// The case's decision record (the last one written for it).
    record: Option<Decision>,
    /// Nodes that acted on the request.
    forwarded: usize,
}

/// What every ingress must do with a case.
struct Expected {
    stage: &'static str,
    code: &'static str,
    rule: Option<&'static str>,
    mapped: Option<Persona>,
    restricted: Option<&'static str>,
    forwarded: usize,
}

/// Nodes behind every ingress: one with `country = uk`, one with `jp`.
const NODES: usize = 2;

fn expected(case: Case) -> Expected {
    let refused = |stage, code, rule, mapped| Expected {
        stage,
        code,
        rule,
        mapped,
        restricted: None,
        forwarded: 0,
    };
    match case {
        Case::Allowed => Expected {
            stage: "authorize",
            code: "allowed",
            rule: Some("rpcutil.policy:2"),
            mapped: Some(Persona::Alice),
            restricted: None,
            forwarded: NODES,
        },
        Case::FactCondition => Expected {
            stage: "authorize",
            code: "allowed",
            rule: Some("rpcutil.policy:3"),
            mapped: Some(Persona::Alice),
            restricted: Some("facts country==uk"),
            forwarded: 1,
        },
        Case::DeniedAction => refused("authorize", "denied", Some("default"), Some(Persona::Alice)),
        Case::Unmapped => refused("map", "unmapped", None, None),
        Case::IdentityDenied => {
            refused("map", "identity_denied", Some("identity.toml rule 1"), None)
        }
        Case::WrongCa => refused("verify", "unknown_ca", None, None),
        Case::Tampered => refused("verify", "bad_signature", None, None),
        Case::Expired => refused("verify", "ttl_expired", None, None),
        // The guard refuses after mapping and policy: the record names both.
        Case::Replayed => refused(
            "replay",
            "replay",
            Some("rpcutil.policy:2"),
            Some(Persona::Alice),
        ),
        Case::AgentMismatch => refused("decode", "agent_mismatch", None, None),
        Case::DiscoveryAllowed => Expected {
            stage: "authorize",
            code: "allowed",
            rule: Some("discovery.policy:2"),
            mapped: Some(Persona::Alice),
            restricted: None,
            forwarded: NODES,
        },
        Case::DiscoveryDenied => {
            refused("authorize", "denied", Some("default"), Some(Persona::Dave))
        }
        Case::DdlInvalid => refused("validate", "invalid_input", None, None),
        Case::TooLittleLife => refused("verify", "expiring", None, None),
        Case::OwnRequest => refused("verify", "own_request", None, None),
    }
}

/// Why an ingress cannot carry a case.
fn cannot_carry(case: Case, ingress: Ingress) -> Option<&'static str> {
    use Case::*;
    use Ingress::*;
    match (case, ingress) {
        (WrongCa | Tampered | Expired | Replayed | TooLittleLife, EdgeToken) => {
            Some("a token call has no signature, signed window or signed bytes")
        }
        (AgentMismatch, EdgeToken) => Some("an rpc message names one agent"),
        (WrongCa, LegacyMarshal | LegacyYaml) => Some(
            "the ssl plugin has no CA: a caller is trusted by its key in client_keys \
             (an unknown key is `unknown_caller`, tests/legacy_security.rs)",
        ),
        (OwnRequest, Federation | EdgeToken | EdgeSigned) => {
            Some("fedgate publishes nothing these ingresses take in")
        }
        _ => None,
    }
}

/// Real disagreements between ingresses: the cell keeps the uniform expectation and is skipped
/// until the code agrees (`FEDGATE_TABLE_ALL=1` runs them).
const DISAGREEMENTS: &[(Case, Ingress, &str)] = &[];

fn disagreement(case: Case, ingress: Ingress) -> Option<&'static str> {
    DISAGREEMENTS
        .iter()
        .find(|(c, i, _)| *c == case && *i == ingress)
        .map(|(_, _, why)| *why)
}

// ---------------------------------------------------------------------------------------------
// Common pieces: identity rules, policies, audit records
// ---------------------------------------------------------------------------------------------

/// The caller ids of the personas on an ingress, and what alice and dave are mapped to.
struct Names {
    alice: &'static str,
    bob: &'static str,
    carol: &'static str,
    dave: &'static str,
    alice_as: &'static str,
    dave_as: &'static str,
}

/// Certificate callers (federation, signed edge, facade): carol and dave are alice's and bob's
/// certificates speaking as `cert=`, a kind their certificates carry too.
const CERT_NAMES: Names = Names {
    alice: "choria=alice.mcollective",
    bob: "choria=bob.mcollective",
    carol: "cert=alice.mcollective",
    dave: "cert=bob.mcollective",
    alice_as: "choria=alice.mcollective",
    dave_as: "choria=dave.mcollective",
};

const TOKEN_NAMES: Names = Names {
    alice: "up=alice",
    bob: "up=bob",
    carol: "up=carol",
    dave: "up=dave",
    alice_as: "choria=alice.mcollective",
    dave_as: "choria=dave.mcollective",
};

const LEGACY_NAMES: Names = Names {
    alice: "cert=alice",
    bob: "cert=bob",
    carol: "cert=carol",
    dave: "cert=dave",
    alice_as: "choria=alice.mcollective",
    dave_as: "choria=dave.mcollective",
};

/// Into the legacy collective alice is fedgate's own `cert=fedgate`, whose key the legacy nodes
/// trust for the requests fedgate signs.
const FACADE_NAMES: Names = Names {
    alice_as: "cert=fedgate",
    dave_as: "cert=dave",
    ..CERT_NAMES
};

impl Ingress {
    fn names(self) -> &'static Names {
        match self {
            Ingress::Federation | Ingress::EdgeSigned => &CERT_NAMES,
            Ingress::EdgeToken => &TOKEN_NAMES,
            Ingress::LegacyMarshal | Ingress::LegacyYaml => &LEGACY_NAMES,
            Ingress::Facade => &FACADE_NAMES,
        }
    }

    fn caller(self, persona: Persona) -> &'static str {
        let names = self.names();
        match persona {
            Persona::Alice => names.alice,
            Persona::Bob => names.bob,
            Persona::Carol => names.carol,
            Persona::Dave => names.dave,
        }
    }

    fn mapped(self, persona: Persona) -> &'static str {
        match persona {
            Persona::Dave => self.names().dave_as,
            _ => self.names().alice_as,
        }
    }
}

/// Rule 1 denies bob, rule 2 maps alice, rule 3 maps dave; carol has none. Each rule names the
/// persona's caller id in every set of `names` (the edge's tokens and certificates).
fn identity_rules(from: &str, to: &str, names: &[&Names]) -> String {
    let rule = |pick: fn(&Names) -> &'static str, outcome: String| {
        let callers: Vec<String> = names
            .iter()
            .map(|n| pick(n).replace('.', "\\\\."))
            .collect();
        format!(
            "[[rule]]\nfrom = {from:?}\nto = [{to:?}]\nregex = \"^({})$\"\n{outcome}\n\n",
            callers.join("|")
        )
    };
    [
        rule(|n| n.bob, "deny = true".into()),
        rule(|n| n.alice, format!("as = {:?}", names[0].alice_as)),
        rule(|n| n.dave, format!("as = {:?}", names[0].dave_as)),
    ]
    .concat()
}

/// The same policies on every ingress, for the caller alice is mapped to there.
fn policies(alice: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "rpcutil.policy",
            format!(
                "policy default deny\nallow\t{alice}\tping\t*\t*\nallow\t{alice}\tinventory\tcountry=uk\t*\n"
            ),
        ),
        (
            "discovery.policy",
            format!("policy default deny\nallow\t{alice}\t*\t*\t*\n"),
        ),
        ("service.policy", "policy default allow\n".to_string()),
    ]
}

/// `[identity]`, `[ddl]`, `[policy]` and `[audit]` for a gateway in `dir`.
fn gate_tables(dir: &Path, from: &str, to: &str, names: &Names) -> String {
    let rules = dir.join("identity.toml");
    std::fs::write(&rules, identity_rules(from, to, &[names])).unwrap();
    let policies = policies(names.alice_as);
    let policies: Vec<(&str, &str)> = policies.iter().map(|(n, t)| (*n, t.as_str())).collect();
    format!(
        "[identity]\nrules = {rules:?}\n\n[ddl]\ndir = {:?}\n\n{}",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl"),
        gate_block(dir, &policies, "")
    )
}

/// The decision records of an audit trail, from the `since`-th record on.
struct Trail {
    file: PathBuf,
}

impl Trail {
    fn len(&self) -> usize {
        audit_records(&self.file).len()
    }

    fn decisions_since(&self, since: usize, requestid: Option<&str>) -> Vec<Record> {
        audit_records(&self.file)
            .into_iter()
            .skip(since)
            .filter(|r| r.kind == Kind::Decision)
            // A refusal before the request id was read records none.
            .filter(|r| {
                requestid.is_none_or(|id| r.event.request_id.as_deref().is_none_or(|got| got == id))
            })
            .collect()
    }

    /// Waits for `count` decision records after `since` (for `requestid`, when known), and
    /// returns the last.
    async fn wait(&self, since: usize, requestid: Option<&str>, count: usize) -> Option<Decision> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.decisions_since(since, requestid);
            if found.len() >= count || tokio::time::Instant::now() > deadline {
                return found.last().map(decision);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn decision(record: &Record) -> Decision {
    let event = &record.event;
    // Policy files and identity files are named by path; the table names them by file.
    let rule = event.rule.as_ref().map(|rule| {
        rule.split_whitespace()
            .map(|word| word.rsplit('/').next().unwrap_or(word))
            .collect::<Vec<_>>()
            .join(" ")
    });
    Decision {
        stage: event.stage.clone(),
        code: event.code.clone(),
        rule,
        mapped_caller: event.mapped_caller.clone(),
        restricted: event.restricted.clone(),
    }
}

/// Waits until the fleet's counters have not moved for half a second (at most 10 s), and
/// returns how many nodes acted since `before`.
async fn settled(fleet: &Fleet, before: &fedgate::fleet::StatsSnapshot) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = fleet.stats();
    let mut quiet = 0;
    while quiet < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fleet.stats();
        if now.total == last.total && now.passed == last.passed {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
    usize::try_from(last.passed - before.passed).unwrap()
}

fn now() -> i64 {
    Now::system().unix_seconds()
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The agent and action a case calls, and its inputs.
fn call(case: Case) -> (&'static str, &'static str, Value) {
    match case {
        Case::FactCondition => ("rpcutil", "inventory", json!({})),
        Case::DeniedAction => ("rpcutil", "collective_info", json!({})),
        Case::DiscoveryAllowed | Case::DiscoveryDenied => ("discovery", "ping", json!({})),
        Case::DdlInvalid => ("service", "status", json!({"service": "nginx; rm"})),
        _ => ("rpcutil", "ping", json!({})),
    }
}

fn persona(case: Case) -> Persona {
    match case {
        Case::Unmapped => Persona::Carol,
        Case::IdentityDenied => Persona::Bob,
        Case::DiscoveryDenied => Persona::Dave,
        _ => Persona::Alice,
    }
}

/// `(age, ttl)` of a case's signed request.
fn window(case: Case) -> (i64, i64) {
    match case {
        Case::Expired => (120, 60),
        Case::TooLittleLife => (59, 60),
        _ => (0, 60),
    }
}

// ---------------------------------------------------------------------------------------------
// Choria requests, as a client signs them (federation, signed edge, facade)
// ---------------------------------------------------------------------------------------------

struct ChoriaRequest {
    secure: SecureRequest,
    requestid: String,
    /// The agent the request is routed by.
    route: String,
}

/// A case's Choria request for `collective`, signed in `realm_name` (another realm's for
/// [`Case::WrongCa`]), with the sender id `sender`.
fn choria_request(
    case: Case,
    ingress: Ingress,
    realm_name: &str,
    collective: &str,
    sender: &str,
) -> ChoriaRequest {
    let persona = persona(case);
    let signer_realm = match (case, realm_name) {
        (Case::WrongCa, "prod") | (Case::WrongCa, "edge") => "london",
        (Case::WrongCa, _) => "prod",
        _ => realm_name,
    };
    let pair = user(
        signer_realm,
        match persona {
            Persona::Bob | Persona::Dave => "bob",
            _ => "alice",
        },
    );
    let signer = Signer::from_files(&pair.cert, &pair.key).unwrap();
    let (agent, action, data) = call(case);
    // For an agent mismatch the envelope (what nodes dispatch on) names echo, the payload rpcutil.
    let envelope_agent = if case == Case::AgentMismatch {
        "echo"
    } else {
        agent
    };
    let message = if agent == "discovery" {
        fedgate::wire::encode_base64(b"ping")
    } else {
        json!({"agent": agent, "action": action, "data": data}).to_string()
    };
    let (age, ttl) = window(case);
    let requestid = fresh_id();
    let request = Request::new(
        message,
        RequestEnvelope {
            requestid: requestid.clone(),
            senderid: sender.into(),
            callerid: ingress.caller(persona).into(),
            collective: collective.into(),
            agent: envelope_agent.into(),
            ttl,
            time: now() - age,
            filter: Filter::default(),
        },
    );
    let mut secure = signer.sign_request(&request).unwrap();
    if case == Case::Tampered {
        secure.message = secure.message.replacen(sender, &format!("{sender}x"), 1);
    }
    ChoriaRequest {
        secure,
        requestid,
        route: envelope_agent.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The resign federation: `fedgate run`, hand-made federated requests
// ---------------------------------------------------------------------------------------------

struct FederationRig {
    _prod: Network,
    _london: Network,
    _replay: NatsServer,
    dir: tempfile::TempDir,
    fleet: Fleet,
    _broker: BrokerProcess,
    client: async_nats::Client,
}

impl FederationRig {
    async fn start() -> FederationRig {
        let dir = tempfile::tempdir().unwrap();
        let replay = NatsServer::start(
            &dir.path().join("replay-nats"),
            NatsServerConfig {
                jetstream: true,
                ..NatsServerConfig::default()
            },
        )
        .unwrap();
        let prod = Network::start("prod");
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\nworkers = 2\n\n[replay]\nnats = [{:?}]\n\n{}{}{}",
            replay.url(),
            gate_tables(dir.path(), "prod", "london", &CERT_NAMES),
            network_block("federations.prod", &prod, ""),
            network_block(
                "federations.prod.collectives.london",
                &london,
                &format!(
                    "signer = {{ certificate = {:?}, key = {:?} }}",
                    privileged.cert, privileged.key
                ),
            ),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let broker = BrokerProcess::spawn(&config, "table-fed").await;
        let client = prod.connect_as("alice").await;
        let rig = FederationRig {
            _prod: prod,
            _london: london,
            _replay: replay,
            dir,
            fleet,
            _broker: broker,
            client,
        };
        rig.served().await;
        rig
    }

    fn trail(&self) -> Trail {
        Trail {
            file: self.dir.path().join("audit/audit.log"),
        }
    }

    /// Waits until the broker answers (a refusal of a request it cannot admit).
    async fn served(&self) {
        for _ in 0..20 {
            let probe = choria_request(
                Case::Unmapped,
                Ingress::Federation,
                "prod",
                "london",
                "probe",
            );
            let mut replies = self.send(&probe).await;
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), replies.next()).await
            {
                return;
            }
        }
        panic!("the broker never answered");
    }

    async fn send(&self, request: &ChoriaRequest) -> async_nats::Subscriber {
        let reply_to = subjects::reply("london", "table", &fresh_id());
        let replies = self.client.subscribe(reply_to.clone()).await.unwrap();
        let headers = TransportHeaders {
            reply_to: Some(reply_to),
            mc_sender: Some("test-client".into()),
            federation: Some(FederationHeader {
                req: Some(request.requestid.clone()),
                reply_to: None,
                target: vec![subjects::broadcast("london", &request.route)],
            }),
            ..TransportHeaders::default()
        };
        let transport = Transport::new(request.secure.encode(), headers);
        self.client
            .publish(
                subjects::federation_ingest("prod"),
                transport.encode().into(),
            )
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        replies
    }

    async fn run(&self, case: Case) -> Outcome {
        let trail = self.trail();
        let request = choria_request(case, Ingress::Federation, "prod", "london", "test-client");
        if case == Case::Replayed {
            let first = trail.len();
            let before = self.fleet.stats();
            let _replies = self.send(&request).await;
            trail.wait(first, Some(&request.requestid), 1).await;
            settled(&self.fleet, &before).await;
        }
        let since = trail.len();
        let before = self.fleet.stats();
        let _replies = self.send(&request).await;
        let record = trail.wait(since, Some(&request.requestid), 1).await;
        Outcome {
            record,
            forwarded: settled(&self.fleet, &before).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The WebSocket edge, in process: token `rpc` and `signed` messages
// ---------------------------------------------------------------------------------------------

struct EdgeRig {
    _london: Network,
    dir: tempfile::TempDir,
    fleet: Fleet,
    edge: Option<fedgate::edge::Edge>,
    keys: fedgate::edge::auth::TokenKeys,
    url: String,
    counter: usize,
}

impl EdgeRig {
    async fn start() -> EdgeRig {
        use fedgate::edge::auth::TokenKeys;
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let dir = tempfile::tempdir().unwrap();
        // Tokens and certificates speak from the realm `edge`: one set of rules holds both.
        let rules = identity_rules("edge", "london", &[&TOKEN_NAMES, &CERT_NAMES]);
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let edge_pki = realm("edge");
        let mut tables = gate_tables(dir.path(), "edge", "london", &TOKEN_NAMES);
        std::fs::write(dir.path().join("identity.toml"), rules).unwrap();
        tables.push_str(&support::collective_block("collectives.london", &london));
        let text = format!(
            "[instance]\nname = \"edge1\"\n\n{tables}\n[edge]\nlisten = \"127.0.0.1:0\"\nca = {:?}\n\
             tls = {{ certificate = {:?}, key = {:?} }}\norigins = [\"https://ops.example\"]\n\
             token_key = {key:?}\n",
            edge_pki.ca, edge_pki.server.cert, edge_pki.server.key,
        );
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let gate = fedgate::gateway::open_gate(&config, "edge", "edge1")
            .await
            .unwrap();
        let dispatcher = fedgate::edge::Dispatcher::connect(&config, gate, "edge1")
            .await
            .unwrap();
        let edge = fedgate::edge::Edge::start(&config, dispatcher, None)
            .await
            .unwrap();
        let url = format!("wss://localhost:{}/ws", edge.local_addr().port());
        EdgeRig {
            _london: london,
            dir,
            fleet,
            edge: Some(edge),
            keys: TokenKeys::load(&key).unwrap(),
            url,
            counter: 0,
        }
    }

    fn trail(&self) -> Trail {
        Trail {
            file: self.dir.path().join("audit/audit.log"),
        }
    }

    async fn socket(&self, token: Option<String>) -> WsClient {
        let options = Connect {
            url: self.url.clone(),
            ..connect_options_for(&self.url)
        };
        WsClient::connect(&Connect {
            signed_only: token.is_none(),
            token,
            ..options
        })
        .await
        .unwrap()
    }

    async fn run(&mut self, case: Case, ingress: Ingress) -> Outcome {
        self.counter += 1;
        let id = format!("c{}", self.counter);
        let trail = self.trail();
        if ingress == Ingress::EdgeToken {
            let user = ingress
                .caller(persona(case))
                .trim_start_matches("up=")
                .to_string();
            let token = self
                .keys
                .issue(
                    &user,
                    Duration::from_secs(300),
                    None,
                    std::time::SystemTime::now(),
                )
                .unwrap();
            let mut socket = self.socket(Some(token)).await;
            let (agent, action, data) = call(case);
            let message = json!({"type":"rpc","id":id,"collective":"london","agent":agent,
                "action":action,"data":data,"timeout_ms":3000});
            let since = trail.len();
            let before = self.fleet.stats();
            let _answer = socket.call(&message, |_| {}).await.unwrap();
            socket.close().await;
            return Outcome {
                record: trail.wait(since, None, 1).await,
                forwarded: settled(&self.fleet, &before).await,
            };
        }
        let request = choria_request(case, ingress, "edge", "london", "script.example");
        let collect: Map<String, Value> =
            serde_json::from_value(json!({"timeout_ms": 3000})).unwrap();
        let mut socket = self.socket(None).await;
        if case == Case::Replayed {
            let since = trail.len();
            let before = self.fleet.stats();
            let first = signed_message(&format!("{id}a"), &request.secure, collect.clone());
            let _ = socket.call(&first, |_| {}).await.unwrap();
            trail.wait(since, Some(&request.requestid), 1).await;
            settled(&self.fleet, &before).await;
        }
        let since = trail.len();
        let before = self.fleet.stats();
        let message = signed_message(&id, &request.secure, collect);
        let _answer = socket.call(&message, |_| {}).await.unwrap();
        socket.close().await;
        Outcome {
            record: trail.wait(since, Some(&request.requestid), 1).await,
            forwarded: settled(&self.fleet, &before).await,
        }
    }

    async fn shutdown(mut self) {
        if let Some(edge) = self.edge.take() {
            edge.shutdown().await;
        }
    }
}

fn connect_options_for(url: &str) -> Connect {
    Connect {
        url: url.to_string(),
        ca: Some(realm("edge").ca.clone()),
        ..Connect::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The legacy ingress: signed legacy requests published on the site's RabbitMQ
// ---------------------------------------------------------------------------------------------

struct LegacyRig {
    site: LegacySite,
    /// The second of the last request signed: the legacy replay window claims the signed body
    /// alone (msg, ttl, msgtime, no caller), so two callers' identical requests in one second
    /// collide. Each case signs in a second of its own to stay independent.
    last_second: std::sync::atomic::AtomicI64,
    _london: Network,
    fleet: Fleet,
    ingress: Option<fedgate::legacy::ingress::Ingress>,
    dir: tempfile::TempDir,
    publisher: Publisher,
}

impl LegacyRig {
    async fn start(serializer: Serializer) -> LegacyRig {
        let site = LegacySite::new(serializer).await;
        // bob, carol and dave have keys of their own, which the site trusts.
        for name in ["bob", "carol", "dave"] {
            let key = openssl::rsa::Rsa::generate(2048).unwrap();
            std::fs::write(
                site.key(&format!("{name}-private.pem")),
                key.private_key_to_pem().unwrap(),
            )
            .unwrap();
            std::fs::write(
                site.key(&format!("clients/{name}.pem")),
                key.public_key_to_pem().unwrap(),
            )
            .unwrap();
        }
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[instance]\nname = \"gw1\"\n\n{}{}{}",
            gate_tables(dir.path(), "oldsite", "london", &LEGACY_NAMES),
            support::collective_block("collectives.london", &london),
            site.config_block(
                "oldsite",
                "bridge = { collective = \"london\", refresh_s = 3600, \
                 agents = [\"discovery\", \"rpcutil\", \"service\"] }"
            ),
        );
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let gate = fedgate::gateway::open_gate(&config, "edge", "gw1")
            .await
            .unwrap();
        let ingress = fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate, "gw1")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while ingress.directed_bindings() < NODES {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no directed bindings"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let publisher = Publisher::new(&site).await;
        LegacyRig {
            last_second: std::sync::atomic::AtomicI64::new(0),
            site,
            _london: london,
            fleet,
            ingress: Some(ingress),
            dir,
            publisher,
        }
    }

    fn trail(&self) -> Trail {
        Trail {
            file: self.dir.path().join("audit/audit.log"),
        }
    }

    /// A case's signed legacy request, and the broadcast key it is routed by.
    fn request(&self, case: Case, ingress: Ingress) -> (Vec<u8>, String, String) {
        let serializer = self.site.serializer;
        // An agent mismatch: signed for service, routed by rpcutil's key.
        let (agent, action, data) = match case {
            Case::AgentMismatch => ("service", "status", json!({"service": "nginx"})),
            _ => call(case),
        };
        let route = match case {
            Case::AgentMismatch => "rpcutil",
            _ => agent,
        };
        let caller = match case {
            Case::OwnRequest => "cert=fedgate",
            _ => ingress.caller(persona(case)),
        };
        let name = caller.trim_start_matches("cert=");
        let signer =
            LegacySigner::from_file(&self.site.key(&format!("{name}-private.pem")), name).unwrap();
        let msg = if agent == "discovery" {
            Ruby::str("ping")
        } else {
            let inputs = data
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (Ruby::sym(k), Ruby::str(v.as_str().unwrap())))
                .collect();
            Ruby::Hash(vec![
                (Ruby::sym("agent"), Ruby::str(agent)),
                (Ruby::sym("action"), Ruby::str(action)),
                (Ruby::sym("data"), Ruby::Hash(inputs)),
            ])
        };
        let (age, ttl) = window(case);
        let requestid = fresh_id();
        let new = NewLegacyRequest {
            msg,
            senderid: "client.example.net",
            requestid: &requestid,
            filter: fedgate::legacy::legacy_filter(&Default::default(), agent),
            collective: "mcollective",
            agent,
            ttl,
            msgtime: now() - age,
        };
        let mut request = signer.sign_request(serializer, &new).unwrap();
        if case == Case::Tampered {
            // Another signature: flips one base64 character.
            let flipped = if request.hash.starts_with('A') {
                "B"
            } else {
                "A"
            };
            request.hash.replace_range(0..1, flipped);
        }
        (request.encode(serializer), requestid, route.to_string())
    }

    async fn run(&self, case: Case, ingress: Ingress) -> Outcome {
        use std::sync::atomic::Ordering;
        let trail = self.trail();
        while now() <= self.last_second.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.last_second.store(now(), Ordering::Relaxed);
        let (bytes, requestid, route) = self.request(case, ingress);
        let route = ("mcollective_broadcast", route.as_str());
        if case == Case::Replayed {
            let since = trail.len();
            let before = self.fleet.stats();
            self.publisher.publish(route, &bytes).await;
            trail.wait(since, Some(&requestid), 1).await;
            settled(&self.fleet, &before).await;
        }
        let since = trail.len();
        let before = self.fleet.stats();
        self.publisher.publish(route, &bytes).await;
        Outcome {
            record: trail.wait(since, Some(&requestid), 1).await,
            forwarded: settled(&self.fleet, &before).await,
        }
    }

    async fn shutdown(mut self) {
        if let Some(ingress) = self.ingress.take() {
            ingress.shutdown(Duration::from_secs(2)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The facade: Choria requests for the legacy collective, answered by real mcollectived nodes
// ---------------------------------------------------------------------------------------------

struct FacadeRig {
    _site: LegacySite,
    _london: Network,
    facade: Option<fedgate::legacy::facade::Facade>,
    dir: tempfile::TempDir,
    client: async_nats::Client,
}

impl FacadeRig {
    async fn start() -> FacadeRig {
        let mut site = LegacySite::new(Serializer::Marshal).await;
        for (n, country) in ["uk", "jp"].into_iter().enumerate() {
            site.start_node(
                &format!("legacy-{n:04}"),
                &format!("---\ncountry: {country}\n"),
            );
        }
        // Both nodes answer discovery before any case runs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found = site.mco(&["find", "--dt", "2"]);
            let text = String::from_utf8_lossy(&found.stdout).into_owned();
            if text.lines().filter(|l| l.starts_with("legacy-")).count() == NODES {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "legacy nodes: {text}"
            );
        }
        let london = Network::start("london");
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[instance]\nname = \"gw1\"\n\n{}{}{}",
            gate_tables(dir.path(), "london", "oldsite", &FACADE_NAMES),
            support::collective_block("collectives.london", &london),
            site.config_block("oldsite", "choria = \"london\""),
        );
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let gate = fedgate::gateway::open_gate(&config, "edge", "gw1")
            .await
            .unwrap();
        let link =
            fedgate::legacy::LegacyLink::connect("oldsite", &config.legacy["oldsite"], "gw1")
                .await
                .unwrap();
        let facade =
            fedgate::legacy::facade::Facade::start(&config, "oldsite", Arc::new(link), gate, "gw1")
                .await
                .unwrap();
        let client = london.connect_as("alice").await;
        FacadeRig {
            _site: site,
            _london: london,
            facade: Some(facade),
            dir,
            client,
        }
    }

    fn trail(&self) -> Trail {
        Trail {
            file: self.dir.path().join("audit/audit.log"),
        }
    }

    async fn send(&self, request: &ChoriaRequest) -> async_nats::Subscriber {
        let reply_to = subjects::reply("oldsite", "table", &fresh_id());
        let replies = self.client.subscribe(reply_to.clone()).await.unwrap();
        let headers = TransportHeaders {
            reply_to: Some(reply_to),
            mc_sender: Some("test-client".into()),
            ..TransportHeaders::default()
        };
        let transport = Transport::new(request.secure.encode(), headers);
        let subject = subjects::broadcast("oldsite", &request.route);
        self.client
            .publish(subject, transport.encode().into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        replies
    }

    /// Legacy nodes that answered, until replies have been quiet for 3 s.
    async fn node_answers(mut replies: async_nats::Subscriber) -> usize {
        let limits = Limits::default();
        let mut nodes = std::collections::BTreeSet::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(3), replies.next()).await
        {
            let sender = Transport::decode(&message.payload, &limits)
                .ok()
                .and_then(|t| SecureReply::decode(&t.data, &limits).ok())
                .and_then(|s| s.reply(&limits).ok())
                .map(|r| r.envelope.senderid)
                .unwrap_or_default();
            if !sender.starts_with("fedgate") {
                nodes.insert(sender);
            }
        }
        nodes.len()
    }

    async fn run(&self, case: Case) -> Outcome {
        let trail = self.trail();
        let sender = if case == Case::OwnRequest {
            format!("{}gw1", fedgate::legacy::ingress::BRIDGE_SENDER_PREFIX)
        } else {
            "test-client".to_string()
        };
        let request = choria_request(case, Ingress::Facade, "london", "oldsite", &sender);
        if case == Case::Replayed {
            let since = trail.len();
            let replies = self.send(&request).await;
            trail.wait(since, Some(&request.requestid), 1).await;
            Self::node_answers(replies).await;
        }
        let since = trail.len();
        let replies = self.send(&request).await;
        let record = trail.wait(since, Some(&request.requestid), 1).await;
        Outcome {
            record,
            forwarded: Self::node_answers(replies).await,
        }
    }

    async fn shutdown(mut self) {
        if let Some(facade) = self.facade.take() {
            facade.shutdown(Duration::from_secs(2)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// The differences between what a cell did and what every ingress must do.
fn compare(case: Case, ingress: Ingress, outcome: &Outcome) -> Vec<String> {
    let want = expected(case);
    let mut wrong = Vec::new();
    let Some(record) = &outcome.record else {
        return vec![format!("{case:?} via {ingress:?}: no decision record")];
    };
    let mut check = |field: &str, got: Option<&str>, want: Option<&str>| {
        if got != want {
            wrong.push(format!(
                "{case:?} via {ingress:?}: {field} is {got:?}, every ingress must write {want:?}"
            ));
        }
    };
    check("stage", Some(&record.stage), Some(want.stage));
    check("code", Some(&record.code), Some(want.code));
    check("rule", record.rule.as_deref(), want.rule);
    check(
        "mapped_caller",
        record.mapped_caller.as_deref(),
        want.mapped.map(|p| ingress.mapped(p)),
    );
    check("restricted", record.restricted.as_deref(), want.restricted);
    if outcome.forwarded != want.forwarded {
        wrong.push(format!(
            "{case:?} via {ingress:?}: forwarded to {} nodes, every ingress must forward to {}",
            outcome.forwarded, want.forwarded
        ));
    }
    wrong
}

enum Rig {
    Federation(Box<FederationRig>),
    Edge(Box<EdgeRig>),
    Legacy(Box<LegacyRig>),
    Facade(Box<FacadeRig>),
}

impl Rig {
    async fn start(ingress: Ingress) -> Rig {
        match ingress {
            Ingress::Federation => Rig::Federation(Box::new(FederationRig::start().await)),
            Ingress::EdgeToken | Ingress::EdgeSigned => Rig::Edge(Box::new(EdgeRig::start().await)),
            Ingress::LegacyMarshal => {
                Rig::Legacy(Box::new(LegacyRig::start(Serializer::Marshal).await))
            }
            Ingress::LegacyYaml => Rig::Legacy(Box::new(LegacyRig::start(Serializer::Yaml).await)),
            Ingress::Facade => Rig::Facade(Box::new(FacadeRig::start().await)),
        }
    }

    async fn run(&mut self, case: Case, ingress: Ingress) -> Outcome {
        match self {
            Rig::Federation(rig) => rig.run(case).await,
            Rig::Edge(rig) => rig.run(case, ingress).await,
            Rig::Legacy(rig) => rig.run(case, ingress).await,
            Rig::Facade(rig) => rig.run(case).await,
        }
    }

    async fn shutdown(self) {
        match self {
            Rig::Federation(_) => {}
            Rig::Edge(rig) => rig.shutdown().await,
            Rig::Legacy(rig) => rig.shutdown().await,
            Rig::Facade(rig) => rig.shutdown().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingress_decides_every_case_alike() {
    let all = std::env::var_os("FEDGATE_TABLE_ALL").is_some();
    let only = std::env::var("FEDGATE_TABLE_INGRESS").ok();
    let mut wrong = Vec::new();
    for ingress in INGRESSES {
        if only
            .as_deref()
            .is_some_and(|name| !format!("{ingress:?}").eq_ignore_ascii_case(name))
        {
            continue;
        }
        let mut rig = Rig::start(ingress).await;
        for case in CASES {
            if let Some(why) = cannot_carry(case, ingress) {
                println!("{case:?} via {ingress:?}: skipped, {why}");
                continue;
            }
            if let Some(why) = disagreement(case, ingress).filter(|_| !all) {
                println!("{case:?} via {ingress:?}: skipped, disagreement: {why}");
                continue;
            }
            let outcome = rig.run(case, ingress).await;
            println!("{case:?} via {ingress:?}: {outcome:?}");
            wrong.extend(compare(case, ingress, &outcome));
        }
        rig.shutdown().await;
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
