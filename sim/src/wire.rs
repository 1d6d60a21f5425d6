//! The request/response protocol between storage clients and the db host:
//! one length-prefixed JSON frame per message.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stuckless_core::{
    ClaimRequest, ClaimedJob, CompleteOutcome, Epoch, FailOutcome, FailRequest, InsertOutcome, Job, JobEvent,
    JobId, JobStatus, NewJob, QueueStats, ReapOutcome, StorageError, Timestamp, ValidationError,
    WorkerRecord, WorkerRegistration,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted; anything bigger is a protocol error.
const MAX_FRAME: u32 = 8 * 1024 * 1024;

/// A call from a client, tagged with the calling host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The calling host (worker id or "producer").
    pub from: String,
    /// The call.
    pub request: Request,
}

/// One storage operation, or a subscription to wake-ups.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Request {
    Insert(NewJob),
    InsertMany(Vec<NewJob>),
    Claim(ClaimRequest),
    Heartbeat {
        id: JobId,
        epoch: Epoch,
        lease: Duration,
        progress: Option<Value>,
    },
    Complete {
        id: JobId,
        epoch: Epoch,
    },
    CompleteMany(Vec<(JobId, Epoch)>),
    Fail {
        id: JobId,
        epoch: Epoch,
        request: FailRequest,
    },
    Release {
        id: JobId,
        epoch: Epoch,
    },
    Reap {
        limit: u32,
    },
    Cancel(JobId),
    Requeue {
        id: JobId,
        force: bool,
    },
    Get(JobId),
    Events(JobId),
    Register(WorkerRegistration),
    WorkerHeartbeat {
        id: String,
        in_flight: u32,
    },
    Deregister(String),
    Workers,
    Stats,
    Now,
    /// Keep this connection open and send one byte per wake-up (LISTEN).
    Listen,
}

impl Request {
    /// A short name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Insert(_) => "insert",
            Request::InsertMany(_) => "insert_many",
            Request::Claim(_) => "claim",
            Request::Heartbeat { .. } => "heartbeat",
            Request::Complete { .. } => "complete",
            Request::CompleteMany(_) => "complete_many",
            Request::Fail { .. } => "fail",
            Request::Release { .. } => "release",
            Request::Reap { .. } => "reap",
            Request::Cancel(_) => "cancel",
            Request::Requeue { .. } => "requeue",
            Request::Get(_) => "get",
            Request::Events(_) => "events",
            Request::Register(_) => "register",
            Request::WorkerHeartbeat { .. } => "worker_heartbeat",
            Request::Deregister(_) => "deregister",
            Request::Workers => "workers",
            Request::Stats => "stats",
            Request::Now => "now",
            Request::Listen => "listen",
        }
    }
}

/// The db host's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Response {
    Inserted(InsertOutcome),
    InsertedMany(Vec<InsertOutcome>),
    Claimed(Vec<ClaimedJob>),
    Time(Timestamp),
    Completed(CompleteOutcome),
    CompletedMany(Vec<Result<CompleteOutcome, WireError>>),
    Failed(FailOutcome),
    Done,
    Reaped(ReapOutcome),
    Job(Job),
    MaybeJob(Option<Job>),
    Events(Vec<JobEvent>),
    Workers(Vec<WorkerRecord>),
    Stats(Vec<QueueStats>),
    Error(WireError),
}

/// A [`StorageError`] that can cross the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WireError {
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
    Invalid {
        field: String,
        reason: String,
    },
    Unavailable(String),
    Other(String),
}

impl From<StorageError> for WireError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(id) => WireError::NotFound(id),
            StorageError::StaleEpoch {
                id,
                presented,
                current,
            } => WireError::StaleEpoch {
                id,
                presented,
                current,
            },
            StorageError::WrongStatus {
                id,
                status,
                operation,
                expected,
            } => WireError::WrongStatus {
                id,
                status,
                operation: operation.to_owned(),
                expected: expected.to_owned(),
            },
            StorageError::WorkerNotFound(w) => WireError::WorkerNotFound(w),
            StorageError::Invalid(v) => WireError::Invalid {
                field: v.field.to_owned(),
                reason: v.reason,
            },
            StorageError::Unavailable(m) => WireError::Unavailable(m),
            StorageError::Other(m) => WireError::Other(m),
        }
    }
}

/// Maps a wire string back to one of the `'static` names core uses; the
/// error's meaning survives even if the name is not a known one.
fn static_name(name: &str) -> &'static str {
    const KNOWN: [&str; 16] = [
        "complete",
        "fail",
        "heartbeat",
        "release",
        "cancel",
        "requeue",
        "running",
        "queued or running",
        "queue",
        "kind",
        "payload",
        "progress",
        "worker_id",
        "max_attempts",
        "idempotency_key",
        "status",
    ];
    KNOWN.iter().find(|k| **k == name).copied().unwrap_or("operation")
}

impl From<WireError> for StorageError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound(id) => StorageError::NotFound(id),
            WireError::StaleEpoch {
                id,
                presented,
                current,
            } => StorageError::StaleEpoch {
                id,
                presented,
                current,
            },
            WireError::WrongStatus {
                id,
                status,
                operation,
                expected,
            } => StorageError::WrongStatus {
                id,
                status,
                operation: static_name(&operation),
                expected: static_name(&expected),
            },
            WireError::WorkerNotFound(w) => StorageError::WorkerNotFound(w),
            WireError::Invalid { field, reason } => {
                StorageError::Invalid(ValidationError::new(static_name(&field), reason))
            }
            WireError::Unavailable(m) => StorageError::Unavailable(m),
            WireError::Other(m) => StorageError::Other(m),
        }
    }
}

/// Writes one frame: a big-endian u32 length, then JSON.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    w.write_u32(bytes.len() as u32).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads one frame written by [`write_frame`].
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<T> {
    let len = r.read_u32().await?;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0; len as usize];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
