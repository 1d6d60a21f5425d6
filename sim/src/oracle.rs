//! The oracle: drains the observations a run's substrates emitted, in order,
//! into the [`Recorder`] and the [`Checkers`]. It adds nothing of its own.

use stuckless_core::JobId;

use crate::check::{Checkers, Checkpoints, Deaths, Limits, Violation};
use crate::observe::Observation;
use crate::recorder::Recorder;

/// The recorder and the checkers of one run.
pub struct Oracle {
    /// Judges.
    pub checkers: Checkers,
    /// Writes down.
    pub recorder: Recorder,
}

impl Oracle {
    /// The simulator's oracle: the standard checkers with these limits, and
    /// the deaths and checkpoint checkers, which need what only the
    /// simulator observes (handler starts, sections).
    pub fn new(limits: Limits) -> Self {
        Oracle {
            checkers: Checkers::new(limits)
                .with(Box::new(Deaths::default()))
                .with(Box::new(Checkpoints::default())),
            recorder: Recorder::new(),
        }
    }

    /// Records, then judges, each observation in order.
    pub fn observe_all(&mut self, observations: impl IntoIterator<Item = Observation>) {
        for observation in observations {
            self.observe(&observation);
        }
    }

    /// Records, then judges, one observation; violations go into the trace.
    pub fn observe(&mut self, observation: &Observation) {
        self.recorder.record(self.checkers.model(), observation);
        let found = self.checkers.observe(observation).to_vec();
        for v in &found {
            self.recorder
                .violation(self.checkers.model(), observation.at(), v);
        }
    }

    /// Every violation so far, in the order found.
    pub fn violations(&self) -> &[Violation] {
        self.checkers.violations()
    }

    /// Jobs the model knows.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.checkers.model().job_ids()
    }
}
