//! Postgres's side of "never stuck by default": the claim, prune and
//! per-kind counts stay on their indexes however many finished jobs there
//! are; a row no claim can convert never stalls the others; Rust and the
//! SQL API accept and refuse the same run_at and time limits.

use std::time::Duration;

use stuckless_core::driver::{JobClaim, QueueKindsGet, QueueStatsGet, Storage};
use stuckless_core::{JobId, NewJob, Timestamp};
use stuckless_tests::{sqlstate, TestDb};

/// 50,000 finished jobs and 200 unfinished ones of two kinds, analysed: a
/// table where any plan that reads finished rows shows it.
async fn mostly_finished(db: &TestDb) {
    sqlx::raw_sql(
        "insert into stuckless.jobs (queue, kind, payload, run_at, status, finished_at, created_at, updated_at)
         select 'default', 'report', '{}', now(), 'succeeded', now() - interval '2 days', now(), now()
         from generate_series(1, 50000);
         insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
         select 'default', case when i % 2 = 0 then 'report' else 'email' end, '{}', now(), now(), now()
         from generate_series(1, 200) i;
         analyze stuckless.jobs;",
    )
    .execute(db.pool())
    .await
    .unwrap();
}

async fn plan(
    db: &TestDb,
    statement: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> String {
    let explain = format!("explain {statement}");
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(explain)))
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| sqlx::Row::get::<String, _>(r, 0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The claim with the worker's kinds walks the claim index in order and
/// stops after `limit`: the kind is a filter, not a sort.
#[tokio::test]
async fn a_claim_by_kind_stays_on_the_claim_index() {
    let db = stuckless_tests::test_db!("a_claim_by_kind_stays_on_the_claim_index");
    mostly_finished(&db).await;
    let plan = plan(&db, stuckless_pg::plans::CLAIM_ONE_QUEUE, |q| {
        q.bind(None::<i64>)
            .bind(vec!["default".to_string()])
            .bind(10i64)
            .bind("w1")
            .bind(30_000_000i64)
            .bind(false)
            .bind(Some(vec!["report".to_string()]))
    })
    .await;
    let picking = &plan[plan.find("CTE picked").expect("the claim picks in a CTE")..];
    let picking = &picking[..picking.find("CTE upd").unwrap_or(picking.len())];
    assert!(picking.contains("jobs_claim_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan on jobs"), "{plan}");
    // The statement's own `order by` sorts only the claimed rows at the end.
    assert!(
        !picking.contains("Sort"),
        "an ordered index walk needs no sort:\n{plan}"
    );
}

/// Queue gauges and retention read only the rows they are about.
#[tokio::test]
async fn per_kind_counts_and_prune_never_scan_the_finished_jobs() {
    let db = stuckless_tests::test_db!("per_kind_counts_and_prune_never_scan_the_finished_jobs");
    mostly_finished(&db).await;
    let kinds = plan(&db, stuckless_pg::plans::QUEUE_KINDS, |q| q.bind(None::<i64>)).await;
    assert!(!kinds.contains("Seq Scan on jobs"), "{kinds}");
    // Retention runs inside stuckless.prune_at, whose plan EXPLAIN cannot
    // show; the transaction's own scan counters can: no sequential scan of
    // jobs, and the walk along the finished-jobs index.
    let day = 86_400_000_000i64;
    let mut tx = db.pool().begin().await.unwrap();
    let deleted: i64 = sqlx::query_scalar(
        "select succeeded + cancelled + dead from stuckless.prune_at(now(), stuckless.micros($1), \
         stuckless.micros($1), stuckless.micros($2), 1000)",
    )
    .bind(3 * day)
    .bind(7 * day)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(deleted, 0, "every finished job is 2 days old, within 3 days");
    let (seq, finished_idx): (i64, i64) = sqlx::query_as(
        "select (select seq_scan from pg_stat_xact_user_tables where relid = 'stuckless.jobs'::regclass), \
                pg_stat_get_xact_numscans('stuckless.jobs_finished_idx'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(seq, 0, "prune scanned the jobs table");
    assert!(finished_idx >= 1, "prune did not walk jobs_finished_idx");

    let storage = db.storage();
    let counts = storage.queue_kinds_get(QueueKindsGet {}).await.unwrap();
    let due: Vec<_> = counts.iter().map(|k| (k.kind.as_str(), k.due)).collect();
    assert_eq!(due, [("email", 100), ("report", 100)]);
}

/// The second line behind the CHECK: should a row with `run_at =
/// '-infinity'` reach the table anyway (the constraint dropped by hand), the
/// claim steps over it and the queue's reads still answer. Before, every
/// claim failed with "cannot convert infinity to bigint".
#[tokio::test]
async fn a_row_no_claim_can_convert_never_blocks_the_others() {
    let db = stuckless_tests::test_db!("a_row_no_claim_can_convert_never_blocks_the_others");
    sqlx::raw_sql(
        "alter table stuckless.jobs drop constraint run_at_in_range;
         insert into stuckless.jobs (queue, kind, payload, run_at, priority, created_at, updated_at)
         values ('default', 'noop', '{}', '-infinity', 10, now(), now());
         select stuckless.enqueue('default', 'noop');",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let storage = db.storage();
    let claim = JobClaim {
        kinds: Some(vec!["noop".into()]),
        ..stuckless_tests::claim_default("w1", 10)
    };
    let claimed = storage
        .job_claim(claim)
        .await
        .expect("the poison row must not fail the claim");
    assert_eq!(claimed.iter().map(|c| c.id()).collect::<Vec<_>>(), [JobId(2)]);
    storage
        .queue_stats(QueueStatsGet {})
        .await
        .expect("stats still answer");
    storage
        .queue_kinds_get(QueueKindsGet {})
        .await
        .expect("gauges still answer");
}

/// What Rust accepts, the SQL API accepts, and what one refuses the other
/// refuses naming the same field: a role with EXECUTE on
/// `stuckless.enqueue` cannot write what `NewJob` would not.
#[tokio::test]
async fn rust_and_the_sql_api_agree_on_run_at_and_time_limits() {
    let db = stuckless_tests::test_db!("rust_and_the_sql_api_agree_on_run_at_and_time_limits");
    let year_1 = stuckless_core::limits::MIN_TIMESTAMP_MICROS;
    let year_9999 = stuckless_core::limits::MAX_TIMESTAMP_MICROS;
    let run_ats = [year_1 - 1, year_1, 0, year_9999, year_9999 + 1];
    for micros in run_ats {
        let rust = NewJob::new("q", "k", serde_json::json!({}))
            .run_at(Timestamp::from_micros(micros))
            .check();
        let sql = "select stuckless.enqueue('q', 'k', run_at => stuckless.from_micros($1))";
        sql_agrees(&db, "run_at", sql, micros, rust.err().map(|e| e.field)).await;
    }
    let week = 7 * 86_400_000_000u64;
    for micros in [0, 1, 90_000_000, week, week + 1] {
        let limit = Duration::from_micros(micros);
        let rust = NewJob::new("q", "k", serde_json::json!({}))
            .timeout(limit)
            .check();
        let sql = "select stuckless.enqueue('q', 'k', timeout => stuckless.micros($1))";
        sql_agrees(&db, "timeout", sql, micros as i64, rust.err().map(|e| e.field)).await;
    }
    let stored: Vec<Option<i64>> =
        sqlx::query_scalar("select timeout_us from stuckless.jobs where timeout_us is not null order by id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(stored, [Some(1), Some(90_000_000), Some(week as i64)]);
}

/// Enqueues through `enqueue` (an SQL API call taking `micros` as its one
/// parameter) and checks that it accepts or refuses as Rust did: `rust` is
/// the field Rust refused, if it did.
async fn sql_agrees(
    db: &TestDb,
    field: &str,
    enqueue: &'static str,
    micros: i64,
    rust: Option<&'static str>,
) {
    let value = format!("{micros} µs");
    let sql = sqlx::query(enqueue).bind(micros).execute(db.pool()).await;
    match (rust, sql) {
        (None, Ok(_)) => {}
        (Some(rust_field), Err(e)) => {
            assert_eq!(rust_field, field, "{value}");
            assert_eq!(sqlstate(&e).as_deref(), Some("22023"), "{value}: {e}");
            assert!(
                e.to_string().contains(&format!("invalid {field}")),
                "{value}: {e}"
            );
        }
        (rust, sql) => panic!("{field} = {value}: Rust says {rust:?}, SQL says {sql:?}"),
    }
}

/// A row the claim can convert but Rust cannot read: jsonb holds numbers
/// beyond `f64` (`1e400`, which `stuckless.enqueue` accepted before
/// migration 4), which `serde_json` refuses. Before, the claim's answer failed as a whole after
/// the statement had marked every picked job running, so the good jobs
/// beside it waited for their leases to expire, again and again. Now the
/// unreadable job goes dead with the reason and the others are handed out.
#[tokio::test]
async fn a_claimed_row_rust_cannot_read_goes_dead_and_the_others_run() {
    let db = stuckless_tests::test_db!("a_claimed_row_rust_cannot_read_goes_dead_and_the_others_run");
    // Migration 4 refuses such a payload at the door; switch that off to
    // stand for a row written before it, or by a writer that bypassed it.
    sqlx::raw_sql(
        "alter table stuckless.jobs disable trigger jobs_refuse_unreadable_payload;
         select stuckless.enqueue('default', 'noop', '{\"n\": 1e400}'::jsonb, priority => 5::smallint);
         select stuckless.enqueue('default', 'noop');",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let storage = db.storage();
    let claim = stuckless_tests::claim_default("w1", 10);
    let claimed = storage
        .job_claim(claim.clone())
        .await
        .expect("one unreadable row must not fail the claim");
    assert_eq!(claimed.iter().map(|c| c.id()).collect::<Vec<_>>(), [JobId(2)]);
    let (status, error): (String, String) =
        sqlx::query_as("select status, last_error from stuckless.jobs where id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(status, "dead");
    assert!(error.starts_with("unreadable row:"), "{error}");
    let events: Vec<String> =
        sqlx::query_scalar("select kind from stuckless.job_events where job_id = 1 order by id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(events, ["dead"]);
    assert!(
        storage.job_claim(claim).await.unwrap().is_empty(),
        "nothing left to claim"
    );
}

/// Guards the SQL API accepting what no worker can read: `'{"n": 1e400}'`
/// went in through `stuckless.enqueue` and only failed at the claim. Every
/// writer is now refused at insert with 22023 naming the payload; numbers
/// a 64-bit float holds still go in.
#[tokio::test]
async fn a_payload_number_no_worker_can_read_is_refused_at_insert() {
    let db = stuckless_tests::test_db!("a_payload_number_no_worker_can_read_is_refused_at_insert");
    for payload in [r#"{"n": 1e400}"#, r#"[1, {"deep": [-2e308]}]"#] {
        let through_api = sqlx::query("select stuckless.enqueue('q', 'k', $1::jsonb)")
            .bind(payload)
            .execute(db.pool())
            .await
            .unwrap_err();
        let direct = sqlx::query(
            "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
             values ('q', 'k', $1::jsonb, now(), now(), now())",
        )
        .bind(payload)
        .execute(db.pool())
        .await
        .unwrap_err();
        for err in [through_api, direct] {
            assert_eq!(sqlstate(&err).as_deref(), Some("22023"), "{payload}: {err}");
            assert!(err.to_string().contains("invalid payload"), "{payload}: {err}");
        }
    }
    let fine: i64 =
        sqlx::query_scalar("select stuckless.enqueue('q', 'k', '{\"n\": 1.7e308, \"m\": 1e-400}'::jsonb)")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let job = db
        .storage()
        .job_get(stuckless_core::driver::JobGet { id: JobId(fine) })
        .await
        .unwrap()
        .unwrap();
    let n = job.payload["n"].as_f64().expect("a worker reads it");
    assert!(n.is_finite() && n > 1.69e308, "{n}");
}
