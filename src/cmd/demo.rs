//! `fedgate demo`: the whole topology on this machine. The dev PKI; TLS nats-servers for the
//! federation `prod` and the collectives `london` and `tokyo`, each with its own CA; simulated
//! fleets in both collectives; two `fedgate run` instances that share the federation's work,
//! each with a WebSocket edge serving the web page; ready tokens and command lines. Ctrl-C
//! stops every process it started.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fedgate::ddl::{DdlSet, UnknownAgents};
use fedgate::edge::auth::{TokenKeys, hash_password};
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
const LEGACY_RULES: &str = r#"
# The legacy site: alice reaches it from the web as the key fedgate holds (cert=fedgate); mco
# users reach the federation's collectives under their certificate's name; london's alice
# reaches it from Choria.
[[rule]]
from = "edge"
to = ["oldsite"]
caller = "up=alice"
as = "cert=fedgate"

[[rule]]
from = "oldsite"
to = ["london", "tokyo"]
glob = "cert=*"
as = "choria=$1.mcollective"

[[rule]]
from = "london"
to = ["oldsite"]
caller = "choria=alice.mcollective"
as = "cert=fedgate"
"#;

/// Demo users and their passwords (loopback only).
const USERS: [(&str, &str); 2] = [
    ("alice", "alice-demo-password"),
    ("bob", "bob-demo-password"),
];
const INSTANCES: [&str; 2] = ["fedgate-1", "fedgate-2"];
const IDENTITY_RULES: &str = r#"# Written by `fedgate demo`.
# Web users (up=<name>) act in both collectives as <name>.mcollective.
[[rule]]
from = "edge"
to = ["london", "tokyo"]
glob = "up=*"
as = "choria=$1.mcollective"

