//! The SQL API other languages call (stuckless.enqueue / cancel / job_state)
//! and transactional enqueue from Rust. The LISTEN/NOTIFY waker is tested in
//! `waker.rs`, the storage's connection and operator reads in `pg_storage.rs`.

use serde_json::{json, Value};
use stuckless_core::driver::{JobComplete, JobGet, Storage};
use stuckless_core::{JobEventKind, JobId, JobStatus, NewJob};
use stuckless_pg::PgError;
use stuckless_tests::{
    assert_wrong_status, claim_default, event_kinds, insert, sql_error, sql_value, sqlstate,
};

#[tokio::test]
async fn sql_enqueue_inserts_validates_and_deduplicates() {
    let db = stuckless_tests::test_db!("sql_enqueue_inserts_validates_and_deduplicates");
    let pool = db.pool();
    let id: i64 =
        sqlx::query_scalar("select stuckless.enqueue('default', 'report', '{\"section\": 1}'::jsonb)")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(id, 1);
    let job = db.job(id).await;
    assert_eq!((job.queue.as_str(), job.kind.as_str()), ("default", "report"));
    assert_eq!(job.payload, json!({"section": 1}));
    assert_eq!(
        (job.status, job.max_attempts, job.priority),
        (JobStatus::Queued, 5, 0)
    );
    assert_eq!(job.run_at, job.created_at, "run_at defaults to now");
    // Named arguments, as supabase-js rpc sends them.
    let keyed = "select stuckless.enqueue(queue => 'mail', kind => 'send', payload => '[1]'::jsonb,
                 priority => 3::smallint, max_attempts => 2, idempotency_key => 'order-7',
                 run_at => now() + interval '1 hour')";
    let k1: i64 = sqlx::query_scalar(keyed).fetch_one(pool).await.unwrap();
    let k2: i64 = sqlx::query_scalar(keyed).fetch_one(pool).await.unwrap();
    assert_eq!((k1, k2), (2, 2), "one job per idempotency key");
    let job = db.job(2).await;
    assert_eq!((job.priority, job.max_attempts), (3, 2));
    assert_eq!(job.run_at.micros_since(job.created_at), 3_600_000_000);
    // The same key through the Rust API finds the SQL-made job.
    let out = db
        .storage()
        .job_insert(insert(
            NewJob::new("x", "y", json!(null)).idempotency_key("order-7"),
        ))
        .await
        .unwrap();
    assert_eq!((out.job.id, out.inserted), (JobId(2), false));

    let bad = [
        ("select stuckless.enqueue('', 'k')", "invalid queue"),
        (
            "select stuckless.enqueue('q; drop table stuckless.jobs', 'k')",
            "invalid queue",
        ),
        ("select stuckless.enqueue(repeat('q', 129), 'k')", "invalid queue"),
        ("select stuckless.enqueue('q', 'kïnd')", "invalid kind"),
        ("select stuckless.enqueue('q', null)", "invalid kind"),
        ("select stuckless.enqueue('q', 'k', null)", "invalid payload"),
        (
            "select stuckless.enqueue('q', 'k', to_jsonb(repeat('x', 1048576)))",
            "invalid payload",
        ),
        (
            "select stuckless.enqueue('q', 'k', max_attempts => 0)",
            "invalid max_attempts",
        ),
        (
            "select stuckless.enqueue('q', 'k', idempotency_key => '')",
            "invalid idempotency_key",
        ),
        (
            "select stuckless.enqueue('q', 'k', idempotency_key => repeat('k', 256))",
            "invalid idempotency_key",
        ),
        // Once accepted: '-infinity' made every claim fail, stalling the queue.
        (
            "select stuckless.enqueue('q', 'k', run_at => '-infinity')",
            "invalid run_at",
        ),
        (
            "select stuckless.enqueue('q', 'k', run_at => 'infinity')",
            "invalid run_at",
        ),
        (
            "select stuckless.enqueue('q', 'k', run_at => '0001-01-01 00:00:00+00'::timestamptz - interval '1 day')",
            "invalid run_at",
        ),
        (
            "select stuckless.enqueue('q', 'k', timeout => interval '0 seconds')",
            "invalid timeout",
        ),
        (
            "select stuckless.enqueue('q', 'k', timeout => interval '8 days')",
            "invalid timeout",
        ),
    ];
    for (sql, message) in bad {
        let err = sql_error(pool, sql).await;
        assert_eq!(sqlstate(&err).as_deref(), Some("22023"), "{sql}: {err}");
        assert!(err.to_string().contains(message), "{sql}: {err}");
    }
    let count: i64 = sql_value(pool, "select count(*) from stuckless.jobs").await;
    assert_eq!(count, 2, "bad input wrote nothing");
    // A payload that is not JSON at all never reaches the function.
    let err = sqlx::query("select stuckless.enqueue('q', 'k', $1::text::jsonb)")
        .bind("{not json")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"), "{err}");
}

