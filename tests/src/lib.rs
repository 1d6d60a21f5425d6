//! # stuckless-tests
//!
//! Cross-crate test support. [`TestDb`] gives each test a fresh Postgres
//! database with the migrations applied, found this way:
//!
//! 1. `DATABASE_URL`, if set: a server where the URL's user may `CREATE
//!    DATABASE` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`). Each
//!    test gets its own database `stuckless_t_<pid>_<n>` (ICU `en-US`
//!    collation where available, as on managed Postgres), dropped afterwards.
//! 2. Otherwise testcontainers starts `$STUCKLESS_PG_IMAGE` (default
//!    `postgres:16-alpine`) once per test process, if a Docker engine is
//!    reachable, and removes it when the process exits ([`container`]).
//! 3. Otherwise the test panics with instructions, unless
//!    `STUCKLESS_SKIP_PG=1` is set: then [`TestDb::new_or_skip`] prints that
//!    the test was skipped and returns `None` (never silently).
//!
//! Databases left behind by a killed test process are dropped by the next
//! run (their owning pid is gone).

#![deny(missing_docs)]

pub mod container;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use stuckless_core::driver::{JobClaim, JobEvents, JobGet, JobInsert, Storage};
use stuckless_core::{
    Clock, Job, JobEventKind, JobId, JobStatus, ManualClock, NewJob, StorageError, Timestamp,
};
use stuckless_pg::PgStorage;

/// The environment switch that turns "no Postgres" from a failure into a
/// printed skip.
pub const SKIP_ENV: &str = "STUCKLESS_SKIP_PG";

const HOW_TO: &str = "stuckless tests need PostgreSQL 15 or newer. Provide one with\n    \
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres\n\
    (a server where that user may CREATE DATABASE; `make pg-start` starts the machine's cluster), \
    or make a Docker engine reachable for testcontainers (image: $STUCKLESS_PG_IMAGE, default postgres:16-alpine; \
    `make test-containers` sets one up on Debian), \
    or set STUCKLESS_SKIP_PG=1 to skip the Postgres tests with a printed notice.";

/// `let db = test_db!();` in an async test: a fresh [`TestDb`], or (with
/// `STUCKLESS_SKIP_PG=1` and no Postgres) a printed skip and an early return.
/// `test_db!("name")` names the test in the skip notice instead of its
/// module and line.
#[macro_export]
macro_rules! test_db {
    () => {
        match $crate::TestDb::new_or_skip(concat!(module_path!(), ":", line!())).await {
            Some(db) => db,
            None => return,
        }
    };
    ($test:expr) => {
        match $crate::TestDb::new_or_skip($test).await {
            Some(db) => db,
            None => return,
        }
    };
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static CONTAINER_URL: OnceLock<Result<String, String>> = OnceLock::new();
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A fresh, migrated database for one test; dropped with the value.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
    dropped: bool,
}

