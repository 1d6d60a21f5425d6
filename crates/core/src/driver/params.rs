//! One params struct per storage operation, named Noun-Verb, and the checks
//! each one must pass before any storage writes anything.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{limits, Epoch, JobId, ValidJob};
use crate::validate::{validate_duration, validate_json, validate_lease, validate_name, ValidationError};

/// Inserts one job (see [`Storage::job_insert`](super::Storage::job_insert)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobInsert {
    /// The job, already validated.
    pub job: ValidJob,
}

/// Inserts many jobs atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobInsertMany {
    /// The jobs, already validated, inserted in this order.
    pub jobs: Vec<ValidJob>,
}

/// Claims up to `limit` due jobs for one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobClaim {
    /// The claiming worker; becomes the lease owner.
    pub worker_id: String,
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Most jobs to take.
    pub limit: u32,
    /// Lease length from now.
    pub lease: Duration,
    /// `Some(kinds)`: only jobs of these kinds (a worker passes the kinds
    /// it has handlers for, so a job of a kind it cannot run waits for one
    /// that can). `None`: any kind, for tools that run no handlers.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
}

/// Extends a held lease, optionally storing progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobHeartbeat {
    /// The job.
    pub id: JobId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
    /// New lease length from now.
    pub lease: Duration,
    /// Progress to store, if any. `Some(null)` stores a JSON null, on the
    /// wire too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::some_json"
    )]
    pub progress: Option<Value>,
}

/// Saves a held job's checkpoint: the state its next attempt resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobCheckpoint {
    /// The job.
    pub id: JobId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
    /// The state to keep, at most [`limits::MAX_CHECKPOINT_BYTES`] as JSON.
    /// A JSON `null` is a value here too.
    pub checkpoint: Value,
}

/// Marks a held job succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobComplete {
    /// The job.
    pub id: JobId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
}

/// Completes many held jobs; each is answered on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCompleteMany {
    /// The completions, answered in this order.
    pub jobs: Vec<JobComplete>,
}

/// Records a failed attempt of a held job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFail {
    /// The job.
    pub id: JobId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
    /// Why the attempt failed.
    pub error: String,
    /// `Some(delay)`: retry no earlier than now + delay if attempts remain.
    /// `None`: permanent, the job is dead.
    pub retry_after: Option<Duration>,
}

/// Gives a held job back unfinished, costing no attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRelease {
    /// The job.
    pub id: JobId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
}

/// Takes back expired leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReapExpired {
    /// Most jobs to take back in this pass.
    pub limit: u32,
}

/// Cancels a queued or running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancel {
    /// The job.
    pub id: JobId,
}

/// Operator requeue of a dead job or an expired (or, forced, a live) lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequeue {
    /// The job.
    pub id: JobId,
    /// Revoke a live lease too.
    pub force: bool,
}

/// Reads one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGet {
    /// The job.
    pub id: JobId,
}

/// Reads one job's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvents {
    /// The job.
    pub id: JobId,
}

/// Adds or replaces a worker in the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegister {
    /// Unique worker id.
    pub id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Free-form facts (host, pid, version).
    pub metadata: Value,
    /// Kinds it has handlers for.
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// Says a registered worker is alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// The worker.
    pub id: String,
    /// Jobs in flight now.
    pub in_flight: u32,
}

/// Removes a worker from the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDeregister {
    /// The worker.
    pub id: String,
}

/// Deletes finished jobs, and their events, older than an age per status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPrune {
    /// Succeeded jobs finished at least this long ago are deleted.
    pub succeeded_after: Duration,
    /// Cancelled jobs finished at least this long ago are deleted.
    pub cancelled_after: Duration,
    /// Dead jobs finished at least this long ago are deleted.
    pub dead_after: Duration,
    /// Most jobs deleted in this pass, oldest finish first.
    pub limit: u32,
}

/// Reads per-kind counts of non-terminal jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueKindsGet {}

/// Lists registered workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerList {}

/// Reads per-queue counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatsGet {}

/// Reads the storage's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageNow {}

impl JobInsert {
    /// Validates `job` and wraps it.
    pub fn new(job: crate::job::NewJob) -> Result<Self, ValidationError> {
        Ok(JobInsert { job: job.validate()? })
    }
}

impl JobInsertMany {
    /// Validates every job and wraps them; the first bad one is the error.
    pub fn new(jobs: Vec<crate::job::NewJob>) -> Result<Self, ValidationError> {
        let jobs = jobs.into_iter().map(|j| j.validate()).collect::<Result<_, _>>()?;
        Ok(JobInsertMany { jobs })
    }
}

impl JobClaim {
    /// Checks the worker id, queue names and lease; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("worker_id", &self.worker_id)?;
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        for kind in self.kinds.iter().flatten() {
            validate_name("kind", kind)?;
        }
        validate_lease("lease", self.lease)
    }
}

impl JobHeartbeat {
    /// Checks the progress and lease; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(progress) = &self.progress {
            validate_json("progress", progress, limits::MAX_PROGRESS_BYTES)?;
        }
        validate_lease("lease", self.lease)
    }
}

impl JobCheckpoint {
    /// Checks the checkpoint's size and text; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_json("checkpoint", &self.checkpoint, limits::MAX_CHECKPOINT_BYTES)
    }
}

impl JobFail {
    /// Checks the retry delay; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.retry_after {
            Some(delay) => validate_duration("retry_after", delay),
            None => Ok(()),
        }
    }
}

impl WorkerRegister {
    /// Checks the id, queue names and metadata; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("worker_id", &self.id)?;
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        for kind in &self.kinds {
            validate_name("kind", kind)?;
        }
        validate_json("metadata", &self.metadata, limits::MAX_PROGRESS_BYTES)
    }
}

impl JobPrune {
    /// Checks the ages; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_duration("succeeded_after", self.succeeded_after)?;
        validate_duration("cancelled_after", self.cancelled_after)?;
        validate_duration("dead_after", self.dead_after)
    }
}
