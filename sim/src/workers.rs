//! The simulator's workers are the shipped workers. [`builder`] starts from
//! `Worker::builder(id, storage)`, the defaults the binary runs, and changes
//! only the seed of the worker's randomness plus whatever a scenario
//! overrides ([`Overrides`]; the standard scenario overrides nothing, so the
//! simulated time scale is the real one).
//!
//! The checkers and the liveness bound need a few settings as numbers:
//! [`Timing`] reads them from core's own (`WorkerBuilder::settings`), and
//! [`Timing::confirm`] checks with `==` at the start of every run that the
//! workers really run them, so no checker judges a worker by numbers it does
//! not run.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::Storage;
use stuckless_core::{Retention, RetryPolicy, Worker, WorkerBuilder};

/// A scenario's changes to the shipped worker settings; `None` keeps the
/// default. The standard scenario changes none; the seed document's
/// scenario sets its incident's lease, heartbeat and poll interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Jobs run at once.
    pub concurrency: Option<u32>,
    /// Lease length.
    pub lease: Option<Duration>,
    /// Time between heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Time between reap passes.
    pub reap_interval: Option<Duration>,
    /// Time between claims without a wake-up.
    pub poll_interval: Option<Duration>,
    /// Jobs claimed ahead of a free slot.
    pub prefetch: Option<u32>,
}

impl Overrides {
    /// `builder` with these overrides applied.
    pub fn apply(&self, mut builder: WorkerBuilder) -> WorkerBuilder {
        if let Some(v) = self.concurrency {
            builder = builder.concurrency(v);
        }
        if let Some(v) = self.lease {
            builder = builder.lease(v);
        }
        if let Some(v) = self.heartbeat_interval {
            builder = builder.heartbeat_interval(v);
        }
        if let Some(v) = self.reap_interval {
            builder = builder.reap_interval(v);
        }
        if let Some(v) = self.poll_interval {
            builder = builder.poll_interval(v);
        }
        if let Some(v) = self.prefetch {
            builder = builder.prefetch(v);
        }
        builder
    }
}

/// The seed of worker `index`'s randomness (retry jitter, the reaper's and
/// the pruner's start offsets) in the world seeded `seed`.
pub fn rng_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(31).wrapping_add(index as u64)
}

/// Worker `id` of a world: `Worker::builder(id, storage)` with exactly two
/// changes. `rng_seed`: the default seeds it from the worker id alone, the
/// same in every world; seeding it from the world's seed lets each seed
/// explore its own jitter and reap and prune offsets (the run stays just as
/// deterministic). `overrides`: the scenario's, none in the standard one.
/// Handlers, clock, waker and observer are the host's business and are not
/// settings.
pub fn builder(id: &str, storage: Arc<dyn Storage>, rng_seed: u64, overrides: &Overrides) -> WorkerBuilder {
    overrides.apply(Worker::builder(id, storage).rng_seed(rng_seed))
}

/// The worker settings the simulator needs as numbers: the checkers' limits,
/// free capacity, the liveness bound, and the retention the run must stay
/// under. Checked against the real settings by [`Timing::confirm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Jobs run at once.
    pub concurrency: u32,
    /// Lease length.
    pub lease: Duration,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Time between reap passes.
    pub reap_interval: Duration,
    /// Time between claims without a wake-up.
    pub poll_interval: Duration,
    /// How long in-flight jobs may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Jobs claimed ahead of a free slot.
    pub prefetch: u32,
    /// The time limit on one attempt.
    pub default_timeout: Option<Duration>,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// How long finished jobs are kept.
    pub retention: Option<Retention>,
}

impl Timing {
    /// What `Worker::builder` ships, read from core's own settings.
    pub fn shipped() -> Timing {
        let clock = stuckless_core::ManualClock::new(stuckless_core::Timestamp::UNIX_EPOCH);
        let store: Arc<dyn Storage> = Arc::new(stuckless_core::MemStore::new(clock));
        let builder = Worker::builder("timing", store);
        let shipped = builder.settings();
        Timing {
            concurrency: shipped.concurrency(),
            lease: shipped.lease(),
            heartbeat_interval: shipped.heartbeat_interval(),
            reap_interval: shipped.reap_interval(),
            poll_interval: shipped.poll_interval(),
            shutdown_grace: shipped.shutdown_grace(),
            prefetch: shipped.prefetch(),
            default_timeout: shipped.default_timeout(),
            retry: shipped.retry(),
            retention: shipped.retention(),
        }
    }

    /// These timings with a scenario's overrides.
    pub fn with(self, o: &Overrides) -> Timing {
        Timing {
            concurrency: o.concurrency.unwrap_or(self.concurrency),
            lease: o.lease.unwrap_or(self.lease),
            heartbeat_interval: o.heartbeat_interval.unwrap_or(self.heartbeat_interval),
            reap_interval: o.reap_interval.unwrap_or(self.reap_interval),
            poll_interval: o.poll_interval.unwrap_or(self.poll_interval),
            prefetch: o.prefetch.unwrap_or(self.prefetch),
            ..self
        }
    }

    /// The shortest time a finished job is kept, if any is deleted at all.
    pub fn shortest_retention(&self) -> Option<Duration> {
        self.retention.map(|r| r.succeeded.min(r.cancelled).min(r.dead))
    }

    /// `builder` with every setting stated here set explicitly.
    fn restate(&self, builder: WorkerBuilder) -> WorkerBuilder {
        builder
            .concurrency(self.concurrency)
            .lease(self.lease)
            .heartbeat_interval(self.heartbeat_interval)
            .reap_interval(self.reap_interval)
            .poll_interval(self.poll_interval)
            .shutdown_grace(self.shutdown_grace)
            .prefetch(self.prefetch)
            .default_timeout(self.default_timeout)
            .retry(self.retry)
            .retention(self.retention)
    }

    /// Whether `built` holds exactly these timings: setting them all again on
    /// a builder made the same way (`rebuild`) must change nothing.
    pub fn confirm(&self, built: &WorkerBuilder, rebuild: WorkerBuilder) -> Result<(), String> {
        let restated = self.restate(rebuild);
        if restated.settings() == built.settings() {
            Ok(())
        } else {
            Err(format!(
                "the simulator's Timing {self:?} is not what the worker runs:\n  runs   {:?}\n  stated {:?}\n\
                 update Timing::shipped (sim/src/workers.rs) to core's defaults",
                built.settings(),
                restated.settings()
            ))
        }
    }
}
