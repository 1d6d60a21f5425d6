//! The conformance suite: one set of cases, written once against
//! `&dyn Storage` and a pinned `ManualClock`, run against `MemStore` (module
//! `mem`) and `PgStorage` on a fresh database (module `pg`). Every assertion
//! states the spec's exact answer, so both stores are held to the same values,
//! timestamps to the microsecond included.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stuckless_core::job::limits;
use stuckless_core::{
    ClaimRequest, ClaimedJob, CompleteOutcome, Epoch, FailOutcome, FailRequest, JobEventKind, JobId,
    JobStatus, ManualClock, MemStore, NewJob, Storage, StorageError, Timestamp, WorkerRegistration,
};
use stuckless_tests::{manual_clock, TestDb};

const LEASE: Duration = Duration::from_secs(30);

/// What a case gets: a way to make the store under test, and its clock.
struct Ctx {
    clock: ManualClock,
    db: Option<TestDb>,
}

impl Ctx {
    /// The store under test, logging happy-path events when `happy`.
    fn store(&self, happy: bool) -> Arc<dyn Storage> {
        match &self.db {
            None => Arc::new(MemStore::new(self.clock.clone()).with_happy_path_events(happy)),
            Some(db) => Arc::new(
                db.pinned_storage(Arc::new(self.clock.clone()))
                    .with_happy_path_events(happy),
            ),
        }
    }

    fn now(&self) -> Timestamp {
        stuckless_core::Clock::now(&self.clock)
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

fn job(queue: &str) -> NewJob {
    NewJob::new(queue, "kind", json!({"q": queue}))
}

fn claim_req(worker: &str, queues: &[&str], limit: u32) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        limit,
        lease: LEASE,
    }
}

async fn claim_one(s: &dyn Storage, worker: &str) -> ClaimedJob {
    let mut claimed = s.job_claim(claim_req(worker, &["default"], 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due job for {worker}");
    claimed.remove(0)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Ctx { clock: stuckless_tests::manual_clock(), db: None }).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = stuckless_tests::TestDb::new_or_skip(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&super::Ctx { clock: stuckless_tests::manual_clock(), db: Some(db) }).await;
                }
            )*
        }
    };
}

conformance!(
    insert_sets_every_field_and_ids_increase,
    idempotency_key_returns_the_existing_job_without_burning_an_id,
    insert_many_is_atomic_and_in_order_with_keys_repeated_in_the_batch,
    claim_takes_due_jobs_by_priority_run_at_id,
    claim_edge_cases,
    heartbeat_extends_the_lease_and_keeps_or_sets_progress,
    complete_is_idempotent_for_the_same_epoch,
    complete_many_answers_per_job_in_input_order,
    fail_retries_then_goes_dead_and_clamps_the_error,
    release_gives_the_attempt_back,
    reap_requeues_or_kills_expired_leases_once,
    an_expired_lease_is_not_fenced_until_reaped,
    a_zombie_is_fenced_after_a_reclaim,
    cancel_rules,
    requeue_rules,
    happy_path_events_when_enabled,
    worker_registry,
    queue_stats_counts_every_status,
    fencing_checks_in_spec_order,
    json_and_timestamps_round_trip_exactly,
    storage_now_is_the_pinned_time,
);

async fn insert_sets_every_field_and_ids_increase(c: &Ctx) {
    let s = c.store(false);
    let now = c.now();
    let out = s
        .job_insert(
            NewJob::new("default", "report", json!({"a": [1, 2]}))
                .priority(3)
                .max_attempts(7),
        )
        .await
        .unwrap();
    assert!(out.inserted);
    let j = &out.job;
    assert_eq!(j.id, JobId(1));
    assert_eq!((j.queue.as_str(), j.kind.as_str()), ("default", "report"));
    assert_eq!(j.payload, json!({"a": [1, 2]}));
    assert_eq!(
        (j.priority, j.max_attempts, j.attempt, j.epoch),
        (3, 7, 0, Epoch(0))
    );
    assert_eq!(j.status, JobStatus::Queued);
    assert_eq!((j.run_at, j.created_at, j.updated_at), (now, now, now));
    assert_eq!(
        (&j.lease_owner, j.lease_expires_at, j.claimed_at, j.heartbeat_at),
        (&None, None, None, None)
    );
    assert_eq!(
        (&j.progress, &j.last_error, &j.idempotency_key, j.finished_at),
        (&None, &None, &None, None)
    );
    assert_eq!(s.job_get(j.id).await.unwrap().as_ref(), Some(j));
    let later = now + Duration::from_secs(3600);
    let second = s.job_insert(job("default").run_at(later)).await.unwrap().job;
    assert_eq!(second.id, JobId(2));
    assert_eq!(second.run_at, later);
    assert_eq!(s.job_get(JobId(3)).await.unwrap(), None);
    // Happy-path logging is off: no events at all.
    assert!(s.job_events(j.id).await.unwrap().is_empty());
}

