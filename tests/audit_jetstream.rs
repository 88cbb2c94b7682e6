//! The JetStream audit sink against a real nats-server with JetStream: a stream that refuses
//! deletes and purges, one intact chain per instance even with a rival writer on the same
//! subject, resumption after restart, and fail-closed behaviour when the stream is full or gone.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use fedgate::audit::jetstream::{self, JetStreamOptions};
use fedgate::audit::record::{self, ChainState};
use fedgate::audit::{
    Auditor, Event, FileOptions, FileSink, Fsync, JetStreamSink, Kind, Record, Sink, Verdict,
};
use fedgate::nats::NatsEndpoint;
use fedgate_dev::natsd::{NatsServer, NatsServerConfig};

fn start_jetstream(dir: &Path) -> NatsServer {
    NatsServer::start(
        dir,
        NatsServerConfig {
            name: "audit-js".into(),
            jetstream: true,
            ..NatsServerConfig::default()
        },
    )
    .expect("start nats-server with JetStream")
}

fn endpoint(server: &NatsServer) -> NatsEndpoint {
    NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: None,
        identity: None,
        auth: None,
    }
}

fn options(server: &NatsServer, stream: &str, instance: &str) -> JetStreamOptions {
    JetStreamOptions {
        endpoint: endpoint(server),
        stream: stream.into(),
        subject: "fedgate.audit".into(),
        instance: instance.into(),
        replicas: 1,
        max_bytes: 64 << 20,
        duplicate_window: Duration::from_secs(120),
        timeout: Duration::from_secs(2),
        checkpoints: None,
    }
}

fn event(n: usize) -> Event {
    Event {
        edge: "federation".into(),
        realm: "prod".into(),
        caller: Some("choria=alice.mcollective".into()),
        request_id: Some(format!("{n:032x}")),
        collectives: vec!["london".into()],
        agent: Some("rpcutil".into()),
        action: Some("ping".into()),
        decision: Some(Verdict::Allow),
        stage: "authorize".into(),
        rule: Some("rpcutil.policy:2".into()),
        ..Event::default()
    }
}

async fn auditor(instance: &str, sink: JetStreamSink) -> Auditor {
    Auditor::new(instance, vec![Sink::JetStream(sink)], Vec::new())
}

