//! Fresh databases for a run, and the side table of executions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use anyhow::Context;

/// The default server URL when `DATABASE_URL` is unset.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The side table where chaos handlers record every execution they start and
/// finish, written with the database's own clock.
pub const SIDE_TABLE_SQL: &str = "
create schema if not exists stuckless_chaos;
create table if not exists stuckless_chaos.executions (
    id          bigint generated always as identity primary key,
    job_id      bigint not null,
    epoch       bigint not null,
    attempt     integer not null,
    worker_id   text not null,
    started_at  timestamptz not null default now(),
    finished_at timestamptz
);
create index if not exists executions_job_idx on stuckless_chaos.executions (job_id, epoch);
";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The `application_name` of the harness's own connections, which mass
/// terminations spare.
pub const HARNESS_APP: &str = "stuckless-harness";

/// `DATABASE_URL`, or [`DEFAULT_SERVER_URL`].
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned())
}

/// A fresh, migrated database with the side table; dropped by [`RunDb::drop_now`]
/// or, failing that, on drop.
pub struct RunDb {
    admin: PgConnectOptions,
    name: String,
    pool: PgPool,
    dropped: bool,
}

impl RunDb {
    /// Creates `<prefix>_<pid>_<n>` on the server at `server_url`, migrates it
    /// and adds the side table.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<RunDb> {
        let admin: PgConnectOptions = server_url
            .parse()
            .map_err(|e| anyhow::anyhow!("DATABASE_URL {server_url:?}: {e}"))?;
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut conn = admin.connect().await.context(format!(
            "connecting to {server_url} (is Postgres running? `make pg-start`)"
        ))?;
        sweep_orphans(&mut conn, prefix).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut conn)
            .await
            .context(format!("creating database {name}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(admin.clone().database(&name).application_name(HARNESS_APP))
            .await
            .context(format!("connecting to {name}"))?;
        stuckless_pg::migrate(&pool).await.context("migrating")?;
        sqlx::raw_sql(SIDE_TABLE_SQL)
            .execute(&pool)
            .await
            .context("creating the side table")?;
        Ok(RunDb {
            admin,
            name,
            pool,
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A direct (unproxied) pool on the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The upstream server's socket address (for proxies).
    pub async fn server_addr(&self) -> anyhow::Result<SocketAddr> {
        let host = self.admin.get_host().to_owned();
        let port = self.admin.get_port();
        let found = tokio::net::lookup_host((host.as_str(), port))
            .await
            .context(format!("resolving {host}:{port}"))?
            .find(|a| a.is_ipv4());
        found.ok_or_else(|| anyhow::anyhow!("{host}:{port} has no IPv4 address"))
    }

    /// A URL for this database through `addr` (a proxy), cleartext, with an
    /// `application_name` so its backends can be found and terminated.
    pub fn url_via(&self, addr: SocketAddr, application_name: &str) -> String {
        let user = self.admin.get_username();
        format!(
            "postgres://{user}@{addr}/{}?sslmode=disable&application_name={application_name}",
            self.name
        )
    }

    /// A direct URL for this database.
    pub fn direct_url(&self) -> String {
        let user = self.admin.get_username();
        format!(
            "postgres://{user}@{}:{}/{}?sslmode=disable",
            self.admin.get_host(),
            self.admin.get_port(),
            self.name
        )
    }

    /// Terminates the backends of this database whose `application_name`
    /// starts with `prefix`; returns how many.
    pub async fn terminate_backends(&self, prefix: &str) -> anyhow::Result<u64> {
        let pattern = format!("{prefix}%");
        let n: i64 = sqlx::query_scalar(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and application_name like $1) t",
        )
        .bind(pattern)
        .fetch_one(&self.pool)
        .await
        .context("pg_terminate_backend")?;
        Ok(n as u64)
    }

    /// Terminates every backend of this database but the harness's own (the
    /// workers' pools, LISTEN connections and endpoint pools); returns how many.
    pub async fn terminate_all_but_harness(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and application_name <> $1) t",
        )
        .bind(HARNESS_APP)
        .fetch_one(&self.pool)
        .await
        .context("pg_terminate_backend of every worker connection")?;
        Ok(n as u64)
    }

    /// Closes the pool and drops the database (forcing other sessions off).
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.pool.close().await;
        let result = drop_database(&self.admin, &self.name).await;
        self.dropped = true;
        result
    }
}

impl Drop for RunDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin = self.admin.clone();
        let name = self.name.clone();
        let joined = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(drop_database(&admin, &name));
            }
        })
        .join();
        let _ = joined;
    }
}

async fn drop_database(admin: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = admin
        .connect()
        .await
        .context("connecting to drop the run database")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists \"{name}\" with (force)"
    )))
    .execute(&mut conn)
    .await
    .context(format!("dropping database {name}"))?;
    Ok(())
}

/// Drops `<prefix>_<pid>_<n>` databases whose process is gone (a run that was
/// killed before it could drop its own).
async fn sweep_orphans(conn: &mut sqlx::PgConnection, prefix: &str) {
    let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
    let Ok(names) = sqlx::query_scalar::<_, String>("select datname from pg_database where datname like $1")
        .bind(&pattern)
        .fetch_all(&mut *conn)
        .await
    else {
        return;
    };
    for name in names {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        let pid = rest.split('_').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if pid.is_some() && !alive {
            let sql = format!("drop database if exists \"{name}\" with (force)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}
