//! The benchmarks that need real servers (`fedgate bench edge`, `flood`, `legacy`) end to
//! end with small numbers: every side is measured. In their own test binary, so they do not share
//! the machine with the edge tests' thousand sockets.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_benchmark_measures_every_side() {
    let dir = tempfile::tempdir().unwrap();
    let options = fedgate_dev::bench::edge::EdgeOptions {
        nodes: 3,
        seconds: 1.0,
        concurrency: 2,
        latency_samples: 5,
        relay_messages: 500,
        sockets: 50,
        exe: support::fedgate_bin().into(),
    };
    let report = fedgate_dev::bench::edge::run(dir.path(), &options)
        .await
        .unwrap();
    // Requests per second, relayed messages per second, and relayed messages per CPU second
    // of each relaying process.
    assert_eq!(report.throughput.len(), 3);
    assert!(
        report.throughput[2].name.contains("CPU second"),
        "{report:?}"
    );
    assert!(
        report
            .throughput
            .iter()
            .all(|r| r.baseline_ops.is_finite() && r.baseline_ops > 0.0 && r.fedgate_ops > 0.0),
        "{report:?}"
    );
    assert_eq!(report.latency.len(), 2);
    assert!(report.latency.iter().all(|r| r.p50_us > 0.0));
    assert_eq!(
        report.memory.iter().map(|m| m.sockets).collect::<Vec<_>>(),
        [50, 50]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_flood_benchmark_measures_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let options = fedgate_dev::bench::flood::FloodOptions {
        nodes: 2,
        seconds: 1.5,
        flooders: 2,
        exe: support::fedgate_bin().into(),
    };
    let report = fedgate_dev::bench::flood::run(dir.path(), &options)
        .await
        .unwrap();
    let names: Vec<_> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["no flood", "login flood", "signed garbage", "token holder"]
    );
    for phase in &report.phases {
        assert!(phase.logins > 0 && phase.pings > 0, "{phase:?}");
        assert!(
            phase.ping_p99_ms > 0.0 && phase.ping_p99_ratio > 0.0,
            "{phase:?}"
        );
        assert!(phase.audit_bytes_per_minute > 0.0, "{phase:?}");
    }
    assert!(
        report.phases[1..].iter().all(|p| p.flood_sent > 0),
        "{report:?}"
    );
    let table = fedgate_dev::bench::flood::table(&report);
    assert!(table.contains("signed garbage"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_legacy_benchmark_measures_every_side() {
    let dir = tempfile::tempdir().unwrap();
    let options = fedgate_dev::bench::legacy::LegacyOptions {
        requests: 100,
        window: 8,
        ..Default::default()
    };
    let rows = fedgate_dev::bench::legacy::run(dir.path(), &options)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.baseline_ops > 0.0 && r.fedgate_ops > 0.0),
        "{rows:?}"
    );
}
