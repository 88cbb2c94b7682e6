//! Scale-out on a three-node NATS cluster: three `fedgate run` instances keep their audit
//! stream, registry buckets and replay guard on a JetStream cluster with three replicas, under
//! the per-role permissions of `dist/nats/fedgate-permissions.conf`. One cluster node is killed
//! under load and brought back: no allowed request is lost or runs twice, the audit stream stays
//! complete and verifies, the registry stays readable and pushable, and replays are still
//! refused. A stream with one replica on a cluster is warned about at start-up.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedgate::subjects;
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};
use futures::StreamExt;
use serde_json::Value;
use support::federated::{Signed, publish, read_reply, reply_subject, rpc, send, sign};
use support::{BrokerProcess, Network, collective_block, fedgate_bin, network_block, user};

/// The per-role permissions every node runs with, as an operator would include them.
const PERMISSIONS: &str = include_str!("../dist/nats/fedgate-permissions.conf");
const NODES: usize = 3;
const REQUESTS: usize = 240;
const IN_FLIGHT: usize = 6;
const ATTEMPTS: usize = 8;
/// How long a client waits for every node's reply before it sends the same request again.
const PATIENCE: Duration = Duration::from_secs(4);

const RULES: &str = support::PROD_CALLERS_TO_LONDON;
const ALICE_PINGS: &str = "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n";
const ALICE_AND_BOB_PING: &str = "policy default deny\n\
    allow\tchoria=alice.mcollective\tping\t*\t*\n\
    allow\tchoria=bob.mcollective\tping\t*\t*\n";

/// Writes `text` readable by its owner only (fedgate refuses secrets others can read).
fn private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The three roles' passwords, in files for fedgate.
struct Passwords {
    gateway: PathBuf,
    author: PathBuf,
    auditor: PathBuf,
    /// The variables nats-server reads them from.
    variables: String,
}

impl Passwords {
    fn new(dir: &Path) -> Passwords {
        let mut variables = String::new();
        let mut file = |role: &str| {
            let password = format!("pw-{}", nuid::next());
            variables.push_str(&format!(
                "FEDGATE_{}_PASSWORD: {password:?}\n",
                role.to_uppercase()
            ));
            private(dir, &format!("{role}.password"), &password)
        };
        let (gateway, author, auditor) = (file("gateway"), file("author"), file("auditor"));
        Passwords {
            gateway,
            author,
            auditor,
            variables,
        }
    }
}

