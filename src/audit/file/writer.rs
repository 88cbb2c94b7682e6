//! The file sink's writer: the file, the chain and the trail's budget behind the sink's lock,
//! and the thread that writes what callers hand it, syncs, checkpoints on time and rotates.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::budget::Budget;
use super::{
    AUDIT_FILE_MODE, BATCH, FileOptions, Fsync, Job, Message, OpenError, SinkError, check_recent,
    file_name, last_state, newest_rotated, rotated_path, rotation_number, trail_bytes,
};
use crate::audit::checkpoint::Cadence;
use crate::audit::record::{self, ChainState, Event, Kind, Record};

pub(super) struct Writer {
    options: FileOptions,
    file: File,
    /// Bytes of whole records in the active file.
    len: u64,
    chain: ChainState,
    /// When the next checkpoint is due (with a signer).
    cadence: Option<Cadence>,
    /// How full the trail's allowance and disk are.
    budget: Budget,
    synced: Instant,
    dirty: bool,
    /// A write failed and the file could not be cut back: refuse until restarted.
    broken: Option<String>,
    /// The sink was closed: the thread wrote its last checkpoint, and refuses what comes after.
    closed: bool,
    /// When the thread wakes next unless handed something.
    wakes_at: Instant,
}

impl Writer {
    pub(super) fn open(options: FileOptions) -> Result<Writer, OpenError> {
        let path = options.path.clone();
        let error = |message: String| OpenError {
            path: path.clone(),
            message,
        };
        let existing = std::fs::metadata(&options.path)
            .map(|m| m.len())
            .unwrap_or(0);
        if let Some(signer) = &options.checkpoints {
            check_recent(&options.path, signer).map_err(error)?;
        }
        let (chain, previous_file) = if existing > 0 {
            (last_state(&options.path).map_err(error)?, None)
        } else {
            match newest_rotated(&options.path) {
                Some(rotated) => (
                    last_state(&rotated).map_err(error)?,
                    Some(file_name(&rotated)),
                ),
                None => (ChainState::genesis(), None),
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(AUDIT_FILE_MODE)
            .open(&options.path)
            .map_err(|e| error(e.to_string()))?;
        let cadence = options.checkpoints.as_ref().map(|s| s.cadence());
        let budget = Budget::new(
            &options.path,
            options.budget_bytes,
            trail_bytes(&options.path),
        );
        let mut writer = Writer {
            options,
            file,
            len: existing,
            chain,
            cadence,
            budget,
            synced: Instant::now(),
            dirty: false,
            broken: None,
            closed: false,
            wakes_at: Instant::now(),
        };
        if existing == 0 {
            writer.write_header(previous_file).map_err(error)?;
        }
        // Anchor whatever the last run left unanchored (and the header), at once.
        if writer.cadence.is_some() {
            let mut buffer = Vec::new();
            writer.seal_checkpoint(&mut buffer);
            writer
                .write(&buffer)
                .and_then(|()| writer.sync())
                .map_err(error)?;
        }
        Ok(writer)
    }

    /// Whether a caller may write its record itself: not after close, and not when the write
    /// could rotate the file or must be synced first, which are slow enough to leave to the
    /// thread.
    pub(super) fn writes_inline(&self) -> bool {
        const HEADROOM: u64 = 2 * record::MAX_RECORD_BYTES as u64 + 2;
        !self.closed
            && self.options.fsync != Fsync::Always
            && self.len.saturating_add(HEADROOM) < self.options.rotate_bytes
    }

    /// After a caller's own write: whether the thread must wake before it planned to, for the
    /// checkpoint the records now waiting are owed (due now, or sooner than it would wake). The
    /// caller writes no checkpoint itself: that syncs the file, which is the thread's to do.
    pub(super) fn after_inline(&self) -> bool {
        self.cadence
            .as_ref()
            .and_then(Cadence::wait)
            .is_some_and(|wait| Instant::now() + wait < self.wakes_at)
    }

    /// Seals `event` onto the chain into `buffer`, followed by a checkpoint when one is due.
    fn seal_into(&mut self, kind: Kind, id: String, event: Event, buffer: &mut Vec<u8>) -> Record {
        let (record, line) = record::seal(
            kind,
            id,
            &self.options.instance,
            record::now(),
            event,
            &mut self.chain,
        );
        buffer.extend_from_slice(&line);
        buffer.push(b'\n');
        if self.cadence.as_mut().is_some_and(Cadence::wrote) {
            self.seal_checkpoint(buffer);
        }
        record
    }

    /// Seals a checkpoint of the chain so far into `buffer`.
    fn seal_checkpoint(&mut self, buffer: &mut Vec<u8>) {
        let (Some(signer), Some(cadence)) = (&self.options.checkpoints, &mut self.cadence) else {
            return;
        };
        let (_, line) = signer.seal(
            record::new_id(&self.options.instance),
            &self.options.instance,
            &mut self.chain,
        );
        cadence.anchored();
        buffer.extend_from_slice(&line);
        buffer.push(b'\n');
        metrics::counter!("fedgate_audit_checkpoints_total", "sink" => "file").increment(1);
    }

    /// Writes a checkpoint when records have waited the interval for one.
    fn checkpoint_if_due(&mut self) {
        if self.cadence.as_ref().is_some_and(Cadence::due_by_time) {
            self.checkpoint_now();
        }
    }

    /// Writes a checkpoint of the chain so far.
    fn checkpoint_now(&mut self) {
        if self.broken.is_some() {
            return;
        }
        let before = (self.chain.clone(), self.cadence.clone());
        let mut buffer = Vec::new();
        self.seal_checkpoint(&mut buffer);
        if let Err(err) = self.write(&buffer).and_then(|()| self.sync()) {
            tracing::error!(file = %self.options.path.display(), error = %err, "audit checkpoint not written; retrying");
            (self.chain, self.cadence) = before;
            if let Err(cut) = self.file.set_len(self.len) {
                self.broken = Some(format!(
                    "writing a checkpoint: {err}; then cutting back failed: {cut}"
                ));
            }
        }
    }

    pub(super) fn write_batch(&mut self, batch: Vec<Job>) {
        if let Some(broken) = &self.broken {
            for job in batch {
                let _ = job.reply.send(Err(SinkError::Io(broken.clone())));
            }
            return;
        }
        let before = (self.chain.clone(), self.cadence.clone());
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        let mut sealed = Vec::with_capacity(batch.len());
        for job in batch {
            let record = self.seal_into(job.kind, job.id, job.event, &mut buffer);
            sealed.push((record, job.reply));
        }
        let result = self
            .budget
            .admit(buffer.len() as u64)
            .and_then(|()| self.write(&buffer))
            .and_then(|()| {
                if self.options.fsync == Fsync::Always {
                    self.sync()
                } else {
                    Ok(())
                }
            });
        match result {
            Ok(()) => {
                for (record, reply) in sealed {
                    let _ = reply.send(Ok(record));
                }
                if self.len >= self.options.rotate_bytes
                    && let Err(err) = self.rotate()
                {
                    tracing::error!(file = %self.options.path.display(), error = %err, "audit rotation failed");
                    self.broken = Some(format!("rotation failed: {err}"));
                }
            }
            Err(err) => {
                (self.chain, self.cadence) = before;
                let message = format!("writing {}: {err}", self.options.path.display());
                tracing::error!("audit {message}; refusing the requests it describes");
                if let Err(cut) = self.file.set_len(self.len) {
                    self.broken = Some(format!("{message}; then cutting back failed: {cut}"));
                }
                for (_, reply) in sealed {
                    let _ = reply.send(Err(SinkError::Io(message.clone())));
                }
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file.write_all(bytes).map_err(|e| e.to_string())?;
        self.len += bytes.len() as u64;
        self.budget.wrote(bytes.len() as u64);
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("fdatasync: {e}"))?;
        self.synced = Instant::now();
        self.dirty = false;
        Ok(())
    }

    fn sync_if_due(&mut self) {
        if self.options.fsync == Fsync::Interval
            && self.dirty
            && self.synced.elapsed() >= self.options.fsync_interval
            && let Err(err) = self.sync()
        {
            tracing::error!(file = %self.options.path.display(), error = %err, "audit sync failed");
        }
    }

    fn write_header(&mut self, previous_file: Option<String>) -> Result<(), String> {
        let event = Event {
            previous_file,
            ..Event::default()
        };
        let mut buffer = Vec::new();
        let id = record::new_id(&self.options.instance);
        self.seal_into(Kind::Header, id, event, &mut buffer);
        self.write(&buffer)?;
        self.sync()
    }

    /// Renames the active file to the next `<name>.<NNNNNN>` and starts a new one with a header.
    fn rotate(&mut self) -> Result<(), String> {
        self.sync()?;
        let number = newest_rotated(&self.options.path)
            .and_then(|p| rotation_number(&p))
            .map_or(1, |n| n + 1);
        let rotated = rotated_path(&self.options.path, number);
        std::fs::rename(&self.options.path, &rotated).map_err(|e| e.to_string())?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(AUDIT_FILE_MODE)
            .open(&self.options.path)
            .map_err(|e| e.to_string())?;
        self.len = 0;
        self.write_header(Some(file_name(&rotated)))
    }
}

/// The writer thread: writes what callers hand it, in batches, and syncs and checkpoints on time.
pub(super) fn run(writer: &Mutex<Writer>, queue: Receiver<Message>) {
    // A write that panicked may have moved the chain past what is on disk: fail closed.
    let lock = || {
        writer.lock().unwrap_or_else(|poisoned| {
            let mut writer = poisoned.into_inner();
            writer
                .broken
                .get_or_insert_with(|| "an audit write panicked; restart fedgate".into());
            writer
        })
    };
    let closed = loop {
        let wait = {
            let mut writer = lock();
            // Dirty records are synced an interval after the last sync, not after this wait.
            let sync = if writer.dirty {
                writer
                    .options
                    .fsync_interval
                    .saturating_sub(writer.synced.elapsed())
            } else {
                writer.options.fsync_interval
            };
            let wait = writer
                .cadence
                .as_ref()
                .and_then(Cadence::wait)
                .map_or(sync, |due| due.min(sync));
            writer.wakes_at = Instant::now() + wait;
            wait
        };
        let first = match queue.recv_timeout(wait) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                maintain(&mut lock());
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break None,
        };
        let mut batch = Vec::new();
        let mut closing = None;
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Write(job) => batch.push(*job),
                Message::Close(ack) => {
                    closing = Some(ack);
                    break;
                }
                Message::Wake => {}
            }
            next = (batch.len() < BATCH)
                .then(|| queue.try_recv().ok())
                .flatten();
        }
        let mut writer = lock();
        if !batch.is_empty() {
            writer.write_batch(batch);
        }
        if closing.is_some() {
            writer.closed = true;
            break closing;
        }
        maintain(&mut writer);
    };
    let mut writer = lock();
    writer.closed = true;
    // A clean stop anchors what is left, so a trail that ends unanchored was cut or crashed.
    if writer.cadence.as_ref().and_then(Cadence::wait).is_some() {
        writer.checkpoint_now();
    }
    let _ = writer.file.sync_data();
    drop(writer);
    if let Some(ack) = closed {
        let _ = ack.send(());
    }
}

/// The writer's work on time: a checkpoint when records waited long enough, a sync when due.
fn maintain(writer: &mut MutexGuard<'_, Writer>) {
    writer.checkpoint_if_due();
    writer.sync_if_due();
}
