//! Observations: neutral, serialisable facts about a run — what the db
//! acknowledged, what workers reported, what the driver did — and the one
//! place that turns the wire protocol into them.
//!
//! Substrates emit observations without knowing who listens: the db host and
//! the workers push them into a [`Sink`], the world drains it in order into
//! the recorder and the checkers. The real-process harness builds the same
//! observations from Postgres rows. When the wire protocol changes, only
//! [`observations`] (and [`from_worker_event`]) change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::driver::{
    CompleteOutcome, FailOutcome, JobCancel, JobComplete, JobCompleteMany, JobFail, JobHeartbeat, JobRelease,
    JobRequeue, Op, Reply,
};
use stuckless_core::{Epoch, Job, JobId, JobStatus, StorageError, Timestamp, WorkerEvent};

use crate::plan::Fault;

/// One job's row as the store holds it, for samples and end-of-run checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// The job.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The latest claim's epoch.
    pub epoch: Epoch,
    /// The attempt number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The latest lease owner.
    pub lease_owner: Option<String>,
    /// When the lease runs out, while running.
    pub lease_expires_at: Option<Timestamp>,
    /// When it is (or was) due.
    pub run_at: Timestamp,
    /// Its last change.
    pub updated_at: Timestamp,
    /// When it became terminal.
    pub finished_at: Option<Timestamp>,
}

