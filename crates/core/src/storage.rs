//! The `Storage` trait: the jobs table, one method per operation.
//!
//! Its documented semantics are the specification every storage meets: the
//! in-memory [`MemStore`](crate::MemStore) is the executable model, and the
//! conformance suite holds Postgres to it operation for operation.
//!
//! # Rules every implementation follows
//!
//! - **Time is the storage's.** "now" below is the storage's own clock
//!   (Postgres: the database's `now()`, or a pinned time in tests), never the
//!   caller's, so a worker with a skewed clock cannot expire a live lease.
//! - **Fencing.** Each claim increments the job's [`Epoch`] and its attempt.
//!   Every later write names `(id, epoch)`. The checks, in order: unknown id →
//!   [`StorageError::NotFound`]; epoch not current → [`StorageError::StaleEpoch`];
//!   job not `running` → [`StorageError::WrongStatus`]. A refused write changes
//!   nothing.
//! - **Lease expiry** does not by itself fence a holder: until the reaper (or a
//!   requeue) moves an expired job, its holder may still heartbeat or complete
//!   it, because nobody else can hold it.
//! - **Validation first.** Bad input is refused with [`StorageError::Invalid`]
//!   before anything is written: names, JSON (size, NUL), `run_at` within
//!   years 1..=9999, leases and retry delays of at most 100 years, and a
//!   worker registration's id, queue names and metadata (as progress: 64 KiB).
//! - **Events.** Abnormal transitions (retried, dead, reaped, released,
//!   cancelled, requeued) always append a [`JobEvent`]; inserted, claimed and
//!   completed are appended only when the storage's happy-path logging is on.
//! - **Ordering.** Claims take due jobs by priority (high first), then
//!   `run_at`, then id. Lists are returned in a documented, deterministic order.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StorageError;
use crate::error::ValidationError;
use crate::job::{
    limits, validate_duration, validate_json, validate_name, ClaimedJob, Epoch, Job, JobEvent, JobId,
    JobStatus, NewJob,
};
use crate::time::Timestamp;

/// Result of a storage call.
pub type StorageResult<T> = Result<T, StorageError>;

/// What [`Storage::job_insert`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InsertOutcome {
    /// The new job, or the existing one with the same idempotency key.
    pub job: Job,
    /// False when the idempotency key matched an existing job.
    pub inserted: bool,
}

/// A request for up to `limit` due jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The claiming worker; becomes the lease owner.
    pub worker_id: String,
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Most jobs to take.
    pub limit: u32,
    /// Lease length from now.
    pub lease: Duration,
}

/// What [`Storage::job_complete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompleteOutcome {
    /// The job is now succeeded.
    Completed,
    /// It already was, by this same epoch: a retried completion.
    AlreadyCompleted,
}

/// A failed attempt reported to [`Storage::job_fail`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRequest {
    /// Why the attempt failed.
    pub error: String,
    /// `Some(delay)`: retry no earlier than now + delay if attempts remain.
    /// `None`: permanent, the job is dead.
    pub retry_after: Option<Duration>,
}

/// What [`Storage::job_fail`] did.
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

/// What one [`Storage::job_reap_expired`] pass did.
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

/// A worker announcing itself in the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// Unique worker id.
    pub id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Free-form facts (host, pid, version).
    pub metadata: Value,
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