async fn idempotency_key_returns_the_existing_job_without_burning_an_id(c: &Ctx) {
    let s = c.store(false);
    let first = s
        .job_insert(NewJob::new("default", "a", json!(1)).idempotency_key("order-42"))
        .await
        .unwrap();
    assert!(first.inserted);
    c.advance(Duration::from_secs(5));
    let again = s
        .job_insert(NewJob::new("other", "b", json!(2)).idempotency_key("order-42"))
        .await
        .unwrap();
    assert!(!again.inserted);
    assert_eq!(again.job, first.job, "the existing job, unchanged");
    let next = s.job_insert(job("default")).await.unwrap().job;
    assert_eq!(next.id, JobId(2), "a duplicate key must not consume an id");
}

async fn insert_many_is_atomic_and_in_order_with_keys_repeated_in_the_batch(c: &Ctx) {
    let s = c.store(false);
    let err = s
        .job_insert_many(vec![job("default"), NewJob::new("", "k", json!(null))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(ref v) if v.field == "queue"),
        "{err}"
    );
    assert_eq!(s.job_get(JobId(1)).await.unwrap(), None, "nothing inserted");
    let out = s
        .job_insert_many(vec![
            job("a").idempotency_key("k1"),
            job("b"),
            job("c").idempotency_key("k1"),
            job("d").idempotency_key("k2"),
        ])
        .await
        .unwrap();
    let ids: Vec<(i64, bool)> = out.iter().map(|o| (o.job.id.0, o.inserted)).collect();
    assert_eq!(ids, vec![(1, true), (2, true), (1, false), (3, true)]);
    assert_eq!(out[2].job.queue, "a");
    // The keyless fast path: many at once, ids in input order.
    let many: Vec<NewJob> = (0..50).map(|i| job("bulk").priority(i % 3)).collect();
    let out = s.job_insert_many(many).await.unwrap();
    let ids: Vec<i64> = out.iter().map(|o| o.job.id.0).collect();
    assert_eq!(ids, (4..54).collect::<Vec<_>>());
    assert_eq!(out[7].job.priority, 1);
    assert!(s.job_insert_many(vec![]).await.unwrap().is_empty());
}

async fn claim_takes_due_jobs_by_priority_run_at_id(c: &Ctx) {
    let s = c.store(false);
    let now = c.now();
    let earlier = now - Duration::from_secs(10);
    // ids: 1 low prio, 2 high prio, 3 high prio earlier run_at, 4 future, 5 other queue, 6 = 2's twin
    s.job_insert(job("default")).await.unwrap();
    s.job_insert(job("default").priority(5)).await.unwrap();
    s.job_insert(job("default").priority(5).run_at(earlier))
        .await
        .unwrap();
    s.job_insert(job("default").priority(9).run_at(now + Duration::from_micros(1)))
        .await
        .unwrap();
    s.job_insert(job("other").priority(100)).await.unwrap();
    s.job_insert(job("default").priority(5)).await.unwrap();
    let claimed = s.job_claim(claim_req("w1", &["default"], 3)).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|c| c.id().0).collect();
    assert_eq!(ids, vec![3, 2, 6]);
    for cj in &claimed {
        let j = &cj.job;
        assert_eq!((j.status, j.attempt, j.epoch), (JobStatus::Running, 1, Epoch(1)));
        assert_eq!(j.lease_owner.as_deref(), Some("w1"));
        assert_eq!(j.lease_expires_at, Some(now + LEASE));
        assert_eq!(
            (j.claimed_at, j.heartbeat_at, j.updated_at),
            (Some(now), Some(now), now)
        );
        assert_eq!(s.job_get(j.id).await.unwrap().as_ref(), Some(j));
    }
    let rest = s
        .job_claim(claim_req("w2", &["default", "other"], 10))
        .await
        .unwrap();
    let ids: Vec<i64> = rest.iter().map(|c| c.id().0).collect();
    assert_eq!(ids, vec![5, 1], "job 4 is not due yet");
    c.advance(Duration::from_micros(1));
    let last = s.job_claim(claim_req("w2", &["default"], 10)).await.unwrap();
    assert_eq!(last.iter().map(|c| c.id().0).collect::<Vec<_>>(), vec![4]);
}

