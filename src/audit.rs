//! The tamper-evident audit trail: one hash-chained record per decision, written before the
//! request it describes is forwarded. If no sink accepts a record, the request is refused.
//!
//! - [`record`]: the record, its canonical form and the chain.
//! - [`file`]: the file sink (group commit, fsync policy, size rotation with header records).
//! - [`review`]: verification across rotated files, and reading records back.

pub mod file;
pub mod record;
pub mod review;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use file::{FileOptions, FileSink, Fsync, SinkError};
pub use record::{Event, Kind, Record, Verdict};

/// Why a record was not written anywhere.
#[derive(Clone, Debug, thiserror::Error)]
#[error("audit record not written: {0}")]
pub struct AuditError(pub String);

/// The configured sinks. A record counts as written when at least one sink accepted it.
#[derive(Clone)]
pub struct Auditor {
    file: Option<FileSink>,
    values: Arc<Vec<String>>,
}

impl Auditor {
    /// An auditor writing to `file`; `values` lists `agent` or `agent.action` whose input values
    /// are recorded (otherwise only their names are).
    pub fn new(file: Option<FileSink>, values: Vec<String>) -> Auditor {
        Auditor {
            file,
            values: Arc::new(values),
        }
    }

    /// True when the inputs of `agent.action` are recorded in full.
    pub fn records_values(&self, agent: &str, action: &str) -> bool {
        self.values.iter().any(|entry| {
            entry == "*"
                || entry == agent
                || entry
                    .split_once('.')
                    .is_some_and(|(a, b)| a == agent && (b == action || b == "*"))
        })
    }

    /// Writes one record; Ok carries its id.
    pub async fn record(&self, kind: Kind, event: Event) -> Result<String, AuditError> {
        let Some(file) = &self.file else {
            return Err(AuditError("no audit sink is configured".into()));
        };
        let verdict = match event.decision {
            Some(Verdict::Allow) => "allow",
            Some(Verdict::Deny) => "deny",
            None => "none",
        };
        match file.append(kind, event).await {
            Ok(record) => {
                metrics::counter!("fedgate_audit_records_total", "sink" => "file", "decision" => verdict)
                    .increment(1);
                Ok(record.id)
            }
            Err(err) => {
                metrics::counter!("fedgate_audit_errors_total", "sink" => "file").increment(1);
                Err(AuditError(err.to_string()))
            }
        }
    }
}
