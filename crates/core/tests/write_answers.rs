//! How the worker reads the storage's answers to its writes (a failure
//! recorded, a job released at shutdown, a completion batch, its own
//! registration): a transient error is tried again, with backoff, until the
//! lease deadline; a fencing refusal is a stale write and is never tried
//! again; any other error is given up at once. And a crash loses the writes
//! still in flight, as a real one does. Each test guards survivors of the
//! full cargo-mutants run, which found these classifications unpinned.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use serde_json::json;
use stuckless_core::driver::{Hook, Hooked, Op, Reply, Storage, WorkerDeregister, WorkerList};
use stuckless_core::{
    Clock, Epoch, JobContext, JobError, JobEventKind, JobId, JobStatus, StorageError, WorkerError,
};

/// A fencing refusal, as a storage gives a write whose epoch is not current.
fn stale() -> StorageError {
    StorageError::StaleEpoch {
        id: JobId(1),
        presented: Epoch(1),
        current: Epoch(2),
    }
}

/// A handler that fails its first attempt and succeeds after.
fn fails_once() -> impl stuckless_core::Handler {
    let calls = Arc::new(AtomicU32::new(0));
    move |_: JobContext| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(JobError::retryable("upstream 503"))
            } else {
                Ok(())
            }
        }
    }
}

/// A failure that met one blip is written again and recorded as a retry;
/// the job is not left for the reaper (`is_transient` guard → `false` in
/// `write`).
#[tokio::test(start_paused = true)]
async fn a_failure_that_met_a_blip_is_written_again() {
    let world = World::new();
    let id = world.insert("flaky", json!({})).await;
    let store =
        Refuse::first(1, |op| matches!(op, Op::JobFail(_)), unavailable("reset")).around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("flaky", fails_once());
    let (shutdown, running) = spawn(worker.build().unwrap());
    let job = world.until_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let kinds = world.event_kinds(id).await;
    assert!(kinds.contains(&JobEventKind::Retried), "{kinds:?}");
    assert!(!kinds.contains(&JobEventKind::Reaped), "{kinds:?}");
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!((report.retried, report.stale_writes), (1, 0), "{report:?}");
}

/// A failure the storage fences out is a stale write at once, not retried
/// until the deadline and then reported as unconfirmed (`is_lease_lost`
/// guard → `false` in `fail`; `is_transient` guard → `true` in `write`).
#[tokio::test(start_paused = true)]
async fn a_fenced_failure_is_a_stale_write() {
    let world = World::new();
    world.insert("flaky", json!({})).await;
    let store = Refuse::every(|op| matches!(op, Op::JobFail(_)), stale()).around(world.store.clone());
    let worker = world
        .worker_on("w1", store)
        .handler("flaky", |_: JobContext| async {
            Err::<(), _>(JobError::retryable("upstream 503"))
        });
    let (shutdown, running) = spawn(worker.build().unwrap());
    // Well inside the lease: a write retried until the deadline would still
    // be waiting.
    tokio::time::sleep(LEASE / 3).await;
    shutdown.immediate();
    let report = running.await.unwrap();
    assert_eq!(report.stale_writes, 1, "{report:?}");
}

/// Runs one long job on a worker whose releases get `error`, shuts it down
/// at once, and returns its report.
async fn release_answered_with(error: StorageError) -> stuckless_core::RunReport {
    let world = World::new();
    world.insert("sleep", json!({"secs": 3600})).await;
    let store = Refuse::every(|op| matches!(op, Op::JobRelease(_)), error).around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("sleep", sleeper);
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.immediate();
    running.await.unwrap()
}

/// A release the storage fences out is a stale write (`is_lease_lost`
/// guard → `false` in `release`).
#[tokio::test(start_paused = true)]
async fn a_fenced_release_is_a_stale_write() {
    let report = release_answered_with(stale()).await;
    assert_eq!((report.released, report.stale_writes), (0, 1), "{report:?}");
}

/// A release that never got through is not a stale write: the reaper takes
/// the job back (`is_lease_lost` guard → `true` in `release`).
#[tokio::test(start_paused = true)]
async fn an_unconfirmed_release_is_not_a_stale_write() {
    let report = release_answered_with(unavailable("connection refused")).await;
    assert_eq!((report.released, report.stale_writes), (0, 0), "{report:?}");
}

/// Answers the operations `picks` chooses after `delay`, with `error` (or
/// the store's answer), counting the calls and the most in flight at once.
struct Scripted {
    picks: fn(&Op) -> bool,
    error: Option<StorageError>,
    delay: Duration,
    calls: AtomicU32,
    now: AtomicU32,
    peak: AtomicU32,
}

