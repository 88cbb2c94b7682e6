//! A real legacy MCollective site for tests: Debian's `mcollectived` and `mco` 2.12 on the local
//! RabbitMQ (STOMP), in a vhost of its own, with keys and configs in a temporary directory.
//! Daemons are started with `--daemonize --pidfile` and stopped by pid; the vhost is deleted on
//! drop. `scripts/setup-deps` installs the packages and enables RabbitMQ's STOMP plugin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fedgate::wire::mcollective::Serializer;

/// Psych 4 (Ruby 3.1) takes `safe_load`'s options as keywords only, and mcollective 2.12 passes
/// them positionally; this maps them, so both serializers and the YAML facts work.
const PSYCH_COMPAT: &str = r#"require "yaml"
module FedgatePsychCompat
  OPTIONS = %i[permitted_classes permitted_symbols aliases filename].freeze
  def safe_load(yaml, *positional, **keywords)
    positional.each_with_index { |value, i| keywords[OPTIONS[i]] = value if OPTIONS[i] }
    super(yaml, **keywords)
  end
end
Psych.singleton_class.prepend(FedgatePsychCompat) if Psych::VERSION.split(".").first.to_i >= 4
"#;

static SITES: AtomicUsize = AtomicUsize::new(0);

/// A legacy site: a vhost, keys, and running `mcollectived` nodes.
pub struct LegacySite {
    /// The vhost, e.g. `/fedgate-t-123-0`.
    pub vhost: String,
    /// The legacy collective's name.
    pub collective: String,
    /// The serializer every peer uses.
    pub serializer: Serializer,
    /// Keys and configs.
    pub dir: tempfile::TempDir,
    pids: Vec<(String, u32)>,
}

fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl (scripts/setup-deps installs RabbitMQ)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_key(path: &Path, private: bool, key: &openssl::rsa::Rsa<openssl::pkey::Private>) {
    let pem = if private {
        key.private_key_to_pem().unwrap()
    } else {
        key.public_key_to_pem().unwrap()
    };
    std::fs::write(path, pem).unwrap();
}

