//! The registry's JetStream key-value buckets.
//!
//! - `<prefix>-policies`, `-identity`, `-users`, `-config`: one key per document, every change
//!   kept as a new value of the key (64 values per key, the most JetStream keeps).
//! - `<prefix>-revisions`: `rev.<N>`, the manifest of revision N, written once; and `head`,
//!   the manifest of the current revision, which instances watch. A push commits by updating
//!   `head` from the revision it read, so of two racing pushes one fails and writes no head.
//! - `<prefix>-instances`: each instance's status report, kept a day.
//!
//! A manifest pins each document by its key's value sequence and SHA-256, so a revision reads
//! the same bytes forever (while the key's history holds them), and a changed byte is refused.

mod records;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;

use super::RegistryError;
use super::set::{MAX_DOCUMENT_BYTES, Set, digest, place};
use super::sign::AuthorSigner;
use crate::config::RegistryConfig;
use records::MAX_MANIFEST_BYTES;

pub use records::{Document, Manifest, Refusal, SCHEMA, Status, UNSIGNED_SCHEMA, parse_manifest};

/// The head a push builds on.
#[derive(Clone, Copy, Debug)]
pub struct Parent<'a> {
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// The sequence of its `head` value, for the compare-and-set.
    pub sequence: u64,
    /// Whether a trusted author signed it. The documents of an unverified head are not
    /// reused (its sequences could name other bytes), nor its archive copy healed.
    pub verified: bool,
}

/// Values kept per document key.
const HISTORY: i64 = 64;
/// How long an instance's status report is kept after its last update.
const STATUS_AGE: Duration = Duration::from_secs(24 * 3600);
/// Largest bucket: beyond it, writes fail (nothing is discarded).
const MAX_BUCKET_BYTES: i64 = 1 << 30;
/// The bucket parts holding documents.
const PARTS: [&str; 4] = ["policies", "identity", "users", "config"];
/// Most instances `registry status` lists.
const MAX_INSTANCES: usize = 10_000;

/// An instance's key in the status bucket: its name with anything a key cannot hold as `_`.
fn status_key(instance: &str) -> String {
    let key: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() { "_".into() } else { key }
}

/// A connection to the registry's buckets.
#[derive(Clone)]
pub struct Registry {
    client: async_nats::Client,
    revisions: Store,
    instances: Store,
    parts: BTreeMap<&'static str, Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Connects and opens the buckets; `create` makes missing ones (a push, an instance), else
    /// a missing bucket is an error (a mistyped prefix must not look like an empty registry).
    pub async fn connect(
        config: &RegistryConfig,
        name: &str,
        create: bool,
    ) -> Result<Registry, RegistryError> {
        let client = crate::nats::connect_watched(&config.endpoint(), name, "nats registry")
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        Registry::open(client, config, create).await
    }

