//! The catalog against Prometheus' naming rules, the code and docs/metrics.md.

use std::collections::BTreeSet;
use std::path::Path;

use metrics::Unit;

use super::catalog::{Kind, METRICS};

/// The metric names the code passes to `metrics::counter!`, `gauge!` and `histogram!` (the
/// literal right after the macro's parenthesis), outside the catalog and these tests.
fn names_in_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let listing =
                path.ends_with("metrics/catalog.rs") || path.ends_with("metrics/tests.rs");
            if path.extension().is_none_or(|e| e != "rs") || listing {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for macro_call in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(macro_call) {
                    let rest = text[at + macro_call.len()..].trim_start();
                    let Some(quoted) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let name = quoted.split('"').next().unwrap_or_default();
                    if name.starts_with("fedgate_") || name.starts_with("choria_federation_") {
                        names.insert(name.to_string());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_the_code_sets_is_in_the_catalog() {
    let catalog: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
    let code = names_in_code();
    for name in &code {
        assert!(
            catalog.contains(name.as_str()),
            "{name} is set in the code but not in the catalog"
        );
    }
    for name in &catalog {
        assert!(
            code.contains(*name),
            "{name} is in the catalog but the code never sets it"
        );
    }
}

#[test]
fn names_follow_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for metric in METRICS {
        let name = metric.name;
        assert!(seen.insert(name), "{name} is listed twice");
        assert!(!metric.help.is_empty(), "{name} has no HELP");
        assert!(
            !metric.labels.contains(&"instance"),
            "{name}: `instance` is Prometheus' label"
        );
        if metric.kind == Kind::Counter && name.starts_with("fedgate_") {
            assert!(
                name.ends_with("_total"),
                "the counter {name} must end in _total"
            );
        }
        if metric.kind != Kind::Counter {
            assert!(!name.ends_with("_total"), "{name} is not a counter");
        }
        match metric.unit {
            Some(Unit::Seconds) if name.starts_with("fedgate_") => {
                assert!(name.ends_with("_seconds"), "{name} is in seconds")
            }
            Some(Unit::Bytes) => assert!(name.ends_with("_bytes"), "{name} is in bytes"),
            _ => {}
        }
        if metric.kind == Kind::Histogram {
            assert!(
                metric.buckets.windows(2).all(|w| w[0] < w[1]) && !metric.buckets.is_empty(),
                "{name}: buckets must rise"
            );
        }
    }
}

/// The rows of the metric tables in docs/metrics.md's "Metrics" section: name, type, labels,
/// unit, HELP.
fn documented() -> Vec<[String; 5]> {
    let doc = include_str!("../../docs/metrics.md");
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `fedgate_") || line.starts_with("| `choria_"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_string())
                .collect();
            assert_eq!(cells.len(), 5, "docs/metrics.md: {line}");
            [0, 1, 2, 3, 4].map(|i| cells[i].clone())
        })
        .collect()
}

/// A metric as docs/metrics.md writes its row.
fn row(metric: &super::catalog::Metric) -> [String; 5] {
    let labels = if metric.labels.is_empty() {
        "—".to_string()
    } else {
        metric
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unit = match metric.unit {
        Some(Unit::Seconds) => "seconds",
        Some(Unit::Bytes) => "bytes",
        Some(_) => "other",
        None => "—",
    };
    [
        format!("`{}`", metric.name),
        metric.kind.as_str().to_string(),
        labels,
        unit.to_string(),
        metric.help.to_string(),
    ]
}

#[test]
fn docs_list_every_metric_as_the_catalog_describes_it() {
    let documented = documented();
    let expected: Vec<[String; 5]> = METRICS.iter().map(row).collect();
    for want in &expected {
        assert!(
            documented.contains(want),
            "docs/metrics.md should have the row\n| {} |",
            want.join(" | ")
        );
    }
    for have in &documented {
        assert!(
            expected.contains(have),
            "docs/metrics.md has a row the catalog does not: {have:?}"
        );
    }
}
