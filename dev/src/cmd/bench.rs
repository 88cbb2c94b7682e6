//! `fedgate-dev bench`: benchmarks measured side by side with their baselines, reported as ratios.

use std::process::ExitCode;
use std::time::Duration;

use fedgate_dev::bench::{self, edge, relay};

/// Arguments of `fedgate-dev bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Seconds spent on each side of each crypto comparison.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Messages per path in the relay throughput run.
    #[arg(long, default_value_t = 60_000)]
    messages: usize,
    /// Simulated nodes each edge benchmark request pings.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Idle sockets per side of the edge memory comparison.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// soak: minutes of traffic.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// soak: WebSocket requests per second.
    #[arg(long, default_value_t = 10.0)]
    ws_rate: f64,
    /// soak: federation requests per second.
    #[arg(long, default_value_t = 10.0)]
    federation_rate: f64,
    /// soak: legacy requests per second.
    #[arg(long, default_value_t = 5.0)]
    legacy_rate: f64,
    /// soak: the RabbitMQ of the legacy side.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    amqp: String,
    /// soak: where the report (soak.json, soak.md, soak-memory.svg) goes.
    #[arg(long, default_value = "target/soak")]
    out: std::path::PathBuf,
}

/// The benchmark groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// Everything.
    All,
    /// Sign and verify rates next to raw aws-lc-rs.
    Crypto,
    /// Federation relay throughput and latency next to a leafnode link and a direct publish.
    Relay,
    /// Resign-mode requests per second on one core next to raw aws-lc-rs signing.
    Resign,
    /// Actionpolicy decisions next to a hash-map lookup; audited resign next to unaudited.
    Gate,
    /// The resign path with a replay claim (in this process, and in a shared JetStream bucket)
    /// next to the same path with no guard.
    Replay,
    /// The WebSocket edge next to `fedgate rpc` on NATS and nats-server's WebSocket listener.
    Edge,
    /// Legacy requests bridged to Choria next to a raw AMQP round trip and the signing ceiling.
    Legacy,
    /// A well-behaved WebSocket client's latency while the edge is attacked (socket churn,
    /// slowloris, oversized and fragmented frames, expired tokens), next to no attack.
    Adversarial,
    /// A real user's logins and pings while the edge is flooded with logins of made-up users,
    /// with signed garbage and with a token holder's refused requests, next to no flood; and
    /// how fast each flood grows the audit trail. `--seconds` is each phase's length.
    Flood,
    /// Minutes of mixed traffic against one `fedgate run`, sampling its memory, open files,
    /// tasks and queues every second; fails if a request is lost or any of them keeps growing.
    Soak,
}

/// The JSON object `--json` prints at the end: one entry per benchmark group.
type Json = serde_json::Map<String, serde_json::Value>;

