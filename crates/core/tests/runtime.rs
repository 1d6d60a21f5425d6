//! The worker runtime on paused tokio time over `MemStore`.
//!
//! Each test drives real workers against the model store; tokio's paused
//! clock makes the seconds of leases and grace periods pass instantly.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{
    CompleteOutcome, Flow, Hook, Hooked, JobCancel, JobClaim, JobComplete, JobEvents, JobRequeue, Op,
    Storage, WorkerList,
};
use stuckless_core::{
    Clock, Epoch, JobArgs, JobContext, JobError, JobEventKind, JobHandler, JobId, JobStatus, MemStore,
    NewJob, NotifyWaker, StorageError, Timestamp, TokioClock, WorkerBuilder,
};

mod common;
use common::*;

/// Guards the seed document's scenario A: a worker dies holding a job and
/// nothing recovers it.
#[tokio::test(start_paused = true)]
async fn crashed_workers_job_is_reaped_and_finished_by_another_within_lease_plus_reap() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 20})).await;
    let (_, first) = spawn(world.worker("w1").handler("sleep", sleeper).build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.job(id).await.lease_owner.as_deref(), Some("w1"));

    first.abort(); // a crash: every task of the worker dies with it
    let _ = first.await;
    let crashed_at = world.clock.now();

    let (_, second) = spawn(world.worker("w2").handler("sleep", sleeper).build().unwrap());
    let mut job = world.job(id).await;
    while job.lease_owner.as_deref() != Some("w2") {
        tokio::time::sleep(Duration::from_millis(100)).await;
        job = world.job(id).await;
    }
    let recovered_after = world.clock.now().saturating_since(crashed_at);
    assert!(
        recovered_after <= LEASE + REAP + POLL,
        "recovery took {recovered_after:?}, bound is lease + reap interval + poll"
    );
    let job = world.until_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.epoch, Epoch(2));
    assert_eq!(job.attempt, 2, "the crashed attempt counts");
    let events = world.store.job_events(JobEvents { id }).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == JobEventKind::Reaped),
        "{events:?}"
    );
    second.abort();
}

/// Guards against a zombie overwriting its successor: once the lease is taken
/// away, the handler is cancelled and its epoch can no longer write.
#[tokio::test(start_paused = true)]
async fn lost_lease_cancels_the_handler_and_its_completion_is_rejected() {
    let world = World::new();
    let id = world.insert("stubborn", json!({})).await;
    let cancelled = Arc::new(AtomicU32::new(0));
    let seen = cancelled.clone();
    let stubborn = move |ctx: JobContext| {
        let seen = seen.clone();
        async move {
            ctx.cancelled().await;
            seen.fetch_add(1, Ordering::SeqCst);
            // Ignores the cancellation and claims success anyway.
            Ok::<(), JobError>(())
        }
    };
    let (shutdown, first) = spawn(world.worker("w1").handler("stubborn", stubborn).build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // An operator revokes the lease; another worker will take the job.
    world
        .store
        .job_requeue(JobRequeue { id, force: true })
        .await
        .unwrap();
    let second_claim = world
        .store
        .job_claim(JobClaim {
            worker_id: "w2".into(),
            queues: vec!["default".into()],
            limit: 1,
            lease: LEASE,
            kinds: None,
        })
        .await
        .unwrap();
    assert_eq!(second_claim[0].epoch(), Epoch(2));

    tokio::time::sleep(HEARTBEAT * 2).await;
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        1,
        "handler must be told its lease is gone"
    );
    shutdown.graceful();
    let report = first.await.unwrap();
    assert_eq!(report.lease_lost, 1);
    assert_eq!(report.completed, 0, "the zombie's success must not be written");
    assert_eq!(
        world
            .store
            .job_complete(JobComplete { id, epoch: Epoch(1) })
            .await,
        Err(StorageError::StaleEpoch {
            id,
            presented: Epoch(1),
            current: Epoch(2)
        })
    );
    assert_eq!(
        world
            .store
            .job_complete(JobComplete { id, epoch: Epoch(2) })
            .await,
        Ok(CompleteOutcome::Completed)
    );
}

