//! Conformance cases about checkpoints: fenced like a heartbeat, size-limited,
//! and kept by every transition after the attempt that saved them.

use std::time::Duration;

use serde_json::{json, Value};
use stuckless_core::driver::{
    JobCancel, JobCheckpoint, JobComplete, JobFail, JobGet, JobHeartbeat, JobReapExpired, JobRelease,
    JobRequeue, Storage,
};
use stuckless_core::job::limits;
use stuckless_core::{ClaimedJob, Epoch, Job, JobId, JobStatus, StorageError};

use crate::case::{assert_invalid, claim_one, insert, job, kit_case, stale_epochs, Case, Ctx, LEASE};

/// The checkpoint cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!("job", checkpoint_is_fenced_like_a_heartbeat_and_size_limited),
        kit_case!(
            "job",
            a_checkpoint_survives_release_retry_reap_requeue_and_complete
        ),
    ]
}

/// The checkpoint write of `(id, epoch)`.
fn save(id: JobId, epoch: Epoch, checkpoint: Value) -> JobCheckpoint {
    JobCheckpoint {
        id,
        epoch,
        checkpoint,
    }
}

async fn get(s: &dyn Storage, id: JobId) -> Job {
    s.job_get(JobGet { id }).await.unwrap().expect("the job exists")
}

