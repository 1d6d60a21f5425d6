//! The harness has teeth: every deliberately broken variant is caught within
//! a stated number of seeds of the standard scenario, while stuckless passes
//! those same seeds.

use stuckless_sim::{Invariant, SimBuilder, Variant};

/// The most seeds each variant may survive before the oracle catches it, and
/// the invariants that may catch it. The bounds are about three times the
/// seeds-to-detection measured when they were set (see the closing
/// note), so a weaker oracle fails this test.
fn bound(variant: Variant) -> (u64, &'static [Invariant]) {
    use Invariant::*;
    match variant {
        Variant::NoReaper => (3, &[Stuck, ExpiredLeaseNotReaped]),
        Variant::UnfencedComplete => (6, &[StaleWriteAccepted, CompletedTwice]),
        Variant::ClaimReadThenWrite => (3, &[TwoLiveLeases, IllegalTransition]),
        Variant::NoHeartbeat => (3, &[LiveLeaseReaped, StaleWriteAccepted]),
        Variant::ShutdownDropsJobs => (6, &[ShutdownLeftRunning, LiveLeaseReaped]),
        Variant::ReaperIgnoresCompletion => (
            12,
            &[
                IllegalTransition,
                LiveLeaseReaped,
                AttemptsExceeded,
                CompletedTwice,
            ],
        ),
        // A hung call is freed by any crash, SIGTERM (the deploy's too) or
        // lost lease on its worker, so only a hang nothing later disturbs
        // stays stuck: 16 of the first 100 seeds, the first at seed 4.
        Variant::NoTimeLimit => (15, &[Stuck]),
        Variant::KindBlindClaims => (3, &[FailedWithoutHandler]),
        Variant::PoisonRow => (3, &[DueJobStarved, Stuck]),
        // Needs a batch of two or more completions: 32 of the first 100
        // seeds, the first at seed 1.
        Variant::BatchAcksUnwritten => (6, &[IllegalTransition, CompletedTwice]),
        // Any resumable job interrupted after a checkpoint redoes a section:
        // caught on the first seed, 20 of the first 20 failing.
        Variant::ClaimWipesCheckpoint => (3, &[SectionRedone]),
        Variant::Stuckless => (0, &[]),
    }
}

/// Seeds run until the first violation; `None` if none within `limit`.
fn seeds_to_detection(variant: Variant, limit: u64) -> Option<(u64, Invariant, String)> {
    (0..limit).find_map(|seed| {
        let outcome = SimBuilder::new()
            .seed(seed)
            .variant(variant)
            .stop_on_violation(true)
            .run();
        outcome
            .violations
            .first()
            .map(|v| (seed + 1, v.invariant, outcome.failure_report()))
    })
}

#[test]
fn every_broken_variant_is_caught_within_its_bound() {
    let mut missed = Vec::new();
    let mut deepest = 0;
    for variant in Variant::BROKEN {
        let (limit, expected) = bound(variant);
        match seeds_to_detection(variant, limit) {
            Some((seeds, invariant, report)) => {
                println!(
                    "{:<26} caught after {seeds} seed(s) by {}",
                    variant.name(),
                    invariant.name()
                );
                assert!(
                    expected.contains(&invariant),
                    "{} caught by an unexpected invariant:\n{report}",
                    variant.name()
                );
                assert!(report.contains("replay: make sim SEED="), "{report}");
                deepest = deepest.max(seeds);
            }
            None => missed.push(variant.name()),
        }
    }
    assert!(
        missed.is_empty(),
        "variants not caught within their bound: {missed:?}"
    );
    // The same seeds pass with the real queue: the oracle did not cry wolf.
    for seed in 0..deepest {
        let outcome = SimBuilder::new().seed(seed).run();
        assert!(outcome.passed(), "{}", outcome.failure_report());
    }
}
