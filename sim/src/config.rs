//! What a simulated world looks like: [`SimBuilder`] over a private config.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::Storage;
use stuckless_core::{limits, WorkerBuilder};

use crate::api::{NORMAL_MAX, RETRY_AFTER_MAX};
use crate::plan::FaultPlan;
use crate::sections::MAX_SECTIONS;
use crate::variants::Variant;
use crate::workers::{self, Overrides, Timing};

/// The settings of one world. Defaults are the standard scenario:
///
/// | setting | default | why |
/// |---|---|---|
/// | `scenario` | `"standard"` | its name, for the replay command |
/// | `seed` | 0 | decides the plan, the workload, the deploy, the network and the API |
/// | `workers` | 4 | |
/// | `jobs` | 200 | enqueued over the first 80 % of the chaos phase |
/// | `chaos` | 10 min | faults happen only in this phase |
/// | `faults` | true | false: a plan with no faults (the plan can still be set) |
/// | `plan` | from the seed | a fixed plan replaces the seed's (fixtures, proptest) |
/// | `variant` | `Stuckless` | which broken variant, if any |
/// | `overrides` | none | changes to the shipped worker settings ([`crate::workers`]): the workers run `Worker::builder`'s defaults, time scale included |
/// | `rolling_deploy` | true | the workers move to a release that adds a job kind during the chaos phase ([`crate::deploy`]) |
/// | `poison_row` | true | the producer writes one row with a `run_at` no claim can read |
/// | `tick` | 100 ms | see below |
/// | `latency` | 1–50 ms | one-way, per message, seeded |
/// | `sample_every` | 1 s | how often the oracle compares the store with its model |
/// | `stop_on_violation` | false | end the run at the first violation |
/// | `keep_trace` | false | keep the full trace text in the outcome (its hash is always kept) |
/// | `keep_timeline` | false | record structured facts and draw the run as a [`stuckless_timeline::Timeline`] |
///
/// Jobs keep core's own defaults too (5 attempts, the worker's 15-minute
/// limit on each).
///
/// **Tick and latency.** turmoil advances every host by one tick per step, and
/// a message is delivered at the first step after its latency, so the tick is
/// both the cost driver (steps per simulated second) and the time resolution
/// of the network. The shortest interval that matters to the queue is a
/// second (the seed document's poll); leases, heartbeats and reaps are tens of
/// seconds. 100 ms is ten steps per shortest interval — fine enough that
/// races between a completion and a reap, or two claims, still interleave —
/// and cheap enough for thousands of simulated seconds per wall second. Real
/// Postgres round trips are 1–50 ms, so a round trip here costs one or two
/// ticks; timers inside a host still fire at their exact instants.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub scenario: &'static str,
    pub seed: u64,
    pub workers: usize,
    pub jobs: usize,
    pub chaos: Duration,
    pub faults: bool,
    pub plan: Option<FaultPlan>,
    pub variant: Variant,
    pub overrides: Overrides,
    pub rolling_deploy: bool,
    pub poison_row: bool,
    pub tick: Duration,
    pub min_latency: Duration,
    pub max_latency: Duration,
    pub sample_every: Duration,
    pub stop_on_violation: bool,
    pub keep_trace: bool,
    pub keep_timeline: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scenario: "standard",
            seed: 0,
            workers: 4,
            jobs: 200,
            chaos: Duration::from_secs(600),
            faults: true,
            plan: None,
            variant: Variant::Stuckless,
            overrides: Overrides::default(),
            rolling_deploy: true,
            poison_row: true,
            tick: Duration::from_millis(100),
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(50),
            sample_every: Duration::from_secs(1),
            stop_on_violation: false,
            keep_trace: false,
            keep_timeline: false,
        }
    }
}

impl Config {
    /// The worker settings this world's stuckless workers run.
    pub fn timing(&self) -> Timing {
        Timing::shipped().with(&self.overrides)
    }

    /// Worker `index`'s builder: the shipped defaults with this scenario's
    /// overrides ([`workers::builder`]), then the variant's own change, if it
    /// has one.
    pub fn worker_builder(&self, index: usize, storage: Arc<dyn Storage>) -> WorkerBuilder {
        let stuckless = workers::builder(
            &worker_name(index),
            storage,
            workers::rng_seed(self.seed, index),
            &self.overrides,
        );
        self.variant.worker(stuckless)
    }

    /// The longest the liveness phase may take, from the workers' settings
    /// (stuckless's, whatever the variant: the variant is judged by the
    /// promise it breaks): a held job comes back within lease + reap
    /// interval, a hung attempt ends within the time limit, backoff adds at
    /// most the sum of its delays (or a 429's Retry-After), pickup takes at
    /// most a poll, and the queue drains in waves of `workers × concurrency`
    /// normal-length jobs, the longest resumable one making a call per section.
    pub fn liveness_bound(&self) -> Duration {
        let t = self.timing();
        let limit = t
            .default_timeout
            .expect("every scenario's workers keep a time limit; only a variant drops it");
        let slots = (self.workers as u64 * u64::from(t.concurrency)).max(1);
        let waves = (self.jobs as u64).div_ceil(slots) as u32 + 1;
        t.lease
            + t.reap_interval
            + t.poll_interval
            + limit
            + t.retry
                .max_total_delay(limits::DEFAULT_MAX_ATTEMPTS)
                .max(RETRY_AFTER_MAX)
            + t.shutdown_grace
            + NORMAL_MAX * waves
            // A resumable job's attempt makes one call per section.
            + NORMAL_MAX * (MAX_SECTIONS as u32 - 1)
            + Duration::from_secs(60)
    }