impl Scripted {
    fn new(picks: fn(&Op) -> bool, error: Option<StorageError>, delay: Duration) -> Self {
        Scripted {
            picks,
            error,
            delay,
            calls: AtomicU32::new(0),
            now: AtomicU32::new(0),
            peak: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl Hook for Scripted {
    async fn call(&self, inner: &dyn Storage, op: Op) -> Reply {
        if !(self.picks)(&op) {
            return op.apply(inner).await;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        match &self.error {
            Some(error) => op.refuse(error.clone()),
            None => op.apply(inner).await,
        }
    }
}

fn completes(op: &Op) -> bool {
    matches!(op, Op::JobCompleteMany(_) | Op::JobComplete(_))
}

/// Runs one quick job on a worker whose completion writes `hook` answers,
/// for `secs` seconds, then shuts it down; returns the hook and the report.
async fn completing_behind(
    hook: Scripted,
    secs: u64,
) -> (
    Arc<Hooked<Arc<stuckless_core::MemStore>, Scripted>>,
    stuckless_core::RunReport,
) {
    let world = World::new();
    world.insert("ok", json!({})).await;
    let store = Arc::new(Hooked::new(world.store.clone(), hook));
    let worker = world.worker_on("w1", store.clone()).handler("ok", noop);
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shutdown.immediate();
    (store, running.await.unwrap())
}

/// A completion the storage fences out is a stale write (`is_lease_lost`
/// guard → `false` in the completer's `record`).
#[tokio::test(start_paused = true)]
async fn a_fenced_completion_is_a_stale_write() {
    let (_, report) = completing_behind(Scripted::new(completes, Some(stale()), Duration::ZERO), 1).await;
    assert_eq!((report.completed, report.stale_writes), (0, 1), "{report:?}");
}

/// A completion refused for another reason is given up at once (the
/// reaper reruns the job), not tried again until the lease deadline
/// (`is_transient` guard → `true` in `record`).
#[tokio::test(start_paused = true)]
async fn a_completion_refused_for_good_is_written_once() {
    let other = StorageError::Other("constraint violated".into());
    let (store, report) = completing_behind(Scripted::new(completes, Some(other), Duration::ZERO), 3).await;
    assert_eq!(store.hook().calls.load(Ordering::SeqCst), 1, "{report:?}");
}

/// A completion that keeps meeting blips is retried with a doubling pause:
/// a handful of writes in three seconds, not a stream (`/` for `*` in the
/// pause made it shrink to nothing).
#[tokio::test(start_paused = true)]
async fn completion_retries_back_off() {
    // Each answer takes a millisecond, so a pause that shrank to nothing
    // shows as thousands of calls instead of a loop that never yields.
    let hook = Scripted::new(completes, Some(unavailable("reset")), Duration::from_millis(1));
    let (store, _) = completing_behind(hook, 3).await;
    let calls = store.hook().calls.load(Ordering::SeqCst);
    assert!((3..=10).contains(&calls), "{calls} completion writes in 3 s");
}

/// With a pipeline of one, one completion batch is in flight at a time
/// (`<=` for `<` in the completer's loop let a second start).
#[tokio::test(start_paused = true)]
async fn the_completion_pipeline_bounds_batches_in_flight() {
    let world = World::new();
    for _ in 0..6 {
        world.insert("ok", json!({})).await;
    }
    let hook = Scripted::new(completes, None, Duration::from_millis(500));
    let store = Arc::new(Hooked::new(world.store.clone(), hook));
    let worker = world
        .worker_on("w1", store.clone())
        .complete_batch(1)
        .complete_pipeline(1)
        .handler("ok", noop);
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.graceful();
    assert_eq!(running.await.unwrap().completed, 6);
    assert_eq!(store.hook().peak.load(Ordering::SeqCst), 1);
}

/// A crash (the worker's future dropped) takes its completer with it: a
/// completion still being written is lost, and the job comes back through
/// the reaper (`AbortOnDrop::drop` → `()` let the completer outlive the
/// crash, a gentler crash than the simulator claims to inject).
#[tokio::test(start_paused = true)]
async fn a_crash_loses_the_completion_in_flight() {
    let world = World::new();
    let id = world.insert("ok", json!({})).await;
    let hook = Scripted::new(completes, None, Duration::from_secs(2));
    let store = Arc::new(Hooked::new(world.store.clone(), hook));
    let worker = world.worker_on("w1", store.clone()).handler("ok", noop);
    let (_, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.hook().now.load(Ordering::SeqCst),
        1,
        "the completion is in flight"
    );
    running.abort();
    let _ = running.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = world.job(id).await;
    assert_eq!(
        job.status,
        JobStatus::Running,
        "the crashed worker's completion landed: {job:?}"
    );
}

/// A registration refused for good ends the worker with the error instead
/// of retrying forever (`is_transient` guard → `true` in `register`).
#[tokio::test(start_paused = true)]
async fn a_registration_refused_for_good_stops_the_worker() {
    let world = World::new();
    let store = Refuse::every(
        |op| matches!(op, Op::WorkerRegister(_)),
        StorageError::Other("permission denied".into()),
    )
    .around(world.store.clone());
    let worker = world.worker_on("w1", store).handler("ok", noop).build().unwrap();
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        running.is_finished(),
        "still retrying a refusal that will not change"
    );
    let ended = running.await.unwrap();
    assert!(matches!(ended, Err(WorkerError::Register(_))), "{ended:?}");
}

/// A database that is down at start is asked again with a doubling pause
/// up to the poll interval: a handful of registrations in three seconds
/// (`/` for `*` made the pause shrink to nothing).
#[tokio::test(start_paused = true)]
async fn registration_retries_back_off() {
    let world = World::new();
    let hook = Scripted::new(
        |op| matches!(op, Op::WorkerRegister(_)),
        Some(unavailable("refused")),
        Duration::from_millis(1),
    );
    let store = Arc::new(Hooked::new(world.store.clone(), hook));
    let (shutdown, running) = spawn(
        world
            .worker_on("w1", store.clone())
            .handler("ok", noop)
            .build()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.immediate();
    let _ = running.await;
    let calls = store.hook().calls.load(Ordering::SeqCst);
    assert!((3..=12).contains(&calls), "{calls} registrations in 3 s");
}

/// A failure is written with the retry policy's delay (at least half the
/// nominal 1 s after a first attempt, by its jitter), not for at once
/// (`Shared::retry_delay -> Default::default()` passed every test).
#[tokio::test(start_paused = true)]
async fn a_failure_is_written_with_the_policys_delay() {
    let world = World::new();
    let id = world.insert("flaky", json!({})).await;
    let worker = world.worker("w1").handler("flaky", |_: JobContext| async {
        Err::<(), _>(JobError::retryable("upstream 503"))
    });
    let (shutdown, running) = spawn(worker.build().unwrap());
    let deadline = world.clock.now() + Duration::from_secs(30);
    let mut job = world.job(id).await;
    while job.attempt == 0 || job.status != JobStatus::Queued {
        assert!(world.clock.now() < deadline, "no retry waiting: {job:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        job = world.job(id).await;
    }
    let failed_at = job.updated_at;
    assert!(
        job.run_at >= failed_at + Duration::from_millis(500),
        "retry due {:?} after the failure",
        job.run_at.saturating_since(failed_at)
    );
    shutdown.immediate();
    running.await.unwrap();
}

/// The registry hears from a running worker every interval, and a worker
/// whose registration was deleted (an operator, or a cleanup of workers
/// that looked dead) registers again at its next beat: otherwise a busy
/// worker looks crashed (`registry_heartbeat -> ()` and the deleted
/// `WorkerNotFound` arm passed every test).
#[tokio::test(start_paused = true)]
async fn the_registry_hears_from_a_running_worker_and_a_forgotten_one_registers_again() {
    let world = World::new();
    let (shutdown, running) = spawn(world.worker("w1").handler("ok", noop).build().unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = world.clock.now();
    tokio::time::sleep(HEARTBEAT * 2 + Duration::from_millis(100)).await;
    let workers = world.store.worker_list(WorkerList {}).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert!(workers[0].last_heartbeat_at >= started + HEARTBEAT, "{workers:?}");

    world
        .store
        .worker_deregister(WorkerDeregister { id: "w1".into() })
        .await
        .unwrap();
    tokio::time::sleep(HEARTBEAT + Duration::from_millis(100)).await;
    let workers = world.store.worker_list(WorkerList {}).await.unwrap();
    assert_eq!(workers.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w1"]);
    shutdown.graceful();
    running.await.unwrap();
}

/// A prune that deleted a full batch is followed at once by the next, so a
/// backlog of finished jobs goes in one pass, not one batch per interval
/// (`<` for `>=` on the batch size passed every test).
#[tokio::test(start_paused = true)]
async fn a_full_prune_batch_is_followed_at_once_by_the_next() {
    let world = World::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(world.insert("ok", json!({})).await);
    }
    let worker = world
        .worker("w1")
        .prune_interval(Duration::from_secs(3600))
        .prune_batch(2)
        // A day of simulated time: the other loops would only slow it.
        .poll_interval(Duration::from_secs(3600))
        .reap_interval(Duration::from_secs(3600))
        .registry_heartbeat_interval(Duration::from_secs(3600))
        .handler("ok", noop);
    let (shutdown, running) = spawn(worker.build().unwrap());
    for id in &ids {
        world.until_terminal(*id, Duration::from_secs(60)).await;
    }
    // Past the one-day retention of succeeded jobs and the first pass
    // (randomly placed within the interval), short of a second interval.
    tokio::time::sleep(Duration::from_secs(86_400 + 3600 + 60)).await;
    for id in ids {
        assert!(world.find(id).await.is_none(), "job {id} left for a later pass");
    }
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.pruned, 5, "{report:?}");
}
