//! `fedgate rpc`: sign a request as a certificate user, publish it, stream verified replies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fedgate::client::{ReplyEvent, RpcCall, RpcClient, Summary};
use fedgate::config::Config;
use fedgate::nats::{self, NatsEndpoint};
use fedgate::security::{CallerId, Signer};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::FactFilter;
use serde_json::{Map, Value};

/// Arguments of `fedgate rpc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file with `[client]` and `[collectives.NAME]`.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Collective to send to (repeatable: one request per collective, replies merged).
    #[arg(long = "collective", required = true)]
    collectives: Vec<String>,
    /// Send through this federation's brokers (a `[federations.NAME]` in the config).
    #[arg(long)]
    federation: Option<String>,
    /// Node targets per federated message; defaults to the federation's batch_size (200).
    #[arg(long)]
    batch: Option<usize>,
    /// What to call and on which nodes.
    #[command(flatten)]
    call: CallArgs,
    /// Signing certificate; overrides the config.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Signing key; overrides the config.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Caller id to send; defaults to choria=<certificate CN>.
    #[arg(long)]
    callerid: Option<String>,
    /// NATS URL; overrides the config.
    #[arg(long = "nats")]
    urls: Vec<String>,
    /// CA bundle for NATS TLS; overrides the config.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Request TTL in seconds.
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Seconds to wait for replies.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Stop after this many replies.
    #[arg(long)]
    expect: Option<usize>,
    /// For broadcasts: stop once no reply arrived for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    idle: f64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// What to call and on which nodes; shared by `rpc` and `ws-rpc`.
#[derive(Debug, clap::Args)]
pub(super) struct CallArgs {
    /// Agent name.
    pub agent: String,
    /// Action name.
    pub action: String,
    /// Inputs as key=value; a value that parses as JSON (5, true, [1]) is sent as JSON, else as a string.
    pub inputs: Vec<String>,
    /// Address these identities directly (repeatable); otherwise broadcast.
    #[arg(long = "target", value_name = "ID")]
    pub targets: Vec<String>,
    /// Fact filter such as country=uk or cpus>=4 (repeatable, ANDed).
    #[arg(long = "fact", value_name = "FACT")]
    pub facts: Vec<String>,
    /// Class filter (repeatable, ANDed).
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<String>,
    /// Identity filter, /regex/ allowed (repeatable, ORed).
    #[arg(long = "identity", value_name = "ID")]
    pub identities: Vec<String>,
    /// Compound filter, an expr-lang expression such as `with("country=uk") && ("web" in
    /// classes)` (repeatable; each is one group).
    #[arg(long = "select", short = 'S', value_name = "EXPR")]
    pub selects: Vec<String>,
}

impl CallArgs {
    /// The fact filters, parsed.
    pub fn fact_filters(&self) -> anyhow::Result<Vec<FactFilter>> {
        self.facts
            .iter()
            .map(|f| FactFilter::parse(f).map_err(anyhow::Error::msg))
            .collect()
    }

    /// The compound filter groups, one `{"expr"}` each.
    pub fn compound(&self) -> Vec<Vec<std::collections::BTreeMap<String, String>>> {
        self.selects
            .iter()
            .map(|e| {
                vec![std::collections::BTreeMap::from([(
                    "expr".to_string(),
                    e.clone(),
                )])]
            })
            .collect()
    }
}

