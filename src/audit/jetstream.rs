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

mod stream;
mod writer;

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::{mpsc, oneshot};

use super::file::{QUEUE, SinkError};
use super::record::{Event, Kind, Record};
use crate::nats::{self, NatsEndpoint};
use stream::{chain_end, ensure_stream};
use writer::Writer;

pub use stream::read_all;

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
    /// Signs checkpoints into the chain, when configured.
    pub checkpoints: Option<std::sync::Arc<super::checkpoint::Signer>>,
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

/// One record for the writer task to write, and where its outcome goes.
struct Job {
    kind: Kind,
    id: String,
    event: Event,
    reply: oneshot::Sender<Result<Record, SinkError>>,
}

/// What the writer task is handed: a record to publish; a record another sink took while this
/// one could not, to publish once the stream is back; or the stop (answered once the last
/// checkpoint is stored).
enum Message {
    Write(Box<Job>),
    Backfill(Box<Record>),
    Close(oneshot::Sender<()>),
}

/// A handle to the writer task; cheap to clone. The task stops at [`JetStreamSink::close`], or
/// when the last handle drops.
#[derive(Clone)]
pub struct JetStreamSink {
    jobs: mpsc::Sender<Message>,
}

impl JetStreamSink {
    /// Connects, makes sure the stream exists and refuses deletes and purges, resumes this
    /// instance's chain from the stream, and starts the writer task.
    pub async fn open(options: JetStreamOptions) -> Result<JetStreamSink, OpenError> {
        let error = |message: String| OpenError {
            stream: options.stream.clone(),
            message,
        };
        let client = nats::connect_watched(
            &options.endpoint,
            &format!("fedgate audit {}", options.instance),
            "nats audit stream",
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
        let writer = Writer::new(context, stream, subject, options.instance, end)
            .with_checkpoints(options.checkpoints);
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
        match self.jobs.try_send(Message::Write(Box::new(job))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SinkError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SinkError::Stopped),
        }
        done.await.unwrap_or(Err(SinkError::Stopped))
    }

    /// Hands over `record`, which another sink accepted while this one failed, to be published
    /// in order once the stream is back, so that the stream's chain stays complete. The
    /// writer keeps a bounded backlog; what does not fit is counted and noted in the chain.
    pub fn backfill(&self, record: &Record) {
        if self
            .jobs
            .try_send(Message::Backfill(Box::new(record.clone())))
            .is_err()
        {
            metrics::counter!("fedgate_audit_backfill_dropped_total").increment(1);
        }
    }

    /// Stops the writer once the records handed to it before are published, with a last
    /// checkpoint stored after them (or given up on after its retries), so a process that exits
    /// next leaves its chain anchored.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.jobs.send(Message::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}