/// Three nats-servers with JetStream, routed to each other as one cluster.
struct Cluster {
    nodes: Vec<NatsServer>,
    passwords: Passwords,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let passwords = Passwords::new(dir);
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = (0..3)
            .map(|n| {
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(m, _)| *m != n)
                    .map(|(_, port)| format!("\"nats-route://127.0.0.1:{port}\""))
                    .collect();
                let extra = format!(
                    "cluster {{\n  name: fedgate-state\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n{}{PERMISSIONS}",
                    routes[n],
                    others.join(", "),
                    passwords.variables,
                );
                NatsServer::start(
                    &dir.join(format!("node-{n}")),
                    NatsServerConfig {
                        name: format!("state-{n}"),
                        jetstream: true,
                        extra_config: extra,
                        ..NatsServerConfig::default()
                    },
                )
                .expect("start a cluster node")
            })
            .collect();
        Cluster { nodes, passwords }
    }

    /// The permission violations the nodes logged, each once.
    fn violations(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("Permissions Violation")) {
                let what = line.split(" - ").last().unwrap_or(line);
                seen.insert(what.to_string());
            }
        }
        seen.into_iter().collect()
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_string()).collect()
    }

    /// A client of the cluster as `role`, through every node's URL.
    async fn connect(&self, role: &str, password: &Path) -> async_nats::Client {
        let password = std::fs::read_to_string(password).unwrap();
        async_nats::ConnectOptions::with_user_and_password(role.into(), password)
            .connect(self.urls())
            .await
            .expect("connect to the cluster")
    }

    /// Waits until the cluster has a JetStream meta leader (streams can be created).
    async fn wait_for_jetstream(&self) {
        let client = self
            .connect("fedgate-gateway", &self.passwords.gateway)
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(reply) = client.request("$JS.API.INFO", "".into()).await {
                let info: Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
                if info.get("error").is_none() && info.get("type").is_some() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "JetStream never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node index that leads `stream`, and what each replica reports.
    async fn stream_state(client: &async_nats::Client, stream: &str) -> Option<(String, Value)> {
        let reply = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await
            .ok()?;
        let info: Value = serde_json::from_slice(&reply.payload).ok()?;
        let cluster = info.get("cluster")?.clone();
        Some((cluster.get("leader")?.as_str()?.to_string(), cluster))
    }
}

/// The whole federation: prod (where callers are), london (the member collective with its
/// fleet), the state cluster, the signed registry set, and the instances' configs.
struct Site {
    dir: tempfile::TempDir,
    prod: Network,
    london: Network,
    cluster: Cluster,
    author_key: PathBuf,
}

impl Site {
    async fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(dir.path());
        cluster.wait_for_jetstream().await;
        let author_key = dir.path().join("ops.key");
        let keygen = std::process::Command::new(fedgate_bin())
            .args(["registry", "keygen", "--out"])
            .arg(&author_key)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        Site {
            dir,
            prod: Network::start("prod"),
            london: Network::start("london"),
            cluster,
            author_key,
        }
    }

    /// A cluster table's URLs and its `auth` for `role`.
    fn state(&self, role: &str, password: &Path) -> String {
        format!(
            "nats = {:?}\nauth = {{ user = {role:?}, password_file = {password:?} }}\n",
            self.cluster.urls()
        )
    }

    /// Instance `name`'s config, its JetStream state kept with `replicas` replicas.
    fn config(&self, name: &str, replicas: usize) -> PathBuf {
        let gateway = self.state("fedgate-gateway", &self.cluster.passwords.gateway);
        let audit = self.dir.path().join(format!("audit-{name}"));
        std::fs::create_dir_all(&audit).unwrap();
        let text = format!(
            "[instance]\nname = {name:?}\nstats_interval = 1\ndrain_timeout = 2\n\n\
             [registry]\n{gateway}replicas = {replicas}\ncache = {:?}\ntimeout_ms = 10000\nheartbeat_s = 1\n\
             authors = {{ ops = {:?} }}\n\n\
             [replay]\n{gateway}replicas = {replicas}\nmin_life_s = 10\n\n\
             [audit]\nfile = {:?}\n\n\
             [audit.jetstream]\n{gateway}replicas = {replicas}\nmax_bytes = 67108864\ntimeout_ms = 2000\n\n\
             {}{}",
            self.dir.path().join(format!("cache-{name}")),
            self.author_key.with_extension("pub"),
            audit.join("audit.log"),
            network_block("federations.prod", &self.prod, ""),
            collective_block("federations.prod.collectives.london", &self.london),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The config `fedgate registry` and `fedgate audit export` run with as `role`: instance
    /// gw1's, with the role's credentials.
    fn as_role(&self, role: &str, password: &Path) -> PathBuf {
        let text = std::fs::read_to_string(self.dir.path().join("gw1.toml")).unwrap();
        let gateway = format!(
            "auth = {{ user = \"fedgate-gateway\", password_file = {:?} }}",
            self.cluster.passwords.gateway
        );
        let mine = format!("auth = {{ user = {role:?}, password_file = {password:?} }}");
        let path = self.dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text.replace(&gateway, &mine)).unwrap();
        path
    }

    /// A registry set whose rpcutil policy is `rpcutil`.
    fn set(&self, name: &str, rpcutil: &str) -> PathBuf {
        let set = self.dir.path().join(name);
        std::fs::create_dir_all(set.join("policies")).unwrap();
        std::fs::write(set.join("policies/rpcutil.policy"), rpcutil).unwrap();
        std::fs::write(set.join("identity.toml"), RULES).unwrap();
        set
    }

    /// `fedgate registry ARGS` as `role`, pushes signed with the author's key.
    fn registry(&self, role: &str, password: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(fedgate_bin())
            .arg("registry")
            .args(args)
            .arg("--config")
            .arg(self.as_role(role, password))
            .env("FEDGATE_REGISTRY_KEY", &self.author_key)
            .output()
            .unwrap()
    }

    fn author(&self, args: &[&str]) -> std::process::Output {
        self.registry("fedgate-author", &self.cluster.passwords.author, args)
    }
}

impl Drop for Site {
    /// A failing test shows what the cluster refused, since a refused subject shows on the
    /// client only as a timeout.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("permission violations: {:#?}", self.cluster.violations());
        }
    }
}

