//! The file sink: a writer owns the file and the chain behind a lock. A caller that finds it
//! free writes its own record at once, which spares a lone request two thread wake-ups; one that
//! finds it busy hands its event to the writer thread and waits, and events that wait together are
//! written together (group commit). The thread also syncs, checkpoints on time, and writes every
//! record that could rotate the file or must be synced before it is acknowledged.
//!
//! Durability (`fsync`):
//! - `interval` (default): each record is written to the file (the kernel's page cache) before
//!   the request it describes is forwarded, so it survives a crash of fedgate; the file is
//!   fdatasync'ed at least once per interval (1 s), so a power loss or kernel crash loses at most
//!   the last interval's records.
//! - `always`: each batch is fdatasync'ed before any of its requests is forwarded.
//! - `never`: left to the kernel.
//!
//! A failed write (full disk, file size limit, I/O error) fails every request of the batch, and
//! the file is cut back to its last whole record so the chain stays intact.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod budget;

use budget::Budget;

use super::checkpoint::{Cadence, Signer};
use super::record::{self, ChainState, Event, Kind, Record};

/// Events waiting for the writer; more are refused (fail closed) rather than queued without end.
pub const QUEUE: usize = 8192;
/// Most events written in one batch.
const BATCH: usize = 512;
/// Audit files are created readable and writable by their owner only: they hold who did what.
pub const AUDIT_FILE_MODE: u32 = 0o600;

/// When the file is flushed to stable storage.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fdatasync at least once per interval.
    #[default]
    Interval,
    /// fdatasync every batch before acknowledging it.
    Always,
    /// Never; the kernel decides.
    Never,
}

/// How the file sink writes.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// The active file; rotated files sit beside it as `<name>.<NNNNNN>`.
    pub path: PathBuf,
    /// Rotate when the active file reaches this size.
    pub rotate_bytes: u64,
    /// Durability policy.
    pub fsync: Fsync,
    /// The interval of [`Fsync::Interval`].
    pub fsync_interval: Duration,
    /// The instance name written in each record.
    pub instance: String,
    /// Signs checkpoints into the chain, when configured.
    pub checkpoints: Option<Arc<Signer>>,
    /// Bytes the whole trail may take; writes past it are refused.
    pub budget_bytes: Option<u64>,
}

/// Why a record could not be written.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SinkError {
    /// The writer has too many events waiting.
    #[error("audit queue is full")]
    Busy,
    /// The writer is gone.
    #[error("audit writer stopped")]
    Stopped,
    /// The write failed.
    #[error("{0}")]
    Io(String),
}

type Reply = oneshot::Sender<Result<Record, SinkError>>;

struct Job {
    kind: Kind,
    id: String,
    event: Event,
    reply: Reply,
}

/// What the writer thread is handed: a record to write, the stop (answered once the last
/// checkpoint is on disk), or a wake-up to look at the time left to the next checkpoint again.
enum Message {
    Write(Box<Job>),
    Close(oneshot::Sender<()>),
    Wake,
}

/// A handle to the writer; cheap to clone. The writer thread stops at [`FileSink::close`], or
/// when the last handle drops.
#[derive(Clone)]
pub struct FileSink {
    jobs: SyncSender<Message>,
    writer: Arc<Mutex<Writer>>,
}

/// Why the sink could not open its file.
#[derive(Debug, thiserror::Error)]
#[error("audit file {path}: {message}")]
pub struct OpenError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl FileSink {
    /// Opens (or creates) the active file, resumes its chain, and starts the writer thread.
    pub fn open(options: FileOptions) -> Result<FileSink, OpenError> {
        let writer = Arc::new(Mutex::new(Writer::open(options.clone())?));
        let (jobs, queue) = sync_channel(QUEUE);
        let owner = writer.clone();
        std::thread::Builder::new()
            .name("fedgate-audit".into())
            .spawn(move || run(&owner, queue))
            .map_err(|e| OpenError {
                path: options.path.clone(),
                message: format!("cannot start the writer: {e}"),
            })?;
        Ok(FileSink { jobs, writer })
    }

    /// Writes one event as record `id` and waits until it is written (and synced, per policy).
    pub async fn append(&self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        let (reply, done) = oneshot::channel();
        let job = Box::new(Job {
            kind,
            id,
            event,
            reply,
        });
        let Err(job) = self.write_inline(job) else {
            return done.await.unwrap_or(Err(SinkError::Stopped));
        };
        match self.jobs.try_send(Message::Write(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SinkError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SinkError::Stopped),
        }
        done.await.unwrap_or(Err(SinkError::Stopped))
    }

