//! The integration tests' shared support: a shared dev PKI, real nats-server processes,
//! simulated fleets and clients, `fedgate run` children, the legacy site and RabbitMQ. Compiled
//! once here rather than into every test binary; `tests/support/mod.rs` re-exports it.
//!
//! The binaries under test are found beside the running test executable, where cargo builds
//! them (`target/<profile>/fedgate` for `target/<profile>/deps/<test>`), or at `$FEDGATE_BIN`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::devpki::{self, CertPair, DevPki, DevPkiOptions, RealmPki};
use crate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig, StatsSnapshot};
use crate::natsd::{NatsServer, NatsServerConfig};
use fedgate::client::RpcClient;
use fedgate::nats::{self, NatsAuth, NatsEndpoint};
use fedgate::security::{CaBundle, CallerId, Signer, Verifier};
use fedgate::wire::Limits;

pub mod edge;
pub mod federated;
pub mod legacy;
pub mod rabbit;
pub mod v2;

/// The dev PKI, generated once per target dir and shared by every test process.
///
/// It is written to a private folder and renamed into place, so concurrent test processes
/// (cargo-nextest) never see a half-written PKI.
pub fn pki() -> &'static DevPki {
    static PKI: OnceLock<DevPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = target_dir().join("tmp").join("test-pki-v1");
        if let Ok(pki) = DevPki::load(&root) {
            return pki;
        }
        let staging = root.with_extension(format!("staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        devpki::generate(&staging, &DevPkiOptions::default()).expect("generate the test PKI");
        if std::fs::rename(&staging, &root).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        DevPki::load(&root).expect("load the test PKI")
    })
}

/// A realm of the shared PKI.
pub fn realm(name: &str) -> &'static RealmPki {
    pki()
        .realm(name)
        .unwrap_or_else(|| panic!("test PKI has no realm {name}"))
}

/// A user's certificate pair in a realm.
pub fn user(realm_name: &str, user: &str) -> &'static CertPair {
    realm(realm_name)
        .users
        .get(user)
        .unwrap_or_else(|| panic!("no user {user} in {realm_name}"))
}

/// A nats-server for one realm, with mutual TLS from that realm's CA, and its work folder.
pub struct Network {
    /// The server, killed on drop.
    pub server: NatsServer,
    /// The realm whose CA the server trusts.
    pub realm: &'static RealmPki,
    /// How the test's own clients authenticate beyond their certificate.
    pub auth: Option<NatsAuth>,
    _dir: tempfile::TempDir,
}

impl Network {
    /// Starts a TLS nats-server whose clients must present a certificate from `realm`'s CA.
    pub fn start(realm_name: &str) -> Network {
        Self::start_secured(realm_name, "", None)
    }

    /// [`Network::start`] with `server_auth` added to the server's config (`authorization`,
    /// operator mode), the test's own clients authenticating with `auth`.
    pub fn start_secured(realm_name: &str, server_auth: &str, auth: Option<NatsAuth>) -> Network {
        let realm = realm(realm_name);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = NatsServerConfig {
            name: format!("test-{realm_name}"),
            tls: Some(realm.nats_tls()),
            extra_config: server_auth.to_string(),
            ..NatsServerConfig::default()
        };
        let server = NatsServer::start(dir.path(), config).expect("start nats-server");
        Network {
            server,
            realm,
            auth,
            _dir: dir,
        }
    }

    /// The endpoint, authenticating as `identity`.
    pub fn endpoint(&self, identity: &CertPair) -> NatsEndpoint {
        NatsEndpoint {
            urls: vec![self.server.url().to_string()],
            ca: Some(self.realm.ca.clone()),
            identity: Some((identity.cert.clone(), identity.key.clone())),
            auth: self.auth.clone(),
        }
    }

    /// A raw NATS client authenticated as the realm's user `user`.
    pub async fn connect_as(&self, user_name: &str) -> async_nats::Client {
        let pair = self.realm.users.get(user_name).expect("user");
        nats::connect(&self.endpoint(pair), "test")
            .await
            .expect("connect")
    }

    /// Starts `count` generated nodes in this realm's collective, checking requests against its CA.
    pub async fn start_fleet(&self, count: usize) -> Fleet {
        let nodes = fleet::generate(
            &self.realm.name,
            count,
            std::slice::from_ref(&self.realm.name),
        );
        self.start_fleet_with(nodes).await
    }

    /// Starts the given nodes, which trust requests signed under this realm's CA.
    pub async fn start_fleet_with(&self, nodes: Vec<fleet::NodeSpec>) -> Fleet {
        self.start_fleet_trusting(nodes, &[]).await
    }

