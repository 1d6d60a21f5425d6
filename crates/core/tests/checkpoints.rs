//! Resumable jobs on the worker runtime: a handler that checkpoints after each
//! section resumes after a crash or a release from its last acknowledged
//! section, never redoing it; a zombie's checkpoint is refused and cancels
//! its attempt; a checkpoint over the limit is refused without harm. And the
//! heartbeats that carry progress come one interval apart, none for a job
//! shorter than one interval.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use stuckless_core::driver::{JobCheckpoint, JobClaim, JobRequeue, Op, Storage};
use stuckless_core::{CancelReason, CheckpointError, Epoch, JobContext, JobError, JobStatus};
use tokio::sync::Notify;

/// Sections each worker finished, in order: `(worker, section)`.
type Log = Arc<Mutex<Vec<(String, u32)>>>;

/// What a zombie handler saw: the refusal's message and its cancel reason.
type Seen = Arc<Mutex<Option<(String, Option<CancelReason>)>>>;

/// A handler that runs `payload.sections` one-second sections, resuming after
/// the last checkpointed one, and checkpoints after each.
fn sections(worker: &'static str, log: Log) -> impl stuckless_core::Handler {
    move |ctx: JobContext| {
        let log = log.clone();
        async move {
            let total = ctx.payload()["sections"].as_u64().unwrap_or(0) as u32;
            let done: u32 = ctx.last_checkpoint_as()?.unwrap_or(0);
            for section in done + 1..=total {
                tokio::select! {
                    biased;
                    _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                log.lock().unwrap().push((worker.to_string(), section));
                ctx.checkpoint_as(&section).await?;
            }
            Ok(())
        }
    }
}

fn finished(log: &Log) -> Vec<(String, u32)> {
    log.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_crashed_attempt_resumes_after_its_last_checkpointed_section() {
    let world = World::new();
    let id = world.insert("report", json!({"sections": 5})).await;
    let log: Log = Arc::default();
    let w1 = world.worker("w1").handler("report", sections("w1", log.clone()));
    let (_, first) = spawn(w1.build().unwrap());
    // Three sections finish (and are checkpointed) by 3 s; the fourth is
    // half done when the worker crashes.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    first.abort();
    let _ = first.await;
    assert_eq!(world.job(id).await.checkpoint, Some(json!(3)));

    let w2 = world.worker("w2").handler("report", sections("w2", log.clone()));
    let (job, report) = world.run_until_terminal(w2, id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!((job.attempt, job.checkpoint), (2, Some(json!(5))));
    assert_eq!(report.completed, 1);
    let expected: Vec<(String, u32)> = [("w1", 1), ("w1", 2), ("w1", 3), ("w2", 4), ("w2", 5)]
        .map(|(w, s)| (w.to_string(), s))
        .into();
    assert_eq!(finished(&log), expected, "no checkpointed section runs twice");
}

#[tokio::test(start_paused = true)]
async fn a_released_job_resumes_after_its_last_checkpointed_section() {
    let world = World::new();
    let id = world.insert("report", json!({"sections": 4})).await;
    let log: Log = Arc::default();
    let w1 = world
        .worker("w1")
        .shutdown_grace(Duration::from_millis(200))
        .handler("report", sections("w1", log.clone()));
    let (shutdown, first) = spawn(w1.build().unwrap());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    shutdown.graceful();
    let report = first.await.unwrap();
    assert_eq!(report.released, 1);
    let job = world.job(id).await;
    assert_eq!((job.status, job.checkpoint), (JobStatus::Queued, Some(json!(2))));

    let w2 = world.worker("w2").handler("report", sections("w2", log.clone()));
    let (job, _) = world.run_until_terminal(w2, id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempt, 1, "a release costs no attempt");
    let sections: Vec<u32> = finished(&log).iter().map(|(_, s)| *s).collect();
    assert_eq!(sections, vec![1, 2, 3, 4]);
    assert_eq!(finished(&log)[2].0, "w2");
}

#[tokio::test(start_paused = true)]
async fn a_zombies_checkpoint_is_refused_and_cancels_its_attempt() {
    let world = World::new();
    let id = world.insert("zombie", json!({})).await;
    let go = Arc::new(Notify::new());
    let outcome: Seen = Arc::default();
    let handler = {
        let (go, outcome) = (go.clone(), outcome.clone());
        move |ctx: JobContext| {
            let (go, outcome) = (go.clone(), outcome.clone());
            async move {
                ctx.checkpoint(json!({"section": 1})).await?;
                go.notified().await;
                let refused = ctx.checkpoint(json!({"section": 2})).await.unwrap_err();
                assert!(matches!(refused, CheckpointError::LeaseLost(_)), "{refused}");
                *outcome.lock().unwrap() = Some((refused.to_string(), ctx.cancel_reason()));
                // Claims success anyway: it must not be written.
                Ok::<(), JobError>(())
            }
        }
    };
    let (shutdown, first) = spawn(world.worker("w1").handler("zombie", handler).build().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.job(id).await.checkpoint, Some(json!({"section": 1})));
    // An operator revokes the lease and another worker takes the job and
    // saves its own checkpoint, all before w1's next heartbeat.
    world
        .store
        .job_requeue(JobRequeue { id, force: true })
        .await
        .unwrap();
    let claim = JobClaim {
        worker_id: "w2".into(),
        queues: vec!["default".into()],
        limit: 1,
        lease: LEASE,
        kinds: None,
    };
    let second = world.store.job_claim(claim).await.unwrap().remove(0);
    assert_eq!(second.job.checkpoint, Some(json!({"section": 1})), "handed over");
    let checkpoint = JobCheckpoint {
        id,
        epoch: Epoch(2),
        checkpoint: json!({"section": 7}),
    };
    world.store.job_checkpoint(checkpoint).await.unwrap();
    go.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (message, reason) = outcome
        .lock()
        .unwrap()
        .clone()
        .expect("the handler saw the refusal");
    assert!(message.contains("lease is lost"), "{message}");
    assert_eq!(reason, Some(CancelReason::LeaseLost));
    shutdown.graceful();
    let report = first.await.unwrap();
    assert_eq!((report.lease_lost, report.completed), (1, 0));
    assert!(report.stale_writes >= 1, "{report:?}");
    let job = world.job(id).await;
    assert_eq!(
        job.checkpoint,
        Some(json!({"section": 7})),
        "the zombie wrote nothing"
    );
    assert_eq!((job.status, job.epoch), (JobStatus::Running, Epoch(2)));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_checkpoint_is_refused_and_the_attempt_goes_on() {
    let world = World::new();
    let id = world.insert("big", json!({})).await;
    let handler = |ctx: JobContext| async move {
        // A cargo-mutants survivor answered "" for the kind.
        assert_eq!(ctx.kind(), "big");
        let big = json!("x".repeat(stuckless_core::limits::MAX_CHECKPOINT_BYTES));
        match ctx.checkpoint(big).await {
            Err(CheckpointError::Invalid(invalid)) if invalid.field == "checkpoint" => {}
            other => return Err(JobError::permanent(format!("expected Invalid, got {other:?}"))),
        }
        assert!(!ctx.is_cancelled(), "bad input does not cost the lease");
        assert_eq!(ctx.last_checkpoint(), None);
        ctx.checkpoint(json!("small")).await?;
        assert_eq!(ctx.last_checkpoint(), Some(json!("small")));
        // The wrong shape is a typed error (a permanent JobError through `?`).
        let wrong = ctx.last_checkpoint_as::<u32>().unwrap_err();
        assert!(matches!(wrong, CheckpointError::Decode { .. }), "{wrong}");
        assert!(matches!(JobError::from(wrong), JobError::Permanent { .. }));
        Ok(())
    };
    let worker = world.worker("w1").handler("big", handler);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(60))
        .await;
    assert_eq!(job.last_error, None);
    assert_eq!((job.status, report.completed), (JobStatus::Succeeded, 1));
    assert_eq!(job.checkpoint, Some(json!("small")));
}

/// Guards a cargo-mutants survivor (`Checkpointer::save` counting every
/// storage error as a lost lease): an unconfirmed checkpoint must leave the
/// lease held and the attempt running, or a database blip would cancel
/// every job that checkpoints.
#[tokio::test(start_paused = true)]
async fn an_unconfirmed_checkpoint_keeps_the_lease_and_the_attempt_goes_on() {
    let world = World::new();
    let id = world.insert("report", json!({})).await;
    let handler = |ctx: JobContext| async move {
        match ctx.checkpoint(json!(1)).await {
            Err(CheckpointError::Unavailable(_)) => {}
            other => {
                return Err(JobError::permanent(format!(
                    "expected Unavailable, got {other:?}"
                )))
            }
        }
        assert!(!ctx.is_cancelled(), "a transient failure does not cost the lease");
        ctx.checkpoint(json!(2)).await?;
        Ok(())
    };
    let store = Refuse::first(
        1,
        |op| matches!(op, Op::JobCheckpoint(_)),
        unavailable("connection reset"),
    )
    .around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("report", handler);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(60))
        .await;
    assert_eq!(job.last_error, None);
    assert_eq!((job.status, job.attempt), (JobStatus::Succeeded, 1));
    assert_eq!((report.completed, job.checkpoint), (1, Some(json!(2))));
}

/// Counts heartbeats per job.
struct CountHeartbeats(Arc<Mutex<Vec<stuckless_core::JobId>>>);

#[async_trait::async_trait]
impl stuckless_core::driver::Hook for CountHeartbeats {
    async fn before(&self, op: Op) -> stuckless_core::driver::Flow {
        if let Op::JobHeartbeat(beat) = &op {
            self.0.lock().unwrap().push(beat.id);
        }
        stuckless_core::driver::Flow::Continue(op)
    }
}

/// Guards a cargo-mutants survivor (`-` for `+` in the first heartbeat's
/// time): the first heartbeat is one interval after the start, so a job
/// shorter than the interval costs no heartbeat at all (at thousands of
/// short jobs a second, one more write each), and a 5 s job with a 2 s
/// interval sends two.
#[tokio::test(start_paused = true)]
async fn the_first_heartbeat_comes_one_interval_after_the_start() {
    let world = World::new();
    let short = world.insert("sleep", json!({"secs": 1})).await;
    let long = world.insert("sleep", json!({"secs": 5})).await;
    let beats = Arc::new(Mutex::new(Vec::new()));
    let hook = CountHeartbeats(beats.clone());
    let store: Arc<dyn Storage> = Arc::new(stuckless_core::driver::Hooked::new(world.store.clone(), hook));
    let worker = world
        .worker_on("w1", store)
        .concurrency(2)
        .handler("sleep", sleeper);
    let (shutdown, running) = spawn(worker.build().unwrap());
    for id in [short, long] {
        let job = world.until_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job.status, JobStatus::Succeeded);
    }
    shutdown.graceful();
    running.await.unwrap();
    let beats = beats.lock().unwrap();
    let of = |id| beats.iter().filter(|b| **b == id).count();
    assert_eq!(
        (of(short), of(long)),
        (0, 5 / HEARTBEAT.as_secs() as usize),
        "{beats:?}"
    );
}
