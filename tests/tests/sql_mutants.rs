//! SQL is code too: each hand-made mutant of `PgStorage`'s fencing, expiry
//! and reap SQL (`stuckless_pg::SqlMutant`: an epoch or status predicate
//! dropped, `<` for `<=` on an expiry, `skip locked` forgotten, ...) must be
//! caught by a guard — the conformance cases, or a check below that a claim
//! or a reap never waits on a row another transaction holds — and every
//! guard that catches one must pass on the real SQL, so the catch is the
//! mutant's doing. The mutation score of the Rust code is cargo-mutants'
//! (docs/mutants.md).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::json;
use stuckless_core::driver::{JobClaim, JobInsert, JobReapExpired, Storage};
use stuckless_core::{Clock, JobId, ManualClock, NewJob};
use stuckless_pg::{PgStorage, SqlMutant};
use stuckless_tests::{manual_clock, TestDb};

/// A check run on a storage with the real SQL (`None`) or one mutant: `Err`
/// says what went wrong.
type Guard = fn(Option<SqlMutant>) -> BoxFuture<'static, Result<(), String>>;

/// The guards, cheapest and broadest first.
const GUARDS: [(&str, Guard); 3] = [
    ("conformance", |m| Box::pin(conformance(m))),
    ("claim skips locked rows", |m| {
        Box::pin(claim_skips_locked_rows(m))
    }),
    ("reap skips locked rows", |m| Box::pin(reap_skips_locked_rows(m))),
];

/// A fresh database, with `mutant` installed if it rewrites a SQL function.
async fn database(mutant: Option<SqlMutant>) -> TestDb {
    let db = TestDb::new().await;
    if let Some(m) = mutant {
        m.install(db.pool()).await.unwrap();
    }
    db
}

/// A pinned-time storage on `db` (made by [`database`]) running `mutant`.
fn storage(db: &TestDb, clock: &ManualClock, mutant: Option<SqlMutant>) -> PgStorage {
    let store = db.pinned_storage(Arc::new(clock.clone()));
    match mutant {
        None => store,
        Some(m) => store.with_sql_mutant(m).unwrap(),
    }
}

/// The text of a caught panic.
fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// Every conformance case up to the first failure, on one database emptied
/// between cases (identities restarted, so each case's ids start at 1, as on
/// a fresh database): creating a database per case would cost most of the time.
async fn conformance(mutant: Option<SqlMutant>) -> Result<(), String> {
    let db = database(mutant).await;
    for case in stuckless_testkit::cases() {
        sqlx::query(
            "truncate stuckless.jobs, stuckless.job_events, stuckless.workers restart identity cascade",
        )
        .execute(db.pool())
        .await
        .unwrap();
        let clock = manual_clock();
        let store = storage(&db, &clock, mutant).with_happy_path_events(case.happy_path_events);
        let run = case.run(Arc::new(store), clock);
        if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
            return Err(format!("case {}: {}", case.name, panic_text(panic)));
        }
    }
    Ok(())
}

