//! The job model and its state machine.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;
use crate::validate::{validate_json, validate_name, validate_timeout, ValidationError};

/// A job's identity: assigned by the storage, increasing in insertion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(JobId)
    }
}

/// The fencing token of a lease: bumped by every claim of the job.
///
/// Every write after a claim presents the epoch it was claimed at; the storage
/// rejects a write whose epoch is not the job's current one, so a worker that
/// was paused or partitioned away can never overwrite its successor's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub i64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life.
///
/// ```text
/// queued ──claim──▶ running ──complete──▶ succeeded
///   ▲                 │  │ └──fail (attempts left)/reap/release──▶ queued
///   │                 │  └──fail permanent / attempts used up──▶ dead
///   └── requeue ◀── dead          cancel (queued|running) ──▶ cancelled
/// ```
///
/// `succeeded`, `dead` and `cancelled` are terminal: the queue never moves a
/// job out of them. The one exception is an operator's explicit
/// [`job_requeue`](crate::Storage::job_requeue) of a dead job, which is
/// recorded in the job's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for `run_at` and a free worker.
    Queued,
    /// Leased to a worker.
    Running,
    /// Completed successfully. Terminal.
    Succeeded,
    /// Failed permanently or ran out of attempts. Terminal.
    Dead,
    /// Cancelled by a caller. Terminal.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    /// Whether the queue will never change this job again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
        )
    }

    /// The lowercase name used in SQL and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the state machine allows `self → to` by the queue's own operations
    /// (operator requeue of a dead job excepted).
    pub fn may_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Queued)
                | (Running, Dead)
                | (Running, Cancelled)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ValidationError::new("status", format!("unknown status {s:?}")))
    }
}

/// A job as stored: the row, including its latest attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Identity, increasing in insertion order.
    pub id: JobId,
    /// The queue workers claim from.
    pub queue: String,
    /// Selects the handler.
    pub kind: String,
    /// Handler input.
    pub payload: Value,
    /// Higher runs first among due jobs.
    pub priority: i16,
    /// Not claimable before this time (storage clock).
    pub run_at: Timestamp,
    /// Lifecycle state.
    pub status: JobStatus,
    /// Claims so far that counted (a graceful release gives its attempt back).
    pub attempt: i32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: i32,
    /// Fencing token of the latest claim; 0 before the first claim.
    pub epoch: Epoch,
    /// Worker holding or last holding the lease.
    pub lease_owner: Option<String>,
    /// When the current lease runs out (storage clock); set only while running.
    pub lease_expires_at: Option<Timestamp>,
    /// When the latest attempt was claimed.
    pub claimed_at: Option<Timestamp>,
    /// Latest successful heartbeat of the latest attempt.
    pub heartbeat_at: Option<Timestamp>,
    /// Latest progress the handler reported. A JSON `null` is a value here,
    /// distinct from no progress, on the wire too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::some_json"
    )]
    pub progress: Option<Value>,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Deduplicates enqueues: one job per key.
    pub idempotency_key: Option<String>,
    /// Insertion time.
    pub created_at: Timestamp,
    /// Time of the latest change.
    pub updated_at: Timestamp,
    /// When the job became terminal.
    pub finished_at: Option<Timestamp>,
    /// Time limit on one attempt, when the job sets its own; otherwise the
    /// worker's limit for the kind applies. In JSON: `timeout_us`, whole
    /// microseconds, like the column.
    #[serde(default, rename = "timeout_us", with = "crate::time::micros_opt")]
    pub timeout: Option<Duration>,
    /// The latest checkpoint any attempt saved (see
    /// [`JobContext::checkpoint`](crate::JobContext::checkpoint)): kept
    /// across claims, retries, reaps, releases and requeues, so the next
    /// attempt resumes from it. A JSON `null` is a value here, on the wire too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::some_json"
    )]
    pub checkpoint: Option<Value>,
    /// When the checkpoint was saved (storage clock).
    #[serde(default)]
    pub checkpointed_at: Option<Timestamp>,
}

pub use crate::validate::limits;

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Queue name: 1 to 128 bytes of ASCII letters, digits, `_ - . :`.
    pub queue: String,
    /// Kind name: same rules as the queue.
    pub kind: String,
    /// Handler input; at most 1 MiB as JSON; strings may not contain NUL.
    pub payload: Value,
    /// Higher runs first. Default 0.
    pub priority: i16,
    /// Earliest run time; `None` means now (storage clock).
    pub run_at: Option<Timestamp>,
    /// Attempts before dead, 1 to 1000. Default 5.
    pub max_attempts: i32,
    /// One job per key: enqueueing a key again returns the existing job.
    pub idempotency_key: Option<String>,
    /// Time limit on one attempt, 1 µs to 7 days; `None` leaves it to the
    /// worker (its limit for the kind, else its default of 15 minutes). In
    /// JSON: `timeout_us`, whole microseconds.
    #[serde(default, rename = "timeout_us", with = "crate::time::micros_opt")]
    pub timeout: Option<Duration>,
}

impl NewJob {
    /// A job of `kind` on `queue` with `payload` and every other field default.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: limits::DEFAULT_MAX_ATTEMPTS,
            idempotency_key: None,
            timeout: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the earliest run time.
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the time limit on each attempt.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Checks every field against [`limits`]: the only way to get the
    /// [`ValidJob`] a storage inserts.
    pub fn validate(self) -> Result<ValidJob, ValidationError> {
        self.check()?;
        Ok(ValidJob(self))
    }

