//! Real nats-server child processes for the demo and tests: random port, TLS, killed on drop.
//!
//! Each [`NatsServer`] writes `<name>.conf` into its work directory and runs
//! `nats-server -c <name>.conf`, with the server's own log and its stdout/stderr
//! (where config errors go) appended to `<name>.log`. The listening port is
//! discovered through nats-server's `ports_file_dir`: 2.9.10 writes
//! `<basename of argv[0]>_<pid>.ports` (e.g. `nats-server_12644.ports`) holding
//! `{"nats":["nats://127.0.0.1:33409"]}`, removes it on a clean shutdown but
//! leaves it behind after SIGKILL, so [`NatsServer::stop`] removes it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod files;
#[cfg(test)]
mod tests;

use files::{
    file_stem, find_nats_server_in, find_ports_file, log_tail, read_ports_file, render_config,
};

/// Environment variable naming the nats-server binary to use.
pub const NATS_SERVER_ENV: &str = "FEDGATE_NATS_SERVER";
/// How to get nats-server when it is missing.
pub const INSTALL_HINT: &str = "install it with `sudo apt-get install nats-server` (or run `scripts/setup-deps`), or set FEDGATE_NATS_SERVER to its path";
/// How long [`NatsServer::start`] waits for the server to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES: u64 = 16 * 1024;
const FALLBACK_DIRS: [&str; 3] = ["/usr/sbin", "/usr/bin", "/usr/local/bin"];

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// TLS material for a nats-server listener (PEM files).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle used to verify client certificates (PEM).
    pub ca: PathBuf,
    /// require and verify client certs
    pub verify_clients: bool,
}

/// How to run one nats-server.
#[derive(Clone, Debug, Default)]
pub struct NatsServerConfig {
    /// server_name, used in logs and file names (empty = a unique generated name).
    pub name: String,
    /// TLS for the client listener; `None` = plain TCP.
    pub tls: Option<ServerTls>,
    /// Enable JetStream with store_dir inside the work dir.
    pub jetstream: bool,
    /// Client port; `None` (or `Some(0)`) = random.
    pub port: Option<u16>,
    /// Maximum message payload in bytes (nats-server default 1 MiB).
    pub max_payload: Option<usize>,
    /// Accept leafnode connections on a random port (see [`NatsServer::leafnode_url`]).
    pub leafnode_listen: bool,
    /// Hubs to connect to as a leafnode, `nats-leaf://host:port`.
    pub leafnode_remotes: Vec<String>,
    /// Accept plain WebSocket clients on a random loopback port (see
    /// [`NatsServer::websocket_url`]).
    pub websocket_listen: bool,
    /// Run in a process group of its own, so a terminal's Ctrl-C reaches only the parent, which
    /// then stops the server when it is done with it (the demo drains its fedgate instances
    /// first). Off for tests: a test binary killed by Ctrl-C takes its servers with it.
    pub own_process_group: bool,
    /// nats-server config text appended as written: `authorization`, operator mode, accounts.
    pub extra_config: String,
}

