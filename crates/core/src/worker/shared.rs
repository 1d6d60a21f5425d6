//! State shared by a worker's main loop, its background tasks and every
//! attempt, and the report it fills in.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::completer::QueuedCompletion;
use super::{Config, HealthHandle};
use crate::clock::Clock;
use crate::driver::{Storage, StorageResult};
use crate::error::StorageError;
use crate::handler::Handler;
use crate::observer::{Observer, WorkerEvent};
use crate::time::Timestamp;
use tracing::{debug, warn};

/// What a worker did over one run, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Jobs claimed.
    pub claimed: u64,
    /// Completions the storage accepted.
    pub completed: u64,
    /// Attempts failed and retried.
    pub retried: u64,
    /// Attempts failed into dead.
    pub dead: u64,
    /// Jobs released at shutdown.
    pub released: u64,
    /// Handlers cancelled because the lease was lost or presumed lost.
    pub lease_lost: u64,
    /// Writes the storage refused as stale.
    pub stale_writes: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Jobs this worker's reaper took back.
    pub reaped: u64,
    /// Finished jobs this worker's pruner deleted.
    pub pruned: u64,
    /// Claim, reap and prune calls that failed.
    pub failed_calls: u64,
}

impl RunReport {
    pub(super) fn count(&mut self, event: &WorkerEvent) {
        match event {
            WorkerEvent::Claimed { .. } => self.claimed += 1,
            WorkerEvent::Completed { .. } => self.completed += 1,
            WorkerEvent::Retried { .. } => self.retried += 1,
            WorkerEvent::Dead { .. } => self.dead += 1,
            WorkerEvent::Released { .. } => self.released += 1,
            WorkerEvent::LeaseLost { .. } => self.lease_lost += 1,
            WorkerEvent::StaleWriteRejected { .. } => self.stale_writes += 1,
            WorkerEvent::Panicked { .. } => self.panics += 1,
            WorkerEvent::Reaped { outcome } => self.reaped += outcome.len() as u64,
            WorkerEvent::Pruned { outcome } => self.pruned += outcome.total(),
            WorkerEvent::CallFailed { .. } => self.failed_calls += 1,
            WorkerEvent::StorageUnavailable { .. } => {}
        }
    }
}

/// State shared by the main loop and every attempt.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    pub handlers: Arc<BTreeMap<String, Arc<dyn Handler>>>,
    pub observer: Arc<dyn Observer>,
    pub report: Mutex<RunReport>,
    pub rng: Mutex<ChaCha8Rng>,
    /// Fired when the shutdown grace is over: attempts release their jobs.
    pub release_now: CancellationToken,
    /// Fired when shutdown starts: jobs claimed ahead and still waiting for
    /// a slot are released at once instead of started in the grace period.
    pub release_buffered: CancellationToken,
    /// One permit per concurrent handler; an attempt claimed ahead
    /// (`prefetch`) waits here, heartbeating, until one frees.
    pub slots: Arc<Semaphore>,
    /// Wakes the main loop from inside (e.g. the reaper requeued jobs).
    pub kick: Notify,
    pub completions: mpsc::Sender<QueuedCompletion>,
    pub in_flight: AtomicU32,
    pub health: HealthHandle,
    /// When jobs this worker failed become due again (worker clock): the
    /// claim loop wakes then. Bounded: past the cap, the poll catches them.
    pub retries_due: Mutex<BTreeSet<Timestamp>>,
}

/// Most retry wake-ups a worker remembers.
const MAX_RETRY_WAKEUPS: usize = 1024;

impl Shared {
    /// Counts an event and hands it to the observer.
    pub fn emit(&self, event: WorkerEvent) {
        self.report.lock().expect("report lock").count(&event);
        self.observer.on_event(&event);
    }

    /// A jittered retry delay for a failed `attempt`.
    pub fn retry_delay(&self, attempt: i32) -> Duration {
        let mut rng = self.rng.lock().expect("rng lock");
        self.config.retry.delay(attempt, &mut *rng)
    }

    /// Runs a storage call, turning a call slower than `limit` into
    /// [`StorageError::Unavailable`].
    pub async fn bounded<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        call: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let result = tokio::select! {
            biased;
            result = call => result,
            _ = self.clock.sleep(limit) => Err(StorageError::Unavailable(format!("{operation} timed out after {limit:?}"))),
        };
        if let Err(error) = &result {
            if error.is_transient() {
                self.emit(WorkerEvent::StorageUnavailable {
                    operation,
                    error: error.to_string(),
                });
            }
        }
        result
    }

    /// Records a failed claim, reap or prune: counted, and logged at WARN
    /// with its cause from the second in a row (one is a blip; a row is a
    /// cause an operator must see, such as a row the claim cannot read).
    pub fn call_failed(&self, operation: &'static str, error: &StorageError) {
        let message = error.to_string();
        let consecutive = self.health.failed(operation, &message);
        if consecutive >= 2 {
            warn!(operation, consecutive, %error, "storage call keeps failing");
        } else {
            debug!(operation, %error, "storage call failed; retrying at the next interval");
        }
        self.emit(WorkerEvent::CallFailed {
            operation,
            error: message,
            consecutive,
        });
    }

    /// Remembers that a job this worker failed is due again at `at`.
    pub fn retry_due_at(&self, at: Timestamp) {
        let mut due = self.retries_due.lock().expect("retries lock");
        if due.len() < MAX_RETRY_WAKEUPS {
            due.insert(at);
        }
    }

    /// The earliest remembered retry time, after forgetting those a claim
    /// sent at `claimed_at` or later already covers.
    pub fn next_retry(&self, claimed_at: Option<Timestamp>) -> Option<Timestamp> {
        let mut due = self.retries_due.lock().expect("retries lock");
        if let Some(at) = claimed_at {
            due.retain(|t| *t > at);
        }
        due.first().copied()
    }

    /// The worker clock's now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::ReapOutcome;
    use crate::job::JobId;

    /// A report adds up every pass's jobs (`*=` for `+=` on reaped jobs
    /// left the count at zero and passed every test).
    #[test]
    fn reaps_add_up_in_the_report() {
        let mut report = RunReport::default();
        for _ in 0..2 {
            report.count(&WorkerEvent::Reaped {
                outcome: ReapOutcome {
                    requeued: vec![JobId(1), JobId(2)],
                    dead: vec![JobId(3)],
                },
            });
        }
        assert_eq!(report.reaped, 6);
    }
}