async fn claim_edge_cases(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    assert!(s
        .job_claim(claim_req("w1", &["default"], 0))
        .await
        .unwrap()
        .is_empty());
    assert!(s.job_claim(claim_req("w1", &[], 5)).await.unwrap().is_empty());
    assert!(s
        .job_claim(claim_req("w1", &["nothing-here"], 5))
        .await
        .unwrap()
        .is_empty());
    let err = s
        .job_claim(claim_req("bad worker", &["default"], 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(ref v) if v.field == "worker_id"),
        "{err}"
    );
    let err = s
        .job_claim(claim_req("w1", &["default", "x'y"], 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(ref v) if v.field == "queue"),
        "{err}"
    );
    // The refused claims took nothing.
    assert_eq!(
        s.job_get(JobId(1)).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

async fn heartbeat_extends_the_lease_and_keeps_or_sets_progress(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    let cj = claim_one(&*s, "w1").await;
    c.advance(Duration::from_secs(10));
    let now = c.now();
    let lease = Duration::from_micros(45_000_001);
    let expires = s
        .job_heartbeat(cj.id(), cj.epoch(), lease, Some(json!({"section": 2})))
        .await
        .unwrap();
    assert_eq!(expires, now + lease);
    let j = s.job_get(cj.id()).await.unwrap().unwrap();
    assert_eq!(
        (j.lease_expires_at, j.heartbeat_at, j.updated_at),
        (Some(expires), Some(now), now)
    );
    assert_eq!(j.progress, Some(json!({"section": 2})));
    c.advance(Duration::from_secs(1));
    s.job_heartbeat(cj.id(), cj.epoch(), LEASE, None).await.unwrap();
    let j = s.job_get(cj.id()).await.unwrap().unwrap();
    assert_eq!(j.progress, Some(json!({"section": 2})), "None keeps the progress");
    s.job_heartbeat(cj.id(), cj.epoch(), LEASE, Some(Value::Null))
        .await
        .unwrap();
    let j = s.job_get(cj.id()).await.unwrap().unwrap();
    assert_eq!(j.progress, Some(Value::Null), "Some(null) stores a JSON null");
    let big = json!("x".repeat(limits::MAX_PROGRESS_BYTES));
    let err = s
        .job_heartbeat(cj.id(), cj.epoch(), LEASE, Some(big))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(ref v) if v.field == "progress"),
        "{err}"
    );
    let err = s
        .job_heartbeat(JobId(99), Epoch(1), LEASE, None)
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::NotFound(JobId(99)));
    let err = s.job_heartbeat(cj.id(), Epoch(2), LEASE, None).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::StaleEpoch {
            id: cj.id(),
            presented: Epoch(2),
            current: Epoch(1)
        }
    );
}

async fn complete_is_idempotent_for_the_same_epoch(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    s.job_insert(job("default")).await.unwrap();
    let err = s.job_complete(JobId(2), Epoch(0)).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: JobId(2),
            status: JobStatus::Queued,
            operation: "complete",
            expected: "running"
        }
    );
    let cj = claim_one(&*s, "w1").await;
    c.advance(Duration::from_secs(2));
    let now = c.now();
    assert_eq!(
        s.job_complete(cj.id(), cj.epoch()).await.unwrap(),
        CompleteOutcome::Completed
    );
    let j = s.job_get(cj.id()).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Succeeded);
    assert_eq!(
        (j.lease_expires_at, j.finished_at, j.updated_at),
        (None, Some(now), now)
    );
    assert_eq!(
        j.lease_owner.as_deref(),
        Some("w1"),
        "the last holder stays on record"
    );
    c.advance(Duration::from_secs(2));
    assert_eq!(
        s.job_complete(cj.id(), cj.epoch()).await.unwrap(),
        CompleteOutcome::AlreadyCompleted
    );
    assert_eq!(
        s.job_get(cj.id()).await.unwrap().unwrap(),
        j,
        "a retried completion changes nothing"
    );
    let err = s.job_complete(cj.id(), Epoch(7)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::StaleEpoch {
                current: Epoch(1),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        s.job_complete(JobId(42), Epoch(1)).await.unwrap_err(),
        StorageError::NotFound(JobId(42))
    );
}

