//! The world every runtime test drives: a `MemStore` on tokio's paused
//! clock, workers with short leases, and a handler that sleeps.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::{JobGet, Storage};
use stuckless_core::{
    Client, Clock, Job, JobContext, JobError, JobId, MemStore, NewJob, RunReport, Timestamp, TokioClock,
    Worker, WorkerBuilder,
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
        Worker::builder(id, self.store.clone())
            .clock(self.clock.clone())
            .lease(LEASE)
            .heartbeat_interval(HEARTBEAT)
            .reap_interval(REAP)
            .poll_interval(POLL)
            .registry_heartbeat_interval(HEARTBEAT)
    }

    pub async fn insert(&self, kind: &str, payload: serde_json::Value) -> JobId {
        self.client()
            .enqueue_job(NewJob::new("default", kind, payload))
            .await
            .unwrap()
            .job
            .id
    }

    pub fn client(&self) -> Client {
        Client::new(self.store.clone())
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store
            .job_get(JobGet { id })
            .await
            .unwrap()
            .expect("job exists")
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

pub async fn sleeper(ctx: JobContext) -> Result<(), JobError> {
    let secs = ctx.payload()["secs"].as_u64().unwrap_or(0);
    tokio::select! {
        biased;
        _ = ctx.cancelled() => Err(JobError::retryable("cancelled")),
        _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(()),
    }
}