/// A worker whose storage stopped answering heartbeats (a partition) must
/// presume its lease lost at its local deadline and stop the handler, even
/// though no refusal ever reached it.
#[tokio::test(start_paused = true)]
async fn local_lease_deadline_cancels_a_handler_whose_heartbeats_fail() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 600})).await;
    let partitioned = heartbeats_fail(&world, 0);
    let worker = world
        .worker_on("w1", partitioned.clone())
        .reap_interval(Duration::from_secs(3600))
        .handler("sleep", sleeper)
        .build()
        .unwrap();
    let (shutdown, running) = spawn(worker);
    tokio::time::sleep(Duration::from_secs(1)).await;
    partitioned.hook().failing.store(u32::MAX, Ordering::SeqCst);
    let cut_at = world.clock.now();
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.lease_lost, 1, "{report:?}");
    assert_eq!(report.released, 0, "a presumed-lost lease is not ours to release");
    let job = world.job(id).await;
    assert_eq!(
        job.status,
        JobStatus::Running,
        "nobody reaped yet: the store still shows the old lease"
    );
    assert!(job.heartbeat_at.unwrap() <= cut_at);
}

/// Lets every operation through to a `MemStore`, but the next `failing`
/// heartbeats fail as if the network dropped them (`u32::MAX`: all of them).
#[derive(Default)]
struct HeartbeatsFail {
    failing: AtomicU32,
}

#[async_trait::async_trait]
impl Hook for HeartbeatsFail {
    async fn before(&self, op: Op) -> Flow {
        let failing = self.failing.load(Ordering::SeqCst);
        if !matches!(op, Op::JobHeartbeat(_)) || failing == 0 {
            return Flow::Continue(op);
        }
        if failing != u32::MAX {
            self.failing.store(failing - 1, Ordering::SeqCst);
        }
        Flow::Answer(op.refuse(StorageError::Unavailable("partitioned".into())))
    }
}

fn heartbeats_fail(world: &World, failing: u32) -> Arc<Hooked<Arc<MemStore>, HeartbeatsFail>> {
    Arc::new(Hooked::new(
        world.store.clone(),
        HeartbeatsFail {
            failing: AtomicU32::new(failing),
        },
    ))
}

/// Guards the bug the simulator found: after a transient heartbeat failure
/// the worker waited a whole interval, so three dropped connections in a row
/// cost a healthy worker its lease.
#[tokio::test(start_paused = true)]
async fn a_few_failed_heartbeats_are_retried_before_the_lease_runs_out() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 10})).await;
    let flaky = heartbeats_fail(&world, 3);
    let worker = world.worker_on("w1", flaky.clone()).handler("sleep", sleeper);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(60))
        .await;
    assert_eq!(
        flaky.hook().failing.load(Ordering::SeqCst),
        0,
        "all three failures must have been hit"
    );
    assert_eq!((report.lease_lost, report.completed), (0, 1), "{report:?}");
    assert_eq!((job.status, job.attempt), (JobStatus::Succeeded, 1));
}