async fn complete_many_answers_per_job_in_input_order(c: &Ctx) {
    let s = c.store(false);
    for _ in 0..3 {
        s.job_insert(job("default")).await.unwrap();
    }
    let claimed = s.job_claim(claim_req("w1", &["default"], 2)).await.unwrap();
    let (a, b) = (&claimed[0], &claimed[1]);
    let results = s
        .job_complete_many(vec![
            (a.id(), a.epoch()),
            (b.id(), Epoch(9)),
            (a.id(), a.epoch()),
            (JobId(3), Epoch(0)),
            (JobId(77), Epoch(1)),
            (b.id(), b.epoch()),
        ])
        .await
        .unwrap();
    assert_eq!(results[0], Ok(CompleteOutcome::Completed));
    assert!(matches!(results[1], Err(StorageError::StaleEpoch { .. })));
    assert_eq!(results[2], Ok(CompleteOutcome::AlreadyCompleted));
    assert!(matches!(
        results[3],
        Err(StorageError::WrongStatus {
            status: JobStatus::Queued,
            ..
        })
    ));
    assert_eq!(results[4], Err(StorageError::NotFound(JobId(77))));
    assert_eq!(results[5], Ok(CompleteOutcome::Completed));
    assert_eq!(results.len(), 6);
}

async fn fail_retries_then_goes_dead_and_clamps_the_error(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default").max_attempts(2)).await.unwrap();
    let first = claim_one(&*s, "w1").await;
    let now = c.now();
    let delay = Duration::from_micros(1_500_001);
    let out = s
        .job_fail(
            first.id(),
            first.epoch(),
            FailRequest {
                error: "boom \0 with NUL".into(),
                retry_after: Some(delay),
            },
        )
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Retried { run_at: now + delay });
    let j = s.job_get(first.id()).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.attempt, j.run_at),
        (JobStatus::Queued, 1, now + delay)
    );
    assert_eq!(j.last_error.as_deref(), Some("boom  with NUL"));
    assert_eq!((j.lease_expires_at, j.finished_at), (None, None));
    let events = s.job_events(first.id()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, JobEventKind::Retried);
    assert_eq!(
        (events[0].at, events[0].epoch, events[0].attempt),
        (now, Epoch(1), 1)
    );
    assert_eq!(events[0].worker_id.as_deref(), Some("w1"));
    assert_eq!(events[0].detail.as_deref(), Some("boom  with NUL"));
    assert!(
        s.job_claim(claim_req("w1", &["default"], 1))
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    c.advance(delay);
    let second = claim_one(&*s, "w2").await;
    assert_eq!((second.job.attempt, second.epoch()), (2, Epoch(2)));
    let long = "é".repeat(limits::MAX_ERROR_BYTES);
    let out = s
        .job_fail(
            second.id(),
            second.epoch(),
            FailRequest {
                error: long,
                retry_after: Some(Duration::from_secs(1)),
            },
        )
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead, "attempts used up");
    let j = s.job_get(second.id()).await.unwrap().unwrap();
    assert_eq!((j.status, j.finished_at), (JobStatus::Dead, Some(c.now())));
    let stored = j.last_error.unwrap();
    assert!(stored.len() <= limits::MAX_ERROR_BYTES && stored.chars().all(|ch| ch == 'é'));
    let kinds: Vec<JobEventKind> = s.job_events(j.id).await.unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![JobEventKind::Retried, JobEventKind::Dead]);
    // A permanent failure is dead at once, attempts left or not.
    s.job_insert(job("default")).await.unwrap();
    let p = claim_one(&*s, "w1").await;
    let out = s
        .job_fail(
            p.id(),
            p.epoch(),
            FailRequest {
                error: "bad input".into(),
                retry_after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    let err = s
        .job_fail(
            p.id(),
            p.epoch(),
            FailRequest {
                error: "again".into(),
                retry_after: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongStatus {
                status: JobStatus::Dead,
                operation: "fail",
                ..
            }
        ),
        "{err}"
    );
}

async fn release_gives_the_attempt_back(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default").run_at(c.now() - Duration::from_secs(60)))
        .await
        .unwrap();
    let cj = claim_one(&*s, "w1").await;
    s.job_heartbeat(cj.id(), cj.epoch(), LEASE, Some(json!(50)))
        .await
        .unwrap();
    c.advance(Duration::from_secs(3));
    let now = c.now();
    s.job_release(cj.id(), cj.epoch()).await.unwrap();
    let j = s.job_get(cj.id()).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempt, j.epoch), (JobStatus::Queued, 0, Epoch(1)));
    assert_eq!((j.run_at, j.updated_at, j.lease_expires_at), (now, now, None));
    assert_eq!(j.progress, Some(json!(50)), "the last attempt's record stays");
    let events = s.job_events(cj.id()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].attempt, events[0].worker_id.as_deref()),
        (JobEventKind::Released, 0, Some("w1"))
    );
    let err = s.job_release(cj.id(), cj.epoch()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongStatus {
                status: JobStatus::Queued,
                ..
            }
        ),
        "{err}"
    );
    let again = claim_one(&*s, "w2").await;
    assert_eq!((again.job.attempt, again.epoch()), (1, Epoch(2)));
}

