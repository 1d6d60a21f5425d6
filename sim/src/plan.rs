//! Fault plans: timed faults as data, generated from a seed (swarm style) or
//! by proptest, saved to and replayed from fixtures.

use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::api::ApiMode;

/// Which way a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Nothing passes either way.
    Both,
    /// The worker's requests are lost; the db's messages still arrive.
    ToDb,
    /// The db's replies are lost after it committed.
    FromDb,
}

/// One fault. Each heals itself after its duration; the heal at the end of
/// the chaos phase repairs whatever is still broken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Kill a worker (in-flight state lost); restart it after `down_ms`.
    Crash {
        /// Worker index.
        worker: usize,
        /// Time until restart.
        down_ms: u64,
    },
    /// Freeze a worker's traffic (a stop-the-world pause): everything it sends
    /// is held and arrives when it resumes, possibly after its lease expired.
    Pause {
        /// Worker index.
        worker: usize,
        /// Pause length.
        for_ms: u64,
        /// Start at the worker's first completion write at or after the
        /// fault's time instead of at it: the process stops between checking
        /// its lease and its write landing, the classic zombie. An untimed
        /// pause rarely catches a write in flight (a worker writes a few
        /// completions a minute), so without this one a fencing bug would
        /// show in few seeds. Never fires if no completion is written before
        /// the heal.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        on_completion: bool,
        /// End as another worker's reap reaches the db while one of this
        /// worker's leases has expired, if that comes before `for_ms`: the
        /// process wakes and its held heartbeats and completion land in the
        /// middle of the reap that takes its lease, the worst moment to
        /// resume. An untimed resume rarely falls within the round trip of a
        /// reap (a reap comes every few seconds), so without this one a
        /// reaper that does not recheck what it read would show in few seeds.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        until_reaped: bool,
    },
    /// Cut a worker off the db.
    Partition {
        /// Worker index.
        worker: usize,
        /// Length.
        for_ms: u64,
        /// Which way.
        direction: Direction,
    },
    /// Lose single messages between a worker and the db at random.
    LoseMessages {
        /// Worker index.
        worker: usize,
        /// Chance each message is lost.
        probability: f64,
        /// Length.
        for_ms: u64,
    },
    /// Slow a worker's link to the db.
    Delay {
        /// Worker index.
        worker: usize,
        /// One-way latency while it lasts.
        latency_ms: u64,
        /// Length.
        for_ms: u64,
    },
    /// Restart the database: connections drop, committed data survives.
    DbRestart {
        /// Time until it is back.
        down_ms: u64,
    },
    /// Change the external API's behaviour.
    Api {
        /// The new behaviour.
        mode: ApiMode,
        /// Length.
        for_ms: u64,
    },
    /// Set a worker's clock offset from true time.
    Skew {
        /// Worker index.
        worker: usize,
        /// Offset; negative is behind.
        offset_ms: i64,
    },
    /// SIGTERM a worker (graceful shutdown); restart it after `down_ms`.
    Sigterm {
        /// Worker index.
        worker: usize,
        /// Time until restart.
        down_ms: u64,
    },
}

impl Fault {
    /// The fault's kind, as counted in summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "partition",
            Fault::LoseMessages { .. } => "lose_messages",
            Fault::Delay { .. } => "delay",
            Fault::DbRestart { .. } => "db_restart",
            Fault::Api { .. } => "api",
            Fault::Skew { .. } => "skew",
            Fault::Sigterm { .. } => "sigterm",
        }
    }

    /// The worker it hits, if one.
    pub fn worker(&self) -> Option<usize> {
        match self {
            Fault::Crash { worker, .. }
            | Fault::Pause { worker, .. }
            | Fault::Partition { worker, .. }
            | Fault::LoseMessages { worker, .. }
            | Fault::Delay { worker, .. }
            | Fault::Skew { worker, .. }
            | Fault::Sigterm { worker, .. } => Some(*worker),
            Fault::DbRestart { .. } | Fault::Api { .. } => None,
        }
    }

    /// How long it lasts before it heals itself.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(match self {
            Fault::Crash { down_ms, .. } | Fault::DbRestart { down_ms } | Fault::Sigterm { down_ms, .. } => {
                *down_ms
            }
            Fault::Pause { for_ms, .. }
            | Fault::Partition { for_ms, .. }
            | Fault::LoseMessages { for_ms, .. }
            | Fault::Delay { for_ms, .. }
            | Fault::Api { for_ms, .. } => *for_ms,
            Fault::Skew { .. } => 0,
        })
    }
}

/// Every fault kind, in a fixed order.
pub const FAULT_KINDS: [&str; 9] = [
    "crash",
    "pause",
    "partition",
    "lose_messages",
    "delay",
    "db_restart",
    "api",
    "skew",
    "sigterm",
];

