//! The file sink's disk budget: how full the trail's allowance and its file system are, as a
//! metric, warnings at 80% and 90% before the fail-closed point, and the fail-closed point
//! itself when a budget is configured (a write that would pass it is refused, as a full disk
//! would refuse it, but before the disk is full for everything else on it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The levels a warning is logged at, as fractions of the budget.
pub const WARN_AT: [f64; 2] = [0.8, 0.9];
/// How often the file system is asked how full it is, and, while writes are refused, how
/// often the trail's files are counted again (an operator may have archived some).
const STATFS_EVERY: Duration = Duration::from_secs(1);

/// How full the trail is, kept by the writer.
pub(super) struct Budget {
    /// The trail's allowance in bytes (active and rotated files), if configured.
    limit: Option<u64>,
    /// Bytes of the trail: the active file and its rotated files.
    used: u64,
    /// The active file; its rotated files sit beside it.
    active: PathBuf,
    dir: PathBuf,
    /// When the trail's files were last counted on disk.
    counted: Instant,
    /// The file system's fill, last asked at `asked`.
    disk: f64,
    asked: Option<Instant>,
    /// The highest warning level logged and not yet fallen back below, for the trail's budget
    /// and for the file system.
    warned: [usize; 2],
}

impl Budget {
    /// The budget of the trail whose active file is `active`, `used` bytes so far.
    pub(super) fn new(active: &Path, limit: Option<u64>, used: u64) -> Budget {
        let dir = match active.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut budget = Budget {
            limit,
            used,
            active: active.to_path_buf(),
            dir,
            counted: Instant::now(),
            disk: 0.0,
            asked: None,
            warned: [0, 0],
        };
        budget.observe();
        budget
    }

    /// Refuses `bytes` more when they would pass the configured budget. Before refusing, it
    /// counts the trail's files again (at most once a second), so that rotated files archived
    /// and removed by an operator make room without a restart.
    pub(super) fn admit(&mut self, bytes: u64) -> Result<(), String> {
        let over = |used: u64| self.limit.is_some_and(|limit| used + bytes > limit);
        if over(self.used) && self.counted.elapsed() >= STATFS_EVERY {
            self.counted = Instant::now();
            self.used = super::trail_bytes(&self.active);
            self.observe();
        }
        match self.limit {
            Some(limit) if self.used + bytes > limit => Err(format!(
                "the audit budget of {limit} bytes is spent ({} used): archive and remove rotated files, or raise audit.budget_bytes",
                self.used
            )),
            _ => Ok(()),
        }
    }

    /// Notes `bytes` written.
    pub(super) fn wrote(&mut self, bytes: u64) {
        self.used += bytes;
        self.observe();
    }

    /// The trail's share of its budget (0 without one).
    fn trail(&self) -> f64 {
        self.limit
            .map_or(0.0, |l| self.used as f64 / l.max(1) as f64)
    }

    /// The fill: the larger of the trail's share of its budget and the file system's fill.
    #[cfg(test)]
    fn ratio(&self) -> f64 {
        self.trail().max(self.disk)
    }

    /// Updates the metrics, and warns when the fill crosses a level.
    fn observe(&mut self) {
        if self.asked.is_none_or(|at| at.elapsed() >= STATFS_EVERY) {
            self.asked = Some(Instant::now());
            if let Some(disk) = disk_fill(&self.dir) {
                self.disk = disk;
            }
        }
        metrics::gauge!("fedgate_audit_trail_bytes").set(self.used as f64);
        metrics::gauge!("fedgate_audit_disk_fill_ratio", "of" => "budget").set(self.trail());
        metrics::gauge!("fedgate_audit_disk_fill_ratio", "of" => "filesystem").set(self.disk);
        for (index, (what, ratio)) in [("its budget", self.trail()), ("its file system", self.disk)]
            .into_iter()
            .enumerate()
        {
            let level = WARN_AT.iter().filter(|l| ratio >= **l).count();
            if level > self.warned[index] {
                tracing::warn!(
                    dir = %self.dir.display(),
                    trail_bytes = self.used,
                    budget_bytes = self.limit,
                    "the audit trail is over {:.0}% full of {what} ({:.1}%): when it is full, every request is refused (fail closed); archive rotated files (see the runbook in the README)",
                    WARN_AT[level - 1] * 100.0,
                    ratio * 100.0
                );
            }
            self.warned[index] = level;
        }
    }
}

/// The fraction of the file system holding `dir` that is in use, as `df` counts it (blocks
/// reserved for root count as used).
fn disk_fill(dir: &Path) -> Option<f64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    let total = stat.f_blocks as f64;
    (total > 0.0).then(|| 1.0 - stat.f_bavail as f64 / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_what_would_pass_it_and_reports_its_fill() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(&dir.path().join("audit.log"), Some(1000), 700);
        assert!(budget.admit(300).is_ok());
        let refused = budget.admit(301).unwrap_err();
        assert!(refused.contains("budget of 1000 bytes"), "{refused}");
        budget.wrote(200);
        assert!(budget.ratio() >= 0.9);

        // Spent on paper, but the files on disk hold less (rotated files were archived): once
        // counted again, the write is admitted.
        std::fs::write(dir.path().join("audit.log"), vec![b'x'; 100]).unwrap();
        budget.counted = Instant::now() - STATFS_EVERY;
        assert!(budget.admit(800).is_ok());
        assert_eq!(budget.used, 100);
        assert!(disk_fill(dir.path()).is_some_and(|f| (0.0..=1.0).contains(&f)));
    }
}
