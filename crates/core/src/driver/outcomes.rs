//! What storage operations answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StorageError;
use crate::job::{Job, JobId, JobStatus};
use crate::time::Timestamp;

/// What [`Storage::job_insert`](super::Storage::job_insert) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InsertOutcome {
    /// The new job, or the existing one with the same idempotency key.
    pub job: Job,
    /// False when the idempotency key matched an existing job.
    pub inserted: bool,
}

/// What [`Storage::job_complete`](super::Storage::job_complete) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompleteOutcome {
    /// The job is now succeeded.
    Completed,
    /// It already was, by this same epoch: a retried completion.
    AlreadyCompleted,
}

/// What [`Storage::job_fail`](super::Storage::job_fail) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailOutcome {
    /// Back to queued, runnable at `run_at`.
    Retried {
        /// Earliest next run.
        run_at: Timestamp,
    },
    /// Dead: permanent error or attempts used up.
    Dead,
}

/// What one [`Storage::job_reap_expired`](super::Storage::job_reap_expired) pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReapOutcome {
    /// Jobs put back to queued, ascending id.
    pub requeued: Vec<JobId>,
    /// Jobs that were on their last attempt and are now dead, ascending id.
    pub dead: Vec<JobId>,
}

impl ReapOutcome {
    /// Total jobs taken back.
    pub fn len(&self) -> usize {
        self.requeued.len() + self.dead.len()
    }

    /// Whether nothing was reaped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Unique worker id.
    pub id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Free-form facts.
    pub metadata: Value,
    /// Registration time (storage clock).
    pub started_at: Timestamp,
    /// Latest registry heartbeat (storage clock).
    pub last_heartbeat_at: Timestamp,
    /// Jobs in flight at the latest heartbeat.
    pub in_flight: u32,
    /// Kinds it has handlers for: the only kinds it claims.
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl WorkerRecord {
    /// Whether the worker claims jobs of `kind` on `queue`. A worker that
    /// recorded no kinds is one from before kinds were recorded, which
    /// claims every kind.
    pub fn serves(&self, queue: &str, kind: &str) -> bool {
        self.queues.iter().any(|q| q == queue)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
    }
}

/// Non-terminal jobs of one kind on one queue, as of the storage's now:
/// what tells an operator that no worker handles a kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    /// Queue name.
    pub queue: String,
    /// Kind name.
    pub kind: String,
    /// Queued with `run_at <= now`.
    pub due: u64,
    /// Queued with `run_at > now`.
    pub scheduled: u64,
    /// Running (live lease or not).
    pub running: u64,
    /// How long the oldest due job has been due.
    pub oldest_due_age: Option<Duration>,
}

/// Finished jobs deleted by one prune pass, by the status they had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneOutcome {
    /// Succeeded jobs deleted.
    pub succeeded: u64,
    /// Cancelled jobs deleted.
    pub cancelled: u64,
    /// Dead jobs deleted.
    pub dead: u64,
}

impl PruneOutcome {
    /// Jobs deleted in all.
    pub fn total(&self) -> u64 {
        self.succeeded + self.cancelled + self.dead
    }
}

/// Counts for one queue, as of the storage's now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Queued with `run_at <= now`.
    pub due: u64,
    /// Queued with `run_at > now`.
    pub scheduled: u64,
    /// Running with a live lease.
    pub running: u64,
    /// Running with `lease_expires_at <= now`: waiting for the reaper.
    pub running_expired: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Dead.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// How long the oldest due job has been due.
    pub oldest_due_age: Option<Duration>,
}

/// Whether an operator may requeue `job` now, and the event detail that
/// says why: a dead job, an expired lease, or (with `force`) a live one.
/// Every storage decides with this one rule.
pub fn requeue_detail(job: &Job, now: Timestamp, force: bool) -> Result<&'static str, StorageError> {
    match job.status {
        JobStatus::Dead => Ok("dead job requeued by operator"),
        JobStatus::Running if is_reapable(job, now) => Ok("expired lease requeued by operator"),
        JobStatus::Running if force => Ok("live lease revoked by operator (--force)"),
        status => Err(StorageError::WrongStatus {
            id: job.id,
            status,
            operation: "requeue",
            expected: if status == JobStatus::Running {
                "dead, or running with an expired lease (or force)"
            } else {
                "dead, or running with an expired lease"
            },
        }),
    }
}

/// Whether a job is one a reap takes back: running with `lease_expires_at <= now`.
pub fn is_reapable(job: &Job, now: Timestamp) -> bool {
    job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reaper's count (logged, and what the worker's report adds up) is
    /// both lists together (cargo-mutants: `-` for `+` passed every test).
    #[test]
    fn a_reap_counts_requeued_and_dead_jobs() {
        let reaped = ReapOutcome {
            requeued: vec![JobId(1), JobId(2)],
            dead: vec![JobId(3)],
        };
        assert_eq!(reaped.len(), 3);
        assert!(!reaped.is_empty());
        let only_dead = ReapOutcome {
            requeued: vec![],
            dead: vec![JobId(4)],
        };
        assert_eq!(only_dead.len(), 1);
        assert!(ReapOutcome::default().is_empty());
    }
}
