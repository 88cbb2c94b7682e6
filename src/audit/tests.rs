use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{self, ChainState, GENESIS};
use super::review::{self, verify};
use super::*;

fn options(path: &Path, rotate_bytes: u64) -> FileOptions {
    FileOptions {
        path: path.to_path_buf(),
        rotate_bytes,
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_millis(100),
        instance: "fg1".into(),
        checkpoints: None,
        budget_bytes: None,
    }
}

fn event(n: usize) -> Event {
    Event {
        edge: "federation".into(),
        realm: "prod".into(),
        caller: Some(format!("choria=user{n}.mcollective")),
        mapped_caller: Some(format!("choria=user{n}.mcollective")),
        request_id: Some(format!("{n:032x}")),
        collectives: vec!["london".into()],
        agent: Some("rpcutil".into()),
        action: Some("ping".into()),
        decision: Some(if n.is_multiple_of(3) {
            Verdict::Deny
        } else {
            Verdict::Allow
        }),
        stage: "authorize".into(),
        rule: Some("rpcutil.policy:2".into()),
        reason: "allowed by rpcutil.policy:2 — ünïcode \"quoted\"".into(),
        ..Event::default()
    }
}

async fn write(path: &Path, count: usize, rotate_bytes: u64) {
    let sink = FileSink::open(options(path, rotate_bytes)).unwrap();
    for n in 0..count {
        sink.append(Kind::Decision, record::new_id("fg1"), event(n))
            .await
            .unwrap();
    }
}

