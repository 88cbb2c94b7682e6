//! fedgate authenticates to NATS with a token, a user and password, an nkey or a creds file,
//! each on top of its TLS certificate: against a real nats-server requiring the method, `fedgate
//! run` serves with the right secret, and a wrong one stops it at start-up naming the network,
//! with no secret in its output.

#[path = "nats_auth/methods.rs"]
mod methods;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate::client::RpcCall;
use fedgate::nats::NatsAuth;
use methods::{Method, creds_method, nkey, token, user_password};
use support::{BrokerProcess, Network, network_block, user};

const NODES: usize = 20;

/// prod (the federation) and london (its member collective with a fleet) both requiring the
/// method, and fedgate's config for them with `prod_auth` and `london_auth`.
struct Topology {
    prod: Network,
    london: Network,
    method: Method,
    dir: tempfile::TempDir,
}

impl Topology {
    fn start(method: impl Fn(&Path) -> Method) -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let method = method(dir.path());
        let start =
            |realm| Network::start_secured(realm, &method.server, Some(method.clients.clone()));
        let (prod, london) = (start("prod"), start("london"));
        Topology {
            prod,
            london,
            method,
            dir,
        }
    }

    /// Writes a `fedgate run` config; `None` leaves a network without an `auth` block.
    fn config(&self, name: &str, prod_auth: Option<&str>, london_auth: Option<&str>) -> PathBuf {
        let auth = |block: Option<&str>| block.map(|b| format!("auth = {b}\n")).unwrap_or_default();
        let text = format!(
            "[instance]\ndrain_timeout = 1\nworkers = 1\n\n{}{}",
            network_block(
                "federations.prod",
                &self.prod,
                &format!("mode = \"pass-through\"\n{}", auth(prod_auth))
            ),
            network_block(
                "federations.prod.collectives.london",
                &self.london,
                &auth(london_auth)
            ),
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Asserts that `text` shows none of the method's secrets.
    fn assert_no_secret(&self, text: &str) {
        for secret in &self.method.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret shows in:\n{text}"
            );
        }
    }

    /// `fedgate run` with `config` must fail at start-up; returns its stderr.
    async fn refused(&self, config: &Path) -> String {
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(support::fedgate_bin())
                .args(["run", "--instance", "refused", "--config"])
                .arg(config)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("fedgate run gave up within a minute")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(!output.status.success(), "{stderr}");
        self.assert_no_secret(&stderr);
        stderr
    }
}

