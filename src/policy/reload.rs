//! Hot reload: the policy directory is watched and reloaded whole, then swapped in atomically.
//! A load that fails keeps the last good set, logs the error and raises
//! `fedgate_policy_reload_failed`. A request holds the `Arc` it started with, so a reload never
//! changes the rules under a request in flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::actionpolicy::Effect;
use super::set::{LoadError, PolicySet};

/// How long the directory must be quiet before a reload, so a burst of writes loads once.
const SETTLE: Duration = Duration::from_millis(200);

/// The current policy set of a directory, and how its last reload went.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    unconfigured: Effect,
    current: ArcSwap<PolicySet>,
    last_error: Mutex<Option<String>>,
}

impl PolicyStore {
    /// Loads `dir`; a failure here is a start-up error.
    pub fn open(dir: &Path, unconfigured: Effect) -> Result<PolicyStore, LoadError> {
        let set = PolicySet::load(dir, unconfigured)?;
        let store = PolicyStore {
            dir: dir.to_path_buf(),
            unconfigured,
            current: ArcSwap::from_pointee(set),
            last_error: Mutex::new(None),
        };
        store.publish_metrics(true);
        Ok(store)
    }

    /// The set to decide a request with; keep it for the whole request.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// The directory this store loads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error of the last failed reload, until a reload succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Loads the directory again; on success swaps the new set in, on failure keeps the old one.
    pub fn reload(&self) -> Result<(), LoadError> {
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match PolicySet::load(&self.dir, self.unconfigured) {
            Ok(set) => {
                self.current.store(Arc::new(set));
                *last_error = None;
                self.publish_metrics(true);
                tracing::info!(dir = %self.dir.display(), "policy reloaded");
                Ok(())
            }
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "policy reload failed; keeping the last good policy");
                *last_error = Some(err.to_string());
                self.publish_metrics(false);
                Err(err)
            }
        }
    }

    fn publish_metrics(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        metrics::counter!("fedgate_policy_reloads_total", "result" => result).increment(1);
        metrics::gauge!("fedgate_policy_reload_failed").set(if ok { 0.0 } else { 1.0 });
        let files = self.current.load().files().count();
        metrics::gauge!("fedgate_policy_files").set(files as f64);
    }

    /// Watches the directory until `stop`, reloading after changes settle.
    pub fn watch(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // A full channel already holds a pending reload.
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        let store = Arc::clone(self);
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = rx.recv() => if event.is_none() { return },
                }
                // Wait for the directory to settle: every further event restarts the wait.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(SETTLE) => break,
                        _ = rx.recv() => {}
                    }
                }
                let _ = store.reload();
            }
        }))
    }
}
