//! The follower task: it connects, follows `head` through a watch and a check every heartbeat,
//! and applies or refuses each revision offered.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    apply_offer, membership_changes, offered_revision, publish_metrics, refusal, same_membership,
};
use crate::config::{Config, RegistryConfig};
use crate::registry::cache::Cache;
use crate::registry::sign::Authors;
use crate::registry::store::{Manifest, Registry, Status, parse_manifest};
use crate::registry::{RegistryError, Validated, unix_now};
use crate::rules::RuleStore;

/// What the follower task works with.
pub(super) struct Context {
    pub(super) base: Config,
    pub(super) path: PathBuf,
    pub(super) instance: String,
    /// The authors whose revisions it applies.
    pub(super) authors: Authors,
    pub(super) cache: Cache,
    pub(super) store: Arc<RuleStore>,
    /// The membership last handed to the process (at first, the one it started with), to tell
    /// when a revision changes it.
    pub(super) requested: Mutex<Config>,
    /// Configs of revisions that change membership, for the process to serve.
    pub(super) membership: tokio::sync::watch::Sender<Option<Arc<Config>>>,
    pub(super) status: Arc<Mutex<Status>>,
    /// `/readyz`'s view: not ready until connected (the connection's own status after that).
    pub(super) ready: Arc<crate::health::Status>,
}