/// The whole check for one method: serve with the right secret, refuse a wrong one on either
/// network and a network without `auth`.
async fn serves_with_the_right_secret_and_refuses_a_wrong_one(method: impl Fn(&Path) -> Method) {
    let topo = Topology::start(method);
    let (right, wrong) = (topo.method.right.as_str(), topo.method.wrong.as_str());
    let fleet = topo
        .london
        .start_fleet_trusting(
            fedgate_dev::fleet::generate("london", NODES, &["london".into()]),
            &["prod"],
        )
        .await;

    let config = topo.config("right.toml", Some(right), Some(right));
    let mut broker = BrokerProcess::spawn(&config, "fb1").await;
    let client = topo.prod.client(user("prod", "alice"), None).await;
    let mut call = RpcCall::new("london", "rpcutil", "ping");
    call.federation = Some("prod".into());
    call.expect = Some(NODES);
    call.timeout = Duration::from_secs(20);
    let summary = client.call(&call, |_| {}).await.unwrap();
    assert_eq!(
        (summary.responses, summary.ok),
        (NODES, NODES),
        "{summary:?}"
    );
    assert!(broker.terminate().await.success());
    topo.assert_no_secret(&broker.logs().join("\n"));

    for (network, prod, london) in [
        ("london", Some(right), Some(wrong)),
        ("prod", Some(wrong), Some(right)),
    ] {
        let stderr = topo
            .refused(&topo.config(&format!("wrong-{network}.toml"), prod, london))
            .await;
        assert!(
            stderr.contains(&format!("network {network}: "))
                && stderr.contains("refused fedgate, authenticating with ")
                && stderr.contains(&topo.method.wrong_file.display().to_string())
                && stderr.contains("authorization violation"),
            "{network}: {stderr}"
        );
    }
    let stderr = topo
        .refused(&topo.config("none.toml", Some(right), None))
        .await;
    assert!(
        stderr.contains("network london: ")
            && stderr.contains("refused fedgate without an `auth` block"),
        "{stderr}"
    );
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_file() {
    serves_with_the_right_secret_and_refuses_a_wrong_one(token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_a_password_from_a_file() {
    serves_with_the_right_secret_and_refuses_a_wrong_one(user_password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_from_a_file() {
    serves_with_the_right_secret_and_refuses_a_wrong_one(nkey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_in_operator_mode() {
    serves_with_the_right_secret_and_refuses_a_wrong_one(creds_method).await;
}

/// `fedgate rpc` takes the `auth` of the network its config names, as `run` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_authenticates_with_the_networks_auth_block() {
    let topo = Topology::start(user_password);
    let _fleet = topo.london.start_fleet(NODES).await;
    let alice = user("london", "alice");
    let tester = topo.method.clients.password_file.clone().unwrap();
    let write = |name: &str, auth: &str| {
        let path = topo.dir.path().join(name);
        let text = format!(
            "[client]\ncertificate = {:?}\nkey = {:?}\n\n[collectives.london]\nnats = [{:?}]\nca = {:?}\n{auth}",
            alice.cert,
            alice.key,
            topo.london.server.url(),
            topo.london.realm.ca
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let rpc = |config: PathBuf| async move {
        tokio::process::Command::new(support::fedgate_bin())
            .args([
                "rpc",
                "--collective",
                "london",
                "rpcutil",
                "ping",
                "--expect",
            ])
            .arg(NODES.to_string())
            .arg("--config")
            .arg(config)
            .output()
            .await
            .unwrap()
    };
    let with = write(
        "with.toml",
        &format!("auth = {{ user = \"tester\", password_file = {tester:?} }}\n"),
    );
    let output = rpc(with).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("responses: {NODES}  ok: {NODES}")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = rpc(write("without.toml", "")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("refused fedgate without an `auth` block"),
        "{stderr}"
    );
}

/// A secret file that goes missing after the config was loaded stops the connection before it
/// is tried, naming the key and the file.
#[tokio::test]
async fn a_secret_file_gone_at_connect_time_is_named() {
    let endpoint = fedgate::nats::NatsEndpoint {
        urls: vec!["nats://127.0.0.1:1".into()],
        ca: None,
        identity: None,
        auth: Some(NatsAuth {
            token_file: Some("/nonexistent/fedgate.token".into()),
            ..NatsAuth::default()
        }),
    };
    let err = fedgate::nats::connect(&endpoint, "test").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("auth: `token_file`: cannot read /nonexistent/fedgate.token: "),
        "{err}"
    );
}

/// The JetStream endpoints (here the audit stream) connect through the same path: the stream is
/// written with the right token and a wrong one is refused, naming the stream and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stream_authenticates_with_its_auth_block() {
    use fedgate::audit::jetstream::JetStreamOptions;
    use fedgate::audit::{Event, JetStreamSink, Kind, record};
    use fedgate_dev::natsd::{NatsServer, NatsServerConfig};

    let dir = tempfile::tempdir().unwrap();
    let method = token(dir.path());
    let config = NatsServerConfig {
        name: "auth-js".into(),
        jetstream: true,
        extra_config: method.server.clone(),
        ..NatsServerConfig::default()
    };
    let server = NatsServer::start(&dir.path().join("js"), config).unwrap();
    let options = |token_file: &Path| JetStreamOptions {
        endpoint: fedgate::nats::NatsEndpoint {
            urls: vec![server.url().to_string()],
            ca: None,
            identity: None,
            auth: Some(NatsAuth {
                token_file: Some(token_file.to_path_buf()),
                ..NatsAuth::default()
            }),
        },
        stream: "AUDIT_AUTH".into(),
        subject: "fedgate.audit".into(),
        instance: "fb1".into(),
        replicas: 1,
        max_bytes: 64 << 20,
        duplicate_window: Duration::from_secs(120),
        timeout: Duration::from_secs(2),
        checkpoints: None,
    };
    let right = method.clients.token_file.clone().unwrap();
    let sink = JetStreamSink::open(options(&right)).await.unwrap();
    let event = Event {
        edge: "federation".into(),
        realm: "prod".into(),
        stage: "authorize".into(),
        ..Event::default()
    };
    sink.append(Kind::Decision, record::new_id("fb1"), event)
        .await
        .unwrap();
    sink.close().await;

    let err = JetStreamSink::open(options(&method.wrong_file))
        .await
        .err()
        .expect("a wrong token is refused")
        .to_string();
    let expected = format!(
        "audit stream AUDIT_AUTH: {} refused fedgate, authenticating with the token in {}: authorization violation",
        server.url(),
        method.wrong_file.display()
    );
    assert_eq!(err, expected);
    for secret in &method.secrets {
        assert!(!err.contains(secret.as_str()), "{err}");
    }
}
