//! Operating the queue from inside the database with no worker alive
//! (migration 5): `stuckless.reap()` and `reap_at` recover expired leases
//! with the same transitions and events as the Rust reaper and never touch a
//! live lease; `stuckless.prune()` deletes only finished jobs past their age;
//! `stuckless.health()` and the `stuck_jobs` view say what is wrong per queue
//! and per job. The verdicts themselves are compared with `stuckless
//! diagnose` on every diagnose fixture in crates/cli/tests/stuck_jobs_view.rs.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::{JobComplete, JobEvents, JobGet, JobReapExpired, Storage, WorkerRegister};
use stuckless_core::{Clock, Epoch, JobId, JobStatus, ManualClock, MemStore, NewJob};
use stuckless_tests::{claim_default, insert, manual_clock, sql_value, TestDb};

const LEASE: Duration = Duration::from_secs(30);

/// Three jobs on `s`: 1 (one attempt: dies when reaped), 2 (requeued when
/// reaped), both claimed by w1 with a 30 s lease; 3 claimed 10 s later by
/// w2. Then the clock reaches 1 and 2's expiry, 3's lease still live.
async fn three_leases(s: &dyn Storage, clock: &ManualClock) {
    s.job_insert(insert(
        NewJob::new("default", "report", serde_json::json!({"n": 1})).max_attempts(1),
    ))
    .await
    .unwrap();
    s.job_insert(insert(NewJob::new(
        "default",
        "report",
        serde_json::json!({"n": 2}),
    )))
    .await
    .unwrap();
    s.job_insert(insert(NewJob::new(
        "default",
        "report",
        serde_json::json!({"n": 3}),
    )))
    .await
    .unwrap();
    assert_eq!(s.job_claim(claim_default("w1", 2)).await.unwrap().len(), 2);
    clock.advance(Duration::from_secs(10));
    assert_eq!(s.job_claim(claim_default("w2", 1)).await.unwrap().len(), 1);
    clock.advance(LEASE - Duration::from_secs(10));
}

/// `stuckless.reap_at`, called as SQL with no Rust in the loop, leaves the
/// jobs and their timelines exactly as the in-memory model's reaper does,
/// and leaves the live lease alone.
#[tokio::test]
async fn reap_in_sql_matches_the_rust_reaper_and_spares_live_leases() {
    let db = stuckless_tests::test_db!("reap_in_sql_matches_the_rust_reaper_and_spares_live_leases");
    let pg_clock = manual_clock();
    let pg = db.pinned_storage(Arc::new(pg_clock.clone()));
    let mem_clock = manual_clock();
    let mem = MemStore::new(mem_clock.clone());
    three_leases(&pg, &pg_clock).await;
    three_leases(&mem, &mem_clock).await;

    let now = pg_clock.now();
    let reaped: Vec<(i64, String)> =
        sqlx::query_as("select job_id, outcome from stuckless.reap_at(stuckless.from_micros($1))")
            .bind(now.as_micros())
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(reaped, [(1, "dead".to_string()), (2, "queued".to_string())]);
    let model = mem.job_reap_expired(JobReapExpired { limit: 100 }).await.unwrap();
    assert_eq!((model.dead, model.requeued), (vec![JobId(1)], vec![JobId(2)]));

    for id in 1..=3 {
        let id = JobId(id);
        let in_pg = pg.job_get(JobGet { id }).await.unwrap();
        let in_mem = mem.job_get(JobGet { id }).await.unwrap();
        assert_eq!(in_pg, in_mem, "job {id} after the reap");
        let events_pg = pg.job_events(JobEvents { id }).await.unwrap();
        let events_mem = mem.job_events(JobEvents { id }).await.unwrap();
        assert_eq!(events_pg, events_mem, "job {id}'s events after the reap");
    }
    let live = pg.job_get(JobGet { id: JobId(3) }).await.unwrap().unwrap();
    assert_eq!(
        (live.status, live.epoch, live.lease_owner.as_deref()),
        (JobStatus::Running, Epoch(1), Some("w2"))
    );
    let again: i64 = sqlx::query_scalar("select count(*) from stuckless.reap_at(stuckless.from_micros($1))")
        .bind(now.as_micros())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(again, 0, "a second reap finds nothing");
}

