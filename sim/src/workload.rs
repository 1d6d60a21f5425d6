//! The producer: the web app that enqueues jobs over time (some scheduled
//! for later, some with idempotency keys and sent twice, some cancelled).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stuckless_core::{Client, JobId, NewJob};

use crate::clock::{SimClock, BASE};
use crate::net_store::NetStore;

/// The kind every job has: one call to the external API.
pub const KIND: &str = "report";

/// One enqueue the producer will make.
#[derive(Clone, Debug)]
pub struct Enqueue {
    /// When, from the start of the run.
    pub at: Duration,
    /// The job.
    pub job: NewJob,
    /// Send the same insert twice (a retried HTTP request).
    pub twice: bool,
    /// Cancel the job this long after enqueueing it.
    pub cancel_after: Option<Duration>,
}

/// The schedule a seed stands for: `jobs` enqueues over the first 80 % of
/// `chaos`; 20 % scheduled up to a minute ahead, 30 % with an idempotency key
/// (a third of those sent twice), 5 % cancelled within 30 s.
pub fn schedule(seed: u64, jobs: usize, chaos: Duration, max_attempts: i32) -> Vec<Enqueue> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x574f_524b_4c4f_4144);
    let span = (chaos.as_millis() as u64 * 8 / 10).max(1);
    let mut out: Vec<Enqueue> = (0..jobs)
        .map(|n| {
            let at = Duration::from_millis(rng.random_range(0..span));
            let mut job = NewJob::new("default", KIND, serde_json::json!({ "n": n }))
                .priority(rng.random_range(0..3))
                .max_attempts(max_attempts);
            if rng.random_bool(0.2) {
                job = job.run_at(BASE + at + Duration::from_millis(rng.random_range(0..60_000)));
            }
            let keyed = rng.random_bool(0.3);
            if keyed {
                job = job.idempotency_key(format!("report-{n}"));
            }
            Enqueue {
                at,
                job,
                twice: keyed && rng.random_bool(0.33),
                cancel_after: rng
                    .random_bool(0.05)
                    .then(|| Duration::from_millis(rng.random_range(0..30_000))),
            }
        })
        .collect();
    out.sort_by_key(|e| e.at);
    out
}

/// The producer host's software: enqueue on schedule, retrying while the db
/// is unreachable; sets `done` once every job was enqueued.
pub async fn produce(schedule: Arc<Vec<Enqueue>>, clock: SimClock, done: Arc<AtomicBool>) -> turmoil::Result {
    let client = Client::new(Arc::new(NetStore::remote("producer", "db")));
    for item in schedule.iter() {
        let wait = item.at.saturating_sub(clock.elapsed());
        tokio::time::sleep(wait).await;
        let sends = if item.twice { 2 } else { 1 };
        let mut id = None;
        for _ in 0..sends {
            id = Some(insert(&client, item.job.clone()).await);
        }
        if let (Some(after), Some(id)) = (item.cancel_after, id) {
            let client = client.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(after).await;
                for _ in 0..3 {
                    match client.cancel(id).await {
                        Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_secs(1)).await,
                        _ => return,
                    }
                }
            });
        }
    }
    done.store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
    Ok(())
}

async fn insert(client: &Client, job: NewJob) -> JobId {
    loop {
        match client.enqueue_job(job.clone()).await {
            Ok(outcome) => return outcome.job.id,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
