//! `PgStorage`: the [`Storage`] trait on Postgres.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Row};
use stuckless_core::job::clamp_error;
use stuckless_core::storage::{is_reapable, validate_heartbeat};
use stuckless_core::time::duration_micros;
use stuckless_core::{
    ClaimRequest, ClaimedJob, Clock, CompleteOutcome, Epoch, FailOutcome, FailRequest, InsertOutcome, Job,
    JobEvent, JobId, JobStatus, NewJob, QueueStats, ReapOutcome, Storage, StorageError, StorageResult,
    Timestamp, WorkerRecord, WorkerRegistration,
};

use crate::error::{storage_error, PgError};
use crate::{rows, sql};

/// How often a fenced write re-runs when a concurrent change made its refusal
/// ambiguous (the row it saw looked writable but the update did not apply).
const MAX_RACE_RETRIES: usize = 16;

/// Postgres storage: a connection pool plus the two test knobs.
///
/// Every statement reads time as `coalesce($1, now())`: `$1` is NULL in
/// production (the database's clock judges every lease) and the pinned
/// clock's reading in tests. The SQL is the same either way.
#[derive(Clone)]
pub struct PgStorage {
    pool: PgPool,
    pinned: Option<Arc<dyn Clock>>,
    happy_path_events: bool,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("pinned_clock", &self.pinned.is_some())
            .field("happy_path_events", &self.happy_path_events)
            .finish_non_exhaustive()
    }
}

/// The refusal half of a fenced statement: the row's epoch and status as they
/// stood, or nothing when the job does not exist.
type Refusal = Option<(Epoch, String)>;

