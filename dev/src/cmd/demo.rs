//! `fedgate-dev demo`: the whole topology on this machine. The dev PKI; TLS nats-servers for the
//! federation `prod` and the collectives `london` and `tokyo`, each with its own CA, and `osaka`,
//! a Choria protocol v2 collective with its own token issuer on tokyo's network; simulated
//! fleets in all three; two `fedgate run` instances that share the federation's work,
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
use fedgate::legacy::site::LegacySite;
use fedgate::nats::{self, NatsEndpoint};
use fedgate::security::{CaBundle, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::mcollective::Serializer;
use fedgate_dev::devpki::{self, DevPki, DevPkiOptions, RealmPki};
use fedgate_dev::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig};
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};

use config::{Files, write_client_config, write_federation_client_config, write_instance_config};
use fedgate_dev::testing::v2::V2Org;
use instance::Instance;

/// Arguments of `fedgate-dev demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the PKI, server files, configs, logs and audit trails.
    #[arg(long, default_value = ".fedgate-demo")]
    dir: PathBuf,
    /// Simulated Choria nodes in all (three fifths in london, a fifth in osaka, the rest in
    /// tokyo).
    #[arg(long, default_value_t = 300)]
    nodes: usize,
    /// The first instance's web port; the second uses the next one. 0 picks free ports.
    #[arg(long, default_value_t = 8480)]
    port: u16,
    /// Serve the web page from this folder (a Vite build of web-demo) instead of the console
    /// built into the binary.
    #[arg(long)]
    web_root: Option<PathBuf>,
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
    /// The legacy site's serializer (`plugin.ssl_serializer`): `marshal`, MCollective's
    /// default, or `yaml`, which sites with clients in other languages run.
    #[arg(long, default_value = "marshal", value_parser = parse_serializer)]
    legacy_serializer: Serializer,
}