/// Follows the registry until `stop`: connects first, unless `registry` already is.
pub(super) async fn follow(
    ctx: Context,
    settings: RegistryConfig,
    registry: Option<Registry>,
    stop: CancellationToken,
) {
    let heartbeat = Duration::from_secs(settings.heartbeat_s.max(1));
    let connected = match registry {
        Some(connected) => connected,
        None => {
            ctx.ready
                .not_ready("unreachable; serving the cached revision");
            match ctx.connect(&settings, heartbeat, &stop).await {
                Some(connected) => connected,
                None => return,
            }
        }
    };
    ctx.ready.ready();
    ctx.follow_head(&connected, heartbeat, &stop).await;
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn heard(&self) {
        self.lock().heard = unix_now();
    }

    fn snapshot(&self) -> Status {
        let mut status = self.lock();
        status.reported = unix_now();
        status.clone()
    }

    fn report_local(&self) {
        publish_metrics(&self.snapshot());
    }

    /// Connects to the registry, trying again every heartbeat; `None` once `stop` is cancelled.
    async fn connect(
        &self,
        settings: &RegistryConfig,
        heartbeat: Duration,
        stop: &CancellationToken,
    ) -> Option<Registry> {
        let name = format!("fedgate-registry-{}", self.instance);
        loop {
            let attempt = tokio::time::timeout(
                heartbeat.max(Duration::from_secs(2)),
                Registry::connect(settings, &name, false),
            );
            tokio::select! {
                _ = stop.cancelled() => return None,
                result = attempt => if let Ok(Ok(connected)) = result {
                    return Some(connected);
                },
            }
            self.report_local();
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(heartbeat) => {}
            }
        }
    }

    /// Offers each `head` the watch delivers, and checks `head` every heartbeat, until `stop`.
    async fn follow_head(
        &self,
        connected: &Registry,
        heartbeat: Duration,
        stop: &CancellationToken,
    ) {
        let mut watch = match connected.watch_head().await {
            Ok(watch) => Some(watch),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the registry head; checking every heartbeat");
                None
            }
        };
        let mut ticker = tokio::time::interval(heartbeat);
        loop {
            let next = async {
                match &mut watch {
                    Some(watch) => watch.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                entry = next => match entry {
                    Some(Ok(entry)) => {
                        self.heard();
                        if entry.operation == kv::Operation::Put {
                            self.offer(connected, parse_manifest(&entry.value)).await;
                        }
                    }
                    // The watch ended (the server went away): check on the heartbeat instead,
                    // and watch again once it answers.
                    _ => watch = None,
                },
                _ = ticker.tick() => self.heartbeat(connected, &mut watch).await,
            }
        }
    }

    /// Checks `head` (watching it again when the watch had ended) and reports the status.
    async fn heartbeat(&self, connected: &Registry, watch: &mut Option<kv::Watch>) {
        match connected.head().await {
            Ok(head) => {
                self.heard();
                if let Some((manifest, _)) = head {
                    self.offer(connected, Ok(manifest)).await;
                }
                if watch.is_none() {
                    *watch = connected.watch_head().await.ok();
                }
            }
            Err(RegistryError::Unreachable(_)) => {}
            Err(e) => {
                self.heard();
                self.offer(connected, Err(e)).await;
            }
        }
        let status = self.snapshot();
        if let Err(e) = connected.report(&status).await {
            tracing::debug!(error = %e, "could not report status to the registry");
        }
        publish_metrics(&status);
    }

    /// Applies an offered head unless it is the running revision or one already refused. A
    /// head no trusted author signed is refused whatever revision it claims.
    async fn offer(&self, registry: &Registry, offered: Result<Manifest, RegistryError>) {
        let (current, refused) = {
            let status = self.lock();
            (status.revision, status.refused.as_ref().map(|r| r.revision))
        };
        let number = offered_revision(&offered);
        if refused == Some(number) {
            return;
        }
        let offered = offered.and_then(|m| Ok(self.authors.verify(m)?));
        match &offered {
            Err(RegistryError::Signature(_)) => {}
            _ if number == current => return,
            // Revisions only grow (a rollback is a new revision): an older head is a stale
            // read.
            _ if number != 0 && number < current => {
                tracing::debug!(
                    revision = number,
                    current,
                    "ignoring an older registry head"
                );
                return;
            }
            _ => {}
        }
        match apply_offer(registry, &self.cache, &self.base, &self.path, offered).await {
            Ok((manifest, validated)) => self.install(&manifest, validated),
            // The registry went away mid-fetch, or the local cache could not take it: try
            // again on the next heartbeat.
            Err(e @ (RegistryError::Unreachable(_) | RegistryError::Cache { .. })) => {
                tracing::warn!(revision = number, error = %e, "could not take a registry revision; trying again");
            }
            Err(e) => self.refuse(number, current, &e),
        }
    }

    /// Installs a validated revision's rules, makes it the cache's current one, and hands a
    /// membership it changes to the process.
    fn install(&self, manifest: &Manifest, validated: Validated) {
        let changed = {
            let requested = self
                .requested
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            membership_changes(&requested, &validated.config)
        };
        let next = validated.config;
        self.store.install(validated.rules);
        if let Err(e) = self.cache.commit(manifest.revision) {
            tracing::error!(error = %e, "revision applied, but the cache could not record it");
        }
        metrics::counter!("fedgate_registry_applied_total", "result" => "ok").increment(1);
        tracing::info!(
            revision = manifest.revision,
            author = %manifest.author,
            message = %manifest.message,
            "registry revision applied, signed by a trusted author"
        );
        if !changed.is_empty() {
            tracing::info!(federations = %changed.join(", "), "the revision changes membership");
        }
        self.applied(manifest.revision, changed);
        if !same_membership(&self.requested, &next) {
            *self
                .requested
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next.clone();
            self.membership.send_replace(Some(Arc::new(next)));
        }
    }

    /// The status after applying `revision`; `changed` federations are pending until the
    /// process serves the new membership.
    fn applied(&self, revision: u64, changed: Vec<String>) {
        let mut status = self.lock();
        status.revision = revision;
        status.source = "registry".into();
        status.applied = unix_now();
        status.refused = None;
        if !changed.is_empty() {
            // Until the process serves the new membership.
            status.membership_pending = changed;
        }
        publish_metrics(&status);
    }

    /// Refuses revision `number`, keeping `current`: said in the log, the metrics, the rule
    /// store and the status.
    fn refuse(&self, number: u64, current: u64, e: &RegistryError) {
        tracing::error!(revision = number, code = e.code(), error = %e, "refusing registry revision; keeping revision {current}");
        metrics::counter!("fedgate_registry_applied_total", "result" => "refused").increment(1);
        self.store
            .refused(format!("registry revision {number}: {e}"));
        let mut status = self.lock();
        status.refused = Some(refusal(number, e));
        publish_metrics(&status);
    }
}