/// Errors starting a nats-server.
#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    /// No nats-server binary was found.
    #[error("nats-server not found ({detail}); {hint}", hint = INSTALL_HINT)]
    NotInstalled {
        /// Where it was looked for.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot be written as a nats-server config file.
    #[error("invalid nats-server config: {0}")]
    InvalidConfig(String),
    /// The server did not accept connections in time.
    #[error(
        "nats-server `{name}` did not accept connections within {waited:?} (log {}); log tail:\n{log_tail}",
        .log_path.display()
    )]
    StartTimeout {
        /// Server name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The server's log file.
        log_path: PathBuf,
        /// Last lines of the log.
        log_tail: String,
    },
    /// The server exited while starting.
    #[error("nats-server `{name}` exited during start ({status}); log tail:\n{log_tail}")]
    Exited {
        /// Server name.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// Last lines of the log.
        log_tail: String,
    },
    /// The ports file could not be understood.
    #[error("bad nats-server ports file {}: {detail}; log tail:\n{log_tail}", .path.display())]
    PortsFile {
        /// The ports file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
        /// Last lines of the log.
        log_tail: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NatsdError {
    let context = context.into();
    move |source| NatsdError::Io { context, source }
}

/// A running nats-server; killed (SIGKILL then wait) and its work files kept or removed on drop.
#[derive(Debug)]
pub struct NatsServer {
    exe: PathBuf,
    work_dir: PathBuf,
    config: NatsServerConfig,
    name: String,
    config_path: PathBuf,
    log_path: PathBuf,
    pid_path: PathBuf,
    store_dir: PathBuf,
    port: u16,
    url: String,
    pid: u32,
    child: Option<Child>,
    ports_file: Option<PathBuf>,
    remove_files_on_drop: bool,
}

impl NatsServer {
    /// Writes a config file under `work_dir` (created if missing), starts nats-server, waits until it accepts connections.
    pub fn start(work_dir: &Path, config: NatsServerConfig) -> Result<NatsServer, NatsdError> {
        let exe = find_nats_server()?;
        fs::create_dir_all(work_dir)
            .map_err(io_err(format!("creating work dir {}", work_dir.display())))?;
        let work_dir = fs::canonicalize(work_dir)
            .map_err(io_err(format!("resolving work dir {}", work_dir.display())))?;
        let name = if config.name.is_empty() {
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            format!("nats-{}-{n}", std::process::id())
        } else {
            config.name.clone()
        };
        let stem = file_stem(&name);
        let mut server = NatsServer {
            exe,
            config_path: work_dir.join(format!("{stem}.conf")),
            log_path: work_dir.join(format!("{stem}.log")),
            pid_path: work_dir.join(format!("{stem}.pid")),
            store_dir: work_dir.join(format!("{stem}-jetstream")),
            work_dir,
            config,
            name,
            port: 0,
            url: String::new(),
            pid: 0,
            child: None,
            ports_file: None,
            remove_files_on_drop: false,
        };
        let port = server.config.port.unwrap_or(0);
        server.launch(port)?;
        Ok(server)
    }

    /// The leafnode listener's URL, read from the server's log, when `leafnode_listen` is set.
    pub fn leafnode_url(&self) -> Option<String> {
        let log = fs::read_to_string(&self.log_path).ok()?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("Listening for leafnode connections on"))?;
        let addr = line.rsplit(' ').next()?;
        Some(format!("nats-leaf://{addr}"))
    }

    /// The WebSocket listener's URL, read from the server's log, when `websocket_listen` is set.
    pub fn websocket_url(&self) -> Option<String> {
        let log = fs::read_to_string(&self.log_path).ok()?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("Listening for websocket clients on"))?;
        Some(line.rsplit(' ').next()?.to_string())
    }

    /// Client URL, `nats://127.0.0.1:PORT` or `tls://127.0.0.1:PORT` when TLS is on.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated nats-server config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The log file (server log plus its stdout/stderr, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Process id of the current (or last) child.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server name (generated when the config's name was empty).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last lines of the log file, for diagnostics.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// Whether drop also removes the config, log, pid file and JetStream store (default: keep).
    pub fn remove_files_on_drop(&mut self, remove: bool) {
        self.remove_files_on_drop = remove;
    }

    /// Stops the server (SIGKILL, wait). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(ports_file) = self.ports_file.take() {
            let _ = fs::remove_file(ports_file);
        }
    }

    /// Starts it again on the same port with the same config (for fault tests).
    pub fn restart(&mut self) -> Result<(), NatsdError> {
        self.stop();
        self.launch(self.port)
    }

    /// True while the child is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Writes the config with `port` (0 = random), spawns the child and waits until it is ready.
    fn launch(&mut self, port: u16) -> Result<(), NatsdError> {
        let text = render_config(self, port)?;
        fs::write(&self.config_path, text)
            .map_err(io_err(format!("writing {}", self.config_path.display())))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let _ = writeln!(
            log,
            "--- fedgate: starting {} -c {} ---",
            self.exe.display(),
            self.config_path.display()
        );
        let stderr = log
            .try_clone()
            .map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if self.config.own_process_group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .map_err(io_err(format!("starting {}", self.exe.display())))?;
        self.pid = child.id();
        self.child = Some(child);
        match self.wait_ready() {
            Ok(port) => {
                self.port = port;
                let scheme = if self.config.tls.is_some() {
                    "tls"
                } else {
                    "nats"
                };
                self.url = format!("{scheme}://127.0.0.1:{port}");
                Ok(())
            }
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    /// Polls for the ports file, then for a TCP connect; fails if the child exits.
    fn wait_ready(&mut self) -> Result<u16, NatsdError> {
        let started = Instant::now();
        let suffix = format!("_{}.ports", self.pid);
        let mut port = None;
        loop {
            let exited = match &mut self.child {
                Some(child) => child
                    .try_wait()
                    .map_err(io_err("waiting for nats-server"))?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(NatsdError::Exited {
                    name: self.name.clone(),
                    status,
                    log_tail: self.log_tail(),
                });
            }
            if self.ports_file.is_none() {
                self.ports_file = find_ports_file(&self.work_dir, &suffix);
            }
            if port.is_none()
                && let Some(path) = &self.ports_file
            {
                match read_ports_file(path) {
                    Ok(p) => port = Some(p),
                    // It may be half written; give up only at the deadline.
                    Err(detail) if started.elapsed() >= START_TIMEOUT => {
                        return Err(NatsdError::PortsFile {
                            path: path.clone(),
                            detail,
                            log_tail: self.log_tail(),
                        });
                    }
                    Err(_) => {}
                }
            }
            if let Some(p) = port {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
                if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
                    return Ok(p);
                }
            }
            if started.elapsed() >= START_TIMEOUT {
                return Err(NatsdError::StartTimeout {
                    name: self.name.clone(),
                    waited: started.elapsed(),
                    log_path: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if self.remove_files_on_drop {
            for file in [&self.config_path, &self.log_path, &self.pid_path] {
                let _ = fs::remove_file(file);
            }
            let _ = fs::remove_dir_all(&self.store_dir);
        }
    }
}

/// Finds nats-server: `$FEDGATE_NATS_SERVER`, then `PATH`, then /usr/sbin, /usr/bin, /usr/local/bin.
pub fn find_nats_server() -> Result<PathBuf, NatsdError> {
    find_nats_server_in(std::env::var_os(NATS_SERVER_ENV), std::env::var_os("PATH"))
}
