//! The harness has teeth in many seeds: every deliberately broken variant is
//! caught in at least a stated number of a fixed batch of standard seeds, by
//! the invariants its bug breaks, while stuckless passes the same seeds.

use stuckless_sim::catch::{measure, CatchRate};
use stuckless_sim::{Invariant, SimBuilder, Variant};

/// The standard seeds every variant runs here (the same for all, so a
/// variant's count is a fact of the world, not of the order of the test).
const SEEDS: u64 = 20;

/// The fewest of the [`SEEDS`] seeds each variant must be caught in, and the
/// invariants that may catch it first. The rates in the comments were
/// measured over the first 100 standard seeds when the bounds were set
/// (`cargo run --release -p stuckless-sim --example catch_rates -- 100 2`):
/// "first" before the swarm learnt armed pauses, bursts, focused faults and
/// one chance per API behaviour, "then" after, "now" since pauses can end
/// at a reap, quick jobs come in fan-outs and a fault kind that is on is
/// never all but off. Each bound sits just below the count measured on
/// these 20 seeds, so a weaker oracle, or a scenario that stops building a
/// bug's conditions, fails this test.
fn bound(variant: Variant) -> (usize, &'static [Invariant]) {
    use Invariant::*;
    match variant {
        // 98 of 100 (first 96, then 96); 20 of these 20.
        Variant::NoReaper => (19, &[Stuck, ExpiredLeaseNotReaped]),
        // Needs a zombie completion: a pause that starts as the worker
        // writes one (the pause armed on a completion) and outlasts the
        // lease and its reap. 53 of 100 (first 5, then 47–48: a quarter of
        // the seeds have no pause); 10 of 20.
        Variant::UnfencedComplete => (9, &[StaleWriteAccepted, CompletedTwice, IllegalTransition]),
        // 100 of 100 (first 100, then 100); 20 of 20. Its read ignores the
        // claim's kinds, so it can hand an old worker a job of the new kind too.
        Variant::ClaimReadThenWrite => (19, &[TwoLiveLeases, IllegalTransition, FailedWithoutHandler]),
        // 100 of 100 (first 100, then 100); 20 of 20.
        Variant::NoHeartbeat => (19, &[LiveLeaseReaped, StaleWriteAccepted, IllegalTransition]),
        // 95 of 100 (first 92, then 95–96); 18 of 20.
        Variant::ShutdownDropsJobs => (17, &[ShutdownLeftRunning, LiveLeaseReaped]),
        // Needs a completion, a heartbeat or a last attempt racing an
        // expired lease's reap: a pause that ends as a reap comes for its
        // lease. 62 of 100 (first 21, then 38–40); 10 of 20.
        Variant::ReaperIgnoresCompletion => (
            9,
            &[
                IllegalTransition,
                LiveLeaseReaped,
                AttemptsExceeded,
                CompletedTwice,
            ],
        ),
        // A hung call is freed by any crash, SIGTERM (the deploy's too) or
        // lost lease on its worker, so only a hang after the deploy that
        // nothing later disturbs stays stuck: 60 of 100 (first 19, before
        // the API's behaviours each had their own chance, then 54–55); 15 of 20.
        Variant::NoTimeLimit => (14, &[Stuck]),
        // 89 of 100 (first 99, then 88: bursts that all come before the
        // deploy enqueue no job of the new kind); 19 of 20.
        Variant::KindBlindClaims => (18, &[FailedWithoutHandler]),
        // 100 of 100 (first 100, then 100); 20 of 20.
        Variant::PoisonRow => (19, &[DueJobStarved, Stuck]),
        // Needs a batch of two or more completions, which the quick jobs
        // of a fan-out make: 62 of 100 (first 15, then 24–26); 15 of 20.
        Variant::BatchAcksUnwritten => (14, &[IllegalTransition, CompletedTwice]),
        // 100 of 100 (first 100, then 100); 20 of 20.
        Variant::ClaimWipesCheckpoint => (19, &[SectionRedone]),
        Variant::Stuckless => (0, &[]),
    }
}

fn rate(variant: Variant, seeds: &[u64]) -> CatchRate {
    measure(variant, seeds, 1, |seed| SimBuilder::new().seed(seed))
}

#[test]
fn every_broken_variant_is_caught_in_at_least_its_share_of_seeds() {
    let seeds: Vec<u64> = (0..SEEDS).collect();
    let mut short = Vec::new();
    for variant in Variant::BROKEN {
        let (least, expected) = bound(variant);
        let caught = rate(variant, &seeds);
        println!("{}", caught.line());
        for invariant in caught.first_by.keys() {
            assert!(
                expected.contains(invariant),
                "{} first caught by an unexpected invariant {}",
                variant.name(),
                invariant.name()
            );
        }
        if caught.caught.len() < least {
            short.push(format!(
                "{}: {} of {SEEDS} (bound {least})",
                variant.name(),
                caught.caught.len()
            ));
        }
    }
    assert!(short.is_empty(), "variants caught in too few seeds: {short:?}");
    // The same seeds pass with the real queue: the oracle did not cry wolf.
    let stuckless = rate(Variant::Stuckless, &seeds);
    assert!(
        stuckless.caught.is_empty(),
        "stuckless failed seeds {:?}",
        stuckless.caught
    );
}

#[test]
fn a_caught_variant_reports_how_to_replay_it() {
    let outcome = SimBuilder::new()
        .seed(0)
        .variant(Variant::NoReaper)
        .stop_on_violation(true)
        .run();
    let report = outcome.failure_report();
    assert!(!outcome.passed());
    assert!(
        report.contains("replay: make sim SEED=0 SIM_ARGS=\"--variant no_reaper\""),
        "{report}"
    );
}
