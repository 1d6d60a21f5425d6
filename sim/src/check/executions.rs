//! Fencing seen from the handlers' side: every recorded execution belongs to
//! an attempt the db granted that worker, runs once, and a job succeeds only
//! after its final attempt's work finished.
//!
//! The simulator does not run this checker: its db host sees every write, so
//! [`super::Fencing`] judges them at the source. The real-process harness
//! cannot see a write that bypasses the queue, so it also checks what the
//! handlers recorded ([`Observation::AttemptStarted`],
//! [`Observation::WorkFinished`]) against the rows at the end
//! ([`Observation::Ended`]).

use std::collections::BTreeMap;

use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};

use super::{Checker, Finding, Invariant};
use crate::model::Model;
use crate::observe::{JobRow, Observation};

/// Executions per attempt: the worker and when its work finished.
type Runs = BTreeMap<(JobId, Epoch), Vec<(String, Option<Timestamp>)>>;

/// The executions checker.
#[derive(Debug, Default)]
pub struct Executions {
    /// Who the db granted each attempt to (the first claim seen).
    owners: BTreeMap<(JobId, Epoch), String>,
    /// Executions per attempt: the worker and when its work finished.
    runs: Runs,
}

impl Executions {
    fn judge(&self, jobs: &[JobRow], found: &mut Vec<Finding>) {
        let rows: BTreeMap<JobId, &JobRow> = jobs.iter().map(|j| (j.id, j)).collect();
        let mut bogus: BTreeMap<JobId, Vec<String>> = BTreeMap::new();
        for ((job, epoch), runs) in &self.runs {
            let lines = bogus.entry(*job).or_default();
            let Some(row) = rows.get(job) else {
                lines.push(format!("epoch {epoch}: no such job"));
                continue;
            };
            if epoch.0 < 1 || *epoch > row.epoch {
                lines.push(format!("epoch {epoch}: outside 1..={}", row.epoch));
            }
            if runs.len() > 1 {
                let workers: Vec<&str> = runs.iter().map(|(w, _)| w.as_str()).collect();
                lines.push(format!("epoch {epoch}: ran {} times ({workers:?})", runs.len()));
            }
            let expected = self.owners.get(&(*job, *epoch)).map(String::as_str).or_else(|| {
                (*epoch == row.epoch)
                    .then_some(row.lease_owner.as_deref())
                    .flatten()
            });
            for (worker, _) in runs {
                if expected != Some(worker.as_str()) {
                    lines.push(format!(
                        "epoch {epoch}: run by {worker} but claimed by {expected:?}"
                    ));
                }
            }
        }
        for (job, lines) in bogus.into_iter().filter(|(_, l)| !l.is_empty()) {
            found.push((Invariant::BogusExecution, Some(job), lines.join("; ")));
        }
        for row in jobs.iter().filter(|j| j.status == JobStatus::Succeeded) {
            let finished = row.finished_at.unwrap_or(Timestamp::from_micros(i64::MAX));
            let done_by_holder = self.runs.get(&(row.id, row.epoch)).is_some_and(|runs| {
                runs.iter().any(|(w, f)| {
                    Some(w.as_str()) == row.lease_owner.as_deref() && f.is_some_and(|f| f <= finished)
                })
            });
            if !done_by_holder {
                found.push((
                    Invariant::StaleWriteAccepted,
                    Some(row.id),
                    format!(
                        "succeeded at epoch {} (owner {:?}) but that attempt had not finished its work",
                        row.epoch, row.lease_owner
                    ),
                ));
            }
        }
    }
}

impl Checker for Executions {
    fn check(&mut self, _model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::Claimed {
                worker, job, epoch, ..
            } => {
                self.owners
                    .entry((*job, *epoch))
                    .or_insert_with(|| worker.clone());
            }
            Observation::AttemptStarted {
                worker, job, epoch, ..
            } => {
                self.runs
                    .entry((*job, *epoch))
                    .or_default()
                    .push((worker.clone(), None));
            }
            Observation::WorkFinished {
                at,
                worker,
                job,
                epoch,
            } => {
                if let Some(run) = self
                    .runs
                    .get_mut(&(*job, *epoch))
                    .and_then(|runs| runs.iter_mut().find(|(w, f)| w == worker && f.is_none()))
                {
                    run.1 = Some(*at);
                }
            }
            Observation::Ended { jobs, .. } => self.judge(jobs, found),
            _ => {}
        }
    }
}