    /// Opens the buckets over an existing connection; see [`Registry::connect`].
    pub async fn open(
        client: async_nats::Client,
        config: &RegistryConfig,
        create: bool,
    ) -> Result<Registry, RegistryError> {
        let context = async_nats::jetstream::new(client.clone());
        // The bucket's stream is made here as the key-value layer makes it: the client's own
        // bucket creation first asks for account details that nats-server 2.9 words
        // differently.
        let bucket = |part: &str, history: i64, max_age: Duration| {
            let bucket = format!("{}-{part}", config.prefix);
            let stream = stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(format!("fedgate registry: {part}")),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: history,
                max_age,
                max_message_size: (MAX_DOCUMENT_BYTES.max(MAX_MANIFEST_BYTES) + 1024) as i32,
                max_bytes: MAX_BUCKET_BYTES,
                storage: stream::StorageType::File,
                num_replicas: config.replicas.max(1),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..stream::Config::default()
            };
            (bucket, stream)
        };
        let open = |(bucket, settings): (String, stream::Config)| {
            let context = context.clone();
            async move {
                match context.get_key_value(bucket.clone()).await {
                    Ok(store) => return Ok(store),
                    Err(e) if !create => {
                        return Err(RegistryError::Unreachable(format!(
                            "bucket {bucket}: {e} (nothing was ever pushed with this prefix?)"
                        )));
                    }
                    Err(_) => {}
                }
                let created = context.create_stream(settings).await.err();
                // Another instance may have created it meanwhile.
                context.get_key_value(bucket.clone()).await.map_err(|e| {
                    let why = created.map_or(e.to_string(), |c| c.to_string());
                    RegistryError::Unreachable(format!("bucket {bucket}: {why}"))
                })
            }
        };
        let mut parts = BTreeMap::new();
        for part in PARTS {
            parts.insert(part, open(bucket(part, HISTORY, Duration::ZERO)).await?);
        }
        let mut revisions = open(bucket("revisions", HISTORY, Duration::ZERO)).await?;
        if let Ok(info) = revisions.stream.info().await {
            crate::nats::warn_if_one_replica(
                &client,
                "the registry",
                &info.config.name,
                info.config.num_replicas,
            );
        }
        Ok(Registry {
            revisions,
            instances: open(bucket("instances", 1, STATUS_AGE)).await?,
            parts,
            client,
        })
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The current revision's manifest and the sequence of its `head` value; `None` before the
    /// first push.
    pub async fn head(&self) -> Result<Option<(Manifest, u64)>, RegistryError> {
        let entry = self
            .revisions
            .entry("head")
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Some((parse_manifest(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The current revision's number, also when its manifest is of a schema this fedgate
    /// cannot read.
    pub async fn head_revision(&self) -> Result<Option<u64>, RegistryError> {
        match self.head().await {
            Ok(head) => Ok(head.map(|(manifest, _)| manifest.revision)),
            Err(RegistryError::Schema { revision, .. }) => Ok(Some(revision)),
            Err(e) => Err(e),
        }
    }

    /// Revision `revision`'s manifest.
    pub async fn manifest(&self, revision: u64) -> Result<Manifest, RegistryError> {
        let value = self
            .revisions
            .get(format!("rev.{revision}"))
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        match value {
            Some(value) => parse_manifest(&value),
            // The head is committed before its archive copy is written.
            None => match self.head().await? {
                Some((head, _)) if head.revision == revision => Ok(head),
                _ => Err(RegistryError::NoRevision(revision)),
            },
        }
    }

    /// Every revision's manifest, oldest first.
    pub async fn history(&self) -> Result<Vec<Manifest>, RegistryError> {
        let mut keys = match self.revisions.keys().await {
            Ok(keys) => keys,
            Err(e) => return Err(RegistryError::Unreachable(e.to_string())),
        };
        let mut numbers = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| RegistryError::Unreachable(e.to_string()))?;
            if let Some(n) = key.strip_prefix("rev.").and_then(|n| n.parse::<u64>().ok()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        if let Ok(Some(head)) = self.head_revision().await
            && !numbers.contains(&head)
        {
            numbers.push(head);
        }
        let mut manifests = Vec::new();
        for n in numbers {
            match self.manifest(n).await {
                Ok(manifest) => manifests.push(manifest),
                Err(e @ RegistryError::Schema { .. }) => {
                    tracing::warn!(error = %e, "leaving out a revision of a newer schema");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(manifests)
    }

    /// Reads a revision's documents, checking each against its manifest entry.
    pub async fn fetch(&self, manifest: &Manifest) -> Result<Set, RegistryError> {
        let mut set = Set::default();
        for (path, document) in &manifest.documents {
            let (part, key) = place(path)
                .filter(|(_, key)| super::set::valid_key(key))
                .ok_or_else(|| {
                    RegistryError::Manifest(format!(
                        "revision {}: {path} is not a document a set holds",
                        manifest.revision
                    ))
                })?;
            let entry = self.parts[part]
                .entry_for_revision(key, document.sequence)
                .await
                .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Err(RegistryError::Manifest(format!(
                    "revision {}: {path} (value {}) is no longer in the registry's history",
                    manifest.revision, document.sequence
                )));
            };
            if digest(&entry.value) != document.sha256 {
                return Err(RegistryError::Manifest(format!(
                    "revision {}: {path} does not match its SHA-256",
                    manifest.revision
                )));
            }
            set.insert(path.clone(), entry.value.to_vec())
                .map_err(RegistryError::Manifest)?;
        }
        Ok(set)
    }

    /// Publishes `set`, signed by `signer`, as the revision after `parent` (`None`: the
    /// first). Only documents that differ from a verified parent's are written; removed ones
    /// get a delete marker. Fails, with no new head, when another push committed first.
    pub async fn push(
        &self,
        set: &Set,
        parent: Option<Parent<'_>>,
        signer: &AuthorSigner,
        message: &str,
    ) -> Result<Manifest, RegistryError> {
        let revision = match parent {
            Some(p) => p.manifest.revision.checked_add(1).ok_or_else(|| {
                RegistryError::Manifest(format!(
                    "the head claims revision {}: there is no next one",
                    p.manifest.revision
                ))
            })?,
            None => 1,
        };
        let previous = parent.filter(|p| p.verified).map(|p| p.manifest);
        let documents = self.write_documents(set, previous).await?;
        let mut manifest = Manifest {
            schema: SCHEMA,
            revision,
            parent: parent.map_or(0, |p| p.manifest.revision),
            created: super::unix_now(),
            author: String::new(),
            message: message.to_string(),
            documents,
            signature: None,
        };
        signer.sign(&mut manifest);
        let json = Bytes::from(
            serde_json::to_vec(&manifest).map_err(|e| RegistryError::Unreachable(e.to_string()))?,
        );
        self.commit_head(json.clone(), parent.map(|p| p.sequence))
            .await?;
        self.archive_and_prune(&manifest, json, previous).await;
        Ok(manifest)
    }

    /// Writes the documents of `set` that differ from `parent`'s, and returns where each of
    /// the set's documents is.
    async fn write_documents(
        &self,
        set: &Set,
        parent: Option<&Manifest>,
    ) -> Result<BTreeMap<String, Document>, RegistryError> {
        let unreachable = |e: &dyn std::fmt::Display| RegistryError::Unreachable(e.to_string());
        let mut documents = BTreeMap::new();
        for (path, bytes) in set.documents() {
            let sha256 = digest(bytes);
            let unchanged = parent
                .and_then(|m| m.documents.get(path))
                .filter(|d| d.sha256 == sha256);
            let sequence = match unchanged {
                Some(document) => document.sequence,
                None => {
                    let (part, key) = place(path).ok_or_else(|| {
                        RegistryError::Manifest(format!("{path} is not part of a set"))
                    })?;
                    self.parts[part]
                        .put(key, Bytes::copy_from_slice(bytes))
                        .await
                        .map_err(|e| unreachable(&e))?
                }
            };
            documents.insert(
                path.clone(),
                Document {
                    sequence,
                    sha256,
                    bytes: bytes.len() as u64,
                },
            );
        }
        Ok(documents)
    }

    /// Makes `json` the head: in place of the head value at sequence `head`, or as the first.
    /// Another push that committed first makes this a [`RegistryError::Conflict`].
    async fn commit_head(&self, json: Bytes, head: Option<u64>) -> Result<(), RegistryError> {
        let unreachable = |e: &dyn std::fmt::Display| RegistryError::Unreachable(e.to_string());
        match head {
            Some(head) => self
                .revisions
                .update("head", json, head)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => RegistryError::Conflict,
                    _ => unreachable(&e),
                })?,
            None => self
                .revisions
                .create("head", json)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => RegistryError::Conflict,
                    _ => unreachable(&e),
                })?,
        };
        Ok(())
    }

    /// After a commit: writes the revision's archive copy, heals the parent's if its own push
    /// could not write it, and puts a delete marker on each document the revision dropped.
    async fn archive_and_prune(&self, manifest: &Manifest, json: Bytes, parent: Option<&Manifest>) {
        // The revision is live; its archive copy only serves history (and `manifest` falls
        // back on the head until it is written).
        if let Err(e) = self
            .revisions
            .put(format!("rev.{}", manifest.revision), json)
            .await
        {
            tracing::warn!(revision = manifest.revision, error = %e, "published, but the archive copy of the manifest failed");
        }
        // Heal the parent's archive copy if its own push could not write it.
        if let Some(parent) = parent
            && let Ok(None) = self.revisions.get(format!("rev.{}", parent.revision)).await
            && let Ok(json) = serde_json::to_vec(parent)
        {
            let _ = self
                .revisions
                .put(format!("rev.{}", parent.revision), json.into())
                .await;
        }
        // Documents the parent had and this revision drops.
        if let Some(parent) = parent {
            for path in parent.documents.keys() {
                if !manifest.documents.contains_key(path)
                    && let Some((part, key)) = place(path)
                {
                    let _ = self.parts[part].delete(key).await;
                }
            }
        }
    }

    /// Watches `head`: the current value first, then each change.
    pub async fn watch_head(&self) -> Result<kv::Watch, RegistryError> {
        self.revisions
            .watch_with_history("head")
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))
    }

