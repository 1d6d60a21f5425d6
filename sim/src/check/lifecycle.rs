//! Invariants 3–5, lifecycle: no enqueued job is lost, no job runs more
//! attempts than it allows or dies early, and every transition is one the
//! state machine allows (terminal is forever).

use stuckless_core::driver::FailOutcome;
use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};

use super::{Checker, Finding, Invariant};
use crate::model::Model;
use crate::observe::{JobRow, Observation};

/// The lifecycle checker; all it needs is in the model.
#[derive(Debug, Default)]
pub struct Lifecycle;

/// A fenced write the db accepted must be for a known, running job (a stale
/// epoch is the fencing checker's).
fn accepted(model: &Model, op: &str, from: &str, id: JobId, epoch: Epoch, found: &mut Vec<Finding>) {
    match model.job(id) {
        None => found.push((
            Invariant::JobLost,
            Some(id),
            format!("{op} accepted for unknown job"),
        )),
        Some(t) if t.epoch == epoch && t.status != JobStatus::Running => found.push((
            Invariant::IllegalTransition,
            Some(id),
            format!("{op} from {from} accepted while the job was {}", t.status),
        )),
        Some(_) => {}
    }
}

fn attempts(job: JobId, attempt: i32, max: i32, found: &mut Vec<Finding>) {
    if attempt > max {
        found.push((
            Invariant::AttemptsExceeded,
            Some(job),
            format!("attempt {attempt} of {max}"),
        ));
    }
}

/// The store's rows against the model: terminal stays terminal, attempts
/// stay within bounds, and every known job is still there.
fn sample(model: &Model, jobs: &[JobRow], found: &mut Vec<Finding>) {
    for row in jobs {
        let Some(t) = model.job(row.id) else {
            continue;
        };
        if t.status.is_terminal() && row.status != t.status {
            found.push((
                Invariant::IllegalTransition,
                Some(row.id),
                format!("{} job became {}", t.status, row.status),
            ));
        }
        attempts(row.id, row.attempt, row.max_attempts, found);
    }
    let present: std::collections::BTreeSet<JobId> = jobs.iter().map(|j| j.id).collect();
    for (id, _) in model.jobs().filter(|(id, _)| !present.contains(id)) {
        found.push((Invariant::JobLost, Some(id), "missing from the store".into()));
    }
}

fn claimed(
    model: &Model,
    at: Timestamp,
    job: JobId,
    epoch: Epoch,
    attempt: i32,
    max: i32,
    found: &mut Vec<Finding>,
) {
    let Some(t) = model.job(job) else {
        found.push((
            Invariant::JobLost,
            Some(job),
            "claimed a job nobody enqueued".into(),
        ));
        return;
    };
    let live = t.status == JobStatus::Running && t.expires.is_some_and(|e| e > at);
    if t.status != JobStatus::Queued && !live {
        found.push((
            Invariant::IllegalTransition,
            Some(job),
            format!("claimed while {}", t.status),
        ));
    }
    if epoch.0 != t.epoch.0 + 1 {
        found.push((
            Invariant::IllegalTransition,
            Some(job),
            format!("claim moved the epoch from {} to {}", t.epoch, epoch),
        ));
    }
    attempts(job, attempt, max, found);
}

fn reaped(model: &Model, job: JobId, dead: bool, found: &mut Vec<Finding>) {
    let Some(t) = model.job(job) else {
        found.push((
            Invariant::JobLost,
            Some(job),
            "reaped a job nobody enqueued".into(),
        ));
        return;
    };
    if t.status != JobStatus::Running {
        found.push((
            Invariant::IllegalTransition,
            Some(job),
            format!("reaped while {}", t.status),
        ));
    }
    if dead && t.attempt < t.max_attempts {
        found.push((
            Invariant::DeadTooEarly,
            Some(job),
            format!("reaped to dead at attempt {} of {}", t.attempt, t.max_attempts),
        ));
    }
}

impl Checker for Lifecycle {
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::Completed {
                worker,
                job,
                epoch,
                outcome: stuckless_core::driver::CompleteOutcome::Completed,
                ..
            } => accepted(model, "complete", worker, *job, *epoch, found),
            Observation::HeartbeatAccepted {
                worker, job, epoch, ..
            } => accepted(model, "heartbeat", worker, *job, *epoch, found),
            Observation::Released {
                worker, job, epoch, ..
            } => accepted(model, "release", worker, *job, *epoch, found),
            Observation::Failed {
                worker,
                job,
                epoch,
                retryable,
                outcome,
                ..
            } => {
                accepted(model, "fail", worker, *job, *epoch, found);
                if let (true, FailOutcome::Dead, Some(t)) =
                    (model.accepts(*job, *epoch), outcome, model.job(*job))
                {
                    if *retryable && t.attempt < t.max_attempts {
                        found.push((
                            Invariant::DeadTooEarly,
                            Some(*job),
                            format!(
                                "dead after attempt {} of {} on a retryable error",
                                t.attempt, t.max_attempts
                            ),
                        ));
                    }
                }
            }
            Observation::Claimed {
                at,
                job,
                epoch,
                attempt,
                max_attempts,
                ..
            } => claimed(model, *at, *job, *epoch, *attempt, *max_attempts, found),
            Observation::Reaped { job, dead, .. } => reaped(model, *job, *dead, found),
            Observation::Cancelled { job, .. } => match model.job(*job).map(|t| t.status) {
                Some(JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled) => {}
                Some(status) => found.push((
                    Invariant::IllegalTransition,
                    Some(*job),
                    format!("cancel accepted while the job was {status}"),
                )),
                None => found.push((Invariant::JobLost, Some(*job), "cancel of an unknown job".into())),
            },
            Observation::Sampled { jobs, .. } => sample(model, jobs, found),
            _ => {}
        }
    }
}
