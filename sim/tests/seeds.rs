//! A batch of seeds under every fault kind: stuckless must never leave a job
//! stuck, lose one, or accept a stale or duplicate completion.

use stuckless_sim::{SimBuilder, Summary};

/// Seeds of the small scenario run by `cargo test` (the release runner does
/// thousands of the standard one).
const SEEDS: u64 = 1000;

#[test]
fn stuckless_passes_a_batch_of_seeds_with_every_fault_kind() {
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for seed in 0..SEEDS {
        let outcome = SimBuilder::small().seed(seed).run();
        if !outcome.passed() {
            failures.push(outcome.failure_report());
        }
        summary.add(&outcome);
    }
    println!("{}", summary.render(None));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The batch must actually exercise the faults and the queue.
    for (kind, n) in &summary.faults {
        assert!(*n > 0, "no {kind} fault injected in {SEEDS} seeds");
    }
    assert!(summary.jobs >= SEEDS * 40);
    assert_eq!(summary.classes.get("ok").copied(), Some(summary.jobs));
}

#[test]
fn the_standard_scenario_passes_a_few_seeds() {
    let mut summary = Summary::default();
    for seed in 1000..1024 {
        let outcome = SimBuilder::new().seed(seed).run();
        assert!(outcome.passed(), "{}", outcome.failure_report());
        // Every enqueue lands once; a keyless insert retried after a lost
        // reply may add a job, never remove one.
        assert!(outcome.jobs >= 200);
        assert!(outcome.simulated.as_secs() >= 600);
        summary.add(&outcome);
    }
    println!("{}", summary.render(None));
}