async fn reap_requeues_or_kills_expired_leases_once(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default").max_attempts(1)).await.unwrap(); // 1: dies when reaped
    s.job_insert(job("default")).await.unwrap(); // 2: requeued
    s.job_insert(job("default")).await.unwrap(); // 3: requeued in the second pass
    s.job_insert(job("default")).await.unwrap(); // 4: claimed later, lease still live
    let claimed = s.job_claim(claim_req("w1", &["default"], 3)).await.unwrap();
    let expiry = claimed[0].job.lease_expires_at.unwrap();
    c.advance(Duration::from_secs(10));
    claim_one(&*s, "w2").await;
    c.advance(LEASE - Duration::from_secs(10) - Duration::from_micros(1));
    assert!(
        s.job_reap_expired(10).await.unwrap().is_empty(),
        "not yet expired"
    );
    c.advance(Duration::from_micros(1));
    let now = c.now();
    assert_eq!(now, expiry, "expiry is inclusive: lease_expires_at <= now");
    let out = s.job_reap_expired(2).await.unwrap();
    assert_eq!(out.dead, vec![JobId(1)]);
    assert_eq!(out.requeued, vec![JobId(2)]);
    let out = s.job_reap_expired(10).await.unwrap();
    assert_eq!((out.requeued, out.dead), (vec![JobId(3)], vec![]));
    assert!(s.job_reap_expired(10).await.unwrap().is_empty(), "idempotent");
    let detail = format!("lease expired at {expiry} (owner w1)");
    let dead = s.job_get(JobId(1)).await.unwrap().unwrap();
    assert_eq!((dead.status, dead.finished_at), (JobStatus::Dead, Some(now)));
    assert_eq!(dead.last_error.as_deref(), Some(detail.as_str()));
    let requeued = s.job_get(JobId(2)).await.unwrap().unwrap();
    assert_eq!(
        (requeued.status, requeued.run_at, requeued.attempt),
        (JobStatus::Queued, now, 1)
    );
    assert_eq!((requeued.last_error, requeued.lease_expires_at), (None, None));
    let e1 = s.job_events(JobId(1)).await.unwrap();
    let e2 = s.job_events(JobId(2)).await.unwrap();
    assert_eq!((e1.len(), e1[0].kind), (1, JobEventKind::Dead));
    assert_eq!((e2.len(), e2[0].kind), (1, JobEventKind::Reaped));
    assert_eq!(e2[0].detail.as_deref(), Some(detail.as_str()));
    assert_eq!(
        (e2[0].worker_id.as_deref(), e2[0].at, e2[0].epoch),
        (Some("w1"), now, Epoch(1))
    );
    assert_eq!(
        s.job_get(JobId(4)).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    assert!(s.job_reap_expired(0).await.unwrap().is_empty());
}

async fn an_expired_lease_is_not_fenced_until_reaped(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    s.job_insert(job("default")).await.unwrap();
    let a = claim_one(&*s, "w1").await;
    let b = claim_one(&*s, "w1").await;
    c.advance(LEASE * 3);
    let expires = s.job_heartbeat(a.id(), a.epoch(), LEASE, None).await.unwrap();
    assert_eq!(expires, c.now() + LEASE);
    assert_eq!(
        s.job_complete(b.id(), b.epoch()).await.unwrap(),
        CompleteOutcome::Completed
    );
    assert!(
        s.job_reap_expired(10).await.unwrap().is_empty(),
        "the heartbeat revived job 1's lease"
    );
}

async fn a_zombie_is_fenced_after_a_reclaim(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    let zombie = claim_one(&*s, "w1").await;
    c.advance(LEASE);
    assert_eq!(s.job_reap_expired(10).await.unwrap().requeued, vec![zombie.id()]);
    let zombie_late = s.job_complete(zombie.id(), zombie.epoch()).await.unwrap_err();
    assert!(matches!(
        zombie_late,
        StorageError::WrongStatus {
            status: JobStatus::Queued,
            ..
        }
    ));
    let fresh = claim_one(&*s, "w2").await;
    assert_eq!(fresh.epoch(), Epoch(2));
    let stale = StorageError::StaleEpoch {
        id: zombie.id(),
        presented: Epoch(1),
        current: Epoch(2),
    };
    assert_eq!(
        s.job_complete(zombie.id(), zombie.epoch()).await.unwrap_err(),
        stale
    );
    assert_eq!(
        s.job_heartbeat(zombie.id(), zombie.epoch(), LEASE, None)
            .await
            .unwrap_err(),
        stale
    );
    let fail = FailRequest {
        error: "x".into(),
        retry_after: None,
    };
    assert_eq!(
        s.job_fail(zombie.id(), zombie.epoch(), fail).await.unwrap_err(),
        stale
    );
    assert_eq!(
        s.job_release(zombie.id(), zombie.epoch()).await.unwrap_err(),
        stale
    );
    let j = s.job_get(zombie.id()).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.lease_owner.as_deref()),
        (JobStatus::Running, Some("w2"))
    );
    assert_eq!(
        s.job_complete(fresh.id(), fresh.epoch()).await.unwrap(),
        CompleteOutcome::Completed
    );
}