fn parse_serializer(text: &str) -> Result<Serializer, String> {
    match text {
        "marshal" => Ok(Serializer::Marshal),
        "yaml" => Ok(Serializer::Yaml),
        other => Err(format!("{other:?} is not marshal or yaml")),
    }
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
/// The Choria protocol v2 collective, on tokyo's NATS network.
const OSAKA: &str = "osaka";
/// How long the v2 organization's tokens (fedgate's, its servers') are valid: its keys are
/// made afresh on every start.
const V2_TOKEN_VALIDITY: i64 = 30 * 24 * 3600;
/// Runs the demo until Ctrl-C (or once, with `--smoke`).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Listened for before anything starts. The demo's children run in process groups of their
    // own, so a terminal's Ctrl-C reaches only the demo, which stops them in order: the fedgate
    // instances drain while their nats-servers are still up. One during start-up drops (kills)
    // what was started.
    let mut shutdown = fedgate::cli::Shutdown::listen()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let topology = tokio::select! {
        topology = Topology::start(&dir, &args) => topology?,
        () = shutdown.recv() => {
            eprintln!("\nfedgate demo: stopped while starting");
            return Ok(ExitCode::from(130));
        }
    };
    let tokens = issue_tokens(&topology.files.token_key)?;
    let client_config = write_client_config(
        &dir,
        &topology.pki,
        &topology.servers,
        topology.legacy.is_some(),
    )?;
    let federation_config = write_federation_client_config(&dir, &topology.pki, &topology.servers)?;
    let edge = realm(&topology.pki, "edge")?.clone();
    let state = demo_state(
        &topology.instances,
        &tokens,
        topology.nodes,
        topology.legacy.is_some(),
        topology.files.page,
        &edge,
    )?;
    if let Some(path) = &args.state_file {
        std::fs::write(path, serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    if args.smoke {
        let token = &tokens[0].1;
        let ws_url = &topology.instances[0].ws_url;
        let prod = realm(&topology.pki, "prod")?.clone();
        let prod_url = topology.servers.prod.url().to_string();
        let osaka_nodes = topology.nodes[2];
        let checks = async {
            let result = smoke(ws_url, &edge.ca, token, args.nodes).await;
            let legacy_result = match &topology.legacy {
                Some(site) => Some(smoke_legacy(site, ws_url, &edge.ca, token).await),
                None => None,
            };
            let v2 = smoke_v2(prod_url, prod, osaka_nodes).await;
            (result, legacy_result, v2)
        };
        let (result, legacy_result, v2) = tokio::select! {
            checks = checks => checks,
            () = shutdown.recv() => {
                topology.stop().await;
                return Ok(ExitCode::from(130));
            }
        };
        let bridged = topology.nodes[0] + topology.nodes[1];
        topology.stop().await;
        let legacy_result = legacy_result.transpose()?;
        return Ok(smoke_report(
            result?,
            legacy_result,
            v2?,
            (args.nodes, bridged),
        ));
    }
    welcome::print_welcome(
        &state,
        &tokens,
        (&client_config, &federation_config),
        &topology.files,
        topology.legacy.as_ref(),
    );
    // A Choria federation client, so the two instances visibly share the broker's work.
    let prod = realm(&topology.pki, "prod")?.clone();
    let background = tokio::spawn(federation_traffic(
        topology.servers.prod.url().to_string(),
        prod,
    ));
    shutdown.recv().await;
    background.abort();
    eprintln!();
    topology.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Everything the demo runs: the dev PKI, the nats-servers, the simulated fleets, the legacy
/// site and the fedgate instances.
struct Topology {
    pki: DevPki,
    servers: Servers,
    fleets: [Fleet; 3],
    /// Simulated nodes in london, tokyo and osaka.
    nodes: [usize; 3],
    legacy: Option<LegacySite>,
    files: Files,
    instances: Vec<Instance>,
}

impl Topology {
    async fn start(dir: &Path, args: &Args) -> anyhow::Result<Topology> {
        eprintln!(
            "fedgate-dev demo: preparing the dev PKI in {}",
            dir.join("pki").display()
        );
        let pki = devpki::generate(&dir.join("pki"), &DevPkiOptions::default())?;
        let servers = Servers::start(dir, &pki)?;
        let osaka = V2Org::generate(&dir.join(OSAKA), V2_TOKEN_VALIDITY)
            .map_err(anyhow::Error::msg)
            .context("osaka's v2 organization")?;
        let (fleets, nodes) = start_fleets(args, &pki, &servers, &osaka).await?;
        let legacy = legacy_site(dir, args).await;
        let ports = ports(args.port)?;
        let files = Files::prepare(dir, args, legacy.is_some())?;
        let instances = start_instances(
            dir,
            ports,
            &files,
            (&pki, &servers, &osaka),
            legacy.as_ref(),
        )
        .await?;
        Ok(Topology {
            pki,
            servers,
            fleets,
            nodes,
            legacy,
            files,
            instances,
        })
    }

    /// Stops everything in order, saying what it stops: the instances drain together (their
    /// nats-servers still up, so in-flight replies reach their callers), then the fleets, the
    /// legacy site and last the nats-servers.
    async fn stop(self) {
        let began = std::time::Instant::now();
        let names: Vec<&str> = self.instances.iter().map(|i| i.name.as_str()).collect();
        eprintln!(
            "fedgate-dev demo: stopping: draining {} (at most {} s)",
            names.join(" and "),
            instance::STOP_WAIT.as_secs()
        );
        futures::future::join_all(self.instances.into_iter().map(Instance::stop)).await;
        eprintln!("fedgate-dev demo: stopping the simulated fleets");
        for fleet in self.fleets {
            fleet.shutdown().await;
        }
        if let Some(legacy) = self.legacy {
            eprintln!(
                "fedgate-dev demo: stopping the legacy site (mcollectived, its RabbitMQ vhost)"
            );
            drop(legacy);
        }
        eprintln!("fedgate-dev demo: stopping the nats-servers");
        drop(self.servers);
        eprintln!(
            "fedgate-dev demo: stopped in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
}

/// The simulated fleets: three fifths of the nodes in london, a fifth in osaka (v2 servers of
/// its organization, on tokyo's network), the rest in tokyo; gives back the three counts too.
async fn start_fleets(
    args: &Args,
    pki: &DevPki,
    servers: &Servers,
    osaka: &V2Org,
) -> anyhow::Result<([Fleet; 3], [usize; 3])> {
    let london_nodes = (args.nodes * 3).div_ceil(5);
    let osaka_nodes = args.nodes / 5;
    let tokyo_nodes = args.nodes - london_nodes - osaka_nodes;
    eprintln!(
        "fedgate-dev demo: starting {london_nodes} nodes in london, {tokyo_nodes} in tokyo and {osaka_nodes} in {OSAKA} (Choria protocol v2)"
    );
    let ddl = fleet_ddl(&args.ddl)?;
    let tokyo = realm(pki, "tokyo")?;
    let fleets = [
        start_fleet(
            &servers.london,
            realm(pki, "london")?,
            Nodes::v1("london", london_nodes),
            ddl.clone(),
        )
        .await?,
        start_fleet(
            &servers.tokyo,
            tokyo,
            Nodes::v1("tokyo", tokyo_nodes),
            ddl.clone(),
        )
        .await?,
        start_fleet(
            &servers.tokyo,
            tokyo,
            Nodes {
                collective: OSAKA,
                count: osaka_nodes,
                v2: Some(osaka.fleet_v2(Limits::default())),
            },
            ddl,
        )
        .await?,
    ];
    Ok((fleets, [london_nodes, tokyo_nodes, osaka_nodes]))
}

/// One simulated fleet: its collective, its size, and for a v2 collective what its servers
/// verify with and sign with.
struct Nodes {
    collective: &'static str,
    count: usize,
    v2: Option<fleet::FleetV2>,
}

impl Nodes {
    fn v1(collective: &'static str, count: usize) -> Nodes {
        Nodes {
            collective,
            count,
            v2: None,
        }
    }
}

/// The two `fedgate run` instances, each with the config written for it.
async fn start_instances(
    dir: &Path,
    ports: [u16; 2],
    files: &Files,
    (pki, servers, osaka): (&DevPki, &Servers, &V2Org),
    legacy: Option<&LegacySite>,
) -> anyhow::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    for (index, name) in INSTANCES.iter().enumerate() {
        let config =
            write_instance_config(dir, name, ports[index], files, pki, servers, osaka, legacy)?;
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

/// Prints the smoke run's counts; success when every node answered OK, and, with a legacy site,
/// when `mco ping` heard every node and its nodes answered Choria clients.
/// `bridged` is how many nodes the legacy bridge reaches: those of the v1 collectives.
fn smoke_report(
    (responses, ok, ended): (usize, usize, String),
    legacy: Option<LegacySmoke>,
    v2: V2Smoke,
    (nodes, bridged): (usize, usize),
) -> ExitCode {
    let legacy_ok = legacy.as_ref().is_none_or(|l| {
        l.mco_ping == bridged + LEGACY_NODES.len() && l.choria_ok == LEGACY_NODES.len()
    });
    let v2_ok = v2.federation_ok == v2.nodes;
    println!(
        "{}",
        serde_json::json!({"responses": responses, "ok": ok, "ended": ended, "nodes": nodes, "instances": INSTANCES.len(), "legacy": legacy, "v2": v2})
    );
    if ok == nodes && legacy_ok && v2_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `--state-file` holds and the welcome text reads: URLs, tokens, passwords, node counts,
/// and the edge CA with alice's edge certificate.
fn demo_state(
    instances: &[Instance],
    tokens: &[(&str, String)],
    [london, tokyo, osaka]: [usize; 3],
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
        "collectives": {"london": london, "tokyo": tokyo, OSAKA: osaka},
        "v2": [OSAKA],
        "legacy": legacy.then(|| serde_json::json!({
            "collective": LEGACY,
            "nodes": LEGACY_NODES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        })),
        "federations": {"prod": ["london", "tokyo", OSAKA]},
        "directed": (1..=3).map(|i| format!("london-{i:04}")).collect::<Vec<_>>(),
        "web_page": web_page,
        "edge": {"ca": edge.ca, "user": "alice", "cert": edge_user.cert, "key": edge_user.key},
    }))
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
        own_process_group: true,
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
    nodes: Nodes,
    ddl: Option<Arc<DdlSet>>,
) -> anyhow::Result<Fleet> {
    let Some(identity) = &realm.fleet else {
        bail!("realm {} has no fleet certificate", realm.name);
    };
    let endpoint = NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: Some(realm.ca.clone()),
        identity: Some((identity.cert.clone(), identity.key.clone())),
        auth: None,
    };
    let client = nats::connect(&endpoint, "fedgate-demo-fleet").await?;
    let limits = Limits::default();
    let config = FleetConfig {
        policy: None,
        ddl,
        nodes: fleet::generate(nodes.collective, nodes.count, &[nodes.collective.into()]),
        // A v2 fleet verifies with `v2` instead.
        verifier: Verifier::with_defaults(CaBundle::from_file(&realm.ca)?, limits),
        limits,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        v2: nodes.v2,
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
            "fedgate-dev demo: no legacy site (it needs RabbitMQ with STOMP on 127.0.0.1:61613 and Debian's mcollective; scripts/setup-deps installs them)"
        );
        return None;
    }
    eprintln!(
        "fedgate-dev demo: starting the legacy site {LEGACY} (real mcollectived on RabbitMQ)"
    );
    let started = async {
        let vhost = format!("/fedgate-demo-{}", std::process::id());
        let mut site =
            LegacySite::create(&dir.join("legacy"), &vhost, args.legacy_serializer).await?;
        for (identity, facts) in LEGACY_NODES {
            site.start_node(identity, facts)?;
        }
        Ok::<_, fedgate::legacy::site::SiteError>(site)
    };
    match started.await {
        Ok(site) => Some(site),
        Err(err) => {
            eprintln!("fedgate-dev demo: no legacy site: {err}");
            None
        }
    }
}

/// A Choria client of the federation: prod's alice, through the brokers.
async fn federation_client(url: String, prod: &RealmPki) -> Option<fedgate::client::RpcClient> {
    let alice = prod.users.get("alice")?;
    let endpoint = NatsEndpoint {
        urls: vec![url],
        ca: Some(prod.ca.clone()),
        identity: Some((alice.cert.clone(), alice.key.clone())),
        auth: None,
    };
    let (Ok(nats), Ok(signer)) = (
        nats::connect(&endpoint, "fedgate-demo-federation-client").await,
        fedgate::security::Signer::from_files(&alice.cert, &alice.key),
    ) else {
        return None;
    };
    let caller = fedgate::security::CallerId::for_certname(signer.certname()).ok()?;
    Some(fedgate::client::RpcClient::new(
        nats,
        std::sync::Arc::new(signer),
        caller,
        "fedgate-demo".into(),
        Limits::default(),
    ))
}

/// `rpcutil ping` of `collective` through the federation `prod`.
fn federated_ping(collective: &str, timeout: Duration) -> fedgate::client::RpcCall {
    fedgate::client::RpcCall {
        federation: Some("prod".into()),
        timeout,
        ..fedgate::client::RpcCall::new(collective, "rpcutil", "ping")
    }
}

/// Every 5 s, prod's alice pings every collective through the Federation Broker, as a Choria
/// client with `plugin.choria.federation.collectives = prod` does.
async fn federation_traffic(url: String, prod: RealmPki) {
    let Some(client) = federation_client(url, &prod).await else {
        eprintln!("fedgate-dev demo: the background federation client could not start");
        return;
    };
    let calls: Vec<_> = ["london", "tokyo", OSAKA]
        .into_iter()
        .map(|collective| federated_ping(collective, Duration::from_secs(4)))
        .collect();
    loop {
        let _ = client.call_many(&calls, |_| {}).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// What the smoke run saw of the v2 collective through the federation.
#[derive(Debug, serde::Serialize)]
struct V2Smoke {
    collective: &'static str,
    /// Its nodes.
    nodes: usize,
    /// Those that answered OK a v1 client of the federation (the broker re-signed the request
    /// as v2 and translated each reply back).
    federation_ok: usize,
}

/// prod's alice, a v1 client, pings osaka's v2 nodes through the Federation Broker.
async fn smoke_v2(url: String, prod: RealmPki, nodes: usize) -> anyhow::Result<V2Smoke> {
    let client = federation_client(url, &prod)
        .await
        .context("the federation client could not start")?;
    let mut call = federated_ping(OSAKA, Duration::from_secs(30));
    call.expect = Some(nodes);
    let summary = client.call(&call, |_| {}).await?;
    Ok(V2Smoke {
        collective: OSAKA,
        nodes,
        federation_ok: summary.ok,
    })
}

/// What the smoke run saw of the legacy site.
#[derive(Debug, serde::Serialize)]
struct LegacySmoke {
    serializer: Serializer,
    /// Nodes the real `mco ping` heard: the federation's through the bridge, and the site's.
    mco_ping: usize,
    /// The site's nodes that answered OK a Choria client on the edge.
    choria_ok: usize,
}

/// Both ways across the legacy site: the real `mco ping` (to every node of the federation and
/// the site), and `rpcutil ping` to the legacy collective through the edge.
async fn smoke_legacy(
    site: &LegacySite,
    ws_url: &str,
    ca: &Path,
    token: &str,
) -> anyhow::Result<LegacySmoke> {
    let mut mco = site.mco_command(&["ping", "--dt", "5"]);
    let output = tokio::task::spawn_blocking(move || mco.output())
        .await?
        .context("running mco (scripts/setup-deps installs mcollective-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mco_ping = stdout.lines().filter(|line| line.contains("time=")).count();
    let mut client = WsClient::connect(&Connect {
        url: ws_url.to_string(),
        token: Some(token.to_string()),
        ca: Some(ca.to_path_buf()),
        ..Connect::default()
    })
    .await?;
    let mut choria_ok = 0;
    client
        .call(
            &serde_json::json!({"type":"rpc","id":"smoke-legacy","collective":LEGACY,"agent":"rpcutil","action":"ping","limit":LEGACY_NODES.len(),"timeout_ms":30000}),
            |reply| {
                if reply.message["statuscode"] == 0 {
                    choria_ok += 1;
                }
            },
        )
        .await?;
    client.close().await;
    Ok(LegacySmoke {
        serializer: site.serializer,
        mco_ping,
        choria_ok,
    })
}

/// Pings every node over the federation through the first instance's edge: the replies, those
/// with status 0, and why the edge stopped collecting (`complete` when the limit was reached).
async fn smoke(
    ws_url: &str,
    ca: &Path,
    token: &str,
    nodes: usize,
) -> anyhow::Result<(usize, usize, String)> {
    let mut client = WsClient::connect(&Connect {
        url: ws_url.to_string(),
        token: Some(token.to_string()),
        ca: Some(ca.to_path_buf()),
        ..Connect::default()
    })
    .await?;
    let (mut responses, mut ok) = (0, 0);
    let done = client
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
    let ended = done["ended"].as_str().unwrap_or("unknown").to_string();
    Ok((responses, ok, ended))
}
