//! The tamper-evident audit trail: one hash-chained record per decision, written before the
//! request it describes is forwarded. If no sink accepts a record, the request is refused.
//!
//! - [`bound`]: the limits of what a caller can put in a record (lengths, escaped control
//!   characters), applied to every record before it is sealed.
//! - [`cef`]: Common Event Format lines for SIEMs.
//! - [`checkpoint`]: signed checkpoints that anchor a chain against rewriting.
//! - [`record`]: the record, its canonical form and the chain.
//! - [`flood`]: refusals before verification, aggregated per source address beyond a budget.
//! - [`file`]: the file sink (group commit, fsync policy, size rotation with header records).
//! - [`jetstream`]: the JetStream sink (deny-delete, deny-purge stream, deduplicated by record
//!   id, one chain per instance subject, shared by instances).
//! - [`review`]: verification across rotated files from the chain's beginning, one chain per
//!   instance, and reading records back.

pub mod bound;
pub mod cef;
pub mod checkpoint;
pub mod file;
pub mod flood;
pub mod jetstream;
pub mod record;
pub mod review;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use file::{FileOptions, FileSink, Fsync, SinkError};
pub use jetstream::{JetStreamOptions, JetStreamSink};
pub use record::{Event, Kind, Record, Verdict};

/// Why a record was not written anywhere.
#[derive(Clone, Debug, thiserror::Error)]
#[error("audit record not written: {0}")]
pub struct AuditError(pub String);

/// Where records go.
#[derive(Clone)]
pub enum Sink {
    /// The local file.
    File(FileSink),
    /// A JetStream stream shared by instances.
    JetStream(JetStreamSink),
}

impl Sink {
    /// The sink's name in metrics and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
            Sink::JetStream(_) => "jetstream",
        }
    }

    async fn append(&self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        match self {
            Sink::File(sink) => sink.append(kind, id, event).await,
            Sink::JetStream(sink) => sink.append(kind, id, event).await,
        }
    }

    /// Hands `record`, which another sink accepted, to a sink that failed it. The file sink
    /// does not take records back: a JetStream outage is the case this covers.
    fn backfill(&self, record: &Record) {
        match self {
            Sink::File(_) => {}
            Sink::JetStream(sink) => sink.backfill(record),
        }
    }

    async fn close(&self) {
        match self {
            Sink::File(sink) => sink.close().await,
            Sink::JetStream(sink) => sink.close().await,
        }
    }
}

/// The configured sinks. A record counts as written when at least one sink accepted it; each
/// sink keeps its own chain, and a record has the same id in all of them.
#[derive(Clone)]
pub struct Auditor {
    instance: Arc<str>,
    sinks: Arc<[Sink]>,
    /// Each sink's readiness for `/readyz`: whether its last write succeeded.
    ready: Arc<[Arc<crate::health::Status>]>,
    values: Arc<Vec<String>>,
}

impl Auditor {
    /// An auditor for `instance` writing to `sinks`; `values` lists `agent` or `agent.action`
    /// whose input values are recorded (otherwise only their names are).
    pub fn new(instance: &str, sinks: Vec<Sink>, values: Vec<String>) -> Auditor {
        // Counted from zero, so an alert on errors sees the series before the first one.
        for sink in &sinks {
            metrics::counter!("fedgate_audit_errors_total", "sink" => sink.name()).increment(0);
        }
        let ready = sinks
            .iter()
            .map(|sink| {
                let status = crate::health::watch(format!("audit sink {}", sink.name()));
                status.ready();
                status
            })
            .collect();
        Auditor {
            instance: Arc::from(instance),
            sinks: sinks.into(),
            ready,
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

    /// Stops every sink once what it was handed is written, each trail ending with a signed
    /// checkpoint where checkpoints are configured. Called last in a clean stop: a writer left
    /// to the process's exit could lose that checkpoint. Records offered later are refused.
    pub async fn close(&self) {
        futures::future::join_all(self.sinks.iter().map(Sink::close)).await;
    }

    /// Writes one record to every sink at once; Ok carries its id when at least one accepted
    /// it, Err says why each refused.
    pub async fn record(&self, kind: Kind, mut event: Event) -> Result<String, AuditError> {
        if self.sinks.is_empty() {
            return Err(AuditError("no audit sink is configured".into()));
        }
        bound::bound(&mut event);
        let verdict = match event.decision {
            Some(Verdict::Allow) => "allow",
            Some(Verdict::Deny) => "deny",
            None => "none",
        };
        let id = record::new_id(&self.instance);
        let results = match &*self.sinks {
            [only] => vec![timed(only, only.append(kind, id.clone(), event)).await],
            sinks => {
                futures::future::join_all(
                    sinks
                        .iter()
                        .map(|sink| timed(sink, sink.append(kind, id.clone(), event.clone()))),
                )
                .await
            }
        };
        let mut accepted = None;
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for ((sink, ready), result) in self.sinks.iter().zip(self.ready.iter()).zip(results) {
            let name = sink.name();
            match result {
                Ok(record) => {
                    accepted.get_or_insert(record);
                    ready.ready();
                    metrics::counter!("fedgate_audit_records_total", "sink" => name, "decision" => verdict)
                        .increment(1);
                }
                Err(err) => {
                    ready.not_ready(format!("last write failed: {err}"));
                    metrics::counter!("fedgate_audit_errors_total", "sink" => name).increment(1);
                    tracing::error!(sink = name, error = %err, "audit sink refused a record");
                    errors.push(format!("{name}: {err}"));
                    failed.push(sink);
                }
            }
        }
        match accepted {
            Some(record) => {
                // The record stands; a sink that missed it gets it later, so each chain
                // stays complete.
                for sink in failed {
                    sink.backfill(&record);
                }
                Ok(id)
            }
            None => Err(AuditError(errors.join("; "))),
        }
    }
}

/// Runs one sink's write, timed in `fedgate_audit_write_duration_seconds{sink}`.
async fn timed<T>(sink: &Sink, write: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let result = write.await;
    metrics::histogram!("fedgate_audit_write_duration_seconds", "sink" => sink.name())
        .record(started.elapsed().as_secs_f64());
    result
}
