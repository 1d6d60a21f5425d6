//! The defaults that keep a job from being stuck: a time limit on every
//! attempt, claims only of kinds the worker runs, retention, and a worker
//! that says so when its claims keep failing. Each test guards one of the
//! gaps the issue "Never stuck by default" names.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use stuckless_core::driver::{Flow, Hook, Hooked, JobEvents, Op, Reply, Storage, WorkerList};
use stuckless_core::{
    Clock, JobArgs, JobContext, JobError, JobEventKind, JobHandler, JobStatus, Retention, StorageError,
    WorkerBuilder, DEFAULT_TIMEOUT,
};

use common::*;

/// A handler that never returns and ignores cancellation: the hung OpenAI
/// call of the seed's scenario B.
async fn hangs(_: JobContext) -> Result<(), JobError> {
    std::future::pending().await
}

/// Guards "no default handler time limit": with no limit configured, a hung
/// handler whose heartbeats go on used to run forever.
#[tokio::test(start_paused = true)]
async fn a_hung_handler_is_cancelled_at_the_default_limit_retried_and_ends_dead() {
    let world = World::new();
    let id = world.enqueue(job("hangs", json!({})).max_attempts(2)).await;
    let worker = world.worker("w1").handler("hangs", hangs);
    assert_eq!(
        worker.settings(),
        world.worker("w1").settings(),
        "no limit set by the test"
    );
    let (job, report) = world.run_until_terminal(worker, id, DEFAULT_TIMEOUT * 3).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Dead, 2), "{job:?}");
    assert_eq!(job.last_error.as_deref(), Some("timed out after 15m"));
    assert_eq!((report.retried, report.dead), (1, 1), "{report:?}");
    let events = world.store.job_events(JobEvents { id }).await.unwrap();
    let failures: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::Retried | JobEventKind::Dead))
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        failures,
        ["timed out after 15m", "timed out after 15m"],
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_jobs_own_limit_beats_its_kinds_and_its_kinds_beats_the_default() {
    let world = World::new();
    let once = || job("hangs", json!({})).max_attempts(1);
    let own = world.enqueue(once().timeout(Duration::from_secs(2))).await;
    let kinds = world.enqueue(once()).await;
    let worker = world
        .worker("w1")
        .kind_timeout("hangs", Duration::from_secs(20))
        .default_timeout(Some(Duration::from_secs(200)))
        .handler("hangs", hangs);
    let (shutdown, running) = spawn(worker.build().unwrap());
    let own = world.until_terminal(own, Duration::from_secs(600)).await;
    let kinds = world.until_terminal(kinds, Duration::from_secs(600)).await;
    shutdown.graceful();
    running.await.unwrap();
    assert_eq!(own.last_error.as_deref(), Some("timed out after 2s"));
    assert_eq!(kinds.last_error.as_deref(), Some("timed out after 20s"));
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Summarise {
    section: u32,
}

impl JobArgs for Summarise {
    const KIND: &'static str = "summarise";
    const MAX_ATTEMPTS: i32 = 1;
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(90));
}