    /// The longest a run can last: chaos, then the liveness bound.
    pub fn longest_run(&self) -> Duration {
        self.chaos + self.liveness_bound()
    }
}

/// Builds a world. Every default is listed on [`Config`]'s table.
#[derive(Clone, Debug, Default)]
pub struct SimBuilder {
    pub(crate) config: Config,
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

/// A setter that overrides one shipped worker setting ([`Overrides`]).
macro_rules! override_setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.overrides.$name = Some(value);
            self
        }
    };
}

impl SimBuilder {
    /// The standard scenario (4 workers, 200 jobs, 10 simulated minutes of
    /// chaos with every fault kind).
    pub fn new() -> Self {
        Self::default()
    }

    /// A small, fast scenario for tests: 3 workers, 40 jobs, 3 minutes of chaos.
    pub fn small() -> Self {
        Self::default()
            .workers(3)
            .jobs(40)
            .chaos(Duration::from_secs(180))
    }

    /// The seed document's design: 1 s polling, a 5-minute lock, a 60 s
    /// heartbeat, no recovery of expired locks; one worker, crashed once
    /// ([`FaultPlan::seed_document`]), one kind, no poison row: the
    /// incident as it was.
    pub fn seed_document() -> Self {
        let mut b = Self::default();
        b.config.scenario = "seed_document";
        b.workers(1)
            .jobs(5)
            .chaos(Duration::from_secs(120))
            .plan(FaultPlan::seed_document())
            .rolling_deploy(false)
            .poison_row(false)
            .poll_interval(Duration::from_secs(1))
            .lease(Duration::from_secs(300))
            .heartbeat_interval(Duration::from_secs(60))
            .variant(Variant::NoReaper)
    }

    /// Drops every override of the worker settings: the workers run the
    /// shipped defaults (what the standard scenario does).
    pub fn shipped_workers(mut self) -> Self {
        self.config.overrides = Overrides::default();
        self
    }

    /// The worker settings this world's stuckless workers run.
    pub fn timing(&self) -> Timing {
        self.config.timing()
    }

    /// Worker `index`'s builder as the world makes it, before the host adds
    /// its clock, waker, observer and handlers (which are not settings).
    pub fn worker_builder(&self, index: usize, storage: Arc<dyn Storage>) -> WorkerBuilder {
        self.config.worker_builder(index, storage)
    }

    /// The longest the liveness phase may take ([`Config::liveness_bound`]).
    pub fn liveness_bound(&self) -> Duration {
        self.config.liveness_bound()
    }

    /// The longest a run can last: the chaos phase plus the liveness bound.
    pub fn longest_run(&self) -> Duration {
        self.config.longest_run()
    }

    setter!(
        /// Decides everything random. Default 0.
        seed: u64
    );
    setter!(
        /// Worker hosts. Default 4.
        workers: usize
    );
    setter!(
        /// Jobs enqueued. Default 200.
        jobs: usize
    );
    setter!(
        /// Length of the chaos phase. Default 10 min.
        chaos: Duration
    );
    setter!(
        /// Whether the seed generates faults. Default true.
        faults: bool
    );
    setter!(
        /// The broken variant to run. Default none.
        variant: Variant
    );
    setter!(
        /// Whether the workers move to a release that adds a kind. Default true.
        rolling_deploy: bool
    );
    setter!(
        /// Whether the producer writes a poison row. Default true.
        poison_row: bool
    );
    override_setter!(
        /// Overrides the workers' concurrency. Default: shipped (10).
        concurrency: u32
    );
    override_setter!(
        /// Overrides the workers' lease. Default: shipped (30 s).
        lease: Duration
    );
    override_setter!(
        /// Overrides the workers' heartbeat interval. Default: shipped (10 s).
        heartbeat_interval: Duration
    );
    override_setter!(
        /// Overrides the workers' reap interval. Default: shipped (20 s).
        reap_interval: Duration
    );
    override_setter!(
        /// Overrides the workers' poll interval. Default: shipped (60 s).
        poll_interval: Duration
    );
    override_setter!(
        /// Overrides how many jobs workers claim ahead of a free slot.
        /// Default: shipped (0).
        prefetch: u32
    );
    setter!(
        /// turmoil tick. Default 100 ms.
        tick: Duration
    );
    setter!(
        /// End at the first violation. Default false.
        stop_on_violation: bool
    );
    setter!(
        /// Keep the full trace text. Default false.
        keep_trace: bool
    );
    setter!(
        /// Record the facts the timeline picture needs and build it
        /// ([`crate::RunOutcome::timeline`]). Default false.
        keep_timeline: bool
    );

    /// Runs this fixed plan instead of the seed's. Default: the seed's.
    pub fn plan(mut self, plan: FaultPlan) -> Self {
        self.config.plan = Some(plan);
        self
    }

    // `run` is in `world`: settings know nothing of the world they build.
}

/// A worker host's name (also its worker id).
pub fn worker_name(index: usize) -> String {
    format!("w{}", index + 1)
}

/// The command that replays `seed` of `scenario` under `variant`; a fixed
/// plan (printed with the failure) is passed with `--plan FILE`.
pub fn replay_command(seed: u64, scenario: &str, variant: Variant, fixed_plan: bool) -> String {
    let mut args = Vec::new();
    if scenario != "standard" {
        args.push(format!("--scenario {scenario}"));
    }
    if variant != Variant::Stuckless {
        args.push(format!("--variant {}", variant.name()));
    }
    if fixed_plan && scenario != "seed_document" {
        args.push("--plan PLAN.json".to_owned());
    }
    if args.is_empty() {
        format!("make sim SEED={seed}")
    } else {
        format!("make sim SEED={seed} SIM_ARGS=\"{}\"", args.join(" "))
    }
}
