//! The standard scenario's own never-stuck edges, each shown twice on one
//! seed: stuckless passes it, and the old behaviour (a broken variant) fails
//! it for the reason the edge exists.

use stuckless_sim::{Invariant, SimBuilder, Variant};

/// A standard seed whose rolling deploy leaves old workers up while jobs of
/// the new kind are due, and whose poison row lands mid-run.
const SEED: u64 = 0;

#[test]
fn in_a_rolling_deploy_jobs_of_the_new_kind_wait_for_a_new_worker() {
    let stuckless = SimBuilder::new().seed(SEED).keep_trace(true).run();
    assert!(stuckless.passed(), "{}", stuckless.failure_report());
    assert_eq!(stuckless.classes.get("ok").copied(), Some(stuckless.jobs));
    let trace = stuckless.trace.as_deref().unwrap();
    for worker in ["w1", "w2", "w3", "w4"] {
        let deploy = format!("DEPLOY {worker} -> new release (kinds report, summary)");
        assert!(trace.contains(&deploy), "{worker} was not deployed");
    }

    // The same seed with the old, kind-blind claim: an old worker takes a
    // job of the new kind and can only kill it.
    let blind = SimBuilder::new()
        .seed(SEED)
        .variant(Variant::KindBlindClaims)
        .run();
    let killed: Vec<_> = blind
        .violations
        .iter()
        .filter(|v| v.invariant == Invariant::FailedWithoutHandler)
        .collect();
    assert!(!killed.is_empty(), "{}", blind.failure_report());
    for v in killed {
        assert!(
            v.detail.contains(r#"no handler for kind "summary""#),
            "{}",
            v.detail
        );
        assert!(v.detail.ends_with("-> Dead"), "{}", v.detail);
    }
}

#[test]
fn a_poison_row_is_buried_and_every_other_job_runs() {
    let stuckless = SimBuilder::new().seed(SEED).keep_trace(true).run();
    assert!(stuckless.passed(), "{}", stuckless.failure_report());
    let trace = stuckless.trace.as_deref().unwrap();
    let line = |needle: &str| {
        trace
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the trace"))
            .to_owned()
    };
    let written = line("producer raw write run_at=-9223372036854775808 µs (unreadable)");
    let buried = line("store buried it -> dead (unreadable row: run_at -9223372036854775808");
    let job = |l: &str| l.split(':').next().unwrap().split(' ').nth(2).unwrap().to_owned();
    assert_eq!(job(&written), job(&buried), "{written}\n{buried}");
    // Nothing else died for it: every job ended ok, the buried one included.
    assert_eq!(stuckless.classes.get("ok").copied(), Some(stuckless.jobs));

    // The old claim, which failed while the row was due, stalls the queue.
    let stalled = SimBuilder::new()
        .seed(SEED)
        .variant(Variant::PoisonRow)
        .keep_trace(true)
        .run();
    assert!(!stalled.passed());
    let starved = stalled
        .violations
        .iter()
        .filter(|v| matches!(v.invariant, Invariant::DueJobStarved | Invariant::Stuck))
        .count();
    assert!(
        starved > 1,
        "more than the poison job waits: {}",
        stalled.failure_report()
    );
    let trace = stalled.trace.as_deref().unwrap();
    assert!(trace.contains("job_claim failed (3 in a row): storage error: cannot convert infinity to bigint"));
    assert!(!trace.contains("store buried it"));
}
