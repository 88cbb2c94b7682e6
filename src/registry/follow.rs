//! An instance following the registry.
//!
//! At start-up it takes the registry's current revision, or, when the registry cannot be
//! reached in `registry.timeout_ms` (or offers nothing this instance can use), the last good
//! revision from its cache (verified again as it is read; also when the registry's head is
//! older than the cache's revision, since revisions only grow). Then it watches `head`: each new
//! revision's signature is checked against the authors this instance trusts, its documents
//! fetched and checked against their hashes, staged in the cache, validated exactly as start-up validates, installed
//! in the rule store in one swap, and only then made the cache's current revision. A revision
//! that fails any step is refused, with the reason in the status report, the log and
//! `fedgate_registry_refused_revision`, and the instance keeps the rules it has. Every
//! `heartbeat_s` it checks `head` again (a missed watch update is caught there) and reports
//! its status.

mod task;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::sign::{Authors, Verified};
use super::store::{Manifest, Refusal, Registry, Status};
use super::{RegistryError, Validated, unix_now, validate};
use crate::config::{Config, RegistryConfig};
use crate::rules::RuleStore;

/// What an instance starts with.
#[derive(Debug)]
pub struct Start {
    /// The config completed with the revision.
    pub validated: Validated,
    /// The revision's manifest.
    pub manifest: Manifest,
    /// `registry` or `cache`.
    pub source: &'static str,
    /// A revision the registry offered that could not be used, and why.
    pub refused: Option<Refusal>,
    /// The registry connection, when it answered.
    pub registry: Option<Registry>,
}

/// Finds the revision to start with: the registry's, else the cache's.
pub async fn start(base: &Config, path: &Path, instance: &str) -> Result<Start, RegistryError> {
    let settings = settings(base)?;
    let authors = Authors::from_config(settings);
    let cache = Cache::open(&settings.cache)?;
    let wait = Duration::from_millis(settings.timeout_ms.max(1));
    let mut refused = None;
    let mut registry = None;
    let mut unreachable = None;
    match tokio::time::timeout(wait, take_head(settings, instance)).await {
        Err(_) => unreachable = Some(format!("no answer in {} ms", wait.as_millis())),
        Ok(Err(RegistryError::Unreachable(e))) => unreachable = Some(e),
        Ok(Err(e)) => return Err(e),
        Ok(Ok((connected, None))) => registry = Some(connected),
        Ok(Ok((connected, Some(head)))) => {
            let offered = offered_revision(&head);
            // A signed head older than the cache's revision is stale or replayed: revisions
            // only grow, so it is refused and the cache used.
            let cached = cache.pointer().ok().flatten();
            let head =
                head.and_then(|m| Ok(authors.verify(m)?))
                    .and_then(|verified| match cached {
                        Some(cached) if verified.manifest().revision < cached => {
                            Err(RegistryError::Older {
                                revision: verified.manifest().revision,
                                cached,
                            })
                        }
                        _ => Ok(verified),
                    });
            match apply_offer(&connected, &cache, base, path, head).await {
                Ok((manifest, validated)) => {
                    cache.commit(manifest.revision)?;
                    return Ok(Start {
                        validated,
                        manifest,
                        source: "registry",
                        refused: None,
                        registry: Some(connected),
                    });
                }
                // Lost mid-fetch, or the cache could not take it: the follower tries again.
                Err(e @ (RegistryError::Unreachable(_) | RegistryError::Cache { .. })) => {
                    unreachable = Some(e.to_string());
                    registry = Some(connected);
                }
                Err(e) => {
                    tracing::error!(revision = offered, code = e.code(), error = %e, "refusing the registry's revision; trying the cached one");
                    refused = Some(refusal(offered, &e));
                    registry = Some(connected);
                }
            }
        }
    }
    if let Some(problem) = &unreachable {
        tracing::warn!(%problem, cache = %cache.dir().display(), "registry unreachable; starting from the cached revision");
    }
    let Some((manifest, dir)) = cache.current(&authors)? else {
        let why = match (&unreachable, &refused, &registry) {
            (Some(problem), _, _) => format!("the registry is unreachable ({problem})"),
            (None, Some(refusal), _) => format!(
                "the registry's revision {} was refused: {}",
                refusal.revision, refusal.reason
            ),
            _ => "the registry holds no revision yet: push one with `fedgate registry push`"
                .to_string(),
        };
        return Err(RegistryError::Cache {
            path: cache.dir().to_path_buf(),
            problem: format!("holds no revision, and {why}"),
        });
    };
    let manifest = manifest.into_manifest();
    let validated = validate(base, path, &dir, manifest.revision)?;
    Ok(Start {
        validated,
        manifest,
        source: "cache",
        refused,
        registry,
    })
}

fn settings(base: &Config) -> Result<&RegistryConfig, RegistryError> {
    base.registry
        .as_ref()
        .ok_or_else(|| RegistryError::Invalid("the config has no [registry]".into()))
}

