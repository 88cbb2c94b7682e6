//! The writer task: seals each record onto the end of this instance's chain and publishes it
//! with the expected last sequence, sealing again when another writer moved the end, failing
//! fast while the stream is away, and noting records that landed after they were reported failed.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::Stream;
use tokio::sync::mpsc;

use super::Job;
use super::stream::{ChainEnd, chain_end};
use crate::audit::file::SinkError;
use crate::audit::record::{self, Event, Kind, Record};

/// How many times one record is sealed again after another writer moved the chain's end.
const RESEALS: usize = 3;

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
        }
    }

    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
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
