//! Reading audit files back: chain verification across rotated files, and record iteration for
//! `fedgate audit query` and `tail`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::checkpoint::{Anchors, Keys};
use super::record::{self, ChainState, LinkError, Record};

/// Where the chain first breaks.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: String,
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// Files checked, in chain order.
    pub files: Vec<PathBuf>,
    /// Records checked.
    pub records: u64,
    /// The seq and prev the first record starts from.
    pub start: ChainState,
    /// The position after the last record.
    pub end: ChainState,
    /// What the checkpoints prove, when keys were given.
    pub anchors: Option<Anchors>,
}

/// Whether and how checkpoints are checked.
#[derive(Clone, Copy, Debug)]
pub enum Anchoring<'k> {
    /// Only the hash chain.
    None,
    /// Every checkpoint must verify with one of `keys` and name the record before it; with
    /// `strict`, the chain must also have a checkpoint, none signed by another key, and no more
    /// records after one than it promised (`fedgate audit verify --key`). Without it, a
    /// checkpoint by another key is passed over (start-up, after a key change).
    Keys {
        /// The keys.
        keys: &'k Keys,
        /// The full check.
        strict: bool,
    },
}

/// Orders files by the seq of their first record (rotated names do not sort lexically with the
/// active file); a file whose first line cannot be read keeps its place at the front, where
/// verification reports it.
pub fn chain_order(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(Option<u64>, PathBuf)> = files
        .iter()
        .map(|path| (first_seq(path), path.clone()))
        .collect();
    keyed.sort_by_key(|(seq, _)| seq.unwrap_or(0));
    keyed.into_iter().map(|(_, p)| p).collect()
}

fn first_seq(path: &Path) -> Option<u64> {
    first_record(path).map(|r| r.seq)
}

fn first_record(path: &Path) -> Option<Record> {
    let mut line = Vec::new();
    BufReader::new(File::open(path).ok()?)
        .read_until(b'\n', &mut line)
        .ok()?;
    let line = line.strip_suffix(b"\n")?;
    serde_json::from_slice::<Record>(line).ok()
}

/// `files` grouped into chains by the instance that wrote them (each instance keeps its own
/// chain), by instance name; a file whose first record cannot be read is a chain of its own,
/// named by the file, so verification reports it.
pub fn chains(files: &[PathBuf]) -> Vec<(String, Vec<PathBuf>)> {
    let mut chains: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for path in files {
        let name = first_record(path)
            .map(|r| r.instance)
            .unwrap_or_else(|| path.display().to_string());
        chains.entry(name).or_default().push(path.clone());
    }
    chains.into_iter().collect()
}

/// Verifies that `files` (in any order) form one whole, unbroken chain: it starts at its genesis
/// (seq 0, after the all-zero hash), every line is canonical with a good hash, every `prev` names
/// the record before, and seq has no gaps, across file boundaries. A chain whose beginning was
/// cut (its first lines, or its oldest rotated files, removed) is refused, naming the records
/// missing.
pub fn verify(files: &[PathBuf]) -> Result<Intact, Broken> {
    verify_from(files, None)
}

/// [`verify`], accepting a chain that starts at `from` instead of its genesis: a cut that is
/// known (say, the trail before an archive date); it must start exactly there.
pub fn verify_from(files: &[PathBuf], from: Option<u64>) -> Result<Intact, Broken> {
    verify_with(files, from, Anchoring::None)
}

