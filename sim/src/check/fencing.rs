//! Invariants 1–2, fencing: a job is completed at most once, no write from a
//! stale epoch is accepted, no two leases on a job are live at once, and no
//! live lease is taken back.

use std::collections::BTreeMap;

use stuckless_core::driver::CompleteOutcome;
use stuckless_core::{Epoch, JobId, JobStatus};

use super::{Checker, Finding, Invariant};
use crate::model::Model;
use crate::observe::Observation;
use crate::recorder::secs;

/// The fencing checker; it remembers each job's accepted completions.
#[derive(Debug, Default)]
pub struct Fencing {
    /// Per job: completions accepted, and the epoch of the last one.
    completions: BTreeMap<JobId, (u32, Epoch)>,
}

/// A fenced write accepted from a stale epoch.
fn stale(model: &Model, op: &str, from: &str, id: JobId, epoch: Epoch, found: &mut Vec<Finding>) {
    if let Some(t) = model.job(id) {
        if t.epoch != epoch {
            found.push((
                Invariant::StaleWriteAccepted,
                Some(id),
                format!(
                    "{op} from {from} at epoch {epoch} accepted; the current epoch is {}",
                    t.epoch
                ),
            ));
        }
    }
}

impl Checker for Fencing {
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::Completed {
                worker,
                job,
                epoch,
                outcome: CompleteOutcome::Completed,
                ..
            } => {
                if self.completions.get(job).is_some_and(|(n, _)| *n > 0) {
                    found.push((
                        Invariant::CompletedTwice,
                        Some(*job),
                        format!("second completion, by {worker} at epoch {epoch}"),
                    ));
                }
                stale(model, "complete", worker, *job, *epoch, found);
                if model.knows(*job) {
                    let entry = self.completions.entry(*job).or_insert((0, *epoch));
                    *entry = (entry.0 + 1, *epoch);
                }
            }
            Observation::Completed {
                worker,
                job,
                epoch,
                outcome: CompleteOutcome::AlreadyCompleted,
                ..
            } => {
                let ok = model.job(*job).is_some_and(|t| t.status == JobStatus::Succeeded)
                    && self.completions.get(job).map(|(_, e)| *e) == Some(*epoch);
                if !ok {
                    found.push((
                        Invariant::StaleWriteAccepted,
                        Some(*job),
                        format!(
                            "{worker} told 'already completed' at epoch {epoch}, which did not complete it"
                        ),
                    ));
                }
            }
            Observation::HeartbeatAccepted {
                worker, job, epoch, ..
            } => stale(model, "heartbeat", worker, *job, *epoch, found),
            Observation::Failed {
                worker, job, epoch, ..
            } => stale(model, "fail", worker, *job, *epoch, found),
            Observation::Released {
                worker, job, epoch, ..
            } => stale(model, "release", worker, *job, *epoch, found),
            Observation::Claimed {
                at,
                worker,
                job,
                epoch,
                ..
            } => {
                if let Some(t) = model.job(*job) {
                    if t.status == JobStatus::Running && t.expires.is_some_and(|e| e > *at) {
                        found.push((
                            Invariant::TwoLiveLeases,
                            Some(*job),
                            format!(
                                "{worker} claimed it at epoch {epoch} while {} held a lease until {}",
                                t.holder.as_deref().unwrap_or("?"),
                                secs(t.expires.unwrap_or(*at))
                            ),
                        ));
                    }
                }
            }
            Observation::Reaped { at, by, job, .. } => {
                let Some(t) = model.job(*job) else {
                    return;
                };
                if t.status != JobStatus::Running {
                    return;
                }
                let holder = t.holder.clone().unwrap_or_default();
                if t.expires.is_some_and(|e| e > *at) {
                    found.push((
                        Invariant::LiveLeaseReaped,
                        Some(*job),
                        format!(
                            "reaped by {by}; the db had acknowledged {holder}'s lease until {}",
                            secs(t.expires.unwrap_or(*at))
                        ),
                    ));
                } else if model.healthy(&holder, t.claimed_at, *at) {
                    found.push((
                        Invariant::LiveLeaseReaped,
                        Some(*job),
                        format!(
                            "reaped by {by} although its holder {holder} met no fault since it claimed the job at {}",
                            secs(t.claimed_at)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}
