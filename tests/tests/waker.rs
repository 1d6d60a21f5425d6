//! The LISTEN/NOTIFY waker: it wakes workers on every way a job becomes
//! due, and reconnects when its connection is killed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{JobRelease, Storage};
use stuckless_core::{NewJob, Waker};
use stuckless_pg::{PgStorage, PgWaker};
use stuckless_tests::{claim_default, insert};

/// A bound on waiting for something that must happen; hitting it is a
/// failure (liveness), not a performance measurement.
const BOUND: Duration = Duration::from_secs(30);

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn woken(waker: &PgWaker, what: &str) {
    tokio::time::timeout(BOUND, waker.wait())
        .await
        .unwrap_or_else(|_| panic!("no wake-up for: {what}"));
}

#[tokio::test]
async fn waker_wakes_on_enqueue_and_reconnects_after_the_connection_is_killed() {
    let db =
        stuckless_tests::test_db!("waker_wakes_on_enqueue_and_reconnects_after_the_connection_is_killed");
    let waker: Arc<PgWaker> = PgWaker::start(db.pool().clone(), vec!["default".into()]);
    until("first LISTEN connection", || waker.is_connected()).await;
    assert_eq!(waker.connections(), 1);
    woken(&waker, "the wake after connecting").await;

    let s: PgStorage = db.storage();
    let started = std::time::Instant::now();
    s.job_insert(insert(NewJob::new("default", "k", json!(1))))
        .await
        .unwrap();
    woken(&waker, "a Rust insert").await;
    println!("wake-up after insert: {:?}", started.elapsed());
    sqlx::query("select stuckless.enqueue('default', 'k')")
        .execute(db.pool())
        .await
        .unwrap();
    woken(&waker, "an SQL enqueue").await;

    // Kill the listening backend, as a database restart or a proxy would.
    let killed: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
         where datname = current_database() and query ilike 'listen%' and pid <> pg_backend_pid()",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one LISTEN connection");
    until("a reconnect", || waker.connections() >= 2 && waker.is_connected()).await;
    woken(&waker, "the wake after reconnecting").await;
    stuckless_pg::enqueue(db.pool(), NewJob::new("default", "k", json!(2)))
        .await
        .unwrap();
    woken(&waker, "an insert after the reconnect").await;
    // A released job is due again at once: other workers are woken for it.
    let claimed = s.job_claim(claim_default("w1", 1)).await.unwrap();
    s.job_release(JobRelease {
        id: claimed[0].id(),
        epoch: claimed[0].epoch(),
    })
    .await
    .unwrap();
    woken(&waker, "a release").await;
}

#[tokio::test]
async fn waker_reports_an_unreachable_database_as_not_connected() {
    // Port 1 on loopback: nothing listens there.
    let waker = PgWaker::start_url("postgres://postgres@127.0.0.1:1/postgres", vec![]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waker.is_connected());
    assert_eq!(waker.connections(), 0);
}
