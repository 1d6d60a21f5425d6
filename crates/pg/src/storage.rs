//! `PgStorage`: the Postgres storage's type — its pool, how it connects, its
//! test knobs, and the operator reads beyond the driver interface. The
//! [`Storage`](stuckless_core::driver::Storage) implementation is in `driver.rs`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use stuckless_core::driver::StorageResult;
use stuckless_core::{Clock, Job, JobEvent, JobId, Timestamp};

use crate::error::{storage_error, PgError};
use crate::{rows, sql};

/// Postgres storage: a connection pool plus the two test knobs.
///
/// Every statement reads time as `coalesce($1, now())`: `$1` is NULL in
/// production (the database's clock judges every lease) and the pinned
/// clock's reading in tests. The SQL is the same either way.
#[derive(Clone)]
pub struct PgStorage {
    pub(crate) pool: PgPool,
    pub(crate) pinned: Option<Arc<dyn Clock>>,
    pub(crate) happy_path_events: bool,
    /// A deliberately broken statement set, for the mutation tests only.
    pub(crate) mutant: Option<crate::mutant::SqlMutant>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("pinned_clock", &self.pinned.is_some())
            .field("happy_path_events", &self.happy_path_events)
            .finish_non_exhaustive()
    }
}

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
            mutant: None,
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
    pub(crate) fn pinned_now(&self) -> Option<i64> {
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
}
