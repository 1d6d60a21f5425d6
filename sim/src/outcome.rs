//! What one run found: the verdict, the measurements, and the failure report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use stuckless_core::driver::{JobEvents, Storage};
use stuckless_core::{Job, JobId, MemStore};

use crate::api::SharedApi;
use crate::check::{Invariant, Owed, Violation};
use crate::clock::BASE;
use crate::config::{replay_command, worker_name, Config};
use crate::oracle::Oracle;
use crate::plan::{FaultPlan, Swarm, FAULT_KINDS};
use crate::variants::Variant;
use stuckless_timeline::Timeline;

/// The verdict and measurements of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    /// The scenario's name.
    pub scenario: String,
    /// Whether the plan was fixed rather than drawn from the seed.
    pub fixed_plan: bool,
    /// The seed.
    pub seed: u64,
    /// The variant run.
    pub variant: Variant,
    /// The swarm probabilities, when the plan came from the seed.
    pub swarm: Option<Swarm>,
    /// The fault plan run.
    pub plan: FaultPlan,
    /// Simulated time.
    pub simulated: Duration,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Jobs enqueued.
    pub jobs: u64,
    /// Final status counts.
    pub by_status: BTreeMap<String, u64>,
    /// Every job classified: ok, lost, completed_twice, stale_write, stuck, violated.
    pub classes: BTreeMap<String, u64>,
    /// Invariant violations, in the order found.
    pub violations: Vec<Violation>,
    /// Per job, the longest time it sat running with an expired lease.
    pub expired_running: Vec<Duration>,
    /// Per job, the longest time it sat due while a worker had capacity.
    pub starved: Vec<Duration>,
    /// The worst waits live workers owed (an expired lease unreaped, a due
    /// job unclaimed), with the bounds the checkers hold them to.
    pub owed: Owed,
    /// Pickup latency of every claim.
    pub pickups: Vec<Duration>,
    /// Jobs whose API effect happened more than once.
    pub duplicate_jobs: u64,
    /// Extra API effects in total (at-least-once duplicates).
    pub duplicate_effects: u64,
    /// Calls the API received.
    pub api_calls: u64,
    /// Storage operations the db answered.
    pub ops: u64,
    /// FNV-1a hash of the full trace.
    pub trace_hash: u64,
    /// The full trace, when asked for.
    #[serde(skip)]
    pub trace: Option<String>,
    /// History of each job with a violation: the oracle's view, then the
    /// store's own event log.
    pub histories: BTreeMap<JobId, Vec<String>>,
    /// A simulation error (a host failed), if any.
    pub error: Option<String>,
    /// The run as a picture, when asked for ([`crate::SimBuilder::keep_timeline`]).
    #[serde(skip)]
    pub timeline: Option<Timeline>,
    /// Claims the db answered, when the timeline was kept (else 0): one bar each.
    #[serde(skip)]
    pub claims: usize,
}