impl From<&Job> for JobRow {
    fn from(job: &Job) -> Self {
        JobRow {
            id: job.id,
            status: job.status,
            epoch: job.epoch,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            lease_owner: job.lease_owner.clone(),
            lease_expires_at: job.lease_expires_at,
            run_at: job.run_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

/// Why the db refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The epoch presented is not the job's current one.
    StaleEpoch,
    /// The job is not in a status that allows the write.
    WrongStatus,
    /// No such job.
    NotFound,
    /// The db was not reachable or timed out: nothing was judged.
    Unavailable,
    /// Anything else.
    Other,
}

/// One fact about a run, stamped with when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Observation {
    /// The db answered one call (whatever it was).
    Answered {
        /// When.
        at: Timestamp,
        /// The caller.
        from: String,
        /// The call's short name.
        op: String,
    },
    /// An enqueue: a new job, or an existing one found by its key.
    Inserted {
        /// When.
        at: Timestamp,
        /// The caller.
        from: String,
        /// The job.
        job: JobId,
        /// Whether a row was created (false: duplicate key).
        new: bool,
        /// Its status.
        status: JobStatus,
        /// Its epoch.
        epoch: Epoch,
        /// Its attempt number.
        attempt: i32,
        /// Attempts allowed.
        max_attempts: i32,
        /// When it is due.
        run_at: Timestamp,
    },
    /// The db handed a job to a worker.
    Claimed {
        /// When.
        at: Timestamp,
        /// The claiming worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The new epoch.
        epoch: Epoch,
        /// The new attempt number.
        attempt: i32,
        /// Attempts allowed.
        max_attempts: i32,
        /// The lease owner the db recorded.
        lease_owner: Option<String>,
        /// The lease the db granted, when known.
        lease_expires_at: Option<Timestamp>,
    },
    /// The db extended a lease.
    HeartbeatAccepted {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// The new lease end.
        lease_expires_at: Timestamp,
    },
    /// The db answered a completion.
    Completed {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// What the db did.
        outcome: CompleteOutcome,
    },
    /// The db accepted a failure.
    Failed {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// The handler's error.
        error: String,
        /// Whether the worker asked for a retry (false when unknown).
        retryable: bool,
        /// What the db did.
        outcome: FailOutcome,
    },
    /// The db accepted a job given back at shutdown.
    Released {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
    },
    /// The reaper took a job back.
    Reaped {
        /// When.
        at: Timestamp,
        /// The worker whose reaper did it.
        by: String,
        /// The job.
        job: JobId,
        /// To dead (last attempt) rather than queued.
        dead: bool,
        /// When the lease had expired, if the db said (Postgres does).
        lease_expired_at: Option<Timestamp>,
    },
    /// The db accepted a cancel.
    Cancelled {
        /// When.
        at: Timestamp,
        /// The caller.
        by: String,
        /// The job.
        job: JobId,
        /// The status the db reported after it.
        status: JobStatus,
    },
    /// The db accepted an operator's requeue.
    Requeued {
        /// When.
        at: Timestamp,
        /// The caller.
        by: String,
        /// The job.
        job: JobId,
    },
    /// The db refused a write on a job, or could not answer it.
    WriteRefused {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The call refused (`complete` for one item of a batch).
        op: String,
        /// The epoch presented, for fenced writes.
        epoch: Option<Epoch>,
        /// Refused as one item of a batched write, not as the whole call.
        in_batch: bool,
        /// Why.
        refusal: Refusal,
        /// The job's current epoch, when the db said.
        current: Option<Epoch>,
        /// The db's reason, verbatim.
        detail: String,
    },
    /// A worker's runtime started an attempt.
    AttemptStarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it holds.
        epoch: Epoch,
        /// How long the job had waited while due.
        pickup_latency: Duration,
    },
    /// A worker's runtime ended an attempt (wrote its result, gave it back,
    /// or had a write refused).
    AttemptEnded {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
    },
    /// A worker's runtime gave an attempt up (refused heartbeat, local lease
    /// deadline, timeout, shutdown); this ends the attempt too.
    LeaseLost {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// A handler's work for an attempt finished (the real-process run's side
    /// table records it; the simulator does not emit this).
    WorkFinished {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
    },
    /// The driver injected a fault.
    FaultInjected {
        /// When.
        at: Timestamp,
        /// What.
        fault: Fault,
        /// Whether it changed anything (a crash of a host already down did not).
        took_effect: bool,
    },
    /// `who` (a worker, or `*` for everyone) was under a fault in this window.
    FaultWindow {
        /// Worker id, or `*`.
        who: String,
        /// Start.
        from: Timestamp,
        /// End.
        until: Timestamp,
    },
    /// A worker host (re)started.
    Restarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
    },
    /// From here on liveness is owed: the simulator's heal ended every fault,
    /// or a substrate promises liveness throughout.
    Healed {
        /// When.
        at: Timestamp,
    },
    /// The store's rows at one instant.
    Sampled {
        /// When.
        at: Timestamp,
        /// Every row, in the store's order.
        jobs: Vec<JobRow>,
        /// Whether some healthy worker had a free slot.
        free_capacity: bool,
    },
    /// A worker finished a graceful shutdown it began at `since`.
    ShutdownFinished {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// When its SIGTERM came.
        since: Timestamp,
        /// The store's rows then.
        jobs: Vec<JobRow>,
    },
    /// The liveness phase ran out: every job should be terminal by now.
    Ended {
        /// When.
        at: Timestamp,
        /// The store's rows then.
        jobs: Vec<JobRow>,
    },
}

impl Observation {
    /// When it happened (a fault window: when it began).
    pub fn at(&self) -> Timestamp {
        match self {
            Observation::FaultWindow { from, .. } => *from,
            Observation::Answered { at, .. }
            | Observation::Inserted { at, .. }
            | Observation::Claimed { at, .. }
            | Observation::HeartbeatAccepted { at, .. }
            | Observation::Completed { at, .. }
            | Observation::Failed { at, .. }
            | Observation::Released { at, .. }
            | Observation::Reaped { at, .. }
            | Observation::Cancelled { at, .. }
            | Observation::Requeued { at, .. }
            | Observation::WriteRefused { at, .. }
            | Observation::AttemptStarted { at, .. }
            | Observation::AttemptEnded { at, .. }
            | Observation::LeaseLost { at, .. }
            | Observation::WorkFinished { at, .. }
            | Observation::FaultInjected { at, .. }
            | Observation::Restarted { at, .. }
            | Observation::Healed { at }
            | Observation::Sampled { at, .. }
            | Observation::ShutdownFinished { at, .. }
            | Observation::Ended { at, .. } => *at,
        }
    }
}

