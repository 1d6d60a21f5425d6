//! The conformance suite (`stuckless-testkit`: one set of cases, written
//! once against `&dyn Storage` and a pinned `ManualClock`), run against
//! `MemStore` (module `mem`) and `PgStorage` on a fresh database per case
//! (module `pg`). Every case states the spec's exact answers, so both stores
//! are held to the same values, timestamps to the microsecond included.

use std::sync::Arc;

use stuckless_core::driver::{JobClaim, JobInsert, Storage, StorageNow};
use stuckless_core::NewJob;
use stuckless_testkit::{Fixture, Setup};
use stuckless_tests::TestDb;

stuckless_testkit::conformance_tests!(mem, stuckless_testkit::mem_store);

stuckless_testkit::conformance_tests!(pg, |setup: Setup| async move {
    let db = TestDb::new_or_skip(setup.case).await?;
    let store = db
        .pinned_storage(Arc::new(setup.clock))
        .with_happy_path_events(setup.happy_path_events);
    Some(Fixture::new(store).keep_alive(db))
});

/// Not a conformance case: the database clock is what production uses, and
/// leases must be judged by it when no clock is pinned.
#[tokio::test]
async fn unpinned_pg_storage_uses_the_database_clock() {
    let db = stuckless_tests::test_db!("unpinned_pg_storage_uses_the_database_clock");
    let s = db.storage();
    let db_now: i64 = sqlx::query_scalar("select stuckless.to_micros(now())")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let storage_now = s.storage_now(StorageNow {}).await.unwrap().as_micros();
    assert!(storage_now >= db_now, "{storage_now} < {db_now}");
    let job = NewJob::new("default", "kind", serde_json::json!({"q": "default"}));
    let j = s.job_insert(JobInsert::new(job).unwrap()).await.unwrap().job;
    assert!(j.created_at.as_micros() >= storage_now);
    let claim = JobClaim {
        worker_id: "w1".into(),
        queues: vec!["default".into()],
        limit: 1,
        lease: std::time::Duration::from_secs(30),
        kinds: None,
    };
    let cj = s.job_claim(claim).await.unwrap().remove(0);
    let lease = cj
        .job
        .lease_expires_at
        .unwrap()
        .micros_since(cj.job.claimed_at.unwrap());
    assert_eq!(lease, 30_000_000);
}
