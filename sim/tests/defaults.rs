//! The simulator runs the workers the binary ships: its worker builder is
//! `Worker::builder(id, ..)` plus exactly the documented changes (the seed
//! of the worker's randomness), compared with `==` on core's settings; the
//! numbers it judges by are those settings; and a run ends before any
//! finished job is old enough to be pruned.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::Storage;
use stuckless_core::{MemStore, TokioClock, Worker, DEFAULT_TIMEOUT};
use stuckless_sim::config::worker_name;
use stuckless_sim::workers::{self, Timing};
use stuckless_sim::{SimBuilder, Variant};

fn store() -> Arc<dyn Storage> {
    Arc::new(MemStore::new(TokioClock::system()))
}

/// The shipped builder for worker `index` of a world seeded `seed`, with
/// the one change the simulator documents.
fn shipped(seed: u64, index: usize) -> stuckless_core::WorkerBuilder {
    Worker::builder(worker_name(index), store()).rng_seed(workers::rng_seed(seed, index))
}

#[test]
fn the_simulators_workers_are_the_shipped_workers_plus_their_seed() {
    for scenario in [SimBuilder::new(), SimBuilder::small()] {
        for seed in [0, 7, 13] {
            for index in 0..4 {
                let sim = scenario.clone().seed(seed).worker_builder(index, store());
                assert_eq!(sim.settings(), shipped(seed, index).settings());
            }
        }
    }
    // The comparison sees every setting: the one documented change is a change,
    let sim = SimBuilder::new().seed(7).worker_builder(0, store());
    assert_ne!(sim.settings(), Worker::builder("w1", store()).settings());
    // and a restated default that differs (the simulator's old reap interval) is caught.
    let old = shipped(7, 0).reap_interval(Duration::from_secs(15));
    assert_ne!(sim.settings(), old.settings());
}

#[test]
fn only_the_no_time_limit_variant_changes_a_worker_setting() {
    for variant in Variant::BROKEN {
        let sim = SimBuilder::new()
            .seed(3)
            .variant(variant)
            .worker_builder(1, store());
        let expected = match variant {
            Variant::NoTimeLimit => shipped(3, 1).default_timeout(None),
            _ => shipped(3, 1),
        };
        assert_eq!(sim.settings(), expected.settings(), "{}", variant.name());
    }
}

#[test]
fn the_time_limit_is_the_shipped_15_minutes() {
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(15 * 60));
    for scenario in [
        SimBuilder::new(),
        SimBuilder::small(),
        SimBuilder::seed_document(),
    ] {
        assert_eq!(scenario.timing().default_timeout, Some(DEFAULT_TIMEOUT));
        // Setting the limit again changes nothing: it is what the workers run.
        let sim = scenario.worker_builder(0, store());
        let again = scenario
            .worker_builder(0, store())
            .default_timeout(Some(DEFAULT_TIMEOUT));
        assert_eq!(sim.settings(), again.settings());
    }
}

#[test]
fn the_numbers_the_checkers_use_are_the_workers_settings() {
    let builder = || shipped(0, 0);
    let shipped_timing = Timing::shipped();
    assert_eq!(shipped_timing.confirm(&builder(), builder()), Ok(()));
    // The simulator's old numbers are refused: its 150 s kind timeout and
    // its own reap and poll intervals.
    let old = Timing {
        default_timeout: Some(Duration::from_secs(150)),
        ..shipped_timing
    };
    assert!(old.confirm(&builder(), builder()).is_err());
    let old = Timing {
        reap_interval: Duration::from_secs(15),
        poll_interval: Duration::from_secs(30),
        ..shipped_timing
    };
    let refusal = old.confirm(&builder(), builder()).unwrap_err();
    assert!(refusal.contains("update Timing::shipped"), "{refusal}");
    // A scenario's overrides are part of what the workers run.
    let seed_document = SimBuilder::seed_document();
    let timing = seed_document.timing();
    assert_eq!(timing.poll_interval, Duration::from_secs(1));
    assert_eq!(timing.lease, Duration::from_secs(300));
    let sim = seed_document.worker_builder(0, store());
    let rebuilt = workers::builder("w1", store(), workers::rng_seed(0, 0), &Default::default());
    assert_eq!(timing.confirm(&sim, rebuilt), Ok(()));
}

#[test]
fn the_liveness_bound_follows_the_worker_settings_and_fits_a_hung_call() {
    let standard = SimBuilder::new();
    let t = standard.timing();
    let bound = standard.liveness_bound();
    // A hung call holds its job for the whole time limit, after a lease and
    // a reap interval and a poll at most.
    assert!(bound > t.lease + t.reap_interval + t.poll_interval + DEFAULT_TIMEOUT);
    // Each worker setting moves the bound by exactly its change.
    let slower_poll = standard
        .clone()
        .poll_interval(t.poll_interval + Duration::from_secs(10));
    assert_eq!(slower_poll.liveness_bound(), bound + Duration::from_secs(10));
    let longer_lease = standard.clone().lease(t.lease + Duration::from_secs(5));
    assert_eq!(longer_lease.liveness_bound(), bound + Duration::from_secs(5));
    // Chaos then liveness: the 10-minute chaos phase is shorter than the
    // limit, and the bound gives a call hung at the heal its 15 minutes.
    assert_eq!(standard.longest_run(), Duration::from_secs(600) + bound);
    assert!(bound - DEFAULT_TIMEOUT >= Duration::from_secs(5 * 60));
}

#[test]
fn every_run_ends_before_a_finished_job_can_be_pruned() {
    let retention = Timing::shipped()
        .shortest_retention()
        .expect("shipped workers prune");
    assert_eq!(retention, Duration::from_secs(86_400));
    for scenario in [
        SimBuilder::new(),
        SimBuilder::small(),
        SimBuilder::seed_document(),
    ] {
        assert!(scenario.longest_run() < retention);
    }
    // The guard has teeth: a world that could outlive the retention refuses to run.
    let too_long = SimBuilder::small().chaos(retention).faults(false);
    let refused = std::panic::catch_unwind(|| too_long.run());
    assert!(
        refused.is_err(),
        "a run that may outlive the retention must not start"
    );
}