/// Makes the call; exit 0 when every reply is OK and nothing is missing, 1 otherwise.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let client = config.as_ref().and_then(|c| c.client.clone());
    let (cert, key) = match (&args.cert, &args.key, &client) {
        (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
        (_, _, Some(client)) => (client.certificate.clone(), client.key.clone()),
        _ => bail!("no signing certificate: give --cert and --key, or a config with [client]"),
    };
    let signer = Arc::new(Signer::from_files(&cert, &key)?);
    let callerid = args
        .callerid
        .clone()
        .or_else(|| client.as_ref().and_then(|c| c.callerid.clone()))
        .unwrap_or_else(|| format!("choria={}", signer.certname()));
    let caller = CallerId::parse(&callerid)?;
    let senderid = client
        .as_ref()
        .and_then(|c| c.identity.clone())
        .unwrap_or_else(fedgate::hostname);
    let endpoint = endpoint(&args, config.as_ref(), (cert, key))?;
    let nats = nats::connect(&endpoint, "fedgate-rpc").await?;
    let rpc = RpcClient::new(nats, signer, caller, senderid, Limits::default());
    let calls = build_calls(&args, config.as_ref())?;
    let json = args.json;
    let summary = rpc
        .call_many(&calls, |event| print_reply(event, json))
        .await?;
    print_summary(&summary, json)?;
    let clean = summary.responses > 0
        && summary.failed == 0
        && summary.invalid == 0
        && summary.missing.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn endpoint(
    args: &Args,
    config: Option<&Config>,
    identity: (PathBuf, PathBuf),
) -> anyhow::Result<NatsEndpoint> {
    let (name, configured) = match &args.federation {
        Some(federation) => {
            let fed = config
                .and_then(|c| c.federation(federation))
                .with_context(|| format!("no [federations.{federation}] in the config"))?;
            (
                format!("federations.{federation}"),
                Some((fed.nats.clone(), fed.ca.clone(), fed.auth.clone())),
            )
        }
        None => {
            let collective = &args.collectives[0];
            let col = config.and_then(|c| c.collective(collective));
            (
                format!("collectives.{collective}"),
                col.map(|c| (c.nats.clone(), c.ca.clone(), c.auth.clone())),
            )
        }
    };
    let urls = if args.urls.is_empty() {
        configured.as_ref().map(|c| c.0.clone()).unwrap_or_default()
    } else {
        args.urls.clone()
    };
    if urls.is_empty() {
        bail!("no NATS server: give --nats or a config with [{name}]");
    }
    let (configured_ca, auth) = configured.map_or((None, None), |c| (c.1, c.2));
    let ca = args.ca.clone().or(configured_ca);
    if ca.is_none() && urls.iter().any(|u| u.starts_with("tls://")) {
        bail!("a tls:// server needs a CA: give --ca or a config with [{name}] ca");
    }
    Ok(NatsEndpoint {
        urls,
        ca,
        identity: Some(identity),
        auth,
    })
}

fn build_calls(args: &Args, config: Option<&Config>) -> anyhow::Result<Vec<RpcCall>> {
    let federation = match &args.federation {
        Some(name) => {
            let fed = config
                .and_then(|c| c.federation(name))
                .with_context(|| format!("no [federations.{name}] in the config"))?;
            Some((
                fed.cluster_name(name).to_string(),
                args.batch.unwrap_or(fed.batch_size),
            ))
        }
        None => None,
    };
    let facts = args.call.fact_filters()?;
    let mut calls = Vec::new();
    for collective in &args.collectives {
        let mut call = RpcCall::new(collective, &args.call.agent, &args.call.action);
        call.data = parse_inputs(&args.call.inputs)?;
        call.targets = args.call.targets.clone();
        call.ttl = args.ttl;
        call.timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout")?;
        call.idle = Duration::try_from_secs_f64(args.idle).context("--idle")?;
        call.expect = args.expect;
        call.filter.cf_class = args.call.classes.clone();
        call.filter.identity = args.call.identities.clone();
        call.filter.fact = facts.clone();
        call.filter.compound = args.call.compound();
        if let Some((cluster, batch)) = &federation {
            call.federation = Some(cluster.clone());
            call.batch_size = *batch;
        }
        calls.push(call);
    }
    Ok(calls)
}

pub(super) fn parse_inputs(inputs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut data = Map::new();
    for input in inputs {
        let Some((key, value)) = input.split_once('=') else {
            bail!("input {input:?} is not key=value");
        };
        if key.is_empty() {
            bail!("input {input:?} has an empty key");
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        data.insert(key.to_string(), value);
    }
    Ok(data)
}

pub(super) fn print_reply(event: &ReplyEvent, json: bool) {
    if json {
        let line = serde_json::json!({"type": "reply", "reply": event});
        println!("{line}");
        return;
    }
    let status = if event.statuscode == 0 {
        "OK".to_string()
    } else {
        format!("{} ({})", event.statusmsg, event.statuscode)
    };
    println!("{:<32} {:<8} {}", event.sender, status, event.data);
}

pub(super) fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::json!({"type": "summary", "summary": summary})
        );
        return Ok(());
    }
    println!();
    println!(
        "responses: {}  ok: {}  failed: {}  invalid: {}  published: {}  elapsed: {}ms  ended: {}",
        summary.responses,
        summary.ok,
        summary.failed,
        summary.invalid,
        summary.published,
        summary.elapsed.as_millis(),
        summary.ended.as_str()
    );
    if !summary.missing.is_empty() {
        println!("missing: {}", summary.missing.join(", "));
    }
    Ok(())
}