#[test]
fn sealed_lines_are_canonical_and_check() {
    let mut state = ChainState::genesis();
    let (first, line) = record::seal(
        Kind::Decision,
        "fg1:a".into(),
        "fg1",
        record::now(),
        event(1),
        &mut state,
    );
    assert_eq!(first.prev, GENESIS);
    assert_eq!((first.id.as_str(), first.seq), ("fg1:a", 0));
    assert_eq!(record::check_line(&line).unwrap(), first);
    let text = String::from_utf8(line.clone()).unwrap();
    // Keys are sorted, so `action` leads and `v` ends the line.
    assert!(text.starts_with(r#"{"action":"ping","#), "{text}");
    assert!(text.ends_with(r#""v":1}"#), "{text}");
    let (second, _) = record::seal(
        Kind::Decision,
        "fg1:b".into(),
        "fg1",
        record::now(),
        event(2),
        &mut state,
    );
    assert_eq!(second.prev, first.hash);
    assert_eq!(second.seq, 1);

    let spaced = text.replacen(r#""action":"ping""#, r#""action": "ping""#, 1);
    assert_eq!(
        record::check_line(spaced.as_bytes()),
        Err(record::LinkError::NotCanonical)
    );
    let edited = text.replacen("ping", "pong", 1);
    assert_eq!(
        record::check_line(edited.as_bytes()),
        Err(record::LinkError::Hash)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_anywhere_in_10000_records_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write(&path, 9_999, u64::MAX).await; // plus the header: 10,000 records
    let intact = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!(intact.records, 10_000);
    assert_eq!(intact.start, ChainState::genesis());

    let original = std::fs::read(&path).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    for line in [1, 2, 1234, 5000, 9999, 10_000] {
        let (begin, end) = (starts[line - 1], starts[line] - 1); // end is the newline
        for offset in [begin + 7, (begin + end) / 2, end - 1, end] {
            let mut flipped = original.clone();
            flipped[offset] ^= 0x01;
            std::fs::write(&path, &flipped).unwrap();
            let broken = verify(std::slice::from_ref(&path)).unwrap_err();
            assert_eq!(broken.line, line, "flip at byte {offset}: {broken}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_reordered_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write(&path, 20, u64::MAX).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let deleted: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 9)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&path, deleted).unwrap();
    let broken = verify(std::slice::from_ref(&path)).unwrap_err();
    assert_eq!(broken.line, 10, "{broken}");
    assert!(broken.problem.contains("prev"), "{broken}");

    let mut swapped = lines.clone();
    swapped.swap(4, 5);
    std::fs::write(
        &path,
        swapped.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    assert_eq!(verify(std::slice::from_ref(&path)).unwrap_err().line, 5);

    std::fs::write(&path, &text[..text.len() - 1]).unwrap();
    let broken = verify(std::slice::from_ref(&path)).unwrap_err();
    assert_eq!(
        (broken.line, broken.problem.as_str()),
        (21, "torn record: no final newline")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_continues_across_rotation_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write(&path, 40, 4096).await;
    write(&path, 40, 4096).await; // a restart resumes the chain
    let files = review::trail(&path);
    assert!(files.len() > 3, "{files:?}");
    // Given in any order (the shell sorts `audit.log` before `audit.log.000001`), it verifies.
    let mut shuffled = files.clone();
    shuffled.reverse();
    let intact = verify(&shuffled).unwrap();
    assert_eq!(intact.records, intact.end.seq);
    assert_eq!(intact.files, files);
    let decisions = review::records(&files)
        .filter(|(_, _, r)| r.kind == Kind::Decision)
        .count();
    assert_eq!(decisions, 80);
    // Every rotated file starts with a header naming its predecessor.
    let second = std::fs::read_to_string(&files[1]).unwrap();
    let header: Record = serde_json::from_str(second.lines().next().unwrap()).unwrap();
    assert_eq!(header.kind, Kind::Header);
    assert_eq!(
        header.event.previous_file.as_deref(),
        Some("audit.log.000001")
    );

    // A missing middle file breaks the chain at the first line of the next one.
    let without: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| p.clone())
        .collect();
    let broken = verify(&without).unwrap_err();
    assert_eq!((broken.file.clone(), broken.line), (files[2].clone(), 1));
    assert!(broken.problem.contains("a file is missing"), "{broken}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_tail_stops_the_sink_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write(&path, 3, u64::MAX).await;
    let mut text = std::fs::read(&path).unwrap();
    text.truncate(text.len() - 10);
    std::fs::write(&path, text).unwrap();
    let err = FileSink::open(options(&path, u64::MAX)).err().unwrap();
    assert!(err.to_string().contains("torn record"), "{err}");
}

#[test]
fn values_are_recorded_only_where_configured() {
    let auditor = Auditor::new(
        "fg1",
        Vec::new(),
        vec!["puppet".into(), "service.restart".into()],
    );
    assert!(auditor.records_values("puppet", "runonce"));
    assert!(auditor.records_values("service", "restart"));
    assert!(!auditor.records_values("service", "stop"));
    assert!(!auditor.records_values("rpcutil", "ping"));
}

/// A clean stop closes the sink: the records handed over before are written and anchored by a
/// last checkpoint on disk before `close` returns (a writer left to the process's exit could
/// lose it), and a record offered afterwards is refused.
#[tokio::test]
async fn closing_the_sink_anchors_the_trail_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("checkpoint.key");
    let (private, _) = checkpoint::generate().unwrap();
    std::fs::write(&key, private).unwrap();
    let signer = checkpoint::Signer::load(&key, 1000, Duration::from_secs(3600)).unwrap();
    let path = dir.path().join("audit.log");
    let sink = FileSink::open(FileOptions {
        checkpoints: Some(std::sync::Arc::new(signer)),
        ..options(&path, u64::MAX)
    })
    .unwrap();
    let appends = (0..5).map(|n| sink.append(Kind::Decision, record::new_id("fg1"), event(n)));
    for written in futures::future::join_all(appends).await {
        written.unwrap();
    }
    sink.close().await;
    let kinds: Vec<Kind> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| record::check_line(l.as_bytes()).unwrap().kind)
        .collect();
    // The header, the start-up checkpoint, five decisions, the closing checkpoint.
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    assert_eq!(kinds[2..7], [Kind::Decision; 5]);
    assert_eq!(kinds.last(), Some(&Kind::Checkpoint));
    let late = sink
        .append(Kind::Decision, record::new_id("fg1"), event(9))
        .await;
    assert!(matches!(late, Err(SinkError::Stopped)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_writing_themselves_and_through_the_thread_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = FileSink::open(options(&path, u64::MAX)).unwrap();
    // Sixteen callers at once: some find the writer free and write their own records, the
    // others hand theirs to the thread; every record lands once, on one intact chain.
    let callers = (0..16).map(|caller| {
        let sink = sink.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                sink.append(
                    Kind::Decision,
                    record::new_id("fg1"),
                    event(caller * 1000 + n),
                )
                .await
                .unwrap();
            }
        })
    });
    for caller in futures::future::join_all(callers).await {
        caller.unwrap();
    }
    sink.close().await;
    let intact = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!(intact.records, 1 + 16 * 200);
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| record::check_line(l.as_bytes()).unwrap().event.request_id)
        .collect();
    assert_eq!(ids.len(), 16 * 200);
}

#[tokio::test]
async fn a_record_its_caller_wrote_gets_its_checkpoint_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("checkpoint.key");
    let (private, _) = checkpoint::generate().unwrap();
    std::fs::write(&key, private).unwrap();
    let signer = checkpoint::Signer::load(&key, 1000, Duration::from_millis(300)).unwrap();
    let path = dir.path().join("audit.log");
    // The thread would sleep a minute between syncs: only the record's checkpoint can wake it.
    let sink = FileSink::open(FileOptions {
        checkpoints: Some(std::sync::Arc::new(signer)),
        fsync_interval: Duration::from_secs(60),
        ..options(&path, u64::MAX)
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sink.append(Kind::Decision, record::new_id("fg1"), event(1))
        .await
        .unwrap();
    let kinds = || -> Vec<Kind> {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| record::check_line(l.as_bytes()).unwrap().kind)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while kinds().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The header, the start-up checkpoint, the decision, and its checkpoint within the interval.
    assert_eq!(
        kinds(),
        [
            Kind::Header,
            Kind::Checkpoint,
            Kind::Decision,
            Kind::Checkpoint
        ]
    );
}
