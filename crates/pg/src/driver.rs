//! The driver interface on Postgres: one method per operation, each one
//! statement (or one short transaction) whose refusals follow the spec.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;
use stuckless_core::driver::{
    requeue_detail, CompleteOutcome, FailOutcome, InsertOutcome, JobCancel, JobCheckpoint, JobClaim,
    JobComplete, JobCompleteMany, JobEvents, JobFail, JobGet, JobHeartbeat, JobInsert, JobInsertMany,
    JobPrune, JobReapExpired, JobRelease, JobRequeue, KindStats, PruneOutcome, QueueKindsGet, QueueStats,
    QueueStatsGet, ReapOutcome, Storage, StorageNow, StorageResult, WorkerDeregister, WorkerHeartbeat,
    WorkerList, WorkerRecord, WorkerRegister,
};
use stuckless_core::job::clamp_error;
use stuckless_core::time::duration_micros;
use stuckless_core::{ClaimedJob, Job, JobEvent, JobId, JobStatus, StorageError, Timestamp};

use crate::error::storage_error;
use crate::fence::end;
use crate::insert::{insert_outcome, insert_query};
use crate::storage::PgStorage;
use crate::{rows, sql};

/// A lease or delay as the bigint microseconds the statements bind.
fn micros(d: Duration) -> i64 {
    duration_micros(d)
}

/// A count column of a stats row (a `bigint`, never negative).
fn count(row: &PgRow, column: &str) -> Result<u64, sqlx::Error> {
    row.try_get::<i64, _>(column).map(|n| n as u64)
}

/// A stats row's `oldest_due_micros`: how long its oldest due job has waited.
fn oldest_due_age(row: &PgRow) -> Result<Option<Duration>, sqlx::Error> {
    let micros = row.try_get::<Option<i64>, _>("oldest_due_micros")?;
    Ok(micros.map(|m| Duration::from_micros(m.max(0) as u64)))
}

impl PgStorage {
    /// Runs a stats statement (per queue or per kind) as of now and decodes
    /// each of its rows with `decode`.
    async fn stats<T>(
        &self,
        statement: &'static str,
        decode: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
    ) -> StorageResult<Vec<T>> {
        let rows = sqlx::query(statement)
            .bind(self.pinned_now())
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter()
            .map(|row| decode(row).map_err(storage_error))
            .collect()
    }
}

