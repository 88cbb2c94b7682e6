//! Sets, manifests and the cache.

use super::cache::Cache;
use super::set::{Set, digest};
use super::store::{Document, Manifest, SCHEMA, parse_manifest};
use super::*;

fn sample() -> Set {
    let mut set = Set::default();
    set.insert(
        "policies/rpcutil.policy".into(),
        b"policy default deny\n".to_vec(),
    )
    .unwrap();
    set.insert(
        "policies/london/echo.policy".into(),
        b"policy default allow\n".to_vec(),
    )
    .unwrap();
    set.insert("identity.toml".into(), b"# none\n".to_vec())
        .unwrap();
    set
}

fn manifest_of(set: &Set, revision: u64) -> Manifest {
    Manifest {
        schema: SCHEMA,
        revision,
        parent: revision - 1,
        created: 0,
        author: "test@host".into(),
        message: String::new(),
        documents: set
            .documents()
            .iter()
            .map(|(path, bytes)| {
                let document = Document {
                    sequence: 1,
                    sha256: digest(bytes),
                    bytes: bytes.len() as u64,
                };
                (path.clone(), document)
            })
            .collect(),
    }
}

#[test]
fn a_set_round_trips_through_a_directory_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set");
    let set = sample();
    set.write(&path).unwrap();
    assert_eq!(Set::read(&path).unwrap(), set);

    // A file a set does not hold, and a name a bucket key cannot carry.
    std::fs::write(path.join("notes.txt"), "hi").unwrap();
    let err = Set::read(&path).unwrap_err().to_string();
    assert!(err.contains("notes.txt is not part of a set"), "{err}");
    std::fs::remove_file(path.join("notes.txt")).unwrap();
    std::fs::write(
        path.join("policies/bad name.policy"),
        "policy default deny\n",
    )
    .unwrap();
    let err = Set::read(&path).unwrap_err().to_string();
    assert!(err.contains("may hold only"), "{err}");
    let mut set = Set::default();
    assert!(
        set.insert("policies/x".into(), vec![0; set::MAX_DOCUMENT_BYTES + 1])
            .is_err()
    );
    // Only what `read` would take, also from a manifest another tool wrote.
    for path in [
        "policies/.hidden",
        "policies/a/b/c.policy",
        "policies//x",
        "notes.txt",
    ] {
        assert!(set.insert(path.into(), Vec::new()).is_err(), "{path}");
    }
}

#[test]
fn a_diff_names_each_changed_document() {
    let old = sample();
    let mut new = sample();
    new.insert(
        "policies/rpcutil.policy".into(),
        b"policy default allow\n".to_vec(),
    )
    .unwrap();
    new.insert("users.toml".into(), b"[users]\n".to_vec())
        .unwrap();
    let lines = new.diff(&old);
    assert!(
        lines.contains(&"changed policies/rpcutil.policy".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"-policy default deny".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"+policy default allow".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"added users.toml".to_string()), "{lines:?}");
    assert!(new.diff(&new).is_empty());
}

#[test]
fn a_manifest_of_another_schema_is_refused_before_it_is_read() {
    let manifest = manifest_of(&sample(), 3);
    let json = serde_json::to_vec(&manifest).unwrap();
    assert_eq!(parse_manifest(&json).unwrap(), manifest);
    let future = br#"{"schema": 2, "revision": 9, "whatever": {"new": "shape"}}"#;
    match parse_manifest(future) {
        Err(RegistryError::Schema {
            revision: 9,
            schema: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(parse_manifest(br#"{"schema": 1, "revision": 4}"#).is_err());
    assert!(parse_manifest(b"not json").is_err());
}

#[test]
fn the_cache_keeps_the_committed_revision_and_notices_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache")).unwrap();
    assert!(cache.current().unwrap().is_none());
    let set = sample();
    let first = manifest_of(&set, 1);
    cache.stage(&first, &set).unwrap();
    // Staged but not committed: still nothing current.
    assert!(cache.current().unwrap().is_none());
    cache.commit(1).unwrap();
    let (manifest, path) = cache.current().unwrap().unwrap();
    assert_eq!(manifest, first);
    assert_eq!(Set::read(&path).unwrap(), set);

    // Later revisions replace it; old ones are pruned to the last few.
    for revision in 2..=5 {
        cache.stage(&manifest_of(&set, revision), &set).unwrap();
        cache.commit(revision).unwrap();
    }
    assert_eq!(cache.current().unwrap().unwrap().0.revision, 5);
    assert!(!dir.path().join("cache/sets/1").exists());
    assert!(dir.path().join("cache/sets/4").exists());

    // Staging the current revision again leaves it alone: it is what a restart falls back on.
    cache
        .stage(&manifest_of(&Set::default(), 5), &Set::default())
        .unwrap();
    assert_eq!(Set::read(&path_of(&cache, 5)).unwrap(), set);

    // A changed byte on disk is noticed.
    std::fs::write(
        path_of(&cache, 5).join("policies/rpcutil.policy"),
        "policy default allow\n",
    )
    .unwrap();
    let err = cache.current().unwrap_err().to_string();
    assert!(err.contains("changed on disk"), "{err}");
}

fn path_of(cache: &Cache, revision: u64) -> std::path::PathBuf {
    cache.dir().join("sets").join(revision.to_string())
}
