//! A fresh database per test, with a runtime to drive it from sync tests.

use std::collections::BTreeMap;

use stuckless_core::driver::{JobEvents, JobGet, Storage};
use stuckless_core::{JobEventKind, JobId, JobStatus};
use stuckless_tests::TestDb;

/// A test database and a runtime for its async calls.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub db: TestDb,
}

impl Env {
    /// A fresh, migrated database (a test that cannot reach Postgres fails).
    pub fn new() -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(TestDb::new());
        Env { rt, db }
    }

    pub fn url(&self) -> String {
        self.db.url().to_owned()
    }

    /// Enqueues through the SQL function other languages use.
    pub fn sql_enqueue(&self, kind: &str, payload: &str) -> JobId {
        let id: i64 = self.rt.block_on(async {
            sqlx::query_scalar("select stuckless.enqueue('default', $1, $2::jsonb)")
                .bind(kind)
                .bind(payload)
                .fetch_one(self.db.pool())
                .await
                .unwrap()
        });
        JobId(id)
    }

    /// Runs SQL statements (no parameters) on the test database.
    pub fn sql(&self, sql: &str) {
        self.rt.block_on(async {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(self.db.pool())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// One number from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.rt.block_on(async {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(self.db.pool())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Inserts `n` jobs of kind `noop` with `status` (a finished one)
    /// finished `age` ago (a Postgres interval, e.g. `2 days`), in one
    /// statement.
    pub fn insert_finished(&self, status: &str, age: &str, n: u32) {
        self.sql(&format!(
            "insert into stuckless.jobs
               (queue, kind, payload, run_at, status, attempt, epoch, created_at, updated_at, finished_at)
             select 'default', 'noop', '{{}}', t, '{status}', 1, 1, t, t, t
               from generate_series(1, {n}), (select now() - interval '{age}' as t) a;
             analyze stuckless.jobs;"
        ));
    }

    pub fn job(&self, id: JobId) -> stuckless_core::Job {
        self.rt
            .block_on(self.db.storage().job_get(JobGet { id }))
            .unwrap()
            .expect("job exists")
    }

    pub fn status(&self, id: JobId) -> JobStatus {
        self.job(id).status
    }

    pub fn events(&self, id: JobId) -> Vec<JobEventKind> {
        self.rt
            .block_on(self.db.storage().job_events(JobEvents { id }))
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

/// A worker's /metrics, parsed (see [`super::parse_exposition`]).
pub fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = super::http(port, "GET", "/metrics", None).expect("scrape");
    assert_eq!(status, 200, "{body}");
    super::parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}
