//! A seed runs the same alone and after other seeds in the same process.
//!
//! Alone in its file on purpose: tests of one file run on parallel threads
//! of one process and would spawn tokio tasks while this one runs, which is
//! exactly the interference it checks is gone for a single thread.

use stuckless_sim::batch::{self, Flow};
use stuckless_sim::SimBuilder;

/// Guards the determinism bug `batch::align_task_ids` fixes: seed 240 ran
/// 1528 storage operations alone and 1544 after seeds 201–239 in the same
/// process, because tokio's process-wide task ids decided the order a
/// crashed host's tasks were shut down in.
#[test]
fn a_seed_runs_the_same_alone_and_after_other_seeds() {
    let one = |seeds: &[u64]| {
        let mut last = None;
        batch::run(
            seeds,
            1,
            |seed| SimBuilder::new().seed(seed),
            |outcome| {
                last = Some((outcome.seed, outcome.ops, outcome.trace_hash));
                Flow::Continue
            },
        );
        last.expect("an outcome")
    };
    let alone = one(&[240]);
    let after_others = one(&(201..=240).collect::<Vec<_>>());
    assert_eq!(alone, after_others);
}
