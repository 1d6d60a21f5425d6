//! How an attempt reads the storage's answer to its last write (a failure
//! recorded, a job released at shutdown): a transient error is tried again
//! until the lease deadline, a fencing refusal is a stale write and is never
//! tried again. Each test guards survivors of the full cargo-mutants run,
//! which found both classifications unpinned for these two writes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use stuckless_core::driver::Op;
use stuckless_core::{Epoch, JobContext, JobError, JobEventKind, JobId, JobStatus, StorageError};

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
