//! One table of admission cases, sent through every ingress that can carry them: the resign
//! federation (hand-made federated requests), the WebSocket edge (a token `rpc` and a `signed`
//! request), the legacy ingress in both serializers (raw AMQP publishes of signed legacy
//! requests) and the legacy facade (Choria requests on the collective's network). Every
//! (case, ingress) cell must write the same decision record (stage, code, rule, mapped caller,
//! restriction) and have the same forwarding outcome.
//!
//! Real nats-servers, RabbitMQ and `mcollectived` (the facade's legacy nodes); simulated Choria
//! fleets of two nodes (`country` uk and jp) behind the other ingresses. One gateway per ingress,
//! a `fedgate run` process whose replay guard is a JetStream bucket, serves every case, each with
//! fresh request ids; where a case says so it is restarted (as itself, or as a second instance)
//! or its audit file may not grow.
//!
//! Cells where an ingress disagrees with the others are listed in [`DISAGREEMENTS`]: they keep
//! the uniform expectation and are skipped, unless `FEDGATE_TABLE_ALL=1`.
//! `FEDGATE_TABLE_INGRESS=<name>` runs one ingress.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate::audit::{Kind, Record};
use fedgate::edge::client::{Connect, WsClient, signed_message};
use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::security::{Now, Signer};
use fedgate::subjects;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Filter, Request, RequestEnvelope, SecureReply, SecureRequest, Transport,
    TransportHeaders,
};
use fedgate::wire::mcollective::{Ruby, Serializer};
use fedgate_dev::fleet::Fleet;
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};
use futures::StreamExt;
use rlimit::Resource;
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
    /// Signed 55 s ago with a TTL of 60: 5 s left, under the [`MIN_LIFE`] the gateways need.
    TooLittleLife,
    /// A request fedgate published itself, coming back in.
    OwnRequest,
    /// Allowed by one instance, then sent to a second instance that shares the replay guard:
    /// the second copy is the case. The first instance stops before the second starts (the
    /// federation, the legacy queue and the facade share work between instances: only then is
    /// the copy sure to reach the second).
    ReplayedElsewhere,
    /// Allowed, then sent again after the instance was stopped and started again.
    ReplayedAfterRestart,
    /// alice pings while the audit file may not grow (the file size limit of the gateway's
    /// process, which binds root too), as on a full disk. No record can be written, so instead
    /// of one the cell asserts that nothing is written, nothing forwarded, and that the ingress
    /// counts the request in a `fedgate_*` series labelled `audit_failed`: a refusal (federation,
    /// edge, facade) or a delivery put back on the queue to try again (legacy ingress).
    AuditUnwritable,
    /// Then the file may grow again: the same request, sent again by its caller (the legacy
    /// ingress takes its copy back from the queue), is admitted and forwarded.
    AuditWritableAgain,
}