async fn cancel_rules(c: &Ctx) {
    let s = c.store(false);
    for _ in 0..3 {
        s.job_insert(job("default")).await.unwrap();
    }
    assert_eq!(
        s.job_cancel(JobId(9)).await.unwrap_err(),
        StorageError::NotFound(JobId(9))
    );
    c.advance(Duration::from_secs(1));
    let now = c.now();
    let cancelled = s.job_cancel(JobId(1)).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.finished_at, cancelled.updated_at),
        (JobStatus::Cancelled, Some(now), now)
    );
    assert_eq!(s.job_get(JobId(1)).await.unwrap().unwrap(), cancelled);
    c.advance(Duration::from_secs(1));
    assert_eq!(
        s.job_cancel(JobId(1)).await.unwrap(),
        cancelled,
        "cancelling twice changes nothing"
    );
    let running = claim_one(&*s, "w1").await;
    assert_eq!(running.id(), JobId(2));
    let c2 = s.job_cancel(running.id()).await.unwrap();
    assert_eq!(
        (c2.status, c2.lease_expires_at, c2.epoch),
        (JobStatus::Cancelled, None, Epoch(1))
    );
    let err = s.job_complete(running.id(), running.epoch()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongStatus {
                status: JobStatus::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    let done = claim_one(&*s, "w1").await;
    s.job_complete(done.id(), done.epoch()).await.unwrap();
    let err = s.job_cancel(done.id()).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: done.id(),
            status: JobStatus::Succeeded,
            operation: "cancel",
            expected: "queued or running"
        }
    );
    let kinds: Vec<JobEventKind> = s
        .job_events(JobId(1))
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec![JobEventKind::Cancelled]);
}

async fn requeue_rules(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default").max_attempts(1)).await.unwrap();
    s.job_insert(job("default")).await.unwrap();
    s.job_insert(job("default")).await.unwrap();
    let err = s.job_requeue(JobId(3), false).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: JobId(3),
            status: JobStatus::Queued,
            operation: "requeue",
            expected: "dead, or running with an expired lease"
        }
    );
    assert_eq!(
        s.job_requeue(JobId(8), true).await.unwrap_err(),
        StorageError::NotFound(JobId(8))
    );
    // Job 1 dies on its only attempt, then an operator requeues it.
    let one = claim_one(&*s, "w1").await;
    let fail = FailRequest {
        error: "nope".into(),
        retry_after: Some(Duration::from_secs(1)),
    };
    assert_eq!(
        s.job_fail(one.id(), one.epoch(), fail).await.unwrap(),
        FailOutcome::Dead
    );
    c.advance(Duration::from_secs(1));
    let now = c.now();
    let back = s.job_requeue(one.id(), false).await.unwrap();
    assert_eq!(
        (back.status, back.attempt, back.finished_at),
        (JobStatus::Queued, 0, None)
    );
    assert_eq!((back.run_at, back.updated_at), (now, now));
    assert_eq!(back.last_error.as_deref(), Some("nope"));
    assert_eq!(s.job_get(one.id()).await.unwrap().unwrap(), back);
    // Job 2 runs with a live lease: only force takes it.
    let two = s.job_claim(claim_req("w1", &["default"], 10)).await.unwrap();
    let two = two.iter().find(|c| c.id() == JobId(2)).unwrap().clone();
    let err = s.job_requeue(two.id(), false).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongStatus {
                expected: "dead, or running with an expired lease (or force)",
                ..
            }
        ),
        "{err}"
    );
    let forced = s.job_requeue(two.id(), true).await.unwrap();
    assert_eq!(
        (forced.status, forced.attempt, forced.epoch),
        (JobStatus::Queued, 1, Epoch(1))
    );
    let err = s
        .job_heartbeat(two.id(), two.epoch(), LEASE, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongStatus {
                status: JobStatus::Queued,
                ..
            }
        ),
        "{err}"
    );
    // Job 3's lease expires: requeue without force.
    c.advance(LEASE);
    let three = s.job_requeue(JobId(3), false).await.unwrap();
    assert_eq!(three.status, JobStatus::Queued);
    let details = |id| {
        let s = s.clone();
        async move {
            s.job_events(id)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == JobEventKind::Requeued)
                .map(|e| e.detail.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(details(JobId(1)).await, vec!["dead job requeued by operator"]);
    assert_eq!(
        details(JobId(2)).await,
        vec!["live lease revoked by operator (--force)"]
    );
    assert_eq!(
        details(JobId(3)).await,
        vec!["expired lease requeued by operator"]
    );
}

async fn happy_path_events_when_enabled(c: &Ctx) {
    let s = c.store(true);
    let t0 = c.now();
    s.job_insert(job("default")).await.unwrap();
    s.job_insert_many(vec![job("default"), job("default").idempotency_key("k")])
        .await
        .unwrap();
    c.advance(Duration::from_secs(1));
    let cj = claim_one(&*s, "w9").await;
    c.advance(Duration::from_secs(1));
    s.job_complete(cj.id(), cj.epoch()).await.unwrap();
    s.job_complete(cj.id(), cj.epoch()).await.unwrap();
    let events = s.job_events(cj.id()).await.unwrap();
    let summary: Vec<(JobEventKind, Timestamp, i64, i32, Option<&str>)> = events
        .iter()
        .map(|e| (e.kind, e.at, e.epoch.0, e.attempt, e.worker_id.as_deref()))
        .collect();
    let t1 = t0 + Duration::from_secs(1);
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(
        summary,
        vec![
            (JobEventKind::Inserted, t0, 0, 0, None),
            (JobEventKind::Claimed, t1, 1, 1, Some("w9")),
            (JobEventKind::Completed, t2, 1, 1, Some("w9")),
        ],
        "a retried completion logs nothing"
    );
    for id in [2, 3] {
        let kinds: Vec<JobEventKind> = s
            .job_events(JobId(id))
            .await
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec![JobEventKind::Inserted], "job {id}");
    }
    assert!(s.job_events(JobId(99)).await.unwrap().is_empty());
}