impl Site {
    /// The output of a command that must succeed; on failure, with what the nodes refused.
    fn ok(&self, output: &std::process::Output) -> String {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{text}\npermission violations: {:#?}",
            self.cluster.violations()
        );
        text
    }
}

/// How one request ended for the client that kept sending it until every node answered.
#[derive(Debug, Default, Clone)]
struct Outcome {
    /// Replies from nodes, over every attempt.
    node_replies: usize,
    /// fedgate's refusals, by code.
    refusals: Vec<String>,
    attempts: usize,
    /// From the first send to the last node's reply.
    took: Duration,
}

/// Sends `signed` until every node has answered (one reply subject for every attempt, so a
/// late answer to an earlier attempt counts), then listens a little longer for duplicates.
async fn drive(client: async_nats::Client, signed: Signed) -> Outcome {
    let reply_to = reply_subject(&signed);
    let mut replies = client.subscribe(reply_to.clone()).await.unwrap();
    let targets = [subjects::broadcast("london", "rpcutil")];
    let started = Instant::now();
    let mut outcome = Outcome::default();
    'attempts: while outcome.attempts < ATTEMPTS && outcome.node_replies < NODES {
        outcome.attempts += 1;
        publish(&client, &signed, &signed.requestid, &targets, &reply_to).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while outcome.node_replies < NODES {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(message)) => {
                    let (sender, body) = read_reply(&message.payload);
                    if sender.starts_with("fedgate:") {
                        let code = body["data"]["fedgate"]["code"].as_str().unwrap_or("?");
                        outcome.refusals.push(code.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'attempts;
                    }
                    outcome.node_replies += 1;
                    outcome.took = started.elapsed();
                }
                _ => continue 'attempts,
            }
        }
    }
    // A request that ran twice would answer twice.
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        if !read_reply(&message.payload).0.starts_with("fedgate:") {
            outcome.node_replies += 1;
        }
    }
    outcome
}