#[async_trait]
impl Storage for PgStorage {
    async fn job_insert(&self, JobInsert { job }: JobInsert) -> StorageResult<InsertOutcome> {
        let row = insert_query(job, self.pinned_now(), self.happy_path_events)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage_error)?;
        insert_outcome(row)
    }

    async fn job_insert_many(
        &self,
        JobInsertMany { jobs }: JobInsertMany,
    ) -> StorageResult<Vec<InsertOutcome>> {
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
            let mut timeouts = Vec::with_capacity(n);
            for job in jobs {
                let job = job.into_inner();
                queues.push(job.queue);
                kinds.push(job.kind);
                payloads.push(job.payload);
                priorities.push(job.priority);
                run_ats.push(job.run_at.map(Timestamp::as_micros));
                max_attempts.push(job.max_attempts);
                timeouts.push(job.timeout.map(micros));
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
                .bind(timeouts)
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

    async fn job_claim(&self, request: JobClaim) -> StorageResult<Vec<ClaimedJob>> {
        request.validate()?;
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let statement = self.sql(if request.queues.len() == 1 {
            sql::CLAIM_ONE_QUEUE
        } else {
            sql::CLAIM
        });
        let rows = sqlx::query(statement)
            .bind(self.pinned_now())
            .bind(&request.queues)
            .bind(i64::from(request.limit))
            .bind(&request.worker_id)
            .bind(micros(request.lease))
            .bind(self.happy_path_events)
            .bind(&request.kinds)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match rows::job(row) {
                Ok(job) => claimed.push(ClaimedJob { job }),
                // One row this code cannot read must not cost the others
                // their claim: it goes dead with the reason, the rest run.
                Err(error) => self.bury_unreadable(row, &error).await?,
            }
        }
        Ok(claimed)
    }

    async fn job_heartbeat(&self, request: JobHeartbeat) -> StorageResult<Timestamp> {
        request.validate()?;
        let JobHeartbeat {
            id,
            epoch,
            lease,
            progress,
        } = request;
        let now = self.pinned_now();
        let statement = self.sql(sql::HEARTBEAT);
        let row = self
            .fenced(id, epoch, "heartbeat", || {
                sqlx::query(statement)
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

    async fn job_checkpoint(&self, request: JobCheckpoint) -> StorageResult<Timestamp> {
        request.validate()?;
        let JobCheckpoint {
            id,
            epoch,
            checkpoint,
        } = request;
        let now = self.pinned_now();
        let statement = self.sql(sql::CHECKPOINT);
        let row = self
            .fenced(id, epoch, "checkpoint", || {
                sqlx::query(statement)
                    .bind(now)
                    .bind(id.0)
                    .bind(epoch.0)
                    .bind(checkpoint.clone())
            })
            .await?;
        let at: i64 = row.try_get("value").map_err(storage_error)?;
        Ok(Timestamp::from_micros(at))
    }

    async fn job_complete(&self, JobComplete { id, epoch }: JobComplete) -> StorageResult<CompleteOutcome> {
        let mut conn = self.pool.acquire().await.map_err(storage_error)?;
        self.complete_one(&mut conn, id, epoch, self.pinned_now()).await
    }

    async fn job_complete_many(
        &self,
        JobCompleteMany { jobs }: JobCompleteMany,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        // One autocommit statement: one `now()` for the batch, as the model
        // has, one round trip and one commit (a WAL flush) for all of it.
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs: Vec<_> = jobs.into_iter().map(|j| (j.id, j.epoch)).collect();
        self.complete_batch(&jobs).await
    }

    async fn job_fail(&self, request: JobFail) -> StorageResult<FailOutcome> {
        request.validate()?;
        let JobFail { id, epoch, .. } = request;
        let now = self.pinned_now();
        let error = clamp_error(&request.error);
        let delay = request.retry_after.map(micros);
        let statement = self.sql(sql::FAIL);
        let row = self
            .fenced(id, epoch, "fail", || {
                sqlx::query(statement)
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

    async fn job_release(&self, JobRelease { id, epoch }: JobRelease) -> StorageResult<()> {
        let now = self.pinned_now();
        let statement = self.sql(sql::RELEASE);
        self.fenced(id, epoch, "release", || {
            sqlx::query(statement).bind(now).bind(id.0).bind(epoch.0)
        })
        .await?;
        Ok(())
    }

    async fn job_reap_expired(&self, JobReapExpired { limit }: JobReapExpired) -> StorageResult<ReapOutcome> {
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

    async fn job_cancel(&self, JobCancel { id }: JobCancel) -> StorageResult<Job> {
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

    async fn job_requeue(&self, JobRequeue { id, force }: JobRequeue) -> StorageResult<Job> {
        let mut tx = self.pool.begin().await.map_err(storage_error)?;
        let Some((now, mut job)) = self.lock_job(&mut tx, id).await? else {
            return end(tx, Err(StorageError::NotFound(id))).await;
        };
        let reset = job.status == JobStatus::Dead;
        let detail = match requeue_detail(&job, now, force) {
            Ok(detail) => detail,
            Err(refused) => return end(tx, Err(refused)).await,
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

    async fn job_get(&self, JobGet { id }: JobGet) -> StorageResult<Option<Job>> {
        let row = sqlx::query(sql::GET)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage_error)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn job_events(&self, JobEvents { id }: JobEvents) -> StorageResult<Vec<JobEvent>> {
        let rows = sqlx::query(sql::EVENTS)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::event).collect()
    }

    async fn worker_register(&self, worker: WorkerRegister) -> StorageResult<()> {
        worker.validate()?;
        sqlx::query(sql::WORKER_REGISTER)
            .bind(self.pinned_now())
            .bind(&worker.id)
            .bind(&worker.queues)
            .bind(i64::from(worker.concurrency))
            .bind(&worker.metadata)
            .bind(&worker.kinds)
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    async fn worker_heartbeat(
        &self,
        WorkerHeartbeat { id, in_flight }: WorkerHeartbeat,
    ) -> StorageResult<()> {
        // An id Postgres cannot even hold (NUL) cannot be registered.
        if id.contains('\0') {
            return Err(StorageError::WorkerNotFound(id));
        }
        let done = sqlx::query(sql::WORKER_HEARTBEAT)
            .bind(self.pinned_now())
            .bind(&id)
            .bind(i64::from(in_flight))
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::WorkerNotFound(id));
        }
        Ok(())
    }

    async fn worker_deregister(&self, WorkerDeregister { id }: WorkerDeregister) -> StorageResult<()> {
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

    async fn worker_list(&self, _: WorkerList) -> StorageResult<Vec<WorkerRecord>> {
        let rows = sqlx::query(sql::WORKER_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?;
        rows.iter().map(rows::worker).collect()
    }

    async fn queue_stats(&self, _: QueueStatsGet) -> StorageResult<Vec<QueueStats>> {
        self.stats(sql::QUEUE_STATS, |row| {
            Ok(QueueStats {
                queue: row.try_get("queue")?,
                due: count(row, "due")?,
                scheduled: count(row, "scheduled")?,
                running: count(row, "running")?,
                running_expired: count(row, "running_expired")?,
                succeeded: count(row, "succeeded")?,
                dead: count(row, "dead")?,
                cancelled: count(row, "cancelled")?,
                oldest_due_age: oldest_due_age(row)?,
            })
        })
        .await
    }

    async fn queue_kinds_get(&self, _: QueueKindsGet) -> StorageResult<Vec<KindStats>> {
        self.stats(sql::QUEUE_KINDS, |row| {
            Ok(KindStats {
                queue: row.try_get("queue")?,
                kind: row.try_get("kind")?,
                due: count(row, "due")?,
                scheduled: count(row, "scheduled")?,
                running: count(row, "running")?,
                oldest_due_age: oldest_due_age(row)?,
            })
        })
        .await
    }

    async fn job_prune(&self, request: JobPrune) -> StorageResult<PruneOutcome> {
        request.validate()?;
        if request.limit == 0 {
            return Ok(PruneOutcome::default());
        }
        let row = sqlx::query(sql::PRUNE)
            .bind(self.pinned_now())
            .bind(micros(request.succeeded_after))
            .bind(micros(request.cancelled_after))
            .bind(micros(request.dead_after))
            .bind(i64::from(request.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(storage_error)?;
        let count = |col: &str| {
            row.try_get::<i64, _>(col)
                .map(|n| n as u64)
                .map_err(storage_error)
        };
        Ok(PruneOutcome {
            succeeded: count("succeeded")?,
            cancelled: count("cancelled")?,
            dead: count("dead")?,
        })
    }

    async fn storage_now(&self, _: StorageNow) -> StorageResult<Timestamp> {
        let micros: i64 = sqlx::query_scalar(sql::NOW)
            .bind(self.pinned_now())
            .fetch_one(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(Timestamp::from_micros(micros))
    }
}