async fn worker_registry(c: &Ctx) {
    let s = c.store(false);
    let reg = |id: &str| WorkerRegistration {
        id: id.into(),
        queues: vec!["default".into(), "mail".into()],
        concurrency: 10,
        metadata: json!({"host": "h1", "pid": 7}),
    };
    let t0 = c.now();
    s.worker_register(reg("b-worker")).await.unwrap();
    s.worker_register(reg("B-worker")).await.unwrap();
    s.worker_register(reg("a-worker")).await.unwrap();
    let ids: Vec<String> = s.worker_list().await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(
        ids,
        vec!["B-worker", "a-worker", "b-worker"],
        "byte order, like Rust's"
    );
    c.advance(Duration::from_secs(5));
    s.worker_heartbeat("a-worker", 3).await.unwrap();
    let a = s
        .worker_list()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == "a-worker")
        .unwrap();
    assert_eq!(
        (a.started_at, a.last_heartbeat_at, a.in_flight),
        (t0, t0 + Duration::from_secs(5), 3)
    );
    assert_eq!(
        (a.concurrency, a.metadata.clone()),
        (10, json!({"host": "h1", "pid": 7}))
    );
    assert_eq!(a.queues, vec!["default".to_string(), "mail".to_string()]);
    c.advance(Duration::from_secs(5));
    let mut again = reg("a-worker");
    again.concurrency = 2;
    s.worker_register(again).await.unwrap();
    let a = s
        .worker_list()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == "a-worker")
        .unwrap();
    assert_eq!(
        (a.started_at, a.in_flight, a.concurrency),
        (c.now(), 0, 2),
        "re-register replaces"
    );
    assert_eq!(
        s.worker_heartbeat("ghost", 1).await.unwrap_err(),
        StorageError::WorkerNotFound("ghost".into())
    );
    s.worker_deregister("a-worker").await.unwrap();
    s.worker_deregister("never-was").await.unwrap();
    assert_eq!(s.worker_list().await.unwrap().len(), 2);
    let err = s.worker_register(reg("")).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(ref v) if v.field == "worker_id"),
        "{err}"
    );
}

