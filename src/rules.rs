//! The rules every decision is made with: the actionpolicy set, the identity map and the edge's
//! users, held together so one request sees one consistent set.
//!
//! In file mode the policy directory and the users file are watched and each reloaded whole,
//! then swapped in atomically; the identity rules are read at start-up. With a registry, whole
//! revisions are installed at once ([`RuleStore::install`]). A load that fails keeps the last
//! good rules, logs the error and raises `fedgate_policy_reload_failed`. A request holds the
//! [`Rules`] it started with, so a change never alters the rules under a request in flight;
//! what must follow a change at once (a token the users file now revokes, on an open socket)
//! watches [`RuleStore::changes`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::policy::{Effect, LoadError, PolicySet};
use crate::security::identity::IdentityRules;
use crate::users::Users;

/// How long the directory must be quiet before a reload, so a burst of writes loads once.
const SETTLE: Duration = Duration::from_millis(200);

/// One consistent set of rules.
#[derive(Debug)]
pub struct Rules {
    /// The actionpolicy files.
    pub policy: Arc<PolicySet>,
    /// How callers of each realm map into collectives.
    pub identity: Arc<IdentityRules>,
    /// Who may log in at the edge with a password.
    pub users: Option<Arc<Users>>,
    /// The registry revision these rules came from; `None` in file mode.
    pub revision: Option<u64>,
}

impl Rules {
    /// The rules a validated config names: its policy directory, identity rules and users file
    /// (with a registry, those of the revision the config was completed with).
    pub fn load(config: &Config) -> Result<Rules, String> {
        let policy = match &config.policy {
            Some(policy) => PolicySet::load(&policy.dir, policy.unconfigured)
                .map_err(|e| format!("policy: {e}"))?,
            None => PolicySet::empty(Effect::Deny),
        };
        let users = match config.edge.as_ref().and_then(|e| e.users.as_deref()) {
            Some(path) => Some(Arc::new(Users::load(path).map_err(|e| e.to_string())?)),
            None => None,
        };
        Ok(Rules {
            policy: Arc::new(policy),
            identity: config.identity_rules().clone(),
            users,
            revision: config.registry_revision(),
        })
    }
}

/// The current rules, and how the last change to them went.
#[derive(Debug)]
pub struct RuleStore {
    /// The policy directory watched in file mode.
    dir: Option<PathBuf>,
    /// The users file watched in file mode.
    users: Option<PathBuf>,
    unconfigured: Effect,
    current: ArcSwap<Rules>,
    last_error: Mutex<Option<String>>,
    /// Counts the rules put in force.
    version: tokio::sync::watch::Sender<u64>,
}

impl RuleStore {
    /// A store holding `rules`; `watch_dir` is the policy directory to reload in file mode.
    pub fn new(rules: Rules, watch_dir: Option<(&Path, Effect)>) -> RuleStore {
        let store = RuleStore {
            dir: watch_dir.map(|(dir, _)| dir.to_path_buf()),
            users: None,
            unconfigured: watch_dir.map_or(Effect::Deny, |(_, effect)| effect),
            current: ArcSwap::from_pointee(rules),
            last_error: Mutex::new(None),
            version: tokio::sync::watch::Sender::new(0),
        };
        store.publish_metrics(true);
        store
    }

    /// A file-mode store over a policy directory alone (no identity rules, no users).
    pub fn open_dir(dir: &Path, unconfigured: Effect) -> Result<RuleStore, LoadError> {
        let rules = Rules {
            policy: Arc::new(PolicySet::load(dir, unconfigured)?),
            identity: Arc::new(IdentityRules::deny_all()),
            users: None,
            revision: None,
        };
        Ok(RuleStore::new(rules, Some((dir, unconfigured))))
    }

    /// The same store, which in file mode also reloads the users file at `path`.
    pub fn with_users_file(mut self, path: Option<&Path>) -> RuleStore {
        self.users = path.map(Path::to_path_buf);
        self
    }