impl PgStorage {
    /// Opens a pool to `url`; an unreachable server is a [`PgError::Unreachable`]
    /// that names the host and port.
    pub async fn connect(url: &str) -> Result<PgStorage, PgError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(PgError::BadUrl {
                reason: "it must start with postgres:// or postgresql://".into(),
            });
        }
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| PgError::BadUrl {
            reason: e.to_string(),
        })?;
        let unreachable = |source: sqlx::Error| match source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => PgError::Unreachable {
                host: options.get_host().to_owned(),
                port: options.get_port(),
                database: options.get_database().unwrap_or("(default)").to_owned(),
                source,
            },
            other => PgError::Database(other),
        };
        // One direct attempt first: a pool would retry until its acquire
        // timeout, and an operator with a wrong URL should hear at once.
        let probe = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(unreachable)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Every transaction this storage opens is a few statements
                    // with no pause between them, so one idle for 5 s has lost
                    // its client (a partition mid-`complete_many`). Its row
                    // locks would hide expired jobs from every reaper's
                    // `skip locked` until TCP keepalive gave up, hours later;
                    // the chaos run caught exactly that.
                    sqlx::query("set idle_in_transaction_session_timeout = '5s'")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(unreachable)?;
        Ok(PgStorage::new(pool))
    }

    /// Wraps an existing pool: database clock, abnormal events only.
    pub fn new(pool: PgPool) -> PgStorage {
        PgStorage {
            pool,
            pinned: None,
            happy_path_events: false,
        }
    }

    /// Judges time by `clock` instead of the database's `now()` (tests only).
    pub fn with_pinned_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.pinned = Some(clock);
        self
    }

    /// Also logs inserted, claimed and completed events (off by default).
    pub fn with_happy_path_events(mut self, on: bool) -> Self {
        self.happy_path_events = on;
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pinned time for this operation, or `None` for the database clock.
    fn pinned_now(&self) -> Option<i64> {
        self.pinned.as_ref().map(|c| c.now().as_micros())
    }

    /// Events of every job at or after `since`, oldest first, at most `limit`:
    /// the raw material of a timeline (`stuckless diagnose`, the SVG renderer).
    pub async fn events_since(&self, since: Timestamp, limit: u32) -> StorageResult<Vec<JobEvent>> {
        let rows = sqlx::query(sql::EVENTS_SINCE)
            .bind(since.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::event).collect()
    }

    /// Jobs whose latest change (`updated_at`) is at or after `since`, oldest
    /// change first, at most `limit`.
    pub async fn jobs_changed_since(&self, since: Timestamp, limit: u32) -> StorageResult<Vec<Job>> {
        let rows = sqlx::query(sql::JOBS_CHANGED_SINCE)
            .bind(since.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::job).collect()
    }

    /// Up to `limit` jobs with id greater than `after`, ascending id: page
    /// through the whole table with the last id seen (start from `JobId(0)`).
    pub async fn jobs_page(&self, after: JobId, limit: u32) -> StorageResult<Vec<Job>> {
        let rows = sqlx::query(sql::JOBS_PAGE)
            .bind(after.0)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::job).collect()
    }

    /// Runs one fenced statement and returns either the applied row or the
    /// refusal, retrying when a concurrent change made the refusal ambiguous.
    async fn fenced<F>(
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

    async fn complete_one(
        &self,
        conn: &mut sqlx::PgConnection,
        id: JobId,
        epoch: Epoch,
        now: Option<i64>,
    ) -> StorageResult<CompleteOutcome> {
        for _ in 0..MAX_RACE_RETRIES {
            let row = sqlx::query(sql::COMPLETE)
                .bind(now)
                .bind(id.0)
                .bind(epoch.0)
                .bind(self.happy_path_events)
                .fetch_optional(&mut *conn)
                .await
                .map_err(storage_error)?;
            let refusal: Refusal = match &row {
                Some(r) if r.try_get::<bool, _>("applied").map_err(storage_error)? => {
                    return Ok(CompleteOutcome::Completed)
                }
                Some(r) => Some((
                    Epoch(r.try_get("cur_epoch").map_err(storage_error)?),
                    r.try_get("cur_status").map_err(storage_error)?,
                )),
                None => None,
            };
            // A retried completion by the same epoch is a success (the spec's
            // idempotence), checked before fencing as the model does.
            if let Some((current, status)) = &refusal {
                if *current == epoch && status == "succeeded" {
                    return Ok(CompleteOutcome::AlreadyCompleted);
                }
            }
            match refusal_error(id, epoch, refusal, "complete")? {
                Some(err) => return Err(err),
                None => continue,
            }
        }
        Err(race_exhausted(id, "complete"))
    }

    /// Locks a job and reads the storage's now, inside `tx`.
    async fn lock_job(
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
async fn end<T>(tx: sqlx::Transaction<'_, sqlx::Postgres>, result: StorageResult<T>) -> StorageResult<T> {
    tx.rollback().await.map_err(storage_error)?;
    result
}

fn race_exhausted(id: JobId, operation: &str) -> StorageError {
    StorageError::Unavailable(format!(
        "{operation} of job {id} kept racing concurrent changes; retry"
    ))
}

fn micros(d: Duration) -> i64 {
    duration_micros(d)
}

/// Binds the single-insert statement: shared by [`PgStorage`] and [`crate::enqueue`].
pub(crate) fn insert_query(
    job: NewJob,
    now: Option<i64>,
    happy: bool,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
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
}

/// Decodes the single-insert statement's answer.
pub(crate) fn insert_outcome(row: Option<PgRow>) -> StorageResult<InsertOutcome> {
    let row = row.ok_or_else(|| StorageError::Other("insert returned no row".into()))?;
    Ok(InsertOutcome {
        inserted: row.try_get("inserted").map_err(storage_error)?,
        job: rows::job(&row)?,
    })
}

#[async_trait]
impl Storage for PgStorage {
    async fn job_insert(&self, job: NewJob) -> StorageResult<InsertOutcome> {
        job.validate()?;
        let row = insert_query(job, self.pinned_now(), self.happy_path_events)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage_error)?;
        insert_outcome(row)
    }

    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StorageResult<Vec<InsertOutcome>> {
        for job in &jobs {
            job.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.pinned_now();
        if jobs.iter().all(|j| j.idempotency_key.is_none()) {
            // The fast path: one statement however many jobs.
            let n = jobs.len();
            let mut queues = Vec::with_capacity(n);
            let mut kinds = Vec::with_capacity(n);
            let mut payloads = Vec::with_capacity(n);
            let mut priorities = Vec::with_capacity(n);
            let mut run_ats = Vec::with_capacity(n);
            let mut max_attempts = Vec::with_capacity(n);
            for job in jobs {
                queues.push(job.queue);
                kinds.push(job.kind);
                payloads.push(job.payload);
                priorities.push(job.priority);
                run_ats.push(job.run_at.map(Timestamp::as_micros));
                max_attempts.push(job.max_attempts);
            }
            let rows = sqlx::query(sql::INSERT_MANY)
                .bind(now)
                .bind(queues)
                .bind(kinds)
                .bind(payloads)
                .bind(priorities)
                .bind(run_ats)
                .bind(max_attempts)
                .bind(self.happy_path_events)
                .fetch_all(&self.pool)
                .await
                .map_err(storage_error)?;
            return rows
                .iter()
                .map(|row| {
                    Ok(InsertOutcome {
                        inserted: true,
                        job: rows::job(row)?,
                    })
                })
                .collect();
        }
        // With idempotency keys (possibly repeated within the batch) each job
        // is inserted as by job_insert, in order, in one transaction: later
        // statements see earlier ones, and `now()` is the transaction's.
        let mut tx = self.pool.begin().await.map_err(storage_error)?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let row = insert_query(job, now, self.happy_path_events)
                .fetch_optional(&mut *tx)
                .await
                .map_err(storage_error)?;
            out.push(insert_outcome(row)?);
        }
        tx.commit().await.map_err(storage_error)?;
        Ok(out)
    }

    async fn job_claim(&self, request: ClaimRequest) -> StorageResult<Vec<ClaimedJob>> {
        request.validate()?;
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let statement = if request.queues.len() == 1 {
            sql::CLAIM_ONE_QUEUE
        } else {
            sql::CLAIM
        };
        let rows = sqlx::query(statement)
            .bind(self.pinned_now())
            .bind(&request.queues)
            .bind(i64::from(request.limit))
            .bind(&request.worker_id)
            .bind(micros(request.lease))
            .bind(self.happy_path_events)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter()
            .map(|r| Ok(ClaimedJob { job: rows::job(r)? }))
            .collect()
    }

    async fn job_heartbeat(
        &self,
        id: JobId,
        epoch: Epoch,
        lease: Duration,
        progress: Option<Value>,
    ) -> StorageResult<Timestamp> {
        validate_heartbeat(lease, progress.as_ref())?;
        let now = self.pinned_now();
        let row = self
            .fenced(id, epoch, "heartbeat", || {
                sqlx::query(sql::HEARTBEAT)
                    .bind(now)
                    .bind(id.0)
                    .bind(epoch.0)
                    .bind(micros(lease))
                    .bind(progress.is_some())
                    .bind(progress.clone())
            })
            .await?;
        let expires: i64 = row.try_get("value").map_err(storage_error)?;
        Ok(Timestamp::from_micros(expires))
    }

    async fn job_complete(&self, id: JobId, epoch: Epoch) -> StorageResult<CompleteOutcome> {
        let mut conn = self.pool.acquire().await.map_err(storage_error)?;
        self.complete_one(&mut conn, id, epoch, self.pinned_now()).await
    }

    async fn job_complete_many(
        &self,
        jobs: Vec<(JobId, Epoch)>,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        // One transaction: one `now()` for the batch, as the model has, and
        // one commit instead of one per job.
        let now = self.pinned_now();
        let mut tx = self.pool.begin().await.map_err(storage_error)?;
        let mut out = Vec::with_capacity(jobs.len());
        for (id, epoch) in jobs {
            let result = self.complete_one(&mut tx, id, epoch, now).await;
            // A transport error aborts the whole batch; refusals are per job.
            if let Err(e @ (StorageError::Unavailable(_) | StorageError::Other(_))) = &result {
                // Roll back now, not lazily on drop: see `end`.
                let _ = tx.rollback().await;
                return Err(e.clone());
            }
            out.push(result);
        }
        tx.commit().await.map_err(storage_error)?;
        Ok(out)
    }

    async fn job_fail(&self, id: JobId, epoch: Epoch, request: FailRequest) -> StorageResult<FailOutcome> {
        request.validate()?;
        let now = self.pinned_now();
        let error = clamp_error(&request.error);
        let delay = request.retry_after.map(micros);
        let row = self
            .fenced(id, epoch, "fail", || {
                sqlx::query(sql::FAIL)
                    .bind(now)
                    .bind(id.0)
                    .bind(epoch.0)
                    .bind(error.clone())
                    .bind(delay)
            })
            .await?;
        let run_at: Option<i64> = row.try_get("value").map_err(storage_error)?;
        Ok(match run_at {
            Some(at) => FailOutcome::Retried {
                run_at: Timestamp::from_micros(at),
            },
            None => FailOutcome::Dead,
        })
    }

    async fn job_release(&self, id: JobId, epoch: Epoch) -> StorageResult<()> {
        let now = self.pinned_now();
        self.fenced(id, epoch, "release", || {
            sqlx::query(sql::RELEASE).bind(now).bind(id.0).bind(epoch.0)
        })
        .await?;
        Ok(())
    }

    async fn job_reap_expired(&self, limit: u32) -> StorageResult<ReapOutcome> {
        if limit == 0 {
            return Ok(ReapOutcome::default());
        }
        let rows = sqlx::query(sql::REAP)
            .bind(self.pinned_now())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        let mut outcome = ReapOutcome::default();
        for row in rows {
            let id = JobId(row.try_get("id").map_err(storage_error)?);
            let status: String = row.try_get("status").map_err(storage_error)?;
            if status == "dead" {
                outcome.dead.push(id);
            } else {
                outcome.requeued.push(id);
            }
        }
        Ok(outcome)
    }

    async fn job_cancel(&self, id: JobId) -> StorageResult<Job> {
        let mut tx = self.pool.begin().await.map_err(storage_error)?;
        let Some((now, mut job)) = self.lock_job(&mut tx, id).await? else {
            return end(tx, Err(StorageError::NotFound(id))).await;
        };
        match job.status {
            JobStatus::Cancelled => return end(tx, Ok(job)).await,
            JobStatus::Succeeded | JobStatus::Dead => {
                let refused = StorageError::WrongStatus {
                    id,
                    status: job.status,
                    operation: "cancel",
                    expected: "queued or running",
                };
                return end(tx, Err(refused)).await;
            }
            JobStatus::Queued | JobStatus::Running => {}
        }
        sqlx::query(sql::CANCEL)
            .bind(None::<i64>)
            .bind(id.0)
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(storage_error)?;
        tx.commit().await.map_err(storage_error)?;
        job.status = JobStatus::Cancelled;
        job.lease_expires_at = None;
        job.updated_at = now;
        job.finished_at = Some(now);
        Ok(job)
    }

    async fn job_requeue(&self, id: JobId, force: bool) -> StorageResult<Job> {
        let mut tx = self.pool.begin().await.map_err(storage_error)?;
        let Some((now, mut job)) = self.lock_job(&mut tx, id).await? else {
            return end(tx, Err(StorageError::NotFound(id))).await;
        };
        let reset = job.status == JobStatus::Dead;
        let detail = match job.status {
            JobStatus::Dead => "dead job requeued by operator",
            JobStatus::Running if is_reapable(&job, now) => "expired lease requeued by operator",
            JobStatus::Running if force => "live lease revoked by operator (--force)",
            status => {
                let refused = StorageError::WrongStatus {
                    id,
                    status,
                    operation: "requeue",
                    expected: if status == JobStatus::Running {
                        "dead, or running with an expired lease (or force)"
                    } else {
                        "dead, or running with an expired lease"
                    },
                };
                return end(tx, Err(refused)).await;
            }
        };
        sqlx::query(sql::REQUEUE)
            .bind(None::<i64>)
            .bind(id.0)
            .bind(now.as_micros())
            .bind(reset)
            .bind(detail)
            .execute(&mut *tx)
            .await
            .map_err(storage_error)?;
        tx.commit().await.map_err(storage_error)?;
        if reset {
            job.attempt = 0;
            job.finished_at = None;
        }
        job.status = JobStatus::Queued;
        job.run_at = now;
        job.lease_expires_at = None;
        job.updated_at = now;
        Ok(job)
    }

    async fn job_get(&self, id: JobId) -> StorageResult<Option<Job>> {
        let row = sqlx::query(sql::GET)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage_error)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn job_events(&self, id: JobId) -> StorageResult<Vec<JobEvent>> {
        let rows = sqlx::query(sql::EVENTS)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::event).collect()
    }

    async fn worker_register(&self, worker: WorkerRegistration) -> StorageResult<()> {
        worker.validate()?;
        sqlx::query(sql::WORKER_REGISTER)
            .bind(self.pinned_now())
            .bind(&worker.id)
            .bind(&worker.queues)
            .bind(i64::from(worker.concurrency))
            .bind(&worker.metadata)
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    async fn worker_heartbeat(&self, id: &str, in_flight: u32) -> StorageResult<()> {
        // An id Postgres cannot even hold (NUL) cannot be registered.
        if id.contains('\0') {
            return Err(StorageError::WorkerNotFound(id.to_owned()));
        }
        let done = sqlx::query(sql::WORKER_HEARTBEAT)
            .bind(self.pinned_now())
            .bind(id)
            .bind(i64::from(in_flight))
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::WorkerNotFound(id.to_owned()));
        }
        Ok(())
    }

    async fn worker_deregister(&self, id: &str) -> StorageResult<()> {
        if id.contains('\0') {
            return Ok(());
        }
        sqlx::query("delete from stuckless.workers where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    async fn worker_list(&self) -> StorageResult<Vec<WorkerRecord>> {
        let rows = sqlx::query(sql::WORKER_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::worker).collect()
    }

    async fn queue_stats(&self) -> StorageResult<Vec<QueueStats>> {
        let rows = sqlx::query(sql::QUEUE_STATS)
            .bind(self.pinned_now())
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter()
            .map(|row| {
                let count = |col: &str| {
                    row.try_get::<i64, _>(col)
                        .map(|n| n as u64)
                        .map_err(storage_error)
                };
                Ok(QueueStats {
                    queue: row.try_get("queue").map_err(storage_error)?,
                    due: count("due")?,
                    scheduled: count("scheduled")?,
                    running: count("running")?,
                    running_expired: count("running_expired")?,
                    succeeded: count("succeeded")?,
                    dead: count("dead")?,
                    cancelled: count("cancelled")?,
                    oldest_due_age: row
                        .try_get::<Option<i64>, _>("oldest_due_micros")
                        .map_err(storage_error)?
                        .map(|m| Duration::from_micros(m.max(0) as u64)),
                })
            })
            .collect()
    }

    async fn storage_now(&self) -> StorageResult<Timestamp> {
        let micros: i64 = sqlx::query_scalar(sql::NOW)
            .bind(self.pinned_now())
            .fetch_one(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(Timestamp::from_micros(micros))
    }
}