/// An operator cancelling a running job fences its holder out.
#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_stops_its_handler() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 600})).await;
    let (shutdown, running) = spawn(world.worker("w1").handler("sleep", sleeper).build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.store.job_cancel(JobCancel { id }).await.unwrap();
    tokio::time::sleep(HEARTBEAT * 2).await;
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!((report.lease_lost, report.stale_writes), (1, 1), "{report:?}");
    assert_eq!(
        world.job(id).await.status,
        JobStatus::Cancelled,
        "cancellation must stick"
    );
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_short_jobs_and_releases_long_ones() {
    let world = World::new();
    let mut short = Vec::new();
    let mut long = Vec::new();
    for _ in 0..2 {
        short.push(world.insert("sleep", json!({"secs": 2})).await);
        long.push(world.insert("sleep", json!({"secs": 3600})).await);
    }
    let worker = world
        .worker("w1")
        .concurrency(4)
        .shutdown_grace(Duration::from_secs(5));
    let (shutdown, running) = spawn(worker.handler("sleep", sleeper).build().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.store.worker_list(WorkerList {}).await.unwrap().len(), 1);
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!((report.completed, report.released), (2, 2), "{report:?}");
    for id in short {
        assert_eq!(world.job(id).await.status, JobStatus::Succeeded);
    }
    for id in long {
        let job = world.job(id).await;
        assert_eq!(job.status, JobStatus::Queued, "released, not left running");
        assert_eq!(job.attempt, 0, "a release costs no attempt");
    }
    assert!(
        world.store.worker_list(WorkerList {}).await.unwrap().is_empty(),
        "worker must deregister"
    );
}

#[tokio::test(start_paused = true)]
async fn immediate_shutdown_releases_everything_without_waiting_for_grace() {
    let world = World::new();
    let id = world.insert("sleep", json!({"secs": 3600})).await;
    let worker = world.worker("w1").shutdown_grace(Duration::from_secs(3600));
    let (shutdown, running) = spawn(worker.handler("sleep", sleeper).build().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = world.clock.now();
    shutdown.graceful();
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.escalate(); // the second signal
    let report = running.await.unwrap();
    assert_eq!(report.released, 1);
    assert!(world.clock.now().saturating_since(started) < Duration::from_secs(60));
    assert_eq!(world.job(id).await.status, JobStatus::Queued);
}

#[tokio::test(start_paused = true)]
async fn handler_panic_fails_the_attempt_and_the_worker_keeps_serving() {
    let world = World::new();
    let flaky = world.insert("flaky", json!({})).await;
    let fine = world.insert("fine", json!({})).await;
    let worker = world
        .worker("w1")
        .retry(stuckless_core::RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            jitter: false,
        })
        .handler("flaky", |ctx: JobContext| async move {
            if ctx.attempt() == 1 {
                panic!("boom on attempt 1");
            }
            Ok::<(), JobError>(())
        })
        .handler("fine", noop);
    let (shutdown, running) = spawn(worker.build().unwrap());
    let flaky_job = world.until_terminal(flaky, Duration::from_secs(30)).await;
    let fine_job = world.until_terminal(fine, Duration::from_secs(30)).await;
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.panics, 1);
    assert_eq!(flaky_job.status, JobStatus::Succeeded);
    assert_eq!(flaky_job.attempt, 2);
    assert_eq!(fine_job.status, JobStatus::Succeeded);
    let events = world.store.job_events(JobEvents { id: flaky }).await.unwrap();
    assert_eq!(events[0].kind, JobEventKind::Retried);
    assert!(
        events[0].detail.as_deref().unwrap().contains("boom on attempt 1"),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_never_exceeded() {
    let world = World::new();
    let mut ids = Vec::new();
    for i in 0..40u64 {
        ids.push(world.insert("count", json!({"ms": 100 + (i * 37) % 400})).await);
    }
    let running_now = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (now_c, peak_c) = (running_now.clone(), peak.clone());
    let worker = world
        .worker("w1")
        .concurrency(3)
        .handler("count", move |ctx: JobContext| {
            let (now_c, peak_c) = (now_c.clone(), peak_c.clone());
            async move {
                let n = now_c.fetch_add(1, Ordering::SeqCst) + 1;
                peak_c.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ctx.payload()["ms"].as_u64().unwrap())).await;
                now_c.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        });
    let (shutdown, running) = spawn(worker.build().unwrap());
    for id in &ids {
        assert_eq!(
            world.until_terminal(*id, Duration::from_secs(120)).await.status,
            JobStatus::Succeeded
        );
    }
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.completed, 40);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "must reach but never exceed concurrency 3"
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_retry_with_backoff_then_die_after_max_attempts() {
    let world = World::new();
    let id = world
        .enqueue(job("always-fails", json!({})).max_attempts(3))
        .await;
    let worker = world.worker("w1").handler("always-fails", |_: JobContext| async {
        Err::<(), _>(JobError::retryable("upstream 500"))
    });
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(120))
        .await;
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.attempt, 3);
    assert_eq!(job.last_error.as_deref(), Some("upstream 500"));
    assert_eq!((report.retried, report.dead), (2, 1));
    assert_eq!(
        world.event_kinds(id).await,
        [JobEventKind::Retried, JobEventKind::Retried, JobEventKind::Dead]
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_goes_dead_at_once_with_a_clear_reason() {
    let world = World::new();
    let bad = world.insert("strict", json!({"n": "not a number"})).await;
    let worker = world
        .worker("w1")
        .handler("strict", |ctx: JobContext| async move {
            #[derive(serde::Deserialize)]
            struct Payload {
                #[allow(dead_code)]
                n: u32,
            }
            ctx.payload_as::<Payload>().map(|_| ())
        });
    let (bad, _) = world
        .run_until_terminal(worker, bad, Duration::from_secs(30))
        .await;
    assert_eq!((bad.status, bad.attempt), (JobStatus::Dead, 1));
    assert!(bad.last_error.unwrap().contains("malformed payload"));
}

#[tokio::test(start_paused = true)]
async fn kind_timeout_cancels_and_retries() {
    let world = World::new();
    let id = world
        .enqueue(job("sleep", json!({"secs": 100})).max_attempts(2))
        .await;
    let worker = world
        .worker("w1")
        .kind_timeout("sleep", Duration::from_secs(3))
        .handler("sleep", sleeper);
    let (job, report) = world
        .run_until_terminal(worker, id, Duration::from_secs(60))
        .await;
    assert_eq!(job.status, JobStatus::Dead);
    assert!(job.last_error.unwrap().contains("timed out after 3s"));
    assert_eq!((report.retried, report.dead), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_claims_before_the_poll_interval() {
    let world = World::new();
    let waker = NotifyWaker::new();
    let worker = world
        .worker("w1")
        .poll_interval(Duration::from_secs(300))
        .waker(Arc::new(waker.clone()))
        .handler("fine", noop);
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = world.insert("fine", json!({})).await;
    waker.wake();
    let job = world.until_terminal(id, Duration::from_secs(10)).await;
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "woken worker must not wait for the 300 s poll"
    );
    shutdown.graceful();
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn progress_reaches_the_store_with_the_next_heartbeat() {
    let world = World::new();
    let id = world.insert("progress", json!({})).await;
    let worker = world
        .worker("w1")
        .handler("progress", |ctx: JobContext| async move {
            ctx.report_progress(json!({"section": 3, "of": 7}));
            ctx.cancelled().await;
            Ok::<(), JobError>(())
        });
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(HEARTBEAT + Duration::from_millis(600)).await;
    let job = world.job(id).await;
    assert_eq!(job.progress, Some(json!({"section": 3, "of": 7})));
    assert!(job.heartbeat_at > job.claimed_at, "heartbeat must have landed");
    shutdown.immediate();
    running.await.unwrap();
}

#[test]
fn builder_rejects_inconsistent_configuration() {
    let world = World::new();
    let fine = noop;
    let err = |b: WorkerBuilder| b.build().err().expect("must be rejected").to_string();
    assert!(
        err(world.worker("w1").heartbeat_interval(LEASE).handler("k", fine))
            .contains("shorter than the lease")
    );
    assert!(err(world.worker("w1").concurrency(0).handler("k", fine)).contains("concurrency"));
    assert!(err(world.worker("bad id!").handler("k", fine)).contains("worker_id"));
    assert!(err(world.worker("w1")).contains("handler"));
    assert!(err(world.worker("w1").queues(Vec::<String>::new()).handler("k", fine)).contains("queue"));
}

/// A clock that counts its readings and panics past a limit, so a worker that
/// busy-loops fails the test instead of hanging it (paused time never
/// advances while a task spins).
struct CountingClock {
    inner: Arc<TokioClock>,
    reads: AtomicU32,
}

#[async_trait::async_trait]
impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n < 10_000, "the worker read its clock {n} times: it is spinning");
        self.inner.now()
    }

    async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await
    }
}

