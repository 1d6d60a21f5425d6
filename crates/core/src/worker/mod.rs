//! The worker runtime: claims jobs, runs handlers, keeps leases, reaps, and
//! shuts down without leaving anything running.

mod attempt;
mod claim_loop;
mod completer;
mod health;
mod runtime;
mod shared;
mod shutdown;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::args::{JobHandler, Typed};
use crate::clock::{Clock, TokioClock};
use crate::driver::Storage;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::observer::{NoObserver, Observer};
use crate::retry::RetryPolicy;
use crate::validate::{validate_lease, validate_name, validate_timeout};
use crate::waker::{PollOnly, Waker};

pub use health::{HealthHandle, FAILURES_BEFORE_UNHEALTHY};
pub use shared::RunReport;
pub use shutdown::ShutdownHandle;

/// A worker's settings. Every default is listed here and on the builder.
///
/// | setting | default | why |
/// |---|---|---|
/// | `queues` | `["default"]` | |
/// | `concurrency` | 10 | jobs run at once; claims never exceed free slots |
/// | `lease` | 30 s | a dead worker's jobs come back after at most lease + reap interval |
/// | `heartbeat_interval` | 10 s | a third of the lease: two heartbeats may be lost before it runs out |
/// | `reap_interval` | 20 s | idle, a worker sends 3 reaps + 1 poll + 2 registry heartbeats a minute: one statement per 10 s |
/// | `reap_batch` | 1000 | jobs taken back per reap statement |
/// | `poll_interval` | 60 s | safety net for lost wake-ups only |
/// | `registry_heartbeat_interval` | 30 s | how often the worker says it is alive |
/// | `shutdown_grace` | 8 s | fits Cloud Run's 10 s between SIGTERM and SIGKILL, leaving time to release |
/// | `cancel_grace` | 2 s | how long a cancelled handler may take to return before it is aborted |
/// | `storage_timeout` | 10 s | a storage call that takes longer counts as unavailable |
/// | `retry` | [`RetryPolicy::default`] | 1 s doubling to 5 min, equal jitter |
/// | `kind_timeouts` | none | per-kind limit on one attempt (also [`JobArgs::TIMEOUT`](crate::JobArgs::TIMEOUT)) |
/// | `default_timeout` | 15 min | limit on one attempt of a job and kind without their own: a hung call (an API that never answers while heartbeats go on) ends, fails retryably and finally dies instead of holding a slot forever. 15 min is 5× the slowest report the seed's generator writes (~3 min of OpenAI calls) |
/// | `retention` | succeeded and cancelled 1 day, dead 7 days | finished jobs are deleted after these ages, so the table and every count over it stay small |
/// | `prune_interval` | 10 min | time between prune passes (from a random offset) |
/// | `prune_batch` | 1000 | most jobs deleted per prune statement |
/// | `complete_batch` | 256 | most completions sent in one storage call |
/// | `prefetch` | 0 | jobs claimed ahead of a free slot and held, heartbeated, until one frees; a buffered job's lease counts from its claim. Off by default: with long jobs (the seed's minutes of OpenAI calls) a buffered job would wait here while another worker idles. Raise it for many short jobs |
/// | `complete_pipeline` | 2 | completion batches in flight at once: while one commits, the next fills, so commits share WAL flushes |
/// | `rng_seed` | a hash of the worker id | seeds retry jitter |
///
/// Read a builder's with [`WorkerBuilder::settings`]; two builders with equal
/// settings make workers that behave alike, which is how the simulator proves
/// it runs the binary's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub(crate) worker_id: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: u32,
    pub(crate) lease: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) reap_interval: Duration,
    pub(crate) reap_batch: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) registry_heartbeat_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) storage_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) kind_timeouts: BTreeMap<String, Duration>,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) retention: Option<Retention>,
    pub(crate) prune_interval: Duration,
    pub(crate) prune_batch: u32,
    pub(crate) complete_batch: usize,
    pub(crate) complete_pipeline: usize,
    pub(crate) prefetch: u32,
    pub(crate) rng_seed: u64,
    pub(crate) metadata: Value,
}

