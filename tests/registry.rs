//! The federation registry against a real JetStream nats-server and three `fedgate run`
//! instances: a push reaches every instance and changes their decisions, a bad push changes
//! nothing, instances serve and restart from their caches while the registry is down, a
//! rollback restores an old revision, a revision of an unknown schema is refused, and revisions
//! an attacker with write access to the buckets publishes (unsigned, signed by an unknown key,
//! a trusted signature over a changed document) are refused while a signed one applies.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient};
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};
use serde_json::{Value, json};
use support::{
    BrokerProcess, EDGE_USERS_TO_LONDON, Network, audit_records, collective_block, fedgate_bin,
    network_block,
};

const DENY: &str = "policy default deny\n";
const ALLOW: &str = "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n";

struct Federation {
    dir: tempfile::TempDir,
    /// Alice's private key: the author every instance trusts.
    author_key: PathBuf,
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
        let author_key = dir.path().join("alice.key");
        let keygen = std::process::Command::new(fedgate_bin())
            .args(["registry", "keygen", "--out"])
            .arg(&author_key)
            .output()
            .unwrap();
        ok(&keygen);
        let configs = (1..=3)
            .map(|n| {
                let text = format!(
                    "[registry]\nnats = [{:?}]\ncache = \"cache-{n}\"\ntimeout_ms = 500\nheartbeat_s = 1\n\
                     authors = {{ alice = \"alice.pub\" }}\n\n\
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
            author_key,
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

    /// Runs `fedgate registry ARGS --config <instance 1's config>`; pushes and rollbacks are
    /// signed with alice's key.
    fn registry(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(fedgate_bin())
            .arg("registry")
            .args(args)
            .arg("--config")
            .arg(&self.configs[0])
            .env("FEDGATE_REGISTRY_KEY", &self.author_key)
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
    let bad = federation.set("set-bad", "policy default deny\ndeny\tbroken\n");
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
    assert_eq!(history.matches("alice (verified)").count(), 3, "{history}");

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

/// An attacker who can write the registry's buckets (but holds no trusted author's key).
struct Attacker {
    revisions: async_nats::jetstream::kv::Store,
    policies: async_nats::jetstream::kv::Store,
}

impl Attacker {
    async fn connect(federation: &Federation) -> Attacker {
        let client = async_nats::connect(federation.registry.url())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        Attacker {
            revisions: js.get_key_value("fedgate-revisions").await.unwrap(),
            policies: js.get_key_value("fedgate-policies").await.unwrap(),
        }
    }

    /// The head manifest as JSON.
    async fn head(&self) -> Value {
        let bytes = self.revisions.get("head").await.unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Writes `rpcutil` as the newest value of rpcutil.policy: its sequence, SHA-256 and size.
    async fn write_policy(&self, rpcutil: &str) -> Value {
        let sequence = self
            .policies
            .put("rpcutil.policy", rpcutil.to_string().into())
            .await
            .unwrap();
        json!({"sequence": sequence, "sha256": sha256(rpcutil.as_bytes()), "bytes": rpcutil.len()})
    }

    /// Publishes `manifest` as the head and as its revision's archive copy.
    async fn publish(&self, manifest: &Value) {
        let bytes: bytes::Bytes = serde_json::to_vec(manifest).unwrap().into();
        let key = format!("rev.{}", manifest["revision"]);
        self.revisions.put(key, bytes.clone()).await.unwrap();
        self.revisions.put("head", bytes).await.unwrap();
    }
}

fn sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Waits until every instance reports revision `refused` refused with `code` while it runs
/// `running`; returns the reason.
async fn refused_everywhere(
    federation: &Federation,
    refused: u64,
    code: &str,
    running: u64,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = status(federation);
        let instances = report["instances"].as_array().unwrap();
        assert!(
            instances.iter().all(|s| s["revision"] == running),
            "an instance applied the attacker's revision {refused}: {report}"
        );
        let done = instances
            .iter()
            .filter(|s| s["refused"]["revision"] == refused && s["refused"]["code"] == code)
            .count();
        if done == instances.len() && done > 0 {
            return instances[0]["refused"]["reason"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "revision {refused} not refused as {code} everywhere: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_no_trusted_author_signed_are_refused_whatever_the_buckets_allow() {
    let federation = Federation::start("");
    let _fleet = federation.london.start_fleet(2).await;
    // Revision 1, signed by alice, denies alice's ping.
    let first = federation.set("set-1", DENY);
    let text = ok(&federation.registry(&["push", first.to_str().unwrap(), "-m", "deny"]));
    assert!(
        text.contains("published revision 1") && text.contains("signed by alice"),
        "{text}"
    );
    let mut instances = [federation.spawn(1).await, federation.spawn(2).await];
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "error:denied");
    }

    // The attacker writes a policy that allows the ping, and manifests naming it.
    let attacker = Attacker::connect(&federation).await;
    let genuine = attacker.head().await;
    let allow = attacker.write_policy(ALLOW).await;
    let forged = |revision: u64| {
        let mut manifest = genuine.clone();
        manifest["revision"] = revision.into();
        manifest["parent"] = (revision - 1).into();
        manifest["documents"]["policies/rpcutil.policy"] = allow.clone();
        manifest
    };

    // 1. Unsigned, in the format of the fedgate before signing (schema 1): what anyone with
    //    write access to the buckets could publish until now.
    let mut unsigned = forged(2);
    unsigned["schema"] = 1.into();
    unsigned["author"] = "alice@laptop".into();
    unsigned.as_object_mut().unwrap().remove("signature");
    attacker.publish(&unsigned).await;
    let reason = refused_everywhere(&federation, 2, "unsigned", 1).await;
    assert!(reason.contains("not signed"), "{reason}");

    // 2. Signed by a key no instance trusts, in the name of mallory, and in alice's.
    let (mallory_key, _) = fedgate::registry::AuthorSigner::generate().unwrap();
    for (revision, name, code) in [
        (3, "mallory", "unknown_author"),
        (4, "alice", "bad_signature"),
    ] {
        let signer =
            fedgate::registry::AuthorSigner::from_pem(mallory_key.as_bytes(), name).unwrap();
        let mut manifest: fedgate::registry::Manifest =
            serde_json::from_value(forged(revision)).unwrap();
        signer.sign(&mut manifest);
        attacker
            .publish(&serde_json::to_value(&manifest).unwrap())
            .await;
        refused_everywhere(&federation, revision, code, 1).await;
    }

    // 3. Alice's genuine signature, over a manifest whose policy now names the attacker's.
    attacker.publish(&forged(5)).await;
    let reason = refused_everywhere(&federation, 5, "bad_signature", 1).await;
    assert!(
        reason.contains("alice's trusted key does not verify it"),
        "{reason}"
    );

    // Requests are still decided by revision 1; each refusal was counted and logged.
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "error:denied");
        assert_eq!(
            instance.counter_value("fedgate_registry_revision").await,
            1.0
        );
        for (reason, count) in [
            ("unsigned", 1.0),
            ("unknown_author", 1.0),
            ("bad_signature", 2.0),
        ] {
            assert_eq!(
                instance
                    .counter("fedgate_registry_refused_total", &[("reason", reason)])
                    .await,
                count,
                "{reason}"
            );
        }
        assert!(
            instance
                .logs()
                .iter()
                .any(|l| l.contains("refusing registry revision") && l.contains("unknown_author")),
            "{:?}",
            instance.logs()
        );
    }
    let text = String::from_utf8_lossy(&federation.registry(&["status"]).stdout).into_owned();
    assert!(text.contains("refused revision 5: bad signature"), "{text}");

    // History names who verifiably wrote each revision.
    let history = ok(&federation.registry(&["history"]));
    let authors: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|line| line.get(29..61).unwrap_or_default().trim())
        .collect();
    assert_eq!(
        authors,
        [
            "alice (verified)",
            "UNSIGNED",
            "mallory (unknown author)",
            "alice (bad signature)",
            "alice (bad signature)"
        ],
        "{history}"
    );

    // Alice's signed push still applies, over the refused head, and allows the ping.
    let second = federation.set("set-2", ALLOW);
    let text = ok(&federation.registry(&["push", second.to_str().unwrap(), "-m", "allow"]));
    assert!(
        text.contains("the head, revision 5, is refused by instances")
            && text.contains("published revision 6"),
        "{text}"
    );
    let all: Vec<&BrokerProcess> = instances.iter().collect();
    converge(&all, 6, Duration::from_secs(5)).await;
    for instance in &instances {
        assert_eq!(outcome(&ping(&federation, instance).await), "done:2");
    }

    // 4. Alice's genuine revision 1, published again: running instances never go back, and
    //    one that restarts keeps the newer revision its cache holds.
    attacker.publish(&genuine).await;
    // Two heartbeats, each of which checks the head.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    instances[1].terminate().await;
    instances[1] = federation.spawn(2).await;
    let logs = instances[1].logs().join("\n");
    assert!(
        logs.contains("registry revision 6 (from the cache)")
            && logs.contains("refused registry revision 1: revision 1 is older than revision 6"),
        "{logs}"
    );
    for instance in &instances {
        assert_eq!(
            instance.counter_value("fedgate_registry_revision").await,
            6.0
        );
        assert_eq!(outcome(&ping(&federation, instance).await), "done:2");
    }
}

#[test]
fn author_keys_are_written_once_and_only_a_trusted_one_signs_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let fedgate = |args: &[&str]| {
        std::process::Command::new(fedgate_bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("FEDGATE_REGISTRY_KEY")
            .output()
            .unwrap()
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    // The private key is the owner's alone; the public key is printed and written beside it.
    let made = fedgate(&["registry", "keygen", "--out", "alice.key"]);
    ok(&made);
    let public = std::fs::read_to_string(dir.path().join("alice.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    assert_eq!(String::from_utf8_lossy(&made.stdout), public);
    use std::os::unix::fs::PermissionsExt;
    let private = dir.path().join("alice.key");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten.
    let before = std::fs::read(&private).unwrap();
    let again = fedgate(&["registry", "keygen", "--out", "alice.key"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(std::fs::read(&private).unwrap(), before);
    ok(&fedgate(&["registry", "keygen", "--out", "bob.key"]));

    // A config that trusts alice; the registry is never reached by a refused push.
    std::fs::write(
        dir.path().join("fedgate.toml"),
        "[registry]\nnats = [\"nats://127.0.0.1:1\"]\ncache = \"cache\"\ntimeout_ms = 200\n\
         authors = { alice = \"alice.pub\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("set/policies")).unwrap();
    let push = |key: &str, author: Option<&str>| {
        let mut args = vec![
            "registry",
            "push",
            "set",
            "--config",
            "fedgate.toml",
            "--key",
            key,
        ];
        if let Some(author) = author {
            args.extend(["--author", author]);
        }
        let output = fedgate(&args);
        assert!(!output.status.success());
        text(&output)
    };
    let untrusted = push("bob.key", None);
    assert!(
        untrusted.contains("author bob is not in [registry] authors")
            && untrusted.contains("nothing was published"),
        "{untrusted}"
    );
    let impostor = push("bob.key", Some("alice"));
    assert!(
        impostor.contains("trusts author alice as SHA256:")
            && impostor.contains("nothing was published"),
        "{impostor}"
    );
    // Alice's own key passes the check and goes on to the registry; a key others can read is
    // warned about.
    let trusted = push("alice.key", None);
    assert!(
        trusted.contains("registry unreachable") && !trusted.contains("warning"),
        "{trusted}"
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = push("alice.key", None);
    assert!(
        exposed.contains("warning: the author key alice.key has mode 644"),
        "{exposed}"
    );
}
