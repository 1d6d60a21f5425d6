//! Claiming ahead (`prefetch`): jobs claimed before a slot frees are held,
//! heartbeated, never run beyond the concurrency, and given back at shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stuckless_core::{JobContext, JobError, JobStatus};

mod common;
use common::*;

/// A handler that sleeps `secs` of its payload and records the peak number
/// of handlers running at once.
fn counting(
    peak: Arc<AtomicU32>,
    now: Arc<AtomicU32>,
) -> impl Fn(JobContext) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>
       + Send
       + Sync
       + 'static {
    move |ctx: JobContext| {
        let (peak, now) = (peak.clone(), now.clone());
        Box::pin(async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            let secs = ctx.payload()["secs"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Guards claim-ahead against running more handlers than slots, and against
/// letting a buffered job's lease run out while it waits: it waits several
/// leases long and must still finish in its first epoch.
#[tokio::test(start_paused = true)]
async fn buffered_jobs_wait_for_a_slot_with_their_lease_kept_alive() {
    let world = World::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        // Each runs two leases long, so the last waits four leases in the buffer.
        ids.push(world.insert("sleep", json!({"secs": 2 * LEASE.as_secs()})).await);
    }
    let (peak, now) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker = world
        .worker("w1")
        .concurrency(1)
        .prefetch(2)
        .handler("sleep", counting(peak.clone(), now.clone()));
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        let job = world.job(*id).await;
        assert_eq!(job.status, JobStatus::Running, "all three claimed at once");
        assert_eq!(job.lease_owner.as_deref(), Some("w1"));
    }
    for id in &ids {
        let job = world.until_terminal(*id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(job.epoch.0, 1, "never reaped while buffered: {job:?}");
    }
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(
        (report.claimed, report.completed, report.lease_lost),
        (3, 3, 0),
        "{report:?}"
    );
    assert_eq!(peak.load(Ordering::SeqCst), 1, "concurrency 1 is never exceeded");
}

/// Guards shutdown against starting buffered jobs in the grace period: they
/// go back to the queue at once, at no attempt's cost, while the running one
/// finishes.
#[tokio::test(start_paused = true)]
async fn shutdown_releases_buffered_jobs_at_once() {
    let world = World::new();
    let running_id = world.insert("sleep", json!({"secs": 2})).await;
    let mut buffered = Vec::new();
    for _ in 0..2 {
        buffered.push(world.insert("sleep", json!({"secs": 2})).await);
    }
    let (peak, now) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker = world
        .worker("w1")
        .concurrency(1)
        .prefetch(2)
        .shutdown_grace(Duration::from_secs(30))
        .handler("sleep", counting(peak, now));
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!((report.completed, report.released), (1, 2), "{report:?}");
    assert_eq!(world.job(running_id).await.status, JobStatus::Succeeded);
    for id in buffered {
        let job = world.job(id).await;
        assert_eq!(job.status, JobStatus::Queued, "released, not run: {job:?}");
        assert_eq!(job.attempt, 0, "a release costs no attempt");
    }
}

/// Guards the default: without prefetch a worker claims no more than its
/// free slots, so a long job never waits here while another worker idles.
#[tokio::test(start_paused = true)]
async fn without_prefetch_a_worker_claims_only_free_slots() {
    let world = World::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(world.insert("sleep", json!({"secs": 3600})).await);
    }
    let (peak, now) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker = world
        .worker("w1")
        .concurrency(2)
        .handler("sleep", counting(peak, now));
    let (shutdown, running) = spawn(worker.build().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(world.job(*id).await.status);
    }
    let claimed = statuses.iter().filter(|s| **s == JobStatus::Running).count();
    assert_eq!(claimed, 2, "{statuses:?}");
    shutdown.escalate();
    running.await.unwrap();
}