macro_rules! getter {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Config {
            $( $(#[$doc])* pub fn $name(&self) -> $ty { self.$name.clone() } )*
        }
    };
}

getter! {
    /// Jobs run at once.
    concurrency: u32;
    /// Lease length.
    lease: Duration;
    /// Time between heartbeats of each running job.
    heartbeat_interval: Duration;
    /// Time between reap passes.
    reap_interval: Duration;
    /// Time between claims when no wake-up comes.
    poll_interval: Duration;
    /// How long in-flight jobs may finish after shutdown starts.
    shutdown_grace: Duration;
    /// Limit on one attempt of jobs and kinds without their own.
    default_timeout: Option<Duration>;
    /// Backoff between attempts.
    retry: RetryPolicy;
    /// Ages after which finished jobs are deleted.
    retention: Option<Retention>;
    /// Time between prune passes.
    prune_interval: Duration;
    /// Jobs claimed ahead of a free slot.
    prefetch: u32;
}

/// How long finished jobs are kept before a prune pass deletes them (with
/// their events). Defaults follow River's: a day for succeeded and
/// cancelled jobs, a week for dead ones, which someone may want to inspect
/// and requeue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Age after which succeeded jobs are deleted. Default 1 day.
    pub succeeded: Duration,
    /// Age after which cancelled jobs are deleted. Default 1 day.
    pub cancelled: Duration,
    /// Age after which dead jobs are deleted. Default 7 days.
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        Retention {
            succeeded: DAY,
            cancelled: DAY,
            dead: DAY * 7,
        }
    }
}