    /// Starts the given nodes, which also trust requests signed under the `extra` realms' CAs
    /// (a plain Choria federation needs one signing CA trusted everywhere).
    pub async fn start_fleet_trusting(&self, nodes: Vec<fleet::NodeSpec>, extra: &[&str]) -> Fleet {
        let identity = self.realm.fleet.as_ref().expect("fleet identity");
        let client = nats::connect(&self.endpoint(identity), "test-fleet")
            .await
            .expect("connect fleet");
        let limits = Limits::default();
        let mut pem = std::fs::read(&self.realm.ca).expect("CA");
        for name in extra {
            pem.extend(std::fs::read(&realm(name).ca).expect("CA"));
        }
        let config = FleetConfig {
            nodes,
            verifier: Verifier::with_defaults(
                CaBundle::from_pem(&pem, "test bundle").expect("CA"),
                limits,
            ),
            limits,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            v2: None,
            policy: None,
            ddl: None,
        };
        Fleet::start(client, config).await.expect("start fleet")
    }

    /// An RPC client signing as `signer` with `callerid`, connected as the realm's user alice.
    pub async fn client(&self, signer: &CertPair, callerid: Option<&str>) -> RpcClient {
        let signer = Arc::new(Signer::from_files(&signer.cert, &signer.key).expect("signer"));
        let caller = match callerid {
            Some(id) => CallerId::parse(id).expect("callerid"),
            None => CallerId::for_certname(signer.certname()).expect("callerid"),
        };
        RpcClient::new(
            self.connect_as("alice").await,
            signer,
            caller,
            "test-client".into(),
            Limits::default(),
        )
    }

    /// Writes a `fedgate rpc` config for `user` and this collective; returns its path.
    pub fn write_config(&self, dir: &Path, user_name: &str) -> PathBuf {
        let pair = self.realm.users.get(user_name).expect("user");
        let text = format!(
            "[client]\ncertificate = {:?}\nkey = {:?}\n\n[collectives.{}]\nnats = [{:?}]\nca = {:?}\n",
            pair.cert,
            pair.key,
            self.realm.name,
            self.server.url(),
            self.realm.ca
        );
        let path = dir.join(format!("{}-{user_name}.toml", self.realm.name));
        std::fs::write(&path, text).expect("write config");
        path
    }
}

/// Polls `fleet` until `done` holds for its counters, or panics after `timeout`.
pub async fn wait_for_stats(
    fleet: &Fleet,
    timeout: Duration,
    done: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stats = fleet.stats();
        if done(&stats) {
            return stats;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("fleet counters did not reach the expected state: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cargo's target folder: the test executable runs from `target/<profile>/deps/`.
fn target_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        exe.ancestors()
            .nth(3)
            .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
            .to_path_buf()
    })
}