    /// Writes `job` here when the writer is free, without waking its thread and being woken
    /// back; gives it back when the thread must write it.
    fn write_inline(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) if writer.writes_inline() => writer,
            _ => return Err(job),
        };
        writer.write_batch(vec![*job]);
        let wake = writer.after_inline();
        drop(writer);
        if wake {
            // Full or stopped: the thread is awake, or there is nothing left to checkpoint.
            let _ = self.jobs.try_send(Message::Wake);
        }
        Ok(())
    }

    /// Stops the writer once the records handed to it before are written: it anchors them with
    /// a last checkpoint and syncs the file before this returns, so a process that exits next
    /// leaves a trail that ends anchored. Records handed over after this are refused as stopped.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        let jobs = self.jobs.clone();
        // The queue may be full: wait for room off the runtime's threads.
        let handed = tokio::task::spawn_blocking(move || jobs.send(Message::Close(ack)).is_ok())
            .await
            .unwrap_or(false);
        if handed {
            let _ = done.await;
        }
    }
}

struct Writer {
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
    fn open(options: FileOptions) -> Result<Writer, OpenError> {
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
    fn writes_inline(&self) -> bool {
        const HEADROOM: u64 = 2 * record::MAX_RECORD_BYTES as u64 + 2;
        !self.closed
            && self.options.fsync != Fsync::Always
            && self.len.saturating_add(HEADROOM) < self.options.rotate_bytes
    }

    /// After a caller's own write: whether the thread must wake before it planned to, for the
    /// checkpoint the records now waiting are owed (due now, or sooner than it would wake). The
    /// caller writes no checkpoint itself: that syncs the file, which is the thread's to do.
    fn after_inline(&self) -> bool {
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

    fn write_batch(&mut self, batch: Vec<Job>) {
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
fn run(writer: &Mutex<Writer>, queue: Receiver<Message>) {
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

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<active>.<NNNNNN>`.
pub fn rotated_path(active: &Path, number: u64) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{number:06}"));
    PathBuf::from(name)
}

fn rotation_number(path: &Path) -> Option<u64> {
    let name = file_name(path);
    let (_, number) = name.rsplit_once('.')?;
    (number.len() == 6).then(|| number.parse().ok()).flatten()
}

/// Bytes of the trail whose active file is `active`: that file and its rotated files.
fn trail_bytes(active: &Path) -> u64 {
    std::iter::once(active.to_path_buf())
        .chain(rotated_files(active))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The rotated files of `active`, oldest first.
pub fn rotated_files(active: &Path) -> Vec<PathBuf> {
    let dir = match active.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{}.", file_name(active));
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = file_name(&path);
            name.starts_with(&prefix)
                .then(|| rotation_number(&path).map(|n| (n, path)))
                .flatten()
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn newest_rotated(active: &Path) -> Option<PathBuf> {
    rotated_files(active).pop()
}

/// The start-up check of a trail with checkpoints: back to the last checkpoint, not just the
/// last line ([`super::review::verify_recent`]).
fn check_recent(active: &Path, signer: &Signer) -> Result<(), String> {
    let trail = super::review::trail(active);
    if trail.is_empty() {
        return Ok(());
    }
    let intact = super::review::verify_recent(&trail, &signer.public()).map_err(|broken| {
        format!(
            "the trail was altered since its last checkpoint: {broken}; run `fedgate audit verify --key` on it and move it aside"
        )
    })?;
    let anchors = intact.anchors.unwrap_or_default();
    if anchors.foreign > 0 {
        tracing::warn!(file = %active.display(), checkpoints = anchors.foreign, key = signer.id(), "audit checkpoints signed by another key (the key was changed?) were not checked at start-up");
    }
    if anchors.checkpoints == 0 {
        tracing::warn!(file = %active.display(), records = intact.records, "no checkpoint by this instance's key in the recent audit trail: checked its hash chain only, and anchoring it now");
    } else {
        tracing::info!(file = %active.display(), checkpoints = anchors.checkpoints, unanchored = anchors.unanchored, "audit trail checked back to its last checkpoint");
    }
    Ok(())
}

/// The chain position after the last record of `path`, which must end with a whole, valid record.
fn last_state(path: &Path) -> Result<ChainState, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let tail = len.min(2 * record::MAX_RECORD_BYTES as u64 + 2);
    file.seek(SeekFrom::Start(len - tail))
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(tail as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(format!(
            "{} ends with a torn record (no final newline); run `fedgate audit verify` on it and move it aside",
            path.display()
        ));
    };
    let last = body.rsplit(|b| *b == b'\n').next().unwrap_or(body);
    let record = record::check_line(last).map_err(|e| {
        format!(
            "the last record of {} is not valid ({e}); run `fedgate audit verify` on it and move it aside",
            path.display()
        )
    })?;
    Ok(ChainState {
        seq: record.seq + 1,
        prev: record.hash,
    })
}