/// [`verify_from`], checking checkpoints as `anchoring` says.
pub fn verify_with(
    files: &[PathBuf],
    from: Option<u64>,
    anchoring: Anchoring<'_>,
) -> Result<Intact, Broken> {
    let ordered = chain_order(files);
    let mut anchors = Anchors::default();
    let mut last = (ordered.first().cloned().unwrap_or_default(), 0);
    let mut state: Option<ChainState> = None;
    let mut start = None;
    let mut records = 0;
    for path in &ordered {
        let broken = |line: usize, problem: String| Broken {
            file: path.clone(),
            line,
            problem,
        };
        let file = File::open(path).map_err(|e| broken(0, e.to_string()))?;
        let mut reader = BufReader::new(file);
        let mut number = 0;
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', &mut buffer)
                .map_err(|e| broken(number + 1, e.to_string()))?;
            if read == 0 {
                break;
            }
            number += 1;
            let Some(line) = buffer.strip_suffix(b"\n") else {
                return Err(broken(number, "torn record: no final newline".into()));
            };
            let record = record::check_line(line).map_err(|e| broken(number, e.to_string()))?;
            if state.is_none() {
                starts_whole(&record, from).map_err(|problem| broken(number, problem))?;
            }
            let state = state.get_or_insert_with(|| {
                let begin = ChainState {
                    seq: record.seq,
                    prev: record.prev.clone(),
                };
                start = Some(begin.clone());
                begin
            });
            if let Anchoring::Keys { keys, strict } = anchoring {
                anchors
                    .check(keys, strict, &record, state)
                    .map_err(|problem| broken(number, problem))?;
            }
            record::check_link(&record, state).map_err(|e| match e {
                LinkError::Prev { .. } | LinkError::Seq { .. } if number == 1 => broken(
                    number,
                    format!("{e} (the file does not continue the previous one: a file is missing)"),
                ),
                e => broken(number, e.to_string()),
            })?;
            records += 1;
        }
        last = (path.clone(), number);
    }
    let anchors = match anchoring {
        Anchoring::None => None,
        Anchoring::Keys { strict, .. } => {
            if strict {
                anchors.finish().map_err(|problem| Broken {
                    file: last.0.clone(),
                    line: last.1,
                    problem,
                })?;
            }
            Some(anchors)
        }
    };
    let end = state.unwrap_or_else(ChainState::genesis);
    Ok(Intact {
        files: ordered,
        records,
        start: start.unwrap_or_else(ChainState::genesis),
        end,
        anchors,
    })
}

/// Whether the chain's first record is where a whole chain starts: at its genesis, or at `from`.
fn starts_whole(first: &Record, from: Option<u64>) -> Result<(), String> {
    match from {
        Some(from) if first.seq == from => Ok(()),
        Some(from) => Err(format!(
            "the chain starts at seq {}, not at --from {from}",
            first.seq
        )),
        None if first.seq == 0 && first.prev == record::GENESIS => Ok(()),
        None if first.seq == 0 => {
            Err("the first record does not follow the genesis hash: records are missing".into())
        }
        None => Err(format!(
            "incomplete: the chain starts at seq {seq}, not at its beginning; records 0..{last} \
             are missing (the first lines or the oldest files were removed); --from {seq} \
             accepts a known cut",
            seq = first.seq,
            last = first.seq - 1,
        )),
    }
}

/// The start-up check of a trail whose writer signs checkpoints: the chain from the last file
/// that holds a checkpoint (at most the active file and the one before it) to its end, and every
/// checkpoint in it, against the writer's own key. A trail with no checkpoint yet (older than the
/// configuration) is checked over those files alone.
pub fn verify_recent(trail: &[PathBuf], keys: &Keys) -> Result<Intact, Broken> {
    const MOST_FILES: usize = 2;
    let newest_first = trail.iter().rev().take(MOST_FILES);
    let mut taken = 0;
    for path in newest_first {
        taken += 1;
        if holds_checkpoint(path) {
            break;
        }
    }
    let recent = &trail[trail.len() - taken..];
    let from = recent.first().and_then(|p| first_seq(p));
    verify_with(
        recent,
        from,
        Anchoring::Keys {
            keys,
            strict: false,
        },
    )
}

fn holds_checkpoint(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| {
            line.windows(br#""kind":"checkpoint""#.len())
                .any(|w| w == br#""kind":"checkpoint""#)
        })
}

/// Every record of `files` in chain order, with its file and line; unreadable lines are skipped
/// (`fedgate audit verify` is the tool that reports them).
pub fn records(files: &[PathBuf]) -> impl Iterator<Item = (PathBuf, usize, Record)> {
    let ordered: Vec<PathBuf> = chains(files)
        .into_iter()
        .flat_map(|(_, files)| chain_order(&files))
        .collect();
    ordered.into_iter().flat_map(|path| {
        let reader = File::open(&path).ok().map(BufReader::new);
        reader
            .into_iter()
            .flat_map(|r| r.split(b'\n'))
            .enumerate()
            .filter_map(move |(index, line)| {
                let record = serde_json::from_slice::<Record>(&line.ok()?).ok()?;
                Some((path.clone(), index + 1, record))
            })
    })
}

/// The active file and its rotated predecessors, oldest first.
pub fn trail(active: &Path) -> Vec<PathBuf> {
    let mut files = super::file::rotated_files(active);
    if active.exists() {
        files.push(active.to_path_buf());
    }
    files
}
