//! Checkpoints: the state a resumable job saves as it goes, written under
//! its attempt's epoch fence and handed to the next attempt.
//!
//! A claim clears `progress` (it describes one attempt) but keeps the
//! checkpoint, and a release, reap, retry or requeue keeps it too, so a long
//! job interrupted by a scale-in or a crash resumes where its last
//! acknowledged checkpoint left it instead of paying for its work twice.
//! A zombie's checkpoint is refused like any write by a stale epoch: it can
//! never overwrite the state of the attempt that took its job over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::clock::Clock;
use crate::driver::{JobCheckpoint, Storage};
use crate::error::{JobError, StorageError, ValidationError};
use crate::job::{Epoch, JobId};
use crate::time::Timestamp;

/// Why [`JobContext::checkpoint`](crate::JobContext::checkpoint) did not
/// save a checkpoint, or why a saved one could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The value could not be turned into JSON.
    #[error("checkpoint is not serialisable as JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The checkpoint is too large (over
    /// [`limits::MAX_CHECKPOINT_BYTES`](crate::limits::MAX_CHECKPOINT_BYTES))
    /// or holds a NUL character; nothing was written.
    #[error(transparent)]
    Invalid(ValidationError),
    /// The storage refused it: another attempt holds the job now, or it was
    /// cancelled. The attempt is cancelled like one whose lease was lost;
    /// the handler should stop, its result will not be written.
    #[error("checkpoint refused, the lease is lost: {0}")]
    LeaseLost(#[source] StorageError),
    /// The storage did not answer in time or failed; the checkpoint may or
    /// may not be saved. The lease is still held: the handler may go on.
    #[error("checkpoint not confirmed: {0}")]
    Unavailable(#[source] StorageError),
    /// The saved checkpoint does not have the shape asked for.
    #[error("checkpoint of job {job} has an unexpected shape: {source}")]
    Decode {
        /// The job.
        job: JobId,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl From<CheckpointError> for JobError {
    /// A checkpoint that can never be written or read (too large, not JSON,
    /// the wrong shape) fails the job for good; the others are retryable.
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::Serialize(_) | CheckpointError::Invalid(_) | CheckpointError::Decode { .. } => {
                JobError::permanent(error)
            }
            CheckpointError::LeaseLost(_) | CheckpointError::Unavailable(_) => JobError::retryable(error),
        }
    }
}

/// Writes one attempt's checkpoints: its storage, its fence and the latest
/// value saved (what [`JobContext::last_checkpoint`](crate::JobContext::last_checkpoint)
/// answers).
pub(crate) struct Checkpointer {
    id: JobId,
    epoch: Epoch,
    writer: Option<Writer>,
    latest: Mutex<Option<Value>>,
}

/// Where checkpoints go: the worker's storage, and how long one write may take.
pub(crate) struct Writer {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
}

impl Checkpointer {
    /// The checkpointer of the attempt holding `(id, epoch)`, starting from
    /// the checkpoint the claim handed over. With no writer, every write is
    /// refused as unavailable.
    pub(crate) fn new(id: JobId, epoch: Epoch, claimed: Option<Value>, writer: Option<Writer>) -> Self {
        Checkpointer {
            id,
            epoch,
            writer,
            latest: Mutex::new(claimed),
        }
    }

    /// The latest checkpoint: the one saved by this attempt, or else the
    /// one the claim handed over.
    pub(crate) fn latest(&self) -> Option<Value> {
        self.latest.lock().expect("checkpoint lock").clone()
    }

    /// Saves `value` under the fence, bounded by the writer's timeout.
    pub(crate) async fn save(&self, value: Value) -> Result<Timestamp, CheckpointError> {
        let request = JobCheckpoint {
            id: self.id,
            epoch: self.epoch,
            checkpoint: value,
        };
        request.validate().map_err(CheckpointError::Invalid)?;
        let Some(writer) = &self.writer else {
            return Err(CheckpointError::Unavailable(StorageError::Unavailable(
                "this job context has no storage to save checkpoints to".into(),
            )));
        };
        let value = request.checkpoint.clone();
        let result = tokio::select! {
            biased;
            result = writer.storage.job_checkpoint(request) => result,
            _ = writer.clock.sleep(writer.timeout) => Err(StorageError::Unavailable(format!(
                "job_checkpoint timed out after {}", crate::time::human(writer.timeout)
            ))),
        };
        match result {
            Ok(at) => {
                *self.latest.lock().expect("checkpoint lock") = Some(value);
                Ok(at)
            }
            Err(StorageError::Invalid(invalid)) => Err(CheckpointError::Invalid(invalid)),
            Err(error) if error.is_lease_lost() => Err(CheckpointError::LeaseLost(error)),
            Err(error) => Err(CheckpointError::Unavailable(error)),
        }
    }
}
