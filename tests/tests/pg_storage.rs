//! `PgStorage` on a real server: connecting (and saying why it cannot),
//! ending silent transactions, operator listings, row locks released by
//! refused operator calls, and the claim's plan.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{JobCancel, JobRelease, JobRequeue, Storage};
use stuckless_core::{JobEventKind, JobId, JobStatus, NewJob};
use stuckless_pg::{PgError, PgStorage};
use stuckless_tests::{assert_wrong_status, claim_default, insert};

#[tokio::test]
async fn connect_to_an_unreachable_server_names_host_port_and_the_fix() {
    let err = PgStorage::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PgError::Unreachable { port: 1, .. }), "{text}");
    assert!(
        text.contains("127.0.0.1:1") && text.contains("DATABASE_URL"),
        "{text}"
    );
    let err = PgStorage::connect("mysql://nope").await.unwrap_err();
    assert!(matches!(err, PgError::BadUrl { .. }), "{err}");
}

/// Guards the gap the long chaos run found: a worker cut off inside
/// `complete_many`'s transaction held its rows' locks, and every reaper's
/// `skip locked` passed over those expired jobs until the connection died.
#[tokio::test]
async fn connected_storage_ends_transactions_whose_client_went_silent() {
    let db = stuckless_tests::test_db!("connected_storage_ends_transactions_whose_client_went_silent");
    let storage = PgStorage::connect(db.url()).await.unwrap();
    let setting: String = sqlx::query_scalar("select current_setting('idle_in_transaction_session_timeout')")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(setting, "5s");
    storage.pool().close().await;
}

#[tokio::test]
async fn operator_listings_filter_by_time_and_page_by_id() {
    let db = stuckless_tests::test_db!("operator_listings_filter_by_time_and_page_by_id");
    let clock = stuckless_tests::manual_clock();
    let s = db
        .pinned_storage(Arc::new(clock.clone()))
        .with_happy_path_events(true);
    let t0 = stuckless_core::Clock::now(&clock);
    for _ in 0..5 {
        s.job_insert(insert(NewJob::new("default", "k", json!({}))))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(10));
    let t1 = stuckless_core::Clock::now(&clock);
    let claimed = s.job_claim(claim_default("w1", 2)).await.unwrap();
    let all = s.events_since(t0, 100).await.unwrap();
    assert_eq!(all.len(), 7, "5 inserted + 2 claimed");
    let recent = s.events_since(t1, 100).await.unwrap();
    assert_eq!(
        recent.iter().map(|e| (e.job_id, e.kind)).collect::<Vec<_>>(),
        vec![
            (claimed[0].id(), JobEventKind::Claimed),
            (claimed[1].id(), JobEventKind::Claimed),
        ]
    );
    assert_eq!(s.events_since(t0, 3).await.unwrap().len(), 3, "limit");
    let changed = s.jobs_changed_since(t1, 100).await.unwrap();
    assert_eq!(
        changed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![claimed[0].id(), claimed[1].id()]
    );
    let mut seen = Vec::new();
    let mut after = JobId(0);
    loop {
        let page = s.jobs_page(after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().id;
        seen.extend(page.into_iter().map(|j| j.id.0));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}

/// Regression (found by the differential test): a refused requeue or a no-op
/// cancel dropped its transaction without ending it. sqlx only queues the
/// ROLLBACK of a dropped transaction and flushes it from a background task
/// when the connection goes back to the pool, so for a moment the `FOR
/// UPDATE` row lock stayed held and a `SKIP LOCKED` claim on another
/// connection skipped the job. Racy by nature: many rounds, each claim right
/// after a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_operator_action_releases_its_row_lock_at_once() {
    let db = stuckless_tests::test_db!("a_refused_operator_action_releases_its_row_lock_at_once");
    let s = db.storage();
    s.job_insert(insert(NewJob::new("default", "k", json!(1)).max_attempts(1000)))
        .await
        .unwrap();
    s.job_insert(insert(NewJob::new("other", "k", json!(2))))
        .await
        .unwrap();
    s.job_cancel(JobCancel { id: JobId(2) }).await.unwrap();
    let claim = claim_default("w1", 1);
    let mut skipped = 0;
    for _ in 0..300 {
        let err = s
            .job_requeue(JobRequeue {
                id: JobId(1),
                force: false,
            })
            .await
            .unwrap_err();
        assert_wrong_status(&err, JobStatus::Queued);
        s.job_cancel(JobCancel { id: JobId(2) }).await.unwrap(); // a no-op cancel ends its transaction too
        let claimed = s.job_claim(claim.clone()).await.unwrap();
        if claimed.is_empty() {
            skipped += 1;
            continue;
        }
        s.job_release(JobRelease {
            id: claimed[0].id(),
            epoch: claimed[0].epoch(),
        })
        .await
        .unwrap();
    }
    println!("claims that skipped the locked job: {skipped} of 300");
    assert_eq!(
        skipped, 0,
        "claims skipped a due job still locked by a finished operator call"
    );
}

/// A single-queue claim must walk the claim index, not sort the queue.
#[tokio::test]
async fn single_queue_claim_uses_the_claim_index_in_order() {
    let db = stuckless_tests::test_db!("single_queue_claim_uses_the_claim_index_in_order");
    let plan: Vec<String> = sqlx::query_scalar(
        "explain select j.id from stuckless.jobs j where j.status = 'queued' \
         and j.queue = (array['default']::text[])[1] and j.run_at <= now() \
         order by j.priority desc, j.run_at, j.id limit 10 for update of j skip locked",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("jobs_claim_idx"), "{plan}");
    assert!(
        !plan.contains("Sort"),
        "an ordered index walk needs no sort:\n{plan}"
    );
}