/// A `report` job on queue "default" claimed by "crashed" at the pinned
/// instant, days before the database's now: its lease has expired.
async fn expired_lease(db: &TestDb) {
    let past = db.pinned_storage(Arc::new(manual_clock()));
    past.job_insert(insert(NewJob::new("default", "report", serde_json::json!({}))))
        .await
        .unwrap();
    past.job_claim(claim_default("crashed", 1)).await.unwrap();
}

/// With no worker registered at all, `select stuckless.reap()` (the pg_cron
/// line) takes back a lease that expired by the database's clock, wakes the
/// listeners, and leaves a lease that is still live by that clock.
#[tokio::test]
async fn reap_with_no_worker_alive_recovers_an_expired_job() {
    let db = stuckless_tests::test_db!("reap_with_no_worker_alive_recovers_an_expired_job");
    expired_lease(&db).await;
    // Claimed by the database's clock with an hour's lease: live.
    let live = db.storage();
    live.job_insert(insert(NewJob::new("default", "report", serde_json::json!({}))))
        .await
        .unwrap();
    let claim = stuckless_core::driver::JobClaim {
        lease: Duration::from_secs(3600),
        ..claim_default("alive", 1)
    };
    live.job_claim(claim).await.unwrap();
    let workers: i64 = sql_value(db.pool(), "select count(*) from stuckless.workers").await;
    assert_eq!(workers, 0, "no worker alive");

    let mut listener = sqlx::postgres::PgListener::connect(db.url()).await.unwrap();
    listener.listen("stuckless_jobs").await.unwrap();
    let n: i32 = sql_value(db.pool(), "select stuckless.reap()").await;
    assert_eq!(n, 1);
    let woken = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("a reaped job wakes the listeners")
        .unwrap();
    assert_eq!(woken.payload(), "default");

    let recovered = db.job(1).await;
    assert_eq!(
        (recovered.status, recovered.lease_owner.as_deref()),
        (JobStatus::Queued, Some("crashed"))
    );
    let events = live.job_events(JobEvents { id: JobId(1) }).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, stuckless_core::JobEventKind::Reaped);
    assert!(events[0].detail.as_deref().unwrap().ends_with("(owner crashed)"));
    let untouched = db.job(2).await;
    assert_eq!(
        (untouched.status, untouched.epoch),
        (JobStatus::Running, Epoch(1))
    );
    let n: i32 = sql_value(db.pool(), "select stuckless.reap()").await;
    assert_eq!(n, 0, "idempotent");
}

/// `select stuckless.prune()` deletes finished jobs past the workers'
/// default retention, with their events, and nothing else.
#[tokio::test]
async fn prune_in_sql_deletes_only_finished_jobs_past_their_age() {
    let db = stuckless_tests::test_db!("prune_in_sql_deletes_only_finished_jobs_past_their_age");
    let clock = manual_clock();
    let s = db
        .pinned_storage(Arc::new(clock.clone()))
        .with_happy_path_events(true);
    for _ in 0..2 {
        s.job_insert(insert(NewJob::new("default", "report", serde_json::json!({}))))
            .await
            .unwrap();
    }
    let claimed = s.job_claim(claim_default("w1", 1)).await.unwrap().remove(0);
    s.job_complete(JobComplete {
        id: claimed.job.id,
        epoch: claimed.job.epoch,
    })
    .await
    .unwrap();
    // The pinned instant is days before the database's now: job 1 finished
    // more than a day ago; job 2 never ran.
    let deleted: i64 = sql_value(db.pool(), "select stuckless.prune()").await;
    assert_eq!(deleted, 1);
    assert_eq!(s.job_get(JobGet { id: JobId(1) }).await.unwrap(), None);
    let events: i64 = sql_value(
        db.pool(),
        "select count(*) from stuckless.job_events where job_id = 1",
    )
    .await;
    assert_eq!(events, 0, "its events go with it");
    assert_eq!(db.job(2).await.status, JobStatus::Queued);
    let deleted: i64 = sql_value(db.pool(), "select stuckless.prune()").await;
    assert_eq!(deleted, 0);
    // A retention longer than the job's age keeps it.
    let kept: i64 = sql_value(
        db.pool(),
        "select succeeded from stuckless.prune_at(now(), interval '100 years', interval '1 day', interval '7 days', 10)",
    )
    .await;
    assert_eq!(kept, 0);
}