/// The jobs table and worker registry. See the module docs for the rules.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Inserts a job, or returns the existing job with the same idempotency key.
    ///
    /// `run_at` defaults to now. The new job is queued at attempt 0, epoch 0.
    async fn job_insert(&self, job: NewJob) -> StorageResult<InsertOutcome>;

    /// Inserts many jobs, as if by `job_insert` in order, atomically: on a
    /// validation error nothing is inserted.
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StorageResult<Vec<InsertOutcome>>;

    /// Claims up to `limit` due jobs (queued, `run_at <= now`, in one of
    /// `queues`) by priority desc, `run_at`, id. Each claimed job becomes
    /// running with attempt + 1, epoch + 1, owner, `claimed_at = heartbeat_at =
    /// now`, `lease_expires_at = now + lease`, progress cleared. Two concurrent
    /// claims never take the same job.
    async fn job_claim(&self, request: ClaimRequest) -> StorageResult<Vec<ClaimedJob>>;

    /// Extends the lease to now + `lease` and sets `heartbeat_at = now`; stores
    /// `progress` when given. Returns the new expiry.
    async fn job_heartbeat(
        &self,
        id: JobId,
        epoch: Epoch,
        lease: Duration,
        progress: Option<Value>,
    ) -> StorageResult<Timestamp>;

    /// Marks the job succeeded. Idempotent for the same epoch.
    async fn job_complete(&self, id: JobId, epoch: Epoch) -> StorageResult<CompleteOutcome>;

    /// Completes many jobs; one result per input, in input order.
    async fn job_complete_many(
        &self,
        jobs: Vec<(JobId, Epoch)>,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>>;

    /// Records a failed attempt: queued at now + delay if attempts remain and
    /// the error is retryable, else dead. Stores the error.
    async fn job_fail(&self, id: JobId, epoch: Epoch, request: FailRequest) -> StorageResult<FailOutcome>;

    /// Gives a running job back unfinished (graceful shutdown): queued, due
    /// now, its attempt count decremented so the release costs no attempt.
    async fn job_release(&self, id: JobId, epoch: Epoch) -> StorageResult<()>;

    /// Takes back up to `limit` running jobs whose lease expired
    /// (`lease_expires_at <= now`), ascending id: queued and due now, or dead
    /// (error "lease expired") if that was their last attempt. Idempotent and
    /// safe to run from many workers at once.
    async fn job_reap_expired(&self, limit: u32) -> StorageResult<ReapOutcome>;

    /// Cancels a queued or running job (a running holder's later writes are
    /// refused). Cancelling a cancelled job returns it unchanged; a succeeded
    /// or dead job is [`StorageError::WrongStatus`].
    async fn job_cancel(&self, id: JobId) -> StorageResult<Job>;

    /// Operator requeue: a dead job, or a running job whose lease expired,
    /// becomes queued and due now (a dead job with its attempts reset to 0).
    /// A running job with a live lease needs `force`; its holder is then
    /// refused on its next write. Other statuses are
    /// [`StorageError::WrongStatus`].
    async fn job_requeue(&self, id: JobId, force: bool) -> StorageResult<Job>;

    /// The job, if it exists.
    async fn job_get(&self, id: JobId) -> StorageResult<Option<Job>>;

    /// The job's timeline, oldest first. Unknown id: empty.
    async fn job_events(&self, id: JobId) -> StorageResult<Vec<JobEvent>>;

    /// Adds or replaces a worker in the registry; its heartbeat is now.
    async fn worker_register(&self, worker: WorkerRegistration) -> StorageResult<()>;

    /// Records that a worker is alive with `in_flight` jobs.
    /// [`StorageError::WorkerNotFound`] if it is not registered.
    async fn worker_heartbeat(&self, id: &str, in_flight: u32) -> StorageResult<()>;

    /// Removes a worker from the registry. Unknown ids are ignored.
    async fn worker_deregister(&self, id: &str) -> StorageResult<()>;

    /// Registered workers, ascending id.
    async fn worker_list(&self) -> StorageResult<Vec<WorkerRecord>>;

    /// Per-queue counts, ascending queue name; queues with no jobs are absent.
    async fn queue_stats(&self) -> StorageResult<Vec<QueueStats>>;

    /// The storage's current time: the clock every lease is judged by.
    async fn storage_now(&self) -> StorageResult<Timestamp>;
}

/// Whether a status is one a reap takes back.
pub fn is_reapable(job: &Job, now: Timestamp) -> bool {
    job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|at| at <= now)
}

impl ClaimRequest {
    /// Checks the worker id, queue names and lease; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("worker_id", &self.worker_id)?;
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        validate_duration("lease", self.lease)
    }
}

impl FailRequest {
    /// Checks the retry delay; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.retry_after {
            Some(delay) => validate_duration("retry_after", delay),
            None => Ok(()),
        }
    }
}

impl WorkerRegistration {
    /// Checks the id, queue names and metadata; every storage calls this first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("worker_id", &self.id)?;
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        validate_json("metadata", &self.metadata, limits::MAX_PROGRESS_BYTES)
    }
}

/// Checks a heartbeat's progress and lease; every storage calls this first.
pub fn validate_heartbeat(lease: Duration, progress: Option<&Value>) -> Result<(), ValidationError> {
    if let Some(progress) = progress {
        validate_json("progress", progress, limits::MAX_PROGRESS_BYTES)?;
    }
    validate_duration("lease", lease)
}
