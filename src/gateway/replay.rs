//! The replay guard every signed origin shares: a signed request is claimed for each
//! destination it is forwarded to, and a claim already made is a replay.
//!
//! A claim is keyed on the signed bytes and the collective, so one signed request may reach
//! several collectives once each. A broadcast claims the collective whole. A directed request
//! claims each target node: later batches of the same signed request (the federation splits
//! targets into batches) may add new targets, never repeat one, and never turn into a broadcast;
//! a broadcast never turns into a directed request either. With `[replay] nats` the claims live
//! in a JetStream key-value bucket that every instance of a cluster shares, and that outlives a
//! restart; without it, in this process only.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream;
use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;

pub use crate::security::replay::MAX_COPIES;
use crate::security::replay::{CopyError, CopyWindow, ReplayError, ReplayWindow};

/// Live claims a guard kept in one process holds.
pub const LOCAL_CAPACITY: usize = 65_536;
/// Most claims in a shared bucket (the bucket refuses more, so the guard fails closed).
const BUCKET_MESSAGES: i64 = 4_000_000;
/// Most bytes in a shared bucket.
const BUCKET_BYTES: i64 = 512 * 1024 * 1024;
/// The value of a key that claims a collective for a broadcast.
const BROADCAST: &[u8] = b"b";
/// The value of a key that claims a collective for a directed request.
const DIRECTED: &[u8] = b"d";

/// Where one signed request is going.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    /// Every node of the collective.
    Broadcast,
    /// These nodes only.
    Directed(&'a [String]),
}

/// One claim: who signed what, and where it goes.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The realm whose CA verified the signature (the same bytes re-signed by fedgate for
    /// another realm are another request).
    pub realm: &'a str,
    /// Exactly what the caller signed.
    pub signed: &'a [u8],
    /// The collective (fedgate's name for it).
    pub collective: &'a str,
    /// Broadcast or the targets.
    pub mode: Mode<'a>,
}

/// Why a claim was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayRefusal {
    /// The same signed request was already forwarded there.
    #[error("replay: this signed request was already forwarded to {0}; sign a new request")]
    Replay(String),
    /// A broadcast replayed as a directed request, or the other way round.
    #[error(
        "replay: this signed request was already forwarded to {0} as a {1}; a replay may not change that"
    )]
    ModeChange(String, &'static str),
    /// A body signed without its request id went out under as many ids as it may.
    #[error(
        "replay: this signed request already went to {0} under {1} request ids within its ttl; sign a new request"
    )]
    Copies(String, usize),
    /// The guard holds as many claims as it may.
    #[error("the replay guard is full; try again later")]
    Full,
    /// The shared bucket could not be reached, so nothing is forwarded.
    #[error("the replay guard is unavailable: {0}")]
    Unavailable(String),
}

impl ReplayRefusal {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ReplayRefusal::Replay(_)
            | ReplayRefusal::ModeChange(..)
            | ReplayRefusal::Copies(..) => "replay",
            ReplayRefusal::Full => "replay_full",
            ReplayRefusal::Unavailable(_) => "replay_unavailable",
        }
    }
}

/// The guard: in this process, or in a shared JetStream bucket.
pub enum ReplayGuard {
    /// Claims in this process only (and the request ids each body went out under).
    Local(ReplayWindow, CopyWindow),
    /// Claims in a key-value bucket shared by every instance.
    Shared(Box<kv::Store>),
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayGuard::Local(window, _) => write!(f, "ReplayGuard::Local({window:?})"),
            ReplayGuard::Shared(_) => f.write_str("ReplayGuard::Shared"),
        }
    }
}

impl ReplayGuard {
    /// A guard in this process.
    pub fn local() -> ReplayGuard {
        ReplayGuard::local_with_capacity(LOCAL_CAPACITY)
    }

    /// A guard in this process holding at most `capacity` live claims.
    pub fn local_with_capacity(capacity: usize) -> ReplayGuard {
        ReplayGuard::Local(ReplayWindow::new(capacity), CopyWindow::new(capacity))
    }

