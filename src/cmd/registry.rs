//! `fedgate registry`: author keys; publish (signed), compare, list and restore registry
//! revisions; and show which revision each instance runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use fedgate::config::Config;
use fedgate::registry::{
    AuthorSigner, Authors, Manifest, Parent, Registry, Set, unix_now, validate, validate_set,
};

/// `fedgate registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new author key: the private key (PKCS#8 PEM, mode 0600) at --out, and its
    /// public key beside it (`.pub`) and on stdout, for instances' `[registry] authors`.
    Keygen {
        /// Where to write the private key (e.g. `alice.key`); refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate a set directory as start-up would, then publish it, signed, as the next
    /// revision.
    Push {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        author: Author,
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
    /// Publish an earlier revision's documents again, signed, as the next revision.
    Rollback {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        author: Author,
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

/// Who signs a revision.
#[derive(Debug, clap::Args)]
pub struct Author {
    /// The author's private key (`fedgate registry keygen`).
    #[arg(long, env = "FEDGATE_REGISTRY_KEY")]
    key: PathBuf,
    /// The author's name, as instances trust it in `[registry] authors`; default: the key
    /// file's name without its extension.
    #[arg(long)]
    author: Option<String>,
}

impl Author {
    /// Loads the key, and checks that the config trusts it under the author's name: a
    /// revision instances would refuse is not published.
    fn signer(&self, config: &Config, path: &Path) -> anyhow::Result<AuthorSigner> {
        let name = match &self.author {
            Some(name) => name.clone(),
            None => self
                .key
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .with_context(|| format!("--key {}: give --author", self.key.display()))?,
        };
        let signer = AuthorSigner::load(&self.key, &name)?;
        if let Ok(meta) = std::fs::metadata(&self.key) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "fedgate registry: warning: the author key {} has mode {mode:o}; it should be readable by its owner only (chmod 600)",
                    self.key.display()
                );
            }
        }
        let authors = config
            .registry
            .as_ref()
            .map(Authors::from_config)
            .with_context(|| format!("{} has no [registry]", path.display()))?;
        match authors.key(&name) {
            None => anyhow::bail!(
                "author {name} is not in [registry] authors of {}: instances would refuse the revision; nothing was published",
                path.display()
            ),
            Some(trusted) if trusted != signer.public() => anyhow::bail!(
                "--key {} is {}, but {} trusts author {name} as {}: instances would refuse the revision; nothing was published",
                self.key.display(),
                signer.public().fingerprint(),
                path.display(),
                trusted.fingerprint()
            ),
            Some(_) => Ok(signer),
        }
    }
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
        Command::Keygen { out } => keygen(&out),
        Command::Push {
            common,
            author,
            dir,
            message,
        } => push(&common, &author, &dir, &message).await,
        Command::Diff { common, dir } => diff(&common, &dir).await,
        Command::History { common, json } => history(&common, json).await,
        Command::Rollback {
            common,
            author,
            revision,
            message,
        } => rollback(&common, &author, revision, message).await,
        Command::Status { common, json } => status(&common, json).await,
    }
}

/// Writes a new author key pair: `out` (0600) and `out` with the extension `.pub`.
fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let public_path = out.with_extension("pub");
    anyhow::ensure!(
        public_path != out,
        "--out {}: name the private key e.g. alice.key",
        out.display()
    );
    let (private, public) = AuthorSigner::generate()?;
    let create = |path: &Path, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))
    };
    // Both names are taken before either is written, so a refusal leaves nothing behind.
    if public_path.exists() {
        anyhow::bail!("creating {}: it already exists", public_path.display());
    }
    create(out, 0o600)?.write_all(private.as_bytes())?;
    create(&public_path, 0o644)?.write_all(public.as_bytes())?;
    let name = out.file_stem().and_then(|s| s.to_str()).unwrap_or("author");
    eprintln!(
        "wrote {} (private, 0600) and {}; trust it on each instance with\n  [registry] authors = {{ {name} = {:?} }}",
        out.display(),
        public_path.display(),
        public_path.display().to_string()
    );
    print!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// Validates the set directory `dir` and publishes it, signed, as the next revision.
