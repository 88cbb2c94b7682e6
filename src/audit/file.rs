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

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

mod budget;
mod writer;

use writer::{Writer, run};

use super::checkpoint::Signer;
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
