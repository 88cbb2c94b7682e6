//! `fedgate ws-rpc`: the same call as `fedgate rpc`, made through fedgate's WebSocket edge with a
//! token, a client certificate, or a request signed here with a certificate from the edge CA.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use fedgate::client::{Ended, ReplyEvent, Summary};
use fedgate::edge::client::{Connect, SignedCall, WsClient, sign_request, signed_message};
use fedgate::security::{CallerId, Now, Signer};
use fedgate::wire::choria_v1::Filter;
use serde_json::{Map, Value, json};

use super::rpc::{CallArgs, parse_inputs, print_reply, print_summary};

/// Arguments of `fedgate ws-rpc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The edge's socket URL, `wss://host:port/ws`.
    #[arg(long)]
    url: String,
    /// A bearer token (`fedgate token issue`, or `POST /login`).
    #[arg(long, env = "FEDGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client certificate from the edge CA (with --key): mTLS, or with --sign the signer.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Sign each request here with --cert as a Choria v1 secure request, on a socket without
    /// credentials.
    #[arg(long, requires = "cert")]
    sign: bool,
    /// CA of the edge's server certificate; the system's web roots when unset.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Collective to call.
    #[arg(
        long,
        conflicts_with = "federation",
        required_unless_present = "federation"
    )]
    collective: Option<String>,
    /// Federation to call: every member collective the edge reaches.
    #[arg(long)]
    federation: Option<String>,
    /// What to call and on which nodes.
    #[command(flatten)]
    call: CallArgs,
    /// Seconds to wait for replies.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Stop after this many replies.
    #[arg(long)]
    expect: Option<usize>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Makes the call; exit 0 when every reply is OK and nothing is missing, 1 otherwise.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = args.cert.clone().zip(args.key.clone());
    let mut client = connect(&args, identity.clone()).await?;
    let timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout")?;
    let filter = filter(&args)?;
    let data = parse_inputs(&args.call.inputs)?;
    let collect = collect(&args, timeout);
    let request = if args.sign {
        signed_request(&args, identity.as_ref(), data, filter, collect)?
    } else {
        plain_request(&args, data, &filter, collect)?
    };
    let json = args.json;
    let end = client
        .call(&request, |reply| print_reply(&reply_event(reply), json))
        .await?;
    client.close().await;
    finish(&end, json)
}

/// Opens the socket: with the token, with the client certificate unless it signs requests.
async fn connect(args: &Args, identity: Option<(PathBuf, PathBuf)>) -> anyhow::Result<WsClient> {
    let options = Connect {
        url: args.url.clone(),
        token: args.token.clone(),
        identity: if args.sign { None } else { identity },
        ca: args.ca.clone(),
        signed_only: args.sign,
        ..Connect::default()
    };
    WsClient::connect(&options)
        .await
        .with_context(|| format!("connecting to {}", args.url))
}

/// How the edge collects the replies: the timeout, the targets and the reply limit.
fn collect(args: &Args, timeout: Duration) -> Map<String, Value> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let mut collect = Map::new();
    collect.insert("timeout_ms".into(), json!(timeout_ms));
    collect.insert("targets".into(), json!(args.call.targets));
    if let Some(limit) = args.expect {
        collect.insert("limit".into(), json!(limit));
    }
    collect
}

/// A Choria v1 secure request signed here with `identity`, as the edge's signed message.
fn signed_request(
    args: &Args,
    identity: Option<&(PathBuf, PathBuf)>,
    data: Map<String, Value>,
    filter: Filter,
    collect: Map<String, Value>,
) -> anyhow::Result<Value> {
    let Some((cert, key)) = identity else {
        bail!("--sign needs --cert and --key");
    };
    let Some(collective) = &args.collective else {
        bail!("--sign needs --collective: a signed request names its collective");
    };
    let signer = Signer::from_files(cert, key)?;
    let caller = CallerId::parse(&format!("choria={}", signer.certname()))?;
    let call = SignedCall {
        collective,
        agent: &args.call.agent,
        action: &args.call.action,
        data,
        filter,
        ttl: 60,
    };
    let secure = sign_request(&signer, &caller, &fedgate::hostname(), &call, Now::system())?;
    Ok(signed_message("ws-rpc", &secure, collect))
}

/// An `rpc` message for the edge to sign as the socket's caller.
fn plain_request(
    args: &Args,
    data: Map<String, Value>,
    filter: &Filter,
    collect: Map<String, Value>,
) -> anyhow::Result<Value> {
    if !filter.compound.is_empty() {
        bail!(
            "--select needs a signed request (--cert and --key): the edge's rpc message has no compound filter"
        );
    }
    let mut message = json!({
        "type": "rpc",
        "id": "ws-rpc",
        "agent": args.call.agent,
        "action": args.call.action,
        "data": data,
        "filter": {"fact": filter.fact, "cf_class": filter.cf_class, "identity": filter.identity},
    });
    if let Value::Object(fields) = &mut message {
        match (&args.collective, &args.federation) {
            (Some(c), _) => fields.insert("collective".into(), json!(c)),
            (None, Some(f)) => fields.insert("federation".into(), json!(f)),
            (None, None) => bail!("give --collective or --federation"),
        };
        fields.extend(collect);
    }
    Ok(message)
}

/// Prints the summary of the call's last frame, `end`, and gives the exit code.
fn finish(end: &Value, json: bool) -> anyhow::Result<ExitCode> {
    if end["type"] == "error" {
        bail!(
            "{}: {}",
            end["code"].as_str().unwrap_or("error"),
            end["message"].as_str().unwrap_or("")
        );
    }
    let summary = summary(end);
    print_summary(&summary, json)?;
    if let Some(refused) = end["refused"].as_object() {
        for (collective, why) in refused {
            eprintln!("{collective}: {}", why.as_str().unwrap_or_default());
        }
    }
    let clean = summary.responses > 0 && summary.failed == 0 && summary.missing.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn filter(args: &Args) -> anyhow::Result<Filter> {
    let fact = args.call.fact_filters()?;
    Ok(Filter {
        fact,
        cf_class: args.call.classes.clone(),
        identity: args.call.identities.clone(),
        compound: args.call.compound(),
        ..Filter::default()
    })
}

fn reply_event(reply: fedgate::edge::client::Reply) -> ReplyEvent {
    let message = reply.message;
    ReplyEvent {
        sender: message["sender"].as_str().unwrap_or_default().to_string(),
        statuscode: message["statuscode"].as_i64().unwrap_or(-1),
        statusmsg: message["statusmsg"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        data: message["data"].clone(),
        elapsed: reply.elapsed,
    }
}

fn summary(done: &Value) -> Summary {
    let count = |field: &str| {
        done[field]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    };
    let strings = |field: &str| -> Vec<String> {
        done[field]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Summary {
        requestids: strings("requestids"),
        published: strings("requestids").len(),
        responses: count("responses"),
        ok: count("ok"),
        failed: count("failed"),
        invalid: 0,
        duplicates: 0,
        missing: strings("missing"),
        elapsed: Duration::from_millis(done["elapsed_ms"].as_u64().unwrap_or(0)),
        // An edge that does not say (before `ended` existed) is taken at its word: complete.
        ended: serde_json::from_value::<Ended>(done["ended"].clone()).unwrap_or_default(),
    }
}
