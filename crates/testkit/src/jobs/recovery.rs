//! Conformance cases about getting jobs back and fencing: reap, zombies,
//! cancel, operator requeue, and the events each leaves.

use std::time::Duration;

use stuckless_core::driver::{
    CompleteOutcome, FailOutcome, JobCancel, JobEvents, JobGet, JobInsertMany, JobReapExpired, JobRelease,
    JobRequeue,
};
use stuckless_core::{Epoch, JobEventKind, JobId, JobStatus, StorageError, Timestamp};

use super::lease::fail;
use crate::case::{
    assert_wrong_status, claim_one, claim_req, complete, complete_at, event_kinds, heartbeat, insert, job,
    kit_case, refusal, stale_epochs, Case, Ctx, LEASE,
};

/// The recovery cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!("job", reap_requeues_or_kills_expired_leases_once),
        kit_case!("job", an_expired_lease_is_not_fenced_until_reaped),
        kit_case!("job", a_zombie_is_fenced_after_a_reclaim),
        kit_case!("job", cancel_rules),
        kit_case!("job", requeue_rules),
        kit_case!("job", happy_path_events_when_enabled, true),
        kit_case!("job", fencing_checks_in_spec_order),
    ]
}

fn reap(limit: u32) -> JobReapExpired {
    JobReapExpired { limit }
}

async fn reap_requeues_or_kills_expired_leases_once(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default").max_attempts(1)))
        .await
        .unwrap(); // 1: dies when reaped
    s.job_insert(insert(job("default"))).await.unwrap(); // 2: requeued
    s.job_insert(insert(job("default"))).await.unwrap(); // 3: requeued in the second pass
    s.job_insert(insert(job("default"))).await.unwrap(); // 4: claimed later, lease still live
    let claimed = s.job_claim(claim_req("w1", &["default"], 3)).await.unwrap();
    let expiry = claimed[0].job.lease_expires_at.unwrap();
    c.advance(Duration::from_secs(10));
    claim_one(&*s, "w2").await;
    c.advance(LEASE - Duration::from_secs(10) - Duration::from_micros(1));
    assert!(
        s.job_reap_expired(reap(10)).await.unwrap().is_empty(),
        "not yet expired"
    );
    c.advance(Duration::from_micros(1));
    let now = c.now();
    assert_eq!(now, expiry, "expiry is inclusive: lease_expires_at <= now");
    let out = s.job_reap_expired(reap(2)).await.unwrap();
    assert_eq!(out.dead, vec![JobId(1)]);
    assert_eq!(out.requeued, vec![JobId(2)]);
    let out = s.job_reap_expired(reap(10)).await.unwrap();
    assert_eq!((out.requeued, out.dead), (vec![JobId(3)], vec![]));
    assert!(
        s.job_reap_expired(reap(10)).await.unwrap().is_empty(),
        "idempotent"
    );
    let detail = format!("lease expired at {expiry} (owner w1)");
    let dead = s.job_get(JobGet { id: JobId(1) }).await.unwrap().unwrap();
    assert_eq!((dead.status, dead.finished_at), (JobStatus::Dead, Some(now)));
    assert_eq!(dead.last_error.as_deref(), Some(detail.as_str()));
    let requeued = s.job_get(JobGet { id: JobId(2) }).await.unwrap().unwrap();
    assert_eq!(
        (requeued.status, requeued.run_at, requeued.attempt),
        (JobStatus::Queued, now, 1)
    );
    assert_eq!((requeued.last_error, requeued.lease_expires_at), (None, None));
    let e1 = s.job_events(JobEvents { id: JobId(1) }).await.unwrap();
    let e2 = s.job_events(JobEvents { id: JobId(2) }).await.unwrap();
    assert_eq!((e1.len(), e1[0].kind), (1, JobEventKind::Dead));
    assert_eq!((e2.len(), e2[0].kind), (1, JobEventKind::Reaped));
    assert_eq!(e2[0].detail.as_deref(), Some(detail.as_str()));
    assert_eq!(
        (e2[0].worker_id.as_deref(), e2[0].at, e2[0].epoch),
        (Some("w1"), now, Epoch(1))
    );
    assert_eq!(
        s.job_get(JobGet { id: JobId(4) }).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    assert!(s.job_reap_expired(reap(0)).await.unwrap().is_empty());
}

async fn an_expired_lease_is_not_fenced_until_reaped(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    s.job_insert(insert(job("default"))).await.unwrap();
    let a = claim_one(&*s, "w1").await;
    let b = claim_one(&*s, "w1").await;
    c.advance(LEASE * 3);
    let expires = s.job_heartbeat(heartbeat(&a)).await.unwrap();
    assert_eq!(expires, c.now() + LEASE);
    assert_eq!(
        s.job_complete(complete(&b)).await.unwrap(),
        CompleteOutcome::Completed
    );
    assert!(
        s.job_reap_expired(reap(10)).await.unwrap().is_empty(),
        "the heartbeat revived job 1's lease"
    );
}

async fn a_zombie_is_fenced_after_a_reclaim(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    let zombie = claim_one(&*s, "w1").await;
    c.advance(LEASE);
    assert_eq!(
        s.job_reap_expired(reap(10)).await.unwrap().requeued,
        vec![zombie.id()]
    );
    let zombie_late = s.job_complete(complete(&zombie)).await.unwrap_err();
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
    assert_eq!(s.job_complete(complete(&zombie)).await.unwrap_err(), stale);
    assert_eq!(s.job_heartbeat(heartbeat(&zombie)).await.unwrap_err(), stale);
    assert_eq!(
        s.job_fail(fail(zombie.id(), zombie.epoch(), "x", None))
            .await
            .unwrap_err(),
        stale
    );
    let release = JobRelease {
        id: zombie.id(),
        epoch: zombie.epoch(),
    };
    assert_eq!(s.job_release(release).await.unwrap_err(), stale);
    let j = s.job_get(JobGet { id: zombie.id() }).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.lease_owner.as_deref()),
        (JobStatus::Running, Some("w2"))
    );
    assert_eq!(
        s.job_complete(complete(&fresh)).await.unwrap(),
        CompleteOutcome::Completed
    );
}