/// Where substrates put observations: a queue the world drains in order.
#[derive(Clone, Debug, Default)]
pub struct Sink(Arc<Mutex<Vec<Observation>>>);

impl Sink {
    /// Adds one observation.
    pub fn push(&self, observation: Observation) {
        self.0.lock().expect("sink lock").push(observation);
    }

    /// Adds several, in order.
    pub fn extend(&self, observations: impl IntoIterator<Item = Observation>) {
        self.0.lock().expect("sink lock").extend(observations);
    }

    /// Takes everything observed so far, oldest first.
    pub fn drain(&self) -> Vec<Observation> {
        std::mem::take(&mut *self.0.lock().expect("sink lock"))
    }
}

fn refusal(e: &StorageError) -> (Refusal, Option<Epoch>) {
    match e {
        StorageError::StaleEpoch { current, .. } => (Refusal::StaleEpoch, Some(*current)),
        StorageError::WrongStatus { .. } => (Refusal::WrongStatus, None),
        StorageError::NotFound(_) => (Refusal::NotFound, None),
        StorageError::Unavailable(_) => (Refusal::Unavailable, None),
        _ => (Refusal::Other, None),
    }
}

fn refused(
    at: Timestamp,
    from: &str,
    op: &str,
    job: JobId,
    epoch: Option<Epoch>,
    in_batch: bool,
    e: &StorageError,
) -> Observation {
    let (refusal, current) = refusal(e);
    Observation::WriteRefused {
        at,
        worker: from.to_owned(),
        job,
        op: op.to_owned(),
        epoch,
        in_batch,
        refusal,
        current,
        detail: format!("{e:?}"),
    }
}

fn inserted(at: Timestamp, from: &str, job: &Job, new: bool) -> Observation {
    Observation::Inserted {
        at,
        from: from.to_owned(),
        job: job.id,
        new,
        status: job.status,
        epoch: job.epoch,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        run_at: job.run_at,
    }
}

/// An operation's name without the `job_` prefix ("heartbeat", "complete"),
/// as traces have always named them.
pub fn short_name(op: &Op) -> &'static str {
    let name = op.name();
    name.strip_prefix("job_").unwrap_or(name)
}

