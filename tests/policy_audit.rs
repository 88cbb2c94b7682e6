//! RBAC and audit end to end: a re-signing broker authorizes each mapped request with
//! actionpolicy, records every decision in the hash-chained trail before forwarding, answers
//! refused callers with the rule and reason, and refuses everything when it cannot audit.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fedgate::audit::{Kind, Record, Verdict, review};
use fedgate::client::{ReplyEvent, RpcCall, RpcClient, Summary};
use futures::StreamExt;
use support::{
    BrokerProcess, Network, audit_records as records, fedgate_bin, gate_block, network_block,
    realm, user,
};

const NODES: usize = 40;

const RULES: &str = support::PROD_CALLERS_TO_LONDON;

/// alice may ping everywhere, bob only on nodes with country=uk; nobody else may do anything,
/// and `rpcutil.inventory` is denied to alice by an explicit rule.
const RPCUTIL: &str = "policy default deny\n\
    deny\tchoria=alice.mcollective\tinventory\t*\t*\n\
    allow\tchoria=alice.mcollective\tping\t*\t*\n\
    allow\tchoria=bob.mcollective\tping\tcountry=uk\t*\n";

struct Topology {
    prod: Network,
    london: Network,
    dir: tempfile::TempDir,
}

impl Topology {
    fn start() -> Topology {
        Topology {
            prod: Network::start("prod"),
            london: Network::start("london"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, audit_extra: &str) -> PathBuf {
        let rules = self.dir.path().join("identity.toml");
        std::fs::write(&rules, RULES).unwrap();
        let privileged = realm("london").privileged.as_ref().unwrap();
        let text = format!(
            "[instance]\nworkers = 2\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
            gate_block(self.dir.path(), &[("rpcutil.policy", RPCUTIL)], audit_extra),
            network_block("federations.prod", &self.prod, ""),
            network_block(
                "federations.prod.collectives.london",
                &self.london,
                &format!(
                    "signer = {{ certificate = {:?}, key = {:?} }}",
                    privileged.cert, privileged.key
                ),
            ),
        );
        let path = self.dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }

    async fn client(&self, name: &str) -> RpcClient {
        self.prod.client(user("prod", name), None).await
    }
}

fn call(action: &str, expect: usize) -> RpcCall {
    let mut call = RpcCall::new("london", "rpcutil", action);
    call.federation = Some("prod".into());
    call.expect = Some(expect);
    call.timeout = Duration::from_secs(if expect > 1 { 20 } else { 5 });
    call
}

async fn run(client: &RpcClient, call: &RpcCall) -> (Summary, Vec<ReplyEvent>) {
    let mut replies = Vec::new();
    let summary = client
        .call_many(std::slice::from_ref(call), |r| replies.push(r.clone()))
        .await
        .unwrap();
    (summary, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_and_every_decision_is_audited() {
    let topo = Topology::start();
    let fleet = topo.london.start_fleet(NODES).await;
    let mut broker = BrokerProcess::spawn(&topo.config(""), "pa1").await;
    // Everything published into london, to prove denied requests never get there.
    let spy = topo.london.connect_as("alice").await;
    let mut seen = spy.subscribe("london.>").await.unwrap();
    spy.flush().await.unwrap();

    // Allowed: alice's ping reaches every node.
    let alice = topo.client("alice").await;
    let (summary, _) = run(&alice, &call("ping", NODES)).await;
    assert_eq!(
        (summary.responses, summary.ok),
        (NODES, NODES),
        "{summary:?}"
    );
    let allowed_id = summary.requestids[0].clone();

    // Denied by an explicit rule: nothing is published into london, and alice is told why.
    let before = fleet.stats().total;
    let (summary, replies) = run(&alice, &call("inventory", 1)).await;
    assert_eq!((summary.responses, summary.failed), (1, 1), "{summary:?}");
    let refusal = &replies[0];
    assert_eq!(refusal.sender, "fedgate:pa1");
    assert_eq!(refusal.statuscode, 1);
    assert_eq!(refusal.data["fedgate"]["rule"], "rpcutil.policy:2");
    assert!(
        refusal
            .statusmsg
            .contains("Denying based on explicit 'deny' policy in rpcutil.policy:2"),
        "{}",
        refusal.statusmsg
    );
    let denied_id = summary.requestids[0].clone();

    // Denied by the default: no rule lets bob call inventory.
    let bob = topo.client("bob").await;
    let (summary, replies) = run(&bob, &call("inventory", 1)).await;
    assert_eq!(summary.failed, 1, "{summary:?}");
    assert_eq!(replies[0].data["fedgate"]["rule"], "default");

    // Allowed with a fact condition: bob's ping is re-signed with country=uk added to its filter,
    // so only the uk quarter of the fleet acts.
    let (summary, replies) = run(&bob, &call("ping", NODES / 4)).await;
    assert_eq!(
        (summary.responses, summary.ok),
        (NODES / 4, NODES / 4),
        "{summary:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uk: Vec<String> = fedgate_dev::fleet::generate("london", NODES, &["london".into()])
        .into_iter()
        .filter(|n| n.facts["country"] == "uk")
        .map(|n| n.identity)
        .collect();
    let mut senders: Vec<String> = replies.iter().map(|r| r.sender.clone()).collect();
    senders.sort();
    assert_eq!(senders, uk);
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=bob.mcollective", "fedgate.privileged.mcollective"),
        NODES as u64 / 4,
        "only uk nodes acted for bob"
    );
    assert_eq!(
        fleet.stats().total,
        before + NODES as u64,
        "every node saw the one broadcast"
    );

    // Exactly the allowed requests were published into london.
    let mut published = 0;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), seen.next()).await
    {
        if !message.subject.as_str().contains(".reply.") {
            published += 1;
        }
    }
    assert_eq!(
        published, 2,
        "one broadcast for alice's ping, one for bob's"
    );

    // Drain: completion records are written for the allowed requests.
    assert!(broker.terminate().await.success());
    let audit = records(&topo.audit_file());
    let decisions: Vec<&Record> = audit.iter().filter(|r| r.kind == Kind::Decision).collect();
    assert_eq!(decisions.len(), 4, "{decisions:#?}");
    let allowed = decisions
        .iter()
        .find(|r| r.event.request_id.as_deref() == Some(&allowed_id))
        .unwrap();
    assert_eq!(allowed.event.decision, Some(Verdict::Allow));
    assert_eq!(
        allowed.event.caller.as_deref(),
        Some("choria=alice.mcollective")
    );
    assert_eq!(
        allowed.event.mapped_caller.as_deref(),
        Some("choria=alice.mcollective")
    );
    assert_eq!(allowed.event.rule.as_deref(), Some("rpcutil.policy:3"));
    assert_eq!(
        (
            allowed.event.agent.as_deref(),
            allowed.event.action.as_deref()
        ),
        (Some("rpcutil"), Some("ping"))
    );
    let denied = decisions
        .iter()
        .find(|r| r.event.request_id.as_deref() == Some(&denied_id))
        .unwrap();
    assert_eq!(
        (denied.event.decision, denied.event.stage.as_str()),
        (Some(Verdict::Deny), "authorize")
    );
    let restricted = decisions
        .iter()
        .find(|r| r.event.restricted.is_some())
        .unwrap();
    assert_eq!(
        restricted.event.caller.as_deref(),
        Some("choria=bob.mcollective")
    );
    assert_eq!(
        restricted.event.restricted.as_deref(),
        Some("facts country==uk")
    );
    let completion = audit
        .iter()
        .find(|r| r.kind == Kind::Completion && r.event.links == [allowed.id.clone()])
        .expect("a completion record for alice's ping");
    assert_eq!(completion.event.replies, Some(NODES as u64));

    // The refusals, as CEF lines for a SIEM.
    let file = topo.audit_file();
    let cef = std::process::Command::new(fedgate_bin())
        .args(["audit", "query", "--decision", "deny", "--format", "cef"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(cef.status.success());
    let cef = String::from_utf8(cef.stdout).unwrap();
    let lines: Vec<&str> = cef.lines().collect();
    assert_eq!(lines.len(), 2, "{cef}");
    assert!(
        lines[0].starts_with("CEF:0|fedgate|fedgate|")
            && lines[0].contains("|denied|rpc request refused|5|")
            && lines[0].contains("suser=choria\\=alice.mcollective")
            && lines[0].contains(&format!("cs1={denied_id}")),
        "{cef}"
    );

    // The trail verifies with the CLI, and a one-byte edit is found at its line.
    let status = std::process::Command::new(fedgate_bin())
        .args(["audit", "verify"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("choria=bob.mcollective", "choria=bob.mcollectivf", 1),
    )
    .unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("choria=bob.mcollective"))
        .unwrap()
        + 1;
    let out = std::process::Command::new(fedgate_bin())
        .args(["audit", "verify"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("first bad line: {line}")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_requests_are_audited_too() {
    let topo = Topology::start();
    let broker = BrokerProcess::spawn(&topo.config(""), "pa2").await;
    // A caller from london's CA is not verifiable in the federation's realm.
    let outsider = topo.prod.client(user("london", "alice"), None).await;
    let (summary, _) = run(&outsider, &call("ping", 1)).await;
    assert_eq!(summary.responses, 0, "unverified callers get no answer");
    drop(broker);
    let audit = records(&topo.audit_file());
    let refused = audit
        .iter()
        .find(|r| r.kind == Kind::Decision)
        .expect("a record");
    assert_eq!(
        (refused.event.stage.as_str(), refused.event.code.as_str()),
        ("verify", "unknown_ca")
    );
    assert_eq!(refused.event.caller, None);
    assert_eq!(
        refused.event.claimed_caller.as_deref(),
        Some("choria=alice.mcollective")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_file_refuses_requests_then_resumes_when_it_can_write() {
    let topo = Topology::start();
    let fleet = topo.london.start_fleet(NODES).await;
    // Files may not grow past 16 KiB: the header and a few records fit, then writes fail.
    let broker = BrokerProcess::spawn_limited(&topo.config(""), "pa3", Some(32)).await;
    let alice = topo.client("alice").await;
    let mut refused = 0;
    let mut reached = 0;
    while refused < 3 {
        assert!(reached < 200, "the audit file never filled up");
        let mut ping = call("ping", NODES);
        ping.timeout = Duration::from_secs(3);
        let (summary, replies) = run(&alice, &ping).await;
        if summary.ok == NODES {
            reached += 1;
            continue;
        }
        assert_eq!(
            (summary.responses, summary.failed),
            (1, 1),
            "all or nothing: {summary:?}"
        );
        assert_eq!(replies[0].data["fedgate"]["code"], "audit_failed");
        assert!(
            replies[0].statusmsg.contains("could not be recorded"),
            "{}",
            replies[0].statusmsg
        );
        refused += 1;
    }
    assert!(
        reached > 0 && refused > 0,
        "reached {reached}, refused {refused}"
    );
    assert_eq!(
        fleet.stats().total,
        (reached * NODES) as u64,
        "no refused request reached a node"
    );
    assert_eq!(
        broker
            .counter(
                "fedgate_federation_refused_total",
                &[("reason", "audit_failed")]
            )
            .await,
        refused as f64
    );
    // The disk has room again (the soft file size limit is raised to the hard one): the same
    // process takes requests again, with no restart, and its chain goes on from the last
    // whole record.
    let pid = libc::pid_t::try_from(broker.pid()).unwrap();
    let (mut soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid,
        rlimit::Resource::FSIZE,
        None,
        Some((&mut soft, &mut hard)),
    )
    .unwrap();
    assert!(hard > soft, "the limit can be lifted: {soft} < {hard}");
    rlimit::prlimit(pid, rlimit::Resource::FSIZE, Some((hard, hard)), None).unwrap();
    for _ in 0..5 {
        let (summary, _) = run(&alice, &call("ping", NODES)).await;
        assert_eq!(summary.ok, NODES, "{summary:?}");
    }
    assert_eq!(fleet.stats().total, ((reached + 5) * NODES) as u64);
    drop(broker);
    // What was written is one intact chain: before the failures, and after them.
    let intact = review::verify(&review::trail(&topo.audit_file())).unwrap();
    assert!(intact.records as usize > reached + 5);
    let allowed = records(&topo.audit_file())
        .iter()
        .filter(|r| r.kind == Kind::Decision && r.event.code == "allowed")
        .count();
    assert_eq!(allowed, reached + 5, "one decision per forwarded request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_file_stops_start_up() {
    let topo = Topology::start();
    let config = topo.config("");
    // The audit path's parent is a file: no process, root included, can create the audit file.
    let audit_dir = topo.dir.path().join("audit");
    std::fs::remove_dir_all(&audit_dir).unwrap();
    std::fs::write(&audit_dir, "not a directory").unwrap();
    let out = tokio::process::Command::new(fedgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audit file") && stderr.contains("audit.log"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_sink_keeps_the_trail_and_the_file_covers_its_outage() {
    let topo = Topology::start();
    let fleet = topo.london.start_fleet(NODES).await;
    let mut js = fedgate_dev::natsd::NatsServer::start(
        &topo.dir.path().join("js"),
        fedgate_dev::natsd::NatsServerConfig {
            name: "audit-js".into(),
            jetstream: true,
            ..Default::default()
        },
    )
    .unwrap();
    let config = topo.config(&format!(
        "\n[audit.jetstream]\nnats = [{:?}]\nstream = \"AUDIT\"\nmax_bytes = 67108864\n",
        js.url()
    ));
    let mut broker = BrokerProcess::spawn(&config, "pa5").await;
    let alice = topo.client("alice").await;
    let (summary, _) = run(&alice, &call("ping", NODES)).await;
    assert_eq!(summary.ok, NODES, "{summary:?}");
    let (summary, _) = run(&alice, &call("inventory", 1)).await;
    assert_eq!(summary.failed, 1, "{summary:?}");

    // The stream's server goes away: the file still accepts, so requests still pass.
    js.stop();
    let (summary, _) = run(&alice, &call("ping", NODES)).await;
    assert_eq!(summary.ok, NODES, "{summary:?}");
    assert!(
        broker
            .counter("fedgate_audit_errors_total", &[("sink", "jetstream")])
            .await
            >= 1.0
    );
    assert_eq!(fleet.stats().total, 2 * NODES as u64);

    // The client delivers the unacknowledged record once the server is back; the next write
    // finds it at the chain's end and adds a correction record naming it.
    js.restart().unwrap();
    let watcher = async_nats::connect(js.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(watcher)
        .get_stream("AUDIT")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while stream.info().await.unwrap().state.messages < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unacknowledged record never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After a failure the sink fails fast for a second before it tries the stream again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (summary, _) = run(&alice, &call("ping", NODES)).await;
    assert_eq!(summary.ok, NODES, "{summary:?}");
    assert!(broker.terminate().await.success());

    // The stream, exported per instance, is an intact chain of records the file has too.
    let out = topo.dir.path().join("export");
    let export = std::process::Command::new(fedgate_bin())
        .args(["audit", "export", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(stdout.contains("fedgate.audit.pa5: intact"), "{stdout}");
    let streamed = records(&out.join("fedgate.audit.pa5.log"));
    let filed = records(&topo.audit_file());
    let file_ids: Vec<&str> = filed.iter().map(|r| r.id.as_str()).collect();
    let decisions: Vec<&Record> = streamed
        .iter()
        .filter(|r| r.kind == Kind::Decision)
        .collect();
    let verdicts: Vec<_> = decisions.iter().map(|r| r.event.decision).collect();
    let (allow, deny) = (Some(Verdict::Allow), Some(Verdict::Deny));
    assert_eq!(verdicts, [allow, deny, allow, allow], "{decisions:#?}");
    let corrections: Vec<&Record> = streamed
        .iter()
        .filter(|r| r.kind == Kind::Correction)
        .collect();
    assert_eq!(corrections.len(), 1, "{streamed:#?}");
    assert_eq!(corrections[0].event.links, [decisions[2].id.clone()]);
    assert_eq!(corrections[0].event.code, "late_record");
    for record in streamed.iter().filter(|r| r.kind != Kind::Correction) {
        assert!(file_ids.contains(&record.id.as_str()), "{record:?}");
    }
    assert_eq!(filed.iter().filter(|r| r.kind == Kind::Decision).count(), 4);
    assert_eq!(
        streamed
            .iter()
            .filter(|r| r.kind == Kind::Completion)
            .count(),
        3,
        "one completion per allowed request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_load_reloads_the_policy_and_loses_nothing() {
    let topo = Topology::start();
    let _fleet = topo.london.start_fleet(NODES).await;
    let config = topo.config("");
    let mut broker = BrokerProcess::spawn(&config, "pa6").await;
    let alice = topo.client("alice").await;

    // Pings run back to back while the process gets SIGHUP after SIGHUP: each one gets every
    // reply, and the process lives on.
    let load = tokio::spawn(async move {
        let mut summaries = Vec::new();
        for _ in 0..10 {
            summaries.push(run(&alice, &call("ping", NODES)).await.0);
        }
        (alice, summaries)
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        broker.signal("HUP");
    }
    let (alice, summaries) = load.await.unwrap();
    assert!(summaries.iter().all(|s| s.ok == NODES), "{summaries:?}");
    assert!(broker.is_running());
    // Signals sent close together may arrive as one.
    let reloads = |broker: &BrokerProcess| {
        broker
            .logs()
            .iter()
            .filter(|l| l.contains("SIGHUP: policy reloaded"))
            .count()
    };
    let before = reloads(&broker);
    assert!(before >= 1, "{:?}", broker.logs());

    // A policy change and a SIGHUP: the next request is decided by the new policy.
    std::fs::write(
        topo.dir.path().join("policies/rpcutil.policy"),
        "policy default deny\n",
    )
    .unwrap();
    broker.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reloads(&broker) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            broker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (summary, _) = run(&alice, &call("ping", 1)).await;
    assert_eq!((summary.ok, summary.failed), (0, 1), "{summary:?}");
}