async fn queue_stats_counts_every_status(c: &Ctx) {
    let s = c.store(false);
    let t0 = c.now();
    s.job_insert(job("aq")).await.unwrap(); // 1 due, oldest
    c.advance(Duration::from_secs(2));
    s.job_insert(job("aq")).await.unwrap(); // 2 due
    s.job_insert(job("aq").run_at(t0 + Duration::from_secs(60)))
        .await
        .unwrap(); // 3 scheduled
    s.job_insert(job("Zq")).await.unwrap(); // 4 running, expires
    s.job_insert(job("Zq")).await.unwrap(); // 5 running, live
    s.job_insert(job("Zq")).await.unwrap(); // 6 succeeded
    s.job_insert(job("Zq").max_attempts(1)).await.unwrap(); // 7 dead
    s.job_insert(job("Zq")).await.unwrap(); // 8 cancelled
    let four = s.job_claim(claim_req("w", &["Zq"], 1)).await.unwrap().remove(0);
    c.advance(Duration::from_secs(1));
    let rest = s.job_claim(claim_req("w", &["Zq"], 3)).await.unwrap();
    s.job_complete(rest[1].id(), rest[1].epoch()).await.unwrap();
    let fail = FailRequest {
        error: "e".into(),
        retry_after: Some(Duration::from_secs(1)),
    };
    s.job_fail(rest[2].id(), rest[2].epoch(), fail).await.unwrap();
    s.job_cancel(JobId(8)).await.unwrap();
    c.advance(LEASE - Duration::from_secs(1));
    assert_eq!(four.job.lease_expires_at, Some(c.now()));
    let stats = s.queue_stats().await.unwrap();
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

async fn fencing_checks_in_spec_order(c: &Ctx) {
    let s = c.store(false);
    s.job_insert(job("default")).await.unwrap();
    let cj = claim_one(&*s, "w1").await;
    s.job_cancel(cj.id()).await.unwrap();
    // Wrong epoch AND wrong status: the epoch is reported first.
    let err = s.job_complete(cj.id(), Epoch(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::StaleEpoch {
                presented: Epoch(5),
                current: Epoch(1),
                ..
            }
        ),
        "{err}"
    );
    let err = s
        .job_heartbeat(cj.id(), cj.epoch(), LEASE, None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: cj.id(),
            status: JobStatus::Cancelled,
            operation: "heartbeat",
            expected: "running"
        }
    );
    let err = s.job_release(JobId(0), Epoch(5)).await.unwrap_err();
    assert_eq!(err, StorageError::NotFound(JobId(0)));
}

async fn json_and_timestamps_round_trip_exactly(c: &Ctx) {
    let s = c.store(false);
    let payloads = vec![
        json!(null),
        json!(true),
        json!(-0.0),
        json!(1.5e300),
        json!(0.1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("quotes ' \" ; -- drop table stuckless.jobs; émoji 🎉 \\ back"),
        json!({"b": [1, {"z": null, "a": []}], "a": {}, "": "empty key"}),
        json!([[], [[]], "\u{7f}\u{1}"]),
    ];
    let times = [
        Timestamp::from_micros(-1_500_001),
        Timestamp::UNIX_EPOCH,
        Timestamp::from_micros(1),
        Timestamp::from_micros(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999Z
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let at = times[i % times.len()];
        let j = s
            .job_insert(NewJob::new("default", "k", payload.clone()).run_at(at))
            .await
            .unwrap()
            .job;
        let back = s.job_get(j.id).await.unwrap().unwrap();
        assert_eq!(&back.payload, payload);
        assert_eq!(back.run_at, at);
        assert_eq!(back, j);
    }
}

async fn storage_now_is_the_pinned_time(c: &Ctx) {
    let s = c.store(false);
    assert_eq!(s.storage_now().await.unwrap(), c.now());
    c.advance(Duration::from_micros(7));
    assert_eq!(s.storage_now().await.unwrap(), c.now());
}

/// Not a conformance case: the database clock is what production uses, and
/// leases must be judged by it when no clock is pinned.
#[tokio::test]
async fn unpinned_pg_storage_uses_the_database_clock() {
    let Some(db) = TestDb::new_or_skip("unpinned_pg_storage_uses_the_database_clock").await else {
        return;
    };
    let s = db.storage();
    let db_now: i64 = sqlx::query_scalar("select stuckless.to_micros(now())")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let storage_now = s.storage_now().await.unwrap().as_micros();
    assert!(storage_now >= db_now, "{storage_now} < {db_now}");
    let j = s.job_insert(job("default")).await.unwrap().job;
    assert!(j.created_at.as_micros() >= storage_now);
    let cj = s
        .job_claim(claim_req("w1", &["default"], 1))
        .await
        .unwrap()
        .remove(0);
    let lease = cj
        .job
        .lease_expires_at
        .unwrap()
        .micros_since(cj.job.claimed_at.unwrap());
    assert_eq!(lease, 30_000_000);
    let _ = manual_clock();
}