/// A fault at a time (milliseconds from the start of the run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedFault {
    /// When, in simulated milliseconds from the start.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub fault: Fault,
}

/// The faults of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Faults, ascending `at_ms`.
    pub faults: Vec<TimedFault>,
    /// Chance that one wake-up to one worker is lost during the chaos phase.
    pub notification_loss_probability: f64,
}

/// How likely each fault kind is per ten-second slot of the chaos phase.
/// Drawn per seed, with some kinds switched off entirely (swarm testing), so
/// different seeds stress different mixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Swarm {
    /// Chance of a worker crash per slot.
    pub crash_probability: f64,
    /// Chance of a worker pause per slot.
    pub pause_probability: f64,
    /// Chance of a partition per slot.
    pub partition_probability: f64,
    /// Chance of a message-loss burst per slot.
    pub lose_messages_probability: f64,
    /// Chance of a slow link per slot.
    pub delay_probability: f64,
    /// Chance of a db restart per slot.
    pub db_restart_probability: f64,
    /// Chance per slot that the API turns slow. The API's four behaviours
    /// are four faults, each with its own chance like every other kind (they
    /// used to share one, so a hang, the incident's own fault, was a quarter
    /// as common as a crash).
    pub api_slow_probability: f64,
    /// Chance per slot that the API hangs.
    pub api_hung_probability: f64,
    /// Chance per slot that the API rate-limits.
    pub api_rate_limited_probability: f64,
    /// Chance per slot that the API fails.
    pub api_failing_probability: f64,
    /// Chance of a clock skew change per slot.
    pub skew_probability: f64,
    /// Chance of a SIGTERM per slot.
    pub sigterm_probability: f64,
    /// Chance a wake-up is lost.
    pub notification_loss_probability: f64,
    /// The workers the per-worker faults may hit, ascending: every worker in
    /// half the seeds, a few in the rest. Faults focused on few workers pile
    /// up on them — a partition and a clock jump on the same worker, a pause
    /// on a worker already cut off — while the others run undisturbed, so a
    /// hang on one of those stays hung; spread over every worker, each
    /// worker sees a thinner mix.
    #[serde(default)]
    pub targets: Vec<usize>,
}

/// Bounds of the generated faults' parameters.
pub mod ranges {
    /// Crash down time, ms.
    pub const CRASH_DOWN_MIN: u64 = 1_000;
    /// Crash down time, ms.
    pub const CRASH_DOWN_MAX: u64 = 90_000;
    /// Pause length, ms: up to three leases, so zombies happen.
    pub const PAUSE_MIN: u64 = 5_000;
    /// Pause length, ms.
    pub const PAUSE_MAX: u64 = 90_000;
    /// Partition length, ms.
    pub const PARTITION_MIN: u64 = 1_000;
    /// Partition length, ms.
    pub const PARTITION_MAX: u64 = 60_000;
    /// Message-loss probability.
    pub const LOSS_PROBABILITY_MAX: f64 = 0.3;
    /// Burst length, ms.
    pub const LOSS_MAX: u64 = 30_000;
    /// Slow link latency, ms.
    pub const DELAY_LATENCY_MIN: u64 = 200;
    /// Slow link latency, ms: beyond the client's 5 s call timeout.
    pub const DELAY_LATENCY_MAX: u64 = 8_000;
    /// Slow link length, ms.
    pub const DELAY_MAX: u64 = 40_000;
    /// Db down time, ms.
    pub const DB_DOWN_MIN: u64 = 500;
    /// Db down time, ms.
    pub const DB_DOWN_MAX: u64 = 20_000;
    /// API fault length, ms.
    pub const API_MIN: u64 = 10_000;
    /// API fault length, ms.
    pub const API_MAX: u64 = 180_000;
    /// Largest clock offset, ms either way.
    pub const SKEW_MAX: i64 = 60_000;
    /// Down time after SIGTERM, ms.
    pub const SIGTERM_DOWN_MIN: u64 = 0;
    /// Down time after SIGTERM, ms.
    pub const SIGTERM_DOWN_MAX: u64 = 30_000;
}

impl Swarm {
    /// Draws per-kind probabilities (each kind is off with chance 1/4, and
    /// otherwise at least a fifth of its largest chance, so a kind that is
    /// on happens: from 0 up, a tenth of the seeds drew a pause chance too
    /// small for a single pause in the chaos phase) and the targets among
    /// `workers` workers.
    pub fn draw(rng: &mut impl Rng, workers: usize) -> Swarm {
        let mut p = |max: f64| {
            if rng.random_bool(0.25) {
                0.0
            } else {
                rng.random_range(max / 5.0..max)
            }
        };
        Swarm {
            crash_probability: p(0.15),
            pause_probability: p(0.15),
            partition_probability: p(0.15),
            lose_messages_probability: p(0.10),
            delay_probability: p(0.10),
            db_restart_probability: p(0.05),
            api_slow_probability: p(0.10),
            api_hung_probability: p(0.10),
            api_rate_limited_probability: p(0.10),
            api_failing_probability: p(0.10),
            skew_probability: p(0.10),
            sigterm_probability: p(0.10),
            notification_loss_probability: p(0.5),
            targets: targets(rng, workers),
        }
    }

