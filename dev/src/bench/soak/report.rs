//! What the soak found: each second's sample, each traffic kind's tally, which series grew, and
//! the report files (JSON, Markdown and a plot of resident memory).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::bench::{BenchError, setup_err};

/// One second's reading of the `fedgate run` child.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since traffic started.
    pub t: f64,
    /// Resident memory, KiB.
    pub rss_kib: f64,
    /// Open file descriptors.
    pub fds: f64,
    /// OS threads.
    pub threads: f64,
    /// Tokio tasks alive (`fedgate_runtime_alive_tasks`).
    pub tasks: f64,
    /// Queues and maps, by metric name.
    pub queues: BTreeMap<String, f64>,
    /// Requests the load generator has in flight, all kinds.
    pub in_flight: f64,
}

/// How one series moved between the second fifth of the run and the last.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    /// The series.
    pub series: String,
    /// Median over the second fifth.
    pub early: f64,
    /// Median over the last fifth.
    pub late: f64,
    /// Least-squares slope over the second half, per minute.
    pub slope_per_minute: f64,
    /// The most `late` may exceed `early` by.
    pub allowed: f64,
    /// `late <= early + allowed`.
    pub bounded: bool,
}

/// Requests of one kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindReport {
    /// Traffic kind.
    pub kind: String,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered by every node.
    pub ok: u64,
    /// Requests that failed or came back short, with the first few reasons.
    pub failed: u64,
    /// Ticks skipped because the window was full.
    pub skipped: u64,
    /// Latency, milliseconds: median.
    pub p50_ms: f64,
    /// Latency, milliseconds: 99th percentile.
    pub p99_ms: f64,
    /// The first reasons a request failed.
    pub errors: Vec<String>,
}

/// The soak run's findings.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Seconds of traffic.
    pub seconds: f64,
    /// Per traffic kind.
    pub kinds: Vec<KindReport>,
    /// Growth checks.
    pub trends: Vec<Trend>,
    /// Every second's sample.
    pub samples: Vec<Sample>,
    /// No request failed and nothing grew without bound.
    pub passed: bool,
}

impl SoakReport {
    /// A Markdown summary.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# fedgate soak: {:.0} minutes, {}\n\n\
             | traffic | sent | ok | failed | skipped | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
            self.seconds / 60.0,
            if self.passed { "passed" } else { "FAILED" }
        );
        for k in &self.kinds {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} |\n",
                k.kind, k.sent, k.ok, k.failed, k.skipped, k.p50_ms, k.p99_ms
            ));
        }
        out.push_str(
            "\n| series | 2nd fifth (median) | last fifth (median) | slope /min (2nd half) | allowed growth | bounded |\n\
             |---|---:|---:|---:|---:|---|\n",
        );
        for t in &self.trends {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:+.2} | {:.0} | {} |\n",
                t.series,
                t.early,
                t.late,
                t.slope_per_minute,
                t.allowed,
                if t.bounded { "yes" } else { "NO" }
            ));
        }
        for k in &self.kinds {
            for e in &k.errors {
                out.push_str(&format!("\n- {}: {e}", k.kind));
            }
        }
        out.push('\n');
        out
    }
}

/// The series judged for growth and how much slack each gets: a fraction of its early value
/// and an absolute amount (allocator and pool plateaus, a socket more or less).
pub(super) fn trends(samples: &[Sample]) -> Vec<Trend> {
    let mut series: Vec<(String, Vec<f64>, f64, f64)> = vec![
        (
            "rss_kib".into(),
            samples.iter().map(|s| s.rss_kib).collect(),
            0.10,
            8192.0,
        ),
        (
            "fds".into(),
            samples.iter().map(|s| s.fds).collect(),
            0.10,
            16.0,
        ),
        (
            "threads".into(),
            samples.iter().map(|s| s.threads).collect(),
            0.0,
            4.0,
        ),
        (
            "tasks".into(),
            samples.iter().map(|s| s.tasks).collect(),
            0.25,
            64.0,
        ),
    ];
    let names: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.queues.keys()).collect();
    for name in names {
        series.push((
            name.clone(),
            samples
                .iter()
                .map(|s| s.queues.get(name).copied().unwrap_or(0.0))
                .collect(),
            0.25,
            64.0,
        ));
    }
    series
        .into_iter()
        .map(|(name, values, relative, absolute)| trend(name, &values, relative, absolute))
        .collect()
}

fn trend(series: String, values: &[f64], relative: f64, absolute: f64) -> Trend {
    let n = values.len();
    let fifth = (n / 5).max(1);
    let early = median(&values[fifth.min(n)..(2 * fifth).min(n)]);
    let late = median(&values[n.saturating_sub(fifth)..]);
    let allowed = early * relative + absolute;
    Trend {
        series,
        early,
        late,
        slope_per_minute: slope(&values[n / 2..]) * 60.0,
        allowed,
        bounded: late <= early + allowed,
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Least-squares slope per sample.
fn slope(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn plot_memory(report: &SoakReport, path: &Path) -> Result<(), BenchError> {
    use plotters::prelude::*;
    let points: Vec<(f64, f64)> = report
        .samples
        .iter()
        .map(|s| (s.t / 60.0, s.rss_kib / 1024.0))
        .collect();
    let max_t = points.last().map_or(1.0, |p| p.0).max(1.0 / 60.0);
    let max_mib = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(setup_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "fedgate run: resident memory under mixed traffic ({:.0} min)",
                report.seconds / 60.0
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_t, 0.0..max_mib)
        .map_err(setup_err)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(setup_err)?;
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(setup_err)?;
    root.present().map_err(setup_err)?;
    Ok(())
}

/// Writes `soak.json`, `soak.md` and `soak-memory.svg` to `out`.
pub(super) fn write_report(report: &SoakReport, out: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(out).map_err(setup_err)?;
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).map_err(setup_err);
    write(
        "soak.json",
        &serde_json::to_vec_pretty(report).map_err(setup_err)?,
    )?;
    write("soak.md", report.markdown().as_bytes())?;
    plot_memory(report, &out.join("soak-memory.svg"))?;
    Ok(())
}
