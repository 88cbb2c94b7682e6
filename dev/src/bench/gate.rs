//! Policy and audit costs: actionpolicy decisions next to a hash-map allow-list, and the resign
//! path with a file-sink audit record per request next to the same path unaudited.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use rcgen::RsaKeySize;

use super::resign::{fixture, resign_all};
use super::{BenchError, Row, interleaved, row, setup_err};
use fedgate::audit::{Auditor, Event, FileOptions, FileSink, Fsync, Kind, Sink, Verdict};
use fedgate::policy::{Effect, PolicyFile, PolicySet, Query, Vantage, authorize};
use fedgate::security::Now;

/// Rules in the benchmark policy; the request matches only the last one.
pub const RULES: usize = 100;

/// A policy of [`RULES`] rules (exact, regex and group callers; action lists; some with
/// conditions) where only the last matches `choria=bench.mcollective` calling `rpcutil.ping`.
fn policy() -> Result<PolicySet, BenchError> {
    let mut text = String::from("policy default deny\n");
    for i in 0..RULES - 1 {
        let line = match i % 4 {
            0 => format!("allow\tchoria=user{i}.mcollective\t*\t*\t*\n"),
            1 => format!("deny\t/^up=team{i}-/\tping status\t*\t*\n"),
            2 => format!("allow\tgroup{i}\tping\tcountry=uk\t*\n"),
            _ => format!(
                "allow\tchoria=a{i}.mcollective choria=b{i}.mcollective\tping\t*\trole::web\n"
            ),
        };
        text.push_str(&line);
    }
    text.push_str("allow\tchoria=bench.mcollective\tping inventory\t*\t*\n");
    let mut set = PolicySet::empty(Effect::Deny);
    set.insert(
        None,
        "rpcutil",
        PolicyFile::parse("rpcutil.policy", &text).map_err(setup_err)?,
    );
    Ok(set)
}

/// Runs both comparisons, `budget` per side; the audit file goes under `dir`.
pub fn run(budget: Duration, dir: &Path) -> Result<Vec<Row>, BenchError> {
    Ok(vec![decision_row(budget)?, audited_row(budget, dir)?])
}

/// An actionpolicy decision over [`policy`] next to a hash-map allow-list lookup.
fn decision_row(budget: Duration) -> Result<Row, BenchError> {
    let set = policy()?;
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "choria=bench.mcollective",
    };
    if !authorize(&set, &query, Vantage::Gateway).allowed() {
        return Err(setup_err(
            "the benchmark policy does not allow the benchmark request",
        ));
    }
    let allow_list = allow_list();
    let key = (
        "choria=bench.mcollective".to_string(),
        "rpcutil".to_string(),
        "ping".to_string(),
    );
    Ok(row(
        format!("actionpolicy decision, {RULES} rules, last matches"),
        "hash-map allow-list lookup",
        interleaved(
            budget,
            || {
                black_box(allow_list.get(black_box(&key)));
            },
            || {
                black_box(authorize(&set, black_box(&query), Vantage::Gateway).allowed());
            },
        ),
    ))
}

/// (caller, agent, action) triples allowed: one per rule, and the benchmark request's.
fn allow_list() -> HashMap<(String, String, String), bool> {
    (0..RULES)
        .map(|i| {
            (
                (
                    format!("choria=user{i}.mcollective"),
                    "rpcutil".into(),
                    "ping".into(),
                ),
                true,
            )
        })
        .chain([(
            (
                "choria=bench.mcollective".into(),
                "rpcutil".into(),
                "ping".into(),
            ),
            true,
        )])
        .collect()
}

/// The resign path with a file-sink audit record per request next to the same path unaudited.
fn audited_row(budget: Duration, dir: &Path) -> Result<Row, BenchError> {
    let now = Now::system();
    let fx = fixture(RsaKeySize::_2048, now)?;
    let sink = FileSink::open(FileOptions {
        path: dir.join("bench-audit.log"),
        rotate_bytes: 64 * 1024 * 1024,
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_secs(1),
        instance: "bench".into(),
        checkpoints: None,
        budget_bytes: None,
    })
    .map_err(setup_err)?;
    let auditor = Auditor::new("bench", vec![Sink::File(sink)], Vec::new());
    let event = allowed_event();
    Ok(row(
        "resign request + audit record (file, fsync=interval)".into(),
        "resign request, unaudited",
        interleaved(
            budget,
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
            },
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
                let record =
                    futures::executor::block_on(auditor.record(Kind::Decision, event.clone()));
                black_box(record.ok());
            },
        ),
    ))
}

/// The decision record of the benchmark request, allowed by the policy's last rule.
fn allowed_event() -> Event {
    Event {
        edge: "federation".into(),
        realm: "prod".into(),
        caller: Some("choria=bench.mcollective".into()),
        mapped_caller: Some("choria=bench.mcollective".into()),
        request_id: Some("0".repeat(32)),
        collectives: vec!["london".into()],
        agent: Some("rpcutil".into()),
        action: Some("ping".into()),
        decision: Some(Verdict::Allow),
        stage: "authorize".into(),
        rule: Some("rpcutil.policy:100".into()),
        reason: "allowed by rpcutil.policy:100".into(),
        ..Event::default()
    }
}
