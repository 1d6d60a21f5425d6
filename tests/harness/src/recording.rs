//! The chaos handler: records every execution in the side table.
//!
//! An execution row is written when the handler starts (job id, epoch,
//! attempt, worker) and its `finished_at` when the handler's work is done,
//! both with the database's clock, before the handler returns `Ok` and so
//! before the worker asks for the completion. The end-of-run checks compare
//! these rows with the jobs' final epochs and events.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use stuckless_core::{Handler, JobContext, JobError};

/// The job kind the chaos run enqueues.
pub const CHAOS_KIND: &str = "chaos";

/// Records each execution and sleeps `payload.sleep_ms` (on the first
/// attempt `payload.first_attempt_sleep_ms` when given: the bench's recovery
/// measurement holds its job in the worker it then kills).
pub struct RecordingHandler {
    pool: PgPool,
    worker_id: String,
}

impl RecordingHandler {
    /// A handler writing through `pool` as worker `worker_id`.
    pub fn new(pool: PgPool, worker_id: impl Into<String>) -> Self {
        RecordingHandler {
            pool,
            worker_id: worker_id.into(),
        }
    }
}

fn retry(message: String) -> JobError {
    JobError::Retryable {
        message,
        retry_after: Some(Duration::from_millis(200)),
    }
}

#[async_trait]
impl Handler for RecordingHandler {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let payload = ctx.payload();
        let sleep_ms = match payload["first_attempt_sleep_ms"].as_u64() {
            Some(ms) if ctx.attempt() == 1 => ms,
            _ => payload["sleep_ms"].as_u64().unwrap_or(0),
        };
        let row: i64 = sqlx::query_scalar(
            "insert into stuckless_chaos.executions (job_id, epoch, attempt, worker_id)
             values ($1, $2, $3, $4) returning id",
        )
        .bind(ctx.id().0)
        .bind(ctx.epoch().0)
        .bind(ctx.attempt())
        .bind(&self.worker_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| retry(format!("recording the start: {e}")))?;
        tokio::select! {
            _ = ctx.cancelled() => return Err(retry("cancelled".into())),
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
        }
        sqlx::query("update stuckless_chaos.executions set finished_at = now() where id = $1")
            .bind(row)
            .execute(&self.pool)
            .await
            .map_err(|e| retry(format!("recording the finish: {e}")))?;
        Ok(())
    }
}