async fn cancel_rules(c: &Ctx) {
    let s = c.store();
    for _ in 0..3 {
        s.job_insert(insert(job("default"))).await.unwrap();
    }
    assert_eq!(
        s.job_cancel(JobCancel { id: JobId(9) }).await.unwrap_err(),
        StorageError::NotFound(JobId(9))
    );
    c.advance(Duration::from_secs(1));
    let now = c.now();
    let cancelled = s.job_cancel(JobCancel { id: JobId(1) }).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.finished_at, cancelled.updated_at),
        (JobStatus::Cancelled, Some(now), now)
    );
    assert_eq!(
        s.job_get(JobGet { id: JobId(1) }).await.unwrap().unwrap(),
        cancelled
    );
    c.advance(Duration::from_secs(1));
    assert_eq!(
        s.job_cancel(JobCancel { id: JobId(1) }).await.unwrap(),
        cancelled,
        "cancelling twice changes nothing"
    );
    let running = claim_one(&*s, "w1").await;
    assert_eq!(running.id(), JobId(2));
    let c2 = s.job_cancel(JobCancel { id: running.id() }).await.unwrap();
    assert_eq!(
        (c2.status, c2.lease_expires_at, c2.epoch),
        (JobStatus::Cancelled, None, Epoch(1))
    );
    let err = s.job_complete(complete(&running)).await.unwrap_err();
    assert_wrong_status(&err, JobStatus::Cancelled);
    let done = claim_one(&*s, "w1").await;
    s.job_complete(complete(&done)).await.unwrap();
    let err = s.job_cancel(JobCancel { id: done.id() }).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: done.id(),
            status: JobStatus::Succeeded,
            operation: "cancel",
            expected: "queued or running"
        }
    );
    let kinds = event_kinds(&*s, JobId(1)).await;
    assert_eq!(kinds, vec![JobEventKind::Cancelled]);
}

