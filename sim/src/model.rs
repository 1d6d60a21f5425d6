//! The model the checkers judge against: each job as the db last acknowledged
//! it, and when faults hit whom. It learns from observations only, after
//! every checker has seen them, so a checker always sees the state before.

use std::collections::BTreeMap;
use std::time::Duration;

use stuckless_core::driver::{CompleteOutcome, FailOutcome};
use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};

use crate::observe::Observation;

/// One job as the db acknowledged it.
#[derive(Clone, Debug)]
pub struct JobModel {
    /// Its status.
    pub status: JobStatus,
    /// The current epoch.
    pub epoch: Epoch,
    /// The attempt number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The latest claim's lease owner.
    pub holder: Option<String>,
    /// The lease the db acknowledged, while running.
    pub expires: Option<Timestamp>,
    /// When it was last claimed (or enqueued).
    pub claimed_at: Timestamp,
    /// When it became terminal.
    pub finished_at: Option<Timestamp>,
}

/// Every known job, and the fault windows.
#[derive(Clone, Debug)]
pub struct Model {
    lease: Duration,
    jobs: BTreeMap<JobId, JobModel>,
    /// Fault windows per worker id ("*" hits everyone: a db restart).
    faults: BTreeMap<String, Vec<(Timestamp, Timestamp)>>,
}

impl Model {
    /// An empty model for workers holding leases of `lease`.
    pub fn new(lease: Duration) -> Self {
        Model {
            lease,
            jobs: BTreeMap::new(),
            faults: BTreeMap::new(),
        }
    }

    /// One job, if known.
    pub fn job(&self, id: JobId) -> Option<&JobModel> {
        self.jobs.get(&id)
    }

    /// Whether the job was ever enqueued.
    pub fn knows(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    /// Every known job, by id.
    pub fn jobs(&self) -> impl Iterator<Item = (JobId, &JobModel)> {
        self.jobs.iter().map(|(id, j)| (*id, j))
    }

    /// Jobs known.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    /// Whether a fenced write at `epoch` is one the db should accept: the
    /// job is known, running, and at that epoch.
    pub fn accepts(&self, id: JobId, epoch: Epoch) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|t| t.epoch == epoch && t.status == JobStatus::Running)
    }

    /// Whether `worker` was under no fault (its own or everyone's) from
    /// `from` to `to`, allowing a lease after each fault for its effects.
    pub fn healthy(&self, worker: &str, from: Timestamp, to: Timestamp) -> bool {
        let lease = self.lease;
        [worker, "*"].iter().all(|who| {
            self.faults
                .get(*who)
                .is_none_or(|ws| ws.iter().all(|(s, e)| *e + lease < from || *s > to))
        })
    }

    fn set_status(&mut self, id: JobId, status: JobStatus, now: Timestamp) {
        if let Some(t) = self.jobs.get_mut(&id) {
            t.status = status;
            if status != JobStatus::Running {
                t.expires = None;
            }
            if status.is_terminal() {
                t.finished_at = Some(now);
            }
        }
    }

    /// Learns one observation.
    pub fn apply(&mut self, observation: &Observation) {
        match observation {
            Observation::Inserted {
                at,
                job,
                new: true,
                status,
                epoch,
                attempt,
                max_attempts,
                ..
            } => {
                self.jobs.insert(
                    *job,
                    JobModel {
                        status: *status,
                        epoch: *epoch,
                        attempt: *attempt,
                        max_attempts: *max_attempts,
                        holder: None,
                        expires: None,
                        claimed_at: *at,
                        finished_at: None,
                    },
                );
            }
            Observation::Claimed {
                at,
                job,
                epoch,
                attempt,
                lease_owner,
                lease_expires_at,
                ..
            } => {
                if let Some(t) = self.jobs.get_mut(job) {
                    t.status = JobStatus::Running;
                    t.epoch = *epoch;
                    t.attempt = *attempt;
                    t.holder = lease_owner.clone();
                    t.expires = *lease_expires_at;
                    t.claimed_at = *at;
                }
            }
            Observation::HeartbeatAccepted {
                job,
                epoch,
                lease_expires_at,
                ..
            } if self.accepts(*job, *epoch) => {
                if let Some(t) = self.jobs.get_mut(job) {
                    t.expires = Some(*lease_expires_at);
                }
            }
            Observation::Completed {
                at,
                job,
                outcome: CompleteOutcome::Completed,
                ..
            } => self.set_status(*job, JobStatus::Succeeded, *at),
            Observation::Failed {
                at,
                job,
                epoch,
                outcome,
                ..
            } if self.accepts(*job, *epoch) => {
                let status = match outcome {
                    FailOutcome::Retried { .. } => JobStatus::Queued,
                    FailOutcome::Dead => JobStatus::Dead,
                };
                self.set_status(*job, status, *at);
            }
            Observation::Released { at, job, epoch, .. } if self.accepts(*job, *epoch) => {
                if let Some(t) = self.jobs.get_mut(job) {
                    t.attempt -= 1;
                }
                self.set_status(*job, JobStatus::Queued, *at);
            }
            Observation::Reaped { at, job, dead, .. } => {
                let status = if *dead { JobStatus::Dead } else { JobStatus::Queued };
                self.set_status(*job, status, *at);
            }
            Observation::Cancelled { at, job, .. } => {
                if matches!(
                    self.jobs.get(job).map(|t| t.status),
                    Some(JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled)
                ) {
                    self.set_status(*job, JobStatus::Cancelled, *at);
                }
            }
            Observation::Buried { at, job, .. } => self.set_status(*job, JobStatus::Dead, *at),
            Observation::FaultWindow { who, from, until } => {
                self.faults.entry(who.clone()).or_default().push((*from, *until));
            }
            _ => {}
        }
    }
}
