//! The rolling deploy: a release adds a job kind. Every worker starts on the
//! old release, which has no handler for [`NEW_KIND`]. At a seeded moment of
//! the chaos phase the web app, deployed first, starts enqueueing jobs of the
//! new kind, and the workers are replaced one at a time: each is stopped with
//! SIGTERM, drains, and comes back on the new release. Until a new worker is
//! up, jobs of the new kind must wait in `queued`; an old worker that claims
//! one can only fail it.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::workload::KIND;

/// The kind the new release adds.
pub const NEW_KIND: &str = "summary";

/// Which release a worker host runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// Before the deploy: handlers for [`KIND`] only.
    #[default]
    Old,
    /// After it: handlers for [`KIND`] and [`NEW_KIND`].
    New,
}

impl Release {
    /// The kinds its workers have handlers for.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Release::Old => &[KIND],
            Release::New => &[KIND, NEW_KIND],
        }
    }
}

/// When the deploy starts and when each worker is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollingDeploy {
    /// From the start of the run: the app enqueues [`NEW_KIND`] from here on,
    /// and the first worker is replaced.
    pub start: Duration,
    /// Worker index and when it is replaced, in order.
    pub upgrades: Vec<(Duration, usize)>,
}

impl RollingDeploy {
    /// The deploy a seed stands for: it starts between 20 % and 40 % of the
    /// chaos phase and replaces the workers in a seeded order, evenly spread
    /// over the next 40 %, so every worker is on the new release well before
    /// the heal and liveness is judged on one release only.
    pub fn from_seed(seed: u64, workers: usize, chaos: Duration) -> RollingDeploy {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4445_504c_4f59);
        let chaos_ms = chaos.as_millis() as u64;
        let start = Duration::from_millis(rng.random_range(chaos_ms / 5..=chaos_ms * 2 / 5));
        let mut order: Vec<usize> = (0..workers).collect();
        order.shuffle(&mut rng);
        let spacing = Duration::from_millis(chaos_ms * 2 / 5 / workers.max(1) as u64);
        let upgrades = order
            .into_iter()
            .enumerate()
            .map(|(n, worker)| (start + spacing * n as u32, worker))
            .collect();
        RollingDeploy { start, upgrades }
    }
}
