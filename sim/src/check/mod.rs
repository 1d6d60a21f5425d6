//! The checkers: one per family of the invariants in docs/architecture.md, each fed the
//! same stream of [`Observation`]s and judging it against the shared
//! [`Model`] as it stood before the observation.
//!
//! They know nothing of turmoil or Postgres: the simulator's world and the
//! real-process harness both feed them.

pub mod checkpoints;
pub mod deaths;
pub mod executions;
pub mod fencing;
pub mod lifecycle;
pub mod liveness;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::{JobId, Timestamp};

use crate::clock::BASE;
use crate::model::Model;
use crate::observe::Observation;

pub use checkpoints::Checkpoints;
pub use deaths::Deaths;
pub use executions::Executions;
pub use fencing::Fencing;
pub use lifecycle::Lifecycle;
pub use liveness::{Liveness, Owed};

/// Which rule was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1. A job was accepted as completed twice.
    CompletedTwice,
    /// 1. A write presenting a stale epoch was accepted.
    StaleWriteAccepted,
    /// 2. A job was claimed while another lease on it was live.
    TwoLiveLeases,
    /// 2. A lease the db had acknowledged as live, or one held by a healthy
    ///    worker, was taken back.
    LiveLeaseReaped,
    /// 3. An enqueued job disappeared.
    JobLost,
    /// 4. A job ran more attempts than it allows.
    AttemptsExceeded,
    /// 4. A job died with attempts left and a retryable error.
    DeadTooEarly,
    /// 4. A worker failed an attempt without running a handler: it claimed
    ///    a kind it has no handler for (checked where handlers report their
    ///    starts: the simulator).
    FailedWithoutHandler,
    /// 5. A transition the state machine forbids (terminal is forever).
    IllegalTransition,
    /// 6. A job was not terminal when the liveness phase ended.
    Stuck,
    /// 7. A job sat running with an expired lease longer than the reap interval.
    ExpiredLeaseNotReaped,
    /// 7. A due job sat queued while a worker had free capacity, longer than
    ///    the poll interval.
    DueJobStarved,
    /// 8. A graceful shutdown left a job running.
    ShutdownLeftRunning,
    /// 2. A handler ran an attempt the db never granted that worker, or ran
    ///    one twice (checked where executions are recorded: the harness).
    BogusExecution,
    /// 9. A checkpoint from a stale epoch was accepted, or an attempt was
    ///    handed a checkpoint other than the latest one accepted.
    StaleCheckpointVisible,
    /// 9. A job redid a section whose checkpoint the db had acknowledged
    ///    (checked where handlers report their sections: the simulator).
    SectionRedone,
}

impl Invariant {
    /// The snake_case name.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One broken rule, with where and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule.
    pub invariant: Invariant,
    /// The job, if one.
    pub job: Option<JobId>,
    /// Simulated time since the start.
    pub at: Duration,
    /// What exactly.
    pub detail: String,
}

/// What a checker found on one observation: the rule, the job, the detail.
pub type Finding = (Invariant, Option<JobId>, String);

/// The slack the simulator's timed checks allow: a sample every second, a
/// round trip of one or two 100 ms ticks, and a claim or reap statement's
/// own round trip.
pub const SLACK: Duration = Duration::from_secs(3);

/// The checkers' settings, from the world's configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Worker lease.
    pub lease: Duration,
    /// Worker reap interval.
    pub reap_interval: Duration,
    /// Worker poll interval.
    pub poll_interval: Duration,
    /// Slack for network round trips and ticks in timed checks.
    pub slack: Duration,
}

impl Limits {
    /// The longest a lease may stay expired once a worker is live: every
    /// live worker's reaper reads the db's clock (so worker clock skew does
    /// not enter) at least once per reap interval, from an offset within
    /// one interval of its start, and takes back every lease expired by
    /// then; the rows are sampled every second and a round trip costs a
    /// tick or two, which the slack covers. The lease, heartbeat and time
    /// limit bound how long a job may stay *running*; once its lease has
    /// run out only the reap interval is left.
    pub fn reap_bound(&self) -> Duration {
        self.reap_interval + self.slack
    }

    /// The longest a job may stay due while a live worker with a handler
    /// for its kind has a free slot: a wake-up (an insert's notification, a
    /// reap's kick, a freed slot) triggers a claim at once, and without one
    /// (a lost notification, a `run_at` reached or a backoff run out, which
    /// nothing announces) the poll claims within the poll interval of the
    /// previous claim; plus the slack of [`Limits::reap_bound`].
    pub fn pickup_bound(&self) -> Duration {
        self.poll_interval + self.slack
    }
}

/// One property family's checker.
pub trait Checker: Send {
    /// Judges one observation against the model as it stood before it,
    /// adding what it finds to `found`, then updates its own state.
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>);
}

/// `at` as a time since [`BASE`], for a violation.
fn since_base(at: Timestamp) -> Duration {
    Duration::from_micros(at.micros_since(BASE).max(0) as u64)
}

/// The model and every checker, fed in order; keeps the first violation per
/// (invariant, job).
pub struct Checkers {
    model: Model,
    fencing: Fencing,
    lifecycle: Lifecycle,
    liveness: Liveness,
    extra: Vec<Box<dyn Checker>>,
    violations: Vec<Violation>,
    seen: BTreeSet<(Invariant, Option<JobId>)>,
}

impl Checkers {
    /// The simulator's checkers: fencing, lifecycle and liveness.
    pub fn new(limits: Limits) -> Self {
        Checkers {
            model: Model::new(limits.lease),
            fencing: Fencing::default(),
            lifecycle: Lifecycle,
            liveness: Liveness::new(limits),
            extra: Vec::new(),
            violations: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Adds a checker, run after the standard ones.
    pub fn with(mut self, checker: Box<dyn Checker>) -> Self {
        self.extra.push(checker);
        self
    }

    /// The model, as of the last observation.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The liveness checker's measurements.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Every violation so far, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Judges one observation, then lets the model learn it; returns the
    /// violations it added (the first per invariant and job).
    pub fn observe(&mut self, observation: &Observation) -> &[Violation] {
        let mut found = Vec::new();
        self.fencing.check(&self.model, observation, &mut found);
        self.lifecycle.check(&self.model, observation, &mut found);
        self.liveness.check(&self.model, observation, &mut found);
        for checker in &mut self.extra {
            checker.check(&self.model, observation, &mut found);
        }
        if let Observation::Sampled { jobs, .. } = observation {
            // A sample is judged job by job in the store's order (missing
            // jobs last), whichever checker found what.
            let position =
                |id: Option<JobId>| jobs.iter().position(|j| Some(j.id) == id).unwrap_or(usize::MAX);
            found.sort_by_key(|(_, job, _)| position(*job));
        }
        self.model.apply(observation);
        let first = self.violations.len();
        let at = since_base(observation.at());
        for (invariant, job, detail) in found {
            if self.seen.insert((invariant, job)) {
                self.violations.push(Violation {
                    invariant,
                    job,
                    at,
                    detail,
                });
            }
        }
        &self.violations[first..]
    }
}
