//! Tests that start real nats-server processes.

use super::files::{is_executable, parse_ports, quote};
use super::*;
use std::io::{BufRead, BufReader};

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A unique temporary work dir, removed on drop (also when a test panics).
struct TestDir(PathBuf);

impl TestDir {
    fn new(label: &str) -> TestDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fedgate-natsd-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn named(name: &str) -> NatsServerConfig {
    NatsServerConfig {
        name: name.to_string(),
        ..NatsServerConfig::default()
    }
}

/// Connects with plain TCP and returns the parsed JSON of the `INFO {...}` line.
fn read_info(port: u16) -> serde_json::Value {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read INFO");
    let json = line
        .strip_prefix("INFO ")
        .unwrap_or_else(|| panic!("not an INFO line: {line:?}"));
    serde_json::from_str(json.trim()).expect("INFO json")
}

#[test]
fn two_servers_get_different_ports_and_send_info() {
    let dir = TestDir::new("two");
    let a = NatsServer::start(&dir.0, named("alpha")).expect("start alpha");
    let b = NatsServer::start(&dir.0, named("beta")).expect("start beta");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 4222);
    assert_ne!(a.pid(), b.pid());
    assert_eq!(a.url(), format!("nats://127.0.0.1:{}", a.port()));
    assert!(a.config_path().is_file());
    assert!(a.log_path().is_file());

    let info = read_info(a.port());
    assert_eq!(info["server_name"], "alpha");
    assert_eq!(info["port"], a.port());
    assert_eq!(info["host"], "127.0.0.1");
    assert_eq!(read_info(b.port())["server_name"], "beta");
}

#[test]
fn stop_refuses_connections_and_restart_reuses_the_port() {
    let dir = TestDir::new("restart");
    let config = NatsServerConfig {
        name: "restartable".into(),
        jetstream: true,
        max_payload: Some(2 * 1024 * 1024),
        ..NatsServerConfig::default()
    };
    let mut server = NatsServer::start(&dir.0, config).expect("start");
    let port = server.port();
    let first_pid = server.pid();
    assert!(server.is_running());
    let info = read_info(port);
    assert_eq!(info["max_payload"], 2 * 1024 * 1024);
    assert_eq!(info["jetstream"], true);

    server.stop();
    assert!(!server.is_running());
    server.stop(); // idempotent
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("still listening");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

    server.restart().expect("restart");
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(read_info(port)["server_name"], "restartable");
    let conf = fs::read_to_string(server.config_path()).expect("config");
    assert!(conf.contains(&format!("port: {port}")), "{conf}");

    // Restart while running also works.
    server.restart().expect("second restart");
    assert_eq!(server.port(), port);
    assert_eq!(read_info(port)["jetstream"], true);
}

