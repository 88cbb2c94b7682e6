//! What a caller can put into the audit trail before it is verified: every claimed text is cut
//! to a documented length and has its control characters escaped, so a request cannot grow a
//! record without bound or forge a row in `fedgate audit query` (issue 20, findings 3 and 4).
//! Real edge, nats-servers and the `fedgate` binary.

mod support;

use fedgate::audit::Kind;
use fedgate::audit::bound::MAX_CALLER;
use fedgate::edge::client::{Connect, WsClient};
use fedgate::security::Now;
use serde_json::Value;
use support::edge::{Gateway, connect_options, signed_ping_as};
use support::{audit_records, fedgate_bin};

/// A claimed caller id that, printed raw, ends the row it is in and starts a green "allow" row
/// of its own; 60,000 characters long.
fn forged_caller() -> String {
    format!(
        "choria=x\n2026-12-04T00:00:00.000000Z allow  up=admin \u{1b}[32m{}",
        "A".repeat(60_000)
    )
}

/// `message` (a `signed` edge message) with its request's caller id replaced, signature kept:
/// the edge refuses it and records what it claims.
fn claiming(mut message: Value, caller: &str) -> Value {
    let inner = message["request"]["message"].as_str().unwrap().to_string();
    let mut request: Value = serde_json::from_str(&inner).unwrap();
    request["envelope"]["callerid"] = Value::String(caller.to_string());
    message["request"]["message"] = Value::String(request.to_string());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_caller_id_is_cut_and_cannot_forge_a_review_row() {
    let gateway = Gateway::start("").await;
    let mut client = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    let (message, _) = signed_ping_as("edge", "alice", None, "forged", Now::system(), 60);
    let error = client
        .call(&claiming(message, &forged_caller()), |_| {})
        .await
        .unwrap();
    assert_eq!(error["code"], "unverified", "{error}");
    client.close().await;

    let file = gateway.audit_file();
    let records = audit_records(&file);
    let refused = records
        .iter()
        .find(|r| {
            r.event
                .claimed_caller
                .as_deref()
                .is_some_and(|c| c.starts_with("choria=x"))
        })
        .expect("the refusal is recorded with the caller it claimed");
    let claimed = refused.event.claimed_caller.as_deref().unwrap();
    assert_eq!(claimed.chars().count(), MAX_CALLER, "{claimed}");
    assert!(!claimed.chars().any(char::is_control), "{claimed:?}");
    assert!(claimed.starts_with("choria=x\\n2026-12-04"), "{claimed}");
    let line = std::fs::read_to_string(&file).unwrap();
    let longest = line.lines().map(str::len).max().unwrap();
    assert!(longest < 4096, "a record of {longest} bytes");

    // The review table: one row per decision, and no terminal escape reaches it.
    let out = std::process::Command::new(fedgate_bin())
        .args(["audit", "query"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.contains('\u{1b}'), "{table}");
    let decisions = records.iter().filter(|r| r.kind == Kind::Decision).count();
    assert_eq!(table.lines().count(), 1 + decisions, "{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("2026-12-04T00:00:00")),
        "a forged row: {table}"
    );
    gateway.edge.unwrap().shutdown().await;
}

/// A flood of refusals before verification from one address: `unverified_budget` of them are
/// recorded in full per interval, the rest are counted in one summary record per interval that
/// names the source and carries a sample, and nothing is lost from the count (finding 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_verification_are_aggregated_per_source_address() {
    const FLOOD: u64 = 60;
    let gateway = Gateway::start(
        "unverified_budget = 5\nunverified_interval_s = 2\nrate_per_second = 10000\nrate_burst = 10000\n",
    )
    .await;
    let mut client = WsClient::connect(&Connect {
        signed_only: true,
        ..connect_options(&gateway)
    })
    .await
    .unwrap();
    for n in 0..FLOOD {
        let (message, _) =
            signed_ping_as("edge", "alice", None, &format!("f{n}"), Now::system(), 60);
        let error = client
            .call(&claiming(message, &format!("choria=flood{n}")), |_| {})
            .await
            .unwrap();
        assert_eq!(error["code"], "unverified", "{error}");
    }
    client.close().await;
    // The summaries of the interval(s) the flood fell in.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;

    let records = audit_records(&gateway.audit_file());
    let flood: Vec<_> = records
        .iter()
        .filter(|r| {
            r.event
                .claimed_caller
                .as_deref()
                .is_some_and(|c| c.starts_with("choria=flood"))
        })
        .collect();
    let (summaries, full): (Vec<&&fedgate::audit::Record>, Vec<_>) =
        flood.iter().partition(|r| r.event.suppressed.is_some());
    assert!(!summaries.is_empty(), "{flood:#?}");
    // At most the budget per interval the flood touched, and every refusal counted once.
    assert!(
        full.len() <= 5 * (summaries.len() + 1),
        "{} full records",
        full.len()
    );
    let counted: u64 = summaries.iter().map(|r| r.event.suppressed.unwrap()).sum();
    assert_eq!(full.len() as u64 + counted, FLOOD);
    for summary in &summaries {
        assert_eq!(summary.event.code, "aggregated");
        assert_eq!(summary.event.source.as_deref(), Some("127.0.0.1"));
        assert!(
            summary.event.reason.contains("name_mismatch"),
            "{}",
            summary.event.reason
        );
    }
    assert!(
        full.iter()
            .all(|r| r.event.source.as_deref() == Some("127.0.0.1")),
        "each refusal before verification names its source"
    );
}

/// A token holder flooding past its rate limit: the requests refused before anything was
/// decided are budgeted per caller as refusals before verification are per address, so a valid
/// token cannot fill the trail either; every refused request is still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_are_aggregated_per_caller() {
    const FLOOD: usize = 60;
    let gateway = Gateway::start(
        "unverified_budget = 3\nunverified_interval_s = 2\nrate_per_second = 1\nrate_burst = 1\n",
    )
    .await;
    let token = gateway.token("alice", std::time::Duration::from_secs(300));
    let mut socket = support::edge::open(&gateway.url, Some(&token), None, None)
        .await
        .unwrap();
    assert_eq!(
        support::edge::next_json(&mut socket).await["type"],
        "welcome"
    );
    let mut limited = 0;
    for n in 0..FLOOD {
        let (_, end) = support::edge::rpc(
            &mut socket,
            serde_json::json!({"type":"rpc","id":format!("q{n}"),"collective":"london","agent":"nosuch","action":"x"}),
        )
        .await;
        if end["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= FLOOD - 5, "{limited} rate limited");
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;

    let records = audit_records(&gateway.audit_file());
    let over: Vec<&fedgate::audit::Record> = records
        .iter()
        .filter(|r| r.event.code == "rate_limited" || r.event.code == "aggregated")
        .collect();
    let (summaries, full): (Vec<&&fedgate::audit::Record>, Vec<_>) =
        over.iter().partition(|r| r.event.suppressed.is_some());
    assert!(!summaries.is_empty(), "{over:#?}");
    assert!(
        full.len() <= 3 * (summaries.len() + 1),
        "{} full records",
        full.len()
    );
    let counted: u64 = summaries.iter().map(|r| r.event.suppressed.unwrap()).sum();
    assert_eq!(full.len() + counted as usize, limited);
    for summary in &summaries {
        assert_eq!(summary.event.caller.as_deref(), Some("up=alice"));
        assert!(
            summary.event.reason.contains("rate limit"),
            "{}",
            summary.event.reason
        );
    }
}
