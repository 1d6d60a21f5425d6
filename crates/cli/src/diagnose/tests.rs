//! `diagnose` on the in-memory store: every case, and the time limits.

use super::*;
use crate::ops::Report;
use serde_json::json;
use std::sync::Arc;
use stuckless_core::driver::{JobClaim, WorkerRegister};
use stuckless_core::{Client, ManualClock, MemStore, NewJob};

async fn setup() -> (ManualClock, Arc<MemStore>, Client, JobId) {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let s = Arc::new(MemStore::new(clock.clone()));
    let c = Client::new(s.clone());
    let id = c
        .enqueue_job(NewJob::new("default", "report", json!({})))
        .await
        .unwrap()
        .job
        .id;
    (clock, s, c, id)
}

async fn register(s: &MemStore, id: &str) {
    register_with(s, id, &["report"], json!(null)).await;
}

async fn register_with(s: &MemStore, id: &str, kinds: &[&str], metadata: serde_json::Value) {
    let reg = WorkerRegister {
        id: id.into(),
        queues: vec!["default".into()],
        concurrency: 1,
        metadata,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    };
    s.worker_register(reg).await.unwrap();
}

fn claim(worker: &str) -> JobClaim {
    JobClaim {
        worker_id: worker.into(),
        queues: vec!["default".into()],
        limit: 1,
        lease: Duration::from_secs(300),
        kinds: None,
    }
}

const STALE: Duration = Duration::from_secs(90);

#[test]
fn headlines_name_the_meaning_with_the_letter_as_a_cross_reference() {
    assert_eq!(
        Case::SlowButAlive.headline(),
        "running, lease valid: slow or waiting on an external call (scenario B)"
    );
    assert_eq!(
        Case::NoLiveWorker.headline(),
        "due, nobody claiming: no live worker serves its queue (scenario C)"
    );
    assert_eq!(Case::Dead.headline(), Case::Dead.title());
    let json = serde_json::to_value(Case::ExpiredLease).unwrap();
    assert_eq!(json, "expired_lease");
}

#[tokio::test]
async fn names_every_case_on_the_model_store() {
    let (clock, s, c, id) = setup().await;
    let d = diagnose(&*s, id, STALE).await.unwrap();
    assert_eq!(d.case, Case::NoLiveWorker);
    assert_eq!(d.fix.as_deref(), Some("stuckless worker --queues default"));
    register_with(&s, "w0", &["noop", "sleep"], json!(null)).await;
    let u = diagnose(&*s, id, STALE).await.unwrap();
    assert_eq!(u.case, Case::UnhandledKind);
    assert!(
        u.explanation
            .contains("no live worker handles kind \"report\" (live workers handle: noop, sleep)"),
        "{}",
        u.explanation
    );
    assert_eq!(
        u.fix.as_deref(),
        Some("stuckless worker --queues default --handler report=<handler>")
    );
    assert!(
        u.human().contains("live kinds    noop, sleep (not report)"),
        "{}",
        u.human()
    );
    register(&s, "w1").await;
    assert_eq!(
        diagnose(&*s, id, STALE).await.unwrap().case,
        Case::WaitingForCapacity
    );
    s.job_claim(claim("w1")).await.unwrap();
    let b = diagnose(&*s, id, STALE).await.unwrap();
    assert_eq!((b.case, b.scenario.as_deref()), (Case::SlowButAlive, Some("B")));
    assert!(b.fix.is_none());
    // w1 recorded no limits: the core's default is assumed, from the claim.
    let limit = b.time_limit.as_ref().expect("a running job's limit");
    assert_eq!(limit.source, LimitSource::AssumedDefault);
    assert_eq!(
        limit.cancels_at,
        Some(b.job.claimed_at.unwrap() + stuckless_core::DEFAULT_TIMEOUT)
    );
    assert!(
        b.explanation.contains(
            "Time limit: the worker's limit for kind report (default 15m; its worker did not record its limits): \
             at the default, the attempt is cancelled at"
        ) && b.explanation.contains("(in 15m) unless it finishes first"),
        "{}",
        b.explanation
    );
    clock.advance(Duration::from_secs(120));
    assert_eq!(diagnose(&*s, id, STALE).await.unwrap().case, Case::WorkerGone);
    clock.advance(Duration::from_secs(200));
    let a = diagnose(&*s, id, STALE).await.unwrap();
    assert_eq!((a.case, a.scenario.as_deref()), (Case::ExpiredLease, Some("A")));
    assert_eq!(a.fix.as_deref(), Some(&*format!("stuckless requeue {id}")));
    assert!(a.human().contains("EXPIRED 20s ago"), "{}", a.human());
    let first = a.human().lines().next().unwrap().to_owned();
    assert_eq!(
        first,
        format!("job {id} (queue default, kind report): lease expired, not reaped (scenario A)")
    );
    // The suggested fix works and is accepted without --force.
    crate::ops::requeue(&c, id, false).await.unwrap();
    let requeued = diagnose(&*s, id, STALE).await.unwrap();
    assert_eq!(requeued.events.len(), 1, "the requeue is in the timeline");
    c.cancel(id).await.unwrap();
    assert_eq!(diagnose(&*s, id, STALE).await.unwrap().case, Case::Cancelled);
    assert_eq!(
        diagnose(&*s, JobId(77), STALE).await.unwrap_err().to_string(),
        "no job with id 77"
    );
}

