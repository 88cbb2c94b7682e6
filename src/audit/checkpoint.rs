//! Signed checkpoints, after CloudTrail's signed digest files: every so many records, or so many
//! seconds, each instance appends a checkpoint record to its chain that names the record before
//! it (seq and hash) and is signed with an Ed25519 key of the instance's own.
//!
//! The hash chain alone shows that a trail was edited only to someone who cannot rewrite it:
//! whoever can write the file while fedgate is stopped can change a record and recompute every
//! later hash. A checkpoint pins the hash of everything before it under a signature that only
//! the key's holder can make, so a rewritten history fails at the first checkpoint after the
//! change, and `fedgate audit verify --key` says so.
//!
//! The signed message is the ASCII text
//! `fedgate-audit-checkpoint/1\n<instance>\n<time>\n<seq>\n<head>\n<every>\n`, where `seq` and
//! `head` are the seq and hash of the record the checkpoint follows, `time` is the checkpoint
//! record's own time, and `every` is the record interval the writer promised (so a verifier can
//! tell a checkpoint removed from a quiet period).

use std::path::Path;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

use super::record::{self, ChainState, Event, Kind, Record};

/// The first line of every signed message: names the format and its version.
const DOMAIN: &str = "fedgate-audit-checkpoint/1";
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// Most keys one verification accepts.
pub const MAX_KEYS: usize = 64;

/// What a checkpoint record carries besides the record's own fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The seq of the record this checkpoint follows.
    pub seq: u64,
    /// That record's hash.
    pub head: String,
    /// The writer's record interval: no more than this many records go unanchored.
    pub every: u64,
    /// The signing key's id: the first 16 hex digits of the SHA-256 of its raw public key.
    pub key: String,
    /// The Ed25519 signature of the message above, base64.
    pub signature: String,
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint key {path}: {message}")]
pub struct KeyError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn key_error(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The id of a raw Ed25519 public key.
pub fn key_id(public: &[u8]) -> String {
    record::sha256_hex(public)[..16].to_string()
}

/// The message a checkpoint's signature covers.
fn message(instance: &str, time: &str, checkpoint: &Checkpoint) -> Vec<u8> {
    format!(
        "{DOMAIN}\n{instance}\n{time}\n{}\n{}\n{}\n",
        checkpoint.seq, checkpoint.head, checkpoint.every
    )
    .into_bytes()
}

/// A new Ed25519 private key as PKCS#8 PEM, and its public key as SPKI PEM.
pub fn generate() -> Result<(String, String), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|e| e.to_string())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    Ok((
        pem("PRIVATE KEY", pkcs8.as_ref()),
        public_pem(pair.public_key().as_ref()),
    ))
}

/// A raw Ed25519 public key as SPKI PEM.
pub fn public_pem(raw: &[u8]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    pem("PUBLIC KEY", &der)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// An instance's checkpoint key and cadence.
pub struct Signer {
    pair: Ed25519KeyPair,
    id: String,
    every: u64,
    interval: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, every {})", self.id, self.every)
    }
}

