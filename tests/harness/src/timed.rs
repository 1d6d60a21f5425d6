//! A `Storage` wrapper that times the hot-path calls, so the bench can say
//! where a job's time goes (claim vs completion round trips, batch sizes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use stuckless_core::{
    ClaimRequest, ClaimedJob, CompleteOutcome, Epoch, FailOutcome, FailRequest, InsertOutcome, Job, JobEvent,
    JobId, NewJob, QueueStats, ReapOutcome, Storage, StorageResult, Timestamp, WorkerRecord,
    WorkerRegistration,
};

/// Timings of one kind of call.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    /// Duration of each call.
    pub durations: Vec<Duration>,
    /// Items in each call (jobs claimed, completions sent).
    pub sizes: Vec<usize>,
}

impl CallStats {
    /// The `p`th percentile duration in ms.
    pub fn p_ms(&self, p: f64) -> f64 {
        let mut d: Vec<f64> = self.durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        d.sort_by(|a, b| a.total_cmp(b));
        if d.is_empty() {
            return f64::NAN;
        }
        d[(((p / 100.0) * (d.len() as f64 - 1.0)).round() as usize).min(d.len() - 1)]
    }

    /// Mean items per call.
    pub fn mean_size(&self) -> f64 {
        if self.sizes.is_empty() {
            return 0.0;
        }
        self.sizes.iter().sum::<usize>() as f64 / self.sizes.len() as f64
    }

    /// Calls made.
    pub fn calls(&self) -> usize {
        self.durations.len()
    }
}

/// Wraps a storage; records `job_claim` and `job_complete_many` timings.
pub struct TimedStorage<S> {
    inner: S,
    /// Claim timings.
    pub claims: Arc<Mutex<CallStats>>,
    /// Batched-completion timings.
    pub completions: Arc<Mutex<CallStats>>,
}

impl<S: Storage> TimedStorage<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        TimedStorage {
            inner,
            claims: Arc::default(),
            completions: Arc::default(),
        }
    }
}

fn record(stats: &Mutex<CallStats>, started: Instant, size: usize) {
    let mut s = stats.lock().expect("stats lock");
    s.durations.push(started.elapsed());
    s.sizes.push(size);
}

#[async_trait]
impl<S: Storage> Storage for TimedStorage<S> {
    async fn job_insert(&self, job: NewJob) -> StorageResult<InsertOutcome> {
        self.inner.job_insert(job).await
    }
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StorageResult<Vec<InsertOutcome>> {
        self.inner.job_insert_many(jobs).await
    }
    async fn job_claim(&self, request: ClaimRequest) -> StorageResult<Vec<ClaimedJob>> {
        let started = Instant::now();
        let out = self.inner.job_claim(request).await;
        record(&self.claims, started, out.as_ref().map_or(0, Vec::len));
        out
    }
    async fn job_heartbeat(
        &self,
        id: JobId,
        epoch: Epoch,
        lease: Duration,
        progress: Option<Value>,
    ) -> StorageResult<Timestamp> {
        self.inner.job_heartbeat(id, epoch, lease, progress).await
    }
    async fn job_complete(&self, id: JobId, epoch: Epoch) -> StorageResult<CompleteOutcome> {
        self.inner.job_complete(id, epoch).await
    }
    async fn job_complete_many(
        &self,
        jobs: Vec<(JobId, Epoch)>,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        let started = Instant::now();
        let n = jobs.len();
        let out = self.inner.job_complete_many(jobs).await;
        record(&self.completions, started, n);
        out
    }
    async fn job_fail(&self, id: JobId, epoch: Epoch, request: FailRequest) -> StorageResult<FailOutcome> {
        self.inner.job_fail(id, epoch, request).await
    }
    async fn job_release(&self, id: JobId, epoch: Epoch) -> StorageResult<()> {
        self.inner.job_release(id, epoch).await
    }
    async fn job_reap_expired(&self, limit: u32) -> StorageResult<ReapOutcome> {
        self.inner.job_reap_expired(limit).await
    }
    async fn job_cancel(&self, id: JobId) -> StorageResult<Job> {
        self.inner.job_cancel(id).await
    }
    async fn job_requeue(&self, id: JobId, force: bool) -> StorageResult<Job> {
        self.inner.job_requeue(id, force).await
    }
    async fn job_get(&self, id: JobId) -> StorageResult<Option<Job>> {
        self.inner.job_get(id).await
    }
    async fn job_events(&self, id: JobId) -> StorageResult<Vec<JobEvent>> {
        self.inner.job_events(id).await
    }
    async fn worker_register(&self, worker: WorkerRegistration) -> StorageResult<()> {
        self.inner.worker_register(worker).await
    }
    async fn worker_heartbeat(&self, id: &str, in_flight: u32) -> StorageResult<()> {
        self.inner.worker_heartbeat(id, in_flight).await
    }
    async fn worker_deregister(&self, id: &str) -> StorageResult<()> {
        self.inner.worker_deregister(id).await
    }
    async fn worker_list(&self) -> StorageResult<Vec<WorkerRecord>> {
        self.inner.worker_list().await
    }
    async fn queue_stats(&self) -> StorageResult<Vec<QueueStats>> {
        self.inner.queue_stats().await
    }
    async fn storage_now(&self) -> StorageResult<Timestamp> {
        self.inner.storage_now().await
    }
}