    /// Writes this instance's status.
    pub async fn report(&self, status: &Status) -> Result<(), RegistryError> {
        let json =
            serde_json::to_vec(status).map_err(|e| RegistryError::Manifest(e.to_string()))?;
        self.instances
            .put(status_key(&status.instance), json.into())
            .await
            .map(|_| ())
            .map_err(|e| RegistryError::Unreachable(e.to_string()))
    }

    /// Every instance's last status report.
    ///
    /// Instances rewrite their reports every heartbeat and the bucket keeps one value per key,
    /// so a key listing can miss a key whose value is replaced while it runs. A watch from the
    /// last value of each key, read until it has caught up, sees every key's latest report.
    pub async fn statuses(&self) -> Result<Vec<Status>, RegistryError> {
        use futures::TryStreamExt;
        let unreachable = |e: &dyn std::fmt::Display| RegistryError::Unreachable(e.to_string());
        // Keys from the stream's subject list, values by direct get: no consumer is made, so
        // this answers while a cluster node is lost (a consumer placed on it would not).
        let stream = self.instances.stream.clone();
        let filter = format!("{}>", self.instances.prefix);
        let mut subjects = stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| unreachable(&e))?;
        let mut keys = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(|e| unreachable(&e))? {
            if let Some(key) = subject.strip_prefix(self.instances.prefix.as_str()) {
                keys.push(key.to_string());
            }
            if keys.len() >= MAX_INSTANCES {
                break;
            }
        }
        let mut latest = BTreeMap::new();
        for key in keys {
            let value = self
                .instances
                .get(&key)
                .await
                .map_err(|e| unreachable(&e))?;
            if let Some(status) = value.and_then(|v| serde_json::from_slice::<Status>(&v).ok()) {
                latest.insert(key, status);
            }
        }
        Ok(latest.into_values().collect())
    }
}