/// The observations one answered call makes: first [`Observation::Answered`],
/// then one per job the call touched, in the order the db reported them.
pub fn observations(at: Timestamp, from: &str, op: &Op, reply: &Reply) -> Vec<Observation> {
    let name = short_name(op);
    let mut out = vec![Observation::Answered {
        at,
        from: from.to_owned(),
        op: name.to_owned(),
    }];
    let worker = from.to_owned();
    if let Some(e) = reply.error() {
        let (job, epoch) = match op {
            Op::JobHeartbeat(JobHeartbeat { id, epoch, .. })
            | Op::JobComplete(JobComplete { id, epoch })
            | Op::JobFail(JobFail { id, epoch, .. })
            | Op::JobRelease(JobRelease { id, epoch }) => (Some(*id), Some(*epoch)),
            Op::JobCancel(JobCancel { id }) => (Some(*id), None),
            Op::JobCompleteMany(JobCompleteMany { jobs }) if jobs.len() == 1 => {
                (Some(jobs[0].id), Some(jobs[0].epoch))
            }
            _ => (None, None),
        };
        if let Some(job) = job {
            out.push(refused(at, from, name, job, epoch, false, e));
        }
        return out;
    }
    match (op, reply) {
        (_, Reply::JobInsert(Ok(o))) => out.push(inserted(at, from, &o.job, o.inserted)),
        (_, Reply::JobInsertMany(Ok(os))) => {
            out.extend(os.iter().map(|o| inserted(at, from, &o.job, o.inserted)))
        }
        (Op::JobClaim(_), Reply::JobClaim(Ok(jobs))) => out.extend(jobs.iter().map(|claimed| {
            let job = &claimed.job;
            Observation::Claimed {
                at,
                worker: worker.clone(),
                job: job.id,
                epoch: job.epoch,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                lease_owner: job.lease_owner.clone(),
                lease_expires_at: job.lease_expires_at,
            }
        })),
        (Op::JobHeartbeat(JobHeartbeat { id, epoch, .. }), Reply::JobHeartbeat(Ok(expires))) => {
            out.push(Observation::HeartbeatAccepted {
                at,
                worker,
                job: *id,
                epoch: *epoch,
                lease_expires_at: *expires,
            })
        }
        (Op::JobComplete(JobComplete { id, epoch }), Reply::JobComplete(Ok(o))) => {
            out.push(Observation::Completed {
                at,
                worker,
                job: *id,
                epoch: *epoch,
                outcome: *o,
            })
        }
        (Op::JobCompleteMany(JobCompleteMany { jobs }), Reply::JobCompleteMany(Ok(results))) => {
            for (JobComplete { id, epoch }, result) in jobs.iter().zip(results) {
                out.push(match result {
                    Ok(o) => Observation::Completed {
                        at,
                        worker: worker.clone(),
                        job: *id,
                        epoch: *epoch,
                        outcome: *o,
                    },
                    Err(e) => refused(at, from, "complete", *id, Some(*epoch), true, e),
                });
            }
        }
        (
            Op::JobFail(JobFail {
                id,
                epoch,
                error,
                retry_after,
            }),
            Reply::JobFail(Ok(outcome)),
        ) => out.push(Observation::Failed {
            at,
            worker,
            job: *id,
            epoch: *epoch,
            error: error.clone(),
            retryable: retry_after.is_some(),
            outcome: *outcome,
        }),
        (Op::JobRelease(JobRelease { id, epoch }), Reply::JobRelease(Ok(()))) => {
            out.push(Observation::Released {
                at,
                worker,
                job: *id,
                epoch: *epoch,
            })
        }
        (Op::JobReapExpired(_), Reply::JobReapExpired(Ok(outcome))) => {
            let requeued = outcome.requeued.iter().map(|id| (*id, false));
            let dead = outcome.dead.iter().map(|id| (*id, true));
            out.extend(requeued.chain(dead).map(|(job, dead)| Observation::Reaped {
                at,
                by: worker.clone(),
                job,
                dead,
                lease_expired_at: None,
            }))
        }
        (Op::JobCancel(JobCancel { id }), Reply::JobCancel(Ok(job))) => out.push(Observation::Cancelled {
            at,
            by: worker,
            job: *id,
            status: job.status,
        }),
        (Op::JobRequeue(JobRequeue { id, .. }), Reply::JobRequeue(Ok(_))) => {
            out.push(Observation::Requeued {
                at,
                by: worker,
                job: *id,
            })
        }
        _ => {}
    }
    out
}

/// The observation a worker's runtime event makes, if any; `at` is simulated
/// time (no skew).
pub fn from_worker_event(at: Timestamp, worker: &str, event: &WorkerEvent) -> Option<Observation> {
    let worker = worker.to_owned();
    Some(match event {
        WorkerEvent::Claimed {
            attempt,
            pickup_latency,
        } => Observation::AttemptStarted {
            at,
            worker,
            job: attempt.job_id,
            epoch: attempt.epoch,
            pickup_latency: *pickup_latency,
        },
        WorkerEvent::LeaseLost { attempt, reason } => Observation::LeaseLost {
            at,
            worker,
            job: attempt.job_id,
            epoch: attempt.epoch,
            reason: format!("{reason:?}"),
        },
        WorkerEvent::Completed { attempt, .. }
        | WorkerEvent::Retried { attempt, .. }
        | WorkerEvent::Dead { attempt, .. }
        | WorkerEvent::Released { attempt }
        | WorkerEvent::StaleWriteRejected { attempt, .. } => Observation::AttemptEnded {
            at,
            worker,
            job: attempt.job_id,
            epoch: attempt.epoch,
        },
        _ => return None,
    })
}
