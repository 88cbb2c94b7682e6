//! `fedgate observe`: the latest figures of every instance of a cluster, in the layout of the
//! Ruby broker's `mco federation observe`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use super::stats::{ClusterSnapshot, SideSnapshot};

/// Most instances tracked; stats subjects are open to anyone on the network.
const MAX_INSTANCES: usize = 1024;
/// Instances not heard from for this long are dropped.
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// The latest figures each instance of a cluster published, for at most 1,024 instances, each
/// forgotten two minutes after it was last heard.
#[derive(Debug, Default)]
pub struct Latest {
    instances: BTreeMap<String, (ClusterSnapshot, Instant)>,
}

impl Latest {
    /// Keeps `snapshot` as its instance's latest.
    pub fn remember(&mut self, snapshot: ClusterSnapshot) {
        self.instances
            .retain(|_, (_, heard)| heard.elapsed() < FORGET_AFTER);
        if self.instances.len() >= MAX_INSTANCES && !self.instances.contains_key(&snapshot.instance)
        {
            return;
        }
        self.instances
            .insert(snapshot.instance.clone(), (snapshot, Instant::now()));
    }

    /// Each instance's figures, with the seconds since it was heard.
    pub fn aged(&self) -> BTreeMap<String, (ClusterSnapshot, u64)> {
        self.instances
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < FORGET_AFTER)
            .map(|(name, (s, at))| (name.clone(), (s.clone(), at.elapsed().as_secs())))
            .collect()
    }

    /// The latest snapshots.
    pub fn snapshots(&self) -> Vec<&ClusterSnapshot> {
        self.instances.values().map(|(s, _)| s).collect()
    }
}

/// One side's share of the cluster's traffic, per instance, as `(received, sent)` fractions.
pub fn shares(
    instances: &BTreeMap<String, (ClusterSnapshot, u64)>,
    side: fn(&ClusterSnapshot) -> &SideSnapshot,
) -> BTreeMap<String, (f64, f64)> {
    let total = |pick: fn(&SideSnapshot) -> u64| {
        instances
            .values()
            .fold(0u64, |sum, (s, _)| sum.saturating_add(pick(side(s))))
    };
    let (received, sent) = (total(|f| f.received), total(|f| f.sent));
    instances
        .iter()
        .map(|(name, (s, _))| {
            let f = side(s);
            (
                name.clone(),
                (
                    percent(f.received, received) / 100.0,
                    percent(f.sent, sent) / 100.0,
                ),
            )
        })
        .collect()
}

/// Picks one direction's figures out of a snapshot.
type SidePicker = fn(&ClusterSnapshot) -> &SideSnapshot;

/// Renders the figures of one cluster's instances; `age` gives seconds since each was heard.
pub fn render(cluster: &str, instances: &BTreeMap<String, (ClusterSnapshot, u64)>) -> String {
    let mut out = format!("Federation Broker: {cluster}\n\n");
    let sides: [(&str, SidePicker); 2] = [
        ("Federation", |s| &s.federation),
        ("Collective", |s| &s.collective),
    ];
    let width = instances.keys().map(String::len).max().unwrap_or(0) + 4;
    for (title, side) in sides {
        // Figures come off the network, so sums saturate rather than overflow.
        let total = |pick: &dyn Fn(&SideSnapshot) -> u64| {
            instances
                .values()
                .fold(0u64, |sum, (s, _)| sum.saturating_add(pick(side(s))))
        };
        let received = total(&|f| f.received);
        let sent = total(&|f| f.sent);
        let refused = total(&|f| f.refused.values().fold(0u64, |a, b| a.saturating_add(*b)));
        let _ = writeln!(
            out,
            "{title}\n  Totals:\n    Received: {received}  Sent: {sent}  Refused: {refused}\n\n  Instances:"
        );
        for (name, (snapshot, _)) in instances {
            let figures = side(snapshot);
            let name = printable(name);
            let _ = writeln!(
                out,
                "{name:>width$}: Received: {} ({:.1}%)  Sent: {} ({:.1}%)",
                figures.received,
                percent(figures.received, received),
                figures.sent,
                percent(figures.sent, sent),
            );
        }
        out.push('\n');
    }
    out.push_str("Instances:\n");
    for (name, (snapshot, age)) in instances {
        let _ = writeln!(
            out,
            "  {}: version {} started {} status {} (heard {age}s ago)",
            printable(name),
            printable(&snapshot.version),
            utc(snapshot.start_time),
            printable(&snapshot.status)
        );
    }
    out
}

/// A Unix second as UTC (`2026-12-05 23:40:25 UTC`), or the number when it is out of range.
fn utc(seconds: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| seconds.to_string())
}

/// Text from the network, without control characters that could drive the terminal.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(128).collect()
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(instance: &str, received: u64, sent: u64) -> (ClusterSnapshot, u64) {
        let mut s = ClusterSnapshot {
            cluster: "prod".into(),
            instance: instance.into(),
            status: "OK".into(),
            ..ClusterSnapshot::default()
        };
        s.federation.received = received;
        s.federation.sent = sent;
        (s, 1)
    }

    #[test]
    fn shows_each_instances_share() {
        let instances: BTreeMap<String, _> = [
            ("fb1".to_string(), snapshot("fb1", 30, 60)),
            ("fb2".to_string(), snapshot("fb2", 10, 20)),
        ]
        .into();
        let text = render("prod", &instances);
        assert!(text.contains("Received: 40  Sent: 80"), "{text}");
        assert!(text.contains("started 1970-01-01 00:00:00 UTC"), "{text}");
        assert!(
            text.contains("    fb1: Received: 30 (75.0%)  Sent: 60 (75.0%)"),
            "{text}"
        );
        assert!(
            text.contains("    fb2: Received: 10 (25.0%)  Sent: 20 (25.0%)"),
            "{text}"
        );
    }

    #[test]
    fn hostile_figures_cannot_overflow_or_drive_the_terminal() {
        let mut evil = snapshot("x\u{1b}[2Jy", u64::MAX, u64::MAX);
        evil.0.status = "\u{1b}]0;owned\u{7}".into();
        evil.0.start_time = i64::MAX;
        let instances: BTreeMap<String, _> = [
            ("x\u{1b}[2Jy".to_string(), evil),
            ("fb1".to_string(), snapshot("fb1", 5, 5)),
        ]
        .into();
        let text = render("prod", &instances);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains(&format!("started {}", i64::MAX)), "{text}");
        assert!(text.contains(&format!("Received: {}", u64::MAX)), "{text}");
    }
}
