//! The writer task: seals each record onto the end of this instance's chain and publishes it
//! with the expected last sequence, sealing again when another writer moved the end, failing
//! fast while the stream is away, noting records that landed after they were reported failed,
//! and publishing, once the stream is back, the records another sink took while it was away.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::Stream;
use tokio::sync::mpsc;

use super::Message;
use super::stream::{ChainEnd, chain_end};
use crate::audit::checkpoint::{Cadence, Signer};
use crate::audit::file::SinkError;
use crate::audit::record::{self, Event, Kind, Record};

/// How many times one record is sealed again after another writer moved the chain's end.
const RESEALS: usize = 3;
/// Most records kept for the stream while it is away (each at most `MAX_RECORD_BYTES`).
pub(super) const BACKLOG: usize = 10_000;

/// The one task that writes this instance's chain.
pub(super) struct Writer {
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
    /// Signs checkpoints into the chain, and when.
    checkpoints: Option<(Arc<Signer>, Cadence)>,
    /// Records another sink accepted while this stream was away, oldest first: published before
    /// any newer record, with their own time and id.
    backlog: VecDeque<Record>,
    /// Records that did not fit in the backlog since it was last emptied.
    dropped: u64,
}

/// What one publish carries: a record of the caller's, or a checkpoint of the chain so far
/// (sealed against wherever the chain ends when it is published).
#[derive(Clone)]
enum Content {
    /// A record: its kind, id, event, and its time when it was first sealed elsewhere.
    Record(Kind, String, Box<Event>, Option<String>),
    Checkpoint,
}

/// How long the sink fails fast after a publish failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One publish attempt's outcome.
enum Attempt {
    Stored(u64),
    /// The stream already holds a message with this id (it landed after a failed
    /// acknowledgement): nothing new was stored.
    Duplicate,
    /// Something else wrote to the subject: re-read the end and seal again.
    Moved,
    Failed(String),
}