/// Runs the benchmarks.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut json = Json::new();
    if matches!(args.which, Which::All | Which::Crypto) {
        crypto(&args, &mut json).await?;
    }
    if matches!(args.which, Which::All | Which::Resign) {
        resign(&args, &mut json).await?;
    }
    if matches!(args.which, Which::All | Which::Gate) {
        gate(&args, &mut json).await?;
    }
    if matches!(args.which, Which::All | Which::Replay) {
        replay(&args, &mut json).await?;
    }
    if matches!(args.which, Which::All | Which::Relay) {
        relay(&args, &mut json).await?;
    }
    if matches!(args.which, Which::All | Which::Edge) {
        edge(&args, &mut json).await?;
    }
    if matches!(args.which, Which::Legacy) {
        legacy(&args, &mut json).await?;
    }
    if matches!(args.which, Which::Adversarial) {
        adversarial(&args, &mut json).await?;
    }
    if matches!(args.which, Which::Flood) {
        flood(&args, &mut json).await?;
    }
    if matches!(args.which, Which::Soak) && !soak(&args, &mut json).await? {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        return Ok(ExitCode::FAILURE);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps `rows` for the JSON output under `name`, or prints them as a table.
fn show_rows(args: &Args, json: &mut Json, name: &str, rows: &[bench::Row]) -> anyhow::Result<()> {
    if args.json {
        json.insert(name.into(), serde_json::to_value(rows)?);
    } else {
        println!("{}", bench::table(rows));
    }
    Ok(())
}

async fn crypto(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let budget = Duration::try_from_secs_f64(args.seconds)?;
    let rows = tokio::task::spawn_blocking(move || bench::crypto::run(budget)).await??;
    show_rows(args, json, "crypto", &rows)
}

async fn resign(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let budget = Duration::try_from_secs_f64(args.seconds)?;
    let rows = tokio::task::spawn_blocking(move || bench::resign::run(budget)).await??;
    show_rows(args, json, "resign", &rows)
}

async fn gate(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let budget = Duration::try_from_secs_f64(args.seconds)?;
    let dir = tempfile_dir()?;
    let path = dir.clone();
    let rows = tokio::task::spawn_blocking(move || bench::gate::run(budget, &path)).await??;
    let _ = std::fs::remove_dir_all(&dir);
    show_rows(args, json, "gate", &rows)
}

async fn replay(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let budget = Duration::try_from_secs_f64(args.seconds)?;
    let dir = tempfile_dir()?;
    let path = dir.clone();
    let rows = tokio::task::spawn_blocking(move || bench::replay::run(budget, &path)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows??;
    show_rows(args, json, "replay", &rows)
}

async fn relay(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let options = relay::RelayOptions {
        messages: args.messages,
        broker_exe: Some(fedgate_dev::gateway_exe()),
        ..Default::default()
    };
    let report = relay::run(&dir, &options).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        json.insert("relay".into(), serde_json::to_value(&report)?);
    } else {
        println!("{}", bench::table(&report.throughput));
        println!(
            "{}",
            relay::latency_table("latency (one way)", &report.latency)
        );
    }
    Ok(())
}

async fn edge(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let options = edge::EdgeOptions {
        nodes: args.nodes,
        seconds: args.seconds.max(1.0),
        concurrency: 16,
        latency_samples: 300,
        relay_messages: args.messages.min(20_000),
        sockets: args.sockets,
        exe: fedgate_dev::gateway_exe(),
    };
    let report = edge::run(&dir, &options).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        json.insert("edge".into(), serde_json::to_value(&report)?);
    } else {
        println!("{}", bench::table(&report.throughput));
        println!(
            "{}",
            relay::latency_table("latency (request to done)", &report.latency)
        );
        println!("{}", edge::memory_table(&report.memory));
    }
    Ok(())
}

async fn legacy(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let options = bench::legacy::LegacyOptions::default();
    let rows = bench::legacy::run(&dir, &options).await;
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows?;
    show_rows(args, json, "legacy", &rows)
}

async fn adversarial(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let options = bench::adversarial::AdversarialOptions {
        nodes: args.nodes,
        samples: 1000,
        slices: 3,
        attackers: 4,
        exe: fedgate_dev::gateway_exe(),
    };
    let report = interruptible(bench::adversarial::run(&dir, &options)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        json.insert("adversarial".into(), serde_json::to_value(&report)?);
    } else {
        println!(
            "{}",
            relay::latency_table("well-behaved client", &report.latency)
        );
        println!(
            "p99 under attack / p99 with none: {:.2}   failed requests: {}\nattack: {}",
            report.p99_ratio,
            report.failed,
            serde_json::to_string(&report.attack)?
        );
    }
    Ok(())
}

async fn flood(args: &Args, json: &mut Json) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let options = bench::flood::FloodOptions {
        nodes: args.nodes,
        seconds: args.seconds,
        flooders: 16,
        exe: fedgate_dev::gateway_exe(),
    };
    let report = interruptible(bench::flood::run(&dir, &options)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        json.insert("flood".into(), serde_json::to_value(&report)?);
    } else {
        print!("{}", bench::flood::table(&report));
    }
    Ok(())
}

/// The soak run; false when it failed.
async fn soak(args: &Args, json: &mut Json) -> anyhow::Result<bool> {
    let dir = tempfile_dir()?;
    let options = bench::soak::SoakOptions {
        duration: Duration::try_from_secs_f64(args.minutes * 60.0)?,
        ws_rate: args.ws_rate,
        federation_rate: args.federation_rate,
        legacy_rate: args.legacy_rate,
        nodes: args.nodes,
        window: 64,
        exe: fedgate_dev::gateway_exe(),
        amqp: args.amqp.clone(),
        out: args.out.clone(),
    };
    let report = interruptible(bench::soak::run(&dir, &options)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        json.insert("soak".into(), serde_json::to_value(&report)?);
    } else {
        print!("{}", report.markdown());
        println!("report: {}", args.out.join("soak.md").display());
    }
    Ok(report.passed)
}

/// Runs a benchmark until it ends or Ctrl-C, which drops it: the nats-servers and `fedgate run`
/// children it started are stopped with it instead of outliving it.
async fn interruptible<T>(
    run: impl std::future::Future<Output = Result<T, bench::BenchError>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = run => Ok(result?),
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the processes it started were stopped"),
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fedgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
