//! The world every runtime test drives: a `MemStore` on tokio's paused
//! clock, workers with short leases, and a handler that sleeps.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stuckless_core::driver::{Flow, Hook, Hooked, JobEvents, JobGet, Op, Storage};
use stuckless_core::{
    Client, Clock, Job, JobContext, JobError, JobEventKind, JobId, MemStore, NewJob, RunReport, StorageError,
    Timestamp, TokioClock, Worker, WorkerBuilder,
};
use tokio::task::JoinHandle;

pub const LEASE: Duration = Duration::from_secs(6);
pub const HEARTBEAT: Duration = Duration::from_secs(2);
pub const REAP: Duration = Duration::from_secs(3);
pub const POLL: Duration = Duration::from_millis(500);

pub struct World {
    pub clock: Arc<TokioClock>,
    pub store: Arc<MemStore>,
}

impl World {
    pub fn new() -> Self {
        let clock = Arc::new(TokioClock::starting_at(Timestamp::from_secs(1_700_000_000)));
        let store = Arc::new(MemStore::with_clock(clock.clone()));
        World { clock, store }
    }

    pub fn worker(&self, id: &str) -> WorkerBuilder {
        self.worker_on(id, self.store.clone())
            .registry_heartbeat_interval(HEARTBEAT)
    }

    /// A worker with the world's clock and short timings on `storage`: the
    /// world's store behind a wrapper that breaks some calls. The registry
    /// heartbeat keeps its default, as those tests were written with it.
    pub fn worker_on(&self, id: &str, storage: Arc<dyn Storage>) -> WorkerBuilder {
        Worker::builder(id, storage)
            .clock(self.clock.clone())
            .lease(LEASE)
            .heartbeat_interval(HEARTBEAT)
            .reap_interval(REAP)
            .poll_interval(POLL)
    }

    /// A job of `kind` on the default queue with default options.
    pub async fn insert(&self, kind: &str, payload: serde_json::Value) -> JobId {
        self.enqueue(job(kind, payload)).await
    }

    /// Enqueues `job` (which must be valid) through the client.
    pub async fn enqueue(&self, job: NewJob) -> JobId {
        self.client().enqueue_job(job).await.unwrap().job.id
    }

    pub fn client(&self) -> Client {
        Client::new(self.store.clone())
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.find(id).await.expect("job exists")
    }

    /// The job `id`, or `None` once it is gone (pruned).
    pub async fn find(&self, id: JobId) -> Option<Job> {
        self.store.job_get(JobGet { id }).await.unwrap()
    }

    /// The kinds of `id`'s events, oldest first.
    pub async fn event_kinds(&self, id: JobId) -> Vec<JobEventKind> {
        let events = self.store.job_events(JobEvents { id }).await.unwrap();
        events.iter().map(|e| e.kind).collect()
    }

    /// Runs `worker` until `id` is terminal (up to `limit`), then shuts it
    /// down gracefully: the job as it ended and the worker's report.
    pub async fn run_until_terminal(
        &self,
        worker: WorkerBuilder,
        id: JobId,
        limit: Duration,
    ) -> (Job, RunReport) {
        let (shutdown, running) = spawn(worker.build().unwrap());
        let job = self.until_terminal(id, limit).await;
        shutdown.graceful();
        (job, running.await.unwrap())
    }

    /// Waits (in paused time) until `id` is terminal, up to `limit`.
    pub async fn until_terminal(&self, id: JobId, limit: Duration) -> Job {
        let deadline = self.clock.now() + limit;
        loop {
            let job = self.job(id).await;
            if job.status.is_terminal() || self.clock.now() >= deadline {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn spawn(worker: Worker) -> (stuckless_core::ShutdownHandle, JoinHandle<RunReport>) {
    let shutdown = worker.shutdown_handle();
    (
        shutdown,
        tokio::spawn(async move { worker.run().await.expect("worker runs") }),
    )
}

/// A job of `kind` on the default queue, to set options on.
pub fn job(kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob::new("default", kind, payload)
}

/// A handler that succeeds at once.
pub async fn noop(_: JobContext) -> Result<(), JobError> {
    Ok(())
}

pub async fn sleeper(ctx: JobContext) -> Result<(), JobError> {
    let secs = ctx.payload()["secs"].as_u64().unwrap_or(0);
    tokio::select! {
        biased;
        _ = ctx.cancelled() => Err(JobError::retryable("cancelled")),
        _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(()),
    }
}

/// A hook that answers the operations `picks` chooses with `error` instead
/// of passing them to the store: the first `times` of them, then none.
pub struct Refuse {
    picks: fn(&Op) -> bool,
    left: AtomicU32,
    error: StorageError,
}

impl Refuse {
    /// Refuses the first `times` operations `picks` chooses.
    pub fn first(times: u32, picks: fn(&Op) -> bool, error: StorageError) -> Self {
        Refuse {
            picks,
            left: AtomicU32::new(times),
            error,
        }
    }

    /// Refuses every operation `picks` chooses.
    pub fn every(picks: fn(&Op) -> bool, error: StorageError) -> Self {
        Self::first(u32::MAX, picks, error)
    }

    /// `store` behind this hook.
    pub fn around(self, store: Arc<MemStore>) -> Arc<dyn Storage> {
        Arc::new(Hooked::new(store, self))
    }
}

#[async_trait]
impl Hook for Refuse {
    async fn before(&self, op: Op) -> Flow {
        let take = |left: u32| (left > 0).then(|| if left == u32::MAX { left } else { left - 1 });
        if (self.picks)(&op)
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                .is_ok()
        {
            return Flow::Answer(op.refuse(self.error.clone()));
        }
        Flow::Continue(op)
    }
}

/// A transient error, as a database that did not answer gives.
pub fn unavailable(why: &str) -> StorageError {
    StorageError::Unavailable(why.to_owned())
}