#[tokio::test]
async fn sql_cancel_and_job_state_follow_the_storage_rules() {
    let db = stuckless_tests::test_db!("sql_cancel_and_job_state_follow_the_storage_rules");
    let pool = db.pool();
    let s = db.storage();
    for _ in 0..3 {
        s.job_insert(insert(NewJob::new("default", "k", json!({}))))
            .await
            .unwrap();
    }
    let state: Option<Value> = sql_value(pool, "select stuckless.job_state(99)").await;
    assert_eq!(state, None);
    let state: Value = sql_value(pool, "select stuckless.job_state(1)").await;
    assert_eq!(
        (state["status"].as_str(), state["attempt"].as_i64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(state["lease_expired"], json!(false));

    let cancelled: Value = sql_value(pool, "select stuckless.cancel(1)").await;
    assert_eq!(cancelled["status"], json!("cancelled"));
    let again: Value = sql_value(pool, "select stuckless.cancel(1)").await;
    assert_eq!(again, cancelled, "cancelling twice changes nothing");
    assert_eq!(event_kinds(&s, JobId(1)).await, vec![JobEventKind::Cancelled]);

    // Cancelling a running job fences its holder.
    let claim = claim_default("w1", 2);
    let claimed = s.job_claim(claim).await.unwrap();
    let state: Value = sql_value(pool, "select stuckless.job_state(2)").await;
    assert_eq!(
        (state["status"].as_str(), state["lease_owner"].as_str()),
        (Some("running"), Some("w1"))
    );
    sqlx::query("select stuckless.cancel(2)")
        .execute(pool)
        .await
        .unwrap();
    let err = s
        .job_complete(JobComplete {
            id: claimed[0].id(),
            epoch: claimed[0].epoch(),
        })
        .await
        .unwrap_err();
    assert_wrong_status(&err, JobStatus::Cancelled);

    s.job_complete(JobComplete {
        id: claimed[1].id(),
        epoch: claimed[1].epoch(),
    })
    .await
    .unwrap();
    let err = sql_error(pool, "select stuckless.cancel(3)").await;
    assert_eq!(sqlstate(&err).as_deref(), Some("55000"), "{err}");
    assert!(err.to_string().contains("job 3 is succeeded"), "{err}");
    let err = sql_error(pool, "select stuckless.cancel(42)").await;
    assert_eq!(sqlstate(&err).as_deref(), Some("P0002"), "{err}");
}

#[tokio::test]
async fn transactional_enqueue_commits_or_rolls_back_with_the_callers_writes() {
    let db = stuckless_tests::test_db!("transactional_enqueue_commits_or_rolls_back_with_the_callers_writes");
    let pool = db.pool();
    sqlx::query("create table public.reports (id bigint primary key)")
        .execute(pool)
        .await
        .unwrap();
    let s = db.storage();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into public.reports values (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let out = stuckless_pg::enqueue(&mut *tx, NewJob::new("default", "report", json!({"report": 1})))
        .await
        .unwrap();
    assert!(out.inserted);
    assert_eq!(
        s.job_get(JobGet { id: out.job.id }).await.unwrap(),
        None,
        "invisible before commit"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        s.job_get(JobGet { id: out.job.id }).await.unwrap(),
        None,
        "rolled back with the caller's write"
    );

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into public.reports values (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let job = NewJob::new("default", "report", json!({"report": 2})).idempotency_key("report-2");
    let first = stuckless_pg::enqueue(&mut *tx, job.clone()).await.unwrap();
    let second = stuckless_pg::enqueue(&mut *tx, job).await.unwrap();
    assert_eq!((first.inserted, second.inserted), (true, false));
    assert_eq!(first.job.id, second.job.id);
    tx.commit().await.unwrap();
    assert_eq!(
        s.job_get(JobGet { id: first.job.id }).await.unwrap().unwrap(),
        first.job
    );

    // Through the pool, and with bad input refused before anything is sent.
    let direct = stuckless_pg::enqueue(pool, NewJob::new("default", "k", json!(1)))
        .await
        .unwrap();
    assert!(direct.job.id > first.job.id);
    let err = stuckless_pg::enqueue(pool, NewJob::new("default", "", json!(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgError::Invalid(ref v) if v.field == "kind"),
        "{err}"
    );
}

#[tokio::test]
async fn the_sql_api_needs_only_execute_rights_and_is_closed_to_public() {
    let db = stuckless_tests::test_db!("the_sql_api_needs_only_execute_rights_and_is_closed_to_public");
    // Roles are cluster-wide: name them after this test's database.
    let app = format!("{}_app", db.name());
    let stranger = format!("{}_anon", db.name());
    let pool = db.pool();
    for sql in [
        format!("create role \"{app}\""),
        format!("create role \"{stranger}\""),
        format!("grant usage on schema stuckless to \"{app}\", \"{stranger}\""),
        format!(
            "grant execute on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text, interval),
             stuckless.cancel(bigint), stuckless.job_state(bigint) to \"{app}\""
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let as_role = |role: &str| format!("set role \"{role}\"");
    sqlx::query(sqlx::AssertSqlSafe(as_role(&app)))
        .execute(&mut *conn)
        .await
        .unwrap();
    let id: i64 = sql_value(&mut *conn, "select stuckless.enqueue('default', 'k')").await;
    let state: Value = sqlx::query_scalar("select stuckless.cancel($1)")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(state["status"], json!("cancelled"));
    let err = sqlx::query(
        "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
                           values ('q', 'k', '{}', now(), now(), now())",
    )
    .execute(&mut *conn)
    .await
    .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "no table rights needed or given: {err}"
    );
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(as_role(&stranger)))
        .execute(&mut *conn)
        .await
        .unwrap();
    let err = sql_error(&mut *conn, "select stuckless.enqueue('default', 'k')").await;
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "PUBLIC may not enqueue: {err}"
    );
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    drop(conn);
    for role in [&app, &stranger] {
        for sql in [
            format!("drop owned by \"{role}\""),
            format!("drop role \"{role}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.unwrap();
        }
    }
}

/// Guards the poison row: `run_at => '-infinity'` through the SQL API (allowed
/// to a role with EXECUTE only) made every claim fail with "cannot convert
/// infinity to bigint", so every other job stayed queued for ever. The API
/// refuses it (above) and so does the table, whoever writes to it; a row
/// written before migration 3 was made dead by it, with the reason.
#[tokio::test]
async fn no_row_with_an_out_of_range_run_at_can_reach_the_table() {
    let db = stuckless_tests::test_db!("no_row_with_an_out_of_range_run_at_can_reach_the_table");
    for at in ["-infinity", "infinity", "0001-01-01 00:00:00+00 BC"] {
        let err = sqlx::query(
            "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
             values ('q', 'k', '{}', $1::text::timestamptz, now(), now())",
        )
        .bind(at)
        .execute(db.pool())
        .await
        .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("23514"), "{at}: {err}");
        assert!(err.to_string().contains("run_at_in_range"), "{at}: {err}");
    }
    // What the migration did to a row written before it: replay its repair on
    // a row that slipped past (constraint dropped), then check the outcome.
    sqlx::query("alter table stuckless.jobs drop constraint run_at_in_range")
        .execute(db.pool())
        .await
        .unwrap();
    let poisoned: i64 = sqlx::query_scalar("select stuckless.enqueue('q', 'k')")
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::query("update stuckless.jobs set run_at = '-infinity' where id = $1")
        .bind(poisoned)
        .execute(db.pool())
        .await
        .unwrap();
    let repair = include_str!("../../migrations/20261130000003_never_stuck.sql");
    let repair = &repair[repair.find("with poisoned as").unwrap()..];
    let repair = &repair[..repair.find("alter table stuckless.jobs add column").unwrap()];
    sqlx::raw_sql(sqlx::AssertSqlSafe(repair))
        .execute(db.pool())
        .await
        .unwrap();
    let job = db.job(poisoned).await;
    assert_eq!(job.status, JobStatus::Dead);
    assert!(job
        .last_error
        .unwrap()
        .contains("run_at -infinity is outside years 1 to 9999"));
    assert_eq!(
        event_kinds(&db.storage(), JobId(poisoned)).await,
        [JobEventKind::Dead]
    );
}
