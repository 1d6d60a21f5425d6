//! The OpenAI stand-in's hung mode under the shipped defaults: a call that
//! never answers, while heartbeats keep the lease alive, is cancelled at the
//! default 15-minute limit, fails retryably with "timed out after 15m", is
//! retried, and the job ends dead after its attempts — or succeeds once the
//! API answers again. Nothing stays running.

use std::collections::BTreeMap;
use std::time::Duration;

use stuckless_core::{limits, DEFAULT_TIMEOUT};
use stuckless_sim::api::ApiMode;
use stuckless_sim::{Fault, FaultPlan, SimBuilder, TimedFault};
use stuckless_timeline::Outcome;

/// The API hangs for the whole chaos phase: long enough for a job enqueued
/// in its first half hour to spend all 5 attempts of 15 minutes on it.
const HUNG: Duration = Duration::from_secs(2 * 3600);

/// Seed 3 enqueues two jobs early enough to die and two late enough to
/// outlast the hang.
const SEED: u64 = 3;

#[test]
fn a_hung_api_call_times_out_at_the_default_limit_is_retried_and_the_job_ends() {
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(15 * 60));
    let world = SimBuilder::small()
        .seed(SEED)
        .workers(1)
        .jobs(4)
        .chaos(HUNG)
        .rolling_deploy(false)
        .poison_row(false)
        .plan(FaultPlan {
            faults: vec![TimedFault {
                at_ms: 0,
                fault: Fault::Api {
                    mode: ApiMode::Hung,
                    for_ms: HUNG.as_millis() as u64,
                },
            }],
            notification_loss_probability: 0.0,
        })
        .keep_timeline(true);
    assert_eq!(world.timing().default_timeout, Some(DEFAULT_TIMEOUT));
    let outcome = world.run();
    assert!(outcome.passed(), "{}", outcome.failure_report());
    let timeline = outcome.timeline.as_ref().expect("timeline kept");
    let heal = timeline.start + HUNG.as_micros() as i64;
    let limit = DEFAULT_TIMEOUT.as_micros() as i64;
    // Per job: its attempts' outcomes, in order.
    let mut jobs: BTreeMap<i64, Vec<Outcome>> = BTreeMap::new();
    for a in &timeline.attempts {
        jobs.entry(a.job_id).or_default().push(a.outcome);
        match a.outcome {
            Outcome::Retried | Outcome::Dead => {
                let note = a.note.as_deref().unwrap_or_default();
                assert!(
                    note.starts_with("timed out after 15m"),
                    "job {}: {note}",
                    a.job_id
                );
                let ran = a.end - a.start;
                assert!(
                    (limit..limit + 2_000_000).contains(&ran),
                    "job {} e{}: cancelled after {ran} µs, not at the limit",
                    a.job_id,
                    a.epoch
                );
            }
            Outcome::Succeeded => assert!(a.start >= heal, "the API answered while hung"),
            other => panic!("job {} e{} ended {other:?}", a.job_id, a.epoch),
        }
    }
    let dead = jobs.values().filter(|o| o.last() == Some(&Outcome::Dead)).count();
    let succeeded = jobs
        .values()
        .filter(|o| o.last() == Some(&Outcome::Succeeded))
        .count();
    assert_eq!(jobs.len(), 4);
    assert_eq!(dead + succeeded, 4, "{jobs:?}");
    assert!(dead >= 1 && succeeded >= 1, "both endings shown: {jobs:?}");
    for outcomes in jobs.values().filter(|o| o.last() == Some(&Outcome::Dead)) {
        // Dead only after every attempt it had timed out.
        assert_eq!(
            outcomes.len(),
            limits::DEFAULT_MAX_ATTEMPTS as usize,
            "{outcomes:?}"
        );
    }
    assert_eq!(outcome.by_status.get("dead").copied(), Some(dead as u64));
}
