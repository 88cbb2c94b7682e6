//! Readiness: what `/readyz` reports. Each dependency the process needs (a NATS connection, an
//! audit sink, an AMQP connection, the registry) holds a [`Status`] it keeps current; the
//! process-wide list keeps only a weak reference, so a dependency that is dropped (a broker
//! replaced by a registry revision, a connection closed) leaves the list by itself.

use std::sync::{Arc, Mutex, Weak};

/// Whether one dependency is usable now, and why not when it is not.
#[derive(Debug)]
pub struct Status {
    name: String,
    problem: Mutex<Option<String>>,
}

impl Status {
    /// The dependency's name as `/readyz` says it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// It is usable.
    pub fn ready(&self) {
        self.set(None);
    }

    /// It is not usable, because of `why`.
    pub fn not_ready(&self, why: impl Into<String>) {
        self.set(Some(why.into()));
    }

    /// Why it is not usable; `None` when it is.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().map(|p| p.clone()).unwrap_or(None)
    }

    fn set(&self, problem: Option<String>) {
        if let Ok(mut current) = self.problem.lock() {
            *current = problem;
        }
    }
}

/// Every dependency being watched, process-wide.
static WATCHED: Mutex<Vec<Weak<Status>>> = Mutex::new(Vec::new());

/// Watches a new dependency named `name`, not ready until told otherwise (`starting`); it is
/// watched for as long as the returned status lives.
pub fn watch(name: impl Into<String>) -> Arc<Status> {
    let status = Arc::new(Status {
        name: name.into(),
        problem: Mutex::new(Some("starting".into())),
    });
    if let Ok(mut watched) = WATCHED.lock() {
        watched.retain(|w| w.strong_count() > 0);
        watched.push(Arc::downgrade(&status));
    }
    status
}

/// One dependency that is not ready: its name and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotReady {
    /// The dependency, e.g. `collective london (edge)`.
    pub name: String,
    /// Why it is not usable.
    pub problem: String,
}

/// What `/readyz` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// How many dependencies are watched.
    pub watched: usize,
    /// Those not ready, sorted by name.
    pub not_ready: Vec<NotReady>,
}

impl Readiness {
    /// True when every watched dependency is usable.
    pub fn is_ready(&self) -> bool {
        self.not_ready.is_empty()
    }
}

/// The dependencies watched now, and those of them not ready.
pub fn readiness() -> Readiness {
    let live: Vec<Arc<Status>> = match WATCHED.lock() {
        Ok(mut watched) => {
            watched.retain(|w| w.strong_count() > 0);
            watched.iter().filter_map(Weak::upgrade).collect()
        }
        Err(_) => Vec::new(),
    };
    let mut not_ready: Vec<NotReady> = live
        .iter()
        .filter_map(|status| {
            Some(NotReady {
                name: status.name.clone(),
                problem: status.problem()?,
            })
        })
        .collect();
    not_ready.sort_by(|a, b| a.name.cmp(&b.name).then(a.problem.cmp(&b.problem)));
    not_ready.dedup();
    Readiness {
        watched: live.len(),
        not_ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_reported_until_it_is_dropped() {
        let status = watch("test dependency a");
        let named = |r: &Readiness| r.not_ready.iter().any(|n| n.name == "test dependency a");
        assert!(named(&readiness()), "starting is not ready");
        status.ready();
        assert!(!named(&readiness()));
        status.not_ready("disconnected");
        let report = readiness();
        let entry = report
            .not_ready
            .iter()
            .find(|n| n.name == "test dependency a")
            .expect("named");
        assert_eq!(entry.problem, "disconnected");
        drop(status);
        assert!(
            !named(&readiness()),
            "a dropped dependency is no longer watched"
        );
    }
}
