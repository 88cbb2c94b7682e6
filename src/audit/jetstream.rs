//! The JetStream sink: records go to a stream that refuses deletes and purges, one subject per
//! instance (`<subject>.<instance>`), each subject its own hash chain. Several instances share
//! one stream and so one durable trail.
//!
//! Each record is published with `Nats-Msg-Id` set to the record id, so a retried publish is
//! stored once, and with `Nats-Expected-Last-Subject-Sequence` set to the stream sequence of the
//! instance's previous record, so the chain can neither fork nor skip: if anything else wrote to
//! the subject in between (two processes configured with one instance name), the server refuses
//! the write, the sink re-reads the chain's end from the stream, and seals the record again on top
//! of it. Records are written one at a time per instance for the same reason.
//!
//! The stream is created on first use with `deny_delete`, `deny_purge`, a deduplication window,
//! `max_bytes` and `discard = new`: when it is full, writes fail (and, with no other sink,
//! requests are refused) rather than old records silently disappearing. An existing stream that
//! allows deletes or purges is refused at start-up.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, StorageType, Stream,
};
use async_nats::jetstream::{self, ErrorCode};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::file::{QUEUE, SinkError};
use super::record::{self, ChainState, Event, Kind, MAX_RECORD_BYTES, Record};
use crate::nats::{self, NatsEndpoint};

/// How many times one record is sealed again after another writer moved the chain's end.
const RESEALS: usize = 3;

/// How the JetStream sink writes.
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// The NATS network holding the stream.
    pub endpoint: NatsEndpoint,
    /// Stream name.
    pub stream: String,
    /// Subject prefix; this instance writes to `<subject>.<instance>`.
    pub subject: String,
    /// The instance name written in each record.
    pub instance: String,
    /// Replicas when the stream is created.
    pub replicas: usize,
    /// Stream size limit when it is created; writes fail beyond it.
    pub max_bytes: i64,
    /// How long the server remembers record ids for deduplication.
    pub duplicate_window: Duration,
    /// How long to wait for the server's acknowledgement.
    pub timeout: Duration,
}

impl JetStreamOptions {
    /// The subject this instance's chain lives on; characters a subject token cannot hold
    /// (`.`, `*`, `>`, whitespace) become `_` (host names have dots).
    pub fn chain_subject(&self) -> String {
        let token: String = self
            .instance
            .chars()
            .map(|c| match c {
                '.' | '*' | '>' => '_',
                c if c.is_whitespace() => '_',
                c => c,
            })
            .collect();
        format!("{}.{token}", self.subject)
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("audit stream {stream}: {message}")]
pub struct OpenError {
    /// The stream.
    pub stream: String,
    /// What is wrong.
    pub message: String,
}

struct Job {
    kind: Kind,
    id: String,
    event: Event,
    reply: oneshot::Sender<Result<Record, SinkError>>,
}

/// A handle to the writer task; cheap to clone. The task stops when the last handle drops.
#[derive(Clone)]
pub struct JetStreamSink {
    jobs: mpsc::Sender<Job>,
}

impl JetStreamSink {
    /// Connects, makes sure the stream exists and refuses deletes and purges, resumes this
    /// instance's chain from the stream, and starts the writer task.
    pub async fn open(options: JetStreamOptions) -> Result<JetStreamSink, OpenError> {
        let error = |message: String| OpenError {
            stream: options.stream.clone(),
            message,
        };
        let client = nats::connect(
            &options.endpoint,
            &format!("fedgate audit {}", options.instance),
        )
        .await
        .map_err(|e| error(e.to_string()))?;
        let mut context = jetstream::new(client);
        context.set_timeout(options.timeout);
        let stream = ensure_stream(&context, &options).await.map_err(error)?;
        let subject = options.chain_subject();
        let end = chain_end(&stream, &subject, &options.instance)
            .await
            .map_err(error)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            context,
            stream,
            subject,
            instance: options.instance,
            end,
            unacknowledged: None,
            late: None,
            open_until: None,
        };
        tokio::spawn(writer.run(queue));
        Ok(JetStreamSink { jobs })
    }

    /// Writes one event as record `id` and waits for the stream's acknowledgement.
    pub async fn append(&self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        let (reply, done) = oneshot::channel();
        let job = Job {
            kind,
            id,
            event,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SinkError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SinkError::Stopped),
        }
        done.await.unwrap_or(Err(SinkError::Stopped))
    }
}

/// The stream configuration fedgate creates.
fn stream_config(options: &JetStreamOptions) -> StreamConfig {
    StreamConfig {
        name: options.stream.clone(),
        description: Some("fedgate audit trail: one hash chain per instance subject".into()),
        subjects: vec![format!("{}.>", options.subject)],
        storage: StorageType::File,
        num_replicas: options.replicas,
        max_bytes: options.max_bytes,
        discard: DiscardPolicy::New,
        max_message_size: (MAX_RECORD_BYTES + 1024) as i32,
        duplicate_window: options.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..StreamConfig::default()
    }
}