/// Every record of the stream by subject, each chain checked link by link.
async fn chains(server: &NatsServer, stream: &str) -> BTreeMap<String, Vec<Record>> {
    let mut lines: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    jetstream::read_all(&endpoint(server), stream, |subject, line| {
        lines
            .entry(subject.to_string())
            .or_default()
            .push(line.to_vec());
        Ok(())
    })
    .await
    .unwrap();
    lines
        .into_iter()
        .map(|(subject, lines)| {
            let mut state = ChainState::genesis();
            let records = lines
                .iter()
                .map(|line| {
                    let record = record::check_line(line).unwrap();
                    record::check_link(&record, &mut state)
                        .unwrap_or_else(|e| panic!("{subject} seq {}: {e}", record.seq));
                    record
                })
                .collect();
            (subject, records)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_a_stream_that_keeps_one_intact_chain_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_jetstream(dir.path());
    let gw1 = JetStreamSink::open(options(&server, "AUDIT", "gw1"))
        .await
        .unwrap();
    // A second process misconfigured with the same instance name: it must not fork the chain.
    let rival = JetStreamSink::open(options(&server, "AUDIT", "gw1"))
        .await
        .unwrap();
    // Host-name instances have dots; the subject token replaces them.
    let gw2 = JetStreamSink::open(options(&server, "AUDIT", "gw2.example.net"))
        .await
        .unwrap();

    // The stream fedgate created refuses deletes and purges.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("AUDIT").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.deny_delete && config.deny_purge, "{config:?}");
    assert_eq!(config.duplicate_window, Duration::from_secs(120));

    const EACH: usize = 150;
    let mut writers = Vec::new();
    for (name, sink) in [("gw1", gw1), ("gw1", rival), ("gw2.example.net", gw2)] {
        let auditor = auditor(name, sink).await;
        writers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0..EACH {
                if let Ok(id) = auditor.record(Kind::Decision, event(n)).await {
                    accepted.push(id);
                }
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for writer in writers {
        accepted.push(writer.await.unwrap());
    }
    assert_eq!(accepted[2].len(), EACH, "gw2 has no rival");
    assert!(accepted[0].len() + accepted[1].len() > EACH, "{accepted:?}");

    let chains = chains(&server, "AUDIT").await;
    assert_eq!(
        chains.keys().collect::<Vec<_>>(),
        ["fedgate.audit.gw1", "fedgate.audit.gw2_example_net"]
    );
    // Exactly the accepted records are stored, each once, in one unbroken chain per subject.
    let stored: HashSet<&str> = chains["fedgate.audit.gw1"]
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let wanted: HashSet<&str> = accepted[0]
        .iter()
        .chain(&accepted[1])
        .map(String::as_str)
        .collect();
    assert_eq!(stored, wanted);
    assert_eq!(chains["fedgate.audit.gw1"].len(), wanted.len());
    assert_eq!(chains["fedgate.audit.gw2_example_net"].len(), EACH);

    // Deleting or purging an audit record is refused by the server.
    assert!(stream.delete_message(1).await.is_err());
    assert!(stream.purge().await.is_err());

    // A restarted instance continues its chain where the stream ends.
    let last = chains["fedgate.audit.gw2_example_net"]
        .last()
        .unwrap()
        .clone();
    let gw2 = JetStreamSink::open(options(&server, "AUDIT", "gw2.example.net"))
        .await
        .unwrap();
    let next = gw2
        .append(Kind::Decision, record::new_id("gw2.example.net"), event(0))
        .await
        .unwrap();
    assert_eq!(
        (next.seq, next.prev.as_str()),
        (last.seq + 1, last.hash.as_str())
    );

    // A republished record id (a retry) is stored once.
    let before = stream.info().await.unwrap().state.messages;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", next.id.as_str());
    let ack = js
        .publish_with_headers("fedgate.audit.gw2_example_net", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate);
    assert_eq!(stream.info().await.unwrap().state.messages, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_allows_deletes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_jetstream(dir.path());
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "LOOSE".into(),
            subjects: vec!["fedgate.audit.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = match JetStreamSink::open(options(&server, "LOOSE", "gw1")).await {
        Ok(_) => panic!("a stream without deny_delete was accepted"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("deny_delete and deny_purge"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_cannot_reserve_is_refused_with_the_servers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_jetstream(dir.path());
    // More storage than any disk here holds: nats-server refuses to reserve it, and the reason
    // it gives is the one reported, not the "stream not found" of the look-up before.
    let mut huge = options(&server, "HUGE", "gw1");
    huge.max_bytes = 1 << 60;
    let err = match JetStreamSink::open(huge).await {
        Ok(_) => panic!("a stream larger than the disk was created"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("cannot create the stream"), "{err}");
    assert!(err.contains("insufficient"), "{err}");
    assert!(!err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_unreachable_stream_fails_closed_unless_another_sink_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_jetstream(dir.path());
    let mut small = options(&server, "SMALL", "gw1");
    small.max_bytes = 64 * 1024;
    let sink = JetStreamSink::open(small).await.unwrap();
    let only_stream = auditor("gw1", sink.clone()).await;
    let file = FileSink::open(FileOptions {
        path: dir.path().join("audit.log"),
        rotate_bytes: 64 << 20,
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_secs(1),
        instance: "gw1".into(),
        checkpoints: None,
        budget_bytes: None,
    })
    .unwrap();
    let both = Auditor::new(
        "gw1",
        vec![Sink::File(file), Sink::JetStream(sink)],
        Vec::new(),
    );

    // The stream discards nothing: once full, it refuses, and so does the stream-only auditor.
    let mut written = 0;
    let refusal = loop {
        match only_stream.record(Kind::Decision, event(written)).await {
            Ok(_) => written += 1,
            Err(err) => break err.to_string(),
        }
        assert!(written < 10_000, "the stream never filled");
    };
    assert!(written > 50, "{written} records fit in 64 KiB");
    assert!(refusal.contains("jetstream:"), "{refusal}");
    let chains = chains(&server, "SMALL").await;
    assert_eq!(chains["fedgate.audit.gw1"].len(), written);

    // With the file too, the record is accepted: one sink is enough.
    let id = both.record(Kind::Decision, event(0)).await.unwrap();
    let file_records: Vec<Record> =
        fedgate::audit::review::records(&[dir.path().join("audit.log")])
            .map(|(_, _, r)| r)
            .collect();
    assert_eq!(file_records.last().unwrap().id, id);

    // The server gone: the stream-only auditor refuses.
    server.stop();
    let err = only_stream
        .record(Kind::Decision, event(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("jetstream:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_chain_carries_signed_checkpoints_that_verify() {
    use fedgate::audit::checkpoint::{Keys, Signer};
    use fedgate::audit::review::{self, Anchoring};

    let dir = tempfile::tempdir().unwrap();
    let server = start_jetstream(dir.path());
    let key = dir.path().join("checkpoint.key");
    let (private, _) = fedgate::audit::checkpoint::generate().unwrap();
    std::fs::write(&key, private).unwrap();
    let signer = std::sync::Arc::new(Signer::load(&key, 3, Duration::from_millis(300)).unwrap());
    let mut with_key = options(&server, "AUDIT", "gw1");
    with_key.checkpoints = Some(signer.clone());
    let sink = JetStreamSink::open(with_key.clone()).await.unwrap();
    let first = auditor("gw1", sink).await;
    for n in 0..7 {
        first.record(Kind::Decision, event(n)).await.unwrap();
    }
    // The seventh record waits for the interval, then is anchored.
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(first);
    // A restart anchors anything left and goes on.
    let sink = JetStreamSink::open(with_key).await.unwrap();
    let second = auditor("gw1", sink).await;
    second.record(Kind::Decision, event(7)).await.unwrap();

    let chain = &chains(&server, "AUDIT").await["fedgate.audit.gw1"];
    let kinds: Vec<Kind> = chain.iter().map(|r| r.kind).collect();
    let checkpoints = kinds.iter().filter(|k| **k == Kind::Checkpoint).count();
    assert!(checkpoints >= 3, "{kinds:?}");
    // The chain as `fedgate audit export` writes it: the stream's lines as stored.
    let file = dir.path().join("gw1.log");
    let mut text = Vec::new();
    jetstream::read_all(&endpoint(&server), "AUDIT", |_, line| {
        text.extend_from_slice(line);
        text.push(b'\n');
        Ok(())
    })
    .await
    .unwrap();
    std::fs::write(&file, text).unwrap();
    let keys = Keys::load(&[&key]).unwrap();
    let intact = review::verify_with(
        std::slice::from_ref(&file),
        None,
        Anchoring::Keys {
            keys: &keys,
            strict: true,
        },
    )
    .unwrap();
    let anchors = intact.anchors.unwrap();
    assert_eq!(anchors.checkpoints as usize, checkpoints);
    assert_eq!(
        anchors.unanchored, 1,
        "the record after the restart's checkpoint"
    );
}