impl JobHandler for Summarise {
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        hangs(ctx).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_typed_kinds_timeout_is_its_kind_limit() {
    let world = World::new();
    let id = world
        .client()
        .enqueue(Summarise { section: 1 })
        .await
        .unwrap()
        .job
        .id;
    let worker = world.worker("w1").handle::<Summarise>();
    let (job, _) = world
        .run_until_terminal(worker, id, Duration::from_secs(600))
        .await;
    assert_eq!(job.last_error.as_deref(), Some("timed out after 1m 30s"));
}

/// Guards "kind-blind claims kill jobs": an old worker in a rolling deploy
/// used to claim a new kind's job and mark it dead at attempt 1.
#[tokio::test(start_paused = true)]
async fn a_job_of_a_kind_no_worker_handles_waits_for_one_that_does() {
    let world = World::new();
    let id = world.insert("added_in_v2", json!({})).await;
    let old = world.worker("v1").handler("noop", noop);
    let (old_shutdown, old_running) = spawn(old.build().unwrap());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let waiting = world.job(id).await;
    assert_eq!(
        (waiting.status, waiting.attempt),
        (JobStatus::Queued, 0),
        "{waiting:?}"
    );
    let registry = world.store.worker_list(WorkerList {}).await.unwrap();
    assert_eq!(registry[0].kinds, ["noop"], "the registry says what v1 runs");

    let new = world.worker("v2").handler("added_in_v2", noop);
    let (new_shutdown, new_running) = spawn(new.build().unwrap());
    let done = world.until_terminal(id, Duration::from_secs(60)).await;
    assert_eq!((done.status, done.attempt), (JobStatus::Succeeded, 1));
    old_shutdown.graceful();
    new_shutdown.graceful();
    old_running.await.unwrap();
    new_running.await.unwrap();
}

#[test]
fn the_builder_refuses_a_lease_over_a_day_and_a_limit_over_a_week() {
    let world = World::new();
    let err = |b: WorkerBuilder| b.handler("k", noop).build().err().expect("refused").to_string();
    let day = Duration::from_secs(86_400);
    assert!(err(world.worker("w1").lease(day * 100)).contains("at most 24h"));
    assert!(err(world.worker("w1").default_timeout(Some(day * 8))).contains("7d"));
    assert!(err(world.worker("w1").kind_timeout("k", Duration::ZERO)).contains("kind timeout"));
    assert!(world.worker("w1").lease(day).handler("k", noop).build().is_ok());
}

/// Guards a cargo-mutants survivor (`&&` for `||` in `Config::validate`'s
/// batch check): each zero batch size is refused on its own, or a worker
/// built with `complete_batch(0)` would never write a completion.
#[test]
fn the_builder_refuses_each_zero_batch_size_on_its_own() {
    let world = World::new();
    let err = |b: WorkerBuilder| b.handler("k", noop).build().err().expect("refused").to_string();
    for (name, builder) in [
        ("reap batch", world.worker("w1").reap_batch(0)),
        ("prune batch", world.worker("w1").prune_batch(0)),
        ("complete batch", world.worker("w1").complete_batch(0)),
        ("complete pipeline", world.worker("w1").complete_pipeline(0)),
    ] {
        assert!(err(builder).contains("at least 1"), "{name} 0 was accepted");
    }
}

/// Guards "nothing deletes finished jobs".
#[tokio::test(start_paused = true)]
async fn finished_jobs_are_pruned_after_their_retention_and_others_are_kept() {
    let world = World::new();
    let done = world.insert("ok", json!({})).await;
    let doomed = world.enqueue(job("fails", json!({})).max_attempts(1)).await;
    let in_three_days = world.clock.now() + Duration::from_secs(3 * 86_400);
    let later = world.enqueue(job("ok", json!({})).run_at(in_three_days)).await;
    let worker = world
        .worker("w1")
        .prune_interval(Duration::from_secs(600))
        // A week of simulated time: the other loops only add work that
        // makes this test slow (it guards every mutant of the crate).
        .poll_interval(Duration::from_secs(3600))
        .reap_interval(Duration::from_secs(3600))
        .registry_heartbeat_interval(Duration::from_secs(3600))
        .handler("ok", noop)
        .handler("fails", |_: JobContext| async {
            Err::<(), _>(JobError::permanent("no"))
        });
    let (shutdown, running) = spawn(worker.build().unwrap());
    assert_eq!(
        world.until_terminal(done, Duration::from_secs(60)).await.status,
        JobStatus::Succeeded
    );
    assert_eq!(
        world.until_terminal(doomed, Duration::from_secs(60)).await.status,
        JobStatus::Dead
    );

    tokio::time::sleep(Duration::from_secs(86_400 + 1200)).await;
    assert!(world.find(done).await.is_none(), "succeeded: a day");
    assert_eq!(
        world.job(doomed).await.status,
        JobStatus::Dead,
        "dead jobs stay a week"
    );
    assert_eq!(
        world.job(later).await.status,
        JobStatus::Queued,
        "never a job not finished"
    );
    assert!(world.event_kinds(done).await.is_empty(), "events go with the job");

    tokio::time::sleep(Duration::from_secs(6 * 86_400)).await;
    assert!(world.find(doomed).await.is_none(), "dead: a week");
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(
        report.pruned, 3,
        "succeeded, dead, and the scheduled job once it ran: {report:?}"
    );
    assert_eq!(Retention::default().dead, Duration::from_secs(7 * 86_400));
}

/// Guards "the error is logged at DEBUG only, /readyz stays 200": a claim
/// that keeps failing must make the worker say why.
#[tokio::test(start_paused = true)]
async fn claims_that_keep_failing_make_the_worker_unhealthy_until_one_succeeds() {
    let world = World::new();
    let store = Refuse::first(
        4,
        |op| matches!(op, Op::JobClaim(_)),
        StorageError::Other("cannot convert infinity to bigint".into()),
    )
    .around(world.store.clone());
    let worker = stuckless_core::Worker::builder("w1", store.clone())
        .clock(world.clock.clone())
        .poll_interval(Duration::from_secs(1))
        .handler("ok", noop)
        .build()
        .unwrap();
    let health = worker.health_handle();
    let (shutdown, running) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let problem = health
        .problem()
        .expect("three failed claims in a row are a problem");
    assert!(
        problem.contains("job_claim") && problem.contains("infinity"),
        "{problem}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health.problem(), None, "a claim got through");
    let id = world.insert("ok", json!({})).await;
    assert_eq!(
        world.until_terminal(id, Duration::from_secs(10)).await.status,
        JobStatus::Succeeded
    );
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.failed_calls, 4, "{report:?}");
}

/// Guards "a poison row stalls the whole queue": a due row whose `run_at`
/// no storage accepts (only a raw write can store one) is moved to dead with
/// the reason, and the job behind it runs.
#[tokio::test(start_paused = true)]
async fn a_row_no_claim_can_read_is_buried_and_the_job_behind_it_runs() {
    let world = World::new();
    let poison = world.insert("ok", json!({})).await;
    assert!(world.store.unchecked_update(poison, |job| {
        job.run_at = stuckless_core::Timestamp::from_micros(i64::MIN);
    }));
    // A row as unreadable in a queue this worker does not serve is not its
    // to bury (a cargo-mutants survivor: `||` for `&&` in the filter).
    let elsewhere = world
        .enqueue(stuckless_core::NewJob::new("elsewhere", "ok", json!({})))
        .await;
    assert!(world.store.unchecked_update(elsewhere, |job| {
        job.run_at = stuckless_core::Timestamp::from_micros(i64::MIN);
    }));
    let fine = world.insert("ok", json!({})).await;
    let worker = world.worker("w1").handler("ok", noop).build().unwrap();
    assert_eq!(worker.id(), "w1");
    let (shutdown, running) = spawn(worker);
    assert_eq!(
        world.until_terminal(fine, Duration::from_secs(10)).await.status,
        JobStatus::Succeeded
    );
    shutdown.graceful();
    running.await.unwrap();
    let buried = world.job(poison).await;
    assert_eq!((buried.status, buried.attempt), (JobStatus::Dead, 0));
    assert!(buried.last_error.unwrap().contains("unreadable row: run_at"));
    assert_eq!(world.job(elsewhere).await.status, JobStatus::Queued);
}

/// Guards a retry waiting for the next poll: no NOTIFY announces that a
/// failed job is due again, so with a long poll interval its retry sat
/// queued and due for up to the whole interval.
#[tokio::test(start_paused = true)]
async fn a_retry_is_claimed_when_it_is_due_not_at_the_next_poll() {
    let world = World::new();
    let id = world
        .enqueue(stuckless_core::NewJob::new("default", "flaky", json!({})))
        .await;
    let calls = Arc::new(AtomicU32::new(0));
    let worker = world
        .worker("w1")
        .poll_interval(Duration::from_secs(3600))
        .handler("flaky", {
            let calls = calls.clone();
            move |_: JobContext| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(JobError::retry_after("429", Duration::from_secs(5)))
                    } else {
                        Ok(())
                    }
                }
            }
        });
    let (shutdown, running) = spawn(worker.build().unwrap());
    let job = world.until_terminal(id, Duration::from_secs(30)).await;
    shutdown.graceful();
    running.await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Succeeded, 2), "{job:?}");
    let retried_at = job.claimed_at.unwrap();
    assert!(
        retried_at.saturating_since(job.created_at) < Duration::from_secs(7),
        "retried {:?} after enqueue, not at the hourly poll",
        retried_at.saturating_since(job.created_at)
    );
}

