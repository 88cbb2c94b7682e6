//! Test support: a shared dev PKI, real nats-server processes, simulated fleets and clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fedgate::client::RpcClient;
use fedgate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig, StatsSnapshot};
use fedgate::nats::{self, NatsEndpoint};
use fedgate::natsd::{NatsServer, NatsServerConfig, ServerTls};
use fedgate::security::devpki::{self, CertPair, DevPki, DevPkiOptions, RealmPki};
use fedgate::security::{CaBundle, CallerId, Signer, Verifier};
use fedgate::wire::Limits;

/// The dev PKI, generated once per target dir and shared by every test process.
///
/// It is written to a private folder and renamed into place, so concurrent test processes
/// (cargo-nextest) never see a half-written PKI.
pub fn pki() -> &'static DevPki {
    static PKI: OnceLock<DevPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-pki-v1");
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
    pub server: NatsServer,
    pub realm: &'static RealmPki,
    _dir: tempfile::TempDir,
}

impl Network {
    /// Starts a TLS nats-server whose clients must present a certificate from `realm`'s CA.
    pub fn start(realm_name: &str) -> Network {
        let realm = realm(realm_name);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = NatsServerConfig {
            name: format!("test-{realm_name}"),
            tls: Some(ServerTls {
                cert: realm.server.cert.clone(),
                key: realm.server.key.clone(),
                ca: realm.ca.clone(),
                verify_clients: true,
            }),
            ..NatsServerConfig::default()
        };
        let server = NatsServer::start(dir.path(), config).expect("start nats-server");
        Network {
            server,
            realm,
            _dir: dir,
        }
    }

    /// The endpoint, authenticating as `identity`.
    pub fn endpoint(&self, identity: &CertPair) -> NatsEndpoint {
        NatsEndpoint {
            urls: vec![self.server.url().to_string()],
            ca: Some(self.realm.ca.clone()),
            identity: Some((identity.cert.clone(), identity.key.clone())),
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

    /// Starts the given nodes.
    pub async fn start_fleet_with(&self, nodes: Vec<fleet::NodeSpec>) -> Fleet {
        let identity = self.realm.fleet.as_ref().expect("fleet identity");
        let client = nats::connect(&self.endpoint(identity), "test-fleet")
            .await
            .expect("connect fleet");
        let limits = Limits::default();
        let config = FleetConfig {
            nodes,
            verifier: Verifier::with_defaults(
                CaBundle::from_file(&self.realm.ca).expect("CA"),
                limits,
            ),
            limits,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
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

/// The fedgate binary under test.
pub fn fedgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fedgate")
}

/// `../shared/vectors` beside the repository (or `FEDGATE_VECTORS`), when it exists.
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FEDGATE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    dir.is_dir().then_some(dir)
}
