//! The file sink: one writer thread owns the file and the chain; callers hand it events and wait
//! for the write. Events that arrive together are written together (group commit).
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
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::record::{self, ChainState, Event, Kind, Record};

/// Events waiting for the writer; more are refused (fail closed) rather than queued without end.
pub const QUEUE: usize = 8192;
/// Most events written in one batch.
const BATCH: usize = 512;
/// Audit files are created readable and writable by their owner only: they hold who did what.
pub const AUDIT_FILE_MODE: u32 = 0o600;

/// When the file is flushed to stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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

/// A handle to the writer thread; cheap to clone. The thread stops when the last handle drops.
#[derive(Clone)]
pub struct FileSink {
    jobs: SyncSender<Job>,
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
        let writer = Writer::open(options.clone())?;
        let (jobs, queue) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("fedgate-audit".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| OpenError {
                path: options.path.clone(),
                message: format!("cannot start the writer: {e}"),
            })?;
        Ok(FileSink { jobs })
    }

    /// Writes one event as record `id` and waits until it is written (and synced, per policy).
    pub async fn append(&self, kind: Kind, id: String, event: Event) -> Result<Record, SinkError> {
        let (reply, done) = oneshot::channel();
        match self.jobs.try_send(Job {
            kind,
            id,
            event,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SinkError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SinkError::Stopped),
        }
        done.await.unwrap_or(Err(SinkError::Stopped))
    }
}

struct Writer {
    options: FileOptions,
    file: File,
    /// Bytes of whole records in the active file.
    len: u64,
    chain: ChainState,
    synced: Instant,
    dirty: bool,
    /// A write failed and the file could not be cut back: refuse until restarted.
    broken: Option<String>,
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
        let mut writer = Writer {
            options,
            file,
            len: existing,
            chain,
            synced: Instant::now(),
            dirty: false,
            broken: None,
        };
        if existing == 0 {
            writer.write_header(previous_file).map_err(error)?;
        }
        Ok(writer)
    }

    fn run(mut self, queue: Receiver<Job>) {
        loop {
            let first = match queue.recv_timeout(self.options.fsync_interval) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.sync_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
            self.sync_if_due();
        }
        let _ = self.file.sync_data();
    }

    fn write_batch(&mut self, batch: Vec<Job>) {
        if let Some(broken) = &self.broken {
            for job in batch {
                let _ = job.reply.send(Err(SinkError::Io(broken.clone())));
            }
            return;
        }
        let before = self.chain.clone();
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        let mut sealed = Vec::with_capacity(batch.len());
        for job in batch {
            let (record, line) = record::seal(
                job.kind,
                job.id,
                &self.options.instance,
                record::now(),
                job.event,
                &mut self.chain,
            );
            buffer.extend_from_slice(&line);
            buffer.push(b'\n');
            sealed.push((record, job.reply));
        }
        let result = self.write(&buffer).and_then(|()| {
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
                self.chain = before;
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
        let (_, mut line) = record::seal(
            Kind::Header,
            record::new_id(&self.options.instance),
            &self.options.instance,
            record::now(),
            event,
            &mut self.chain,
        );
        line.push(b'\n');
        self.write(&line)?;
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
