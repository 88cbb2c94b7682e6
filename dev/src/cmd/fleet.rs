//! `fedgate-dev fleet`: run simulated Choria nodes, or print a node file to customise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fedgate::ddl::{DdlSet, UnknownAgents};
use fedgate::nats::{self, NatsEndpoint};
use fedgate_dev::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig, NodeSpec};

/// Fleet commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run N simulated nodes on one NATS connection until Ctrl-C, then print their counters.
    Run(Box<RunArgs>),
    /// Print generated nodes as JSON, to edit and pass back with `run --nodes`.
    Nodes(GenerateArgs),
}

/// Arguments of `fedgate-dev fleet run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Enforce actionpolicy on every node with this policy directory, checking rules against each
    /// node's own facts and classes (no file for an agent denies, as a Choria node does).
    #[arg(long, value_name = "DIR")]
    policies: Option<std::path::PathBuf>,
    /// Validate inputs on every node against the Choria JSON DDLs in this directory, as a Choria
    /// server does (an agent without a DDL runs unvalidated).
    #[arg(long, value_name = "DIR")]
    ddl: Option<PathBuf>,
    /// NATS server URL (repeatable).
    #[arg(long = "nats", required = true)]
    urls: Vec<String>,
    /// The collective's CA: verifies the NATS server and signed requests.
    #[arg(long)]
    ca: PathBuf,
    /// TLS client certificate for NATS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS client key for NATS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    #[command(flatten)]
    generate: GenerateArgs,
    /// Read nodes from this JSON file instead of generating them.
    #[arg(long, conflicts_with_all = ["count", "prefix"])]
    nodes: Option<PathBuf>,
    #[command(flatten)]
    trust: fedgate::cli::TrustArgs,
    /// Log the counters this often, in seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
}

/// Which nodes to generate.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Collective the generated nodes belong to (repeatable; the first is the main one).
    #[arg(long = "collective", default_value = "mcollective")]
    collectives: Vec<String>,
    /// Number of nodes to generate.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Identity prefix of generated nodes; defaults to the main collective.
    #[arg(long)]
    prefix: Option<String>,
}

impl GenerateArgs {
    fn nodes(&self) -> Vec<NodeSpec> {
        let prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| self.collectives[0].clone());
        fleet::generate(&prefix, self.count, &self.collectives)
    }
}

/// Runs a fleet command.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Nodes(args) => {
            let nodes = args.nodes();
            println!("{}", serde_json::to_string_pretty(&nodes)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_fleet(*args).await,
    }
}

async fn run_fleet(args: RunArgs) -> anyhow::Result<ExitCode> {
    let nodes: Vec<NodeSpec> = match &args.nodes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => args.generate.nodes(),
    };
    let endpoint = NatsEndpoint {
        urls: args.urls.clone(),
        ca: Some(args.ca.clone()).filter(|_| args.urls.iter().any(|u| u.starts_with("tls://"))),
        identity: args.cert.clone().zip(args.key.clone()),
        auth: None,
    };
    let client = nats::connect(&endpoint, "fedgate-fleet").await?;
    let limits = args.trust.limits();
    let verifier = args.trust.verifier(&args.ca)?;
    let count = nodes.len();
    let config = FleetConfig {
        nodes,
        verifier,
        limits,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        v2: None,
        policy: match &args.policies {
            Some(dir) => Some(std::sync::Arc::new(
                fedgate::policy::PolicySet::load(dir, fedgate::policy::Effect::Deny)
                    .with_context(|| format!("--policies {}", dir.display()))?,
            )),
            None => None,
        },
        ddl: match &args.ddl {
            Some(dir) => Some(std::sync::Arc::new(
                DdlSet::load(dir, UnknownAgents::Pass)
                    .with_context(|| format!("--ddl {}", dir.display()))?,
            )),
            None => None,
        },
    };
    let fleet = Fleet::start(client, config).await?;
    eprintln!(
        "fedgate-dev fleet: {count} nodes answering on {}",
        args.urls.join(",")
    );
    wait_logging_stats(&fleet, args.stats_interval).await;
    let stats = fleet.shutdown().await;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

async fn wait_logging_stats(fleet: &Fleet, interval: u64) {
    let shutdown = fedgate::cli::shutdown_signal();
    tokio::pin!(shutdown);
    if interval == 0 {
        shutdown.await;
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(interval));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {
                if let Ok(json) = serde_json::to_string(&fleet.stats()) {
                    eprintln!("fedgate-dev fleet stats: {json}");
                }
            }
        }
    }
}
