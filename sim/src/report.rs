//! The summary of many runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Owed;
use crate::outcome::RunOutcome;

/// Percentile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Totals over many runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with at least one violation or error.
    pub failed_seeds: Vec<u64>,
    /// Simulated time, total.
    pub simulated: Duration,
    /// Faults injected by kind.
    pub faults: BTreeMap<String, u64>,
    /// Jobs enqueued.
    pub jobs: u64,
    /// Job classes.
    pub classes: BTreeMap<String, u64>,
    /// Violations by invariant.
    pub violations: BTreeMap<String, u64>,
    /// Per-job longest expired-running times.
    pub expired_running: Vec<Duration>,
    /// Per-job longest due-with-capacity times.
    pub starved: Vec<Duration>,
    /// Pickup latencies.
    pub pickups: Vec<Duration>,
    /// The worst owed waits of any run, with the bounds of the first run
    /// that had any (a batch's runs share one configuration).
    #[serde(default)]
    pub owed: Owed,
    /// Jobs with duplicate API effects.
    pub duplicate_jobs: u64,
    /// Extra API effects.
    pub duplicate_effects: u64,
    /// Storage operations.
    pub ops: u64,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, run: &RunOutcome) {
        self.seeds += 1;
        if !run.passed() {
            self.failed_seeds.push(run.seed);
        }
        self.simulated += run.simulated;
        for (k, n) in &run.faults {
            *self.faults.entry(k.clone()).or_insert(0) += n;
        }
        self.jobs += run.jobs;
        for (k, n) in &run.classes {
            *self.classes.entry(k.clone()).or_insert(0) += n;
        }
        for v in &run.violations {
            *self.violations.entry(v.invariant.name()).or_insert(0) += 1;
        }
        self.expired_running.extend(&run.expired_running);
        self.starved.extend(&run.starved);
        self.pickups.extend(&run.pickups);
        self.add_owed(&run.owed);
        self.duplicate_jobs += run.duplicate_jobs;
        self.duplicate_effects += run.duplicate_effects;
        self.ops += run.ops;
    }

    /// Adds another batch's summary (another shard's, say): the result is
    /// the summary of both batches' seeds, whatever the order of merging.
    pub fn merge(&mut self, other: &Summary) {
        self.seeds += other.seeds;
        self.failed_seeds.extend(&other.failed_seeds);
        self.failed_seeds.sort_unstable();
        self.simulated += other.simulated;
        for (k, n) in &other.faults {
            *self.faults.entry(k.clone()).or_insert(0) += n;
        }
        self.jobs += other.jobs;
        for (k, n) in &other.classes {
            *self.classes.entry(k.clone()).or_insert(0) += n;
        }
        for (k, n) in &other.violations {
            *self.violations.entry(k.clone()).or_insert(0) += n;
        }
        self.expired_running.extend(&other.expired_running);
        self.starved.extend(&other.starved);
        self.pickups.extend(&other.pickups);
        self.add_owed(&other.owed);
        self.duplicate_jobs += other.duplicate_jobs;
        self.duplicate_effects += other.duplicate_effects;
        self.ops += other.ops;
    }

    fn add_owed(&mut self, owed: &Owed) {
        if self.owed.expired_bound.is_zero() {
            self.owed.expired_bound = owed.expired_bound;
            self.owed.due_bound = owed.due_bound;
        }
        self.owed.expired = self.owed.expired.max(owed.expired);
        self.owed.due = self.owed.due.max(owed.due);
    }

    /// The summary as text; `wall` adds the speed figures (not deterministic,
    /// so snapshots leave it out).
    pub fn render(&self, wall: Option<Duration>) -> String {
        let mut out = String::new();
        let sorted = |v: &[Duration]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let expired = sorted(&self.expired_running);
        let starved = sorted(&self.starved);
        let pickups = sorted(&self.pickups);
        let fmt = |d: Duration| format!("{:.1}s", d.as_secs_f64());
        let pct = |v: &[Duration]| {
            format!(
                "p50 {} p90 {} p99 {} max {}",
                fmt(percentile(v, 50.0)),
                fmt(percentile(v, 90.0)),
                fmt(percentile(v, 99.0)),
                fmt(v.last().copied().unwrap_or_default())
            )
        };
        let _ = writeln!(out, "seeds            {}", self.seeds);
        let _ = writeln!(out, "failed seeds     {:?}", self.failed_seeds);
        let _ = writeln!(out, "simulated time   {:.0}s", self.simulated.as_secs_f64());
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "faults           {}", faults.join(", "));
        let _ = writeln!(out, "jobs             {}", self.jobs);
        let classes: Vec<String> = self.classes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "job classes      {}", classes.join(", "));
        let violations: Vec<String> = self.violations.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "violations       {}",
            if violations.is_empty() {
                "none".to_owned()
            } else {
                violations.join(", ")
            }
        );
        let _ = writeln!(out, "expired running  {}", pct(&expired));
        let _ = writeln!(out, "due, idle worker {}", pct(&starved));
        let _ = writeln!(out, "pickup latency   {}", pct(&pickups));
        let _ = writeln!(
            out,
            "owed by a live worker: expired lease max {} (bound {}), due job max {} (bound {})",
            fmt(self.owed.expired),
            fmt(self.owed.expired_bound),
            fmt(self.owed.due),
            fmt(self.owed.due_bound)
        );
        let _ = writeln!(
            out,
            "duplicate effects {} extra on {} jobs (at-least-once)",
            self.duplicate_effects, self.duplicate_jobs
        );
        let _ = writeln!(out, "storage ops      {}", self.ops);
        if let Some(wall) = wall {
            let w = wall.as_secs_f64().max(1e-9);
            let _ = writeln!(
                out,
                "speed            {:.2} seeds/s ({:.0} seeds/hour), {:.0}x simulated/wall ({:.2}s wall)",
                self.seeds as f64 / w,
                self.seeds as f64 / w * 3600.0,
                self.simulated.as_secs_f64() / w,
                w
            );
        }
        out
    }
}