/// The fedgate binary under test: `$FEDGATE_BIN`, else `fedgate` in the test executable's
/// profile folder, where cargo builds it before the package's integration tests.
pub fn fedgate_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var_os(crate::FEDGATE_BIN_ENV)
            .filter(|bin| !bin.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().expect("the test executable's path");
                exe.ancestors()
                    .nth(2)
                    .expect("target/<profile>")
                    .join("fedgate")
            });
        assert!(
            bin.is_file(),
            "the fedgate binary {} is missing",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

/// `fedgate-dev ARGS` (the demo, fleets, benchmarks), starting the fedgate binary under test
/// for every instance. Cargo builds `fedgate-dev` beside `fedgate` only when the workspace is
/// built (`scripts/test` runs `cargo test --workspace`); on its own, `cargo test --test T` may
/// find an older one, so build it first: `cargo build -p fedgate-dev`.
pub fn fedgate_dev(args: &[&str]) -> std::process::Command {
    let bin = Path::new(fedgate_bin()).with_file_name("fedgate-dev");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p fedgate-dev` builds it (scripts/test does)",
        bin.display()
    );
    let mut command = std::process::Command::new(bin);
    command
        .env(crate::FEDGATE_BIN_ENV, fedgate_bin())
        .args(args);
    command
}

/// `../shared/vectors` beside the repository (or `FEDGATE_VECTORS`), when it exists.
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FEDGATE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    dir.is_dir().then_some(dir)
}

/// The TOML block of a realm's network as fedgate sees it: URLs, CA and fedgate's TLS identity.
pub fn network_block(table: &str, network: &Network, extra: &str) -> String {
    let realm = network.realm;
    format!(
        "[{table}]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n{extra}\n",
        network.server.url(),
        realm.ca,
        realm.fedgate.cert,
        realm.fedgate.key
    )
}

/// [`network_block`] for a collective with fedgate's privileged signer from its realm's CA.
pub fn collective_block(table: &str, network: &Network) -> String {
    let signer = network
        .realm
        .privileged
        .as_ref()
        .expect("a privileged certificate");
    network_block(
        table,
        network,
        &format!(
            "signer = {{ certificate = {:?}, key = {:?} }}",
            signer.cert, signer.key
        ),
    )
}

/// Writes `policies` (file name, text) under `dir/policies` and returns the `[policy]` and
/// `[audit]` tables of a re-signing config, the audit file being `dir/audit/audit.log`.
///
/// fedgate decides discovery with policy like any other agent; unless `policies` has its own
/// `discovery.policy`, every caller may discover (the tests of discovery bring theirs).
pub fn gate_block(dir: &Path, policies: &[(&str, &str)], audit_extra: &str) -> String {
    let policy_dir = dir.join("policies");
    let discovery = [("discovery.policy", "policy default allow\n")];
    let own_discovery = policies.iter().any(|(name, _)| *name == "discovery.policy");
    let defaults = if own_discovery {
        &[][..]
    } else {
        &discovery[..]
    };
    for (name, text) in policies.iter().chain(defaults) {
        let path = policy_dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::create_dir_all(dir.join("audit")).unwrap();
    format!(
        "[policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n{audit_extra}\n",
        policy_dir,
        dir.join("audit/audit.log")
    )
}

/// The identity rule that takes prod's Choria callers into london under the same name.
pub const PROD_CALLERS_TO_LONDON: &str = r#"
[[rule]]
from = "prod"
to = ["london"]
glob = "choria=*.mcollective"
as = "$0"
"#;

/// The identity rule that maps an edge token user `up=NAME` to `choria=NAME.mcollective` in
/// london.
pub const EDGE_USERS_TO_LONDON: &str = r#"
[[rule]]
from = "edge"
to = ["london"]
glob = "up=*"
as = "choria=$1.mcollective"
"#;

/// A `fedgate run` child process, killed on drop.
pub struct BrokerProcess {
    /// The instance name it runs as.
    pub name: String,
    /// Its metrics address, once it has said where it listens.
    pub metrics: Option<std::net::SocketAddr>,
    /// The WebSocket edge's URL, when the config has an edge.
    pub edge: Option<String>,
    child: Option<tokio::process::Child>,
    logs: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Most stderr lines a [`BrokerProcess`] keeps.
const MAX_LOG_LINES: usize = 10_000;

impl BrokerProcess {
    /// Starts `fedgate run` and waits until it says it is serving.
    pub async fn spawn(config: &Path, name: &str) -> BrokerProcess {
        Self::spawn_limited(config, name, None).await
    }

    /// Starts `fedgate run` with files limited to `file_blocks` 512-byte blocks (the soft
    /// `ulimit -f`), so writes past that fail as on a full disk until the limit is lifted.
    pub async fn spawn_limited(
        config: &Path,
        name: &str,
        file_blocks: Option<u64>,
    ) -> BrokerProcess {
        use tokio::io::AsyncBufReadExt;
        let mut command = match file_blocks {
            None => tokio::process::Command::new(fedgate_bin()),
            Some(blocks) => {
                let mut sh = tokio::process::Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -S -f {blocks} && exec \"$0\" \"$@\""))
                    .arg(fedgate_bin());
                sh
            }
        };
        let mut child = command
            .args([
                "run",
                "--metrics",
                "127.0.0.1:0",
                "--instance",
                name,
                "--config",
            ])
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn fedgate run");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut metrics = None;
        let mut edge = None;
        let mut startup = Vec::new();
        let tables = tables(config);
        let has_edge = tables.iter().any(|t| t == "[edge]");
        let legacy_only = !has_edge
            && !tables
                .iter()
                .any(|t| t.starts_with("[federations.") || t == "[registry]");
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("metrics on http://").nth(1) {
                    metrics = url.trim_end_matches("/metrics").parse().ok();
                }
                startup.push(line.clone());
                // The edge starts last; without one, the broker; without either, the legacy
                // sides (the first to say it serves: give a config one of them).
                if let Some(url) = line.split(": edge on ").nth(1) {
                    edge = Some(url.trim().to_string());
                    return true;
                }
                if line.contains("serving federations") && !has_edge {
                    return true;
                }
                let legacy =
                    line.contains(": bridging legacy ") || line.contains(": serving legacy ");
                if legacy && legacy_only {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "fedgate run {name} did not start:\n{}",
            startup.join("\n")
        );
        let logs = Arc::new(std::sync::Mutex::new(startup));
        let kept = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock().unwrap();
                if kept.len() < MAX_LOG_LINES {
                    kept.push(line);
                }
            }
        });
        BrokerProcess {
            name: name.to_string(),
            metrics,
            edge,
            child: Some(child),
            logs,
        }
    }

    /// The stderr lines logged since start-up.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The value of one Prometheus series whose labels include all of `labels`, or 0.
    pub async fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.scrape().await;
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The value of a series without labels (a plain gauge), or 0.
    pub async fn counter_value(&self, name: &str) -> f64 {
        let text = self.scrape().await;
        text.lines()
            .filter_map(|line| {
                line.strip_prefix(&format!("{name} "))?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .sum()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends a signal (`HUP`, `TERM`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Asks the process to stop (SIGTERM) and waits for it to drain and exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid");
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM");
        child.wait().await.expect("wait")
    }

    /// The process's Prometheus text.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.expect("metrics address");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut body = String::new();
        stream.read_to_string(&mut body).await.expect("response");
        body
    }
}

/// The table headers of a config file (`[edge]`, `[federations.prod]`, ...).
fn tables(config: &Path) -> Vec<String> {
    std::fs::read_to_string(config)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .map(str::to_string)
        .collect()
}

/// Every record of an audit trail: the active file and its rotated files, in chain order.
pub fn audit_records(active: &Path) -> Vec<fedgate::audit::Record> {
    fedgate::audit::review::records(&fedgate::audit::review::trail(active))
        .map(|(_, _, r)| r)
        .collect()
}