    /// A plan for `workers` workers over a chaos phase of `chaos`.
    pub fn plan(&self, rng: &mut impl Rng, workers: usize, chaos: Duration) -> FaultPlan {
        use ranges::*;
        let slot = 10_000u64;
        let mut faults = Vec::new();
        let chaos_ms = chaos.as_millis() as u64;
        let mut t = 0;
        while t < chaos_ms {
            let kinds: [(f64, u8); 12] = [
                (self.crash_probability, 0),
                (self.pause_probability, 1),
                (self.partition_probability, 2),
                (self.lose_messages_probability, 3),
                (self.delay_probability, 4),
                (self.db_restart_probability, 5),
                (self.api_slow_probability, 6),
                (self.api_hung_probability, 9),
                (self.api_rate_limited_probability, 10),
                (self.api_failing_probability, 11),
                (self.skew_probability, 7),
                (self.sigterm_probability, 8),
            ];
            for (p, kind) in kinds {
                if p <= 0.0 || !rng.random_bool(p) {
                    continue;
                }
                let at_ms = t + rng.random_range(0..slot);
                if at_ms >= chaos_ms {
                    continue;
                }
                let worker = match self.targets.as_slice() {
                    [] => rng.random_range(0..workers),
                    some => some[rng.random_range(0..some.len())],
                };
                let fault = match kind {
                    0 => Fault::Crash {
                        worker,
                        down_ms: rng.random_range(CRASH_DOWN_MIN..=CRASH_DOWN_MAX),
                    },
                    1 => Fault::Pause {
                        worker,
                        for_ms: rng.random_range(PAUSE_MIN..=PAUSE_MAX),
                        on_completion: rng.random_bool(0.75),
                        // Drawn by [`FaultPlan::from_seed`] from a stream of
                        // its own.
                        until_reaped: false,
                    },
                    2 => Fault::Partition {
                        worker,
                        for_ms: rng.random_range(PARTITION_MIN..=PARTITION_MAX),
                        direction: [Direction::Both, Direction::ToDb, Direction::FromDb]
                            [rng.random_range(0..3)],
                    },
                    3 => Fault::LoseMessages {
                        worker,
                        probability: (rng.random_range(0.01..LOSS_PROBABILITY_MAX) * 100.0).round() / 100.0,
                        for_ms: rng.random_range(1_000..=LOSS_MAX),
                    },
                    4 => Fault::Delay {
                        worker,
                        latency_ms: rng.random_range(DELAY_LATENCY_MIN..=DELAY_LATENCY_MAX),
                        for_ms: rng.random_range(1_000..=DELAY_MAX),
                    },
                    5 => Fault::DbRestart {
                        down_ms: rng.random_range(DB_DOWN_MIN..=DB_DOWN_MAX),
                    },
                    6 | 9..=11 => Fault::Api {
                        mode: match kind {
                            6 => ApiMode::Slow,
                            9 => ApiMode::Hung,
                            10 => ApiMode::RateLimited,
                            _ => ApiMode::Failing,
                        },
                        for_ms: rng.random_range(API_MIN..=API_MAX),
                    },
                    7 => Fault::Skew {
                        worker,
                        offset_ms: rng.random_range(-SKEW_MAX..=SKEW_MAX),
                    },
                    _ => Fault::Sigterm {
                        worker,
                        down_ms: rng.random_range(SIGTERM_DOWN_MIN..=SIGTERM_DOWN_MAX),
                    },
                };
                faults.push(TimedFault { at_ms, fault });
            }
            t += slot;
        }
        faults.sort_by_key(|f| f.at_ms);
        FaultPlan {
            faults,
            notification_loss_probability: (self.notification_loss_probability * 100.0).round() / 100.0,
        }
    }
}

/// Every worker with chance 1/2; otherwise a random proper subset of one
/// to `workers - 1` workers.
fn targets(rng: &mut impl Rng, workers: usize) -> Vec<usize> {
    let all: Vec<usize> = (0..workers).collect();
    if workers < 2 || rng.random_bool(0.5) {
        return all;
    }
    let n = rng.random_range(1..workers);
    let mut picked: Vec<usize> = rand::seq::index::sample(rng, workers, n).into_iter().collect();
    picked.sort_unstable();
    picked
}

