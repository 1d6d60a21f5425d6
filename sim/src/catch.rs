//! Catch rates: in how many seeds of a batch the checkers catch a broken
//! variant. A variant caught in few seeds says the standard scenario rarely
//! builds the conditions its bug needs, so a real bug of that shape would
//! slip through most runs of `make sim`.

use std::collections::BTreeMap;

use crate::batch::{self, Flow};
use crate::check::Invariant;
use crate::config::SimBuilder;
use crate::variants::Variant;

/// One variant's result over a batch of seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct CatchRate {
    /// The variant run.
    pub variant: Variant,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with at least one violation, ascending.
    pub caught: Vec<u64>,
    /// Per invariant, the seeds whose first violation it was.
    pub first_by: BTreeMap<Invariant, u64>,
}

impl CatchRate {
    /// The share of seeds caught, from 0 to 1.
    pub fn rate(&self) -> f64 {
        self.caught.len() as f64 / (self.seeds.max(1)) as f64
    }

    /// One line of a table: name, caught/seeds, rate, first invariants.
    pub fn line(&self) -> String {
        let by: Vec<String> = self
            .first_by
            .iter()
            .map(|(i, n)| format!("{} {n}", i.name()))
            .collect();
        format!(
            "{:<26} {:>4}/{:<4} {:>5.1} %  {}",
            self.variant.name(),
            self.caught.len(),
            self.seeds,
            self.rate() * 100.0,
            by.join(", ")
        )
    }
}

/// Runs `variant` on `seeds` of the world `make(seed)` makes, on `threads`
/// threads, each run ending at its first violation, and counts the seeds
/// caught.
pub fn measure<F>(variant: Variant, seeds: &[u64], threads: usize, make: F) -> CatchRate
where
    F: Fn(u64) -> SimBuilder + Sync,
{
    let mut rate = CatchRate {
        variant,
        seeds: seeds.len() as u64,
        caught: Vec::new(),
        first_by: BTreeMap::new(),
    };
    batch::run(
        seeds,
        threads,
        |seed| make(seed).variant(variant).stop_on_violation(true),
        |outcome| {
            if let Some(first) = outcome.violations.first() {
                rate.caught.push(outcome.seed);
                *rate.first_by.entry(first.invariant).or_insert(0) += 1;
            } else if outcome.error.is_some() {
                rate.caught.push(outcome.seed);
            }
            Flow::Continue
        },
    );
    rate
}
