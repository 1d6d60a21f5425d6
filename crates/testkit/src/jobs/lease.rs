//! Conformance cases about a job's lease: claim, heartbeat, complete, fail,
//! release.

use std::time::Duration;

use serde_json::{json, Value};
use stuckless_core::driver::{
    CompleteOutcome, FailOutcome, JobComplete, JobCompleteMany, JobEvents, JobFail, JobGet, JobHeartbeat,
    JobRelease,
};
use stuckless_core::job::limits;
use stuckless_core::{Epoch, JobEventKind, JobId, JobStatus, StorageError};

use crate::case::{
    assert_invalid, assert_wrong_status, claim_one, claim_req, complete_at, event_kinds, insert, job,
    kit_case, refusal, stale_epochs, Case, Ctx, LEASE,
};

/// The lease cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!("job", claim_takes_due_jobs_by_priority_run_at_id),
        kit_case!("job", claim_edge_cases),
        kit_case!("job", heartbeat_extends_the_lease_and_keeps_or_sets_progress),
        kit_case!("job", complete_is_idempotent_for_the_same_epoch),
        kit_case!("job", complete_many_answers_per_job_in_input_order),
        kit_case!("job", fail_retries_then_goes_dead_and_clamps_the_error),
        kit_case!("job", release_gives_the_attempt_back),
    ]
}

async fn claim_takes_due_jobs_by_priority_run_at_id(c: &Ctx) {
    let s = c.store();
    let now = c.now();
    let earlier = now - Duration::from_secs(10);
    // ids: 1 low prio, 2 high prio, 3 high prio earlier run_at, 4 future, 5 other queue, 6 = 2's twin
    s.job_insert(insert(job("default"))).await.unwrap();
    s.job_insert(insert(job("default").priority(5))).await.unwrap();
    s.job_insert(insert(job("default").priority(5).run_at(earlier)))
        .await
        .unwrap();
    s.job_insert(insert(
        job("default").priority(9).run_at(now + Duration::from_micros(1)),
    ))
    .await
    .unwrap();
    s.job_insert(insert(job("other").priority(100))).await.unwrap();
    s.job_insert(insert(job("default").priority(5))).await.unwrap();
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
        assert_eq!(s.job_get(JobGet { id: j.id }).await.unwrap().as_ref(), Some(j));
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
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
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
    assert_invalid(&err, "worker_id");
    let err = s
        .job_claim(claim_req("w1", &["default", "x'y"], 1))
        .await
        .unwrap_err();
    assert_invalid(&err, "queue");
    // The refused claims took nothing.
    assert_eq!(
        s.job_get(JobGet { id: JobId(1) }).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

fn heartbeat(id: JobId, epoch: Epoch, lease: Duration, progress: Option<Value>) -> JobHeartbeat {
    JobHeartbeat {
        id,
        epoch,
        lease,
        progress,
    }
}

async fn heartbeat_extends_the_lease_and_keeps_or_sets_progress(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    let cj = claim_one(&*s, "w1").await;
    c.advance(Duration::from_secs(10));
    let now = c.now();
    let lease = Duration::from_micros(45_000_001);
    let expires = s
        .job_heartbeat(heartbeat(cj.id(), cj.epoch(), lease, Some(json!({"section": 2}))))
        .await
        .unwrap();
    assert_eq!(expires, now + lease);
    let j = s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap();
    assert_eq!(
        (j.lease_expires_at, j.heartbeat_at, j.updated_at),
        (Some(expires), Some(now), now)
    );
    assert_eq!(j.progress, Some(json!({"section": 2})));
    c.advance(Duration::from_secs(1));
    s.job_heartbeat(heartbeat(cj.id(), cj.epoch(), LEASE, None))
        .await
        .unwrap();
    let j = s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap();
    assert_eq!(j.progress, Some(json!({"section": 2})), "None keeps the progress");
    s.job_heartbeat(heartbeat(cj.id(), cj.epoch(), LEASE, Some(Value::Null)))
        .await
        .unwrap();
    let j = s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap();
    assert_eq!(j.progress, Some(Value::Null), "Some(null) stores a JSON null");
    let big = json!("x".repeat(limits::MAX_PROGRESS_BYTES));
    let err = s
        .job_heartbeat(heartbeat(cj.id(), cj.epoch(), LEASE, Some(big)))
        .await
        .unwrap_err();
    assert_invalid(&err, "progress");
    let err = s
        .job_heartbeat(heartbeat(JobId(99), Epoch(1), LEASE, None))
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::NotFound(JobId(99)));
    let err = s
        .job_heartbeat(heartbeat(cj.id(), Epoch(2), LEASE, None))
        .await
        .unwrap_err();
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
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    s.job_insert(insert(job("default"))).await.unwrap();
    let err = s
        .job_complete(JobComplete {
            id: JobId(2),
            epoch: Epoch(0),
        })
        .await
        .unwrap_err();
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
    let done = JobComplete {
        id: cj.id(),
        epoch: cj.epoch(),
    };
    c.advance(Duration::from_secs(2));
    let now = c.now();
    assert_eq!(s.job_complete(done).await.unwrap(), CompleteOutcome::Completed);
    let j = s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap();
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
        s.job_complete(done).await.unwrap(),
        CompleteOutcome::AlreadyCompleted
    );
    assert_eq!(
        s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap(),
        j,
        "a retried completion changes nothing"
    );
    let err = s.job_complete(complete_at(cj.id(), Epoch(7))).await.unwrap_err();
    assert_eq!(stale_epochs(&err).1, Epoch(1), "{err}");
    assert_eq!(
        s.job_complete(JobComplete {
            id: JobId(42),
            epoch: Epoch(1)
        })
        .await
        .unwrap_err(),
        StorageError::NotFound(JobId(42))
    );
}