    /// The version of the rules in force, which changes with every change put in force.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|version| *version += 1);
    }

    /// The rules to decide a request with; keep them for the whole request.
    pub fn rules(&self) -> Arc<Rules> {
        self.current.load_full()
    }

    /// The current policy set.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load().policy.clone()
    }

    /// The directory reloaded in file mode.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The error of the last failed reload, until a reload succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces every rule at once (a registry revision).
    pub fn install(&self, rules: Rules) {
        self.current.store(Arc::new(rules));
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.publish_metrics(true);
        self.changed();
    }

    /// Notes a change that could not be applied; the current rules stay.
    pub fn refused(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
        self.publish_metrics(false);
    }

    /// Loads the policy directory again; on success swaps the new set in, on failure keeps the
    /// old one.
    pub fn reload(&self) -> Result<(), LoadError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        match PolicySet::load(dir, self.unconfigured) {
            Ok(set) => {
                let set = Arc::new(set);
                self.swap_in(|rules| Rules {
                    policy: set.clone(),
                    identity: rules.identity.clone(),
                    users: rules.users.clone(),
                    revision: rules.revision,
                });
                tracing::info!(dir = %dir.display(), "policy reloaded");
                Ok(())
            }
            Err(err) => {
                tracing::error!(dir = %dir.display(), error = %err, "policy reload failed; keeping the last good policy");
                self.refused(err.to_string());
                Err(err)
            }
        }
    }

    /// Swaps in the rules `replace` makes of the current ones, clears the last reload error,
    /// and reports the change.
    fn swap_in(&self, replace: impl Fn(&Rules) -> Rules) {
        self.current.rcu(|rules| replace(rules));
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.publish_metrics(true);
        self.changed();
    }

    /// Loads the users file again; on success swaps it in (its revocations apply at once), on
    /// failure keeps the last good one.
    pub fn reload_users(&self) -> Result<(), String> {
        let Some(path) = &self.users else {
            return Ok(());
        };
        match Users::load(path) {
            Ok(users) => {
                let users = Arc::new(users);
                self.swap_in(|rules| Rules {
                    policy: rules.policy.clone(),
                    identity: rules.identity.clone(),
                    users: Some(users.clone()),
                    revision: rules.revision,
                });
                tracing::info!(file = %path.display(), "users file reloaded");
                Ok(())
            }
            Err(err) => {
                tracing::error!(file = %path.display(), error = %err, "users file reload failed; keeping the last good users");
                self.refused(err.to_string());
                Err(err.to_string())
            }
        }
    }

    fn publish_metrics(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        metrics::counter!("fedgate_policy_reloads_total", "result" => result).increment(1);
        metrics::gauge!("fedgate_policy_reload_failed").set(if ok { 0.0 } else { 1.0 });
        let files = self.current.load().policy.files().count();
        metrics::gauge!("fedgate_policy_files").set(files as f64);
    }

    /// In file mode, watches the policy directory and the users file until `stop`, reloading
    /// what changed after changes settle; `None` when there is nothing to watch.
    pub fn watch(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, notify::Error> {
        if self.dir.is_none() && self.users.is_none() {
            return Ok(None);
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let touched = Arc::new(Touched::default());
        let users = self.users.clone();
        let dirs: Vec<PathBuf> = self
            .dir
            .iter()
            .flat_map(|dir| {
                [
                    dir.clone(),
                    dir.canonicalize().unwrap_or_else(|_| dir.clone()),
                ]
            })
            .collect();
        let noted = touched.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                // The users file is watched through its directory (editors replace files);
                // only events naming it count for it.
                let is_users = |p: &PathBuf| users.as_ref().is_some_and(|u| same_file(p, u));
                let in_policy = |p: &PathBuf| dirs.iter().any(|d| p.starts_with(d));
                // No paths: the watcher lost track (a rescan); reload both.
                let rescan = event.paths.is_empty();
                let users_file = rescan || event.paths.iter().any(is_users);
                let policy = rescan || event.paths.iter().any(in_policy);
                if users_file {
                    noted.users.store(true, Ordering::Relaxed);
                }
                if policy {
                    noted.policy.store(true, Ordering::Relaxed);
                }
                // Other files beside the users file (an audit file) do not delay a reload.
                if users_file || policy {
                    // A full channel already holds a pending reload.
                    let _ = tx.try_send(());
                }
            })?;
        if let Some(dir) = &self.dir {
            watcher.watch(dir, RecursiveMode::Recursive)?;
        }
        if let Some(parent) = self.users.as_deref().and_then(Path::parent) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
        let store = Arc::clone(self);
        Ok(Some(tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = rx.recv() => if event.is_none() { return },
                }
                // Wait for the files to settle: every further event restarts the wait.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(SETTLE) => break,
                        _ = rx.recv() => {}
                    }
                }
                if touched.policy.swap(false, Ordering::Relaxed) {
                    let _ = store.reload();
                }
                if touched.users.swap(false, Ordering::Relaxed) {
                    let _ = store.reload_users();
                }
            }
        })))
    }
}

/// What changed since the last reload.
#[derive(Default)]
struct Touched {
    policy: AtomicBool,
    users: AtomicBool,
}

/// Whether `event` names the file `path` (compared by name in the same directory, since the
/// event's path may be absolute where the configured one is relative).
fn same_file(event: &Path, path: &Path) -> bool {
    event == path
        || (event.file_name() == path.file_name()
            && event.parent().and_then(|p| p.canonicalize().ok())
                == path
                    .parent()
                    .map(|p| {
                        if p.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            p
                        }
                    })
                    .and_then(|p| p.canonicalize().ok()))
}
