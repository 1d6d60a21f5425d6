//! What a worker reports about itself, for metrics, logs and simulations.

use std::time::Duration;

use crate::driver::{PruneOutcome, ReapOutcome};
use crate::handler::CancelReason;
use crate::job::{Epoch, JobId};

/// Identifies one attempt in a [`WorkerEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRef {
    /// The job.
    pub job_id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// The epoch the worker holds.
    pub epoch: Epoch,
    /// The attempt number.
    pub attempt: i32,
}

/// Something a worker did or saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A job was claimed; `pickup_latency` is claim time minus `run_at`
    /// (storage clock).
    Claimed {
        /// The attempt.
        attempt: AttemptRef,
        /// How long the job waited while due.
        pickup_latency: Duration,
    },
    /// The storage accepted the completion.
    Completed {
        /// The attempt.
        attempt: AttemptRef,
        /// Handler run time on the worker's clock.
        run_time: Duration,
    },
    /// The attempt failed and the job will be retried.
    Retried {
        /// The attempt.
        attempt: AttemptRef,
        /// The handler's error.
        error: String,
    },
    /// The attempt failed and the job is dead.
    Dead {
        /// The attempt.
        attempt: AttemptRef,
        /// The handler's error.
        error: String,
    },
    /// The job was given back at shutdown.
    Released {
        /// The attempt.
        attempt: AttemptRef,
    },
    /// The handler was cancelled and its result will not be written.
    LeaseLost {
        /// The attempt.
        attempt: AttemptRef,
        /// Why.
        reason: CancelReason,
    },
    /// The storage refused a write as stale (epoch or status).
    StaleWriteRejected {
        /// The attempt.
        attempt: AttemptRef,
        /// The refused operation.
        operation: &'static str,
    },
    /// A reap pass took jobs back.
    Reaped {
        /// What it took.
        outcome: ReapOutcome,
    },
    /// The handler panicked.
    Panicked {
        /// The attempt.
        attempt: AttemptRef,
    },
    /// A claim, reap or prune failed: `consecutive` failures of
    /// `operation` in a row, this one included.
    CallFailed {
        /// The operation.
        operation: &'static str,
        /// The error.
        error: String,
        /// Failures in a row.
        consecutive: u32,
    },
    /// A prune pass deleted finished jobs.
    Pruned {
        /// What it deleted.
        outcome: PruneOutcome,
    },
    /// A storage call failed transiently.
    StorageUnavailable {
        /// The operation.
        operation: &'static str,
        /// The error.
        error: String,
    },
}

/// Receives a worker's events; must not block.
pub trait Observer: Send + Sync + 'static {
    /// Called once per event, from the worker's tasks.
    fn on_event(&self, event: &WorkerEvent);
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&self, _event: &WorkerEvent) {}
}

impl<F: Fn(&WorkerEvent) + Send + Sync + 'static> Observer for F {
    fn on_event(&self, event: &WorkerEvent) {
        (self)(event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Guards a cargo-mutants survivor (the closure impl's `on_event`
    /// replaced by `()`): a closure given as an observer sees every event.
    #[test]
    fn a_closure_is_an_observer() {
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        let observer: Box<dyn Observer> = Box::new(move |_: &WorkerEvent| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let event = WorkerEvent::Reaped {
            outcome: Default::default(),
        };
        observer.on_event(&event);
        observer.on_event(&event);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }
}