async fn checkpoint_is_fenced_like_a_heartbeat_and_size_limited(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(job("default"))).await.unwrap();
    let queued = s.job_insert(insert(job("later"))).await.unwrap().job;
    let cj = claim_one(&*s, "w1").await;
    assert_eq!((cj.job.checkpoint.as_ref(), cj.job.checkpointed_at), (None, None));
    c.advance(Duration::from_secs(3));
    let now = c.now();
    let at = s
        .job_checkpoint(save(cj.id(), cj.epoch(), json!({"section": 1, "ids": [1, 2]})))
        .await
        .unwrap();
    assert_eq!(at, now);
    let j = get(&*s, cj.id()).await;
    assert_eq!(j.checkpoint, Some(json!({"section": 1, "ids": [1, 2]})));
    assert_eq!((j.checkpointed_at, j.updated_at), (Some(now), now));
    assert_eq!(
        (j.lease_expires_at, j.heartbeat_at),
        (cj.job.lease_expires_at, cj.job.heartbeat_at),
        "a checkpoint is not a heartbeat: the lease stays as it was"
    );
    assert_eq!(j.progress, None, "and it leaves progress alone");
    // A later checkpoint replaces the earlier; a JSON null is a value.
    c.advance(Duration::from_micros(1));
    s.job_checkpoint(save(cj.id(), cj.epoch(), Value::Null))
        .await
        .unwrap();
    let j = get(&*s, cj.id()).await;
    assert_eq!(
        (j.checkpoint, j.checkpointed_at),
        (Some(Value::Null), Some(c.now()))
    );
    // Bad input is refused before anything is written.
    let big = json!("x".repeat(limits::MAX_CHECKPOINT_BYTES));
    let err = s
        .job_checkpoint(save(cj.id(), cj.epoch(), big))
        .await
        .unwrap_err();
    assert_invalid(&err, "checkpoint");
    let err = s
        .job_checkpoint(save(cj.id(), cj.epoch(), json!({"a": "x\u{0}"})))
        .await
        .unwrap_err();
    assert_invalid(&err, "checkpoint");
    // Just under the limit is accepted: the limit is on compact JSON.
    let fits = json!("y".repeat(limits::MAX_CHECKPOINT_BYTES - 2));
    s.job_checkpoint(save(cj.id(), cj.epoch(), fits.clone()))
        .await
        .unwrap();
    assert_eq!(get(&*s, cj.id()).await.checkpoint, Some(fits.clone()));
    // Refusals, in the spec's order.
    let err = s
        .job_checkpoint(save(JobId(99), Epoch(1), json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::NotFound(JobId(99)));
    let err = s
        .job_checkpoint(save(cj.id(), Epoch(2), json!(1)))
        .await
        .unwrap_err();
    assert_eq!(stale_epochs(&err), (Epoch(2), Epoch(1)), "{err}");
    let err = s
        .job_checkpoint(save(queued.id, Epoch(0), json!(1)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: queued.id,
            status: JobStatus::Queued,
            operation: "checkpoint",
            expected: "running"
        }
    );
    s.job_cancel(JobCancel { id: cj.id() }).await.unwrap();
    let err = s
        .job_checkpoint(save(cj.id(), cj.epoch(), json!(1)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::WrongStatus {
            id: cj.id(),
            status: JobStatus::Cancelled,
            operation: "checkpoint",
            expected: "running"
        }
    );
    let j = get(&*s, cj.id()).await;
    assert_eq!(j.checkpoint, Some(fits), "no refused write changed it");
}

/// Claims the job again as `worker` and checks the claim handed the
/// checkpoint over, with the attempt's progress cleared.
async fn reclaim(s: &dyn Storage, worker: &str, expected: &Value) -> ClaimedJob {
    let cj = claim_one(s, worker).await;
    assert_eq!(
        cj.job.checkpoint.as_ref(),
        Some(expected),
        "the claim hands it over"
    );
    assert_eq!(
        cj.job.progress, None,
        "progress is the attempt's; the claim clears it"
    );
    cj
}

async fn a_checkpoint_survives_release_retry_reap_requeue_and_complete(c: &Ctx) {
    let s = c.store();
    let id = s
        .job_insert(insert(job("default").max_attempts(3)))
        .await
        .unwrap()
        .job
        .id;
    let first = claim_one(&*s, "w1").await;
    let saved_at = c.now();
    s.job_checkpoint(save(id, first.epoch(), json!({"section": 1})))
        .await
        .unwrap();
    let progress = JobHeartbeat {
        id,
        epoch: first.epoch(),
        lease: LEASE,
        progress: Some(json!({"pct": 40})),
    };
    s.job_heartbeat(progress).await.unwrap();
    // Release (graceful shutdown): kept, and handed to the next claim.
    c.advance(Duration::from_secs(1));
    s.job_release(JobRelease {
        id,
        epoch: first.epoch(),
    })
    .await
    .unwrap();
    let j = get(&*s, id).await;
    assert_eq!(
        (j.checkpoint, j.checkpointed_at),
        (Some(json!({"section": 1})), Some(saved_at))
    );
    let second = reclaim(&*s, "w2", &json!({"section": 1})).await;
    assert_eq!(second.job.checkpointed_at, Some(saved_at));
    // A retry keeps the checkpoint the failed attempt saved.
    s.job_checkpoint(save(id, second.epoch(), json!({"section": 2})))
        .await
        .unwrap();
    let retry = JobFail {
        id,
        epoch: second.epoch(),
        error: "boom".into(),
        retry_after: Some(Duration::ZERO),
    };
    s.job_fail(retry).await.unwrap();
    // A reap keeps it, and the zombie's late checkpoint is refused, before
    // and after the next claim.
    let third = reclaim(&*s, "w3", &json!({"section": 2})).await;
    s.job_checkpoint(save(id, third.epoch(), json!({"section": 3})))
        .await
        .unwrap();
    c.advance(LEASE);
    let reaped = s.job_reap_expired(JobReapExpired { limit: 10 }).await.unwrap();
    assert_eq!(reaped.requeued, vec![id]);
    assert_eq!(get(&*s, id).await.checkpoint, Some(json!({"section": 3})));
    let zombie = save(id, third.epoch(), json!({"section": 99}));
    let err = s.job_checkpoint(zombie.clone()).await.unwrap_err();
    assert!(matches!(err, StorageError::WrongStatus { .. }), "{err}");
    let fourth = reclaim(&*s, "w1", &json!({"section": 3})).await;
    let err = s.job_checkpoint(zombie).await.unwrap_err();
    assert_eq!(stale_epochs(&err), (third.epoch(), fourth.epoch()), "{err}");
    assert_eq!(get(&*s, id).await.checkpoint, Some(json!({"section": 3})));
    // Dead, then requeued by an operator: still kept.
    let permanent = JobFail {
        id,
        epoch: fourth.epoch(),
        error: "gave up".into(),
        retry_after: None,
    };
    s.job_fail(permanent).await.unwrap();
    let requeued = s.job_requeue(JobRequeue { id, force: false }).await.unwrap();
    assert_eq!(requeued.checkpoint, Some(json!({"section": 3})));
    // Completion keeps the last state for whoever reads the job later.
    let fifth = reclaim(&*s, "w2", &json!({"section": 3})).await;
    s.job_checkpoint(save(id, fifth.epoch(), json!({"section": 4})))
        .await
        .unwrap();
    s.job_complete(JobComplete {
        id,
        epoch: fifth.epoch(),
    })
    .await
    .unwrap();
    let j = get(&*s, id).await;
    assert_eq!(
        (j.status, j.checkpoint),
        (JobStatus::Succeeded, Some(json!({"section": 4})))
    );
}
