//! Sets, manifests, signatures and the cache.

use std::collections::BTreeMap;

use super::cache::Cache;
use super::set::{Set, digest};
use super::sign::{AuthorKey, signed_bytes};
use super::store::{Document, Manifest, SCHEMA, parse_manifest};
use super::*;

/// A new author key: its signer, and the authors that trust it under `name`.
fn author(name: &str) -> (AuthorSigner, Authors) {
    let (private, public) = AuthorSigner::generate().unwrap();
    let signer = AuthorSigner::from_pem(private.as_bytes(), name).unwrap();
    let key = AuthorKey::from_pem(public.as_bytes()).unwrap();
    assert_eq!(&key, signer.public());
    (
        signer,
        Authors::new(BTreeMap::from([(name.to_string(), key)])),
    )
}

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
        author: String::new(),
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
        signature: None,
    }
}

/// [`manifest_of`], signed by `signer`.
fn signed(signer: &AuthorSigner, set: &Set, revision: u64) -> Manifest {
    let mut manifest = manifest_of(set, revision);
    signer.sign(&mut manifest);
    manifest
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
    let future = br#"{"schema": 3, "revision": 9, "whatever": {"new": "shape"}}"#;
    match parse_manifest(future) {
        Err(RegistryError::Schema {
            revision: 9,
            schema: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(parse_manifest(br#"{"schema": 1, "revision": 4}"#).is_err());
    assert!(parse_manifest(b"not json").is_err());
}

#[test]
fn the_signed_bytes_are_one_unambiguous_form() {
    let mut set = Set::default();
    set.insert("identity.toml".into(), b"# none\n".to_vec())
        .unwrap();
    let mut manifest = manifest_of(&set, 7);
    manifest.created = 1_700_000_000;
    manifest.author = "alice".into();
    manifest.message = "allow alice".into();
    let want = format!(
        "fedgate registry revision v1\nschema 2\nrevision 7\nparent 6\ncreated 1700000000\n\
         author 5:alice\nmessage 11:allow alice\ndocuments 1\n\
         document 13:identity.toml 1 7 64:{}\n",
        digest(b"# none\n")
    );
    assert_eq!(String::from_utf8(signed_bytes(&manifest)).unwrap(), want);
    // A message that spells out a field, and the same text moved across the boundary
    // between two strings, give other bytes.
    let mut spelled = manifest.clone();
    spelled.author = "alice\nmessage 0:".into();
    spelled.message = String::new();
    let mut moved = manifest.clone();
    moved.author = "alic".into();
    moved.message = "eallow alice".into();
    for other in [spelled, moved] {
        assert_ne!(signed_bytes(&other), signed_bytes(&manifest));
    }
}

#[test]
fn only_a_trusted_authors_signature_over_the_whole_manifest_verifies() {
    let (alice, authors) = author("alice");
    let set = sample();
    let good = signed(&alice, &set, 3);
    assert_eq!(authors.verify(good.clone()).unwrap().author(), "alice");
    // It survives the bucket: JSON out and back.
    let parsed = parse_manifest(&serde_json::to_vec(&good).unwrap()).unwrap();
    assert!(authors.check(&parsed).is_ok());

    // Any field or document digest changed after signing.
    type Edit = fn(&mut Manifest);
    let edits: Vec<(&str, Edit)> = vec![
        ("revision", |m| m.revision += 1),
        ("parent", |m| m.parent = 0),
        ("created", |m| m.created += 1),
        ("message", |m| m.message = "x".into()),
        ("digest", |m| {
            m.documents.get_mut("identity.toml").unwrap().sha256 = digest(b"allow all\n")
        }),
        ("sequence", |m| {
            m.documents.get_mut("identity.toml").unwrap().sequence = 9
        }),
        ("document removed", |m| {
            m.documents.remove("identity.toml");
        }),
        ("signature", |m| {
            m.signature.as_mut().unwrap().ed25519 = "AAAA".into()
        }),
        ("huge signature", |m| {
            m.signature.as_mut().unwrap().ed25519 = "A".repeat(100_000)
        }),
    ];
    for (what, edit) in edits {
        let mut changed = good.clone();
        edit(&mut changed);
        assert_eq!(
            authors.check(&changed).map_err(|e| e.code()),
            Err("bad_signature"),
            "{what}"
        );
    }

    // Unsigned, also a manifest of schema 1 from before signing, whatever it carries.
    let mut unsigned = good.clone();
    unsigned.signature = None;
    assert_eq!(authors.check(&unsigned), Err(SignatureError::Unsigned));
    let mut old = good.clone();
    old.schema = store::UNSIGNED_SCHEMA;
    assert_eq!(authors.check(&old), Err(SignatureError::Unsigned));

    // Another key: under a name this config does not trust, and in alice's name.
    let (mallory, _) = author("mallory");
    let theirs = signed(&mallory, &set, 3);
    let err = authors.check(&theirs).unwrap_err();
    assert_eq!(err.code(), "unknown_author");
    assert!(err.to_string().contains("\"mallory\""), "{err}");
    // A name off the wire is cut and escaped before it reaches a report or a log.
    let mut long = theirs.clone();
    long.author = format!("{}\n", "m".repeat(100_000));
    let err = authors.check(&long).unwrap_err().to_string();
    assert!(err.len() < 400 && !err.contains('\n'), "{err}");
    let (impostor, _) = author("alice");
    let err = authors.check(&signed(&impostor, &set, 3)).unwrap_err();
    assert_eq!(err.code(), "bad_signature");
    assert!(
        err.to_string().contains(&impostor.public().fingerprint()),
        "{err}"
    );
}

#[test]
fn the_cache_keeps_the_committed_revision_and_notices_tampering() {
    let (alice, authors) = author("alice");
    let verified =
        |set: &Set, revision: u64| authors.verify(signed(&alice, set, revision)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache")).unwrap();
    assert!(cache.current(&authors).unwrap().is_none());
    let set = sample();
    let first = verified(&set, 1);
    cache.stage(&first, &set).unwrap();
    // Staged but not committed: still nothing current.
    assert!(cache.current(&authors).unwrap().is_none());
    cache.commit(1).unwrap();
    let (manifest, path) = cache.current(&authors).unwrap().unwrap();
    assert_eq!(manifest, first);
    assert_eq!(Set::read(&path).unwrap(), set);

    // Later revisions replace it; old ones are pruned to the last few.
    for revision in 2..=5 {
        cache.stage(&verified(&set, revision), &set).unwrap();
        cache.commit(revision).unwrap();
    }
    let current = cache.current(&authors).unwrap().unwrap().0;
    assert_eq!(current.manifest().revision, 5);
    assert!(!dir.path().join("cache/sets/1").exists());
    assert!(dir.path().join("cache/sets/4").exists());

    // Staging the current revision again leaves it alone: it is what a restart falls back on.
    cache
        .stage(&verified(&Set::default(), 5), &Set::default())
        .unwrap();
    assert_eq!(Set::read(&path_of(&cache, 5)).unwrap(), set);

    // Authors this instance no longer trusts: the cached revision is not used.
    let (_, others) = author("bob");
    let err = cache.current(&others).unwrap_err().to_string();
    assert!(
        err.contains("revision 5 is refused") && err.contains("not a trusted author"),
        "{err}"
    );

    // A manifest edited on disk to match an edited document no longer verifies.
    let manifest_file = cache.dir().join("sets/5.json");
    let mut edited: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    edited
        .documents
        .get_mut("policies/rpcutil.policy")
        .unwrap()
        .sha256 = digest(b"policy default allow\n");
    std::fs::write(&manifest_file, serde_json::to_vec(&edited).unwrap()).unwrap();
    std::fs::write(
        path_of(&cache, 5).join("policies/rpcutil.policy"),
        "policy default allow\n",
    )
    .unwrap();
    let err = cache.current(&authors).unwrap_err().to_string();
    assert!(err.contains("bad signature"), "{err}");

    // A changed byte on disk under the signed manifest is noticed.
    std::fs::write(
        &manifest_file,
        serde_json::to_vec(current.manifest()).unwrap(),
    )
    .unwrap();
    let err = cache.current(&authors).unwrap_err().to_string();
    assert!(err.contains("changed on disk"), "{err}");
}

fn path_of(cache: &Cache, revision: u64) -> std::path::PathBuf {
    cache.dir().join("sets").join(revision.to_string())
}
