//! Conformance cases about retention: which finished jobs a prune deletes,
//! in what order, and that it touches nothing else.

use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{JobCancel, JobComplete, JobEvents, JobFail, JobGet, JobPrune, PruneOutcome};
use stuckless_core::{JobId, JobStatus, NewJob, StorageError};

use crate::case::{claim_one, claim_req, insert, job, kit_case, Case, Ctx};

/// The retention cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!(
            "job",
            prune_deletes_finished_jobs_past_their_age_and_nothing_else,
            true
        ),
        kit_case!("job", prune_takes_the_oldest_finish_first_up_to_the_limit),
        kit_case!("job", a_pruned_jobs_idempotency_key_is_free_again),
        kit_case!("job", prune_refuses_an_age_it_cannot_hold_and_deletes_nothing),
    ]
}

const DAY: Duration = Duration::from_secs(86_400);

fn prune(limit: u32) -> JobPrune {
    JobPrune {
        succeeded_after: DAY,
        cancelled_after: DAY,
        dead_after: DAY * 7,
        limit,
    }
}

async fn succeed(c: &Ctx, queue: &str) -> JobId {
    let s = c.store();
    s.job_insert(insert(job(queue))).await.unwrap();
    let claimed = s.job_claim(claim_req("w", &[queue], 1)).await.unwrap().remove(0);
    s.job_complete(JobComplete {
        id: claimed.id(),
        epoch: claimed.epoch(),
    })
    .await
    .unwrap();
    claimed.id()
}

async fn gone(c: &Ctx, id: JobId) -> bool {
    let s = c.store();
    let job = s.job_get(JobGet { id }).await.unwrap();
    let events = s.job_events(JobEvents { id }).await.unwrap();
    match job {
        None => {
            assert!(events.is_empty(), "a pruned job's events go with it: {events:?}");
            true
        }
        Some(_) => false,
    }
}

async fn prune_deletes_finished_jobs_past_their_age_and_nothing_else(c: &Ctx) {
    let s = c.store();
    let succeeded = succeed(c, "default").await; // 1
    let cancelled = s.job_insert(insert(job("other"))).await.unwrap().job.id; // 2
    s.job_cancel(JobCancel { id: cancelled }).await.unwrap();
    s.job_insert(insert(job("dead").max_attempts(1))).await.unwrap(); // 3
    let doomed = s.job_claim(claim_req("w", &["dead"], 1)).await.unwrap().remove(0);
    let fail = JobFail {
        id: doomed.id(),
        epoch: doomed.epoch(),
        error: "no".into(),
        retry_after: None,
    };
    s.job_fail(fail).await.unwrap();
    let queued = s.job_insert(insert(job("idle"))).await.unwrap().job.id; // 4
    s.job_insert(insert(job("busy"))).await.unwrap(); // 5
    let running = s
        .job_claim(claim_req("w", &["busy"], 1))
        .await
        .unwrap()
        .remove(0)
        .id();
    c.advance(Duration::from_secs(10));
    let later = succeed(c, "default").await; // 6, finished 10 s after the others

    c.advance(DAY - Duration::from_secs(10) - Duration::from_micros(1));
    assert_eq!(
        s.job_prune(prune(100)).await.unwrap(),
        PruneOutcome::default(),
        "not a day yet"
    );
    c.advance(Duration::from_micros(1));
    let out = s.job_prune(prune(100)).await.unwrap();
    assert_eq!(
        (out.succeeded, out.cancelled, out.dead),
        (1, 1, 0),
        "a day is inclusive"
    );
    assert!(gone(c, succeeded).await && gone(c, cancelled).await);
    assert!(!gone(c, later).await, "finished 10 s later: not yet");

    c.advance(DAY * 7);
    let out = s.job_prune(prune(100)).await.unwrap();
    assert_eq!(
        (out.succeeded, out.cancelled, out.dead, out.total()),
        (1, 0, 1, 2)
    );
    assert!(gone(c, doomed.id()).await && gone(c, later).await);
    for (id, status) in [(queued, JobStatus::Queued), (running, JobStatus::Running)] {
        let job = s
            .job_get(JobGet { id })
            .await
            .unwrap()
            .expect("unfinished jobs are never pruned");
        assert_eq!(job.status, status);
    }
    assert!(s.job_prune(prune(100)).await.unwrap().total() == 0, "idempotent");
}

async fn prune_takes_the_oldest_finish_first_up_to_the_limit(c: &Ctx) {
    let s = c.store();
    let mut finished = Vec::new();
    for _ in 0..3 {
        finished.push(succeed(c, "default").await);
        c.advance(Duration::from_secs(1));
    }
    // Finished third but first by id order would be wrong: cancel job 4 first.
    let early = s.job_insert(insert(job("default"))).await.unwrap().job.id;
    c.advance(DAY * 2);
    assert_eq!(s.job_prune(prune(2)).await.unwrap().succeeded, 2);
    assert!(gone(c, finished[0]).await && gone(c, finished[1]).await);
    assert!(!gone(c, finished[2]).await);
    assert_eq!(
        s.job_prune(prune(0)).await.unwrap().total(),
        0,
        "limit 0 deletes nothing"
    );
    assert_eq!(s.job_prune(prune(2)).await.unwrap().succeeded, 1);
    assert!(gone(c, finished[2]).await);
    assert!(!gone(c, early).await, "queued: kept");
}

async fn a_pruned_jobs_idempotency_key_is_free_again(c: &Ctx) {
    let s = c.store();
    let keyed = || NewJob::new("default", "kind", json!({})).idempotency_key("report-2026-11");
    let first = s.job_insert(insert(keyed())).await.unwrap().job.id;
    let claimed = claim_one(&*s, "w").await;
    s.job_complete(JobComplete {
        id: claimed.id(),
        epoch: claimed.epoch(),
    })
    .await
    .unwrap();
    let again = s.job_insert(insert(keyed())).await.unwrap();
    assert_eq!(
        (again.inserted, again.job.id),
        (false, first),
        "kept: the key still answers"
    );
    c.advance(DAY);
    assert_eq!(s.job_prune(prune(10)).await.unwrap().succeeded, 1);
    let fresh = s.job_insert(insert(keyed())).await.unwrap();
    assert!(fresh.inserted, "after retention the key names a new job");
    assert_ne!(fresh.job.id, first);
}

/// Guards a cargo-mutants survivor (`JobPrune::validate` answering `Ok`):
/// an age past the 100-year bound is refused naming its field, before any
/// row is deleted.
async fn prune_refuses_an_age_it_cannot_hold_and_deletes_nothing(c: &Ctx) {
    let s = c.store();
    let id = succeed(c, "default").await;
    c.advance(DAY * 8);
    let too_old = DAY * 365 * 200;
    for field in ["succeeded_after", "cancelled_after", "dead_after"] {
        let mut bad = prune(10);
        match field {
            "succeeded_after" => bad.succeeded_after = too_old,
            "cancelled_after" => bad.cancelled_after = too_old,
            _ => bad.dead_after = too_old,
        }
        let refused = s.job_prune(bad).await;
        assert!(
            matches!(&refused, Err(StorageError::Invalid(e)) if e.field == field),
            "{field}: {refused:?}"
        );
    }
    assert!(!gone(c, id).await, "a refused prune deletes nothing");
}
