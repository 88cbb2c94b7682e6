//! `fedgate demo`: the whole topology on this machine. The dev PKI; TLS nats-servers for the
//! federation `prod` and the collectives `london` and `tokyo`, each with its own CA; simulated
//! fleets in both collectives; two `fedgate run` instances that share the federation's work,
//! each with a WebSocket edge on TLS with the edge CA serving the web page; ready tokens and
//! command lines. Ctrl-C stops every process it started.

mod config;
mod instance;
mod welcome;

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

use config::{Files, write_client_config, write_instance_config};
use instance::Instance;

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
    let servers = Servers::start(&dir, &pki)?;
    let (fleets, nodes) = start_fleets(&args, &pki, &servers).await?;
    let legacy = legacy_site(&dir, &args).await;
    let ports = ports(args.port)?;
    let files = Files::prepare(&dir, &args, legacy.is_some())?;
    let instances = start_instances(&dir, ports, &files, &pki, &servers, legacy.as_ref()).await?;
    let tokens = issue_tokens(&files.token_key)?;
    let client_config = write_client_config(&dir, &pki, &servers, legacy.is_some())?;
    let edge = realm(&pki, "edge")?;
    let state = demo_state(
        &instances,
        &tokens,
        nodes,
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
        return Ok(smoke_report(result?, args.nodes));
    }
    welcome::print_welcome(&state, &tokens, &client_config, &files, legacy.as_ref());
    let prod = realm(&pki, "prod")?;
    serve_until_signal(servers, prod, instances, fleets, legacy).await;
    Ok(ExitCode::SUCCESS)
}

/// The simulated fleets: three fifths of the nodes in london, the rest in tokyo; gives back
/// the two counts too.
async fn start_fleets(
    args: &Args,
    pki: &DevPki,
    servers: &Servers,
) -> anyhow::Result<([Fleet; 2], [usize; 2])> {
    let london_nodes = (args.nodes * 3).div_ceil(5);
    let tokyo_nodes = args.nodes - london_nodes;
    eprintln!("fedgate demo: starting {london_nodes} nodes in london and {tokyo_nodes} in tokyo");
    let ddl = fleet_ddl(&args.ddl)?;
    let fleets = [
        start_fleet(
            &servers.london,
            realm(pki, "london")?,
            london_nodes,
            ddl.clone(),
        )
        .await?,
        start_fleet(&servers.tokyo, realm(pki, "tokyo")?, tokyo_nodes, ddl).await?,
    ];
    Ok((fleets, [london_nodes, tokyo_nodes]))
}

/// The two `fedgate run` instances, each with the config written for it.
async fn start_instances(
    dir: &Path,
    ports: [u16; 2],
    files: &Files,
    pki: &DevPki,
    servers: &Servers,
    legacy: Option<&LegacySite>,
) -> anyhow::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    for (index, name) in INSTANCES.iter().enumerate() {
        let config = write_instance_config(dir, name, ports[index], files, pki, servers, legacy)?;
        instances.push(Instance::spawn(dir, name, &config).await?);
    }
    Ok(instances)
}

/// An eight-hour token for each demo user.
fn issue_tokens(key: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let keys = TokenKeys::load(key)?;
    let now = std::time::SystemTime::now();
    let tokens = USERS
        .iter()
        .map(|(user, _)| {
            keys.issue(user, Duration::from_secs(8 * 3600), None, now)
                .map(|t| (*user, t))
        })
        .collect::<Result<_, _>>()?;
    Ok(tokens)
}

/// Prints the smoke run's counts; success when every node answered OK.
fn smoke_report((responses, ok): (usize, usize), nodes: usize) -> ExitCode {
    println!(
        "{}",
        serde_json::json!({"responses": responses, "ok": ok, "nodes": nodes, "instances": INSTANCES.len()})
    );
    if ok == nodes {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Keeps federation traffic going until Ctrl-C, then stops every process the demo started.
async fn serve_until_signal(
    servers: Servers,
    prod: &RealmPki,
    instances: Vec<Instance>,
    fleets: [Fleet; 2],
    legacy: Option<LegacySite>,
) {
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

impl Servers {
    /// The federation's and the two collectives' nats-servers, each on its realm's TLS.
    fn start(dir: &Path, pki: &DevPki) -> anyhow::Result<Servers> {
        let (prod, london, tokyo) = (
            realm(pki, "prod")?,
            realm(pki, "london")?,
            realm(pki, "tokyo")?,
        );
        Ok(Servers {
            prod: start_nats(dir, prod)?,
            london: start_nats(dir, london)?,
            tokyo: start_nats(dir, tokyo)?,
        })
    }
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
