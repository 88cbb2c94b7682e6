//! `fedgate demo`: the dev PKI, a TLS nats-server for a collective and a simulated fleet, with a
//! ready `fedgate rpc` command line. Ctrl-C stops everything it started.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use fedgate::client::{RpcCall, RpcClient};
use fedgate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig};
use fedgate::nats::{self, NatsEndpoint};
use fedgate::natsd::{NatsServer, NatsServerConfig};
use fedgate::security::devpki::{self, DevPki, DevPkiOptions, RealmPki};
use fedgate::security::{CaBundle, CallerId, Signer, Verifier};
use fedgate::wire::Limits;

/// Arguments of `fedgate demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the PKI, server files and the generated config.
    #[arg(long, default_value = ".fedgate-demo")]
    dir: PathBuf,
    /// Simulated nodes in the collective.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Start everything, make one RPC to every node, check all replied, and stop.
    #[arg(long)]
    smoke: bool,
}

const COLLECTIVE: &str = "london";

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
    let london = realm(&pki, COLLECTIVE)?;
    let server = start_nats(&dir, london)?;
    let fleet = start_fleet(&server, london, args.nodes).await?;
    let config = write_client_config(&dir, &server, london)?;

    if args.smoke {
        return smoke(&server, london, args.nodes, fleet).await;
    }
    print_welcome(&server, &config, args.nodes);
    super::shutdown_signal().await;
    eprintln!("\nfedgate demo: stopping");
    let stats = fleet.shutdown().await;
    eprintln!("fleet counters: {}", serde_json::to_string(&stats)?);
    drop(server);
    Ok(ExitCode::SUCCESS)
}

fn realm<'a>(pki: &'a DevPki, name: &str) -> anyhow::Result<&'a RealmPki> {
    pki.realm(name)
        .with_context(|| format!("the dev PKI has no realm {name}"))
}

fn start_nats(dir: &Path, realm: &RealmPki) -> anyhow::Result<NatsServer> {
    let config = NatsServerConfig {
        name: format!("{COLLECTIVE}-demo"),
        tls: Some(realm.nats_tls()),
        ..NatsServerConfig::default()
    };
    Ok(NatsServer::start(
        &dir.join(format!("nats-{COLLECTIVE}")),
        config,
    )?)
}

async fn start_fleet(server: &NatsServer, realm: &RealmPki, count: usize) -> anyhow::Result<Fleet> {
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
        nodes: fleet::generate(COLLECTIVE, count, &[COLLECTIVE.to_string()]),
        verifier: Verifier::with_defaults(CaBundle::from_file(&realm.ca)?, limits),
        limits,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
    };
    Ok(Fleet::start(client, config).await?)
}

fn write_client_config(
    dir: &Path,
    server: &NatsServer,
    realm: &RealmPki,
) -> anyhow::Result<PathBuf> {
    let alice = realm
        .users
        .get("alice")
        .context("the dev PKI has no user alice")?;
    let text = format!(
        "# Written by `fedgate demo`: alice's identity and the {COLLECTIVE} collective.\n\
         [client]\ncertificate = {:?}\nkey = {:?}\n\n\
         [collectives.{COLLECTIVE}]\nnats = [{:?}]\nca = {:?}\n",
        alice.cert,
        alice.key,
        server.url(),
        realm.ca,
    );
    let path = dir.join("fedgate.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn print_welcome(server: &NatsServer, config: &Path, nodes: usize) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "fedgate".into());
    let rpc = format!(
        "{exe} rpc --config {} --collective {COLLECTIVE}",
        config.display()
    );
    println!(
        "\nfedgate demo is running: {nodes} simulated nodes in collective {COLLECTIVE} on {}\n\n\
         Ping every node:\n  {rpc} rpcutil ping\n\n\
         Only the UK nodes:\n  {rpc} rpcutil ping --fact country=uk\n\n\
         Three nodes directly:\n  {rpc} rpcutil inventory --target {COLLECTIVE}-0000 --target {COLLECTIVE}-0001 --target {COLLECTIVE}-0002\n\n\
         An echo:\n  {rpc} echo echo message=hello\n\n\
         Press Ctrl-C to stop.",
        server.url()
    );
}

async fn smoke(
    server: &NatsServer,
    realm: &RealmPki,
    nodes: usize,
    fleet: Fleet,
) -> anyhow::Result<ExitCode> {
    let alice = realm.users.get("alice").context("no user alice")?;
    let endpoint = NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: Some(realm.ca.clone()),
        identity: Some((alice.cert.clone(), alice.key.clone())),
    };
    let signer = Arc::new(Signer::from_files(&alice.cert, &alice.key)?);
    let caller = CallerId::for_certname(signer.certname())?;
    let client = RpcClient::new(
        nats::connect(&endpoint, "fedgate-demo-smoke").await?,
        signer,
        caller,
        "demo".into(),
        Limits::default(),
    );
    let mut call = RpcCall::new(COLLECTIVE, "rpcutil", "ping");
    call.expect = Some(nodes);
    let summary = client.call(&call, |_| {}).await?;
    let stats = fleet.shutdown().await;
    println!(
        "{}",
        serde_json::json!({"summary": summary, "fleet": stats})
    );
    Ok(if summary.ok == nodes {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