/// FNV-1a, so trace hashes are stable across platforms and releases.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl RunOutcome {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        config: &Config,
        swarm: Option<Swarm>,
        plan: FaultPlan,
        simulated: Duration,
        injected: BTreeMap<&'static str, u64>,
        jobs: &[Job],
        store: &Arc<MemStore>,
        oracle: &Oracle,
        api: &SharedApi,
        error: Option<String>,
    ) -> RunOutcome {
        let recorder = &oracle.recorder;
        let api = api.lock().expect("api lock");
        let violations = oracle.violations().to_vec();
        let mut by_status = BTreeMap::new();
        for job in jobs {
            *by_status.entry(job.status.to_string()).or_insert(0) += 1;
        }
        let mut worst: BTreeMap<JobId, Invariant> = BTreeMap::new();
        for v in &violations {
            if let Some(id) = v.job {
                worst.entry(id).or_insert(v.invariant);
            }
        }
        let mut classes = BTreeMap::new();
        for id in oracle.job_ids() {
            let class = match worst.get(&id) {
                None => "ok",
                Some(Invariant::JobLost) => "lost",
                Some(Invariant::CompletedTwice) => "completed_twice",
                Some(Invariant::StaleWriteAccepted) => "stale_write",
                Some(Invariant::Stuck | Invariant::ExpiredLeaseNotReaped | Invariant::DueJobStarved) => {
                    "stuck"
                }
                Some(_) => "violated",
            };
            *classes.entry(class.to_owned()).or_insert(0) += 1;
        }
        let mut histories = BTreeMap::new();
        if !worst.is_empty() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            for id in worst.keys().take(5) {
                let mut lines = recorder.history(*id);
                if let Ok(events) = rt.block_on(store.job_events(JobEvents { id: *id })) {
                    for e in events {
                        lines.push(format!(
                            "  store event: {} {} e{} attempt {} worker {:?} {}",
                            e.at,
                            e.kind,
                            e.epoch,
                            e.attempt,
                            e.worker_id,
                            e.detail.unwrap_or_default()
                        ));
                    }
                }
                histories.insert(*id, lines);
            }
        }
        let stuck = oracle.checkers.liveness().stuck_times();
        let (duplicate_jobs, duplicate_effects) = api.duplicates();
        let mut faults: BTreeMap<String, u64> = FAULT_KINDS.iter().map(|k| ((*k).to_owned(), 0)).collect();
        for (k, n) in injected {
            faults.insert(k.to_owned(), n);
        }
        let timeline = config.keep_timeline.then(|| {
            let title = format!(
                "seed {} · {} · {} · {} · {} jobs{}",
                config.seed,
                config.scenario,
                config.variant.name(),
                if violations.is_empty() && error.is_none() {
                    "passed".to_owned()
                } else {
                    format!("FAILED ({} violations)", violations.len())
                },
                oracle.job_ids().len(),
                if config.plan.is_some() {
                    " · fixed plan"
                } else {
                    ""
                }
            );
            let workers: Vec<String> = (0..config.workers).map(worker_name).collect();
            crate::timeline::build(title, &workers, BASE, BASE + simulated, recorder.facts())
        });
        RunOutcome {
            scenario: config.scenario.to_owned(),
            fixed_plan: config.plan.is_some(),
            seed: config.seed,
            variant: config.variant,
            swarm,
            plan,
            simulated,
            faults,
            jobs: oracle.job_ids().len() as u64,
            by_status,
            classes,
            violations,
            expired_running: stuck.iter().map(|s| s.1).collect(),
            starved: stuck.iter().map(|s| s.2).collect(),
            owed: oracle.checkers.liveness().owed(),
            pickups: recorder.pickups().to_vec(),
            duplicate_jobs,
            duplicate_effects,
            api_calls: api.calls,
            ops: recorder.ops(),
            trace_hash: fnv1a(recorder.trace().as_bytes()),
            trace: config.keep_trace.then(|| recorder.trace().to_owned()),
            timeline,
            claims: recorder.claims(),
            histories,
            error,
        }
    }

    /// Whether no invariant was violated and the simulation ran to its end.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        replay_command(self.seed, &self.scenario, self.variant, self.fixed_plan)
    }

    /// Everything needed to understand a failure: seed, plan, invariants,
    /// the jobs' histories and the replay command.
    pub fn failure_report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "FAILED seed {} (variant {})", self.seed, self.variant.name());
        if let Some(e) = &self.error {
            let _ = writeln!(out, "simulation error: {e}");
        }
        let _ = writeln!(
            out,
            "plan: {}",
            serde_json::to_string(&self.plan).unwrap_or_default()
        );
        for v in self.violations.iter().take(10) {
            let _ = writeln!(
                out,
                "invariant {} at {:.3}s job {:?}: {}",
                v.invariant.name(),
                v.at.as_secs_f64(),
                v.job.map(|j| j.0),
                v.detail
            );
        }
        if self.violations.len() > 10 {
            let _ = writeln!(out, "... and {} more violations", self.violations.len() - 10);
        }
        for (id, lines) in &self.histories {
            let _ = writeln!(out, "history of job {id}:");
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
        let _ = writeln!(out, "replay: {}", self.replay());
        out
    }
}