    /// Opens (or creates) the shared bucket `bucket` over `client`. Claims expire `keep` after
    /// they are made: at least the longest a signed request may live.
    pub async fn shared(
        client: async_nats::Client,
        bucket: &str,
        keep: Duration,
        replicas: usize,
    ) -> Result<ReplayGuard, String> {
        let context = async_nats::jetstream::new(client);
        if let Ok(store) = context.get_key_value(bucket).await {
            return Ok(ReplayGuard::opened(&context, store).await);
        }
        // Made as the key-value layer makes a bucket's stream, without the account query that
        // nats-server 2.9 answers differently.
        let settings = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("fedgate replay guard".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_messages: BUCKET_MESSAGES,
            max_bytes: BUCKET_BYTES,
            max_age: keep,
            max_message_size: 256,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..stream::Config::default()
        };
        let created = context.create_stream(settings).await.err();
        // Another instance may have created it meanwhile.
        let store = context.get_key_value(bucket).await.map_err(|e| {
            let why = created.map_or(e.to_string(), |c| c.to_string());
            format!("replay bucket {bucket}: {why}")
        })?;
        Ok(ReplayGuard::opened(&context, store).await)
    }

    /// The shared guard over `store`, warning when its bucket has one replica on a cluster.
    async fn opened(
        context: &async_nats::jetstream::Context,
        mut store: async_nats::jetstream::kv::Store,
    ) -> ReplayGuard {
        if let Ok(info) = store.stream.info().await {
            crate::nats::warn_if_one_replica(
                &context.client(),
                "the replay guard",
                &info.config.name,
                info.config.num_replicas,
            );
        }
        ReplayGuard::Shared(Box::new(store))
    }

    /// Claims `claim` until `until` (Unix seconds), at `now`: checking and recording are one
    /// step, on every instance that shares the guard.
    pub async fn claim(
        &self,
        claim: &Claim<'_>,
        until: i64,
        now: i64,
    ) -> Result<(), ReplayRefusal> {
        let key = claim_key(claim);
        match self {
            ReplayGuard::Local(window, _) => claim_local(window, claim, key, until, now),
            ReplayGuard::Shared(store) => claim_shared(store, claim, &key).await,
        }
    }

    /// Gives back a claim that was never acted on (the request will be delivered again).
    pub async fn release(&self, claim: &Claim<'_>) {
        let key = claim_key(claim);
        match (self, claim.mode) {
            (ReplayGuard::Local(window, _), Mode::Broadcast) => window.release(key, None),
            (ReplayGuard::Local(window, _), Mode::Directed(targets)) => {
                for target in targets {
                    window.release(key, Some(target));
                }
            }
            (ReplayGuard::Shared(store), mode) => {
                let root = hex(&key);
                // A directed request's root stays: other batches of it may have gone out.
                let keys = match mode {
                    Mode::Broadcast => vec![root],
                    Mode::Directed(targets) => {
                        targets.iter().map(|t| target_key(&root, t)).collect()
                    }
                };
                for key in keys {
                    if let Err(err) = store.purge(&key).await {
                        tracing::warn!(%err, "could not release a replay claim");
                    }
                }
            }
        }
    }
}

/// One body going out under one request id, for protocols that sign the body alone.
#[derive(Clone, Copy, Debug)]
pub struct BodyCopy<'a> {
    /// The realm and key that signed it.
    pub realm: &'a str,
    /// Exactly what the caller signed.
    pub signed: &'a [u8],
    /// The collective (fedgate's name for it).
    pub collective: &'a str,
    /// The unsigned request id it came under.
    pub request_id: &'a str,
}

impl ReplayGuard {
    /// Counts `copy` until `until`, at `now`: its request id's place among those its body
    /// went out under in this collective (0: the first; the same place for the same id), or
    /// a refusal once `limit` ids (at most [`MAX_COPIES`]) are held, on every instance that
    /// shares the guard.
    pub async fn copy(
        &self,
        copy: &BodyCopy<'_>,
        limit: usize,
        until: i64,
        now: i64,
    ) -> Result<usize, ReplayRefusal> {
        let limit = limit.clamp(1, MAX_COPIES);
        let key = copy_key(copy);
        let id = digest(&SHA256, copy.request_id.as_bytes());
        let id: [u8; 16] = id.as_ref()[..16].try_into().unwrap_or([0; 16]);
        match self {
            ReplayGuard::Local(_, copies) => {
                copies
                    .copy(key, id, limit, until, now)
                    .map_err(|err| match err {
                        CopyError::TooMany(n) => {
                            ReplayRefusal::Copies(copy.collective.to_string(), n)
                        }
                        CopyError::Full => ReplayRefusal::Full,
                    })
            }
            ReplayGuard::Shared(store) => copy_shared(store, copy, &key, &id, limit).await,
        }
    }
}

