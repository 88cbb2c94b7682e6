//! A RabbitMQ node of the test's own, beside the system one: its own node name, ports, data,
//! logs, config and Erlang cookie in a temporary folder, killed on drop. For what must not
//! touch the shared broker (its listeners, TLS settings, or its life).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NODES: AtomicUsize = AtomicUsize::new(0);

/// The TLS listener's files: the broker's certificate and key, and the CA its clients'
/// certificates must chain to (a client without one is refused).
pub struct NodeTls {
    /// The broker's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients' certificates must chain to.
    pub client_ca: PathBuf,
}

/// A running `rabbitmq-server` of the test's own.
pub struct RabbitNode {
    /// The node's name.
    pub name: String,
    /// Plain AMQP on 127.0.0.1.
    pub amqp_port: u16,
    /// AMQP over TLS on 127.0.0.1, when started with [`NodeTls`].
    pub amqps_port: Option<u16>,
    child: Child,
    dir: tempfile::TempDir,
}

/// A port free now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn server_binary() -> PathBuf {
    [
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/sbin/rabbitmq-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("rabbitmq-server (scripts/setup-deps installs rabbitmq-server)")
}

impl RabbitNode {
    /// Starts a node named `fedgate-<role>-<pid>-<n>@localhost` and waits until its listeners
    /// accept connections (guest/guest, vhost `/`).
    pub fn start(role: &str, tls: Option<&NodeTls>) -> RabbitNode {
        let n = NODES.fetch_add(1, Ordering::Relaxed);
        let name = format!("fedgate-{role}-{}-{n}@localhost", std::process::id());
        let dir = tempfile::tempdir().expect("node folder");
        let (amqp_port, dist_port) = (free_port(), free_port());
        let amqps_port = tls.map(|_| free_port());
        let mut conf = format!("listeners.tcp.default = 127.0.0.1:{amqp_port}\n");
        if let (Some(tls), Some(port)) = (tls, amqps_port) {
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
                tls.client_ca.display(),
                tls.cert.display(),
                tls.key.display(),
            ));
        }
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("node file");
            path
        };
        let config = file("rabbitmq.conf", &conf);
        // No plugins: the system's enabled_plugins would start STOMP on the shared port.
        let plugins = file("enabled_plugins", "[].\n");
        let env_file = file("rabbitmq-env.conf", "");
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("node folder");
        }
        let log = std::fs::File::create(dir.path().join("server.out")).expect("server.out");
        use std::os::unix::process::CommandExt;
        let child = Command::new(server_binary())
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", dir.path().join("home"))
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                dir.path().join("advanced.config"),
            )
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_CONF_ENV_FILE", &env_file)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            // Its own process group: the script, the Erlang VM and its helpers die together.
            .process_group(0)
            .spawn()
            .expect("spawn rabbitmq-server");
        let mut node = RabbitNode {
            name,
            amqp_port,
            amqps_port,
            child,
            dir,
        };
        node.wait_ready();
        node
    }

    /// Waits for every listener, or panics with the node's output.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let ports: Vec<u16> = [Some(self.amqp_port), self.amqps_port]
            .into_iter()
            .flatten()
            .collect();
        loop {
            let up = ports.iter().all(|port| {
                std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], *port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if up {
                return;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            assert!(
                !exited && Instant::now() < deadline,
                "rabbitmq node {} did not start:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqps://guest:guest@localhost:<port>/%2f`.
    pub fn amqps_url(&self) -> String {
        let port = self.amqps_port.expect("a TLS listener");
        format!("amqps://guest:guest@localhost:{port}/%2f")
    }

    /// What the node printed, and its log.
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.name));
        format!(
            "{}\n{}",
            read(&self.dir.path().join("server.out")),
            read(&log)
        )
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
