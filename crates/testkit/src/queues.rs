//! Conformance cases about whole-store reads: per-queue counts and the
//! storage's clock.

use std::time::Duration;

use stuckless_core::driver::{FailOutcome, JobCancel, JobComplete, JobFail, QueueStatsGet, StorageNow};
use stuckless_core::JobId;

use crate::case::{claim_req, insert, job, kit_case, Case, Ctx, LEASE};

/// The queue and storage cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!("queue", queue_stats_counts_every_status),
        kit_case!("storage", storage_now_is_the_pinned_time),
    ]
}

async fn queue_stats_counts_every_status(c: &Ctx) {
    let s = c.store();
    let t0 = c.now();
    s.job_insert(insert(job("aq"))).await.unwrap(); // 1 due, oldest
    c.advance(Duration::from_secs(2));
    s.job_insert(insert(job("aq"))).await.unwrap(); // 2 due
    s.job_insert(insert(job("aq").run_at(t0 + Duration::from_secs(60))))
        .await
        .unwrap(); // 3 scheduled
    s.job_insert(insert(job("Zq"))).await.unwrap(); // 4 running, expires
    s.job_insert(insert(job("Zq"))).await.unwrap(); // 5 running, live
    s.job_insert(insert(job("Zq"))).await.unwrap(); // 6 succeeded
    s.job_insert(insert(job("Zq").max_attempts(1))).await.unwrap(); // 7 dead
    s.job_insert(insert(job("Zq"))).await.unwrap(); // 8 cancelled
    let four = s.job_claim(claim_req("w", &["Zq"], 1)).await.unwrap().remove(0);
    c.advance(Duration::from_secs(1));
    let rest = s.job_claim(claim_req("w", &["Zq"], 3)).await.unwrap();
    s.job_complete(JobComplete {
        id: rest[1].id(),
        epoch: rest[1].epoch(),
    })
    .await
    .unwrap();
    let fail = JobFail {
        id: rest[2].id(),
        epoch: rest[2].epoch(),
        error: "e".into(),
        retry_after: Some(Duration::from_secs(1)),
    };
    assert_eq!(s.job_fail(fail).await.unwrap(), FailOutcome::Dead);
    s.job_cancel(JobCancel { id: JobId(8) }).await.unwrap();
    c.advance(LEASE - Duration::from_secs(1));
    assert_eq!(four.job.lease_expires_at, Some(c.now()));
    let stats = s.queue_stats(QueueStatsGet {}).await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].queue, "Zq", "byte order: Z before a");
    assert_eq!(
        (
            stats[0].due,
            stats[0].running,
            stats[0].running_expired,
            stats[0].succeeded,
            stats[0].dead,
            stats[0].cancelled
        ),
        (0, 1, 1, 1, 1, 1)
    );
    assert_eq!(stats[0].oldest_due_age, None);
    assert_eq!(
        (stats[1].queue.as_str(), stats[1].due, stats[1].scheduled),
        ("aq", 2, 1)
    );
    assert_eq!(stats[1].oldest_due_age, Some(c.now().saturating_since(t0)));
}

async fn storage_now_is_the_pinned_time(c: &Ctx) {
    let s = c.store();
    assert_eq!(s.storage_now(StorageNow {}).await.unwrap(), c.now());
    c.advance(Duration::from_micros(7));
    assert_eq!(s.storage_now(StorageNow {}).await.unwrap(), c.now());
}
