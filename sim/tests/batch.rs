//! A batch on many threads, or split over many machines, gives exactly what
//! one thread gives: the same outcomes in the same order and the same summary.

use stuckless_sim::batch::{self, Flow, Shard};
use stuckless_sim::{SimBuilder, Summary, Variant};

/// The tests of this file run one at a time: worlds running on parallel
/// test threads would draw tokio task ids from the one process-wide counter
/// and could change each other's runs (see `batch::align_task_ids`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn seeds() -> Vec<u64> {
    (0..12).collect()
}

/// Runs `seeds` on `threads`, with one broken variant so some seeds fail;
/// returns (seed, trace hash, passed) in the order handed out, and the summary.
fn run(seeds: &[u64], threads: usize) -> (Vec<(u64, u64, bool)>, Summary) {
    let mut seen = Vec::new();
    let summary = batch::run(
        seeds,
        threads,
        |seed| SimBuilder::small().variant(Variant::NoReaper).seed(seed),
        |outcome| {
            seen.push((outcome.seed, outcome.trace_hash, outcome.passed()));
            Flow::Continue
        },
    );
    (seen, summary)
}

#[test]
fn threads_hand_outcomes_back_in_seed_order() {
    let _serial = one_at_a_time();
    let (one, one_summary) = run(&seeds(), 1);
    let (three, three_summary) = run(&seeds(), 3);
    let order = |seen: &[(u64, u64, bool)]| seen.iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(order(&one), seeds());
    assert_eq!(order(&three), seeds());
    assert_eq!((one_summary.seeds, three_summary.seeds), (12, 12));
    assert!(
        one.iter().any(|s| !s.2),
        "the variant fails some seeds, so failures are handed back too"
    );
}

#[test]
fn shards_merged_are_the_whole_batch() {
    let _serial = one_at_a_time();
    // One thread: worlds on several threads share tokio's task-id counter
    // (see `batch::align_task_ids`), so only one thread is exactly repeatable.
    let (_, whole) = run(&seeds(), 1);
    let mut merged = Summary::default();
    let mut covered: Vec<u64> = Vec::new();
    for index in [2, 1, 3] {
        let shard = Shard { index, count: 3 };
        let part = shard.of(&seeds());
        covered.extend(&part);
        merged.merge(&run(&part, 1).1);
    }
    covered.sort_unstable();
    assert_eq!(covered, seeds(), "every seed in exactly one shard");
    assert_eq!(merged.render(None), whole.render(None));
    assert_eq!(merged.failed_seeds, whole.failed_seeds);
}

#[test]
fn a_stop_ends_the_batch_at_that_outcome() {
    let _serial = one_at_a_time();
    let mut handed = 0;
    let summary = batch::run(
        &seeds(),
        3,
        |seed| SimBuilder::small().seed(seed),
        |_| {
            handed += 1;
            if handed == 4 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    );
    assert_eq!((handed, summary.seeds), (4, 4));
}

#[test]
fn shard_flags_are_checked() {
    let _serial = one_at_a_time();
    assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
    for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
        assert!(Shard::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Shard::ALL.of(&seeds()), seeds());
}
