//! Job handlers and what they are given.

use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointError, Checkpointer, Writer};
use crate::error::JobError;
use crate::job::{Epoch, Job, JobId};
use crate::time::Timestamp;

/// Runs jobs of one kind.
///
/// A handler should watch [`JobContext::cancelled`] and return soon after it
/// fires: the runtime stops waiting for it after a short grace and aborts it.
/// Its result is then ignored. A panic counts as a retryable failure.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of the job.
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        (self)(ctx).await
    }
}

/// Why a handler was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The storage refused a heartbeat or a checkpoint: another worker owns
    /// the job now, or it was cancelled.
    LeaseLost,
    /// No heartbeat succeeded for a whole lease, judged on the worker's clock:
    /// the lease must be presumed lost.
    LeaseDeadline,
    /// The job ran past its kind's timeout.
    Timeout,
    /// The worker is shutting down and the grace period ran out.
    Shutdown,
}

/// Everything a handler gets for one attempt.
#[derive(Clone)]
pub struct JobContext {
    job: Arc<Job>,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
    progress: Arc<Mutex<Option<Value>>>,
    checkpoints: Arc<Checkpointer>,
}

impl JobContext {
    /// The context of one attempt of `job`; its checkpoints go to `writer`.
    pub(crate) fn new(job: Job, writer: Option<Writer>) -> Self {
        let checkpoints = Checkpointer::new(job.id, job.epoch, job.checkpoint.clone(), writer);
        JobContext {
            job: Arc::new(job),
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            progress: Arc::new(Mutex::new(None)),
            checkpoints: Arc::new(checkpoints),
        }
    }

    /// The job as claimed.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// The raw payload.
    pub fn payload(&self) -> &Value {
        &self.job.payload
    }

    /// The payload decoded as `T`; a payload of the wrong shape is a permanent
    /// error, since retrying cannot fix it.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.job.payload.clone())
            .map_err(|e| JobError::permanent(format!("malformed payload for kind {:?}: {e}", self.job.kind)))
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.job.attempt
    }

    /// The fencing epoch this attempt holds.
    pub fn epoch(&self) -> Epoch {
        self.job.epoch
    }

    /// Records progress; it is stored with the next heartbeat.
    pub fn report_progress(&self, progress: Value) {
        *self.progress.lock().expect("progress lock") = Some(progress);
    }

    /// Saves `value` as the job's checkpoint, under this attempt's fence, and
    /// waits for the storage to acknowledge it: once this returns `Ok`, any
    /// later attempt (after a crash, a release, a reap or a retry) starts
    /// from it ([`last_checkpoint`](Self::last_checkpoint)). At most
    /// [`limits::MAX_CHECKPOINT_BYTES`](crate::limits::MAX_CHECKPOINT_BYTES)
    /// as JSON. Returns when it was saved (storage clock).
    ///
    /// A refusal means another attempt holds the job: this attempt is then
    /// cancelled like one whose lease was lost ([`CancelReason::LeaseLost`])
    /// and [`CheckpointError::LeaseLost`] returned; stop. A storage that did
    /// not answer gives [`CheckpointError::Unavailable`]; the lease is still
    /// held, and the handler may go on or retry.
    pub async fn checkpoint(&self, value: Value) -> Result<Timestamp, CheckpointError> {
        let result = self.checkpoints.save(value).await;
        if let Err(CheckpointError::LeaseLost(_)) = &result {
            self.cancel(CancelReason::LeaseLost);
        }
        result
    }

    /// [`checkpoint`](Self::checkpoint) of any serialisable value.
    pub async fn checkpoint_as<T: Serialize>(&self, value: &T) -> Result<Timestamp, CheckpointError> {
        let value = serde_json::to_value(value).map_err(CheckpointError::Serialize)?;
        self.checkpoint(value).await
    }

    /// The latest checkpoint: the one this attempt saved last, or else the
    /// one an earlier attempt left; `None` when no attempt saved one.
    pub fn last_checkpoint(&self) -> Option<Value> {
        self.checkpoints.latest()
    }

    /// [`last_checkpoint`](Self::last_checkpoint) decoded as `T`; one of
    /// another shape is [`CheckpointError::Decode`] (a permanent
    /// [`JobError`] through `?`).
    pub fn last_checkpoint_as<T: DeserializeOwned>(&self) -> Result<Option<T>, CheckpointError> {
        self.last_checkpoint()
            .map(|value| {
                serde_json::from_value(value).map_err(|source| CheckpointError::Decode {
                    job: self.job.id,
                    source,
                })
            })
            .transpose()
    }

    /// Completes when the attempt must stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the attempt must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the attempt was asked to stop, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        *self.reason.lock().expect("reason lock")
    }

    pub(crate) fn cancel(&self, reason: CancelReason) {
        let mut slot = self.reason.lock().expect("reason lock");
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.cancel.cancel();
    }

    pub(crate) fn take_progress(&self) -> Option<Value> {
        self.progress.lock().expect("progress lock").take()
    }
}
