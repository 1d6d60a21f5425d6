//! The completer: writes the completions attempts have queued, in batches,
//! with up to `complete_pipeline` batches in flight.
//!
//! An attempt whose handler succeeded hands its completion to the completer
//! and frees its slot at once, so the next job starts while the write is on
//! its way (a slot used to wait for the commit). What the attempt gave up —
//! hearing the verdict — the completer does for it: it records the job
//! completed, or the completion refused as stale, or unconfirmed. Fencing is
//! unchanged: the write is the same fenced `(id, epoch, running)` update, so
//! a completion that arrives after the lease was taken over is refused and
//! the job runs again. The channel in front of the completer is bounded, so
//! completions in flight are bounded too: when it is full, attempts wait to
//! queue theirs, holding their slots.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use super::shared::Shared;
use crate::driver::{CompleteOutcome, JobComplete, JobCompleteMany, StorageResult};
use crate::error::StorageError;
use crate::observer::{AttemptRef, WorkerEvent};
use crate::time::Timestamp;

/// A successful attempt's completion, waiting to be written.
#[derive(Clone, Debug)]
pub(crate) struct QueuedCompletion {
    /// The attempt whose handler succeeded.
    pub attempt: AttemptRef,
    /// How long its handler ran.
    pub run_time: Duration,
    /// Its local lease deadline: past it, a transient failure is not retried
    /// (the reaper reruns the job instead).
    pub deadline: Timestamp,
}

/// Writes queued completions until `stop` fires and everything queued
/// before it is written (or given up on).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut queued: mpsc::Receiver<QueuedCompletion>,
    stop: CancellationToken,
) {
    let max_batch = shared.config.complete_batch;
    let pipeline = shared.config.complete_pipeline;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut stopping = false;
    loop {
        // Start as many batches as the pipeline allows from what is queued.
        while in_flight.len() < pipeline {
            let batch = take_batch(&mut queued, max_batch);
            if batch.is_empty() {
                break;
            }
            in_flight.spawn(write_batch(shared.clone(), batch).in_current_span());
        }
        if stopping && in_flight.is_empty() && queued.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            first = queued.recv(), if in_flight.len() < pipeline => match first {
                Some(first) => {
                    let mut batch = vec![first];
                    batch.extend(take_batch(&mut queued, max_batch - 1));
                    in_flight.spawn(write_batch(shared.clone(), batch).in_current_span());
                }
                None => stopping = true,
            },
            _ = stop.cancelled(), if !stopping => stopping = true,
        }
    }
}

/// Up to `max` completions already queued, without waiting.
fn take_batch(queued: &mut mpsc::Receiver<QueuedCompletion>, max: usize) -> Vec<QueuedCompletion> {
    let mut batch = Vec::new();
    while batch.len() < max {
        match queued.try_recv() {
            Ok(completion) => batch.push(completion),
            Err(_) => break,
        }
    }
    batch
}

/// Writes one batch, retrying the completions whose write failed
/// transiently while their leases may still hold (a reply lost after commit
/// is safe to retry: completion is idempotent per epoch).
async fn write_batch(shared: Arc<Shared>, mut batch: Vec<QueuedCompletion>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let now = shared.now();
        batch.retain(|c| {
            let alive = c.deadline > now;
            if !alive {
                warn!(job_id = %c.attempt.job_id, "completion not confirmed before the lease deadline; the reaper will rerun the job");
            }
            alive
        });
        if batch.is_empty() {
            return;
        }
        let budget = batch
            .iter()
            .map(|c| c.deadline.saturating_since(now))
            .max()
            .unwrap_or_default()
            .min(shared.config.storage_timeout);
        let jobs = batch
            .iter()
            .map(|c| JobComplete {
                id: c.attempt.job_id,
                epoch: c.attempt.epoch,
            })
            .collect();
        let call = shared.storage.job_complete_many(JobCompleteMany { jobs });
        let results = match shared.bounded("job_complete_many", budget, call).await {
            Ok(results) if results.len() == batch.len() => results,
            Ok(results) => {
                let error = StorageError::Other(format!(
                    "complete_many answered {} results for {} jobs",
                    results.len(),
                    batch.len()
                ));
                vec![Err(error); batch.len()]
            }
            Err(error) => vec![Err(error); batch.len()],
        };
        let mut again = Vec::new();
        for (completion, result) in batch.into_iter().zip(results) {
            if let Some(retry) = record(&shared, completion, result) {
                again.push(retry);
            }
        }
        if again.is_empty() {
            return;
        }
        batch = again;
        let left = batch
            .iter()
            .map(|c| c.deadline.saturating_since(shared.now()))
            .max()
            .unwrap_or_default();
        shared.clock.sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Records one completion's verdict; gives the completion back when it
/// should be retried.
fn record(
    shared: &Shared,
    completion: QueuedCompletion,
    result: StorageResult<CompleteOutcome>,
) -> Option<QueuedCompletion> {
    match result {
        Ok(_) => {
            shared.emit(WorkerEvent::Completed {
                attempt: completion.attempt,
                run_time: completion.run_time,
            });
            None
        }
        Err(error) if error.is_lease_lost() => {
            warn!(job_id = %completion.attempt.job_id, %error, "completion refused: the job moved on without us");
            shared.emit(WorkerEvent::StaleWriteRejected {
                attempt: completion.attempt,
                operation: "complete",
            });
            None
        }
        Err(error) if error.is_transient() => Some(completion),
        Err(error) => {
            warn!(job_id = %completion.attempt.job_id, %error, "completion not confirmed; the reaper will rerun the job");
            None
        }
    }
}
