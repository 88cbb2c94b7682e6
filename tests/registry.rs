//! The federation registry against a real JetStream nats-server and three `fedgate run`
//! instances: a push reaches every instance and changes their decisions, a bad push changes
//! nothing, instances serve and restart from their caches while the registry is down, a
//! rollback restores an old revision, and a revision of an unknown schema is refused.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient};
use fedgate::natsd::{NatsServer, NatsServerConfig};
use serde_json::{Value, json};
use support::{
    BrokerProcess, EDGE_USERS_TO_LONDON, Network, audit_records, collective_block, fedgate_bin,
    network_block,
};

const DENY: &str = "policy default deny\n";
const ALLOW: &str = "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n";

struct Federation {
    dir: tempfile::TempDir,
    registry: NatsServer,
    london: Network,
    keys: TokenKeys,
    configs: Vec<PathBuf>,
}

impl Federation {
    /// The registry, london, and three instance configs with `extra` tables.
    fn start(extra: &str) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let registry = NatsServer::start(
            &dir.path().join("registry-nats"),
            NatsServerConfig {
                jetstream: true,
                ..NatsServerConfig::default()
            },
        )
        .unwrap();
        let london = Network::start("london");
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let configs = (1..=3)
            .map(|n| {
                let text = format!(
                    "[registry]\nnats = [{:?}]\ncache = \"cache-{n}\"\ntimeout_ms = 500\nheartbeat_s = 1\n\n\
                     [audit]\nfile = \"audit-{n}/audit.log\"\n\n{}\n{extra}\n\
                     [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\n",
                    registry.url(),
                    collective_block("collectives.london", &london),
                );
                std::fs::create_dir_all(dir.path().join(format!("audit-{n}"))).unwrap();
                let path = dir.path().join(format!("fedgate-{n}.toml"));
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        Federation {
            keys: TokenKeys::load(&key).unwrap(),
            dir,
            registry,
            london,
            configs,
        }
    }

    /// Writes a set directory named `name` with this rpcutil policy.
    fn set(&self, name: &str, rpcutil: &str) -> PathBuf {
        let set = self.dir.path().join(name);
        std::fs::create_dir_all(set.join("policies")).unwrap();
        std::fs::write(set.join("policies/rpcutil.policy"), rpcutil).unwrap();
        std::fs::write(set.join("identity.toml"), EDGE_USERS_TO_LONDON).unwrap();
        set
    }

    /// Writes a set that also maps edge users into tokyo and gives `prod` these members.
    fn set_with_members(&self, name: &str, members: &[&str]) -> PathBuf {
        let set = self.set(name, ALLOW);
        let tokyo = EDGE_USERS_TO_LONDON.replace("[\"london\"]", "[\"tokyo\"]");
        std::fs::write(
            set.join("identity.toml"),
            format!("{EDGE_USERS_TO_LONDON}{tokyo}"),
        )
        .unwrap();
        std::fs::write(
            set.join("config.toml"),
            format!("[federations.prod]\nmembers = {members:?}\n"),
        )
        .unwrap();
        set
    }

    /// Runs `fedgate registry ARGS --config <instance 1's config>`.
    fn registry(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(fedgate_bin())
            .arg("registry")
            .args(args)
            .arg("--config")
            .arg(&self.configs[0])
            .output()
            .unwrap()
    }

    async fn spawn(&self, n: usize) -> BrokerProcess {
        BrokerProcess::spawn(&self.configs[n - 1], &format!("reg-{n}")).await
    }

    fn audit_file(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("audit-{n}/audit.log"))
    }
}