/// Gets the stream, creating it if it does not exist, and checks it cannot lose records.
async fn ensure_stream(
    context: &jetstream::Context,
    options: &JetStreamOptions,
) -> Result<Stream, String> {
    let not_found = |code: ErrorCode| code == ErrorCode::STREAM_NOT_FOUND;
    let mut stream = match context.get_stream(&options.stream).await {
        Ok(stream) => stream,
        Err(err) => match err.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js) if not_found(js.error_code()) => {
                match context.create_stream(stream_config(options)).await {
                    Ok(stream) => stream,
                    // Another instance created it first.
                    Err(_) => context
                        .get_stream(&options.stream)
                        .await
                        .map_err(|e| format!("cannot create or open the stream: {e}"))?,
                }
            }
            _ => return Err(format!("cannot open the stream: {err}")),
        },
    };
    let config = &stream
        .info()
        .await
        .map_err(|e| format!("cannot read the stream's configuration: {e}"))?
        .config;
    if !config.deny_delete || !config.deny_purge {
        return Err(
            "the stream allows deleting or purging messages; an audit trail must not (set deny_delete and deny_purge)".into(),
        );
    }
    let subject = options.chain_subject();
    if !config
        .subjects
        .iter()
        .any(|pattern| subject_matches(pattern, &subject))
    {
        return Err(format!(
            "the stream's subjects {:?} do not include {subject}",
            config.subjects
        ));
    }
    Ok(stream)
}

/// NATS subject matching: `*` is one token, `>` the rest.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(token)) if expected == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Where this instance's chain ends in the stream.
#[derive(Clone, Debug)]
struct ChainEnd {
    /// The next record's chain position.
    state: ChainState,
    /// The stream sequence of the last record on the subject (0: none).
    stream_seq: u64,
    /// The id of the last record on the subject.
    last_id: Option<String>,
}

/// Reads the last record on `subject` and checks it: a chain whose end does not verify is not
/// continued.
async fn chain_end(stream: &Stream, subject: &str, instance: &str) -> Result<ChainEnd, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let last = record::check_line(&message.payload).map_err(|e| {
                format!(
                    "the last record on {subject} (stream sequence {}) does not verify: {e}",
                    message.sequence
                )
            })?;
            if last.instance != instance {
                return Err(format!(
                    "the last record on {subject} was written by instance {:?}",
                    last.instance
                ));
            }
            Ok(ChainEnd {
                state: ChainState {
                    seq: last.seq + 1,
                    prev: last.hash,
                },
                stream_seq: message.sequence,
                last_id: Some(last.id),
            })
        }
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(ChainEnd {
            state: ChainState::genesis(),
            stream_seq: 0,
            last_id: None,
        }),
        Err(err) => Err(format!("cannot read the end of {subject}: {err}")),
    }
}

struct Writer {
    context: jetstream::Context,
    stream: Stream,
    subject: String,
    instance: String,
    end: ChainEnd,
    /// The last record reported failed whose fate is unknown: the server may not have seen it,
    /// or the client may still deliver it after reconnecting. If it turns up at the chain's end,
    /// a correction record says so.
    unacknowledged: Option<String>,
    /// A record found at the chain's end after it was reported failed, not yet corrected.
    late: Option<String>,
    /// After a failed publish, records fail at once until then instead of each waiting for the
    /// acknowledgement timeout: one attempt per [`RETRY_AFTER`] while the stream is away.
    open_until: Option<tokio::time::Instant>,
}

