//! A [`Hook`] that times the hot-path calls, so the bench can say where a
//! job's time goes (claim vs completion round trips, batch sizes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stuckless_core::driver::{Hook, Hooked, Op, Reply, Storage};

/// Timings of one kind of call.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    /// Duration of each call.
    pub durations: Vec<Duration>,
    /// Items in each call (jobs claimed, completions sent).
    pub sizes: Vec<usize>,
}

impl CallStats {
    /// The `p`th percentile duration in ms.
    pub fn p_ms(&self, p: f64) -> f64 {
        let mut d: Vec<f64> = self.durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        d.sort_by(|a, b| a.total_cmp(b));
        if d.is_empty() {
            return f64::NAN;
        }
        d[(((p / 100.0) * (d.len() as f64 - 1.0)).round() as usize).min(d.len() - 1)]
    }

    /// Mean items per call.
    pub fn mean_size(&self) -> f64 {
        if self.sizes.is_empty() {
            return 0.0;
        }
        self.sizes.iter().sum::<usize>() as f64 / self.sizes.len() as f64
    }

    /// Calls made.
    pub fn calls(&self) -> usize {
        self.durations.len()
    }
}

/// Times `job_claim` and `job_complete_many`; every other call passes through.
#[derive(Clone, Debug, Default)]
pub struct CallTimer {
    /// Claim timings.
    pub claims: Arc<Mutex<CallStats>>,
    /// Batched-completion timings.
    pub completions: Arc<Mutex<CallStats>>,
}

/// A storage whose claims and batched completions are timed.
pub type TimedStorage<S> = Hooked<S, CallTimer>;

/// Wraps `inner` so its claims and batched completions are timed; read them
/// from `.hook()`.
pub fn timed<S: Storage>(inner: S) -> TimedStorage<S> {
    Hooked::new(inner, CallTimer::default())
}

fn record(stats: &Mutex<CallStats>, started: Instant, size: usize) {
    let mut s = stats.lock().expect("stats lock");
    s.durations.push(started.elapsed());
    s.sizes.push(size);
}

#[async_trait]
impl Hook for CallTimer {
    async fn call(&self, inner: &dyn Storage, op: Op) -> Reply {
        let sent = match &op {
            Op::JobCompleteMany(many) => many.jobs.len(),
            _ => 0,
        };
        let started = Instant::now();
        let reply = op.apply(inner).await;
        match &reply {
            Reply::JobClaim(claimed) => record(&self.claims, started, claimed.as_ref().map_or(0, Vec::len)),
            Reply::JobCompleteMany(_) => record(&self.completions, started, sent),
            _ => {}
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stuckless_core::driver::{JobClaim, JobComplete, JobCompleteMany, JobInsertMany, StorageNow};
    use stuckless_core::{ManualClock, MemStore, NewJob, Timestamp};

    #[tokio::test]
    async fn times_claims_and_batched_completions_only() {
        let store = timed(MemStore::new(ManualClock::new(Timestamp::from_secs(1))));
        let jobs = (0..3)
            .map(|_| {
                NewJob::new("default", "k", serde_json::json!({}))
                    .validate()
                    .unwrap()
            })
            .collect();
        store.job_insert_many(JobInsertMany { jobs }).await.unwrap();
        store.storage_now(StorageNow {}).await.unwrap();
        let claim = JobClaim {
            worker_id: "w".into(),
            queues: vec!["default".into()],
            limit: 2,
            lease: Duration::from_secs(30),
            kinds: None,
        };
        let claimed = store.job_claim(claim).await.unwrap();
        let jobs = claimed
            .iter()
            .map(|c| JobComplete {
                id: c.id(),
                epoch: c.epoch(),
            })
            .collect();
        store.job_complete_many(JobCompleteMany { jobs }).await.unwrap();
        let claims = store.hook().claims.lock().unwrap().clone();
        let completions = store.hook().completions.lock().unwrap().clone();
        assert_eq!((claims.calls(), claims.sizes.clone()), (1, vec![2]));
        assert_eq!((completions.calls(), completions.mean_size()), (1, 2.0));
    }
}
