//! One attempt of one job: run the handler, keep the lease, write the outcome.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::completer::QueuedCompletion;
use super::shared::Shared;
use crate::driver::{FailOutcome, JobFail, JobHeartbeat, JobRelease, StorageResult};
use crate::error::{JobError, StorageError};
use crate::handler::{CancelReason, JobContext};
use crate::job::{ClaimedJob, Job};
use crate::observer::{AttemptRef, WorkerEvent};
use crate::time::Timestamp;

/// Aborts the handler task if the attempt is dropped (a crash of the worker),
/// so no handler outlives the worker that ran it.
struct AbortOnDrop(JoinHandle<Result<(), JobError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum End {
    Finished(Result<Result<(), JobError>, tokio::task::JoinError>),
    Cancelled(CancelReason),
}

/// Runs one claimed job to its end. `claim_sent_at` is when the claim left
/// this worker (its clock): the lease cannot have started earlier, so a local
/// deadline counted from it is conservative whatever the clocks' skew.
pub(crate) async fn run(shared: &Shared, claimed: ClaimedJob, claim_sent_at: Timestamp) {
    let job = claimed.job;
    let span = tracing::info_span!(
        "job",
        job_id = %job.id,
        epoch = %job.epoch,
        attempt = job.attempt,
        kind = %job.kind
    );
    run_inner(shared, job, claim_sent_at).instrument(span).await
}

async fn run_inner(shared: &Shared, job: Job, claim_sent_at: Timestamp) {
    let config = &shared.config;
    let this = AttemptRef {
        job_id: job.id,
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        epoch: job.epoch,
        attempt: job.attempt,
    };
    let pickup_latency = job
        .claimed_at
        .map(|at| at.saturating_since(job.run_at))
        .unwrap_or_default();
    shared.emit(WorkerEvent::Claimed {
        attempt: this.clone(),
        pickup_latency,
    });
    let mut lease_deadline = claim_sent_at + config.lease;

    let Some(handler) = shared.handlers.get(&job.kind).cloned() else {
        let known: Vec<&str> = shared.handlers.keys().map(String::as_str).collect();
        let message = format!(
            "no handler for kind {:?} on worker {} (it handles {:?}); requeue the job once a worker handles it",
            job.kind, config.worker_id, known
        );
        warn!("{message}");
        fail(shared, &this, JobError::permanent(message), lease_deadline).await;
        return;
    };

    // Held until the attempt ends; a job claimed ahead waits for it here.
    let Some(_slot) = wait_for_slot(shared, &this, &mut lease_deadline).await else {
        return;
    };

    let writer = crate::checkpoint::Writer {
        storage: shared.storage.clone(),
        clock: shared.clock.clone(),
        timeout: config.storage_timeout,
    };
    let ctx = JobContext::new(job, Some(writer));
    let started = shared.clock.now();
    let mut handle = AbortOnDrop(tokio::spawn({
        let ctx = ctx.clone();
        async move { handler.handle(ctx).await }.in_current_span()
    }));
    let limit = config.timeout_for(ctx.job());
    let timeout_at = limit.map(|t| started + t);
    let mut next_heartbeat = started + config.heartbeat_interval;

    let end = loop {
        let now = shared.clock.now();
        if now >= lease_deadline {
            break End::Cancelled(CancelReason::LeaseDeadline);
        }
        if timeout_at.is_some_and(|at| now >= at) {
            break End::Cancelled(CancelReason::Timeout);
        }
        if now >= next_heartbeat {
            next_heartbeat = now + config.heartbeat_interval;
            let progress = ctx.take_progress();
            match heartbeat(shared, &this, progress.clone(), &mut lease_deadline).await {
                Beat::Kept => {}
                Beat::Lost => break End::Cancelled(CancelReason::LeaseLost),
                Beat::Unconfirmed => {
                    // A transient failure (a dropped connection) must not wait a
                    // whole interval: three in a row would cost a healthy
                    // worker its lease. Retry at a quarter interval instead.
                    next_heartbeat = shared.clock.now() + config.heartbeat_interval / 4;
                    if let Some(progress) = progress {
                        // Keep it for the next heartbeat unless newer progress came.
                        let _ = ctx
                            .take_progress()
                            .or(Some(progress))
                            .map(|p| ctx.report_progress(p));
                    }
                }
            }
            continue;
        }
        let wake_at = [Some(next_heartbeat), Some(lease_deadline), timeout_at]
            .into_iter()
            .flatten()
            .min()
            .expect("non-empty");
        tokio::select! {
            biased;
            // Only a refused checkpoint cancels the context before the loop
            // ends: the lease is lost, whatever the handler returns next.
            _ = ctx.cancelled() => {
                info!("checkpoint refused: lease lost");
                stale(shared, &this, "checkpoint");
                break End::Cancelled(CancelReason::LeaseLost);
            }
            result = &mut handle.0 => break End::Finished(result),
            _ = shared.release_now.cancelled() => break End::Cancelled(CancelReason::Shutdown),
            _ = shared.clock.sleep(wake_at.saturating_since(now)) => {}
        }
    };
    let run_time = shared.clock.now().saturating_since(started);

    match end {
        End::Finished(Ok(Ok(()))) => complete(shared, &this, run_time, lease_deadline).await,
        End::Finished(Ok(Err(error))) => fail(shared, &this, error, lease_deadline).await,
        End::Finished(Err(join_error)) => {
            let message = panic_message(join_error);
            warn!(%message, "handler panicked");
            shared.emit(WorkerEvent::Panicked {
                attempt: this.clone(),
            });
            fail(
                shared,
                &this,
                JobError::retryable(format!("handler panicked: {message}")),
                lease_deadline,
            )
            .await;
        }
        End::Cancelled(reason) => {
            ctx.cancel(reason);
            stop_handler(shared, handle).await;
            match reason {
                CancelReason::LeaseLost | CancelReason::LeaseDeadline => {
                    warn!(?reason, "handler cancelled; its result will not be written");
                    lost(shared, &this, reason);
                }
                CancelReason::Timeout => {
                    let limit = crate::time::human(limit.unwrap_or_default());
                    warn!(%limit, "handler cancelled: attempt time limit reached");
                    let error = JobError::retryable(format!("timed out after {limit}"));
                    fail(shared, &this, error, lease_deadline).await;
                }
                CancelReason::Shutdown => release(shared, &this, lease_deadline).await,
            }
        }
    }
}

enum Beat {
    /// The storage extended the lease.
    Kept,
    /// The storage refused: another epoch holds the job.
    Lost,
    /// No answer; the lease is kept until the local deadline.
    Unconfirmed,
}

/// Extends the lease once, moving `lease_deadline` when the storage agrees.
async fn heartbeat(
    shared: &Shared,
    this: &AttemptRef,
    progress: Option<serde_json::Value>,
    lease_deadline: &mut Timestamp,
) -> Beat {
    let config = &shared.config;
    let now = shared.clock.now();
    let budget = config.storage_timeout.min(lease_deadline.saturating_since(now));
    let call = shared.storage.job_heartbeat(JobHeartbeat {
        id: this.job_id,
        epoch: this.epoch,
        lease: config.lease,
        progress,
    });
    match shared.bounded("job_heartbeat", budget, call).await {
        Ok(_) => {
            *lease_deadline = now + config.lease;
            Beat::Kept
        }
        Err(error) if error.is_lease_lost() => {
            info!(%error, "heartbeat refused: lease lost");
            stale(shared, this, "heartbeat");
            Beat::Lost
        }
        Err(error) => {
            warn!(%error, "heartbeat failed; retrying soon, lease kept until the local deadline");
            Beat::Unconfirmed
        }
    }
}

/// Waits for a free slot, keeping the lease of a job claimed ahead alive
/// meanwhile. `None` when the job must not run here: shutdown started (the
/// job is released), or the lease was lost or ran out while waiting.
async fn wait_for_slot(
    shared: &Shared,
    this: &AttemptRef,
    lease_deadline: &mut Timestamp,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = shared.slots.clone().try_acquire_owned() {
        return Some(permit);
    }
    let config = &shared.config;
    // Timed by sleeps, not by readings of `now`: a clock that jumps back
    // (NTP, a restored VM) must not stretch a lease the storage has already
    // ended, or a job another epoch has since run and checkpointed would
    // start here again from the checkpoint this claim saw.
    let mut lease_left = shared
        .clock
        .sleep(lease_deadline.saturating_since(shared.clock.now()));
    let mut beat_in = config.heartbeat_interval;
    loop {
        tokio::select! {
            biased;
            _ = shared.release_buffered.cancelled() => {
                release(shared, this, *lease_deadline).await;
                return None;
            }
            // Before the slot: a worker waking from a pause with both ready
            // must not start a job whose lease is gone.
            _ = &mut lease_left => {
                warn!("claimed ahead, but no slot freed before the lease deadline; the reaper will take the job back");
                lost(shared, this, CancelReason::LeaseDeadline);
                return None;
            }
            permit = shared.slots.clone().acquire_owned() => {
                return Some(permit.expect("the slots semaphore is never closed"));
            }
            _ = shared.clock.sleep(beat_in) => {}
        }
        match heartbeat(shared, this, None, lease_deadline).await {
            Beat::Kept => {
                beat_in = config.heartbeat_interval;
                lease_left = shared
                    .clock
                    .sleep(lease_deadline.saturating_since(shared.clock.now()));
            }
            Beat::Lost => {
                lost(shared, this, CancelReason::LeaseLost);
                return None;
            }
            Beat::Unconfirmed => beat_in = config.heartbeat_interval / 4,
        }
    }
}

fn lost(shared: &Shared, this: &AttemptRef, reason: CancelReason) {
    shared.emit(WorkerEvent::LeaseLost {
        attempt: this.clone(),
        reason,
    });
}

/// Gives a cancelled handler `cancel_grace` to return, then aborts it.
async fn stop_handler(shared: &Shared, mut handle: AbortOnDrop) {
    tokio::select! {
        biased;
        _ = &mut handle.0 => {}
        _ = shared.clock.sleep(shared.config.cancel_grace) => {}
    }
    drop(handle);
}

fn stale(shared: &Shared, this: &AttemptRef, operation: &'static str) {
    shared.emit(WorkerEvent::StaleWriteRejected {
        attempt: this.clone(),
        operation,
    });
}

/// Retries a fenced write while the storage is unavailable and the lease may
/// still be ours. A reply lost after commit is safe to retry: completion is
/// idempotent per epoch, and other writes are refused as stale.
async fn write<T, F, Fut>(
    shared: &Shared,
    operation: &'static str,
    deadline: Timestamp,
    mut call: F,
) -> StorageResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StorageResult<T>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_since(shared.clock.now());
        if left.is_zero() {
            return Err(StorageError::Unavailable(format!(
                "{operation} not confirmed before the lease deadline"
            )));
        }
        match shared
            .bounded(operation, shared.config.storage_timeout.min(left), call())
            .await
        {
            Err(error) if error.is_transient() => {
                shared.clock.sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

/// Queues the completion for the completer and returns, freeing the slot:
/// the completer records whether the storage accepted it. Waits only while
/// the completer's queue is full.
async fn complete(shared: &Shared, this: &AttemptRef, run_time: Duration, deadline: Timestamp) {
    let completion = QueuedCompletion {
        attempt: this.clone(),
        run_time,
        deadline,
    };
    if shared.completions.send(completion).await.is_err() {
        warn!("completion not queued: the worker is stopping; the reaper will rerun the job");
    }
}

async fn fail(shared: &Shared, this: &AttemptRef, error: JobError, deadline: Timestamp) {
    let retry_after = match &error {
        JobError::Retryable { retry_after, .. } => {
            Some(retry_after.unwrap_or_else(|| shared.retry_delay(this.attempt)))
        }
        JobError::Permanent { .. } => None,
    };
    let message = error.message().to_owned();
    let request = JobFail {
        id: this.job_id,
        epoch: this.epoch,
        error: message.clone(),
        retry_after,
    };
    let result = write(shared, "job_fail", deadline, || {
        shared.storage.job_fail(request.clone())
    })
    .await;
    match result {
        Ok(FailOutcome::Retried { run_at }) => {
            info!(%run_at, error = %message, "attempt failed; will retry");
            // No NOTIFY announces a retry becoming due: claim again then
            // ourselves rather than at the next poll, up to a minute later.
            // Counted from the reply, which came after the storage set
            // run_at, so the claim does not come early.
            if let Some(delay) = retry_after {
                shared.retry_due_at(shared.now() + delay);
            }
            shared.emit(WorkerEvent::Retried {
                attempt: this.clone(),
                error: message,
            });
        }
        Ok(FailOutcome::Dead) => {
            warn!(error = %message, "attempt failed; job is dead");
            shared.emit(WorkerEvent::Dead {
                attempt: this.clone(),
                error: message,
            });
        }
        Err(store_error) if store_error.is_lease_lost() => stale(shared, this, "fail"),
        Err(store_error) => warn!(%store_error, "failure not recorded; the reaper will take the job back"),
    }
}

async fn release(shared: &Shared, this: &AttemptRef, lease_deadline: Timestamp) {
    // Shutdown must end promptly: try for one storage timeout at most.
    let deadline = lease_deadline.min(shared.clock.now() + shared.config.storage_timeout);
    let result = write(shared, "job_release", deadline, || {
        shared.storage.job_release(JobRelease {
            id: this.job_id,
            epoch: this.epoch,
        })
    })
    .await;
    match result {
        Ok(()) => {
            info!("released at shutdown");
            shared.emit(WorkerEvent::Released {
                attempt: this.clone(),
            });
        }
        Err(error) if error.is_lease_lost() => stale(shared, this, "release"),
        Err(error) => warn!(%error, "release not confirmed; the reaper will take the job back"),
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_owned()),
        Err(error) => error.to_string(),
    }
}