/// How long the sink fails fast after a publish failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One publish attempt's outcome.
enum Attempt {
    Stored(u64),
    /// Something else wrote to the subject: re-read the end and seal again.
    Moved,
    Failed(String),
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(job) = queue.recv().await {
            let result = self.write(job.kind, job.id, job.event).await;
            let _ = job.reply.send(result);
        }
    }

    /// Writes `event`, first noting a record that reached the stream after it was reported
    /// failed (at most one can: the ones after it carried the same expected sequence).
    async fn write(&mut self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        if self
            .open_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
        {
            return Err(SinkError::Io(format!(
                "{} is unavailable: the last publish failed, retrying within {} s",
                self.subject,
                RETRY_AFTER.as_secs()
            )));
        }
        let result = self.write_one(kind, id, event).await;
        let Some(late) = self.late.take() else {
            return result;
        };
        let note = Event {
            stage: "audit".into(),
            code: "late_record".into(),
            reason: format!(
                "record {late} reached the stream after its write had been reported failed; the request it describes was decided without this sink's acknowledgement"
            ),
            links: vec![late.clone()],
            ..Event::default()
        };
        let correction = self
            .write_one(Kind::Correction, record::new_id(&self.instance), note)
            .await;
        if let Err(err) = correction {
            tracing::error!(subject = %self.subject, error = %err, "could not write an audit correction record; retrying with the next record");
            self.late.get_or_insert(late);
        }
        result
    }

    async fn write_one(
        &mut self,
        kind: Kind,
        id: String,
        event: Event,
    ) -> Result<Record, SinkError> {
        for _ in 0..RESEALS {
            let mut state = self.end.state.clone();
            let (sealed, line) = record::seal(
                kind,
                id.clone(),
                &self.instance,
                record::now(),
                event.clone(),
                &mut state,
            );
            match self.publish(&sealed.id, line).await {
                Attempt::Stored(stream_seq) => {
                    // Anything still in flight carries an older expected sequence and will be
                    // refused.
                    self.unacknowledged = None;
                    self.open_until = None;
                    self.end = ChainEnd {
                        state,
                        stream_seq,
                        last_id: Some(sealed.id.clone()),
                    };
                    return Ok(sealed);
                }
                Attempt::Moved => {
                    self.resync().await?;
                    if !self.notice_late() {
                        metrics::counter!("fedgate_audit_chain_conflicts_total").increment(1);
                        tracing::warn!(
                            subject = %self.subject,
                            "another writer appended to this instance's audit chain; sealing the record again on top of it (two processes with one instance name?)"
                        );
                    }
                }
                Attempt::Failed(message) => {
                    // Only a failed publish makes the sink fail fast; losing a race to another
                    // writer does not.
                    self.open_until = Some(tokio::time::Instant::now() + RETRY_AFTER);
                    // The record may have been stored without the acknowledgement arriving:
                    // the stream's end says which.
                    let resynced = self.resync().await;
                    if resynced.is_ok() && self.end.last_id.as_deref() == Some(sealed.id.as_str()) {
                        self.unacknowledged = None;
                        self.open_until = None;
                        return Ok(sealed);
                    }
                    if resynced.is_ok() {
                        self.notice_late();
                    }
                    // Every record failed since the last stored one carries the same expected
                    // sequence, so only the first of them can still land.
                    self.unacknowledged.get_or_insert_with(|| sealed.id.clone());
                    let then = resynced.err().map(|e| format!("; then {e}"));
                    return Err(SinkError::Io(format!(
                        "publishing to {}: {message}{}",
                        self.subject,
                        then.unwrap_or_default()
                    )));
                }
            }
        }
        Err(SinkError::Io(format!(
            "{} kept moving under this writer; is another process using instance name {}?",
            self.subject, self.instance
        )))
    }

    async fn publish(&self, id: &str, line: Vec<u8>) -> Attempt {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            self.end.stream_seq.to_string().as_str(),
        );
        let ack = match self
            .context
            .publish_with_headers(self.subject.clone(), headers, line.into())
            .await
        {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match ack {
            Ok(ack) => Attempt::Stored(ack.sequence),
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Attempt::Moved,
            Err(err) => Attempt::Failed(err.to_string()),
        }
    }

    /// Re-reads the chain's end.
    async fn resync(&mut self) -> Result<(), SinkError> {
        self.end = chain_end(&self.stream, &self.subject, &self.instance)
            .await
            .map_err(SinkError::Io)?;
        Ok(())
    }

    /// True when the chain's end is a record reported failed earlier: it is noted for a
    /// correction record.
    fn notice_late(&mut self) -> bool {
        if self.unacknowledged.is_none() || self.end.last_id != self.unacknowledged {
            return false;
        }
        metrics::counter!("fedgate_audit_late_records_total").increment(1);
        self.late = self.unacknowledged.take();
        true
    }
}

/// Every record of the stream, grouped by instance subject, in stream order: what `fedgate audit
/// export` writes out for review.
pub async fn read_all(
    endpoint: &NatsEndpoint,
    stream: &str,
    mut each: impl FnMut(&str, &[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let client = nats::connect(endpoint, "fedgate audit export")
        .await
        .map_err(|e| e.to_string())?;
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(stream)
        .await
        .map_err(|e| format!("cannot open stream {stream}: {e}"))?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| format!("cannot read the stream: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read the stream: {e}"))?;
    let mut count = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("reading the stream: {e}"))?;
        let sequence = message
            .info()
            .map_err(|e| format!("reading the stream: {e}"))?
            .stream_sequence;
        each(message.subject.as_str(), &message.payload)?;
        count += 1;
        if sequence >= last {
            break;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches("fedgate.audit.>", "fedgate.audit.gw1"));
        assert!(subject_matches("fedgate.audit.*", "fedgate.audit.gw1"));
        assert!(subject_matches("fedgate.audit.gw1", "fedgate.audit.gw1"));
        assert!(!subject_matches("fedgate.audit.>", "fedgate.audit"));
        assert!(!subject_matches("fedgate.audit.*", "fedgate.audit.gw1.x"));
        assert!(!subject_matches("fedgate.audit.gw2", "fedgate.audit.gw1"));
        assert!(!subject_matches("fedgate.audit.gw1.x", "fedgate.audit.gw1"));
    }
}
