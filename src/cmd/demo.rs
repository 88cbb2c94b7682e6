//! `fedgate demo`: the whole topology on this machine. The dev PKI; TLS nats-servers for the
//! federation `prod` and the collectives `london` and `tokyo`, each with its own CA; simulated
//! fleets in both collectives; two `fedgate run` instances that share the federation's work,
//! each with a WebSocket edge on TLS with the edge CA serving the web page; ready tokens and
//! command lines. Ctrl-C stops every process it started.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fedgate::ddl::{DdlSet, UnknownAgents};
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient};
use fedgate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig};
use fedgate::legacy::site::LegacySite;
use fedgate::nats::{self, NatsEndpoint};
use fedgate::natsd::{NatsServer, NatsServerConfig};
use fedgate::security::devpki::{self, DevPki, DevPkiOptions, RealmPki};
use fedgate::security::{CaBundle, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::mcollective::Serializer;
use tokio::io::AsyncBufReadExt;

mod config;
mod welcome;

use config::{Files, write_client_config, write_instance_config};

/// Arguments of `fedgate demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the PKI, server files, configs, logs and audit trails.
    #[arg(long, default_value = ".fedgate-demo")]
    dir: PathBuf,
    /// Simulated Choria nodes in all (three fifths in london, the rest in tokyo).
    #[arg(long, default_value_t = 300)]
    nodes: usize,
    /// The first instance's web port; the second uses the next one. 0 picks free ports.
    #[arg(long, default_value_t = 8480)]
    port: u16,
    /// The built web page (`npm ci && npm run build` in web-demo).
    #[arg(long, default_value = "web-demo/dist")]
    web_root: PathBuf,
    /// actionpolicy files.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// Choria JSON DDLs for the page's forms.
    #[arg(long, default_value = "ddl")]
    ddl: PathBuf,
    /// Write the URLs, tokens and node counts here as JSON once everything is up.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Start everything, ping every node through the edge, and stop.
    #[arg(long)]
    smoke: bool,
    /// Leave out the legacy MCollective site, even when RabbitMQ and mcollective are here.
    #[arg(long)]
    no_legacy: bool,
}

