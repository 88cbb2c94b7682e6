//! Resign mode end to end: three CAs (prod for the federation, london and tokyo for two
//! collectives), fleets that trust only their own CA, and `fedgate run` holding a privileged
//! certificate from london's and from tokyo's CA.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate::client::{RpcCall, RpcClient, Summary};
use fedgate::security::Reason;
use fedgate_dev::devpki::CertPair;
use fedgate_dev::fleet::Fleet;
use support::{BrokerProcess, Network, gate_block, network_block, realm, user};

const NODES: usize = 60;
const PRIVILEGED: &str = "fedgate.privileged.mcollective";

const RULES: &str = r#"
[[rule]]
from = "prod"
to = ["london", "tokyo"]
caller = "choria=alice.mcollective"
as = "$0"

[[rule]]
from = "prod"
to = ["tokyo"]
glob = "choria=*.mcollective"
as = "choria=robert.mcollective"
"#;

struct Topology {
    prod: Network,
    london: Network,
    tokyo: Network,
    dir: tempfile::TempDir,
}

fn signer_line(pair: &CertPair) -> String {
    format!(
        "signer = {{ certificate = {:?}, key = {:?} }}",
        pair.cert, pair.key
    )
}

impl Topology {
    fn start() -> Topology {
        Topology {
            prod: Network::start("prod"),
            london: Network::start("london"),
            tokyo: Network::start("tokyo"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A resign-mode config; `london_extra` replaces london's signer line.
    fn config(&self, london_extra: Option<String>) -> PathBuf {
        let rules = self.dir.path().join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let privileged = |name: &str| realm(name).privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nstats_interval = 1\nworkers = 2\n\n[identity]\nrules = {rules:?}\n\n{}{}{}{}",
            gate_block(
                self.dir.path(),
                &[("default.policy", "policy default allow\n")],
                ""
            ),
            network_block("federations.prod", &self.prod, ""),
            network_block(
                "federations.prod.collectives.london",
                &self.london,
                &london_extra.unwrap_or_else(|| signer_line(privileged("london"))),
            ),
            network_block(
                "federations.prod.collectives.tokyo",
                &self.tokyo,
                &format!(
                    "internal_name = \"mcollective\"\n{}",
                    signer_line(privileged("tokyo"))
                ),
            ),
        );
        let path = self.dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// london's fleet in collective `london`; tokyo's in its internal collective `mcollective`.
    /// Each trusts only its own CA.
    async fn fleets(&self) -> (Fleet, Fleet) {
        let london = self.london.start_fleet(NODES).await;
        let tokyo = self
            .tokyo
            .start_fleet_with(fedgate_dev::fleet::generate(
                "tokyo",
                NODES,
                &["mcollective".into()],
            ))
            .await;
        (london, tokyo)
    }

    /// A client on the federation network (TLS as prod's alice) signing with `signer`.
    async fn client(&self, signer: &CertPair) -> RpcClient {
        self.prod.client(signer, None).await
    }
}

fn ping(collective: &str, expect: usize) -> RpcCall {
    let mut call = RpcCall::new(collective, "rpcutil", "ping");
    call.federation = Some("prod".into());
    if expect > 0 {
        call.expect = Some(expect);
        call.timeout = Duration::from_secs(20);
    } else {
        call.timeout = Duration::from_secs(2);
    }
    call
}

async fn call(client: &RpcClient, calls: &[RpcCall]) -> Summary {
    client.call_many(calls, |_| {}).await.unwrap()
}

async fn refused(broker: &BrokerProcess, reason: &str) -> f64 {
    broker
        .counter(
            "fedgate_federation_refused_total",
            &[("direction", "request"), ("reason", reason)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_verified_mapped_and_resigned_per_collective() {
    let topo = Topology::start();
    let (london, tokyo) = topo.fleets().await;
    let broker = BrokerProcess::spawn(&topo.config(None), "rs1").await;

    // prod's alice reaches both fleets, which trust only their own CAs: they act for
    // choria=alice.mcollective on the signature of fedgate's privileged certificate.
    let alice = topo.client(user("prod", "alice")).await;
    let summary = call(&alice, &[ping("london", NODES), ping("tokyo", NODES)]).await;
    assert_eq!(
        (summary.responses, summary.ok, summary.invalid),
        (2 * NODES, 2 * NODES, 0),
        "{summary:?}"
    );
    for fleet in [&london, &tokyo] {
        let stats = fleet.stats();
        assert_eq!(
            stats.acted_for("choria=alice.mcollective", PRIVILEGED),
            NODES as u64
        );
        assert_eq!(stats.callers.len(), 1, "{:?}", stats.callers);
    }

    // A client whose certificate comes from london's CA cannot use the federation at all.
    let before = (london.stats().total, tokyo.stats().total);
    let outsider = topo.client(user("london", "alice")).await;
    let summary = call(&outsider, &[ping("london", 0), ping("tokyo", 0)]).await;
    assert_eq!(summary.responses, 0, "{summary:?}");
    assert_eq!(refused(&broker, "unknown_ca").await, 2.0);
    assert_eq!((london.stats().total, tokyo.stats().total), before);

    // prod's bob has no rule into london: denied, counted and logged. Into tokyo a rule maps
    // him to another name, and he arrives under it.
    let bob = topo.client(user("prod", "bob")).await;
    // fedgate answers him itself, with status 1 and the reason.
    let summary = call(&bob, &[ping("london", 0)]).await;
    assert_eq!((summary.responses, summary.failed), (1, 1), "{summary:?}");
    assert_eq!(refused(&broker, "unmapped").await, 1.0);
    assert_eq!(london.stats().total, before.0, "nothing reached london");
    let logged = broker.logs().iter().any(|line| {
        line.contains("no identity rule maps choria=bob.mcollective from prod to london")
    });
    assert!(logged, "{:#?}", broker.logs());

    let summary = call(&bob, &[ping("tokyo", NODES)]).await;
    assert_eq!(
        (summary.responses, summary.ok),
        (NODES, NODES),
        "{summary:?}"
    );
    let stats = tokyo.stats();
    assert_eq!(
        stats.acted_for("choria=robert.mcollective", PRIVILEGED),
        NODES as u64
    );
    assert_eq!(
        stats.acted_for("choria=bob.mcollective", PRIVILEGED),
        0,
        "bob's own name never reaches tokyo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_refuse_a_request_resigned_with_a_non_privileged_certificate() {
    let topo = Topology::start();
    let (london, _tokyo) = topo.fleets().await;
    // Tell fedgate that london's servers treat fedgate.mcollective as privileged. They do not
    // (they keep Choria's default patterns), so they must refuse what it signs for alice.
    let london_pki = realm("london");
    let extra = format!(
        "privileged_users = ['^fedgate\\.mcollective$']\n{}",
        signer_line(&london_pki.fedgate)
    );
    let broker = BrokerProcess::spawn(&topo.config(Some(extra)), "rs2").await;
    let alice = topo.client(user("prod", "alice")).await;
    let summary = call(&alice, &[ping("london", 0)]).await;
    assert_eq!(summary.responses, 0, "{summary:?}");
    let stats = support::wait_for_stats(&london, Duration::from_secs(10), |s| {
        s.refused(Reason::NameMismatch) == NODES as u64
    })
    .await;
    assert_eq!((stats.validated, stats.replies), (0, 0), "{stats:?}");
    assert!(stats.callers.is_empty());
    // fedgate did relay it: the refusal is the fleet's, as a Choria server's would be.
    assert_eq!(
        broker
            .counter(
                "choria_federation_published_msgs",
                &[("direction", "request")]
            )
            .await,
        1.0
    );
}

/// `fedgate run` refuses to start on a signer that the collective would not accept, naming the
/// file and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_signer_from_another_ca() {
    let topo = Topology::start();
    let tokyo_signer = realm("tokyo").privileged.as_ref().unwrap();
    let config = topo.config(Some(signer_line(tokyo_signer)));
    let output = std::process::Command::new(support::fedgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("collectives.london.signer")
            && stderr.contains(&tokyo_signer.cert.display().to_string())
            && stderr.contains("does not chain to the CA"),
        "{stderr}"
    );
}

#[test]
fn identity_explain_names_the_rule_or_the_denial() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(&rules, RULES).unwrap();
    let explain = |caller: &str, to: &str| {
        let output = std::process::Command::new(support::fedgate_bin())
            .args(["identity", "explain", "--json", "--rules"])
            .arg(&rules)
            .args(["--from", "prod", "--caller", caller, "--to", to])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (output.status.code(), json)
    };
    let (code, json) = explain("choria=bob.mcollective", "tokyo");
    assert_eq!(code, Some(0));
    assert_eq!(json["callerid"], "choria=robert.mcollective");
    assert_eq!(json["rule"]["index"], 2);
    assert!(Path::new(json["rule"]["file"].as_str().unwrap()).ends_with("identity.toml"));
    let (code, json) = explain("choria=bob.mcollective", "london");
    assert_eq!(code, Some(1));
    assert_eq!(
        (json["mapped"].as_bool(), json["reason"].as_str()),
        (Some(false), Some("unmapped"))
    );
}
