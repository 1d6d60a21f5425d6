//! The seed document, reproduced: 1 s polling, a 5-minute lock, a 60 s
//! heartbeat, no recovery, one worker crash. A job hangs in RUNNING until the
//! run ends. The same run with stuckless's shipped workers recovers it.

use std::time::Duration;

use stuckless_sim::{Invariant, SimBuilder, Variant};

#[test]
fn the_seed_documents_design_leaves_a_job_stuck_and_stuckless_recovers_it() {
    let broken = SimBuilder::seed_document().seed(1).keep_trace(true).run();
    println!("{}", broken.failure_report());
    let stuck: Vec<_> = broken
        .violations
        .iter()
        .filter(|v| v.invariant == Invariant::Stuck)
        .collect();
    assert!(
        !stuck.is_empty(),
        "the crash must leave a job stuck:\n{}",
        broken.failure_report()
    );
    let job = stuck[0].job.expect("a stuck job");
    assert!(stuck[0].detail.starts_with("running"), "{}", stuck[0].detail);
    // Stuck until the very end: the run lasted the whole liveness bound.
    assert!(broken.simulated > Duration::from_secs(600));
    assert!(broken
        .violations
        .iter()
        .any(|v| v.invariant == Invariant::ExpiredLeaseNotReaped && v.job == Some(job)));
    assert!(broken
        .failure_report()
        .contains("replay: make sim SEED=1 SIM_ARGS=\"--scenario seed_document --variant no_reaper\""));

    let fixed = SimBuilder::seed_document()
        .seed(1)
        .variant(Variant::Stuckless)
        .shipped_workers()
        .keep_trace(true);
    let reap_interval = fixed.timing().reap_interval;
    let fixed = fixed.run();
    assert!(fixed.passed(), "{}", fixed.failure_report());
    assert_eq!(fixed.by_status.get("succeeded").copied(), Some(fixed.jobs));
    let trace = fixed.trace.as_deref().unwrap();
    // The job the broken run left stuck was reaped and run again.
    assert!(
        trace.contains(&format!("job {job}: w1 reap e1 (holder w1) -> queued")),
        "{trace}"
    );
    // The crashed worker's job came back within the reap interval (+ slack)
    // of its lease's expiry.
    let worst = fixed.expired_running.iter().max().copied().unwrap_or_default();
    assert!(
        worst <= reap_interval + Duration::from_secs(3),
        "expired for {worst:?}"
    );
}