impl LegacySite {
    /// Creates the vhost and its exchanges, and keys: the servers' shared pair, the `mco`
    /// client `alice`, and `fedgate` (the key fedgate signs with as `cert=fedgate`), both
    /// trusted by the servers.
    pub async fn new(serializer: Serializer) -> LegacySite {
        let n = SITES.fetch_add(1, Ordering::Relaxed);
        let vhost = format!("/fedgate-t-{}-{n}", std::process::id());
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let collective = "mcollective".to_string();
        let connection = lapin::Connection::connect(
            &Self::amqp_url_for(&vhost),
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = connection.create_channel().await.unwrap();
        for (suffix, kind) in [
            ("broadcast", lapin::ExchangeKind::Topic),
            ("directed", lapin::ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(
                    format!("{collective}_{suffix}").into(),
                    kind,
                    lapin::options::ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let _ = connection.close(200, "done".into()).await;

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["clients", "signers"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let server = openssl::rsa::Rsa::generate(2048).unwrap();
        write_key(&root.join("server-private.pem"), true, &server);
        write_key(&root.join("server-public.pem"), false, &server);
        for name in ["alice", "fedgate"] {
            let key = openssl::rsa::Rsa::generate(2048).unwrap();
            write_key(&root.join(format!("{name}-private.pem")), true, &key);
            write_key(&root.join(format!("{name}.pem")), false, &key);
            write_key(&root.join(format!("clients/{name}.pem")), false, &key);
        }
        std::fs::copy(
            root.join("fedgate-private.pem"),
            root.join("signers/fedgate.pem"),
        )
        .unwrap();
        std::fs::write(root.join("psych_compat.rb"), PSYCH_COMPAT).unwrap();
        std::fs::write(root.join("classes.txt"), "legacy::role\n").unwrap();
        let site = LegacySite {
            vhost,
            collective,
            serializer,
            dir,
            pids: Vec::new(),
        };
        std::fs::write(root.join("client.cfg"), site.client_config()).unwrap();
        site
    }

    fn amqp_url_for(vhost: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:5672/{}",
            vhost.replace('/', "%2F")
        )
    }

    /// fedgate's AMQP URL for this vhost.
    pub fn amqp_url(&self) -> String {
        Self::amqp_url_for(&self.vhost)
    }

    /// Where keys and configs are.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn common_config(&self) -> String {
        format!(
            "main_collective = {c}\ncollectives = {c}\nlibdir = /usr/share/mcollective/plugins\n\
             direct_addressing = 1\nsecurityprovider = ssl\nplugin.ssl_serializer = {s}\n\
             connector = rabbitmq\nplugin.rabbitmq.vhost = {v}\nplugin.rabbitmq.pool.size = 1\n\
             plugin.rabbitmq.pool.1.host = 127.0.0.1\nplugin.rabbitmq.pool.1.port = 61613\n\
             plugin.rabbitmq.pool.1.user = guest\nplugin.rabbitmq.pool.1.password = guest\n\
             plugin.rabbitmq.pool.1.ssl = false\n",
            c = self.collective,
            s = self.serializer.as_str(),
            v = self.vhost,
        )
    }

    fn client_config(&self) -> String {
        let root = self.dir.path();
        format!(
            "identity = client.example.net\n{}plugin.ssl_server_public = {}\n\
             plugin.ssl_client_private = {}\nplugin.ssl_client_public = {}\n\
             logger_type = console\nloglevel = warn\n",
            self.common_config(),
            root.join("server-public.pem").display(),
            root.join("alice-private.pem").display(),
            root.join("alice.pem").display(),
        )
    }

    fn ruby_opt(&self) -> String {
        format!("-r{}", self.dir.path().join("psych_compat.rb").display())
    }

    /// Starts `mcollectived` as `identity` with `facts` (YAML), and waits until it is
    /// subscribed.
    pub fn start_node(&mut self, identity: &str, facts: &str) {
        let root = self.dir.path().to_path_buf();
        let node = root.join(identity);
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("facts.yaml"), facts).unwrap();
        let config = format!(
            "identity = {identity}\n{}plugin.ssl_server_private = {}\nplugin.ssl_server_public = {}\n\
             plugin.ssl_client_cert_dir = {}\nlogfile = {}\nloglevel = info\ndaemonize = 1\n\
             factsource = yaml\nplugin.yaml = {}\nclassesfile = {}\n",
            self.common_config(),
            root.join("server-private.pem").display(),
            root.join("server-public.pem").display(),
            root.join("clients").display(),
            node.join("mcollectived.log").display(),
            node.join("facts.yaml").display(),
            root.join("classes.txt").display(),
        );
        let config_path = node.join("server.cfg");
        std::fs::write(&config_path, config).unwrap();
        let pidfile = node.join("mcollectived.pid");
        let status = Command::new("mcollectived")
            .env("RUBYOPT", self.ruby_opt())
            .arg(format!("--config={}", config_path.display()))
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg("--daemonize")
            .status()
            .expect("mcollectived (scripts/setup-deps installs mcollective)");
        assert!(status.success(), "mcollectived {identity}: {status}");
        let pid = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
        })
        .unwrap_or_else(|| {
            panic!(
                "mcollectived {identity} wrote no pidfile: {}",
                self.log(identity)
            )
        });
        self.pids.push((identity.to_string(), pid));
        let binding = format!("{}_directed\t{identity}", self.collective);
        wait_for(Duration::from_secs(30), || {
            rabbitmqctl(&[
                "list_bindings",
                "-p",
                &self.vhost,
                "source_name",
                "routing_key",
            ])
            .lines()
            .any(|l| l == binding)
            .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "mcollectived {identity} did not subscribe: {}",
                self.log(identity)
            )
        });
    }

    /// A node's log.
    pub fn log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(identity).join("mcollectived.log"))
            .unwrap_or_default()
    }

    /// Runs the real `mco` client with `args`.
    pub fn mco(&self, args: &[&str]) -> std::process::Output {
        Command::new("mco")
            .env("RUBYOPT", self.ruby_opt())
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("client.cfg"))
            .output()
            .expect("mco (scripts/setup-deps installs mcollective-client)")
    }

    /// The signers directory (fedgate's legacy keys) and the servers' keys.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(value) = check() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

impl Drop for LegacySite {
    fn drop(&mut self) {
        for (_, pid) in &self.pids {
            let is_ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("mcollectived"));
            if is_ours {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        let _ = Command::new("rabbitmqctl")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-q", "delete_vhost", &self.vhost])
            .status();
    }
}
