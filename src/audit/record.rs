//! Audit records: what was decided about a request, sealed into a per-file hash chain.
//!
//! A record is one line of canonical JSON (specified in `docs/audit-format.md`, pinned by
//! `tests/golden/audit`): keys sorted, no insignificant whitespace. `hash` is
//! the lowercase hex SHA-256 of the record's canonical bytes without `hash`; `prev` is the hash
//! of the record before it (64 zeros for the first record ever). Because the line itself must
//! be canonical, any change to any byte of a line is detected at that line.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Version of the record format.
pub const FORMAT: u64 = 1;
/// Longest record line written; larger events lose their data values first.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The start of a file: links the chain to the previous file.
    Header,
    /// A decision about a request (allowed or refused).
    Decision,
    /// How an allowed request ended: the replies relayed for it. Links to its decisions.
    Completion,
    /// A note about an earlier record of the same chain, which it links to: a JetStream record
    /// whose write was reported failed but that reached the stream later.
    Correction,
    /// A signed anchor of the chain so far ([`super::checkpoint`]).
    Checkpoint,
}

/// Allowed or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Forwarded.
    Allow,
    /// Not forwarded.
    Deny,
}

/// The content of a record, filled in by the edge that decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Which edge the request came in on: `federation`, `websocket`, `legacy`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub edge: String,
    /// The realm the caller was (or was to be) verified in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub realm: String,
    /// The network address the request came from, where the edge knows it (WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The caller id proven by the signature; absent when verification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The caller id the request claimed, when it could not be verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_caller: Option<String>,
    /// The caller id the target collective sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped_caller: Option<String>,
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The target collective(s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collectives: Vec<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The names of the action's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_keys: Vec<String>,
    /// The inputs themselves, only for agents and actions configured to record them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// A summary of the filter the request was published with (the caller's, with policy's
    /// conditions added).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// A summary of the filter the caller sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caller_filter: String,
    /// How many explicit targets the request named.
    #[serde(default)]
    pub targets: usize,
    /// Allowed or refused; absent on headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Verdict>,
    /// The stage that decided: `decode`, `verify`, `map`, `authorize`, `resign`, `audit`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    /// The rule that decided: `file:line`, `default`, or the identity rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, as the caller was told.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A short machine-readable reason (`denied`, `bad_signature`, `unmapped`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// Conditions of the deciding rule that fedgate added to the filter (facts and classes),
    /// so only matching nodes act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted: Option<String>,
    /// The registry revision whose rules decided (none in file mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Completion: the ids of the decision records this completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Completion: replies relayed by this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replies: Option<u64>,
    /// An aggregated record: how many refusals from its source it stands for, besides the
    /// records written in full ([`super::flood`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// A legacy request whose signed body was already accepted under another request id
    /// within its TTL: which copy this is (1 for the first duplicate). mcollectived serves
    /// such copies; fedgate serves a bounded number of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<u64>,
    /// The request id a legacy caller sent, when its request went into Choria under another
    /// (`request_id`): Choria takes only 32 hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_request_id: Option<String>,
    /// Header: the file this one continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_file: Option<String>,
    /// Checkpoint: the record it anchors and its signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<super::checkpoint::Checkpoint>,
}

/// A sealed record, as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub v: u64,
    /// What the record is about.
    pub kind: Kind,
    /// `<instance>:<nuid>`: unique, the same in every sink the record went to (completions
    /// link to it), and the deduplication id in JetStream.
    pub id: String,
    /// Position in this sink's chain for the instance, from 0.
    pub seq: u64,
    /// RFC 3339 UTC time with microseconds.
    pub time: String,
    /// The fedgate instance that wrote the record.
    pub instance: String,
    /// The content.
    #[serde(flatten)]
    pub event: Event,
    /// Hash of the previous record.
    pub prev: String,
    /// Hash of this record.
    pub hash: String,
}

/// The chain position of the next record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    /// The next sequence number.
    pub seq: u64,
    /// The hash of the last record.
    pub prev: String,
}