/// Connects and reads `head`: `None` inside when there is no head yet, `Some(Err)` for a head
/// this fedgate cannot read.
async fn take_head(
    settings: &RegistryConfig,
    instance: &str,
) -> Result<(Registry, Option<Result<Manifest, RegistryError>>), RegistryError> {
    let registry =
        Registry::connect(settings, &format!("fedgate-registry-{instance}"), false).await?;
    let head = match registry.head().await {
        Ok(head) => head.map(|(manifest, _)| Ok(manifest)),
        Err(e @ RegistryError::Unreachable(_)) => return Err(e),
        Err(e) => Some(Err(e)),
    };
    Ok((registry, head))
}

/// Fetches, stages and validates an offered revision whose signature was verified.
async fn apply_offer(
    registry: &Registry,
    cache: &Cache,
    base: &Config,
    path: &Path,
    offered: Result<Verified, RegistryError>,
) -> Result<(Manifest, Validated), RegistryError> {
    let verified = offered?;
    let set = registry.fetch(verified.manifest()).await?;
    let dir = cache.stage(&verified, &set).map_err(|e| match e {
        RegistryError::Set { path, problem } => RegistryError::Cache { path, problem },
        other => other,
    })?;
    let manifest = verified.into_manifest();
    validate(base, path, &dir, manifest.revision).map(|validated| (manifest, validated))
}

/// The refusal of revision `revision`, counted in `fedgate_registry_refused_total{reason}`.
fn refusal(revision: u64, e: &RegistryError) -> Refusal {
    metrics::counter!("fedgate_registry_refused_total", "reason" => e.code()).increment(1);
    Refusal {
        revision,
        code: e.code().to_string(),
        reason: e.to_string(),
    }
}

/// The running follower.
#[derive(Debug)]
pub struct Follower {
    status: Arc<Mutex<Status>>,
    membership: tokio::sync::watch::Receiver<Option<Arc<Config>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following after [`start`]: `store` holds the start revision's rules, `serving`
    /// is the config the instance runs with.
    pub fn spawn(
        base: Config,
        path: PathBuf,
        instance: String,
        start: Start,
        store: Arc<RuleStore>,
        stop: CancellationToken,
    ) -> Result<Follower, RegistryError> {
        let settings = settings(&base)?.clone();
        let cache = Cache::open(&settings.cache)?;
        let authors = Authors::from_config(&settings);
        let now = unix_now();
        let status = Status {
            instance: instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: start.manifest.revision,
            source: start.source.to_string(),
            applied: now,
            heard: if start.registry.is_some() { now } else { 0 },
            reported: 0,
            refused: start.refused.clone(),
            membership_pending: Vec::new(),
        };
        publish_metrics(&status);
        let status = Arc::new(Mutex::new(status));
        let (membership, changes) = tokio::sync::watch::channel(None);
        let ctx = task::Context {
            requested: Mutex::new(start.validated.config.clone()),
            membership,
            base,
            path,
            instance,
            authors,
            cache,
            store,
            status: status.clone(),
            ready: crate::health::watch("registry"),
        };
        let task = tokio::spawn(task::follow(ctx, settings, start.registry, stop));
        Ok(Follower {
            status,
            membership: changes,
            task,
        })
    }

    /// Receives the config of each revision that changes federation membership; the process
    /// serves it, then calls [`Follower::membership_served`].
    pub fn membership(&self) -> tokio::sync::watch::Receiver<Option<Arc<Config>>> {
        self.membership.clone()
    }

    /// The process served the latest membership it received, except `pending` (federations
    /// whose broker could not start, members it reaches only after a restart).
    pub fn membership_served(&self, pending: Vec<String>) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.membership_pending = pending;
        publish_metrics(&status);
    }

    /// This instance's status now.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits for the follower to stop (after its `stop` token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// The revision number of an offered head, also of one this fedgate cannot read (0: unknown).
fn offered_revision(offered: &Result<Manifest, RegistryError>) -> u64 {
    match offered {
        Ok(manifest) => manifest.revision,
        Err(RegistryError::Schema { revision, .. }) => *revision,
        Err(_) => 0,
    }
}

/// Whether `next` has the membership last handed to the process.
fn same_membership(requested: &Mutex<Config>, next: &Config) -> bool {
    let requested = requested
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    membership_changes(&requested, next).is_empty()
}

/// Federations whose members differ between what is served and a new revision.
fn membership_changes(serving: &Config, next: &Config) -> Vec<String> {
    serving
        .federations
        .iter()
        .filter(|(name, federation)| {
            next.federations
                .get(*name)
                .is_none_or(|n| n.members != federation.members)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn publish_metrics(status: &Status) {
    metrics::gauge!("fedgate_registry_revision").set(status.revision as f64);
    metrics::gauge!("fedgate_registry_heard_timestamp_seconds").set(status.heard as f64);
    metrics::gauge!("fedgate_registry_refused_revision")
        .set(status.refused.as_ref().map_or(0.0, |r| r.revision as f64));
    metrics::gauge!("fedgate_registry_membership_pending").set(
        if status.membership_pending.is_empty() {
            0.0
        } else {
            1.0
        },
    );
}