/// The worker-wide time limit on one attempt unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Config {
    fn new(worker_id: String) -> Self {
        let rng_seed = fnv1a(worker_id.as_bytes());
        Config {
            worker_id,
            queues: vec!["default".to_owned()],
            concurrency: 10,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            reap_interval: Duration::from_secs(20),
            reap_batch: 1000,
            poll_interval: Duration::from_secs(60),
            registry_heartbeat_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(8),
            cancel_grace: Duration::from_secs(2),
            storage_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            kind_timeouts: BTreeMap::new(),
            default_timeout: Some(DEFAULT_TIMEOUT),
            retention: Some(Retention::default()),
            prune_interval: Duration::from_secs(10 * 60),
            prune_batch: 1000,
            complete_batch: 256,
            complete_pipeline: 2,
            prefetch: 0,
            rng_seed,
            metadata: Value::Null,
        }
    }

    fn validate(&self) -> Result<(), WorkerError> {
        let bad = |msg: String| Err(WorkerError::Config(msg));
        validate_name("worker_id", &self.worker_id).map_err(|e| WorkerError::Config(e.to_string()))?;
        if self.queues.is_empty() {
            return bad("at least one queue is needed".into());
        }
        for queue in &self.queues {
            validate_name("queue", queue).map_err(|e| WorkerError::Config(e.to_string()))?;
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.lease {
            return bad(format!(
                "heartbeat interval ({:?}) must be non-zero and shorter than the lease ({:?})",
                self.heartbeat_interval, self.lease
            ));
        }
        validate_lease("lease", self.lease).map_err(|e| WorkerError::Config(e.to_string()))?;
        for (kind, limit) in self.kind_timeouts.iter() {
            validate_name("kind", kind).map_err(|e| WorkerError::Config(e.to_string()))?;
            validate_timeout("kind timeout", *limit).map_err(|e| WorkerError::Config(e.to_string()))?;
        }
        if let Some(limit) = self.default_timeout {
            validate_timeout("default timeout", limit).map_err(|e| WorkerError::Config(e.to_string()))?;
        }
        for (name, d) in [
            ("prune interval", self.prune_interval),
            ("reap interval", self.reap_interval),
            ("poll interval", self.poll_interval),
            ("registry heartbeat interval", self.registry_heartbeat_interval),
            ("storage timeout", self.storage_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be non-zero"));
            }
        }
        if self.reap_batch == 0
            || self.complete_batch == 0
            || self.prune_batch == 0
            || self.complete_pipeline == 0
        {
            return bad(
                "reap, prune and complete batch sizes and the completion pipeline must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// The time limit on one attempt of `job`: its own, else its kind's,
    /// else the worker's default.
    pub(crate) fn timeout_for(&self, job: &crate::job::Job) -> Option<Duration> {
        job.timeout
            .or_else(|| self.kind_timeouts.get(&job.kind).copied())
            .or(self.default_timeout)
    }
}

/// FNV-1a: a fixed, dependency-free hash so default seeds are stable.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds a [`Worker`]. See [`Config`]'s table for every default.
pub struct WorkerBuilder {
    storage: Arc<dyn Storage>,
    clock: Option<Arc<dyn Clock>>,
    config: Config,
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    waker: Arc<dyn Waker>,
    observer: Arc<dyn Observer>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl WorkerBuilder {
    setter!(
        /// Jobs run at once. Default 10.
        concurrency: u32
    );
    setter!(
        /// Lease length; the storage expires a lease this long after the latest heartbeat. Default 30 s.
        lease: Duration
    );
    setter!(
        /// Time between heartbeats of each running job. Default 10 s.
        heartbeat_interval: Duration
    );
    setter!(
        /// Time between reap passes. Default 20 s.
        reap_interval: Duration
    );
    setter!(
        /// Most jobs one reap pass takes back. Default 1000.
        reap_batch: u32
    );
    setter!(
        /// Time between claims when no wake-up comes. Default 60 s.
        poll_interval: Duration
    );
    setter!(
        /// Time between registry heartbeats. Default 30 s.
        registry_heartbeat_interval: Duration
    );
    setter!(
        /// How long in-flight jobs may finish after shutdown starts. Default 8 s.
        shutdown_grace: Duration
    );
    setter!(
        /// How long a cancelled handler may take to return. Default 2 s.
        cancel_grace: Duration
    );
    setter!(
        /// Limit on one storage call. Default 10 s.
        storage_timeout: Duration
    );
    setter!(
        /// Backoff between attempts. Default [`RetryPolicy::default`].
        retry: RetryPolicy
    );
    setter!(
        /// Limit on one attempt of jobs and kinds without their own;
        /// `None` for no limit. Default 15 min ([`DEFAULT_TIMEOUT`]).
        default_timeout: Option<Duration>
    );
    setter!(
        /// Ages after which finished jobs are deleted; `None` keeps them
        /// forever. Default [`Retention::default`].
        retention: Option<Retention>
    );
    setter!(
        /// Time between prune passes. Default 10 min.
        prune_interval: Duration
    );
    setter!(
        /// Most jobs one prune statement deletes. Default 1000.
        prune_batch: u32
    );
    setter!(
        /// Most completions per storage call. Default 256.
        complete_batch: usize
    );
    setter!(
        /// Completion batches in flight at once. Default 2.
        complete_pipeline: usize
    );
    setter!(
        /// Jobs claimed ahead of a free slot, held and heartbeated until one
        /// frees. Default 0.
        prefetch: u32
    );
    setter!(
        /// Seed of the retry jitter. Default: a hash of the worker id.
        rng_seed: u64
    );
    setter!(
        /// Facts stored in the registry (host, pid, version). Default null.
        metadata: Value
    );

    /// Queues to claim from. Default `["default"]`.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Registers the handler for jobs of `kind`.
    pub fn handler(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Registers the typed handler `A` for jobs of kind `A::KIND`; a payload
    /// that does not decode as `A` fails permanently.
    pub fn handle<A: JobHandler>(mut self) -> Self {
        self.handlers
            .insert(A::KIND.to_owned(), Arc::new(Typed::<A>::new()));
        if let Some(limit) = A::TIMEOUT {
            self.config.kind_timeouts.insert(A::KIND.to_owned(), limit);
        }
        self
    }

    /// The settings so far (see [`Config`] for every default).
    pub fn settings(&self) -> &Config {
        &self.config
    }

    /// The clock the worker times itself by (heartbeats, backoff, grace,
    /// its local lease deadline). Default: the system clock
    /// ([`TokioClock::system`]); simulations and tests pass their own.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers a shared handler for jobs of `kind`.
    pub fn handler_arc(mut self, kind: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind.into(), handler);
        self
    }

    /// Limits one attempt of `kind` to `timeout`.
    pub fn kind_timeout(mut self, kind: impl Into<String>, timeout: Duration) -> Self {
        self.config.kind_timeouts.insert(kind.into(), timeout);
        self
    }

    /// Wake-up source (a NOTIFY listener, `/wake`). Default: poll only.
    pub fn waker(mut self, waker: Arc<dyn Waker>) -> Self {
        self.waker = waker;
        self
    }

    /// Receives the worker's events. Default: none.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Checks the configuration and builds the worker.
    pub fn build(self) -> Result<Worker, WorkerError> {
        self.config.validate()?;
        if self.handlers.is_empty() {
            return Err(WorkerError::Config("register at least one handler".into()));
        }
        for kind in self.handlers.keys() {
            validate_name("kind", kind).map_err(|e| WorkerError::Config(e.to_string()))?;
        }
        Ok(Worker {
            storage: self.storage,
            clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::system())),
            config: Arc::new(self.config),
            handlers: Arc::new(self.handlers),
            waker: self.waker,
            observer: self.observer,
            shutdown: ShutdownHandle::new(),
            health: HealthHandle::default(),
        })
    }
}

/// A worker: run it with [`Worker::run`], stop it with its [`ShutdownHandle`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stuckless_core::{Client, JobContext, JobError, MemStore, NewJob, TokioClock, Timestamp, Worker};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = Arc::new(TokioClock::starting_at(Timestamp::from_secs(1_700_000_000)));
/// let store = Arc::new(MemStore::with_clock(clock.clone()));
/// let client = Client::new(store.clone());
/// client.enqueue_job(NewJob::new("default", "greet", serde_json::json!({"name": "ada"}))).await.unwrap();
///
/// let worker = Worker::builder("worker-1", store.clone())
///     .clock(clock)
///     .poll_interval(Duration::from_millis(100))
///     .handler("greet", |ctx: JobContext| async move {
///         let name = ctx.payload()["name"].as_str().unwrap_or("?").to_owned();
///         assert_eq!(name, "ada");
///         Ok::<(), JobError>(())
///     })
///     .build()
///     .unwrap();
/// let shutdown = worker.shutdown_handle();
/// let running = tokio::spawn(worker.run());
/// tokio::time::sleep(Duration::from_secs(1)).await;
/// shutdown.graceful();
/// let report = running.await.unwrap().unwrap();
/// assert_eq!(report.completed, 1);
/// # }
/// ```
pub struct Worker {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
    handlers: Arc<BTreeMap<String, Arc<dyn Handler>>>,
    waker: Arc<dyn Waker>,
    observer: Arc<dyn Observer>,
    shutdown: ShutdownHandle,
    health: HealthHandle,
}

impl Worker {
    /// A builder for a worker with a unique `worker_id` (1 to 128 bytes of
    /// `[A-Za-z0-9_.:-]`) over `storage`.
    pub fn builder(worker_id: impl Into<String>, storage: Arc<dyn Storage>) -> WorkerBuilder {
        WorkerBuilder {
            storage,
            clock: None,
            config: Config::new(worker_id.into()),
            handlers: BTreeMap::new(),
            waker: Arc::new(PollOnly),
            observer: Arc::new(NoObserver),
        }
    }

    /// A handle that stops this worker, gracefully or at once.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A handle that says whether this worker's claims and reaps get through.
    pub fn health_handle(&self) -> HealthHandle {
        self.health.clone()
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// Runs until shut down. Dropping the future aborts every task it started,
    /// as a crash would: the jobs it held come back through the reaper.
    pub async fn run(self) -> Result<RunReport, WorkerError> {
        runtime::run(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    /// Guards a cargo-mutants survivor (`|` for `^` in `fnv1a`): the seed
    /// hash is FNV-1a (its published test vectors), so workers named alike
    /// still draw different jitter.
    #[test]
    fn the_default_seed_hash_is_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let mut seeds: Vec<u64> = (0..1000)
            .map(|i| fnv1a(format!("worker-{i}").as_bytes()))
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), 1000, "distinct names, distinct seeds");
    }
}
