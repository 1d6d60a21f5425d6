//! Typed errors of the queue core.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job::{Epoch, JobId, JobStatus};
use crate::validate::intern;
pub use crate::validate::ValidationError;

/// Why a storage operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(into = "OwnedStorageError")]
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

/// [`StorageError`] with owned names, as it crosses a wire.
#[derive(Serialize, Deserialize)]
enum OwnedStorageError {
    NotFound(JobId),
    StaleEpoch {
        id: JobId,
        presented: Epoch,
        current: Epoch,
    },
    WrongStatus {
        id: JobId,
        status: JobStatus,
        operation: String,
        expected: String,
    },
    WorkerNotFound(String),
    Invalid(ValidationError),
    Unavailable(String),
    Other(String),
}

impl From<OwnedStorageError> for StorageError {
    fn from(e: OwnedStorageError) -> Self {
        match e {
            OwnedStorageError::NotFound(id) => StorageError::NotFound(id),
            OwnedStorageError::StaleEpoch {
                id,
                presented,
                current,
            } => StorageError::StaleEpoch {
                id,
                presented,
                current,
            },
            OwnedStorageError::WrongStatus {
                id,
                status,
                operation,
                expected,
            } => StorageError::WrongStatus {
                id,
                status,
                operation: intern(&operation),
                expected: intern(&expected),
            },
            OwnedStorageError::WorkerNotFound(w) => StorageError::WorkerNotFound(w),
            OwnedStorageError::Invalid(v) => StorageError::Invalid(v),
            OwnedStorageError::Unavailable(m) => StorageError::Unavailable(m),
            OwnedStorageError::Other(m) => StorageError::Other(m),
        }
    }
}

impl From<StorageError> for OwnedStorageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(id) => OwnedStorageError::NotFound(id),
            StorageError::StaleEpoch {
                id,
                presented,
                current,
            } => OwnedStorageError::StaleEpoch {
                id,
                presented,
                current,
            },
            StorageError::WrongStatus {
                id,
                status,
                operation,
                expected,
            } => OwnedStorageError::WrongStatus {
                id,
                status,
                operation: operation.to_owned(),
                expected: expected.to_owned(),
            },
            StorageError::WorkerNotFound(w) => OwnedStorageError::WorkerNotFound(w),
            StorageError::Invalid(v) => OwnedStorageError::Invalid(v),
            StorageError::Unavailable(m) => OwnedStorageError::Unavailable(m),
            StorageError::Other(m) => OwnedStorageError::Other(m),
        }
    }
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

// Derived by hand: serde would tie a derived impl's `'de` to the `'static`
// names inside.
impl<'de> Deserialize<'de> for StorageError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OwnedStorageError::deserialize(d).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker retries exactly the transient errors and gives up the job
    /// on exactly the lease-lost ones; a wrong class either way strands or
    /// duplicates work (cargo-mutants found no test pinning `is_transient`).
    #[test]
    fn only_unavailable_is_transient_and_only_fencing_refusals_lose_the_lease() {
        let id = JobId(7);
        let lease_lost = [
            StorageError::NotFound(id),
            StorageError::StaleEpoch {
                id,
                presented: Epoch(1),
                current: Epoch(2),
            },
            StorageError::WrongStatus {
                id,
                status: JobStatus::Queued,
                operation: "complete",
                expected: "running",
            },
        ];
        for error in &lease_lost {
            assert!(error.is_lease_lost(), "{error}");
            assert!(!error.is_transient(), "{error}");
        }
        let unavailable = StorageError::Unavailable("connection reset".into());
        assert!(unavailable.is_transient());
        assert!(!unavailable.is_lease_lost());
        for error in [
            StorageError::Other("boom".into()),
            StorageError::WorkerNotFound("w".into()),
        ] {
            assert!(!error.is_transient(), "{error}");
            assert!(!error.is_lease_lost(), "{error}");
        }
    }
}