const CASES: [Case; 19] = [
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
    Case::ReplayedElsewhere,
    Case::ReplayedAfterRestart,
    // These two last: a failed write may leave the rig's trail behind a queued retry.
    Case::AuditUnwritable,
    Case::AuditWritableAgain,
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
    /// `file:line` of a policy rule, `default`, or `identity.toml#N` (file names only).
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
    /// Whether the ingress counted an `audit_failed` (see [`Case::AuditUnwritable`]).
    audit_failed: bool,
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

/// The life a request must have left to be forwarded (`[replay] min_life_s`): [`Case::TooLittleLife`]
/// stays short of it, and still verifies, even if it takes seconds to arrive.
const MIN_LIFE: i64 = 10;

/// The code of [`Case::AuditUnwritable`], whose decision cannot be recorded.
const AUDIT_FAILED: &str = "audit_failed";

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
        Case::Allowed | Case::AuditWritableAgain => Expected {
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
        Case::IdentityDenied => refused("map", "identity_denied", Some("identity.toml#1"), None),
        Case::WrongCa => refused("verify", "unknown_ca", None, None),
        Case::Tampered => refused("verify", "bad_signature", None, None),
        Case::Expired => refused("verify", "ttl_expired", None, None),
        // The guard refuses after mapping and policy: the record names both.
        Case::Replayed | Case::ReplayedElsewhere | Case::ReplayedAfterRestart => refused(
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
        Case::AuditUnwritable => refused("audit", AUDIT_FAILED, None, None),
    }
}

/// Why an ingress cannot carry a case.
fn cannot_carry(case: Case, ingress: Ingress) -> Option<&'static str> {
    use Case::*;
    use Ingress::*;
    match (case, ingress) {
        (
            WrongCa | Tampered | Expired | Replayed | ReplayedElsewhere | ReplayedAfterRestart
            | TooLittleLife,
            EdgeToken,
        ) => Some("a token call has no signature, signed window or signed bytes"),
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

/// `[replay]` (the guard in `replay`'s JetStream), `[identity]`, `[ddl]`, `[policy]` and
/// `[audit]` for a gateway in `dir`.
fn gate_tables(dir: &Path, from: &str, to: &str, names: &Names, replay: &NatsServer) -> String {
    let rules = dir.join("identity.toml");
    std::fs::write(&rules, identity_rules(from, to, &[names])).unwrap();
    let policies = policies(names.alice_as);
    let policies: Vec<(&str, &str)> = policies.iter().map(|(n, t)| (*n, t.as_str())).collect();
    format!(
        "[replay]\nnats = [{:?}]\nmin_life_s = {MIN_LIFE}\n\n[identity]\nrules = {rules:?}\n\n\
         [ddl]\ndir = {:?}\n\n{}",
        replay.url(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl"),
        gate_block(dir, &policies, "")
    )
}

/// A nats-server with JetStream for a rig's replay guard, in `dir`.
fn replay_server(dir: &Path) -> NatsServer {
    let config = NatsServerConfig {
        jetstream: true,
        ..NatsServerConfig::default()
    };
    NatsServer::start(&dir.join("replay-nats"), config).unwrap()
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

/// Waits until `want` nodes have acted since `before` and the fleet's counters have then not
/// moved for half a second (at most 10 s in all), and returns how many nodes acted.
async fn settled(fleet: &Fleet, before: &fedgate_dev::fleet::StatsSnapshot, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let acted = |stats: &fedgate_dev::fleet::StatsSnapshot| {
        usize::try_from(stats.passed - before.passed).unwrap()
    };
    let mut last = fleet.stats();
    let mut quiet = 0;
    while (quiet < 5 || acted(&last) < want) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fleet.stats();
        if now.total == last.total && now.passed == last.passed {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
    acted(&last)
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
        Case::TooLittleLife => (55, 60),
        _ => (0, 60),
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway of a rig: a `fedgate run` process, restarted and made unable to audit on demand
// ---------------------------------------------------------------------------------------------

/// The names a rig's gateway runs as: the first, and the second instance sharing its guard.
const INSTANCES: [&str; 2] = ["gw1", "gw2"];

/// Whether a case sends its request twice: the cell is the second copy.
fn sent_twice(case: Case) -> bool {
    matches!(
        case,
        Case::Replayed | Case::ReplayedElsewhere | Case::ReplayedAfterRestart
    )
}

/// The file size limit of a process lowered to the size of its audit file, so every write that
/// would make the file grow fails (EFBIG), as on a full disk; root is bound by it too. Dropping
/// it lifts the limit.
struct FullDisk {
    pid: libc::pid_t,
    soft: u64,
    hard: u64,
}

impl FullDisk {
    fn of(pid: u32, file: &Path) -> FullDisk {
        let pid = libc::pid_t::try_from(pid).unwrap();
        let (mut soft, mut hard) = (0, 0);
        rlimit::prlimit(pid, Resource::FSIZE, None, Some((&mut soft, &mut hard))).unwrap();
        let size = std::fs::metadata(file).unwrap().len();
        rlimit::prlimit(pid, Resource::FSIZE, Some((size, hard)), None).unwrap();
        FullDisk { pid, soft, hard }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        // The process may be gone already.
        let _ = rlimit::prlimit(
            self.pid,
            Resource::FSIZE,
            Some((self.soft, self.hard)),
            None,
        );
    }
}

/// Where a cell starts: the trail's length and the ingress's count of audit failures.
struct Mark {
    since: usize,
    audit_failures: f64,
}

/// A rig's gateway: `fedgate run` with the rig's config.
struct Instance {
    config: PathBuf,
    /// Held while the audit file may not grow; dropped before the process.
    full: Option<FullDisk>,
    process: BrokerProcess,
}

impl Instance {
    async fn start(config: PathBuf) -> Instance {
        let process = BrokerProcess::spawn(&config, INSTANCES[0]).await;
        Instance {
            config,
            full: None,
            process,
        }
    }

    /// The audit trail, `audit/audit.log` beside the config.
    fn trail(&self) -> Trail {
        Trail {
            file: self.config.parent().unwrap().join("audit/audit.log"),
        }
    }

    /// Between a case's two copies: stops the instance and starts another one sharing its guard
    /// for [`Case::ReplayedElsewhere`], or the same one for [`Case::ReplayedAfterRestart`].
    /// Returns whether it did.
    async fn restart_for(&mut self, case: Case) -> bool {
        let current = self.process.name.as_str();
        let name = match case {
            Case::ReplayedElsewhere => INSTANCES.into_iter().find(|n| *n != current),
            Case::ReplayedAfterRestart => INSTANCES.into_iter().find(|n| *n == current),
            _ => None,
        };
        let Some(name) = name else {
            return false;
        };
        self.full = None;
        let stopped = self.process.terminate().await;
        assert!(
            stopped.success(),
            "{} stopped: {stopped}",
            self.process.name
        );
        self.process = BrokerProcess::spawn(&self.config, name).await;
        true
    }

    /// From now until [`Instance::writable`], the audit file may not grow.
    fn unwritable(&mut self) {
        self.full = Some(FullDisk::of(self.process.pid(), &self.trail().file));
    }

    fn writable(&mut self) {
        self.full = None;
    }

    /// How often the ingress counted a request under `audit_failed`: the sum of the `fedgate_*`
    /// counters with that label value (a refusal, or a delivery put back on the queue).
    async fn audit_failures(&self) -> f64 {
        let label = format!("=\"{AUDIT_FAILED}\"");
        self.process
            .scrape()
            .await
            .lines()
            .filter(|line| line.starts_with("fedgate_") && line.contains(&label))
            .filter(|line| {
                line.split('{')
                    .next()
                    .is_some_and(|n| n.ends_with("_total"))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn mark(&self) -> Mark {
        Mark {
            since: self.trail().len(),
            audit_failures: self.audit_failures().await,
        }
    }

    /// Waits until the ingress has counted an audit failure since `mark` (at most 15 s).
    async fn audit_failed(&self, mark: &Mark) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.audit_failures().await <= mark.audit_failures {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// What a cell left after `mark`: its decision record (the last one for `requestid`, once
    /// written; when none can be, none, once the ingress has counted the failure instead), and
    /// whether the ingress counted an audit failure.
    async fn observe(
        &self,
        case: Case,
        mark: &Mark,
        requestid: Option<&str>,
    ) -> (Option<Decision>, bool) {
        let trail = self.trail();
        if case == Case::AuditUnwritable {
            let failed = self.audit_failed(mark).await;
            let record = trail
                .decisions_since(mark.since, requestid)
                .last()
                .map(decision);
            return (record, failed);
        }
        let record = trail.wait(mark.since, requestid, 1).await;
        (record, self.audit_failures().await > mark.audit_failures)
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
// The resign federation: hand-made federated requests
// ---------------------------------------------------------------------------------------------

struct FederationRig {
    gateway: Instance,
    _prod: Network,
    _london: Network,
    _replay: NatsServer,
    _dir: tempfile::TempDir,
    fleet: Fleet,
    client: async_nats::Client,
    /// [`Case::AuditUnwritable`]'s request, for [`Case::AuditWritableAgain`].
    held: Option<ChoriaRequest>,
}

impl FederationRig {
    async fn start() -> FederationRig {
        let dir = tempfile::tempdir().unwrap();
        let replay = replay_server(dir.path());
        let prod = Network::start("prod");
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\nworkers = 2\n\n{}{}{}",
            gate_tables(dir.path(), "prod", "london", &CERT_NAMES, &replay),
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
        let gateway = Instance::start(config).await;
        let client = prod.connect_as("alice").await;
        let rig = FederationRig {
            gateway,
            _prod: prod,
            _london: london,
            _replay: replay,
            _dir: dir,
            fleet,
            client,
            held: None,
        };
        rig.served().await;
        rig
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

    async fn run(&mut self, case: Case) -> Outcome {
        let request = match case {
            Case::AuditWritableAgain => {
                self.gateway.writable();
                self.held.take().expect("the request of AuditUnwritable")
            }
            _ => choria_request(case, Ingress::Federation, "prod", "london", "test-client"),
        };
        if sent_twice(case) {
            let mark = self.gateway.mark().await;
            let before = self.fleet.stats();
            let _replies = self.send(&request).await;
            let trail = self.gateway.trail();
            trail.wait(mark.since, Some(&request.requestid), 1).await;
            settled(&self.fleet, &before, NODES).await;
            if self.gateway.restart_for(case).await {
                self.served().await;
            }
        }
        if case == Case::AuditUnwritable {
            self.gateway.unwritable();
        }
        let mark = self.gateway.mark().await;
        let before = self.fleet.stats();
        let _replies = self.send(&request).await;
        let (record, audit_failed) = self
            .gateway
            .observe(case, &mark, Some(&request.requestid))
            .await;
        let forwarded = settled(&self.fleet, &before, expected(case).forwarded).await;
        if case == Case::AuditUnwritable {
            self.held = Some(request);
        }
        Outcome {
            record,
            forwarded,
            audit_failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The WebSocket edge: token `rpc` and `signed` messages
// ---------------------------------------------------------------------------------------------

struct EdgeRig {
    gateway: Instance,
    _london: Network,
    _replay: NatsServer,
    _dir: tempfile::TempDir,
    fleet: Fleet,
    keys: fedgate::edge::auth::TokenKeys,
    counter: usize,
    /// [`Case::AuditUnwritable`]'s signed request, for [`Case::AuditWritableAgain`].
    held: Option<ChoriaRequest>,
}

impl EdgeRig {
    async fn start() -> EdgeRig {
        use fedgate::edge::auth::TokenKeys;
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let dir = tempfile::tempdir().unwrap();
        let replay = replay_server(dir.path());
        // Tokens and certificates speak from the realm `edge`: one set of rules holds both.
        let rules = identity_rules("edge", "london", &[&TOKEN_NAMES, &CERT_NAMES]);
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let edge_pki = realm("edge");
        let mut tables = gate_tables(dir.path(), "edge", "london", &TOKEN_NAMES, &replay);
        std::fs::write(dir.path().join("identity.toml"), rules).unwrap();
        tables.push_str(&support::collective_block("collectives.london", &london));
        let text = format!(
            "{tables}\n[edge]\nlisten = \"127.0.0.1:0\"\nca = {:?}\n\
             tls = {{ certificate = {:?}, key = {:?} }}\norigins = [\"https://ops.example\"]\n\
             token_key = {key:?}\n",
            edge_pki.ca, edge_pki.server.cert, edge_pki.server.key,
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        EdgeRig {
            gateway: Instance::start(config).await,
            _london: london,
            _replay: replay,
            _dir: dir,
            fleet,
            keys: TokenKeys::load(&key).unwrap(),
            counter: 0,
            held: None,
        }
    }

    async fn socket(&self, token: Option<String>) -> WsClient {
        WsClient::connect(&Connect {
            url: self.gateway.process.edge.clone().expect("an edge"),
            ca: Some(realm("edge").ca.clone()),
            signed_only: token.is_none(),
            token,
            ..Connect::default()
        })
        .await
        .unwrap()
    }

    async fn run(&mut self, case: Case, ingress: Ingress) -> Outcome {
        self.counter += 1;
        let id = format!("c{}", self.counter);
        let want = expected(case).forwarded;
        if case == Case::AuditWritableAgain {
            self.gateway.writable();
        }
        if ingress == Ingress::EdgeToken {
            if case == Case::AuditUnwritable {
                self.gateway.unwritable();
            }
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
            let mark = self.gateway.mark().await;
            let before = self.fleet.stats();
            let _answer = socket.call(&message, |_| {}).await.unwrap();
            socket.close().await;
            let (record, audit_failed) = self.gateway.observe(case, &mark, None).await;
            return Outcome {
                record,
                forwarded: settled(&self.fleet, &before, want).await,
                audit_failed,
            };
        }
        let request = match case {
            Case::AuditWritableAgain => self.held.take().expect("the request of AuditUnwritable"),
            _ => choria_request(case, ingress, "edge", "london", "script.example"),
        };
        let collect: Map<String, Value> =
            serde_json::from_value(json!({"timeout_ms": 3000})).unwrap();
        if sent_twice(case) {
            let mut socket = self.socket(None).await;
            let mark = self.gateway.mark().await;
            let before = self.fleet.stats();
            let first = signed_message(&format!("{id}a"), &request.secure, collect.clone());
            let _ = socket.call(&first, |_| {}).await.unwrap();
            socket.close().await;
            let trail = self.gateway.trail();
            trail.wait(mark.since, Some(&request.requestid), 1).await;
            settled(&self.fleet, &before, NODES).await;
            self.gateway.restart_for(case).await;
        }
        if case == Case::AuditUnwritable {
            self.gateway.unwritable();
        }
        let mut socket = self.socket(None).await;
        let mark = self.gateway.mark().await;
        let before = self.fleet.stats();
        let message = signed_message(&id, &request.secure, collect);
        let _answer = socket.call(&message, |_| {}).await.unwrap();
        socket.close().await;
        let (record, audit_failed) = self
            .gateway
            .observe(case, &mark, Some(&request.requestid))
            .await;
        let forwarded = settled(&self.fleet, &before, want).await;
        if case == Case::AuditUnwritable {
            self.held = Some(request);
        }
        Outcome {
            record,
            forwarded,
            audit_failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The legacy ingress: signed legacy requests published on the site's RabbitMQ
// ---------------------------------------------------------------------------------------------

struct LegacyRig {
    gateway: Instance,
    site: LegacySite,
    /// The second of the last request signed: the replay guard claims a legacy request by its
    /// signer and signed body (msg, ttl, msgtime: no request id), so one caller's identical
    /// requests in one second collide. Each case signs in a second of its own to stay
    /// independent.
    last_second: i64,
    _london: Network,
    _replay: NatsServer,
    _dir: tempfile::TempDir,
    fleet: Fleet,
    publisher: Publisher,
    /// The request id of [`Case::AuditUnwritable`]'s delivery, which waits on the queue.
    held: Option<String>,
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
        let replay = replay_server(dir.path());
        let text = format!(
            "{}{}{}",
            gate_tables(dir.path(), "oldsite", "london", &LEGACY_NAMES, &replay),
            support::collective_block("collectives.london", &london),
            site.config_block(
                "oldsite",
                "bridge = { collective = \"london\", refresh_s = 3600, \
                 agents = [\"discovery\", \"rpcutil\", \"service\"] }"
            ),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let gateway = Instance::start(config).await;
        let publisher = Publisher::new(&site).await;
        let rig = LegacyRig {
            gateway,
            last_second: 0,
            site,
            _london: london,
            _replay: replay,
            _dir: dir,
            fleet,
            publisher,
            held: None,
        };
        rig.bound().await;
        rig
    }

    /// Waits until the ingress has bound a directed queue for every node.
    async fn bound(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let labels = [("legacy", "oldsite")];
        let gauge = "fedgate_legacy_directed_bindings";
        while self.gateway.process.counter(gauge, &labels).await < NODES as f64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no directed bindings"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
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
            filter: fedgate::legacy::legacy_filter(&Default::default(), agent).unwrap(),
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

    async fn run(&mut self, case: Case, ingress: Ingress) -> Outcome {
        let want = expected(case).forwarded;
        if case == Case::AuditWritableAgain {
            return self.writable_again().await;
        }
        while now() <= self.last_second {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.last_second = now();
        let (bytes, requestid, route) = self.request(case, ingress);
        let route = ("mcollective_broadcast", route.as_str());
        if sent_twice(case) {
            let mark = self.gateway.mark().await;
            let before = self.fleet.stats();
            self.publisher.publish(route, &bytes).await;
            let trail = self.gateway.trail();
            trail.wait(mark.since, Some(&requestid), 1).await;
            settled(&self.fleet, &before, NODES).await;
            if self.gateway.restart_for(case).await {
                self.bound().await;
            }
        }
        if case == Case::AuditUnwritable {
            self.gateway.unwritable();
        }
        let mark = self.gateway.mark().await;
        let before = self.fleet.stats();
        self.publisher.publish(route, &bytes).await;
        let (record, audit_failed) = self.gateway.observe(case, &mark, Some(&requestid)).await;
        let forwarded = settled(&self.fleet, &before, want).await;
        if case == Case::AuditUnwritable {
            self.held = Some(requestid);
        }
        Outcome {
            record,
            forwarded,
            audit_failed,
        }
    }

    /// [`Case::AuditWritableAgain`]: nothing is sent; the delivery [`Case::AuditUnwritable`] left
    /// on the queue is taken again once the file may grow.
    async fn writable_again(&mut self) -> Outcome {
        let requestid = self.held.take().expect("the request of AuditUnwritable");
        // The limit is lifted just after the ingress counted a failure, while it waits a second
        // to put the delivery back: no failure is under way to be counted after the mark.
        let failing = self.gateway.mark().await;
        assert!(
            self.gateway.audit_failed(&failing).await,
            "the delivery is retried"
        );
        self.gateway.writable();
        let mark = self.gateway.mark().await;
        let before = self.fleet.stats();
        let (record, audit_failed) = self
            .gateway
            .observe(Case::AuditWritableAgain, &mark, Some(&requestid))
            .await;
        Outcome {
            record,
            forwarded: settled(&self.fleet, &before, NODES).await,
            audit_failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The facade: Choria requests for the legacy collective, answered by real mcollectived nodes
// ---------------------------------------------------------------------------------------------

struct FacadeRig {
    gateway: Instance,
    _site: LegacySite,
    _london: Network,
    _replay: NatsServer,
    _dir: tempfile::TempDir,
    client: async_nats::Client,
    /// [`Case::AuditUnwritable`]'s request, for [`Case::AuditWritableAgain`].
    held: Option<ChoriaRequest>,
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
        let replay = replay_server(dir.path());
        let text = format!(
            "{}{}{}",
            gate_tables(dir.path(), "london", "oldsite", &FACADE_NAMES, &replay),
            support::collective_block("collectives.london", &london),
            site.config_block("oldsite", "choria = \"london\""),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let gateway = Instance::start(config).await;
        let client = london.connect_as("alice").await;
        FacadeRig {
            gateway,
            _site: site,
            _london: london,
            _replay: replay,
            _dir: dir,
            client,
            held: None,
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

    async fn run(&mut self, case: Case) -> Outcome {
        let sender = if case == Case::OwnRequest {
            format!(
                "{}{}",
                fedgate::legacy::ingress::BRIDGE_SENDER_PREFIX,
                self.gateway.process.name
            )
        } else {
            "test-client".to_string()
        };
        let request = match case {
            Case::AuditWritableAgain => {
                self.gateway.writable();
                self.held.take().expect("the request of AuditUnwritable")
            }
            _ => choria_request(case, Ingress::Facade, "london", "oldsite", &sender),
        };
        if sent_twice(case) {
            let mark = self.gateway.mark().await;
            let replies = self.send(&request).await;
            let trail = self.gateway.trail();
            trail.wait(mark.since, Some(&request.requestid), 1).await;
            Self::node_answers(replies).await;
            self.gateway.restart_for(case).await;
        }
        if case == Case::AuditUnwritable {
            self.gateway.unwritable();
        }
        let mark = self.gateway.mark().await;
        let replies = self.send(&request).await;
        let (record, audit_failed) = self
            .gateway
            .observe(case, &mark, Some(&request.requestid))
            .await;
        let forwarded = Self::node_answers(replies).await;
        if case == Case::AuditUnwritable {
            self.held = Some(request);
        }
        Outcome {
            record,
            forwarded,
            audit_failed,
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
    if outcome.forwarded != want.forwarded {
        wrong.push(format!(
            "{case:?} via {ingress:?}: forwarded to {} nodes, every ingress must forward to {}",
            outcome.forwarded, want.forwarded
        ));
    }
    // An unwritable trail holds no record: the ingress's count of the failure stands for it.
    let unwritable = want.code == AUDIT_FAILED;
    if outcome.audit_failed != unwritable {
        wrong.push(format!(
            "{case:?} via {ingress:?}: {} `{AUDIT_FAILED}`, every ingress must {}",
            if outcome.audit_failed {
                "counted"
            } else {
                "did not count"
            },
            if unwritable {
                "count one"
            } else {
                "count none"
            }
        ));
    }
    if unwritable {
        if let Some(record) = &outcome.record {
            wrong.push(format!(
                "{case:?} via {ingress:?}: wrote {record:?} to a trail that cannot be written"
            ));
        }
        return wrong;
    }
    let Some(record) = &outcome.record else {
        wrong.push(format!("{case:?} via {ingress:?}: no decision record"));
        return wrong;
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
        let started = std::time::Instant::now();
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
        println!("{ingress:?}: {:.1} s", started.elapsed().as_secs_f64());
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
