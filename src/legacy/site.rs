//! A real legacy MCollective site: Debian's `mcollectived` and `mco` 2.12 on the local RabbitMQ
//! (STOMP), in a vhost of its own, with keys and configs in a folder. `fedgate demo` runs one,
//! and the tests run one per test. Daemons are started with `--daemonize --pidfile` and stopped
//! by pid; the vhost is deleted on drop. `scripts/setup-deps` installs the packages and enables
//! RabbitMQ's STOMP plugin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::wire::mcollective::Serializer;

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

/// Why a site could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("legacy site: {0}")]
pub struct SiteError(String);

fn fail(message: impl std::fmt::Display) -> SiteError {
    SiteError(message.to_string())
}

/// A legacy site: a vhost, keys, and running `mcollectived` nodes.
pub struct LegacySite {
    /// The vhost, e.g. `/fedgate-demo`.
    pub vhost: String,
    /// The legacy collective's name.
    pub collective: String,
    /// The serializer every peer uses.
    pub serializer: Serializer,
    root: PathBuf,
    pids: Vec<(String, u32)>,
}

fn rabbitmqctl(args: &[&str]) -> Result<String, SiteError> {
    let output = Command::new("rabbitmqctl")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .arg("-q")
        .args(args)
        .output()
        .map_err(|e| {
            fail(format!(
                "rabbitmqctl (scripts/setup-deps installs RabbitMQ): {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(fail(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn write_key(
    path: &Path,
    private: bool,
    key: &openssl::rsa::Rsa<openssl::pkey::Private>,
) -> Result<(), SiteError> {
    let pem = if private {
        key.private_key_to_pem()
    } else {
        key.public_key_to_pem()
    }
    .map_err(fail)?;
    std::fs::write(path, pem).map_err(|e| fail(format!("{}: {e}", path.display())))
}

impl LegacySite {
    /// Whether a site can run here: RabbitMQ's STOMP port is open and the Debian packages are
    /// installed.
    pub fn available() -> bool {
        let installed = |tool: &str| {
            ["/usr/bin", "/usr/sbin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists())
        };
        let stomp = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], 61613)),
            Duration::from_secs(1),
        )
        .is_ok();
        stomp && installed("mcollectived") && installed("mco") && installed("rabbitmqctl")
    }

    /// Creates the vhost and its exchanges, and keys in `root`: the servers' shared pair, the
    /// `mco` client `alice`, and `fedgate` (the key fedgate signs with as `cert=fedgate`), both
    /// trusted by the servers.
    pub async fn create(
        root: &Path,
        vhost: &str,
        serializer: Serializer,
    ) -> Result<LegacySite, SiteError> {
        // Left over from an earlier run that was killed.
        let _ = rabbitmqctl(&["delete_vhost", vhost]);
        rabbitmqctl(&["add_vhost", vhost])?;
        rabbitmqctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])?;
        let collective = "mcollective".to_string();
        let connection = lapin::Connection::connect(
            &Self::amqp_url_for(vhost),
            lapin::ConnectionProperties::default(),
        )
        .await
        .map_err(fail)?;
        let channel = connection.create_channel().await.map_err(fail)?;
        for (suffix, kind) in [
            ("broadcast", lapin::ExchangeKind::Topic),
            ("directed", lapin::ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(
                    format!("{collective}_{suffix}").as_str().into(),
                    kind,
                    lapin::options::ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .map_err(fail)?;
        }
        let _ = connection.close(200, "done".into()).await;

        let root = root.to_path_buf();
        for sub in ["clients", "signers"] {
            std::fs::create_dir_all(root.join(sub)).map_err(fail)?;
        }
        let server = openssl::rsa::Rsa::generate(2048).map_err(fail)?;
        write_key(&root.join("server-private.pem"), true, &server)?;
        write_key(&root.join("server-public.pem"), false, &server)?;
        for name in ["alice", "fedgate"] {
            let key = openssl::rsa::Rsa::generate(2048).map_err(fail)?;
            write_key(&root.join(format!("{name}-private.pem")), true, &key)?;
            write_key(&root.join(format!("{name}.pem")), false, &key)?;
            write_key(&root.join(format!("clients/{name}.pem")), false, &key)?;
        }
        std::fs::copy(
            root.join("fedgate-private.pem"),
            root.join("signers/fedgate.pem"),
        )
        .map_err(fail)?;
        std::fs::write(root.join("psych_compat.rb"), PSYCH_COMPAT).map_err(fail)?;
        std::fs::write(root.join("classes.txt"), "legacy::role\n").map_err(fail)?;
        let site = LegacySite {
            vhost: vhost.to_string(),
            collective,
            serializer,
            root,
            pids: Vec::new(),
        };
        std::fs::write(site.root.join("client.cfg"), site.client_config()).map_err(fail)?;
        Ok(site)
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
        &self.root
    }

    /// fedgate's `[legacy.<name>]` table for this site (broker, serializer and keys), then
    /// `extra` lines (`choria = ...`, `bridge = ...`).
    pub fn config_block(&self, name: &str, extra: &str) -> String {
        format!(
            "[legacy.{name}]\namqp = {:?}\ncollective = {:?}\nserializer = {:?}\n\
             server_public = {:?}\nserver_private = {:?}\nclient_keys = {:?}\nsigners = {:?}\n\
             {extra}\n",
            self.amqp_url(),
            self.collective,
            self.serializer.as_str(),
            self.key("server-public.pem"),
            self.key("server-private.pem"),
            self.key("clients"),
            self.key("signers"),
        )
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
        let root = &self.root;
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
        format!("-r{}", self.root.join("psych_compat.rb").display())
    }

    /// Starts `mcollectived` as `identity` with `facts` (YAML) and the site's classes
    /// (`legacy::role`), and waits until it is subscribed.
    pub fn start_node(&mut self, identity: &str, facts: &str) -> Result<(), SiteError> {
        self.start_node_with_classes(identity, facts, None)
    }

    /// Starts `mcollectived` as `identity` with `facts` (YAML) and, when given, its own
    /// classes file (one class a line), and waits until it is subscribed.
    pub fn start_node_with_classes(
        &mut self,
        identity: &str,
        facts: &str,
        classes: Option<&[&str]>,
    ) -> Result<(), SiteError> {
        let root = self.root.clone();
        let node = root.join(identity);
        std::fs::create_dir_all(&node).map_err(fail)?;
        std::fs::write(node.join("facts.yaml"), facts).map_err(fail)?;
        let classes_file = match classes {
            Some(classes) => {
                let path = node.join("classes.txt");
                let text: String = classes.iter().map(|c| format!("{c}\n")).collect();
                std::fs::write(&path, text).map_err(fail)?;
                path
            }
            None => root.join("classes.txt"),
        };
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
            classes_file.display(),
        );
        let config_path = node.join("server.cfg");
        std::fs::write(&config_path, config).map_err(fail)?;
        let pidfile = node.join("mcollectived.pid");
        let _ = std::fs::remove_file(&pidfile);
        let status = Command::new("mcollectived")
            .env("RUBYOPT", self.ruby_opt())
            .arg(format!("--config={}", config_path.display()))
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg("--daemonize")
            .status()
            .map_err(|e| {
                fail(format!(
                    "mcollectived (scripts/setup-deps installs mcollective): {e}"
                ))
            })?;
        if !status.success() {
            return Err(fail(format!("mcollectived {identity}: {status}")));
        }
        let pid = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
        })
        .ok_or_else(|| {
            fail(format!(
                "mcollectived {identity} wrote no pidfile: {}",
                self.log(identity)
            ))
        })?;
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
            .ok()?
            .lines()
            .any(|l| l == binding)
            .then_some(())
        })
        .ok_or_else(|| {
            fail(format!(
                "mcollectived {identity} did not subscribe: {}",
                self.log(identity)
            ))
        })
    }

    /// A node's log.
    pub fn log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.root.join(identity).join("mcollectived.log"))
            .unwrap_or_default()
    }

    /// The real `mco` client with this site's config, to run with `args`.
    pub fn mco_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("mco");
        command
            .env("RUBYOPT", self.ruby_opt())
            .args(args)
            .arg("--config")
            .arg(self.root.join("client.cfg"));
        command
    }

    /// A file of the site: keys (`server-public.pem`, `clients`, `signers`...) and configs.
    pub fn key(&self, name: &str) -> PathBuf {
        self.root.join(name)
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
        let running = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("mcollectived"))
        };
        for (_, pid) in &self.pids {
            if running(*pid) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        // Gone before the vhost is: a daemon would otherwise log reconnect failures.
        let _ = wait_for(Duration::from_secs(10), || {
            (!self.pids.iter().any(|(_, pid)| running(*pid))).then_some(())
        });
        let _ = Command::new("rabbitmqctl")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-q", "delete_vhost", &self.vhost])
            .status();
    }
}