#[test]
fn drop_kills_the_server_and_can_remove_its_files() {
    let dir = TestDir::new("drop");
    let mut server = NatsServer::start(&dir.0, NatsServerConfig::default()).expect("start");
    assert!(server.name().starts_with("nats-"));
    server.remove_files_on_drop(true);
    let port = server.port();
    let log = server.log_path().to_path_buf();
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!log.exists());
    let left: Vec<_> = fs::read_dir(&dir.0)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn write_tls_files(dir: &Path) -> ServerTls {
    fs::create_dir_all(dir).expect("mkdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("cert");
    let tls = ServerTls {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        ca: dir.join("ca.pem"),
        verify_clients: true,
    };
    fs::write(&tls.cert, cert.pem()).expect("write cert");
    fs::write(&tls.key, key.serialize_pem()).expect("write key");
    fs::write(&tls.ca, cert.pem()).expect("write ca");
    tls
}

#[test]
fn tls_server_requires_tls() {
    let dir = TestDir::new("tls");
    let tls = write_tls_files(&dir.0.join("pki"));
    let config = NatsServerConfig {
        name: "secure".into(),
        tls: Some(tls),
        ..NatsServerConfig::default()
    };
    let server = NatsServer::start(&dir.0, config).expect("start tls");
    assert_eq!(server.url(), format!("tls://127.0.0.1:{}", server.port()));
    let info = read_info(server.port());
    assert_eq!(info["tls_required"], true, "{info}");
    assert_eq!(info["tls_verify"], true, "{info}");
}

#[test]
fn bad_tls_paths_fail_with_the_log_tail() {
    let dir = TestDir::new("bad");
    let missing = dir.0.join("does-not-exist");
    let config = NatsServerConfig {
        name: "broken".into(),
        tls: Some(ServerTls {
            cert: missing.join("cert.pem"),
            key: missing.join("key.pem"),
            ca: missing.join("ca.pem"),
            verify_clients: false,
        }),
        ..NatsServerConfig::default()
    };
    let err = NatsServer::start(&dir.0, config).expect_err("must fail");
    assert!(matches!(err, NatsdError::Exited { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("log tail"), "{text}");
    assert!(text.contains("cert.pem"), "{text}");
    assert!(text.contains("no such file or directory"), "{text}");
}

#[test]
fn finds_the_binary_or_explains_how_to_install_it() {
    let empty = TestDir::new("nobin");
    fs::create_dir_all(&empty.0).expect("mkdir");
    let missing = empty.0.join("nats-server");
    let err = find_nats_server_in(Some(missing.into_os_string()), None).expect_err("missing");
    let text = err.to_string();
    assert!(text.contains("sudo apt-get install nats-server"), "{text}");
    assert!(text.contains("FEDGATE_NATS_SERVER"), "{text}");

    // PATH without nats-server still falls back to the usual directories.
    let found = find_nats_server_in(None, Some(empty.0.clone().into_os_string()));
    let expected = FALLBACK_DIRS
        .iter()
        .map(|d| Path::new(d).join("nats-server"))
        .find(|p| is_executable(p));
    assert_eq!(found.ok(), expected);
}

#[test]
fn parses_ports_files_and_quotes_config_strings() {
    assert_eq!(
        parse_ports(
            r#"{"nats":["nats://127.0.0.1:34567"],"monitoring":["http://127.0.0.1:8222"]}"#
        ),
        Ok(34567)
    );
    assert_eq!(
        parse_ports(r#"{"nats":["tls://127.0.0.1:4443"]}"#),
        Ok(4443)
    );
    assert!(parse_ports(r#"{"nats":["nats://127.0.0.1"#).is_err());
    assert!(parse_ports(r#"{"cluster":[]}"#).is_err());
    assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(file_stem("my server/1"), "my_server_1");
}

#[tokio::test]
async fn a_leafnode_link_carries_messages_from_hub_to_leaf() {
    let dir = TestDir::new("leafnode");
    let hub = NatsServer::start(
        &dir.0,
        NatsServerConfig {
            leafnode_listen: true,
            ..named("hub")
        },
    )
    .expect("start hub");
    let hub_url = hub.leafnode_url().expect("the hub logs its leafnode port");
    assert!(hub_url.starts_with("nats-leaf://127.0.0.1:"), "{hub_url}");
    let leaf = NatsServer::start(
        &dir.0,
        NatsServerConfig {
            leafnode_remotes: vec![hub_url],
            ..named("leaf")
        },
    )
    .expect("start leaf");
    let receiver = async_nats::connect(leaf.url()).await.expect("connect leaf");
    let mut subscription = receiver
        .subscribe("over.the.link")
        .await
        .expect("subscribe");
    receiver.flush().await.expect("flush");
    let sender = async_nats::connect(hub.url()).await.expect("connect hub");
    let mut arrived = None;
    // The link and the leaf's interest take a moment to come up, longer on a busy machine:
    // publish until a message crosses, for up to 30 s.
    for _ in 0..1200 {
        sender
            .publish("over.the.link", "hello".into())
            .await
            .expect("publish");
        if let Ok(Some(message)) = tokio::time::timeout(
            Duration::from_millis(25),
            futures::StreamExt::next(&mut subscription),
        )
        .await
        {
            arrived = Some(message.payload);
            break;
        }
    }
    assert_eq!(arrived.as_deref(), Some(&b"hello"[..]));
    drop((hub, leaf));
}
