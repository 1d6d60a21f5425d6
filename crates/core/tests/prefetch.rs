//! Claiming ahead (`prefetch`): jobs claimed before a slot frees are held,
//! heartbeated, never run beyond the concurrency, and given back at shutdown.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{Hook, Hooked, Op, Reply, Storage};
use stuckless_core::{JobContext, JobError, JobId, JobStatus};

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

/// Holds every claim for `delay` before the store answers it, and records
/// how many claims were in flight at once and how many jobs they asked for
/// together.
struct SlowClaims {
    delay: Duration,
    /// Claims in flight now, and the jobs they asked for.
    now: Mutex<(usize, u32)>,
    peak_claims: AtomicUsize,
    peak_asked: AtomicU32,
    /// The fewest jobs a claim asked for while another was in flight.
    least_second_asked: AtomicU32,
}

impl SlowClaims {
    fn new(delay: Duration) -> Self {
        SlowClaims {
            delay,
            now: Mutex::new((0, 0)),
            peak_claims: AtomicUsize::new(0),
            peak_asked: AtomicU32::new(0),
            least_second_asked: AtomicU32::new(u32::MAX),
        }
    }
}

#[async_trait::async_trait]
impl Hook for SlowClaims {
    async fn call(&self, inner: &dyn Storage, op: Op) -> Reply {
        let limit = match &op {
            Op::JobClaim(claim) => claim.limit,
            _ => return op.apply(inner).await,
        };
        {
            let mut now = self.now.lock().unwrap();
            if now.0 > 0 {
                self.least_second_asked.fetch_min(limit, Ordering::SeqCst);
            }
            *now = (now.0 + 1, now.1 + limit);
            self.peak_claims.fetch_max(now.0, Ordering::SeqCst);
            self.peak_asked.fetch_max(now.1, Ordering::SeqCst);
        }
        tokio::time::sleep(self.delay).await;
        let reply = op.apply(inner).await;
        let mut now = self.now.lock().unwrap();
        *now = (now.0 - 1, now.1 - limit);
        reply
    }
}

/// Runs `jobs` jobs of one and two seconds by turns (so the two slots free
/// at different times) on a worker of concurrency 2 and `prefetch` whose
/// claims each take three seconds; returns the claim hook, once every job
/// succeeded in its first epoch with at most two handlers at once.
async fn run_behind_slow_claims(
    jobs: usize,
    prefetch: u32,
) -> Arc<Hooked<Arc<stuckless_core::MemStore>, SlowClaims>> {
    let world = World::new();
    let mut ids: Vec<JobId> = Vec::new();
    for i in 0..jobs {
        ids.push(world.insert("sleep", json!({"secs": 1 + i % 2})).await);
    }
    let slow = Arc::new(Hooked::new(
        world.store.clone(),
        SlowClaims::new(Duration::from_secs(3)),
    ));
    let (peak, now) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker = world
        .worker_on("w1", slow.clone())
        .concurrency(2)
        .prefetch(prefetch)
        .handler("sleep", counting(peak.clone(), now));
    let (shutdown, running) = spawn(worker.build().unwrap());
    for id in &ids {
        let job = world.until_terminal(*id, Duration::from_secs(600)).await;
        assert_eq!((job.status, job.epoch.0), (JobStatus::Succeeded, 1), "{job:?}");
    }
    shutdown.graceful();
    let report = running.await.unwrap();
    assert_eq!(report.completed, jobs as u64, "{report:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 2, "concurrency 2 is never exceeded");
    slow
}

/// Guards the throughput fix: a worker that claims ahead sends its next
/// claim while one is still unanswered (one claim at a time capped the
/// bench at one batch per claim round trip), only for a refill of at least
/// half the buffer, and the claims in flight never ask for more than
/// `concurrency + prefetch` jobs together.
#[tokio::test(start_paused = true)]
async fn with_prefetch_a_second_claim_goes_out_while_one_is_unanswered() {
    let slow = run_behind_slow_claims(12, 4).await;
    assert_eq!(slow.hook().peak_claims.load(Ordering::SeqCst), 2);
    let least = slow.hook().least_second_asked.load(Ordering::SeqCst);
    assert!(least >= 4 / 2, "a second claim asked for {least} jobs");
    assert!(
        slow.hook().peak_asked.load(Ordering::SeqCst) <= 2 + 4,
        "asked for {} jobs at once, more than concurrency + prefetch",
        slow.hook().peak_asked.load(Ordering::SeqCst)
    );
}

/// Guards the default: without prefetch one claim at a time, for the free
/// slots only, even when a slot frees while a claim for the other is out (a
/// survivor of the full mutants run allowed two claims with prefetch 0).
#[tokio::test(start_paused = true)]
async fn without_prefetch_one_claim_is_in_flight_at_a_time() {
    let slow = run_behind_slow_claims(6, 0).await;
    assert_eq!(slow.hook().peak_claims.load(Ordering::SeqCst), 1);
    assert_eq!(slow.hook().peak_asked.load(Ordering::SeqCst), 2);
}