fn ok(output: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

/// A socket to an instance's edge as alice.
async fn socket(federation: &Federation, instance: &BrokerProcess) -> WsClient {
    let token = federation
        .keys
        .issue("alice", Duration::from_secs(300), None, SystemTime::now())
        .unwrap();
    WsClient::connect(&Connect {
        url: instance.edge.clone().expect("edge url"),
        token: Some(token),
        ..Connect::default()
    })
    .await
    .unwrap()
}

/// A ping to london on `client`: `done` or the error.
async fn ping_on(client: &mut WsClient) -> Value {
    let request = json!({"type":"rpc","id":"p","collective":"london","agent":"rpcutil","action":"ping","limit":2,"timeout_ms":10000});
    client.call(&request, |_| {}).await.unwrap()
}

/// A ping to london as alice through an instance's edge, on a new socket.
async fn ping(federation: &Federation, instance: &BrokerProcess) -> Value {
    let mut client = socket(federation, instance).await;
    let done = ping_on(&mut client).await;
    client.close().await;
    done
}

fn outcome(done: &Value) -> String {
    match done["type"].as_str() {
        Some("done") => format!("done:{}", done["responses"]),
        _ => format!("error:{}", done["code"].as_str().unwrap_or("?")),
    }
}

/// Waits until every instance's `fedgate_registry_revision` is `revision`; the time it took.
async fn converge(instances: &[&BrokerProcess], revision: u64, within: Duration) -> Duration {
    let started = Instant::now();
    for instance in instances {
        loop {
            let now = instance.counter_value("fedgate_registry_revision").await;
            if now == revision as f64 {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{} is at revision {now}, not {revision}, after {within:?}:\n{}",
                instance.name,
                instance.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

fn status(federation: &Federation) -> Value {
    let output = federation.registry(&["status", "--json"]);
    serde_json::from_str(&ok(&output)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_drives_every_instance() {
    let started = Instant::now();
    let mut federation = Federation::start("");
    let _fleet = federation.london.start_fleet(2).await;

    // Revision 1 denies alice's ping. Nothing can start before there is a revision.
    let first = federation.set("set-1", DENY);
    let text = ok(&federation.registry(&["push", first.to_str().unwrap(), "-m", "deny"]));
    assert!(text.contains("published revision 1"), "{text}");
    let mut instances = vec![
        federation.spawn(1).await,
        federation.spawn(2).await,
        federation.spawn(3).await,
    ];
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "error:denied");
        assert!(
            instance
                .logs()
                .iter()
                .any(|l| l.contains("registry revision 1 (from the registry)")),
            "{:?}",
            instance.logs()
        );
    }

    eprintln!("{:?} revision 2", started.elapsed());
    // Revision 2 allows it: every instance has it within a second of the push returning, and
    // the same request is then allowed everywhere, also on a socket opened before the push.
    let mut before = socket(&federation, &instances[0]).await;
    assert_eq!(outcome(&ping_on(&mut before).await), "error:denied");
    let second = federation.set("set-2", ALLOW);
    let diff = ok(&federation.registry(&["diff", second.to_str().unwrap()]));
    assert!(
        diff.contains("changed policies/rpcutil.policy")
            && diff.contains("+allow")
            && diff.contains("it validates"),
        "{diff}"
    );
    ok(&federation.registry(&["push", second.to_str().unwrap(), "-m", "allow alice"]));
    let all: Vec<&BrokerProcess> = instances.iter().collect();
    let took = converge(&all, 2, Duration::from_secs(1)).await;
    eprintln!("revision 2 reached all 3 instances {took:?} after the push returned");
    assert_eq!(outcome(&ping_on(&mut before).await), "done:2");
    before.close().await;
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "done:2");
    }
    // The decision names the revision that made it.
    let allowed = audit_records(&federation.audit_file(1))
        .into_iter()
        .filter(|r| {
            r.kind == fedgate::audit::Kind::Decision
                && r.event.decision == Some(fedgate::audit::Verdict::Allow)
        })
        .map(|r| r.event.revision)
        .collect::<Vec<_>>();
    assert_eq!(allowed, [Some(2), Some(2)]);

    eprintln!("{:?} invalid push", started.elapsed());
    // An invalid set (a policy line that does not parse) is refused and nothing changes.
    let bad = federation.set("set-bad", "policy default deny\nallow\tbroken\n");
    let output = federation.registry(&["push", bad.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("rpcutil.policy:2") && text.contains("nothing was published"),
        "{text}"
    );
    let history = ok(&federation.registry(&["history", "--json"]));
    let history: Vec<Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.len(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    converge(&all, 2, Duration::from_millis(100)).await;

    eprintln!("{:?} status", started.elapsed());
    // Status: every instance reports revision 2 and has heard from the registry.
    let report = status(&federation);
    assert_eq!(report["head"], 2);
    let reported: Vec<(String, u64)> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instance"].as_str().unwrap().to_string(),
                s["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("reg-1".into(), 2),
            ("reg-2".into(), 2),
            ("reg-3".into(), 2)
        ]
    );
    assert!(
        report["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["heard"].as_u64() > Some(0))
    );

    eprintln!("{:?} registry down", started.elapsed());
    // The registry's server goes away: every instance keeps serving revision 2, and one that
    // restarts meanwhile comes up on it from its cache.
    federation.registry.stop();
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "done:2");
    }
    instances[2].terminate().await;
    instances[2] = federation.spawn(3).await;
    assert!(
        instances[2]
            .logs()
            .iter()
            .any(|l| l.contains("registry revision 2 (from the cache)")),
        "{:?}",
        instances[2].logs()
    );
    assert_eq!(outcome(&ping(&federation, &instances[2]).await), "done:2");
    let output = federation.registry(&["push", second.to_str().unwrap()]);
    assert!(!output.status.success(), "a push needs the registry");

    eprintln!("{:?} rollback", started.elapsed());
    // The registry is back: a rollback to revision 1 is published as revision 3, and every
    // instance (the restarted one reconnects too) denies again.
    federation.registry.restart().unwrap();
    let text = ok(&federation.registry(&["rollback", "1"]));
    assert!(text.contains("published revision 3"), "{text}");
    let all: Vec<&BrokerProcess> = instances.iter().collect();
    // Clients reconnect with back-off after the server comes back.
    converge(&all, 3, Duration::from_secs(20)).await;
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "error:denied");
    }
    let history = ok(&federation.registry(&["history"]));
    assert!(history.contains("rollback to revision 1"), "{history}");

    eprintln!("{:?} schema 99", started.elapsed());
    // A revision written by a newer fedgate (schema 99) is refused: each instance keeps
    // revision 3 and says why.
    let client = async_nats::connect(federation.registry.url())
        .await
        .unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("fedgate-revisions")
        .await
        .unwrap();
    let future = json!({"schema": 99, "revision": 4, "parent": 3, "created": 0, "author": "future@fedgate", "documents": {}, "signatures": []});
    kv.put("head", serde_json::to_vec(&future).unwrap().into())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = status(&federation);
        let refused: Vec<&Value> = report["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["refused"]["revision"] == 4 && s["revision"] == 3)
            .collect();
        if refused.len() == 3 {
            let reason = refused[0]["refused"]["reason"].as_str().unwrap();
            assert!(reason.contains("schema 99"), "{reason}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not refused everywhere: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for instance in &instances {
        assert_eq!(
            instance
                .counter_value("fedgate_registry_refused_revision")
                .await,
            4.0
        );
        assert_eq!(outcome(&ping(&federation, instance).await), "error:denied");
    }
    let text = String::from_utf8_lossy(&federation.registry(&["status"]).stdout).into_owned();
    assert!(
        text.contains("refused revision 4") && text.contains("schema 99"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_membership_change_is_served_without_a_restart() {
    // One instance serves the federation prod (london, later tokyo too) as a broker, and fans
    // WebSocket requests for prod out to its members.
    let prod = Network::start("prod");
    let tokyo = Network::start("tokyo");
    let extra = format!(
        "{}{}",
        network_block("federations.prod", &prod, "members = [\"london\"]"),
        collective_block("collectives.tokyo", &tokyo)
    );
    let federation = Federation::start(&extra);
    let _london = federation.london.start_fleet(2).await;
    let _tokyo = tokyo.start_fleet(3).await;
    let first = federation.set_with_members("members-1", &["london"]);
    ok(&federation.registry(&["push", first.to_str().unwrap()]));
    let instance = federation.spawn(1).await;
    let mut client = socket(&federation, &instance).await;
    let request = |limit: u64| json!({"type":"rpc","id":"f","federation":"prod","agent":"rpcutil","action":"ping","limit":limit,"timeout_ms":10000});
    let done = client.call(&request(2), |_| {}).await.unwrap();
    assert_eq!(
        done["requestids"].as_array().map(Vec::len),
        Some(1),
        "{done}"
    );

    // Revision 2 adds tokyo: a new broker takes over while the old one drains, the edge's
    // socket stays open, and the next request reaches both members.
    let second = federation.set_with_members("members-2", &["london", "tokyo"]);
    ok(&federation.registry(&["push", second.to_str().unwrap(), "-m", "add tokyo"]));
    converge(&[&instance], 2, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while instance
        .counter_value("fedgate_registry_membership_pending")
        .await
        != 0.0
        || !instance
            .logs()
            .iter()
            .any(|l| l.contains("serving federations prod with revision 2"))
    {
        assert!(Instant::now() < deadline, "{:?}", instance.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = client.call(&request(5), |_| {}).await.unwrap();
    assert_eq!(
        (
            done["responses"].as_u64(),
            done["requestids"].as_array().map(Vec::len)
        ),
        (Some(5), Some(2)),
        "{done}"
    );
    client.close().await;
    // The registry's copy of the status is rewritten every heartbeat (1 s here).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = status(&federation);
        if report["instances"][0].get("membership_pending").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