    /// Checks every field against [`limits`] without consuming the job.
    pub fn check(&self) -> Result<(), ValidationError> {
        validate_name("queue", &self.queue)?;
        validate_name("kind", &self.kind)?;
        validate_json("payload", &self.payload, limits::MAX_PAYLOAD_BYTES)?;
        if !(1..=limits::MAX_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ValidationError::new(
                "max_attempts",
                format!(
                    "must be between 1 and {}, got {}",
                    limits::MAX_MAX_ATTEMPTS,
                    self.max_attempts
                ),
            ));
        }
        if let Some(at) = self.run_at {
            if !(limits::MIN_TIMESTAMP_MICROS..=limits::MAX_TIMESTAMP_MICROS).contains(&at.as_micros()) {
                return Err(ValidationError::new(
                    "run_at",
                    format!(
                        "must be between years 1 and 9999, got {} microseconds since 1970",
                        at.as_micros()
                    ),
                ));
            }
        }
        if let Some(limit) = self.timeout {
            validate_timeout("timeout", limit)?;
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > limits::MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(ValidationError::new(
                    "idempotency_key",
                    format!(
                        "must be 1 to {} bytes, got {}",
                        limits::MAX_IDEMPOTENCY_KEY_BYTES,
                        key.len()
                    ),
                ));
            }
            if key.contains('\0') {
                return Err(ValidationError::new(
                    "idempotency_key",
                    "contains a NUL character",
                ));
            }
        }
        Ok(())
    }
}

/// Reads a present JSON value, `null` included, as `Some`: serde would read
/// a `null` into `Option<Value>` as `None` and lose a stored JSON null.
/// Guards the gap the simulator's conformance run over its network found.
pub(crate) fn some_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A [`NewJob`] that passed [`NewJob::validate`]: the only input a storage's
/// insert accepts, so none can forget the checks. Deserializing one checks
/// it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NewJob", into = "NewJob")]
pub struct ValidJob(NewJob);

impl ValidJob {
    /// The job's fields.
    pub fn get(&self) -> &NewJob {
        &self.0
    }

    /// The job's fields, by value.
    pub fn into_inner(self) -> NewJob {
        self.0
    }
}

impl std::ops::Deref for ValidJob {
    type Target = NewJob;
    fn deref(&self) -> &NewJob {
        &self.0
    }
}

impl TryFrom<NewJob> for ValidJob {
    type Error = ValidationError;
    fn try_from(job: NewJob) -> Result<Self, ValidationError> {
        job.validate()
    }
}

impl From<ValidJob> for NewJob {
    fn from(job: ValidJob) -> NewJob {
        job.0
    }
}

/// Shortens an error message to [`limits::MAX_ERROR_BYTES`] on a char boundary
/// and strips NUL, so any storage can keep it.
pub fn clamp_error(message: &str) -> String {
    let cleaned: String = message.chars().filter(|c| *c != '\0').collect();
    if cleaned.len() <= limits::MAX_ERROR_BYTES {
        return cleaned;
    }
    let mut end = limits::MAX_ERROR_BYTES;
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    cleaned[..end].to_string()
}

/// What happened to a job, appended to its timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEventKind {
    /// Inserted (recorded only when happy-path events are on).
    Inserted,
    /// Claimed by a worker (happy path).
    Claimed,
    /// Completed (happy path).
    Completed,
    /// An attempt failed and the job will run again.
    Retried,
    /// The job became dead.
    Dead,
    /// The lease expired and the reaper took the job back.
    Reaped,
    /// A worker gave the job back unfinished (graceful shutdown).
    Released,
    /// Cancelled.
    Cancelled,
    /// An operator requeued the job.
    Requeued,
}

impl JobEventKind {
    /// The lowercase name used in SQL and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEventKind::Inserted => "inserted",
            JobEventKind::Claimed => "claimed",
            JobEventKind::Completed => "completed",
            JobEventKind::Retried => "retried",
            JobEventKind::Dead => "dead",
            JobEventKind::Reaped => "reaped",
            JobEventKind::Released => "released",
            JobEventKind::Cancelled => "cancelled",
            JobEventKind::Requeued => "requeued",
        }
    }

    /// Whether this event is recorded only when happy-path logging is on.
    pub fn is_happy_path(self) -> bool {
        matches!(
            self,
            JobEventKind::Inserted | JobEventKind::Claimed | JobEventKind::Completed
        )
    }
}

impl fmt::Display for JobEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobEventKind {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use JobEventKind::*;
        [
            Inserted, Claimed, Completed, Retried, Dead, Reaped, Released, Cancelled, Requeued,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| ValidationError::new("event kind", format!("unknown event kind {s:?}")))
    }
}

/// One entry of a job's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// When (storage clock).
    pub at: Timestamp,
    /// What happened.
    pub kind: JobEventKind,
    /// The job's epoch when it happened.
    pub epoch: Epoch,
    /// The job's attempt count after it happened.
    pub attempt: i32,
    /// The worker involved, if any.
    pub worker_id: Option<String>,
    /// An error message or a reason.
    pub detail: Option<String>,
}

/// A job handed to a worker by a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimedJob {
    /// The job as it stands after the claim.
    pub job: Job,
}

impl ClaimedJob {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The epoch this claim holds.
    pub fn epoch(&self) -> Epoch {
        self.job.epoch
    }
}

#[cfg(test)]
mod tests;