/// Found by the simulator: a worker at full capacity past its poll time spun
/// in its claim loop (the poll timer fired at once, and no claim was made
/// without a free slot), stopping simulated time. It must wait instead.
#[tokio::test(start_paused = true)]
async fn a_worker_at_capacity_waits_instead_of_spinning_on_its_poll_timer() {
    let world = World::new();
    let clock = Arc::new(CountingClock {
        inner: world.clock.clone(),
        reads: AtomicU32::new(0),
    });
    let worker = world
        .worker("w1")
        .clock(clock.clone())
        .concurrency(1)
        .handler("sleep", sleeper)
        .build()
        .unwrap();
    let long = world.insert("sleep", json!({"secs": 5})).await;
    let short = world.insert("sleep", json!({"secs": 1})).await;
    let (shutdown, run) = spawn(worker);
    let short = world.until_terminal(short, Duration::from_secs(30)).await;
    assert_eq!(short.status, JobStatus::Succeeded);
    assert_eq!(world.job(long).await.status, JobStatus::Succeeded);
    shutdown.graceful();
    run.await.unwrap();
    assert!(clock.reads.load(Ordering::SeqCst) < 10_000);
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Greet {
    name: String,
}

impl JobArgs for Greet {
    const KIND: &'static str = "greet";
}

impl JobHandler for Greet {
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        ctx.report_progress(json!({ "greeted": self.name }));
        if self.name.is_empty() {
            return Err(JobError::permanent("nobody to greet"));
        }
        Ok(())
    }
}

