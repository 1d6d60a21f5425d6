//! What storage operations answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Whether a job is one a reap takes back: running with `lease_expires_at <= now`.
pub fn is_reapable(job: &Job, now: Timestamp) -> bool {
    job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|at| at <= now)
}