async fn push(
    common: &Common,
    author: &Author,
    dir: &Path,
    message: &str,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&common.config)?;
    let signer = author.signer(&config, &common.config)?;
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
    publish(&config, &registry, &set, head, &signer, message).await
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

/// Lists the revisions, oldest first, each with its author as verified against the config's
/// trusted authors; the head is marked `*`.
async fn history(common: &Common, json: bool) -> anyhow::Result<ExitCode> {
    let (config, registry) = common.open(false).await?;
    let authors = config
        .registry
        .as_ref()
        .map(Authors::from_config)
        .context("no [registry]")?;
    let history = registry.history().await?;
    if json {
        let rows = history
            .iter()
            .map(|manifest| {
                let check = authors.check(manifest);
                let mut row = serde_json::to_value(manifest)?;
                row["verified"] = check.is_ok().into();
                row["verification"] = match &check {
                    Ok(()) => "verified".into(),
                    Err(e) => e.code().into(),
                };
                Ok(row)
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let head = registry.head_revision().await?;
    println!(
        "{:>5}  {:<20}  {:<32}  {:>4}  message",
        "rev", "created (UTC)", "author", "docs"
    );
    for manifest in &history {
        let mark = if Some(manifest.revision) == head {
            "*"
        } else {
            " "
        };
        println!(
            "{:>4}{mark}  {:<20}  {:<32}  {:>4}  {}",
            manifest.revision,
            when(manifest.created),
            verified_author(&authors, manifest),
            manifest.documents.len(),
            manifest.message.escape_debug()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The author column: `alice (verified)`, `UNSIGNED`, `mallory (unknown author)` or
/// `alice (bad signature)`.
fn verified_author(authors: &Authors, manifest: &Manifest) -> String {
    use fedgate::registry::SignatureError;
    let author: String = manifest.author.chars().take(24).collect();
    let author = author.escape_debug();
    match authors.check(manifest) {
        Ok(()) => format!("{author} (verified)"),
        Err(SignatureError::Unsigned) => "UNSIGNED".to_string(),
        Err(SignatureError::UnknownAuthor { .. }) => format!("{author} (unknown author)"),
        Err(SignatureError::BadSignature { .. }) => format!("{author} (bad signature)"),
    }
}

/// Publishes `revision`'s documents again as the next revision, if a trusted author signed
/// them and they still validate.
async fn rollback(
    common: &Common,
    author: &Author,
    revision: u64,
    message: String,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&common.config)?;
    let signer = author.signer(&config, &common.config)?;
    let (config, registry) = common.open(false).await?;
    let old = registry.manifest(revision).await?;
    let authors = config
        .registry
        .as_ref()
        .map(Authors::from_config)
        .context("no [registry]")?;
    authors.check(&old).map_err(|e| {
        anyhow::anyhow!("revision {revision} is not restored: {e}; nothing was published")
    })?;
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
    publish(&config, &registry, &set, head, &signer, &message).await
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

/// Publishes `set`, signed, on top of `head`, unless it is the same. A head no trusted
/// author signed is named, and published over without reusing its documents.
async fn publish(
    config: &Config,
    registry: &Registry,
    set: &Set,
    head: Option<(Manifest, u64)>,
    signer: &AuthorSigner,
    message: &str,
) -> anyhow::Result<ExitCode> {
    let authors = config
        .registry
        .as_ref()
        .map(Authors::from_config)
        .context("no [registry]")?;
    let verified = match &head {
        Some((manifest, _)) => match authors.check(manifest) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "fedgate registry: the head, revision {}, is refused by instances ({e}); publishing over it",
                    manifest.revision
                );
                false
            }
        },
        None => true,
    };
    if let Some((manifest, _)) = &head
        && verified
        && manifest.describes(set)
    {
        println!(
            "nothing changed: the registry stays at revision {}",
            manifest.revision
        );
        return Ok(ExitCode::SUCCESS);
    }
    let parent = head.as_ref().map(|(manifest, sequence)| Parent {
        manifest,
        sequence: *sequence,
        verified,
    });
    match registry.push(set, parent, signer, message).await {
        Ok(manifest) => {
            println!(
                "published revision {} ({} documents), signed by {} ({})",
                manifest.revision,
                manifest.documents.len(),
                signer.name(),
                signer.public().fingerprint()
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
