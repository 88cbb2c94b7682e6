//! Refusals before verification, aggregated per source address, so that nobody can fill the
//! trail, and then the disk, without credentials; and, the same way per caller, requests a
//! verified caller sent past its rate limit, which were refused before anything was decided.
//!
//! A caller who has not been verified can send as many bad requests as the connection takes.
//! Each source address may have `budget` of them recorded in full per interval. Beyond that, its
//! refusals are counted, and one summary record per source per interval gives the count and a
//! sample (the first one held back). The bound on the trail's growth is then `budget + 1`
//! records per source per interval, each bounded by [`super::bound`] (a few KB). Sources
//! beyond [`MAX_SOURCES`] in one interval share one summary, so the map holding them is bounded
//! too. Verified callers are never aggregated: each of their requests keeps its own record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::record::{Event, Verdict};

/// Sources tracked in one interval at most; later ones share the overflow summary.
pub const MAX_SOURCES: usize = 10_000;

/// Whether a refusal is recorded in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Within the source's budget: record it.
    Record,
    /// Counted in the source's summary instead.
    Counted,
}

#[derive(Default)]
struct Window {
    recorded: u64,
    counted: u64,
    sample: Option<Event>,
}

/// What an aggregator budgets, keyed by what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyed {
    /// Refusals before verification, by source address (written as the record's `source`).
    Source,
    /// Requests of a verified caller refused by its rate limit before they were decided, by
    /// caller id.
    RateLimited,
}

/// A per-key budget of records.
pub struct Aggregator {
    keyed: Keyed,
    budget: u64,
    interval: Duration,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    by_source: HashMap<String, Window>,
    /// Sources that found the map full.
    overflow: Window,
    overflow_sources: u64,
}

impl Aggregator {
    /// `budget` records in full per key per `interval`.
    pub fn new(keyed: Keyed, budget: u64, interval: Duration) -> Aggregator {
        Aggregator {
            keyed,
            budget,
            interval,
            windows: Mutex::default(),
        }
    }

    /// The interval summaries are written at.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one refusal from `source`: record it, or count it (keeping the first counted one as
    /// the summary's sample).
    pub fn take(&self, source: &str, event: &Event) -> Take {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let windows = &mut *windows;
        let full = windows.by_source.len() >= MAX_SOURCES;
        let window = match windows.by_source.get_mut(source) {
            Some(window) => window,
            None if full => {
                windows.overflow_sources += 1;
                &mut windows.overflow
            }
            None => windows.by_source.entry(source.to_string()).or_default(),
        };
        if window.recorded < self.budget {
            window.recorded += 1;
            return Take::Record;
        }
        window.counted += 1;
        if window.sample.is_none() {
            window.sample = Some(event.clone());
        }
        let kind = match self.keyed {
            Keyed::Source => "unverified",
            Keyed::RateLimited => "rate_limited",
        };
        metrics::counter!("fedgate_audit_aggregated_total", "kind" => kind).increment(1);
        Take::Counted
    }

    /// Ends the interval: one summary record per source that went over its budget (and one for
    /// the overflow), and every source starts afresh.
    pub fn drain(&self) -> Vec<Event> {
        let windows = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *windows)
        };
        let seconds = self.interval.as_secs_f64();
        let mut summaries: Vec<Event> = windows
            .by_source
            .into_iter()
            .filter_map(|(source, window)| self.summary(window, &source.to_string(), seconds))
            .collect();
        let others = format!("{} others", windows.overflow_sources);
        summaries.extend(self.summary(windows.overflow, &others, seconds));
        summaries
    }

    fn summary(&self, window: Window, source: &str, seconds: f64) -> Option<Event> {
        let sample = window.sample?;
        let what = match self.keyed {
            Keyed::Source => "refusals before verification",
            Keyed::RateLimited => "requests over the rate limit",
        };
        Some(Event {
            source: match self.keyed {
                Keyed::Source => Some(source.to_string()),
                Keyed::RateLimited => sample.source.clone(),
            },
            decision: Some(Verdict::Deny),
            stage: sample.stage.clone(),
            code: "aggregated".into(),
            suppressed: Some(window.counted),
            reason: format!(
                "{} more {what} from {source} in {seconds} s, beyond its budget of {} records; \
                 the first of them: {}: {}",
                window.counted, self.budget, sample.code, sample.reason
            ),
            ..sample
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(n: u64) -> Event {
        Event {
            edge: "websocket".into(),
            claimed_caller: Some(format!("choria=mallory{n}")),
            stage: "verify".into(),
            code: "bad_signature".into(),
            reason: "signature does not verify".into(),
            ..Event::default()
        }
    }

    #[test]
    fn a_source_over_its_budget_gets_one_summary_with_a_count_and_a_sample() {
        let aggregator = Aggregator::new(Keyed::Source, 3, Duration::from_secs(60));
        let (mallory, alice) = ("192.0.2.7", "192.0.2.8");
        let takes: Vec<Take> = (0..10)
            .map(|n| aggregator.take(mallory, &refusal(n)))
            .collect();
        assert_eq!(takes.iter().filter(|t| **t == Take::Record).count(), 3);
        assert_eq!(takes[3..], [Take::Counted; 7]);
        // Another source keeps its own budget.
        assert_eq!(aggregator.take(alice, &refusal(99)), Take::Record);

        let summaries = aggregator.drain();
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let summary = &summaries[0];
        assert_eq!(summary.source.as_deref(), Some("192.0.2.7"));
        assert_eq!(summary.suppressed, Some(7));
        assert_eq!(summary.code, "aggregated");
        assert_eq!(summary.claimed_caller.as_deref(), Some("choria=mallory3"));
        assert!(
            summary.reason.contains("bad_signature"),
            "{}",
            summary.reason
        );
        // The next interval starts afresh.
        assert_eq!(aggregator.take(mallory, &refusal(11)), Take::Record);
        assert!(aggregator.drain().is_empty());
    }

    #[test]
    fn sources_beyond_the_map_share_one_summary() {
        let aggregator = Aggregator::new(Keyed::Source, 0, Duration::from_secs(1));
        for n in 0..(MAX_SOURCES as u32 + 5) {
            let source = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
            assert_eq!(aggregator.take(&source, &refusal(0)), Take::Counted);
        }
        let summaries = aggregator.drain();
        assert_eq!(summaries.len(), MAX_SOURCES + 1);
        let overflow = summaries
            .iter()
            .find(|s| s.source.as_deref() == Some("5 others"))
            .unwrap();
        assert_eq!(overflow.suppressed, Some(5));
    }
}
