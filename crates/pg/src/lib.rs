//! # stuckless-pg
//!
//! Postgres for stuckless: [`PgStorage`] implements the core's
//! [`Storage`](stuckless_core::driver::Storage) driver interface with sqlx runtime queries (no database
//! needed to compile), [`PgWaker`] turns `LISTEN stuckless_jobs` into worker
//! wake-ups, [`migrate`] applies the embedded `migrations/`, and [`enqueue`]
//! inserts a job inside a caller's own transaction.
//!
//! Everything lives in the Postgres schema `stuckless`. Other languages use the
//! SQL functions `stuckless.enqueue`, `stuckless.cancel` and
//! `stuckless.job_state` (see this crate's README).
//!
//! Time: every statement reads "now" as `coalesce($1, now())`, where `$1` is
//! NULL in production (the database's clock judges leases) and the pinned
//! clock's reading in tests ([`PgStorage::with_pinned_clock`]): the same SQL
//! either way, so the conformance suite tests the production statements.

#![deny(missing_docs)]

mod bury;
mod driver;
mod error;
mod fence;
mod insert;
mod mutant;
mod notify_probe;
mod rows;
mod sql;
mod storage;
mod waker;

/// Statements whose query plans the tests check (they must stay on their
/// indexes however many finished jobs the table holds). Not API.
#[doc(hidden)]
pub mod plans {
    pub use crate::sql::{CLAIM_ONE_QUEUE, QUEUE_KINDS};
}

pub use error::PgError;
#[doc(hidden)]
pub use mutant::{MutantError, SqlMutant};
pub use notify_probe::{probe_channel, probe_listener, probe_notify, NotifyProbe, PROBE_WAIT};
pub use storage::PgStorage;
pub use waker::{PgWaker, CHANNEL};

use stuckless_core::{InsertOutcome, NewJob};

/// The schema every stuckless object lives in, including the migrations'
/// bookkeeping table, so nothing is added to `public`.
pub const SCHEMA: &str = "stuckless";

/// The embedded migrations (`migrations/` at the workspace root), recording
/// what was applied in `stuckless._sqlx_migrations`.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.create_schema(SCHEMA);
    migrator.dangerous_set_table_name("stuckless._sqlx_migrations");
    migrator
}

/// Applies every pending migration in `migrations/`; safe to run repeatedly
/// and from several processes at once (sqlx takes an advisory lock).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), PgError> {
    migrator().run(pool).await?;
    Ok(())
}

/// Inserts a job through any executor, typically the caller's transaction, so
/// the job exists exactly when the caller's own writes commit:
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), stuckless_pg::PgError> {
/// use stuckless_core::NewJob;
/// let mut tx = pool.begin().await?;
/// sqlx::query("insert into reports (id) values (42)").execute(&mut *tx).await?;
/// stuckless_pg::enqueue(&mut *tx, NewJob::new("default", "report", serde_json::json!({"id": 42}))).await?;
/// tx.commit().await?; // the NOTIFY to workers is sent on commit, too
/// # Ok(()) }
/// ```
///
/// Validation runs first (nothing is sent for bad input); the database clock
/// sets the times; an existing idempotency key returns the existing job with
/// `inserted: false`. Happy-path events are not logged here.
pub async fn enqueue<'e, E>(executor: E, job: NewJob) -> Result<InsertOutcome, PgError>
where
    E: sqlx::PgExecutor<'e>,
{
    let job = job.validate()?;
    let row = insert::insert_query(job, None, false)
        .fetch_optional(executor)
        .await
        .map_err(error::storage_error)?;
    Ok(insert::insert_outcome(row)?)
}
