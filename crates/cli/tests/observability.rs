//! The endpoints' reads on real Postgres: what they count, which indexes
//! they walk, and the pool they use.

use std::time::Duration;

use stuckless_cli::gauges::{QueueDepth, Unhandled};
use stuckless_cli::observability::{self, PgReads, Reads, DEPTHS_SQL};
use stuckless_tests::TestDb;

async fn sql(db: &TestDb, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Jobs in every status on queue `default`, plus two workers.
const FIXTURE: &str = "
insert into stuckless.jobs (queue, kind, payload, run_at, status, attempt, epoch, lease_owner,
                            lease_expires_at, claimed_at, created_at, updated_at, finished_at)
values ('default', 'noop',   '{}', now() - interval '1 minute', 'queued', 0, 0, null, null, null, now(), now(), null),
       ('default', 'noop',   '{}', now() - interval '1 minute', 'queued', 0, 0, null, null, null, now(), now(), null),
       ('default', 'report', '{}', now() - interval '1 minute', 'queued', 0, 0, null, null, null, now(), now(), null),
       ('default', 'report', '{}', now() + interval '1 hour',   'queued', 0, 0, null, null, null, now(), now(), null),
       ('default', 'noop',   '{}', now(), 'running', 1, 1, 'w-live', now() + interval '1 minute', now(), now(), now(), null),
       ('default', 'noop',   '{}', now(), 'running', 1, 1, 'w-gone', now() - interval '1 minute', now(), now(), now(), null),
       ('default', 'noop',   '{}', now(), 'running', 1, 1, 'w-live', now() + interval '1 minute', now() - interval '20 minutes', now(), now(), null),
       ('default', 'noop',   '{}', now(), 'dead',    5, 5, null, null, null, now(), now(), now()),
       ('mail',    'send',   '{}', now(), 'dead',    5, 5, null, null, null, now(), now(), now());
insert into stuckless.workers (id, queues, concurrency, metadata, started_at, last_heartbeat_at, in_flight, kinds)
values ('w-live',  '{default}', 1, '{}', now(), now(),                        1, '{noop}'),
       ('w-stale', '{default}', 1, '{}', now(), now() - interval '10 minutes', 0, '{report}');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_count_unfinished_and_dead_jobs_and_name_unhandled_kinds() {
    let db = TestDb::new().await;
    sql(&db, FIXTURE).await;
    let reads = PgReads {
        pool: observability::pool_beside(db.pool()),
        stale_after: Duration::from_secs(90),
    };
    reads.ping().await.unwrap();
    let s = reads.snapshot().await.unwrap();
    assert_eq!(
        s.queues,
        [
            QueueDepth {
                queue: "default".into(),
                due: 3,
                scheduled: 1,
                running: 2,
                running_expired: 1,
                dead: 1,
                // Claimed 20 minutes ago by a live worker that recorded no
                // limits: past the assumed 15 minutes.
                running_over_time_limit: 1,
            },
            QueueDepth {
                queue: "mail".into(),
                dead: 1,
                ..Default::default()
            }
        ]
    );
    // Only a stale worker handles `report`; the scheduled one is not due.
    assert_eq!(
        s.unhandled,
        [Unhandled {
            queue: "default".into(),
            kind: "report".into(),
            due: 1
        }]
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_never_read_finished_rows() {
    let db = TestDb::new().await;
    sql(&db, FIXTURE).await;
    // Enough finished rows that a whole-table read would be the planner's
    // last choice if an index served; the statistics say so.
    sql(
        &db,
        "insert into stuckless.jobs (queue, kind, payload, run_at, status, attempt, epoch, created_at, updated_at, finished_at)
         select 'default', 'noop', '{}', now(), 'succeeded', 1, 1, now(), now(), now() from generate_series(1, 100000);
         analyze stuckless.jobs;",
    )
    .await;
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("explain {DEPTHS_SQL}")))
        .fetch_all(db.pool())
        .await
        .unwrap();
    let plan = plan.join("\n");
    eprintln!("{plan}");
    assert!(
        !plan.contains("Seq Scan"),
        "a branch reads the whole table:\n{plan}"
    );
    for index in ["jobs_claim_idx", "jobs_lease_idx", "jobs_dead_idx"] {
        assert!(plan.contains(index), "{index} not used:\n{plan}");
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_pool_is_small_named_and_time_bounded() {
    let db = TestDb::new().await;
    let pool = observability::pool_beside(db.pool());
    assert_eq!(pool.options().get_max_connections(), observability::POOL_SIZE);
    let mut conn = pool.acquire().await.unwrap();
    let name: String = sqlx::query_scalar("select current_setting('application_name')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(name, observability::APPLICATION_NAME);
    let timeout: String = sqlx::query_scalar("select current_setting('statement_timeout')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(timeout, "3s");
    let slow = sqlx::query("select pg_sleep(10)").execute(&mut *conn).await;
    let error = slow.expect_err("the server cancels it").to_string();
    assert!(error.contains("statement timeout"), "{error}");
    drop(conn);
    pool.close().await;
    db.cleanup().await;
}
