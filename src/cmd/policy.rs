//! `fedgate policy check`: decide one request with a policy directory, as the gateway or, with
//! `--facts`/`--classes`, as a Choria node would.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fedgate::policy::{Decision, Effect, PolicySet, Query, Vantage, authorize};
use serde_json::json;

/// Policy commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide one request; prints JSON (`allowed`, `rule`, `reason`), exits 0 when allowed and
    /// 1 when denied.
    Check(CheckArgs),
}

/// Arguments of `fedgate policy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy directory (`default.policy`, `<agent>.policy`, `<collective>/<agent>.policy`,
    /// `groups`).
    #[arg(long, value_name = "DIR")]
    policies: PathBuf,
    /// The caller id the target sees, e.g. `choria=alice.mcollective`.
    #[arg(long, value_name = "CALLERID")]
    caller: String,
    /// The agent.
    #[arg(long)]
    agent: String,
    /// The action.
    #[arg(long)]
    action: String,
    /// The target collective, for `<collective>/<agent>.policy` files.
    #[arg(long, default_value = "")]
    collective: String,
    /// The node's facts (JSON): decide as that node would.
    #[arg(long, value_name = "FILE.json")]
    facts: Option<PathBuf>,
    /// The node's classes, one per line: decide as that node would.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// What applies when no policy file does (fedgate's `[policy] unconfigured`).
    #[arg(long, value_parser = ["allow", "deny"], default_value = "deny")]
    unconfigured: String,
}

/// Runs a policy command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let unconfigured = if args.unconfigured == "allow" {
        Effect::Allow
    } else {
        Effect::Deny
    };
    let set = PolicySet::load(&args.policies, unconfigured)
        .with_context(|| format!("--policies {}", args.policies.display()))?;
    let facts = match &args.facts {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("--facts {}", path.display()))?;
            Some(
                serde_json::from_slice::<serde_json::Value>(&text)
                    .with_context(|| format!("--facts {}: not JSON", path.display()))?,
            )
        }
        None => None,
    };
    let classes = match &args.classes {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--classes {}", path.display()))?
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let vantage = if facts.is_some() || classes.is_some() {
        Vantage::Node {
            facts: facts.as_ref(),
            classes: classes.as_deref(),
        }
    } else {
        Vantage::Gateway
    };
    let query = Query {
        collective: &args.collective,
        agent: &args.agent,
        action: &args.action,
        caller: &args.caller,
    };
    let decision = authorize(&set, &query, vantage);
    let mut report = json!({
        "allowed": decision.allowed(),
        "rule": decision.source().to_string(),
        "reason": decision.reason(),
        "file": decision.source().file(),
        "vantage": if matches!(vantage, Vantage::Gateway) { "gateway" } else { "node" },
    });
    match &decision {
        Decision::Permit(permit) => {
            if let Some(restrict) = &permit.restrict {
                report["restrict"] = serde_json::to_value(restrict.as_filter())?;
            }
        }
        Decision::Denied(denied) => report["kind"] = json!(denied.kind),
    }
    println!("{report}");
    Ok(if decision.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
