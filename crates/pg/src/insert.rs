//! The single-insert statement, shared by [`PgStorage`](crate::PgStorage)'s
//! `job_insert` and the transactional [`crate::enqueue`].

use sqlx::postgres::PgRow;
use sqlx::Row;
use stuckless_core::driver::{InsertOutcome, StorageResult};
use stuckless_core::time::duration_micros;
use stuckless_core::{StorageError, Timestamp, ValidJob};

use crate::error::storage_error;
use crate::{rows, sql};

/// Binds the single-insert statement: shared by [`PgStorage`](crate::PgStorage) and [`crate::enqueue`].
pub(crate) fn insert_query(
    job: ValidJob,
    now: Option<i64>,
    happy: bool,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let job = job.into_inner();
    sqlx::query(sql::INSERT)
        .bind(now)
        .bind(job.queue)
        .bind(job.kind)
        .bind(job.payload)
        .bind(job.priority)
        .bind(job.run_at.map(Timestamp::as_micros))
        .bind(job.max_attempts)
        .bind(job.idempotency_key)
        .bind(happy)
        .bind(job.timeout.map(duration_micros))
}

/// Decodes the single-insert statement's answer.
pub(crate) fn insert_outcome(row: Option<PgRow>) -> StorageResult<InsertOutcome> {
    let row = row.ok_or_else(|| StorageError::Other("insert returned no row".into()))?;
    Ok(InsertOutcome {
        inserted: row.try_get("inserted").map_err(storage_error)?,
        job: rows::job(&row)?,
    })
}
