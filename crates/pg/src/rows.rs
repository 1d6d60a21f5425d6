//! Column lists and row decoding shared by every statement.

use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use stuckless_core::driver::WorkerRecord;
use stuckless_core::{Epoch, Job, JobEvent, JobEventKind, JobId, JobStatus, StorageError, Timestamp};

/// The job columns every statement returns, timestamps as bigint microseconds.
/// A macro so statements can be assembled with `concat!` into `&'static str`.
macro_rules! job_cols {
    () => {
        "id, queue, kind, payload, priority, stuckless.to_micros(run_at) as run_at, status, attempt, \
         max_attempts, epoch, lease_owner, stuckless.to_micros(lease_expires_at) as lease_expires_at, \
         stuckless.to_micros(claimed_at) as claimed_at, stuckless.to_micros(heartbeat_at) as heartbeat_at, \
         progress, last_error, idempotency_key, stuckless.to_micros(created_at) as created_at, \
         stuckless.to_micros(updated_at) as updated_at, stuckless.to_micros(finished_at) as finished_at, \
         timeout_us, checkpoint, stuckless.to_micros(checkpointed_at) as checkpointed_at"
    };
}
pub(crate) use job_cols;

/// The event columns, in the shape [`event`] decodes.
macro_rules! event_cols {
    () => {
        "job_id, stuckless.to_micros(at) as at, kind, epoch, attempt, worker_id, detail"
    };
}
pub(crate) use event_cols;

/// The "now" every statement uses: the pinned time `$1` when a test pinned
/// the clock, else the database's own `now()`. Same SQL in production and tests.
macro_rules! now_cte {
    () => {
        "now_ as (select coalesce(stuckless.from_micros($1::bigint), now()) as t)"
    };
}
pub(crate) use now_cte;

fn bad_row(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Other(format!("unexpected {what} in the database: {e}"))
}

fn ts(row: &PgRow, col: &str) -> Result<Timestamp, sqlx::Error> {
    row.try_get::<i64, _>(col).map(Timestamp::from_micros)
}

fn ts_opt(row: &PgRow, col: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(Timestamp::from_micros))
}

/// Parses a status column.
pub(crate) fn status(text: &str) -> Result<JobStatus, StorageError> {
    text.parse().map_err(|e| bad_row("job status", e))
}

/// Decodes a row selected with [`job_cols`].
pub(crate) fn job(row: &PgRow) -> Result<Job, StorageError> {
    let decode = || -> Result<(Job, String), sqlx::Error> {
        let status_text: String = row.try_get("status")?;
        Ok((
            Job {
                id: JobId(row.try_get("id")?),
                queue: row.try_get("queue")?,
                kind: row.try_get("kind")?,
                payload: row.try_get::<Value, _>("payload")?,
                priority: row.try_get("priority")?,
                run_at: ts(row, "run_at")?,
                status: JobStatus::Queued,
                attempt: row.try_get("attempt")?,
                max_attempts: row.try_get("max_attempts")?,
                epoch: Epoch(row.try_get("epoch")?),
                lease_owner: row.try_get("lease_owner")?,
                lease_expires_at: ts_opt(row, "lease_expires_at")?,
                claimed_at: ts_opt(row, "claimed_at")?,
                heartbeat_at: ts_opt(row, "heartbeat_at")?,
                progress: row.try_get::<Option<Value>, _>("progress")?,
                last_error: row.try_get("last_error")?,
                idempotency_key: row.try_get("idempotency_key")?,
                created_at: ts(row, "created_at")?,
                updated_at: ts(row, "updated_at")?,
                finished_at: ts_opt(row, "finished_at")?,
                timeout: row
                    .try_get::<Option<i64>, _>("timeout_us")?
                    .map(|us| Duration::from_micros(us.max(1) as u64)),
                checkpoint: row.try_get::<Option<Value>, _>("checkpoint")?,
                checkpointed_at: ts_opt(row, "checkpointed_at")?,
            },
            status_text,
        ))
    };
    let (mut job, status_text) = decode().map_err(|e| bad_row("job row", e))?;
    job.status = status(&status_text)?;
    Ok(job)
}

/// Decodes a row selected with [`event_cols`].
pub(crate) fn event(row: &PgRow) -> Result<JobEvent, StorageError> {
    let decode = || -> Result<(JobEvent, String), sqlx::Error> {
        Ok((
            JobEvent {
                job_id: JobId(row.try_get("job_id")?),
                at: ts(row, "at")?,
                kind: JobEventKind::Inserted,
                epoch: Epoch(row.try_get("epoch")?),
                attempt: row.try_get("attempt")?,
                worker_id: row.try_get("worker_id")?,
                detail: row.try_get("detail")?,
            },
            row.try_get("kind")?,
        ))
    };
    let (mut event, kind) = decode().map_err(|e| bad_row("event row", e))?;
    event.kind = kind.parse().map_err(|e| bad_row("event kind", e))?;
    Ok(event)
}

/// Decodes a worker registry row.
pub(crate) fn worker(row: &PgRow) -> Result<WorkerRecord, StorageError> {
    let decode = || -> Result<WorkerRecord, sqlx::Error> {
        Ok(WorkerRecord {
            id: row.try_get("id")?,
            queues: row.try_get("queues")?,
            concurrency: row.try_get::<i64, _>("concurrency")? as u32,
            metadata: row.try_get("metadata")?,
            started_at: ts(row, "started_at")?,
            last_heartbeat_at: ts(row, "last_heartbeat_at")?,
            in_flight: row.try_get::<i64, _>("in_flight")? as u32,
            kinds: row.try_get("kinds")?,
        })
    };
    decode().map_err(|e| bad_row("worker row", e))
}