/// Guards a cargo-mutants survivor (the failure path counting every storage
/// error as a stale write): a failure the database never confirmed is an
/// outage, not a zombie refused by the fence. Counted as stale it would
/// raise `stuckless_stale_writes_total`, the alert for lost leases.
#[tokio::test(start_paused = true)]
async fn an_unrecorded_failure_is_not_counted_as_a_stale_write() {
    let world = World::new();
    let id = world.insert("flaky", json!({})).await;
    let store = Refuse::every(
        |op| matches!(op, Op::JobFail(_)),
        unavailable("connection refused"),
    )
    .around(world.store.clone());
    let worker = world
        .worker_on("w1", store)
        .handler("flaky", |_: JobContext| async {
            Err::<(), _>(JobError::retryable("upstream 503"))
        })
        .build()
        .unwrap();
    let (shutdown, running) = spawn(worker);
    // Each failure write is retried until the attempt's lease deadline and
    // given up; the reaper then takes the job back for the next attempt.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let job = world.job(id).await;
    assert!(job.attempt >= 2 && job.last_error.is_none(), "{job:?}");
    assert!(world.event_kinds(id).await.contains(&JobEventKind::Reaped));
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.stale_writes, 0, "{report:?}");
}

/// Guards a cargo-mutants survivor (the reaper's wake-up after a requeue
/// inverted): a job the reaper puts back is claimed at once by the worker
/// that reaped it, not at its next poll (a minute by default, an hour here).
#[tokio::test(start_paused = true)]
async fn a_reaped_job_is_claimed_at_once_not_at_the_next_poll() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 5})).await;
    let (_, first) = spawn(world.worker("w1").handler("sleep", sleeper).build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.abort();
    let _ = first.await;
    let patient = world
        .worker("w2")
        .poll_interval(Duration::from_secs(3600))
        .handler("sleep", sleeper);
    // Lease (6 s) + reap interval (3 s) + the job's 5 s, with room to spare.
    let (job, _) = world
        .run_until_terminal(patient, id, Duration::from_secs(30))
        .await;
    assert_eq!((job.status, job.attempt), (JobStatus::Succeeded, 2));
}