/// The digest a body's copies are counted under, apart from every claim's.
fn copy_key(copy: &BodyCopy<'_>) -> [u8; 32] {
    let mut input = Vec::with_capacity(copy.realm.len() + copy.signed.len() + 32);
    input.extend_from_slice(b"copies\0");
    input.extend_from_slice(copy.realm.as_bytes());
    input.push(0);
    input.extend_from_slice(copy.signed);
    input.push(0);
    input.extend_from_slice(copy.collective.as_bytes());
    digest(&SHA256, &input)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

/// Takes the first free place of `limit` under the body's key (or finds the id's own).
async fn copy_shared(
    store: &kv::Store,
    copy: &BodyCopy<'_>,
    key: &[u8; 32],
    id: &[u8; 16],
    limit: usize,
) -> Result<usize, ReplayRefusal> {
    let root = hex(key);
    let value = hex(id);
    for place in 0..limit {
        let slot = format!("{root}.{place}");
        match store.create(&slot, Bytes::from(value.clone())).await {
            Ok(_) => return Ok(place),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                let held = store
                    .get(&slot)
                    .await
                    .map_err(|e| ReplayRefusal::Unavailable(e.to_string()))?;
                if held.as_deref() == Some(value.as_bytes()) {
                    return Ok(place);
                }
            }
            Err(err) => return Err(shared_error(err)),
        }
    }
    Err(ReplayRefusal::Copies(copy.collective.to_string(), limit))
}

