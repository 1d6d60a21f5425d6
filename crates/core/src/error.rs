//! Typed errors of the queue core.

use std::fmt;

use crate::job::{Epoch, JobId, JobStatus};

/// Input that no storage will accept; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field.
    pub field: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ValidationError {
            field,
            reason: reason.into(),
        }
    }
}

/// Why a storage operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// No job has this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The write presented an epoch that is not the job's current one: another
    /// claim has happened since. The write was refused.
    #[error("stale epoch for job {id}: presented {presented}, current {current}")]
    StaleEpoch {
        /// The job.
        id: JobId,
        /// The epoch the caller holds.
        presented: Epoch,
        /// The job's epoch now.
        current: Epoch,
    },
    /// The job is not in a state that allows the operation (e.g. completing a
    /// job that was cancelled or reaped at the same epoch).
    #[error("job {id} is {status}; {operation} needs it {expected}")]
    WrongStatus {
        /// The job.
        id: JobId,
        /// Its status now.
        status: JobStatus,
        /// The refused operation.
        operation: &'static str,
        /// The status(es) the operation needs, in words.
        expected: &'static str,
    },
    /// No worker has this id.
    #[error("worker {0:?} is not registered")]
    WorkerNotFound(String),
    /// Bad input; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The storage could not be reached or did not answer; the operation may or
    /// may not have taken effect. Safe to retry: every operation is fenced or
    /// idempotent.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else the storage reported.
    #[error("storage error: {0}")]
    Other(String),
}

impl StorageError {
    /// Whether the caller has lost the job (fenced out or the job moved on):
    /// retrying the same write can never succeed.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            StorageError::StaleEpoch { .. } | StorageError::WrongStatus { .. } | StorageError::NotFound(_)
        )
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// What a handler reports when a job did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// Try again later; `retry_after` overrides the retry policy's delay (e.g.
    /// an HTTP 429 `Retry-After`).
    Retryable {
        /// Why the attempt failed.
        message: String,
        /// Delay before the next attempt, if the handler knows better.
        retry_after: Option<std::time::Duration>,
    },
    /// Never retry: the job goes straight to dead.
    Permanent {
        /// Why the job can never succeed.
        message: String,
    },
}

impl JobError {
    /// A retryable failure.
    pub fn retryable(message: impl fmt::Display) -> Self {
        JobError::Retryable {
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A retryable failure with a delay chosen by the handler.
    pub fn retry_after(message: impl fmt::Display, after: std::time::Duration) -> Self {
        JobError::Retryable {
            message: message.to_string(),
            retry_after: Some(after),
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError::Permanent {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            JobError::Retryable { message, .. } | JobError::Permanent { message } => message,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retryable { message, .. } => write!(f, "retryable: {message}"),
            JobError::Permanent { message } => write!(f, "permanent: {message}"),
        }
    }
}

impl std::error::Error for JobError {}

/// Why a worker could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is inconsistent.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Registration failed and the worker did not start.
    #[error("could not register worker: {0}")]
    Register(#[source] StorageError),
}