# Federation clients keep their Choria names.
[[rule]]
from = "prod"
to = ["london", "tokyo"]
glob = "choria=*.mcollective"
as = "$0"
"#;

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
    let urls: Vec<String> = instances.iter().map(|i| i.http_url.clone()).collect();
    let state = serde_json::json!({
        "url": urls[0],
        "urls": urls,
        "ws": instances.iter().map(|i| i.ws_url.clone()).collect::<Vec<_>>(),
        "tokens": tokens.iter().map(|(u, t)| (u.to_string(), serde_json::json!(t))).collect::<serde_json::Map<_, _>>(),
        "passwords": USERS.iter().map(|(u, p)| (u.to_string(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>(),
        "collectives": {"london": london_nodes, "tokyo": tokyo_nodes},
        "legacy": legacy.as_ref().map(|_| serde_json::json!({
            "collective": LEGACY,
            "nodes": LEGACY_NODES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        })),
        "federations": {"prod": ["london", "tokyo"]},
        "directed": (1..=3).map(|i| format!("london-{i:04}")).collect::<Vec<_>>(),
        "web_page": files.web_root.is_some(),
    });
    if let Some(path) = &args.state_file {
        std::fs::write(path, serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    if args.smoke {
        let token = &tokens[0].1;
        let result = smoke(&instances[0].ws_url, token, args.nodes).await;
        for instance in instances {
            instance.stop().await;
        }
        for fleet in fleets {
            fleet.shutdown().await;
        }
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
    print_welcome(&state, &tokens, &client_config, &files, legacy.as_ref());
    // A Choria federation client, so the two instances visibly share the broker's work.
    let background = tokio::spawn(federation_traffic(
        servers.prod.url().to_string(),
        prod.clone(),
    ));
    super::shutdown_signal().await;
    background.abort();
    eprintln!("\nfedgate demo: stopping");
    for instance in instances {
        instance.stop().await;
    }
    for fleet in fleets {
        fleet.shutdown().await;
    }
    drop(legacy);
    drop(servers);
    eprintln!("fedgate demo: stopped");
    Ok(ExitCode::SUCCESS)
}

struct Servers {
    prod: NatsServer,
    london: NatsServer,
    tokyo: NatsServer,
}

/// Paths every instance's config names.
struct Files {
    identity: PathBuf,
    policies: PathBuf,
    ddl: Option<PathBuf>,
    web_root: Option<PathBuf>,
    token_key: PathBuf,
    users: PathBuf,
    /// Simulated nodes in all.
    nodes: usize,
}

impl Files {
    fn prepare(dir: &Path, args: &Args, legacy: bool) -> anyhow::Result<Files> {
        let identity = dir.join("identity.toml");
        let mut rules = IDENTITY_RULES.to_string();
        if legacy {
            rules.push_str(LEGACY_RULES);
        }
        std::fs::write(&identity, rules)?;
        let policies = args
            .policies
            .canonicalize()
            .with_context(|| format!("the policies folder {}", args.policies.display()))?;
        let ddl = args.ddl.canonicalize().ok();
        let web_root = args
            .web_root
            .join("index.html")
            .is_file()
            .then(|| args.web_root.canonicalize())
            .transpose()?;
        if web_root.is_none() {
            eprintln!(
                "fedgate demo: no web page at {} (run `npm ci && npm run build` in web-demo); the edge serves only its API",
                args.web_root.display()
            );
        }
        let token_key = dir.join("token.key");
        if !token_key.exists() {
            write_private(&token_key, TokenKeys::generate_pem()?.as_bytes())?;
        }
        let users = dir.join("users.toml");
        let mut text = String::from("# Written by `fedgate demo`.\n");
        for (user, password) in USERS {
            text.push_str(&format!(
                "[users.{user}]\npassword = {:?}\n",
                hash_password(password)?
            ));
        }
        std::fs::write(&users, text)?;
        Ok(Files {
            identity,
            policies,
            ddl,
            web_root,
            token_key,
            users,
            nodes: args.nodes,
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
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

/// A network's table: URL, CA and fedgate's TLS identity there.
fn network(table: &str, server: &NatsServer, realm: &RealmPki, extra: &str) -> String {
    format!(
        "[{table}]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n{extra}\n",
        server.url(),
        realm.ca,
        realm.fedgate.cert,
        realm.fedgate.key
    )
}

fn signer(realm: &RealmPki) -> anyhow::Result<String> {
    let pair = realm
        .privileged
        .as_ref()
        .with_context(|| format!("realm {} has no privileged certificate", realm.name))?;
    Ok(format!(
        "signer = {{ certificate = {:?}, key = {:?} }}\n",
        pair.cert, pair.key
    ))
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

fn write_instance_config(
    dir: &Path,
    name: &str,
    port: u16,
    files: &Files,
    pki: &DevPki,
    servers: &Servers,
    legacy: Option<&LegacySite>,
) -> anyhow::Result<PathBuf> {
    let (prod, london, tokyo) = (
        realm(pki, "prod")?,
        realm(pki, "london")?,
        realm(pki, "tokyo")?,
    );
    std::fs::create_dir_all(dir.join("audit"))?;
    // A browser reads a federation-wide broadcast slower than the fleet answers it: the
    // outbox holds every reply of one (about 200 bytes each), so a big demo fleet never trips
    // the slow-reader limit (4008).
    let queue = (files.nodes * 2).max(16_384);
    let mut edge = format!(
        "[edge]\nlisten = \"127.0.0.1:{port}\"\ntoken_key = {:?}\nusers = {:?}\n\
         origins = [\"http://127.0.0.1:{port}\", \"http://localhost:{port}\"]\n\
         auditors = [\"up=alice\"]\noutbound_queue = {queue}\noutbound_queue_bytes = {}\n",
        files.token_key,
        files.users,
        (queue * 512).max(8 << 20),
    );
    if let Some(root) = &files.web_root {
        edge.push_str(&format!("web_root = {root:?}\n"));
    }
    if let Some(ddl) = &files.ddl {
        edge.push_str(&format!("ddl_dir = {ddl:?}\n"));
    }
    let text = format!(
        "# Written by `fedgate demo` for instance {name}.\n\
         [instance]\nname = {name:?}\nstats_interval = 2\n\n\
         [identity]\nrules = {:?}\n\n[policy]\ndir = {:?}\n\n\
         [audit]\nfile = {:?}\n\n{}{}{}{}{edge}",
        files.identity,
        files.policies,
        dir.join("audit").join(format!("{name}.log")),
        network("federations.prod", &servers.prod, prod, ""),
        network(
            "federations.prod.collectives.london",
            &servers.london,
            london,
            &signer(london)?
        ),
        network(
            "federations.prod.collectives.tokyo",
            &servers.tokyo,
            tokyo,
            &signer(tokyo)?
        ),
        legacy
            .map(|site| {
                site.config_block(
                    LEGACY,
                    "choria = \"london\"\nbridge = { collective = \"prod\", refresh_s = 30 }\n",
                )
            })
            .unwrap_or_default(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
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
            .replace("ws://", "http://")
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

fn write_client_config(
    dir: &Path,
    pki: &DevPki,
    servers: &Servers,
    legacy: bool,
) -> anyhow::Result<PathBuf> {
    let london = realm(pki, "london")?;
    let alice = london
        .users
        .get("alice")
        .context("the dev PKI has no user alice")?;
    let mut text = format!(
        "# Written by `fedgate demo`: alice of london, straight to the london collective.\n\
         [client]\ncertificate = {:?}\nkey = {:?}\n\n\
         [collectives.london]\nnats = [{:?}]\nca = {:?}\n",
        alice.cert,
        alice.key,
        servers.london.url(),
        london.ca,
    );
    if legacy {
        // fedgate serves the legacy collective on london's network.
        text.push_str(&format!(
            "\n[collectives.{LEGACY}]\nnats = [{:?}]\nca = {:?}\n",
            servers.london.url(),
            london.ca,
        ));
    }
    let path = dir.join("fedgate.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn print_welcome(
    state: &serde_json::Value,
    tokens: &[(&str, String)],
    client_config: &Path,
    files: &Files,
    legacy: Option<&LegacySite>,
) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "fedgate".into());
    let url = state["url"].as_str().unwrap_or_default();
    let ws = state["ws"][0].as_str().unwrap_or_default();
    let page = if files.web_root.is_some() {
        format!("Open {url} and log in as alice (operator) or bob (read-only).")
    } else {
        "The web page is not built (npm ci && npm run build in web-demo).".to_string()
    };
    let mut out = format!(
        "\nfedgate demo is running: {} nodes in london, {} in tokyo, federation prod served by \
         {} and {}\n\n{page}\n",
        state["collectives"]["london"], state["collectives"]["tokyo"], INSTANCES[0], INSTANCES[1],
    );
    for ((user, password), (_, token)) in USERS.iter().zip(tokens) {
        out.push_str(&format!(
            "\n  {user}: password {password}\n  token: {token}\n"
        ));
    }
    out.push_str(&format!(
        "\nFrom a script, through the edge:\n  {exe} ws-rpc --url {ws} --token <alice's token> --federation prod rpcutil ping\n\
         \nStraight to london's NATS, as alice of london:\n  {exe} rpc --config {} --collective london rpcutil ping --fact country=uk\n\
         \nInstances: {exe} observe --config {} --federation prod\n",
        client_config.display(),
        client_config.with_file_name(format!("{}.toml", INSTANCES[0])).display(),
    ));
    match legacy {
        Some(site) => out.push_str(&format!(
            "\nThe legacy site {LEGACY} ({}), from the real mco as cert=alice, reaches the federation's nodes:\n  \
             RUBYOPT=-r{} mco ping --config {}\n\
             and Choria clients on london reach its mcollectived nodes as collective {LEGACY}:\n  \
             {exe} rpc --config {} --collective {LEGACY} rpcutil ping\n",
            LEGACY_NODES.map(|(n, _)| n).join(", "),
            site.key("psych_compat.rb").display(),
            site.key("client.cfg").display(),
            client_config.display(),
        )),
        None => out.push_str("\nNo legacy site in this run.\n"),
    }
    out.push_str("\nPress Ctrl-C to stop.");
    println!("{out}");
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
async fn smoke(ws_url: &str, token: &str, nodes: usize) -> anyhow::Result<(usize, usize)> {
    let mut client = WsClient::connect(&Connect {
        url: ws_url.to_string(),
        token: Some(token.to_string()),
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