/// The digest of the signed bytes of one realm for one collective.
fn claim_key(claim: &Claim<'_>) -> [u8; 32] {
    let mut input =
        Vec::with_capacity(claim.realm.len() + claim.signed.len() + claim.collective.len() + 2);
    input.extend_from_slice(claim.realm.as_bytes());
    input.push(0);
    input.extend_from_slice(claim.signed);
    input.push(0);
    input.extend_from_slice(claim.collective.as_bytes());
    digest(&SHA256, &input)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

fn claim_local(
    window: &ReplayWindow,
    claim: &Claim<'_>,
    key: [u8; 32],
    until: i64,
    now: i64,
) -> Result<(), ReplayRefusal> {
    let refusal = |err: ReplayError, target: Option<&str>| match err {
        ReplayError::Full => ReplayRefusal::Full,
        ReplayError::Replay => ReplayRefusal::Replay(match target {
            Some(node) => format!("node {node} of {}", claim.collective),
            None => claim.collective.to_string(),
        }),
    };
    match claim.mode {
        Mode::Broadcast => window
            .claim(key, None, until, now)
            .map_err(|err| refusal(err, None)),
        Mode::Directed(targets) => {
            for (index, target) in targets.iter().enumerate() {
                if let Err(err) = window.claim(key, Some(target), until, now) {
                    // Nothing of a refused request is kept: the targets claimed so far go back.
                    for done in &targets[..index] {
                        window.release(key, Some(done));
                    }
                    return Err(refusal(err, Some(target)));
                }
            }
            Ok(())
        }
    }
}

async fn claim_shared(
    store: &kv::Store,
    claim: &Claim<'_>,
    key: &[u8; 32],
) -> Result<(), ReplayRefusal> {
    let root = hex(key);
    let collective = claim.collective;
    let (tag, mode) = match claim.mode {
        Mode::Broadcast => (BROADCAST, "broadcast"),
        Mode::Directed(_) => (DIRECTED, "directed request"),
    };
    // Each claim writes a value of its own, so a write whose answer was lost (a leader moving
    // in the cluster) is known for this claim's when read back, instead of taken for a replay
    // by the caller's next attempt.
    let token = claim_token(tag);
    match create_own(store, &root, &token).await {
        Ok(()) => {}
        Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
            let held = store
                .get(&root)
                .await
                .map_err(|e| ReplayRefusal::Unavailable(e.to_string()))?;
            match (held.as_deref().and_then(|v| v.first()), claim.mode) {
                (Some(b'd'), Mode::Directed(_)) => {}
                (Some(b'b'), Mode::Broadcast) => {
                    return Err(ReplayRefusal::Replay(collective.to_string()));
                }
                (Some(b'd'), Mode::Broadcast) => {
                    return Err(ReplayRefusal::ModeChange(
                        collective.to_string(),
                        "directed request",
                    ));
                }
                _ => return Err(ReplayRefusal::ModeChange(collective.to_string(), mode)),
            }
        }
        Err(err) => {
            release_if_written(store, vec![root], token);
            return Err(shared_error(err));
        }
    }
    let Mode::Directed(targets) = claim.mode else {
        return Ok(());
    };
    let keys: Vec<String> = targets.iter().map(|t| target_key(&root, t)).collect();
    let claims = keys.iter().map(|key| create_own(store, key, &token));
    let results = futures::future::join_all(claims).await;
    let mut refusal = None;
    let mut made = Vec::new();
    let mut unknown = Vec::new();
    for ((target, key), result) in targets.iter().zip(&keys).zip(results) {
        match result {
            Ok(()) => made.push(key),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                refusal.get_or_insert_with(|| {
                    ReplayRefusal::Replay(format!("node {target} of {collective}"))
                });
            }
            Err(err) => {
                unknown.push(key.clone());
                refusal.get_or_insert_with(|| shared_error(err));
            }
        }
    }
    let Some(refusal) = refusal else {
        return Ok(());
    };
    release_if_written(store, unknown, token);
    // Nothing of a refused request is kept: the targets it claimed go back, as in one process.
    for key in made {
        if let Err(err) = store.purge(key).await {
            tracing::warn!(%err, "could not release a replay claim");
        }
    }
    Err(refusal)
}

/// How long a refused claim whose writes may have landed keeps being looked for.
const RELEASE_FOR: Duration = Duration::from_secs(60);

