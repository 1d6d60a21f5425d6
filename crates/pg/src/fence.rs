//! Guarded writes: fenced statements that apply only for the caller's
//! `(id, epoch)` on a running job, the decoding of their refusals into the
//! spec's errors in the spec's order (not found, stale epoch, wrong status),
//! and the row lock that operator actions (cancel, requeue) take and end.

use sqlx::postgres::PgRow;
use sqlx::Row;
use stuckless_core::driver::{CompleteOutcome, StorageResult};
use stuckless_core::{Epoch, Job, JobId, JobStatus, StorageError, Timestamp};

use crate::error::storage_error;
use crate::storage::PgStorage;
use crate::{rows, sql};

/// How often a fenced write re-runs when a concurrent change made its refusal
/// ambiguous (the row it saw looked writable but the update did not apply).
const MAX_RACE_RETRIES: usize = 16;

/// The refusal half of a fenced statement: the row's epoch and status as they
/// stood, or nothing when the job does not exist.
type Refusal = Option<(Epoch, String)>;

impl PgStorage {
    /// Runs one fenced statement and returns either the applied row or the
    /// refusal, retrying when a concurrent change made the refusal ambiguous.
    pub(crate) async fn fenced<F>(
        &self,
        id: JobId,
        epoch: Epoch,
        operation: &'static str,
        run: F,
    ) -> StorageResult<PgRow>
    where
        F: Fn() -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    {
        for _ in 0..MAX_RACE_RETRIES {
            let row = run().fetch_optional(&self.pool).await.map_err(storage_error)?;
            let refusal: Refusal = match &row {
                Some(r) if r.try_get::<bool, _>("applied").map_err(storage_error)? => {
                    return Ok(row.expect("matched Some"));
                }
                Some(r) => Some((
                    Epoch(r.try_get("cur_epoch").map_err(storage_error)?),
                    r.try_get("cur_status").map_err(storage_error)?,
                )),
                None => None,
            };
            match refusal_error(id, epoch, refusal, operation)? {
                Some(err) => return Err(err),
                None => continue,
            }
        }
        Err(race_exhausted(id, operation))
    }

    /// Completes one job on `conn` (a transaction for a batch): the fenced
    /// `complete`, with a retried completion by the same epoch a success.
    pub(crate) async fn complete_one(
        &self,
        conn: &mut sqlx::PgConnection,
        id: JobId,
        epoch: Epoch,
        now: Option<i64>,
    ) -> StorageResult<CompleteOutcome> {
        for _ in 0..MAX_RACE_RETRIES {
            let row = sqlx::query(self.sql(sql::COMPLETE))
                .bind(now)
                .bind(id.0)
                .bind(epoch.0)
                .bind(self.happy_path_events)
                .fetch_optional(&mut *conn)
                .await
                .map_err(storage_error)?;
            match completion_verdict(id, epoch, row.as_ref())? {
                Some(verdict) => return verdict,
                None => continue,
            }
        }
        Err(race_exhausted(id, "complete"))
    }

    /// Completes a batch in one autocommit statement, one result per job in
    /// input order; the rare completion that raced a concurrent change is
    /// re-run alone. A transport error fails the whole batch.
    pub(crate) async fn complete_batch(
        &self,
        jobs: &[(JobId, Epoch)],
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
        let epochs: Vec<i64> = jobs.iter().map(|(_, epoch)| epoch.0).collect();
        let rows = sqlx::query(self.sql(sql::COMPLETE_MANY))
            .bind(self.pinned_now())
            .bind(&ids)
            .bind(&epochs)
            .bind(self.happy_path_events)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        if rows.len() != jobs.len() {
            return Err(StorageError::Other(format!(
                "complete_many answered {} rows for {} jobs",
                rows.len(),
                jobs.len()
            )));
        }
        let mut out = Vec::with_capacity(jobs.len());
        for (&(id, epoch), row) in jobs.iter().zip(&rows) {
            let verdict = match completion_verdict(id, epoch, Some(row))? {
                Some(verdict) => verdict,
                None => {
                    let mut conn = self.pool.acquire().await.map_err(storage_error)?;
                    self.complete_one(&mut conn, id, epoch, self.pinned_now()).await
                }
            };
            out.push(verdict);
        }
        Ok(out)
    }

    /// Locks a job and reads the storage's now, inside `tx`.
    pub(crate) async fn lock_job(
        &self,
        tx: &mut sqlx::PgConnection,
        id: JobId,
    ) -> StorageResult<Option<(Timestamp, Job)>> {
        let row = sqlx::query(sql::LOCK_JOB)
            .bind(self.pinned_now())
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage_error)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let now = Timestamp::from_micros(row.try_get("now").map_err(storage_error)?);
                Ok(Some((now, rows::job(&row)?)))
            }
        }
    }
}

/// A completion's answer from its statement's row (`None`: no such job):
/// `Some(verdict)`, or `None` when the row looked writable, so the statement
/// raced a concurrent change and must re-run.
fn completion_verdict(
    id: JobId,
    epoch: Epoch,
    row: Option<&PgRow>,
) -> StorageResult<Option<StorageResult<CompleteOutcome>>> {
    let refusal: Refusal = match row {
        Some(r) if r.try_get::<bool, _>("applied").map_err(storage_error)? => {
            return Ok(Some(Ok(CompleteOutcome::Completed)));
        }
        Some(r) => match r.try_get::<Option<i64>, _>("cur_epoch").map_err(storage_error)? {
            Some(current) => Some((Epoch(current), r.try_get("cur_status").map_err(storage_error)?)),
            None => None,
        },
        None => None,
    };
    // A retried completion by the same epoch is a success (the spec's
    // idempotence), checked before fencing as the model does.
    if let Some((current, status)) = &refusal {
        if *current == epoch && status == "succeeded" {
            return Ok(Some(Ok(CompleteOutcome::AlreadyCompleted)));
        }
    }
    Ok(refusal_error(id, epoch, refusal, "complete")?.map(Err))
}

/// Why a fenced write was refused, in the spec's order; `Ok(None)` when the
/// row looked writable (a concurrent change between snapshot and update), in
/// which case the caller re-runs the statement.
fn refusal_error(
    id: JobId,
    presented: Epoch,
    refusal: Refusal,
    operation: &'static str,
) -> StorageResult<Option<StorageError>> {
    let Some((current, status)) = refusal else {
        return Ok(Some(StorageError::NotFound(id)));
    };
    if current != presented {
        return Ok(Some(StorageError::StaleEpoch {
            id,
            presented,
            current,
        }));
    }
    let status = rows::status(&status)?;
    if status != JobStatus::Running {
        return Ok(Some(StorageError::WrongStatus {
            id,
            status,
            operation,
            expected: "running",
        }));
    }
    Ok(None)
}

/// Ends a transaction that wrote nothing, *now*. Dropping it would only queue
/// the ROLLBACK until a background task returns the connection to the pool,
/// and meanwhile its `FOR UPDATE` row lock would make `SKIP LOCKED` claims on
/// other connections skip the job (found by the differential test).
pub(crate) async fn end<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    result: StorageResult<T>,
) -> StorageResult<T> {
    tx.rollback().await.map_err(storage_error)?;
    result
}

fn race_exhausted(id: JobId, operation: &str) -> StorageError {
    StorageError::Unavailable(format!(
        "{operation} of job {id} kept racing concurrent changes; retry"
    ))
}
