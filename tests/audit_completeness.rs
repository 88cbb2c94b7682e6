//! `fedgate audit verify` proves a trail is whole from its beginning (issue 20, finding 1): a
//! copy whose first records, or oldest rotated files, were removed is refused and the missing
//! records named, unless `--from SEQ` accepts the cut; and several instances' trails given at
//! once are each verified as the chain of their own (finding 8). The real `fedgate` binary on trails the
//! file sink wrote.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fedgate::audit::file::{FileOptions, FileSink, rotated_files};
use fedgate::audit::record::new_id;
use fedgate::audit::{Event, Fsync, Kind, Verdict};
use support::fedgate_bin;

async fn write_trail(path: &Path, count: usize, rotate_bytes: u64) {
    write_trail_of("fg1", path, count, rotate_bytes).await
}

async fn write_trail_of(instance: &str, path: &Path, count: usize, rotate_bytes: u64) {
    let sink = FileSink::open(FileOptions {
        path: path.to_path_buf(),
        rotate_bytes,
        fsync: Fsync::Always,
        fsync_interval: Duration::from_millis(100),
        instance: instance.into(),
        checkpoints: None,
        budget_bytes: None,
    })
    .unwrap();
    for n in 0..count {
        let event = Event {
            edge: "websocket".into(),
            caller: Some(format!("up=user{n}")),
            agent: Some("rpcutil".into()),
            action: Some("ping".into()),
            decision: Some(Verdict::Allow),
            stage: "authorize".into(),
            code: "allowed".into(),
            ..Event::default()
        };
        sink.append(Kind::Decision, new_id(instance), event)
            .await
            .unwrap();
    }
}

/// `fedgate audit verify ARGS`: exit code and stdout.
fn verify(args: &[&str], files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(fedgate_bin())
        .args(["audit", "verify"])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_trail_with_its_beginning_cut_off_is_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.log");
    write_trail(&active, 64, u64::MAX).await;
    let (code, out) = verify(&[], std::slice::from_ref(&active));
    assert_eq!(code, 0, "{out}");

    // The header and the first nine decisions removed: the rest still chains.
    let text = std::fs::read_to_string(&active).unwrap();
    let cut = dir.path().join("cut.log");
    let kept: Vec<&str> = text.lines().skip(10).collect();
    std::fs::write(&cut, kept.join("\n") + "\n").unwrap();
    let (code, out) = verify(&[], std::slice::from_ref(&cut));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("incomplete"), "{out}");
    assert!(out.contains("records 0..9 are missing"), "{out}");
    // A cut that is known is accepted as such, and only exactly there.
    let (code, out) = verify(&["--from", "10"], std::slice::from_ref(&cut));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("seq 10.."), "{out}");
    let (code, out) = verify(&["--from", "9"], std::slice::from_ref(&cut));
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn a_trail_missing_its_oldest_rotated_file_is_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.log");
    write_trail(&active, 400, 64 * 1024).await;
    let rotated = rotated_files(&active);
    assert!(rotated.len() >= 2, "{rotated:?}");
    let (code, out) = verify(&[], std::slice::from_ref(&active));
    assert_eq!(code, 0, "{out}");

    std::fs::remove_file(&rotated[0]).unwrap();
    let (code, out) = verify(&[], std::slice::from_ref(&active));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("incomplete"), "{out}");
    assert!(out.contains("are missing"), "{out}");
}

#[tokio::test]
async fn several_instances_trails_are_each_verified_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("fedgate-1.log");
    let two = dir.path().join("fedgate-2.log");
    write_trail_of("fedgate-1", &one, 300, 64 * 1024).await;
    write_trail_of("fedgate-2", &two, 40, u64::MAX).await;
    // As a shell expands audit/*.log: both active files; their rotated files come along.
    let (code, out) = verify(&[], &[one.clone(), two.clone()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fedgate-1: intact: "), "{out}");
    assert!(out.contains("fedgate-2: intact: 41 records"), "{out}");

    // A break in one chain is reported for that chain alone.
    let text = std::fs::read_to_string(&two).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"seq\":20,"))
        .collect();
    std::fs::write(&two, lines.join("\n") + "\n").unwrap();
    let (code, out) = verify(&[], &[one, two]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fedgate-1: intact: "), "{out}");
    assert!(out.contains("fedgate-2: broken:"), "{out}");
}
