//! `fedgate registry`: publish, compare, list and restore registry revisions, and show which
//! revision each instance runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use fedgate::config::Config;
use fedgate::registry::{Manifest, Registry, Set, unix_now, validate, validate_set};

/// `fedgate registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a set directory as start-up would, then publish it as the next revision.
    Push {
        #[command(flatten)]
        common: Common,
        /// The set: policies/, identity.toml, users.toml, config.toml.
        dir: PathBuf,
        /// Why, recorded in the revision.
        #[arg(long, short, default_value = "")]
        message: String,
    },
    /// Show what pushing a set directory would change (and whether it validates).
    Diff {
        #[command(flatten)]
        common: Common,
        /// The set directory.
        dir: PathBuf,
    },
    /// List the revisions, oldest first.
    History {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish an earlier revision's documents again, as the next revision.
    Rollback {
        #[command(flatten)]
        common: Common,
        /// The revision to restore.
        revision: u64,
        /// Why, recorded in the revision.
        #[arg(long, short, default_value = "")]
        message: String,
    },
    /// Which revision each instance runs, and when it last heard from the registry.
    Status {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What every subcommand needs.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// A config with [registry]; sets are validated against it.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
}

impl Common {
    /// Loads the config and connects; only a push creates missing buckets.
    async fn open(&self, create: bool) -> anyhow::Result<(Config, Registry)> {
        let config = Config::load(&self.config)?;
        let settings = config
            .registry
            .as_ref()
            .with_context(|| format!("{} has no [registry]", self.config.display()))?;
        let wait = std::time::Duration::from_millis(settings.timeout_ms.max(1000));
        let registry = tokio::time::timeout(
            wait,
            Registry::connect(settings, "fedgate-registry", create),
        )
        .await
        .map_err(|_| anyhow::anyhow!("registry unreachable: no answer in {wait:?}"))??;
        Ok((config, registry))
    }
}

/// Runs one subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Push {
            common,
            dir,
            message,
        } => push(&common, &dir, &message).await,
        Command::Diff { common, dir } => diff(&common, &dir).await,
        Command::History { common, json } => history(&common, json).await,
        Command::Rollback {
            common,
            revision,
            message,
        } => rollback(&common, revision, message).await,
        Command::Status { common, json } => status(&common, json).await,
    }
}

/// Validates the set directory `dir` and publishes it as the next revision.
async fn push(common: &Common, dir: &Path, message: &str) -> anyhow::Result<ExitCode> {
    let (config, registry) = common.open(true).await?;
    let set = Set::read(dir)?;
    let head = registry.head().await?;
    let next = head.as_ref().map_or(1, |(m, _)| m.revision + 1);
    // Validated in place, so errors name the operator's own files.
    if let Err(e) = validate(&config, &common.config, dir, next) {
        eprintln!(
            "fedgate registry: {} does not validate; nothing was published",
            dir.display()
        );
        return Err(e.into());
    }
    publish(&registry, &set, head, message).await
}

/// Prints what pushing `dir` would change, and whether it validates (exit 1 when not).
async fn diff(common: &Common, dir: &Path) -> anyhow::Result<ExitCode> {
    let (config, registry) = common.open(false).await?;
    let set = Set::read(dir)?;
    let head = registry.head().await?;
    let current = match &head {
        Some((manifest, _)) => registry.fetch(manifest).await?,
        None => Set::default(),
    };
    let lines = set.diff(&current);
    let base = head
        .as_ref()
        .map_or("an empty registry".to_string(), |(m, _)| {
            format!("revision {}", m.revision)
        });
    if lines.is_empty() {
        println!("{} matches {base}", dir.display());
    } else {
        println!("{} against {base}:", dir.display());
        for line in lines {
            println!("{line}");
        }
    }
    let next = head.as_ref().map_or(1, |(m, _)| m.revision + 1);
    match validate(&config, &common.config, dir, next) {
        Ok(_) => {
            println!("it validates");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("it does not validate: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Lists the revisions, oldest first; the head is marked `*`.
async fn history(common: &Common, json: bool) -> anyhow::Result<ExitCode> {
    let (_, registry) = common.open(false).await?;
    let history = registry.history().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&history)?);
        return Ok(ExitCode::SUCCESS);
    }
    let head = registry.head_revision().await?;
    println!(
        "{:>5}  {:<20}  {:<24}  {:>4}  message",
        "rev", "created (UTC)", "author", "docs"
    );
    for manifest in &history {
        let mark = if Some(manifest.revision) == head {
            "*"
        } else {
            " "
        };
        println!(
            "{:>4}{mark}  {:<20}  {:<24}  {:>4}  {}",
            manifest.revision,
            when(manifest.created),
            manifest.author,
            manifest.documents.len(),
            manifest.message
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes `revision`'s documents again as the next revision, if they still validate.
async fn rollback(common: &Common, revision: u64, message: String) -> anyhow::Result<ExitCode> {
    let (config, registry) = common.open(false).await?;
    let old = registry.manifest(revision).await?;
    let set = registry.fetch(&old).await?;
    let head = registry.head().await?;
    let next = head.as_ref().map_or(1, |(m, _)| m.revision + 1);
    validate_set(&config, &common.config, &set, next).map_err(|e| {
        anyhow::anyhow!(
            "revision {revision} no longer validates against {}: {e}",
            common.config.display()
        )
    })?;
    let message = if message.is_empty() {
        format!("rollback to revision {revision}")
    } else {
        message
    };
    publish(&registry, &set, head, &message).await
}

/// Prints which revision each instance runs.
async fn status(common: &Common, json: bool) -> anyhow::Result<ExitCode> {
    let (_, registry) = common.open(false).await?;
    let statuses = registry.statuses().await?;
    let head = registry.head_revision().await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"head": head, "instances": statuses})
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        fedgate::registry::render_status(head, &statuses, unix_now())
    );
    Ok(ExitCode::SUCCESS)
}

/// Publishes `set` on top of `head`, unless it is the same.
async fn publish(
    registry: &Registry,
    set: &Set,
    head: Option<(Manifest, u64)>,
    message: &str,
) -> anyhow::Result<ExitCode> {
    if let Some((manifest, _)) = &head
        && manifest.describes(set)
    {
        println!(
            "nothing changed: the registry stays at revision {}",
            manifest.revision
        );
        return Ok(ExitCode::SUCCESS);
    }
    let author = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        fedgate::hostname()
    );
    let parent = head.as_ref().map(|(m, sequence)| (m, *sequence));
    match registry.push(set, parent, &author, message).await {
        Ok(manifest) => {
            println!(
                "published revision {} ({} documents)",
                manifest.revision,
                manifest.documents.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

fn when(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