/// After a claim was refused because the bucket did not answer, its writes may still land (a
/// leader moving in the cluster); left there, they would refuse the caller's next attempt as a
/// replay of a request that was never forwarded. A task looks for them until the bucket
/// answers, or for [`RELEASE_FOR`], and removes each key that holds this claim's own value.
fn release_if_written(store: &kv::Store, keys: Vec<String>, token: Bytes) {
    if keys.is_empty() || token.len() <= 1 {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + RELEASE_FOR;
        let mut pending = keys;
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            let mut left = Vec::new();
            for key in pending {
                match store.get(&key).await {
                    Ok(Some(held)) if held == token => {
                        if store.purge(&key).await.is_err() {
                            left.push(key);
                        } else {
                            tracing::info!("released a replay claim written after it was refused");
                        }
                    }
                    // Gone, or another claim's: nothing of this claim is left.
                    Ok(_) => {}
                    Err(_) => left.push(key),
                }
            }
            pending = left;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

/// A claim's own value: the mode's tag, then random bytes that no other claim writes.
fn claim_token(tag: &[u8]) -> Bytes {
    let mut nonce = [0u8; 12];
    // Without randomness every claim writes the bare tag, as before tokens: a lost answer is
    // then a refusal, never a false claim.
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let mut token = tag.to_vec();
    token.extend_from_slice(hex(&nonce).as_bytes());
    Bytes::from(token)
}

/// Creates `key` holding `token`. When the answer is lost (a leader moving in the cluster) or
/// the client sent the write again after a timeout, the key may hold `token` after all: the
/// write was this claim's, and it stands.
async fn create_own(store: &kv::Store, key: &str, token: &Bytes) -> Result<(), kv::CreateError> {
    let err = match store.create(key, token.clone()).await {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    // A bare tag (no randomness) is not this claim's alone.
    if token.len() > 1
        && let Ok(Some(held)) = store.get(key).await
        && held == *token
    {
        tracing::info!(%err, "a replay claim's answer was lost, but the claim was written");
        return Ok(());
    }
    Err(err)
}

/// A bucket at its limits refuses new claims; anything else means it could not be reached.
fn shared_error(err: kv::CreateError) -> ReplayRefusal {
    let text = err.to_string();
    if text.contains("maximum") || text.contains("limit") {
        ReplayRefusal::Full
    } else {
        ReplayRefusal::Unavailable(text)
    }
}

/// The key of one target node under a directed request's root key.
fn target_key(root: &str, target: &str) -> String {
    let node = digest(&SHA256, target.as_bytes());
    format!("{root}.{}", hex(&node.as_ref()[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(signed: &'a [u8], collective: &'a str, mode: Mode<'a>) -> Claim<'a> {
        Claim {
            realm: "prod",
            signed,
            collective,
            mode,
        }
    }

    #[test]
    fn each_shared_claim_writes_a_value_of_its_own_after_its_mode() {
        let (a, b) = (claim_token(BROADCAST), claim_token(BROADCAST));
        assert_ne!(a, b, "two claims wrote the same value");
        assert_eq!(a.first(), Some(&b'b'));
        assert_eq!(claim_token(DIRECTED).first(), Some(&b'd'));
        assert_eq!(a.len(), 1 + 24);
    }

    #[tokio::test]
    async fn a_local_guard_takes_new_targets_and_refuses_repeats_and_mode_changes() {
        let guard = ReplayGuard::local();
        let first = ["a".to_string(), "b".to_string()];
        let more = ["c".to_string()];
        let again = ["d".to_string(), "a".to_string()];
        let signed = b"signed bytes";
        let at = |mode| claim(signed, "london", mode);
        guard
            .claim(&at(Mode::Directed(&first)), 100, 10)
            .await
            .unwrap();
        guard
            .claim(&at(Mode::Directed(&more)), 100, 10)
            .await
            .unwrap();
        let err = guard.claim(&at(Mode::Directed(&again)), 100, 10).await;
        assert_eq!(err, Err(ReplayRefusal::Replay("node a of london".into())));
        // `d` was given back with the refused batch.
        let d = ["d".to_string()];
        guard.claim(&at(Mode::Directed(&d)), 100, 10).await.unwrap();
        let err = guard
            .claim(&at(Mode::Broadcast), 100, 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "replay");
        // Another collective is another destination.
        guard
            .claim(&claim(signed, "tokyo", Mode::Broadcast), 100, 10)
            .await
            .unwrap();
        let err = guard
            .claim(&claim(signed, "tokyo", Mode::Directed(&more)), 100, 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "replay");
    }

    #[tokio::test]
    async fn a_released_claim_can_be_made_again() {
        let guard = ReplayGuard::local();
        let one = claim(b"x", "london", Mode::Broadcast);
        guard.claim(&one, 100, 10).await.unwrap();
        guard.release(&one).await;
        guard.claim(&one, 100, 10).await.unwrap();
        assert!(guard.claim(&one, 100, 10).await.is_err());
    }

    #[tokio::test]
    async fn a_full_guard_refuses_new_claims_until_one_expires() {
        let guard = ReplayGuard::local_with_capacity(2);
        let nodes = ["a".to_string()];
        for signed in [&b"one"[..], b"two"] {
            guard
                .claim(&claim(signed, "london", Mode::Broadcast), 100, 10)
                .await
                .unwrap();
        }
        for mode in [Mode::Broadcast, Mode::Directed(&nodes)] {
            let err = guard
                .claim(&claim(b"three", "london", mode), 100, 10)
                .await
                .unwrap_err();
            assert_eq!((err.code(), err), ("replay_full", ReplayRefusal::Full));
        }
        // A claim already held is still a replay, not a full guard.
        let err = guard
            .claim(&claim(b"one", "london", Mode::Broadcast), 100, 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "replay");
        // Once the claims have expired there is room again.
        guard
            .claim(&claim(b"three", "london", Mode::Broadcast), 200, 101)
            .await
            .unwrap();
    }
}