async fn requeue_rules(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default").max_attempts(1)))
        .await
        .unwrap();
    s.job_insert(insert(job("default"))).await.unwrap();
    s.job_insert(insert(job("default"))).await.unwrap();
    let requeue = |id, force| JobRequeue { id, force };
    let err = s.job_requeue(requeue(JobId(3), false)).await.unwrap_err();
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
        s.job_requeue(requeue(JobId(8), true)).await.unwrap_err(),
        StorageError::NotFound(JobId(8))
    );
    // Job 1 dies on its only attempt, then an operator requeues it.
    let one = claim_one(&*s, "w1").await;
    let out = s
        .job_fail(fail(one.id(), one.epoch(), "nope", Some(Duration::from_secs(1))))
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    c.advance(Duration::from_secs(1));
    let now = c.now();
    let back = s.job_requeue(requeue(one.id(), false)).await.unwrap();
    assert_eq!(
        (back.status, back.attempt, back.finished_at),
        (JobStatus::Queued, 0, None)
    );
    assert_eq!((back.run_at, back.updated_at), (now, now));
    assert_eq!(back.last_error.as_deref(), Some("nope"));
    assert_eq!(s.job_get(JobGet { id: one.id() }).await.unwrap().unwrap(), back);
    // Job 2 runs with a live lease: only force takes it.
    let two = s.job_claim(claim_req("w1", &["default"], 10)).await.unwrap();
    let two = two.iter().find(|c| c.id() == JobId(2)).unwrap().clone();
    let err = s.job_requeue(requeue(two.id(), false)).await.unwrap_err();
    assert_eq!(
        refusal(&err).2,
        "dead, or running with an expired lease (or force)"
    );
    let forced = s.job_requeue(requeue(two.id(), true)).await.unwrap();
    assert_eq!(
        (forced.status, forced.attempt, forced.epoch),
        (JobStatus::Queued, 1, Epoch(1))
    );
    let err = s.job_heartbeat(heartbeat(&two)).await.unwrap_err();
    assert_wrong_status(&err, JobStatus::Queued);
    // Job 3's lease expires: requeue without force.
    c.advance(LEASE);
    let three = s.job_requeue(requeue(JobId(3), false)).await.unwrap();
    assert_eq!(three.status, JobStatus::Queued);
    let details = |id| {
        let s = s.clone();
        async move {
            s.job_events(JobEvents { id })
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
    let s = c.store();
    let t0 = c.now();
    s.job_insert(insert(job("default"))).await.unwrap();
    let batch = JobInsertMany::new(vec![job("default"), job("default").idempotency_key("k")]).unwrap();
    s.job_insert_many(batch).await.unwrap();
    c.advance(Duration::from_secs(1));
    let cj = claim_one(&*s, "w9").await;
    c.advance(Duration::from_secs(1));
    s.job_complete(complete(&cj)).await.unwrap();
    s.job_complete(complete(&cj)).await.unwrap();
    let events = s.job_events(JobEvents { id: cj.id() }).await.unwrap();
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
        let kinds = event_kinds(&*s, JobId(id)).await;
        assert_eq!(kinds, vec![JobEventKind::Inserted], "job {id}");
    }
    assert!(s
        .job_events(JobEvents { id: JobId(99) })
        .await
        .unwrap()
        .is_empty());
}

async fn fencing_checks_in_spec_order(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    let cj = claim_one(&*s, "w1").await;
    s.job_cancel(JobCancel { id: cj.id() }).await.unwrap();
    // Wrong epoch AND wrong status: the epoch is reported first.
    let err = s.job_complete(complete_at(cj.id(), Epoch(5))).await.unwrap_err();
    assert_eq!(stale_epochs(&err), (Epoch(5), Epoch(1)), "{err}");
    let err = s.job_heartbeat(heartbeat(&cj)).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: cj.id(),
            status: JobStatus::Cancelled,
            operation: "heartbeat",
            expected: "running"
        }
    );
    let err = s
        .job_release(JobRelease {
            id: JobId(0),
            epoch: Epoch(5),
        })
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::NotFound(JobId(0)));
}