/// The legacy site's name as a realm, and its nodes.
const LEGACY: &str = "oldsite";
const LEGACY_NODES: [(&str, &str); 2] = [
    ("legacy1.example.net", "---\nrole: web\ncountry: de\n"),
    ("legacy2.example.net", "---\nrole: db\ncountry: fr\n"),
];
/// Demo users and their passwords (loopback only).
const USERS: [(&str, &str); 2] = [
    ("alice", "alice-demo-password"),
    ("bob", "bob-demo-password"),
];
const INSTANCES: [&str; 2] = ["fedgate-1", "fedgate-2"];
/// Runs the demo until Ctrl-C (or once, with `--smoke`).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    eprintln!(
        "fedgate demo: preparing the dev PKI in {}",
        dir.join("pki").display()
    );
    let pki = devpki::generate(&dir.join("pki"), &DevPkiOptions::default())?;
    let (prod, london, tokyo) = (
        realm(&pki, "prod")?,
        realm(&pki, "london")?,
        realm(&pki, "tokyo")?,
    );
    let servers = Servers {
        prod: start_nats(&dir, prod)?,
        london: start_nats(&dir, london)?,
        tokyo: start_nats(&dir, tokyo)?,
    };
    let london_nodes = (args.nodes * 3).div_ceil(5);
    let tokyo_nodes = args.nodes - london_nodes;
    eprintln!("fedgate demo: starting {london_nodes} nodes in london and {tokyo_nodes} in tokyo");
    let ddl = fleet_ddl(&args.ddl)?;
    let fleets = [
        start_fleet(&servers.london, london, london_nodes, ddl.clone()).await?,
        start_fleet(&servers.tokyo, tokyo, tokyo_nodes, ddl).await?,
    ];
    let legacy = legacy_site(&dir, &args).await;
    let ports = ports(args.port)?;
    let files = Files::prepare(&dir, &args, legacy.is_some())?;
    let mut instances = Vec::new();
    for (index, name) in INSTANCES.iter().enumerate() {
        let config = write_instance_config(
            &dir,
            name,
            ports[index],
            &files,
            &pki,
            &servers,
            legacy.as_ref(),
        )?;
        instances.push(Instance::spawn(&dir, name, &config).await?);
    }
    let keys = TokenKeys::load(&files.token_key)?;
    let now = std::time::SystemTime::now();
    let tokens: Vec<(&str, String)> = USERS
        .iter()
        .map(|(user, _)| {
            keys.issue(user, Duration::from_secs(8 * 3600), None, now)
                .map(|t| (*user, t))
        })
        .collect::<Result<_, _>>()?;
    let client_config = write_client_config(&dir, &pki, &servers, legacy.is_some())?;
    let edge = realm(&pki, "edge")?;
    let state = demo_state(
        &instances,
        &tokens,
        [london_nodes, tokyo_nodes],
        legacy.is_some(),
        files.web_root.is_some(),
        edge,
    )?;
    if let Some(path) = &args.state_file {
        std::fs::write(path, serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    if args.smoke {
        let token = &tokens[0].1;
        let result = smoke(&instances[0].ws_url, &edge.ca, token, args.nodes).await;
        stop(instances, fleets).await;
        drop(legacy);
        let (responses, ok) = result?;
        println!(
            "{}",
            serde_json::json!({"responses": responses, "ok": ok, "nodes": args.nodes, "instances": INSTANCES.len()})
        );
        return Ok(if ok == args.nodes {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    welcome::print_welcome(&state, &tokens, &client_config, &files, legacy.as_ref());
    // A Choria federation client, so the two instances visibly share the broker's work.
    let background = tokio::spawn(federation_traffic(
        servers.prod.url().to_string(),
        prod.clone(),
    ));
    super::shutdown_signal().await;
    background.abort();
    eprintln!("\nfedgate demo: stopping");
    stop(instances, fleets).await;
    drop(legacy);
    drop(servers);
    eprintln!("fedgate demo: stopped");
    Ok(ExitCode::SUCCESS)
}

/// What `--state-file` holds and the welcome text reads: URLs, tokens, passwords, node counts,
/// and the edge CA with alice's edge certificate.
fn demo_state(
    instances: &[Instance],
    tokens: &[(&str, String)],
    [london, tokyo]: [usize; 2],
    legacy: bool,
    web_page: bool,
    edge: &RealmPki,
) -> anyhow::Result<serde_json::Value> {
    let edge_user = edge
        .users
        .get("alice")
        .context("the dev PKI has no edge user alice")?;
    let urls: Vec<String> = instances.iter().map(|i| i.http_url.clone()).collect();
    Ok(serde_json::json!({
        "url": urls[0],
        "urls": urls,
        "ws": instances.iter().map(|i| i.ws_url.clone()).collect::<Vec<_>>(),
        "tokens": tokens.iter().map(|(u, t)| (u.to_string(), serde_json::json!(t))).collect::<serde_json::Map<_, _>>(),
        "passwords": USERS.iter().map(|(u, p)| (u.to_string(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>(),
        "collectives": {"london": london, "tokyo": tokyo},
        "legacy": legacy.then(|| serde_json::json!({
            "collective": LEGACY,
            "nodes": LEGACY_NODES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        })),
        "federations": {"prod": ["london", "tokyo"]},
        "directed": (1..=3).map(|i| format!("london-{i:04}")).collect::<Vec<_>>(),
        "web_page": web_page,
        "edge": {"ca": edge.ca, "user": "alice", "cert": edge_user.cert, "key": edge_user.key},
    }))
}

/// Stops the instances (each drains) and then the fleets.
async fn stop(instances: Vec<Instance>, fleets: [Fleet; 2]) {
    for instance in instances {
        instance.stop().await;
    }
    for fleet in fleets {
        fleet.shutdown().await;
    }
}

struct Servers {
    prod: NatsServer,
    london: NatsServer,
    tokyo: NatsServer,
}

/// The two instances' web ports: `first` and the next, or two free ones for 0.
fn ports(first: u16) -> anyhow::Result<[u16; 2]> {
    if first != 0 {
        return Ok([first, first.checked_add(1).context("--port is too high")?]);
    }
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let a = free()?;
    let mut b = free()?;
    while b == a {
        b = free()?;
    }
    Ok([a, b])
}

fn realm<'a>(pki: &'a DevPki, name: &str) -> anyhow::Result<&'a RealmPki> {
    pki.realm(name)
        .with_context(|| format!("the dev PKI has no realm {name}"))
}

fn start_nats(dir: &Path, realm: &RealmPki) -> anyhow::Result<NatsServer> {
    let config = NatsServerConfig {
        name: format!("{}-demo", realm.name),
        tls: Some(realm.nats_tls()),
        // The federation's server also holds the replay guard both instances share.
        jetstream: realm.name == "prod",
        ..NatsServerConfig::default()
    };
    Ok(NatsServer::start(
        &dir.join(format!("nats-{}", realm.name)),
        config,
    )?)
}

/// The DDLs the simulated nodes validate inputs with, when the folder is there.
fn fleet_ddl(dir: &Path) -> anyhow::Result<Option<Arc<DdlSet>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let set = DdlSet::load(dir, UnknownAgents::Pass)
        .with_context(|| format!("the DDL folder {}", dir.display()))?;
    Ok(Some(Arc::new(set)))
}

async fn start_fleet(
    server: &NatsServer,
    realm: &RealmPki,
    count: usize,
    ddl: Option<Arc<DdlSet>>,
) -> anyhow::Result<Fleet> {
    let Some(identity) = &realm.fleet else {
        bail!("realm {} has no fleet certificate", realm.name);
    };
    let endpoint = NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: Some(realm.ca.clone()),
        identity: Some((identity.cert.clone(), identity.key.clone())),
    };
    let client = nats::connect(&endpoint, "fedgate-demo-fleet").await?;
    let limits = Limits::default();
    let config = FleetConfig {
        policy: None,
        ddl,
        nodes: fleet::generate(&realm.name, count, std::slice::from_ref(&realm.name)),
        verifier: Verifier::with_defaults(CaBundle::from_file(&realm.ca)?, limits),
        limits,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
    };
    Ok(Fleet::start(client, config).await?)
}

/// The legacy site with its two `mcollectived` nodes, when this machine can run one.
async fn legacy_site(dir: &Path, args: &Args) -> Option<LegacySite> {
    if args.no_legacy {
        return None;
    }
    if !LegacySite::available() {
        eprintln!(
            "fedgate demo: no legacy site (it needs RabbitMQ with STOMP on 127.0.0.1:61613 and Debian's mcollective; scripts/setup-deps installs them)"
        );
        return None;
    }
    eprintln!("fedgate demo: starting the legacy site {LEGACY} (real mcollectived on RabbitMQ)");
    let started = async {
        let vhost = format!("/fedgate-demo-{}", std::process::id());
        let mut site = LegacySite::create(&dir.join("legacy"), &vhost, Serializer::Marshal).await?;
        for (identity, facts) in LEGACY_NODES {
            site.start_node(identity, facts)?;
        }
        Ok::<_, fedgate::legacy::site::SiteError>(site)
    };
    match started.await {
        Ok(site) => Some(site),
        Err(err) => {
            eprintln!("fedgate demo: no legacy site: {err}");
            None
        }
    }
}

/// A `fedgate run` child; its log goes to `<dir>/<name>.log`.
struct Instance {
    child: tokio::process::Child,
    http_url: String,
    ws_url: String,
}

impl Instance {
    async fn spawn(dir: &Path, name: &str, config: &Path) -> anyhow::Result<Instance> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .args([
                "run",
                "--instance",
                name,
                "--metrics",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting fedgate run")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log_path = dir.join(format!("{name}.log"));
        let mut log = std::fs::File::create(&log_path)?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if let Some(url) = line.split("edge on ").nth(1) {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await;
        let Ok(Some(ws_url)) = ready else {
            bail!("fedgate {name} did not start; see {}", log_path.display());
        };
        // Keep draining its log, so it never blocks on a full pipe.
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        let http_url = ws_url
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1)
            .trim_end_matches("/ws")
            .to_string()
            + "/";
        eprintln!("fedgate demo: {name} is up at {http_url}");
        Ok(Instance {
            child,
            http_url,
            ws_url,
        })
    }

    /// SIGTERM, so it drains; killed if it has not exited within 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let pid = libc::pid_t::try_from(pid).unwrap_or(0);
            if pid > 0 {
                // SAFETY: kill(2) on our own child's pid; no memory is touched.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Every 5 s, prod's alice pings both collectives through the Federation Broker, as a Choria
/// client with `plugin.choria.federation.collectives = prod` does.
async fn federation_traffic(url: String, prod: RealmPki) {
    let Some(alice) = prod.users.get("alice") else {
        return;
    };
    let endpoint = NatsEndpoint {
        urls: vec![url],
        ca: Some(prod.ca.clone()),
        identity: Some((alice.cert.clone(), alice.key.clone())),
    };
    let (Ok(nats), Ok(signer)) = (
        nats::connect(&endpoint, "fedgate-demo-federation-client").await,
        fedgate::security::Signer::from_files(&alice.cert, &alice.key),
    ) else {
        eprintln!("fedgate demo: the background federation client could not start");
        return;
    };
    let Ok(caller) = fedgate::security::CallerId::for_certname(signer.certname()) else {
        return;
    };
    let client = fedgate::client::RpcClient::new(
        nats,
        std::sync::Arc::new(signer),
        caller,
        "fedgate-demo".into(),
        Limits::default(),
    );
    let calls: Vec<_> = ["london", "tokyo"]
        .into_iter()
        .map(|collective| fedgate::client::RpcCall {
            federation: Some("prod".into()),
            timeout: Duration::from_secs(4),
            ..fedgate::client::RpcCall::new(collective, "rpcutil", "ping")
        })
        .collect();
    loop {
        let _ = client.call_many(&calls, |_| {}).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Pings every node over the federation through the first instance's edge.
async fn smoke(
    ws_url: &str,
    ca: &Path,
    token: &str,
    nodes: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut client = WsClient::connect(&Connect {
        url: ws_url.to_string(),
        token: Some(token.to_string()),
        ca: Some(ca.to_path_buf()),
        ..Connect::default()
    })
    .await?;
    let (mut responses, mut ok) = (0, 0);
    client
        .call(
            &serde_json::json!({"type":"rpc","id":"smoke","federation":"prod","agent":"rpcutil","action":"ping","limit":nodes,"timeout_ms":30000}),
            |reply| {
                responses += 1;
                if reply.message["statuscode"] == 0 {
                    ok += 1;
                }
            },
        )
        .await?;
    client.close().await;
    Ok((responses, ok))
}