impl ChainState {
    /// A chain with no records yet.
    pub fn genesis() -> ChainState {
        ChainState {
            seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

/// The current time in the records' format.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let micros = now.microsecond();
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let base = now.format(&format).unwrap_or_default();
    format!("{base}.{micros:06}Z")
}

/// A new record id for `instance`: unique across restarts, as JetStream deduplication needs.
pub fn new_id(instance: &str) -> String {
    format!("{instance}:{}", nuid::next())
}

/// SHA-256 hex of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// Seals `event` at the chain position `state` and advances it; returns the record and its line
/// (canonical JSON, no newline).
pub fn seal(
    kind: Kind,
    id: String,
    instance: &str,
    time: String,
    event: Event,
    state: &mut ChainState,
) -> (Record, Vec<u8>) {
    let mut record = Record {
        v: FORMAT,
        kind,
        id,
        seq: state.seq,
        time,
        instance: instance.to_string(),
        event,
        prev: state.prev.clone(),
        hash: String::new(),
    };
    let (mut map, mut covered) = hashed_part(&record);
    if covered.len() > MAX_RECORD_BYTES && record.event.data.is_some() {
        record.event.data = None;
        record
            .event
            .reason
            .push_str(" [data values dropped: record too large]");
        (map, covered) = hashed_part(&record);
    }
    record.hash = sha256_hex(&covered);
    map.insert("hash".into(), Value::String(record.hash.clone()));
    let line = serde_json::to_vec(&map).expect("a map serializes");
    state.seq += 1;
    state.prev = record.hash.clone();
    (record, line)
}

/// The record as a JSON object without `hash`, and the canonical bytes its hash covers.
fn hashed_part(record: &Record) -> (Map<String, Value>, Vec<u8>) {
    let Value::Object(mut map) = serde_json::to_value(record).expect("a record serializes") else {
        unreachable!("a struct serializes to an object");
    };
    map.remove("hash");
    let bytes = serde_json::to_vec(&map).expect("a map serializes");
    (map, bytes)
}

/// Why one line does not hold as a link of the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a record at all.
    #[error("not a valid record: {0}")]
    Unreadable(String),
    /// Valid JSON, but not in canonical form: the line was edited.
    #[error("the line is not in canonical form (edited)")]
    NotCanonical,
    /// The stored hash does not match the content.
    #[error("hash mismatch: the record's content was changed")]
    Hash,
    /// `prev` does not name the record before.
    #[error(
        "prev {found} does not match the previous record's hash {expected} (a record was removed, inserted or reordered)"
    )]
    Prev {
        /// The previous record's hash.
        expected: String,
        /// What this record says.
        found: String,
    },
    /// The sequence number skips or repeats.
    #[error("seq {found} follows seq {previous}")]
    Seq {
        /// The previous record's seq.
        previous: u64,
        /// This record's seq.
        found: u64,
    },
}

/// Checks one line on its own (form and hash) and returns the record.
pub fn check_line(line: &[u8]) -> Result<Record, LinkError> {
    let unreadable = |e: serde_json::Error| LinkError::Unreadable(e.to_string());
    let mut map: Map<String, Value> = serde_json::from_slice(line).map_err(unreadable)?;
    if serde_json::to_vec(&map).map_err(unreadable)? != line {
        return Err(LinkError::NotCanonical);
    }
    let Some(Value::String(stored)) = map.remove("hash") else {
        return Err(LinkError::Unreadable(
            "`hash` is missing or not a string".into(),
        ));
    };
    let covered = sha256_hex(&serde_json::to_vec(&map).map_err(unreadable)?);
    if stored != covered {
        return Err(LinkError::Hash);
    }
    map.insert("hash".into(), Value::String(covered));
    serde_json::from_value(Value::Object(map)).map_err(unreadable)
}

/// Checks that `record` follows the chain position `state`, then advances it.
pub fn check_link(record: &Record, state: &mut ChainState) -> Result<(), LinkError> {
    if record.prev != state.prev {
        return Err(LinkError::Prev {
            expected: state.prev.clone(),
            found: record.prev.clone(),
        });
    }
    if record.seq != state.seq {
        return Err(LinkError::Seq {
            previous: state.seq.wrapping_sub(1),
            found: record.seq,
        });
    }
    state.seq = record.seq + 1;
    state.prev = record.hash.clone();
    Ok(())
}