impl Signer {
    /// Loads the PKCS#8 PEM Ed25519 key at `path`; a checkpoint is due every `every` records or
    /// `interval`, whichever comes first.
    pub fn load(path: &Path, every: u64, interval: Duration) -> Result<Signer, KeyError> {
        let pem = std::fs::read(path).map_err(|e| key_error(path, e.to_string()))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|e| key_error(path, format!("not a PKCS#8 PEM private key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()))
            .map_err(|e| key_error(path, format!("not an Ed25519 key: {e}")))?;
        Ok(Signer {
            id: key_id(pair.public_key().as_ref()),
            pair,
            every: every.max(1),
            interval,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half, for verifying this instance's own checkpoints.
    pub fn public(&self) -> Keys {
        Keys {
            keys: vec![(self.id.clone(), self.pair.public_key().as_ref().to_vec())],
        }
    }

    /// Seals a checkpoint of the chain at `state` (which must hold a record) and advances it.
    pub fn seal(&self, id: String, instance: &str, state: &mut ChainState) -> (Record, Vec<u8>) {
        let time = record::now();
        let mut checkpoint = Checkpoint {
            seq: state.seq.saturating_sub(1),
            head: state.prev.clone(),
            every: self.every,
            key: self.id.clone(),
            signature: String::new(),
        };
        let signature = self.pair.sign(&message(instance, &time, &checkpoint));
        checkpoint.signature = base64::engine::general_purpose::STANDARD.encode(signature);
        let event = Event {
            checkpoint: Some(checkpoint),
            ..Event::default()
        };
        record::seal(Kind::Checkpoint, id, instance, time, event, state)
    }

    /// A cadence for one chain writer.
    pub fn cadence(&self) -> Cadence {
        Cadence {
            every: self.every,
            interval: self.interval,
            unanchored: 0,
            since: Instant::now(),
        }
    }
}

/// When a chain writer owes a checkpoint.
#[derive(Clone, Debug)]
pub struct Cadence {
    every: u64,
    interval: Duration,
    unanchored: u64,
    since: Instant,
}

impl Cadence {
    /// Notes a record written; true when a checkpoint is due by count.
    pub fn wrote(&mut self) -> bool {
        self.unanchored += 1;
        self.unanchored >= self.every
    }

    /// True when records wait for a checkpoint and the interval has passed.
    pub fn due_by_time(&self) -> bool {
        self.unanchored > 0 && self.since.elapsed() >= self.interval
    }

    /// How long until [`Cadence::due_by_time`] turns true; none while every record is
    /// anchored.
    pub fn wait(&self) -> Option<Duration> {
        (self.unanchored > 0).then(|| self.interval.saturating_sub(self.since.elapsed()))
    }

    /// Notes a checkpoint written.
    pub fn anchored(&mut self) {
        self.unanchored = 0;
        self.since = Instant::now();
    }
}

/// Public keys a verifier trusts, by id.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
}

impl Keys {
    /// Loads public keys (SPKI PEM, as `fedgate audit keygen` writes them) or private keys
    /// (PKCS#8 PEM; only their public half is used).
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Keys, KeyError> {
        let mut keys = Keys::default();
        for path in paths {
            let path = path.as_ref();
            if keys.keys.len() == MAX_KEYS {
                return Err(key_error(path, format!("more than {MAX_KEYS} keys")));
            }
            let pem = std::fs::read(path).map_err(|e| key_error(path, e.to_string()))?;
            let raw = match SubjectPublicKeyInfoDer::from_pem_slice(&pem) {
                Ok(spki) => spki
                    .strip_prefix(&SPKI_PREFIX[..])
                    .filter(|raw| raw.len() == 32)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| key_error(path, "not an Ed25519 public key"))?,
                Err(_) => Signer::load(path, 1, Duration::ZERO)?
                    .pair
                    .public_key()
                    .as_ref()
                    .to_vec(),
            };
            keys.keys.push((key_id(&raw), raw));
        }
        Ok(keys)
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a checkpoint record's signature; the checkpoint when it holds. Whether it names
    /// the record before it is the chain's business ([`Anchors::check`]).
    pub fn verify<'r>(&self, record: &'r Record) -> Result<&'r Checkpoint, Unsigned> {
        let Some(checkpoint) = &record.event.checkpoint else {
            return Err(Unsigned::Bad(
                "a checkpoint record without its checkpoint".into(),
            ));
        };
        let Some((_, raw)) = self.keys.iter().find(|(id, _)| *id == checkpoint.key) else {
            return Err(Unsigned::UnknownKey(checkpoint.key.clone()));
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&checkpoint.signature)
            .map_err(|_| Unsigned::Bad("the checkpoint's signature is not base64".into()))?;
        UnparsedPublicKey::new(&ED25519, raw)
            .verify(
                &message(&record.instance, &record.time, checkpoint),
                &signature,
            )
            .map_err(|_| {
                Unsigned::Bad(format!(
                    "the checkpoint's signature does not verify with key {}",
                    checkpoint.key
                ))
            })?;
        Ok(checkpoint)
    }
}

/// Why a checkpoint does not prove anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    /// Signed by a key that is not among those given (another instance's, or a rotated one).
    #[error("checkpoint signed by key {0}, which is not among the keys given")]
    UnknownKey(String),
    /// Malformed, or the signature does not verify.
    #[error("{0}")]
    Bad(String),
}

/// What a chain's checkpoints prove, as a verifier walks it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anchors {
    /// Checkpoints that verified.
    pub checkpoints: u64,
    /// The seq of the last record a checkpoint anchors.
    pub anchored_to: Option<u64>,
    /// Records after the last checkpoint (not yet anchored).
    pub unanchored: u64,
    /// Checkpoints signed by keys not given, passed over (only when not strict).
    pub foreign: u64,
    /// The record interval the last checkpoint promised.
    every: Option<u64>,
}

impl Anchors {
    /// Takes the next record of the chain; `before` is the chain position before it. A
    /// checkpoint must verify and name the record before it; other records count as unanchored.
    /// With `strict` false, a checkpoint signed by a key not given (the instance's previous
    /// key) is passed over and counted in `foreign`.
    pub fn check(
        &mut self,
        keys: &Keys,
        strict: bool,
        record: &Record,
        before: &ChainState,
    ) -> Result<(), String> {
        if record.kind != Kind::Checkpoint {
            self.unanchored += 1;
            return Ok(());
        }
        let checkpoint = match keys.verify(record) {
            Ok(checkpoint) => checkpoint,
            Err(Unsigned::UnknownKey(_)) if !strict => {
                self.foreign += 1;
                self.unanchored += 1;
                return Ok(());
            }
            Err(err) => return Err(err.to_string()),
        };
        if checkpoint.seq + 1 != before.seq || checkpoint.head != before.prev {
            return Err(format!(
                "the checkpoint signs seq {} with hash {}, but the chain before it ends at seq {} \
                 with hash {}: the records before it were rewritten",
                checkpoint.seq,
                checkpoint.head,
                before.seq.saturating_sub(1),
                before.prev
            ));
        }
        if let Some(every) = self.every
            && self.unanchored > every
        {
            return Err(self.gap(every));
        }
        self.checkpoints += 1;
        self.anchored_to = Some(checkpoint.seq);
        self.unanchored = 0;
        self.every = Some(checkpoint.every);
        Ok(())
    }

    /// Checks the chain's end: it has a checkpoint, and no more records follow the last one than
    /// its interval allows.
    pub fn finish(&self) -> Result<(), String> {
        match self.every {
            None => Err(
                "no checkpoint signed by the keys given: the trail cannot be shown unaltered"
                    .into(),
            ),
            Some(every) if self.unanchored > every => Err(self.gap(every)),
            Some(_) => Ok(()),
        }
    }

    fn gap(&self, every: u64) -> String {
        format!(
            "{} records follow a checkpoint that promised one every {every}: checkpoints were \
             removed, or records were added without the key",
            self.unanchored
        )
    }
}
