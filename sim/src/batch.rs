//! Many seeds on every core, and many machines on one batch: the results
//! are those of a single-threaded run of the same seeds, in the same order,
//! whatever the thread count or the shards.
//!
//! Each seed is its own world (turmoil keeps its simulation per thread), so
//! seeds run in parallel without sharing anything; the outcomes are handed
//! back in seed order, so what is printed and summed never depends on which
//! thread finished first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::config::SimBuilder;
use crate::outcome::RunOutcome;
use crate::report::Summary;

/// One machine's part of a batch: seeds whose position in the batch is
/// `index - 1` modulo `count` (`--shard 2/3` takes positions 1, 4, 7, …).
/// Interleaved rather than contiguous so every shard gets seeds of every
/// kind and finishes at about the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number.
    pub index: u64,
    /// Shards in all.
    pub count: u64,
}

impl Shard {
    /// The whole batch.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `k/n` with 1 ≤ k ≤ n.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard {text:?}: expected k/n with 1 <= k <= n, e.g. 2/4");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// This shard's seeds of `seeds`, in order.
    pub fn of(&self, seeds: &[u64]) -> Vec<u64> {
        seeds
            .iter()
            .enumerate()
            .filter(|(position, _)| *position as u64 % self.count == self.index - 1)
            .map(|(_, seed)| *seed)
            .collect()
    }
}

/// Runs `seeds` on `threads` threads, each seed's world from `make(seed)`,
/// and hands every outcome to `each` in seed order, as it becomes the next
/// one due. Returns the summary of all of them.
pub fn run<F>(seeds: &[u64], threads: usize, make: F, mut each: impl FnMut(&RunOutcome) -> Flow) -> Summary
where
    F: Fn(u64) -> SimBuilder + Sync,
{
    let threads = threads.clamp(1, seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut summary = Summary::default();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, RunOutcome)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, make) = (&next, &stop, &make);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let position = next.fetch_add(1, Ordering::SeqCst);
                let Some(seed) = seeds.get(position) else {
                    return;
                };
                align_task_ids();
                if tx.send((position, make(*seed).run())).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        // Outcomes that finished early wait here until every earlier one is in.
        let mut waiting: std::collections::BTreeMap<usize, RunOutcome> = std::collections::BTreeMap::new();
        let mut due = 0;
        for (position, outcome) in rx {
            waiting.insert(position, outcome);
            while let Some(outcome) = waiting.remove(&due) {
                due += 1;
                summary.add(&outcome);
                if each(&outcome) == Flow::Stop {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    summary
}

/// Advances tokio's process-wide task-id counter to a multiple of 64.
///
/// Guards a determinism bug: a current-thread runtime keeps its tasks in
/// four lists chosen by `task id % 4` and, when turmoil crashes a host, shuts
/// them down list by list, so the order a crashed host's connections close
/// in (which the simulated network shows) depended on how many tasks earlier
/// worlds in the same process had spawned. Seed 240 ran 1528 storage
/// operations alone and 1544 after seeds 200–239. Starting every world at an
/// aligned id makes its run independent of what ran before it on one
/// thread; worlds on several threads still draw ids from the one counter at
/// the same time, which is why `--threads` defaults to 1.
pub fn align_task_ids() {
    const ALIGN: u64 = 64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a scratch tokio runtime");
    runtime.block_on(async {
        loop {
            let task = tokio::spawn(async {});
            let id: u64 = task
                .id()
                .to_string()
                .parse()
                .expect("tokio prints task ids as numbers");
            let _ = task.await;
            if (id + 1).is_multiple_of(ALIGN) {
                return;
            }
        }
    });
}

/// Whether a batch goes on after an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next seed.
    Continue,
    /// Stop: no further outcome is summed or handed out.
    Stop,
}