impl TestDb {
    /// A fresh database, or a panic saying how to provide Postgres. With
    /// `STUCKLESS_SKIP_PG=1` and no Postgres it panics too: tests that honour
    /// the switch call [`TestDb::new_or_skip`].
    pub async fn new() -> TestDb {
        match Self::try_new().await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh database, or `None` after printing a skip notice when Postgres
    /// is unavailable and `STUCKLESS_SKIP_PG=1` is set; panics otherwise.
    pub async fn new_or_skip(test: &str) -> Option<TestDb> {
        match Self::try_new().await {
            Ok(db) => Some(db),
            Err(e) if skip_requested() => {
                eprintln!("SKIPPED {test}: no Postgres and {SKIP_ENV}=1 ({e})");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh database, or why none could be had (with instructions).
    pub async fn try_new() -> Result<TestDb, String> {
        let admin_url = server_url()?;
        let admin_opts: PgConnectOptions = admin_url
            .parse()
            .map_err(|e| format!("DATABASE_URL {admin_url:?} is not a Postgres URL: {e}\n{HOW_TO}"))?;
        let mut admin = admin_opts
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {admin_url}: {e}\n{HOW_TO}"))?;
        SWEPT
            .get_or_init(|| async {
                sweep_orphans(&mut admin).await;
            })
            .await;
        let name = format!(
            "stuckless_t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        // A natural-language collation where the server has ICU, as managed
        // Postgres (Supabase: en_US) has: there text order differs from Rust's
        // byte order, so a missing `collate "C"` shows up in tests.
        let icu =
            format!("create database \"{name}\" template template0 locale_provider icu icu_locale 'en-US'");
        if sqlx::query(sqlx::AssertSqlSafe(icu))
            .execute(&mut admin)
            .await
            .is_err()
        {
            sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
                .execute(&mut admin)
                .await
                .map_err(|e| format!("cannot create test database {name} on {admin_url}: {e}\n{HOW_TO}"))?;
        }
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .acquire_timeout(Duration::from_secs(60))
            .connect(&url)
            .await
            .map_err(|e| format!("cannot connect to the new test database {url}: {e}"))?;
        stuckless_pg::migrate(&pool)
            .await
            .map_err(|e| format!("migrating {url}: {e}"))?;
        Ok(TestDb {
            name,
            url,
            admin_url,
            pool,
            dropped: false,
        })
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool connected to the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A storage on the test database, judging time by the database clock.
    pub fn storage(&self) -> PgStorage {
        PgStorage::new(self.pool.clone())
    }

    /// Job `id` as [`TestDb::storage`] reads it; it must exist.
    pub async fn job(&self, id: i64) -> Job {
        let job = self.storage().job_get(JobGet { id: JobId(id) }).await;
        job.unwrap().expect("the job exists")
    }

    /// A storage on the test database with its time pinned to `clock`.
    pub fn pinned_storage(&self, clock: Arc<dyn Clock>) -> PgStorage {
        PgStorage::new(self.pool.clone()).with_pinned_clock(clock)
    }

    /// Closes the pool and drops the database now (Drop does the same).
    pub async fn cleanup(mut self) {
        self.pool.close().await;
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await; a helper thread with its own runtime drops the
        // database (WITH (FORCE) ends our pool's connections) and is joined so
        // the database is gone before the test returns.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = handle.join();
    }
}

/// A manual clock at a fixed, realistic instant, for pinned-time tests.
pub fn manual_clock() -> ManualClock {
    // 2026-11-29T00:00:00Z plus a few odd microseconds, so rounding bugs show.
    ManualClock::new(Timestamp::from_micros(1_795_910_400_000_000 + 123_457))
}

/// The SQLSTATE of a database error (`22023`, `55000`, ...), if `e` is one.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
}

/// Runs `sql`, which must fail, on `conn` (a pool or a connection) and
/// returns the error.
pub async fn sql_error<'c>(conn: impl sqlx::PgExecutor<'c>, sql: &str) -> sqlx::Error {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .expect_err("the statement must fail")
}

/// The one value `sql` returns on `conn` (a pool or a connection).
pub async fn sql_value<'c, T>(conn: impl sqlx::PgExecutor<'c>, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The storage call that inserts `job`, which the test knows is valid.
pub fn insert(job: NewJob) -> JobInsert {
    JobInsert::new(job).expect("a valid job")
}

/// A claim by `worker` of up to `limit` jobs of the default queue, any kind,
/// with a 30 s lease.
pub fn claim_default(worker: &str, limit: u32) -> JobClaim {
    JobClaim {
        worker_id: worker.into(),
        queues: vec!["default".into()],
        limit,
        lease: Duration::from_secs(30),
        kinds: None,
    }
}

/// The kinds of `id`'s events, oldest first.
pub async fn event_kinds(s: &dyn Storage, id: JobId) -> Vec<JobEventKind> {
    let events = s.job_events(JobEvents { id }).await.unwrap();
    events.iter().map(|e| e.kind).collect()
}

/// Asserts that `err` refuses an operation because the job is in `status`.
#[track_caller]
pub fn assert_wrong_status(err: &StorageError, status: JobStatus) {
    assert!(
        matches!(err, StorageError::WrongStatus { status: s, .. } if *s == status),
        "{err}"
    );
}

/// Whether `STUCKLESS_SKIP_PG=1` is set.
pub fn skip_requested() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// The server URL tests create their databases on.
fn server_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.trim().is_empty() {
            return Ok(url);
        }
    }
    CONTAINER_URL.get_or_init(|| container::start(HOW_TO)).clone()
}

/// `url` with its database (path) replaced by `db`; query string kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn drop_database(admin_url: &str, name: &str) {
    let Ok(opts) = admin_url.parse::<PgConnectOptions>() else {
        return;
    };
    if let Ok(mut conn) = opts.connect().await {
        let sql = format!("drop database if exists \"{name}\" with (force)");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
            eprintln!("warning: could not drop test database {name}: {e}");
        }
    }
}

/// Drops test databases whose creating process no longer exists (a test run
/// that was killed before its Drop ran).
async fn sweep_orphans(admin: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar("select datname from pg_database where datname like 'stuckless\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(_) => return,
        };
    // Roles that tests create are named after their database: sweep them too.
    let roles: Vec<String> =
        sqlx::query_scalar("select rolname::text from pg_roles where rolname like 'stuckless\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names.into_iter().chain(roles) {
        let is_role = !name.ends_with(|c: char| c.is_ascii_digit());
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if pid.is_some() && !alive {
            let sql = if is_role {
                format!("drop role if exists \"{name}\"")
            } else {
                format!("drop database if exists \"{name}\" with (force)")
            };
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *admin).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