impl FaultPlan {
    /// The swarm-style plan a seed stands for.
    pub fn from_seed(seed: u64, workers: usize, chaos: Duration) -> (Swarm, FaultPlan) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_4152_4d00_0000);
        let swarm = Swarm::draw(&mut rng, workers);
        let mut plan = swarm.plan(&mut rng, workers, chaos);
        // Half the pauses end at a reap, drawn from a stream of their own so
        // every other draw of the plan is what it was before they could.
        // Those last up to the longest pause: long enough for the lease to
        // run out and another worker's reaper to come for it.
        let mut resumes = ChaCha8Rng::seed_from_u64(seed ^ 0x5245_5355_4d45);
        for fault in &mut plan.faults {
            if let Fault::Pause {
                until_reaped, for_ms, ..
            } = &mut fault.fault
            {
                *until_reaped = resumes.random_bool(0.5);
                if *until_reaped {
                    *for_ms = ranges::PAUSE_MAX;
                }
            }
        }
        (swarm, plan)
    }

    /// The seed document's incident: the only worker crashes once, a minute
    /// in, while it holds jobs, and comes back ten seconds later.
    pub fn seed_document() -> FaultPlan {
        FaultPlan {
            faults: vec![TimedFault {
                at_ms: 60_000,
                fault: Fault::Crash {
                    worker: 0,
                    down_ms: 10_000,
                },
            }],
            notification_loss_probability: 0.0,
        }
    }

    /// Faults per kind, in [`FAULT_KINDS`] order.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        FAULT_KINDS
            .iter()
            .map(|k| {
                (
                    *k,
                    self.faults.iter().filter(|f| f.fault.kind() == *k).count() as u64,
                )
            })
            .collect()
    }
}

/// A proptest strategy for plans over `workers` workers and a chaos phase of
/// `chaos`; shrinking drops faults and shortens them.
pub fn strategy(workers: usize, chaos: Duration) -> BoxedStrategy<FaultPlan> {
    use ranges::*;
    let chaos_ms = chaos.as_millis() as u64;
    let w = 0..workers;
    let fault = prop_oneof![
        (w.clone(), CRASH_DOWN_MIN..CRASH_DOWN_MAX)
            .prop_map(|(worker, down_ms)| Fault::Crash { worker, down_ms }),
        (w.clone(), PAUSE_MIN..PAUSE_MAX, any::<bool>(), any::<bool>()).prop_map(
            |(worker, for_ms, on_completion, until_reaped)| Fault::Pause {
                worker,
                for_ms,
                on_completion,
                until_reaped,
            }
        ),
        (w.clone(), PARTITION_MIN..PARTITION_MAX, 0..3usize).prop_map(|(worker, for_ms, d)| {
            Fault::Partition {
                worker,
                for_ms,
                direction: [Direction::Both, Direction::ToDb, Direction::FromDb][d],
            }
        }),
        (w.clone(), 1..30u32, 1_000..LOSS_MAX).prop_map(|(worker, p, for_ms)| Fault::LoseMessages {
            worker,
            probability: f64::from(p) / 100.0,
            for_ms,
        }),
        (w.clone(), DELAY_LATENCY_MIN..DELAY_LATENCY_MAX, 1_000..DELAY_MAX).prop_map(
            |(worker, latency_ms, for_ms)| {
                Fault::Delay {
                    worker,
                    latency_ms,
                    for_ms,
                }
            }
        ),
        (DB_DOWN_MIN..DB_DOWN_MAX).prop_map(|down_ms| Fault::DbRestart { down_ms }),
        (0..4usize, API_MIN..API_MAX).prop_map(|(m, for_ms)| Fault::Api {
            mode: [
                ApiMode::Slow,
                ApiMode::Hung,
                ApiMode::RateLimited,
                ApiMode::Failing
            ][m],
            for_ms,
        }),
        (w.clone(), -SKEW_MAX..SKEW_MAX).prop_map(|(worker, offset_ms)| Fault::Skew { worker, offset_ms }),
        (w, SIGTERM_DOWN_MIN..SIGTERM_DOWN_MAX)
            .prop_map(|(worker, down_ms)| Fault::Sigterm { worker, down_ms }),
    ];
    (
        proptest::collection::vec((0..chaos_ms.max(1), fault), 0..12),
        0..50u32,
    )
        .prop_map(|(faults, loss)| {
            let mut faults: Vec<TimedFault> = faults
                .into_iter()
                .map(|(at_ms, fault)| TimedFault { at_ms, fault })
                .collect();
            faults.sort_by_key(|f| f.at_ms);
            FaultPlan {
                faults,
                notification_loss_probability: f64::from(loss) / 100.0,
            }
        })
        .boxed()
}