/// A typed kind enqueued through `Client` runs through `handle::<A>()`; a
/// payload of the wrong shape goes dead at once with the decode error instead
/// of retrying, and the JSON API can still enqueue the kind by name.
#[tokio::test(start_paused = true)]
async fn typed_jobs_run_and_a_malformed_payload_is_dead_at_once() {
    let world = World::new();
    let typed = world
        .client()
        .enqueue(Greet { name: "ada".into() })
        .await
        .unwrap()
        .job;
    assert_eq!((typed.queue.as_str(), typed.kind.as_str()), ("default", "greet"));
    assert_eq!(typed.payload, json!({"name": "ada"}));
    let malformed = world.insert("greet", json!({"name": 7})).await;
    let worker = world.worker("w1").handle::<Greet>().build().unwrap();
    let (shutdown, running) = spawn(worker);
    let done = world.until_terminal(typed.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let dead = world.until_terminal(malformed, Duration::from_secs(30)).await;
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(dead.attempt, 1, "no retry can fix a malformed payload");
    let error = dead.last_error.unwrap();
    assert!(error.contains("malformed payload for kind \"greet\""), "{error}");
    shutdown.graceful();
    running.await.unwrap();
}

/// `Client` validates before the storage sees anything: a bad job is a typed
/// error naming the field, and no id is used up.
#[tokio::test]
async fn client_refuses_bad_input_before_the_storage() {
    let world = World::new();
    let client = world.client();
    let err = client
        .enqueue_job(NewJob::new("no spaces allowed", "k", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Invalid(v) if v.field == "queue"),
        "{err}"
    );
    let err = client
        .enqueue_many(vec![
            NewJob::new("q", "k", json!({})),
            NewJob::new("q", "", json!({})),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Invalid(v) if v.field == "kind"),
        "{err}"
    );
    assert_eq!(world.store.job_count(), 0, "nothing was written");
    let first = client
        .enqueue_job(NewJob::new("q", "k", json!({})))
        .await
        .unwrap();
    assert_eq!(first.job.id, JobId(1), "refused input used no id");
    // The count a test reads is the store's (a constant 0 passed before).
    assert_eq!(world.store.job_count(), 1);
}
