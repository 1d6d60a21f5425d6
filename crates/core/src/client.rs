//! `Client`: what an application uses to enqueue and manage jobs.

use std::sync::Arc;

use crate::args::JobArgs;
use crate::driver::{
    InsertOutcome, JobCancel, JobEvents, JobGet, JobInsert, JobInsertMany, JobRequeue, Storage, StorageResult,
};
use crate::job::{Job, JobEvent, JobId, NewJob};

/// Enqueues, cancels, requeues and reads jobs on any storage.
///
/// Every method validates its input first: bad input is a
/// [`StorageError::Invalid`](crate::StorageError::Invalid) naming the field,
/// and nothing is written. To enqueue inside your own Postgres transaction,
/// use `stuckless_pg::enqueue` with [`NewJob::from_args`].
#[derive(Clone)]
pub struct Client {
    storage: Arc<dyn Storage>,
}

impl Client {
    /// A client over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Client { storage }
    }

    /// The storage this client uses.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Enqueues a typed job on its kind's queue with default options.
    pub async fn enqueue<A: JobArgs>(&self, args: A) -> StorageResult<InsertOutcome> {
        self.enqueue_job(NewJob::from_args(&args)?).await
    }

    /// Enqueues a job given as JSON (a dynamic kind, or options set on the
    /// [`NewJob`]: priority, `run_at`, idempotency key).
    pub async fn enqueue_job(&self, job: NewJob) -> StorageResult<InsertOutcome> {
        self.storage.job_insert(JobInsert { job: job.validate()? }).await
    }

    /// Enqueues many jobs atomically: one bad job and none is inserted.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> StorageResult<Vec<InsertOutcome>> {
        self.storage.job_insert_many(JobInsertMany::new(jobs)?).await
    }

    /// Cancels a queued or running job; a running holder's next write is refused.
    pub async fn cancel(&self, id: JobId) -> StorageResult<Job> {
        self.storage.job_cancel(JobCancel { id }).await
    }

    /// Requeues a dead job or an expired lease (`force`: a live lease too).
    pub async fn requeue(&self, id: JobId, force: bool) -> StorageResult<Job> {
        self.storage.job_requeue(JobRequeue { id, force }).await
    }

    /// The job, if it exists.
    pub async fn get(&self, id: JobId) -> StorageResult<Option<Job>> {
        self.storage.job_get(JobGet { id }).await
    }

    /// The job's timeline, oldest first.
    pub async fn events(&self, id: JobId) -> StorageResult<Vec<JobEvent>> {
        self.storage.job_events(JobEvents { id }).await
    }
}