async fn complete_many_answers_per_job_in_input_order(c: &Ctx) {
    let s = c.store();
    for _ in 0..3 {
        s.job_insert(insert(job("default"))).await.unwrap();
    }
    let claimed = s.job_claim(claim_req("w1", &["default"], 2)).await.unwrap();
    let (a, b) = (&claimed[0], &claimed[1]);
    let pairs = [
        (a.id(), a.epoch()),
        (b.id(), Epoch(9)),
        (a.id(), a.epoch()),
        (JobId(3), Epoch(0)),
        (JobId(77), Epoch(1)),
        (b.id(), b.epoch()),
    ];
    let jobs = pairs
        .iter()
        .map(|&(id, epoch)| JobComplete { id, epoch })
        .collect();
    let results = s.job_complete_many(JobCompleteMany { jobs }).await.unwrap();
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

pub(super) fn fail(id: JobId, epoch: Epoch, error: &str, retry_after: Option<Duration>) -> JobFail {
    JobFail {
        id,
        epoch,
        error: error.into(),
        retry_after,
    }
}

async fn fail_retries_then_goes_dead_and_clamps_the_error(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default").max_attempts(2)))
        .await
        .unwrap();
    let first = claim_one(&*s, "w1").await;
    // A delay past the 100-year bound is refused before anything changes
    // (a cargo-mutants survivor made `JobFail::validate` answer `Ok`).
    let forever = Duration::from_secs(200 * 365 * 86_400);
    let refused = s
        .job_fail(fail(first.id(), first.epoch(), "later", Some(forever)))
        .await
        .unwrap_err();
    assert_invalid(&refused, "retry_after");
    let j = s.job_get(JobGet { id: first.id() }).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.epoch, j.attempt),
        (JobStatus::Running, first.epoch(), 1)
    );
    let now = c.now();
    let delay = Duration::from_micros(1_500_001);
    let out = s
        .job_fail(fail(first.id(), first.epoch(), "boom \0 with NUL", Some(delay)))
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Retried { run_at: now + delay });
    let j = s.job_get(JobGet { id: first.id() }).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.attempt, j.run_at),
        (JobStatus::Queued, 1, now + delay)
    );
    assert_eq!(j.last_error.as_deref(), Some("boom  with NUL"));
    assert_eq!((j.lease_expires_at, j.finished_at), (None, None));
    let events = s.job_events(JobEvents { id: first.id() }).await.unwrap();
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
        .job_fail(fail(
            second.id(),
            second.epoch(),
            &long,
            Some(Duration::from_secs(1)),
        ))
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead, "attempts used up");
    let j = s.job_get(JobGet { id: second.id() }).await.unwrap().unwrap();
    assert_eq!((j.status, j.finished_at), (JobStatus::Dead, Some(c.now())));
    let stored = j.last_error.unwrap();
    assert!(stored.len() <= limits::MAX_ERROR_BYTES && stored.chars().all(|ch| ch == 'é'));
    let kinds = event_kinds(&*s, j.id).await;
    assert_eq!(kinds, vec![JobEventKind::Retried, JobEventKind::Dead]);
    // A permanent failure is dead at once, attempts left or not.
    s.job_insert(insert(job("default"))).await.unwrap();
    let p = claim_one(&*s, "w1").await;
    let out = s
        .job_fail(fail(p.id(), p.epoch(), "bad input", None))
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    let err = s
        .job_fail(fail(p.id(), p.epoch(), "again", None))
        .await
        .unwrap_err();
    let (status, operation, _) = refusal(&err);
    assert_eq!((status, operation), (JobStatus::Dead, "fail"), "{err}");
}

async fn release_gives_the_attempt_back(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default").run_at(c.now() - Duration::from_secs(60))))
        .await
        .unwrap();
    let cj = claim_one(&*s, "w1").await;
    s.job_heartbeat(heartbeat(cj.id(), cj.epoch(), LEASE, Some(json!(50))))
        .await
        .unwrap();
    c.advance(Duration::from_secs(3));
    let now = c.now();
    let release = JobRelease {
        id: cj.id(),
        epoch: cj.epoch(),
    };
    s.job_release(release).await.unwrap();
    let j = s.job_get(JobGet { id: cj.id() }).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempt, j.epoch), (JobStatus::Queued, 0, Epoch(1)));
    assert_eq!((j.run_at, j.updated_at, j.lease_expires_at), (now, now, None));
    assert_eq!(j.progress, Some(json!(50)), "the last attempt's record stays");
    let events = s.job_events(JobEvents { id: cj.id() }).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].attempt, events[0].worker_id.as_deref()),
        (JobEventKind::Released, 0, Some("w1"))
    );
    let err = s.job_release(release).await.unwrap_err();
    assert_wrong_status(&err, JobStatus::Queued);
    let again = claim_one(&*s, "w2").await;
    assert_eq!((again.job.attempt, again.epoch()), (1, Epoch(2)));
}
