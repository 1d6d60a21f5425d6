//! `stuckless bench`: enqueue N no-op jobs on a fresh queue and run them with
//! an in-process worker, timing both halves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use stuckless_core::driver::{QueueStatsGet, Storage};
use stuckless_core::{Client, JobContext, JobError, NewJob, Worker};

use crate::ops::Report;

/// What `bench` measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The queue used (fresh per run).
    pub queue: String,
    /// Jobs run.
    pub jobs: u32,
    /// Worker concurrency.
    pub concurrency: u32,
    /// Seconds to enqueue them (batches of 1000).
    pub enqueue_secs: f64,
    /// Seconds from worker start until every job succeeded.
    pub run_secs: f64,
}

impl Report for BenchReport {
    fn human(&self) -> String {
        format!(
            "queue {}: enqueued {} jobs in {:.2}s ({:.0}/s); ran them with concurrency {} in {:.2}s ({:.0} jobs/s)\n",
            self.queue,
            self.jobs,
            self.enqueue_secs,
            f64::from(self.jobs) / self.enqueue_secs.max(1e-9),
            self.concurrency,
            self.run_secs,
            f64::from(self.jobs) / self.run_secs.max(1e-9)
        )
    }
}

/// Runs the benchmark on `storage`.
pub async fn run(storage: Arc<dyn Storage>, jobs: u32, concurrency: u32) -> anyhow::Result<BenchReport> {
    if jobs == 0 || concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    let queue = format!(
        "bench-{}-{}",
        std::process::id(),
        crate::util::wall_now().as_micros()
    );
    let client = Client::new(storage.clone());
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|_| NewJob::new(&queue, "noop", serde_json::json!({})))
            .collect();
        client
            .enqueue_many(batch)
            .await
            .context("enqueueing the benchmark jobs")?;
        left -= n;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();

    let worker = Worker::builder(format!("{queue}-worker"), storage.clone())
        .queues([queue.clone()])
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(200))
        .handler("noop", |_ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()?;
    let shutdown = worker.shutdown_handle();
    let started = Instant::now();
    let running = tokio::spawn(worker.run());
    // Bounded: an hour is far beyond any sane run; the check is one query.
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let stats = storage
            .queue_stats(QueueStatsGet {})
            .await
            .context("reading queue stats")?;
        let done = stats.iter().find(|q| q.queue == queue).map_or(0, |q| q.succeeded);
        if done >= u64::from(jobs) {
            break;
        }
        if Instant::now() > deadline || running.is_finished() {
            shutdown.immediate();
            bail!("benchmark stopped after {done} of {jobs} jobs");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_secs = started.elapsed().as_secs_f64();
    shutdown.graceful();
    running.await.context("worker task")??;
    Ok(BenchReport {
        queue,
        jobs,
        concurrency,
        enqueue_secs,
        run_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stuckless_core::{MemStore, Timestamp, TokioClock};

    #[tokio::test]
    async fn runs_every_job_on_the_model_store() {
        let clock = Arc::new(TokioClock::starting_at(Timestamp::from_secs(1_800_000_000)));
        let store: Arc<dyn Storage> = Arc::new(MemStore::with_clock(clock));
        let report = run(store.clone(), 300, 8).await.unwrap();
        let stats = store.queue_stats(QueueStatsGet {}).await.unwrap();
        assert_eq!(stats[0].succeeded, 300);
        assert!(report.human().contains("300 jobs"));
        assert!(run(store, 0, 1).await.is_err());
    }
}
