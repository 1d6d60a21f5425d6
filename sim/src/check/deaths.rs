//! Invariants 4–5, deaths: a job dies only by a verdict someone may give —
//! its handler failing its last attempt or failing for good, the reaper on
//! its last attempt, or the store burying a row no claim can read. A worker
//! that fails an attempt without running a handler (it claimed a kind it
//! cannot run), a store that buries a readable row, or a row that turns dead
//! with none of these, breaks it.
//!
//! The simulator runs this checker: its handler reports when it starts
//! ([`Observation::HandlerStarted`]) and its producer reports the poison row
//! it writes ([`Observation::PoisonWritten`]). The real-process harness
//! records neither, so it does not run it.

use std::collections::BTreeSet;

use stuckless_core::{Epoch, JobId, JobStatus};

use super::{Checker, Finding, Invariant};
use crate::model::Model;
use crate::observe::{JobRow, Observation};

/// The deaths checker: which attempts ran a handler, which rows were
/// poisoned.
#[derive(Debug, Default)]
pub struct Deaths {
    /// Attempts whose handler started.
    ran: BTreeSet<(JobId, Epoch)>,
    /// Jobs whose `run_at` was made unreadable past the storage's checks.
    poisoned: BTreeSet<JobId>,
}

impl Deaths {
    /// A row the store holds dead that the model has alive died with no
    /// operation the db answered and no burial seen.
    fn unexplained(model: &Model, jobs: &[JobRow], found: &mut Vec<Finding>) {
        for row in jobs.iter().filter(|j| j.status == JobStatus::Dead) {
            if let Some(t) = model.job(row.id).filter(|t| !t.status.is_terminal()) {
                found.push((
                    Invariant::IllegalTransition,
                    Some(row.id),
                    format!(
                        "dead in the store while {}: no fail, reap or burial of an unreadable row killed it",
                        t.status
                    ),
                ));
            }
        }
    }
}

impl Checker for Deaths {
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::HandlerStarted { job, epoch, .. } => {
                self.ran.insert((*job, *epoch));
            }
            Observation::PoisonWritten { job, .. } => {
                self.poisoned.insert(*job);
            }
            Observation::Failed {
                worker,
                job,
                epoch,
                error,
                outcome,
                ..
            } if model.accepts(*job, *epoch) && !self.ran.contains(&(*job, *epoch)) => found.push((
                Invariant::FailedWithoutHandler,
                Some(*job),
                format!(
                    "{worker} failed attempt e{epoch} without running a handler ({error}) -> {outcome:?}"
                ),
            )),
            Observation::Buried { job, error, .. } => {
                if !self.poisoned.contains(job) {
                    found.push((
                        Invariant::IllegalTransition,
                        Some(*job),
                        format!("the store buried a row nobody made unreadable ({error})"),
                    ));
                } else if let Some(t) = model.job(*job).filter(|t| t.status != JobStatus::Queued) {
                    found.push((
                        Invariant::IllegalTransition,
                        Some(*job),
                        format!("buried while {} ({error})", t.status),
                    ));
                }
            }
            Observation::Sampled { jobs, .. } | Observation::Ended { jobs, .. } => {
                Self::unexplained(model, jobs, found)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stuckless_core::driver::FailOutcome;
    use stuckless_core::Timestamp;

    use super::*;
    use crate::check::{Checkers, Limits};

    const JOB: JobId = JobId(1);

    fn at(secs: u64) -> Timestamp {
        crate::clock::BASE + Duration::from_secs(secs)
    }

    fn checkers() -> Checkers {
        let limits = Limits {
            lease: Duration::from_secs(30),
            reap_interval: Duration::from_secs(20),
            poll_interval: Duration::from_secs(60),
            slack: Duration::from_secs(3),
        };
        Checkers::new(limits).with(Box::new(Deaths::default()))
    }

    fn row(status: JobStatus, attempt: i32) -> JobRow {
        JobRow {
            id: JOB,
            status,
            epoch: Epoch(attempt as i64),
            attempt,
            max_attempts: 5,
            kind: "report".into(),
            lease_owner: None,
            lease_expires_at: None,
            run_at: at(0),
            updated_at: at(9),
            finished_at: (status == JobStatus::Dead).then(|| at(9)),
        }
    }

    fn inserted() -> Observation {
        Observation::Inserted {
            at: at(0),
            from: "producer".into(),
            job: JOB,
            new: true,
            status: JobStatus::Queued,
            epoch: Epoch(0),
            attempt: 0,
            max_attempts: 5,
            run_at: at(0),
        }
    }

    fn claimed_then_failed(handler_ran: bool) -> Vec<Observation> {
        let mut out = vec![
            inserted(),
            Observation::Claimed {
                at: at(1),
                worker: "w1".into(),
                job: JOB,
                epoch: Epoch(1),
                attempt: 1,
                max_attempts: 5,
                lease_owner: Some("w1".into()),
                lease_expires_at: Some(at(31)),
            },
        ];
        if handler_ran {
            out.push(Observation::HandlerStarted {
                at: at(1),
                worker: "w1".into(),
                job: JOB,
                epoch: Epoch(1),
            });
        }
        out.push(Observation::Failed {
            at: at(2),
            worker: "w1".into(),
            job: JOB,
            epoch: Epoch(1),
            error: "no handler for kind \"summary\"".into(),
            retryable: false,
            outcome: FailOutcome::Dead,
        });
        out
    }

    fn invariants(observations: &[Observation]) -> Vec<Invariant> {
        let mut checkers = checkers();
        for o in observations {
            checkers.observe(o);
        }
        checkers.violations().iter().map(|v| v.invariant).collect()
    }

    fn sampled(status: JobStatus) -> Observation {
        Observation::Sampled {
            at: at(10),
            jobs: vec![row(status, 0)],
            free_capacity: true,
            up: Vec::new(),
        }
    }

    #[test]
    fn a_failure_counts_only_from_an_attempt_whose_handler_ran() {
        assert_eq!(invariants(&claimed_then_failed(true)), vec![]);
        assert_eq!(
            invariants(&claimed_then_failed(false)),
            vec![Invariant::FailedWithoutHandler]
        );
    }

    #[test]
    fn only_a_poisoned_row_may_be_buried() {
        let buried = Observation::Buried {
            at: at(5),
            job: JOB,
            error: "unreadable row: run_at".into(),
        };
        let poisoned = Observation::PoisonWritten {
            at: at(4),
            by: "producer".into(),
            job: JOB,
            run_at: Timestamp::from_micros(i64::MIN),
        };
        let dead = sampled(JobStatus::Dead);
        assert_eq!(
            invariants(&[inserted(), poisoned, buried.clone(), dead.clone()]),
            vec![]
        );
        assert_eq!(
            invariants(&[inserted(), buried, dead.clone()]),
            vec![Invariant::IllegalTransition]
        );
        // Dead with no fail, reap or burial at all: the silent death the
        // burial of a poison row is told apart from.
        assert_eq!(
            invariants(&[inserted(), dead]),
            vec![Invariant::IllegalTransition]
        );
        assert_eq!(invariants(&[inserted(), sampled(JobStatus::Queued)]), vec![]);
    }
}
