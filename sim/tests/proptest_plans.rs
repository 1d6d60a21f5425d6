//! proptest generates fault plans; any failing plan shrinks to a minimal one
//! (fewer, shorter faults) before it is reported.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use stuckless_sim::plan::strategy;
use stuckless_sim::{SimBuilder, Variant};

const WORKERS: usize = 3;
const CHAOS: Duration = Duration::from_secs(180);

fn run(plan: stuckless_sim::FaultPlan, world: SimBuilder) -> Result<(), TestCaseError> {
    let outcome = world.seed(9).plan(plan).run();
    prop_assert!(outcome.passed(), "{}", outcome.failure_report());
    Ok(())
}

proptest! {
    // A fixed proptest seed: CI explores the same plans every time; change
    // it (or raise `cases`) to explore others.
    #![proptest_config(Config { cases: 48, failure_persistence: None, rng_seed: RngSeed::Fixed(0x5eed), ..Config::default() })]

    #[test]
    fn stuckless_survives_generated_plans(plan in strategy(WORKERS, CHAOS)) {
        run(plan, SimBuilder::small())?;
    }
}

/// Shrinking has teeth too: against a broken variant, the failing plan
/// proptest reports is minimal, a handful of faults at most.
#[test]
fn a_failing_plan_shrinks_to_a_few_faults() {
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(7),
        ..Config::default()
    });
    // Without the rolling deploy, whose own SIGTERMs would catch the broken
    // shutdown with no fault at all: the plan must bring the SIGTERM.
    let world = SimBuilder::small()
        .variant(Variant::ShutdownDropsJobs)
        .rolling_deploy(false);
    let result = runner.run(&strategy(WORKERS, CHAOS), |plan| run(plan, world.clone()));
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, plan)) => {
            println!(
                "minimal plan: {}\n{reason}",
                serde_json::to_string(&plan).unwrap()
            );
            assert!(plan.faults.len() <= 3, "not shrunk: {plan:?}");
            assert!(
                plan.faults.iter().any(|f| f.fault.kind() == "sigterm"),
                "{plan:?}"
            );
        }
        other => panic!("the broken shutdown survived 32 generated plans: {other:?}"),
    }
}