impl Writer {
    /// A writer that continues the chain from `end`.
    pub(super) fn new(
        context: jetstream::Context,
        stream: Stream,
        subject: String,
        instance: String,
        end: ChainEnd,
    ) -> Writer {
        Writer {
            context,
            stream,
            subject,
            instance,
            end,
            unacknowledged: None,
            late: None,
            open_until: None,
            checkpoints: None,
            backlog: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Signs a checkpoint every so many records or seconds with `signer`.
    pub(super) fn with_checkpoints(mut self, signer: Option<Arc<Signer>>) -> Writer {
        self.checkpoints = signer.map(|signer| {
            let cadence = signer.cadence();
            (signer, cadence)
        });
        self
    }

    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Message>) {
        // Anchor whatever the last run left.
        if self.end.state.seq > 0 {
            self.checkpoint().await;
        }
        loop {
            let checkpoint = self.checkpoints.as_ref().and_then(|(_, c)| c.wait());
            // While records wait for the stream, try it again every so often.
            let backfill = (!self.backlog.is_empty() || self.dropped > 0).then_some(RETRY_AFTER);
            let due = match (checkpoint, backfill) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let job = match due {
                Some(wait) => tokio::select! {
                    job = queue.recv() => job,
                    () = tokio::time::sleep(wait) => {
                        let checkpoint_due = checkpoint.is_some_and(|c| c <= wait);
                        if self.drain().await.is_ok() && checkpoint_due {
                            self.checkpoint().await;
                        }
                        continue;
                    }
                },
                None => queue.recv().await,
            };
            let job = match job {
                Some(Message::Write(job)) => *job,
                Some(Message::Backfill(record)) => {
                    self.keep(*record);
                    continue;
                }
                stop => {
                    let _ = self.drain().await;
                    // A clean stop anchors what is left.
                    if self
                        .checkpoints
                        .as_ref()
                        .and_then(|(_, c)| c.wait())
                        .is_some()
                    {
                        self.checkpoint().await;
                    }
                    if let Some(Message::Close(ack)) = stop {
                        let _ = ack.send(());
                    }
                    break;
                }
            };
            let result = self.write(job.kind, job.id, job.event).await;
            let stored = result.is_ok();
            let _ = job.reply.send(result);
            if stored
                && self
                    .checkpoints
                    .as_mut()
                    .is_some_and(|(_, cadence)| cadence.wrote())
            {
                self.checkpoint().await;
            }
        }
    }

    /// Publishes a checkpoint of the chain so far; a failure is logged and the checkpoint stays
    /// due, so the next record or tick tries again.
    async fn checkpoint(&mut self) {
        if self.checkpoints.is_none() {
            return;
        }
        match self.write_one(Content::Checkpoint).await {
            Ok(_) => {
                if let Some((_, cadence)) = &mut self.checkpoints {
                    cadence.anchored();
                }
                metrics::counter!("fedgate_audit_checkpoints_total", "sink" => "jetstream")
                    .increment(1);
            }
            Err(err) => {
                tracing::error!(subject = %self.subject, error = %err, "audit checkpoint not written; retrying");
            }
        }
    }

    /// Keeps `record`, which another sink took while this stream failed it, for later.
    fn keep(&mut self, record: Record) {
        if self.backlog.len() < BACKLOG {
            self.backlog.push_back(record);
        } else {
            self.dropped += 1;
            metrics::counter!("fedgate_audit_backfill_dropped_total").increment(1);
        }
    }

    /// Fails at once while a failed publish is recent.
    fn fail_fast(&self) -> Result<(), SinkError> {
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
        Ok(())
    }

    /// Publishes the backlog in order, then notes what did not fit in it; stops at the first
    /// failure, keeping the rest.
    async fn drain(&mut self) -> Result<(), SinkError> {
        if self.backlog.is_empty() && self.dropped == 0 {
            return Ok(());
        }
        self.fail_fast()?;
        while let Some(record) = self.backlog.front().cloned() {
            let id = record.id.clone();
            // One that landed late is at the end already.
            if self.end.last_id.as_deref() != Some(id.as_str()) {
                let content = Content::Record(
                    record.kind,
                    record.id,
                    Box::new(record.event),
                    Some(record.time),
                );
                self.write_one(content).await?;
                metrics::counter!("fedgate_audit_backfilled_total").increment(1);
            }
            // Writing it may have found it late and taken it out already.
            if self.backlog.front().is_some_and(|r| r.id == id) {
                self.backlog.pop_front();
            }
        }
        if self.dropped > 0 {
            let note = Event {
                stage: "audit".into(),
                code: "missing_records".into(),
                reason: format!(
                    "{} record(s) another sink accepted while this stream was away are missing here: the backlog of {BACKLOG} was full; the file trail holds them",
                    self.dropped
                ),
                ..Event::default()
            };
            let id = record::new_id(&self.instance);
            self.write_one(Content::Record(Kind::Correction, id, Box::new(note), None))
                .await?;
            self.dropped = 0;
        }
        Ok(())
    }

    /// Writes `event` after any backlog, first noting a record that reached the stream after
    /// it was reported failed (at most one can: the ones after it carried the same expected
    /// sequence).
    async fn write(&mut self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        self.fail_fast()?;
        // Older records first: if they cannot go, neither can this one.
        self.drain().await?;
        let result = self
            .write_one(Content::Record(kind, id, Box::new(event), None))
            .await;
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
            .write_one(Content::Record(
                Kind::Correction,
                record::new_id(&self.instance),
                Box::new(note),
                None,
            ))
            .await;
        if let Err(err) = correction {
            tracing::error!(subject = %self.subject, error = %err, "could not write an audit correction record; retrying with the next record");
            self.late.get_or_insert(late);
        }
        result
    }

    async fn write_one(&mut self, content: Content) -> Result<Record, SinkError> {
        // A checkpoint keeps its id across reseals, as a record does, so a retried publish is
        // stored once.
        let checkpoint_id = record::new_id(&self.instance);
        for _ in 0..RESEALS {
            let mut state = self.end.state.clone();
            let (sealed, line) = match (&content, &self.checkpoints) {
                (Content::Record(kind, id, event, time), _) => record::seal(
                    *kind,
                    id.clone(),
                    &self.instance,
                    time.clone().unwrap_or_else(record::now),
                    (**event).clone(),
                    &mut state,
                ),
                (Content::Checkpoint, Some((signer, _))) => {
                    signer.seal(checkpoint_id.clone(), &self.instance, &mut state)
                }
                (Content::Checkpoint, None) => {
                    return Err(SinkError::Io("no checkpoint key".into()));
                }
            };
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
                Attempt::Duplicate => {
                    self.resync().await?;
                    self.notice_late();
                    return Ok(sealed);
                }
                Attempt::Moved => {
                    self.resync().await?;
                    // The record itself moved the end: it landed after a failed publish.
                    if self.end.last_id.as_deref() == Some(sealed.id.as_str()) {
                        self.notice_late();
                        return Ok(sealed);
                    }
                    if !self.notice_late() {
                        metrics::counter!("fedgate_audit_chain_conflicts_total").increment(1);
                        tracing::warn!(
                            subject = %self.subject,
                            "another writer appended to this instance's audit chain; sealing the record again on top of it (two processes with one instance name?)"
                        );
                    }
                }
                Attempt::Failed(message) => return self.publish_failed(sealed, message).await,
            }
        }
        Err(SinkError::Io(format!(
            "{} kept moving under this writer; is another process using instance name {}?",
            self.subject, self.instance
        )))
    }

    /// After a failed publish the sink fails fast for [`RETRY_AFTER`]; the record still counts
    /// as written if the stream's end turns out to be it, and is otherwise remembered as one
    /// that may land late.
    async fn publish_failed(
        &mut self,
        sealed: Record,
        message: String,
    ) -> Result<Record, SinkError> {
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
        Err(SinkError::Io(format!(
            "publishing to {}: {message}{}",
            self.subject,
            then.unwrap_or_default()
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
            Ok(ack) if ack.duplicate => Attempt::Duplicate,
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
        // It is in the stream after all: not to be published again.
        if let Some(late) = &self.late {
            self.backlog.retain(|record| &record.id != late);
        }
        true
    }
}