/// Guards a cargo-mutants survivor (registration giving up on a transient
/// error): a worker that starts before its database, as a deploy often
/// does, waits for it and then works, instead of exiting.
#[tokio::test(start_paused = true)]
async fn a_worker_started_before_its_database_waits_for_it() {
    let world = World::new();
    let id = world.insert("ok", json!({})).await;
    let store = Refuse::first(
        3,
        |op| matches!(op, Op::WorkerRegister(_)),
        unavailable("the database system is starting up"),
    )
    .around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("ok", noop);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(30))
        .await;
    assert_eq!((job.status, report.completed), (JobStatus::Succeeded, 1));
}

/// Guards a cargo-mutants survivor (the completer giving up on a transient
/// error): a completion the database did not confirm is written again, so
/// one blip does not cost a whole rerun of the job after its lease.
#[tokio::test(start_paused = true)]
async fn a_completion_that_met_a_blip_is_written_again() {
    let world = World::new();
    let id = world.insert("ok", json!({})).await;
    let store = Refuse::first(
        1,
        |op| matches!(op, Op::JobCompleteMany(_)),
        unavailable("connection reset"),
    )
    .around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("ok", noop);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(30))
        .await;
    assert_eq!((job.status, job.attempt), (JobStatus::Succeeded, 1));
    assert_eq!(report.completed, 1, "{report:?}");
}

/// Adds a result the batch did not ask for to every `job_complete_many`
/// answer, as a broken storage might.
struct OneResultTooMany;

#[async_trait]
impl Hook for OneResultTooMany {
    async fn after(&self, _: &'static str, reply: &mut Reply) {
        if let Reply::JobCompleteMany(Ok(results)) = reply {
            if let Some(first) = results.first().cloned() {
                results.push(first);
            }
        }
    }
}