/// Backends of `db` waiting for a lock (a row lock another transaction holds).
async fn lock_waiters(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Runs `op` to its end, or answers `Err` as soon as a backend of `db` waits
/// for a lock: a state observed, not a time limit.
async fn never_waiting<T>(db: &TestDb, op: impl Future<Output = T>) -> Result<T, String> {
    let mut op = std::pin::pin!(op);
    loop {
        tokio::select! {
            biased;
            out = &mut op => return Ok(out),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if lock_waiters(db).await > 0 {
            return Err("it waited for a row another transaction holds".into());
        }
    }
}

/// Inserts a default-queue job on the pinned clock; returns its id.
async fn insert_job(s: &PgStorage, queue: &str) -> JobId {
    let job = NewJob::new(queue, "k", json!({"q": queue}));
    s.job_insert(JobInsert::new(job).unwrap()).await.unwrap().job.id
}

fn claim(queues: &[&str], limit: u32) -> JobClaim {
    JobClaim {
        worker_id: "w".into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        limit,
        lease: Duration::from_secs(30),
        kinds: None,
    }
}

/// Holds `id`'s row lock in a transaction of its own until rolled back.
async fn lock_row(db: &TestDb, id: JobId) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("select id from stuckless.jobs where id = $1 for update")
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// With job 1 row-locked by another transaction, one-queue and many-queue
/// claims take the next due job at once instead of waiting.
async fn claim_skips_locked_rows(mutant: Option<SqlMutant>) -> Result<(), String> {
    let db = database(mutant).await;
    let clock = manual_clock();
    let s = storage(&db, &clock, mutant);
    let (first, second) = (insert_job(&s, "default").await, insert_job(&s, "default").await);
    let tx = lock_row(&db, first).await;
    let one_queue = never_waiting(&db, s.job_claim(claim(&["default"], 1))).await;
    let third = insert_job(&s, "other").await;
    let many_queues = match &one_queue {
        Ok(_) => never_waiting(&db, s.job_claim(claim(&["default", "other"], 1))).await,
        Err(_) => Ok(Ok(Vec::new())),
    };
    tx.rollback().await.unwrap();
    let ids = |claimed: Vec<stuckless_core::ClaimedJob>| claimed.iter().map(|c| c.id()).collect::<Vec<_>>();
    let one_queue = ids(one_queue.map_err(|e| format!("one-queue claim: {e}"))?.unwrap());
    let many_queues = ids(many_queues
        .map_err(|e| format!("many-queue claim: {e}"))?
        .unwrap());
    if one_queue != vec![second] || many_queues != vec![third] {
        return Err(format!(
            "claims took {one_queue:?} and {many_queues:?}, expected [{second:?}] and [{third:?}]"
        ));
    }
    Ok(())
}

/// With expired job 1 row-locked by another transaction (a completion in
/// flight), a reap takes back job 2 at once instead of waiting, and job 1 on
/// the next pass.
async fn reap_skips_locked_rows(mutant: Option<SqlMutant>) -> Result<(), String> {
    let db = database(mutant).await;
    let clock = manual_clock();
    let s = storage(&db, &clock, mutant);
    let (first, second) = (insert_job(&s, "default").await, insert_job(&s, "default").await);
    let claimed = s.job_claim(claim(&["default"], 2)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    clock.advance(Duration::from_secs(31));
    let tx = lock_row(&db, first).await;
    let reaped = never_waiting(&db, s.job_reap_expired(JobReapExpired { limit: 10 })).await;
    tx.rollback().await.unwrap();
    let reaped = reaped?.unwrap();
    let again = s.job_reap_expired(JobReapExpired { limit: 10 }).await.unwrap();
    if reaped.requeued != vec![second] || again.requeued != vec![first] {
        return Err(format!(
            "reaps took back {:?} then {:?}, expected [{second:?}] then [{first:?}] (at {})",
            reaped.requeued,
            again.requeued,
            clock.now()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_mutant_is_caught_and_the_real_sql_passes_its_guards() {
    let Some(probe) =
        TestDb::new_or_skip("every_sql_mutant_is_caught_and_the_real_sql_passes_its_guards").await
    else {
        return;
    };
    drop(probe);
    let mut caught_by = Vec::new();
    let mut missed = Vec::new();
    for mutant in SqlMutant::ALL {
        let mut verdict = None;
        for (index, (name, guard)) in GUARDS.iter().enumerate() {
            if let Err(why) = guard(Some(mutant)).await {
                let why = why.lines().next().unwrap_or("").to_owned();
                println!("{mutant:?}: caught by {name}: {why}");
                verdict = Some(index);
                break;
            }
        }
        match verdict {
            Some(index) => caught_by.push(index),
            None => missed.push(mutant),
        }
    }
    // Every guard that caught a mutant passes on the real SQL.
    caught_by.sort_unstable();
    caught_by.dedup();
    for index in caught_by {
        let (name, guard) = GUARDS[index];
        if let Err(why) = guard(None).await {
            panic!("guard {name} fails on the real SQL: {why}");
        }
    }
    assert!(missed.is_empty(), "SQL mutants no guard caught: {missed:?}");
}