/// Runs `fedgate registry ARGS` as the author until it succeeds (a request the cluster gets
/// while it moves a leader goes unanswered until the command's timeout); returns how long that
/// took, and what it wrote on stdout and on stderr.
async fn retry_until_ok(site: &Site, args: &[&str]) -> (Duration, String, String) {
    let started = Instant::now();
    loop {
        let output = site.author(args);
        if output.status.success() {
            return (
                started.elapsed(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "registry {args:?} kept failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until every replica of `streams` is current and none is missing, as seen from a
/// surviving node; returns how long that took.
async fn replicas_current(streams: &[(&async_nats::Client, &str)], within: Duration) -> Duration {
    let started = Instant::now();
    for (client, stream) in streams {
        loop {
            let current = match Cluster::stream_state(client, stream).await {
                Some((_, cluster)) => {
                    let replicas = cluster["replicas"].as_array().cloned().unwrap_or_default();
                    replicas.len() == 2
                        && replicas.iter().all(|r| {
                            r["current"].as_bool() == Some(true)
                                && r["offline"].as_bool() != Some(true)
                        })
                }
                None => false,
            };
            if current {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{stream}: replicas not current after {within:?}: {:?}",
                Cluster::stream_state(client, stream).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_cluster_node_under_load_loses_no_request_and_runs_none_twice() {
    let mut site = Site::start().await;
    let fleet = site.london.start_fleet(NODES).await;
    for name in ["gw1", "gw2", "gw3"] {
        site.config(name, 3);
    }

    // The author role pushes; the gateway role, which every instance holds, cannot.
    let first = site.set("set-1", ALICE_PINGS);
    // The cluster has just formed: creating the buckets may wait for its leaders.
    let (_, out, err) = retry_until_ok(
        &site,
        &["push", first.to_str().unwrap(), "-m", "alice pings"],
    )
    .await;
    assert!(
        format!("{out}{err}").contains("published revision"),
        "{out}{err}"
    );
    let refused = site.registry(
        "fedgate-gateway",
        &site.cluster.passwords.gateway,
        &[
            "push",
            site.set("set-x", ALICE_AND_BOB_PING).to_str().unwrap(),
            "-m",
            "as a gateway",
        ],
    );
    assert!(!refused.status.success(), "a gateway pushed: {refused:?}");

    let mut instances = Vec::new();
    for name in ["gw1", "gw2", "gw3"] {
        let config = site.dir.path().join(format!("{name}.toml"));
        instances.push(BrokerProcess::spawn(&config, name).await);
    }
    for instance in &instances {
        let logs = instance.logs().join("\n");
        assert!(!logs.contains("has 1 replica"), "{logs}");
    }

    // Load: REQUESTS signed pings, IN_FLIGHT at a time, each sent again until every node
    // answered.
    let alice = user("prod", "alice");
    let caller = site.prod.connect_as("alice").await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (caller, done) = (caller.clone(), done.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..REQUESTS)
                .map(|_| {
                    let (caller, done) = (caller.clone(), done.clone());
                    let signed = sign(alice, "rpcutil", &rpc("rpcutil", "ping"), 120, 0);
                    async move {
                        let outcome = drive(caller, signed).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        outcome
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<Outcome>>()
                .await
        })
    };

    // A third of the way in, the node leading the audit stream dies.
    while done.load(std::sync::atomic::Ordering::Relaxed) < REQUESTS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let observer = site
        .cluster
        .connect("fedgate-auditor", &site.cluster.passwords.auditor)
        .await;
    let (leader, _) = Cluster::stream_state(&observer, "FEDGATE_AUDIT")
        .await
        .expect("the audit stream's leader");
    let victim = site
        .cluster
        .nodes
        .iter()
        .position(|n| n.name() == leader)
        .expect("the leader is a node");
    let killed_at = done.load(std::sync::atomic::Ordering::Relaxed);
    site.cluster.nodes[victim].stop();
    let killed = Instant::now();

    // While it is down, the registry is readable and pushable once the cluster has moved the
    // buckets' leaders (a command sent before that times out, and the operator runs it
    // again), and the instances follow.
    let (registry_back, ..) = retry_until_ok(&site, &["status", "--json"]).await;
    let second = site.set("set-2", ALICE_AND_BOB_PING);
    retry_until_ok(&site, &["push", second.to_str().unwrap(), "-m", "bob too"]).await;
    let (_, head, _) = retry_until_ok(&site, &["status", "--json"]).await;
    let head: Value = serde_json::from_str(&head).unwrap();
    let revision = head["head"].as_f64().unwrap_or_default();
    assert!(revision >= 2.0, "{head}");
    for instance in &instances {
        let deadline = Instant::now() + Duration::from_secs(20);
        while instance.counter_value("fedgate_registry_revision").await != revision {
            assert!(
                Instant::now() < deadline,
                "{} did not apply revision {revision}:\n{}",
                instance.name,
                instance.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let down_for = Duration::from_secs(5).saturating_sub(killed.elapsed());
    tokio::time::sleep(down_for).await;
    site.cluster.nodes[victim]
        .restart()
        .expect("restart the node");
    let outage = killed.elapsed();
    // Each role sees the streams it uses.
    let gateway = site
        .cluster
        .connect("fedgate-gateway", &site.cluster.passwords.gateway)
        .await;
    let recovery = replicas_current(
        &[
            (&observer, "FEDGATE_AUDIT"),
            (&gateway, "KV_fedgate-replay"),
            (&gateway, "KV_fedgate-revisions"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let back_at = done.load(std::sync::atomic::Ordering::Relaxed);

    let outcomes = load.await.unwrap();
    let served = outcomes.iter().filter(|o| o.node_replies == NODES).count();
    let lost = outcomes.iter().filter(|o| o.node_replies == 0).count();
    let duplicated = outcomes.iter().filter(|o| o.node_replies > NODES).count();
    let resent = outcomes.iter().filter(|o| o.attempts > 1).count();
    let mut refusals: BTreeMap<&str, usize> = BTreeMap::new();
    for code in outcomes.iter().flat_map(|o| &o.refusals) {
        *refusals.entry(code.as_str()).or_default() += 1;
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    let stats = fleet.stats();
    println!(
        "cluster scale-out: sent {REQUESTS}, served {served}, lost {lost}, duplicated {duplicated}; \
         node {leader} killed after {killed_at} requests, down {outage:.1?} (the registry \
         readable again {registry_back:.1?} after the kill, pushed and applied while it was \
         down), {back_at} done when its replicas were current {recovery:.1?} \
         after its restart; {resent} requests sent more than once, refusals {refusals:?}, \
         slowest {slowest:.1?}; the fleet ran {} requests",
        stats.validated / NODES as u64
    );
    assert_eq!(lost, 0, "{outcomes:?}");
    assert_eq!(duplicated, 0, "{outcomes:?}");
    assert_eq!(served, REQUESTS, "{outcomes:?}");
    assert_eq!(stats.validated, (REQUESTS * NODES) as u64, "{stats:?}");

    // The replay guard still refuses a request sent again, on every instance.
    let replayed = sign(alice, "rpcutil", &rpc("rpcutil", "ping"), 120, 0);
    let first_time = drive(caller.clone(), replayed.clone()).await;
    assert_eq!(first_time.node_replies, NODES, "{first_time:?}");
    for _ in 0..3 {
        send(
            &caller,
            &replayed,
            &replayed.requestid,
            &[subjects::broadcast("london", "rpcutil")],
        )
        .await
        .unanswered()
        .await;
    }
    assert_eq!(fleet.stats().validated, ((REQUESTS + 1) * NODES) as u64);

    // Every instance's chain in the stream is complete and intact, read by the auditor role.
    for instance in &mut instances {
        assert!(instance.terminate().await.success());
    }
    let out = site.dir.path().join("export");
    let export = std::process::Command::new(fedgate_bin())
        .args(["audit", "export", "--config"])
        .arg(site.as_role("fedgate-auditor", &site.cluster.passwords.auditor))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = site.ok(&export);
    for name in ["gw1", "gw2", "gw3"] {
        assert!(
            text.contains(&format!("fedgate.audit.{name}: intact")),
            "{text}"
        );
        let streamed: Vec<String> =
            support::audit_records(&out.join(format!("fedgate.audit.{name}.log")))
                .into_iter()
                .map(|r| r.id)
                .collect();
        let filed =
            support::audit_records(&site.dir.path().join(format!("audit-{name}/audit.log")));
        let decisions = filed
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .count();
        assert!(decisions > 0, "{name} decided nothing");
        for record in filed
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
        {
            assert!(
                streamed.contains(&record.id),
                "{name}: {record:?} is not in the stream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_on_a_cluster_is_warned_about_at_start_up() {
    let site = Site::start().await;
    let config = site.config("gw1", 1);
    let text = site.ok(&site.author(&["push", site.set("set-1", ALICE_PINGS).to_str().unwrap()]));
    assert!(text.contains("published revision 1"), "{text}");
    let mut instance = BrokerProcess::spawn(&config, "gw1").await;
    let logs = instance.logs().join("\n");
    for stream in ["FEDGATE_AUDIT", "KV_fedgate-replay", "KV_fedgate-revisions"] {
        assert!(
            logs.contains(&format!(
                "JetStream stream {stream} has 1 replica on NATS cluster fedgate-state"
            )),
            "{stream}:\n{logs}"
        );
    }
    assert!(instance.terminate().await.success());
}