/// Guards a cargo-mutants survivor (the completer trusting an answer whose
/// length does not match its batch): results cannot be matched to jobs, so
/// none is believed and the worker reports no completion it cannot vouch
/// for (the rows are what they are; the reaper settles any doubt).
#[tokio::test(start_paused = true)]
async fn a_completion_answer_that_does_not_match_the_batch_is_not_believed() {
    let world = World::new();
    let id = world.insert("ok", json!({})).await;
    let store: Arc<dyn Storage> = Arc::new(Hooked::new(world.store.clone(), OneResultTooMany));
    let worker = world.worker_on("w1", store).handler("ok", noop);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(30))
        .await;
    assert_eq!(job.status, JobStatus::Succeeded, "the write itself happened");
    assert_eq!(report.completed, 0, "{report:?}");
}

/// Guards a cargo-mutants survivor (`/` for `*` in the completion queue's
/// size): the smallest worker the builder accepts, one slot and batches of
/// one, must run, not panic on a queue of size zero.
#[tokio::test(start_paused = true)]
async fn the_smallest_worker_runs() {
    let world = World::new();
    let id = world.insert("ok", json!({})).await;
    let worker = world
        .worker("w1")
        .concurrency(1)
        .complete_batch(1)
        .complete_pipeline(1)
        .handler("ok", noop);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(30))
        .await;
    assert_eq!((job.status, report.completed), (JobStatus::Succeeded, 1));
}

/// Records the largest completion batch and holds each for half a second,
/// so completions queue up behind it.
struct SlowCompletionBatches(Arc<AtomicU32>);

#[async_trait]
impl Hook for SlowCompletionBatches {
    async fn before(&self, op: Op) -> Flow {
        if let Op::JobCompleteMany(batch) = &op {
            self.0.fetch_max(batch.jobs.len() as u32, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Flow::Continue(op)
    }
}

/// Guards a cargo-mutants survivor (`<=` for `<` in `take_batch`): a
/// completion batch never holds more than `complete_batch` jobs, however
/// many are queued.
#[tokio::test(start_paused = true)]
async fn completion_batches_hold_at_most_the_batch_size() {
    let world = World::new();
    for _ in 0..8 {
        world.insert("ok", json!({})).await;
    }
    let largest = Arc::new(AtomicU32::new(0));
    let hook = SlowCompletionBatches(largest.clone());
    let store: Arc<dyn Storage> = Arc::new(Hooked::new(world.store.clone(), hook));
    let worker = world
        .worker_on("w1", store)
        .complete_batch(2)
        .complete_pipeline(1)
        .handler("ok", noop)
        .build()
        .unwrap();
    let (shutdown, running) = spawn(worker);
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.graceful();
    assert_eq!(running.await.unwrap().completed, 8);
    assert_eq!(
        largest.load(Ordering::SeqCst),
        2,
        "batches fill up to the size, not past it"
    );
}

/// Guards a cargo-mutants survivor (`JobContext::is_cancelled -> false`): a
/// handler that polls `is_cancelled` between steps, instead of awaiting
/// `cancelled()`, sees the shutdown at the end of the grace and stops, and
/// its job is released rather than abandoned mid-step.
#[tokio::test(start_paused = true)]
async fn a_handler_that_polls_is_cancelled_stops_at_the_end_of_the_grace() {
    let world = World::new();
    let id = world.insert("steps", json!({})).await;
    let stopped = Arc::new(AtomicU32::new(0));
    let seen = stopped.clone();
    let steps = move |ctx: JobContext| {
        let seen = seen.clone();
        async move {
            while !ctx.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            Err::<(), JobError>(JobError::retryable("stopped between steps"))
        }
    };
    let worker = world.worker("w1").shutdown_grace(Duration::from_secs(2));
    let (shutdown, running) = spawn(worker.handler("steps", steps).build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stopped.load(Ordering::SeqCst), 0, "not cancelled while running");
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "the handler saw the shutdown");
    assert_eq!(report.released, 1, "{report:?}");
    assert_eq!(world.job(id).await.status, JobStatus::Queued);
}