#[tokio::test]
async fn a_running_jobs_limit_is_its_own_else_its_workers_for_the_kind_else_the_workers_default() {
    let (clock, s, c, _) = setup().await;
    let own = c
        .enqueue_job(NewJob::new("default", "report", json!({})).timeout(Duration::from_secs(90)))
        .await
        .unwrap()
        .job
        .id;
    let limits =
        json!({"time_limits": {"default_us": 600_000_000u64, "kinds_us": {"report": 1_200_000_000u64}}});
    register_with(&s, "w1", &["report"], limits).await;
    s.job_claim(JobClaim {
        limit: 2,
        ..claim("w1")
    })
    .await
    .unwrap();
    clock.advance(Duration::from_secs(60));
    let d = diagnose(&*s, own, STALE).await.unwrap();
    let limit = d.time_limit.as_ref().unwrap();
    assert_eq!((limit.source, limit.limit_secs), (LimitSource::Job, Some(90.0)));
    assert!(
        d.human()
            .contains("time limit    1m 30s, the job's own: the attempt is cancelled at"),
        "{}",
        d.human()
    );
    assert!(
        d.human().contains("(in 30s) unless it finishes first"),
        "{}",
        d.human()
    );
    let kind = diagnose(&*s, JobId(1), STALE).await.unwrap();
    let limit = kind.time_limit.as_ref().unwrap();
    assert_eq!(
        (limit.source, limit.limit_secs),
        (LimitSource::WorkerKind, Some(1200.0))
    );
    assert!(
        kind.explanation
            .contains("20m, its worker's limit for kind report"),
        "{}",
        kind.explanation
    );
    // Another kind: the worker's default; `off` recorded as null: no limit.
    register_with(
        &s,
        "w1",
        &["report"],
        json!({"time_limits": {"default_us": 600_000_000u64, "kinds_us": {}}}),
    )
    .await;
    let default = diagnose(&*s, JobId(1), STALE).await.unwrap();
    assert_eq!(
        default.time_limit.as_ref().unwrap().source,
        LimitSource::WorkerDefault
    );
    assert!(
        default.explanation.contains("10m, its worker's default"),
        "{}",
        default.explanation
    );
    register_with(
        &s,
        "w1",
        &["report"],
        json!({"time_limits": {"default_us": null, "kinds_us": {}}}),
    )
    .await;
    let off = diagnose(&*s, JobId(1), STALE).await.unwrap();
    assert_eq!(off.time_limit.as_ref().unwrap().limit_secs, None);
    assert!(
        off.explanation.contains("--default-timeout off"),
        "{}",
        off.explanation
    );
    // Past the limit, the sentence says so instead of "in -…".
    register_with(
        &s,
        "w1",
        &["report"],
        json!({"time_limits": {"default_us": 30_000_000u64, "kinds_us": {}}}),
    )
    .await;
    let late = diagnose(&*s, JobId(1), STALE).await.unwrap();
    assert!(
        late.explanation.contains("(overdue by 30s)"),
        "{}",
        late.explanation
    );
}
