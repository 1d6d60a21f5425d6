//! Claiming ahead (`prefetch`) under every fault kind: buffered jobs are
//! heartbeated while they wait for a slot and released at shutdown, so the
//! invariants hold exactly as without it. The shipped default is 0; this
//! runs the setting users raise for short jobs.

use stuckless_sim::{SimBuilder, Summary};

#[test]
fn workers_that_claim_ahead_pass_a_batch_of_seeds() {
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for seed in 0..200 {
        // Fewer slots than due jobs, so buffers fill and wait.
        let outcome = SimBuilder::small().concurrency(2).prefetch(4).seed(seed).run();
        if !outcome.passed() {
            failures.push(outcome.failure_report());
        }
        summary.add(&outcome);
    }
    println!("{}", summary.render(None));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.classes.get("ok").copied(), Some(summary.jobs));
}

#[test]
fn the_standard_scenario_with_a_buffer_passes_a_few_seeds() {
    for seed in 2000..2012 {
        let outcome = SimBuilder::new().prefetch(10).seed(seed).run();
        assert!(outcome.passed(), "{}", outcome.failure_report());
    }
}