/// One health row per queue, with live workers and stuck jobs by cause; the
/// stuck_jobs view lists the jobs that need someone and not the others.
#[tokio::test]
async fn health_and_stuck_jobs_name_each_queue_and_job() {
    let db = stuckless_tests::test_db!("health_and_stuck_jobs_name_each_queue_and_job");
    expired_lease(&db).await;
    // A due job on "mail", which no live worker serves.
    let s = db.storage();
    s.job_insert(insert(NewJob::new("mail", "send", serde_json::json!({}))))
        .await
        .unwrap();
    // A due job on "default" that a live worker handles: waiting, not stuck.
    s.job_insert(insert(NewJob::new("default", "report", serde_json::json!({}))))
        .await
        .unwrap();
    s.worker_register(WorkerRegister {
        id: "alive".into(),
        queues: vec!["default".into()],
        concurrency: 1,
        metadata: serde_json::json!({}),
        kinds: vec!["report".into()],
    })
    .await
    .unwrap();

    type Row = (String, i64, i64, i64, i64, i64, i64);
    let health: Vec<Row> = sqlx::query_as(
        "select queue, due, running, expired_leases, stuck_no_live_worker, stuck, live_workers
         from stuckless.health()",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        health,
        [
            ("default".to_string(), 1, 0, 1, 0, 1, 1),
            ("mail".to_string(), 1, 0, 0, 1, 1, 0),
        ]
    );

    let stuck: Vec<(i64, String, String, Option<String>, String)> = sqlx::query_as(
        "select job_id, verdict, fix, fix_in_sql, problem from stuckless.stuck_jobs order by job_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(stuck.len(), 2, "{stuck:?}");
    assert_eq!(
        (
            stuck[0].0,
            stuck[0].1.as_str(),
            stuck[0].2.as_str(),
            stuck[0].3.as_deref()
        ),
        (
            1,
            "expired_lease",
            "stuckless requeue 1",
            Some("select stuckless.reap()")
        )
    );
    assert!(stuck[0].4.contains("crashed"), "{}", stuck[0].4);
    assert_eq!(
        (stuck[1].0, stuck[1].1.as_str(), stuck[1].2.as_str()),
        (2, "no_live_worker", "stuckless worker --queues mail")
    );
    // After a reap from SQL, the expired lease is no longer stuck.
    let _: i32 = sql_value(db.pool(), "select stuckless.reap()").await;
    let left: Vec<i64> = sqlx::query_scalar("select job_id from stuckless.stuck_jobs")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, [2]);
}

/// A job can be named by its external id (an imported job's old UUID).
#[tokio::test]
async fn a_job_is_found_by_its_external_id() {
    let db = stuckless_tests::test_db!("a_job_is_found_by_its_external_id");
    sqlx::raw_sql(
        "select stuckless.enqueue('default', 'report');
         update stuckless.jobs set external_id = '8d4f3a3e-6d0c-4a56-a3d5-2b6c7f6b9a10' where id = 1;",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let by_external: i64 = sql_value(
        db.pool(),
        "select stuckless.job_id_of('8d4f3a3e-6d0c-4a56-a3d5-2b6c7f6b9a10')",
    )
    .await;
    let by_id: i64 = sql_value(db.pool(), "select stuckless.job_id_of('1')").await;
    let unknown: Option<i64> = sql_value(db.pool(), "select stuckless.job_id_of('nope')").await;
    assert_eq!((by_external, by_id, unknown), (1, 1, None));
    let verdict: String = sql_value(
        db.pool(),
        "select verdict from stuckless.job_verdict('8d4f3a3e-6d0c-4a56-a3d5-2b6c7f6b9a10')",
    )
    .await;
    assert_eq!(verdict, "no_live_worker");
    let err = stuckless_tests::sql_error(
        db.pool(),
        "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at, external_id)
         values ('default', 'report', '{}', now(), now(), now(), '8d4f3a3e-6d0c-4a56-a3d5-2b6c7f6b9a10')",
    )
    .await;
    assert_eq!(
        stuckless_tests::sqlstate(&err).as_deref(),
        Some("23505"),
        "external ids are unique"
    );
}
