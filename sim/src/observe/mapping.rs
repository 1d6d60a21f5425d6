//! The wire protocol and the worker's events, turned into [`Observation`]s.

use stuckless_core::driver::{
    JobCancel, JobCheckpoint, JobComplete, JobCompleteMany, JobFail, JobHeartbeat, JobPrune, JobRelease,
    JobRequeue, Op, Reply,
};
use stuckless_core::{Epoch, Job, JobId, StorageError, Timestamp, WorkerEvent};

use super::{Observation, Refusal};

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
            | Op::JobCheckpoint(JobCheckpoint { id, epoch, .. })
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
        (Op::JobCheckpoint(p), Reply::JobCheckpoint(Ok(_))) => out.push(Observation::CheckpointSaved {
            at,
            worker,
            job: p.id,
            epoch: p.epoch,
            checkpoint: p.checkpoint.clone(),
        }),
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
        (Op::JobPrune(JobPrune { .. }), Reply::JobPrune(Ok(outcome))) => out.push(Observation::Pruned {
            at,
            by: worker,
            succeeded: outcome.succeeded,
            cancelled: outcome.cancelled,
            dead: outcome.dead,
        }),
        // Reads (per-kind counts, stats, lists, the clock, a job's events)
        // and the worker registry change no job: `Answered` says all there is.
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
        WorkerEvent::CallFailed {
            operation,
            error,
            consecutive,
        } => Observation::CallFailed {
            at,
            worker,
            operation: (*operation).to_owned(),
            error: error.clone(),
            consecutive: *consecutive,
        },
        // A prune's deletions are observed where the db answers it (`Pruned`).
        _ => return None,
    })
}
