//! # stuckless-testkit
//!
//! A test kit any [`Storage`](stuckless_core::driver::Storage) can run, so a
//! storage is held to the same specification as the in-memory model
//! ([`MemStore`](stuckless_core::MemStore)) and Postgres.
//!
//! - **Conformance cases** ([`cases`]): scenarios written once against
//!   `&dyn Storage` and a pinned [`ManualClock`](stuckless_core::ManualClock),
//!   each asserting the spec's exact answers, timestamps to the microsecond.
//!   They are grouped by noun (`job`, `worker`, `queue`, `storage`).
//! - **Random operation sequences** ([`ops`]): one proptest generator of
//!   steps over every operation, with valid and invalid input, fresh, stale
//!   and made-up leases, and time steps, for differential and state-machine
//!   tests.
//!
//! ## Running the conformance cases on your storage
//!
//! Write a factory: given a [`Setup`] (the case's name, the clock the store
//! must judge time by, and whether it logs happy-path events), it returns a
//! fresh, empty store in a [`Fixture`], or `None` to skip the case. Then
//! either generate one test per case, so each failure is reported on its
//! own:
//!
//! ```
//! use stuckless_core::MemStore;
//! use stuckless_testkit::{Fixture, Setup};
//!
//! stuckless_testkit::conformance_tests!(mem, |setup: Setup| async move {
//!     let store = MemStore::new(setup.clock).with_happy_path_events(setup.happy_path_events);
//!     Some(Fixture::new(store))
//! });
//! # fn main() {}
//! ```
//!
//! or run them all from one test with [`exercise`], which panics naming
//! every case that failed:
//!
//! ```
//! use stuckless_core::MemStore;
//! use stuckless_testkit::{Fixture, Setup};
//!
//! let ran = stuckless_testkit::block_on(stuckless_testkit::exercise(|setup: Setup| async move {
//!     let store = MemStore::new(setup.clock).with_happy_path_events(setup.happy_path_events);
//!     Some(Fixture::new(store))
//! }));
//! assert_eq!(ran, stuckless_testkit::cases().len());
//! ```
//!
//! A store backed by something that must outlive the case (a test database)
//! keeps it with [`Fixture::keep_alive`]. To drive one case yourself (in a
//! simulated world of its own, say), take it from [`cases`] or [`case`] and
//! call [`Case::run`] with your store and the clock it judges time by.

#![deny(missing_docs)]

mod case;
mod jobs;
pub mod ops;
mod queues;
mod workers;

pub use case::{
    assert_all_listed, block_on, case, cases, exercise, manual_clock, mem_store, run_case, Case, Fixture,
    Setup,
};

/// Generates a module `$module` with one `#[test]` per conformance case, each
/// running the case on a fresh store from `$factory` (an
/// `Fn(Setup) -> impl Future<Output = Option<Fixture>>`, evaluated inside the
/// module, which sees the caller's items through `use super::*`), plus a test
/// that the list covers every case of [`cases`].
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $factory:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::__conformance_case_tests!(
                $factory;
                insert_sets_every_field_and_ids_increase,
                idempotency_key_returns_the_existing_job_without_burning_an_id,
                insert_many_is_atomic_and_in_order_with_keys_repeated_in_the_batch,
                json_and_timestamps_round_trip_exactly,
                claim_takes_due_jobs_by_priority_run_at_id,
                claim_edge_cases,
                heartbeat_extends_the_lease_and_keeps_or_sets_progress,
                complete_is_idempotent_for_the_same_epoch,
                complete_many_answers_per_job_in_input_order,
                fail_retries_then_goes_dead_and_clamps_the_error,
                release_gives_the_attempt_back,
                reap_requeues_or_kills_expired_leases_once,
                an_expired_lease_is_not_fenced_until_reaped,
                a_zombie_is_fenced_after_a_reclaim,
                cancel_rules,
                requeue_rules,
                happy_path_events_when_enabled,
                fencing_checks_in_spec_order,
                claim_takes_only_the_kinds_asked_for,
                a_jobs_time_limit_round_trips,
                queue_kinds_counts_only_unfinished_jobs_per_kind,
                prune_deletes_finished_jobs_past_their_age_and_nothing_else,
                prune_takes_the_oldest_finish_first_up_to_the_limit,
                a_pruned_jobs_idempotency_key_is_free_again,
                prune_refuses_an_age_it_cannot_hold_and_deletes_nothing,
                checkpoint_is_fenced_like_a_heartbeat_and_size_limited,
                a_checkpoint_survives_release_retry_reap_requeue_and_complete,
                worker_registry,
                queue_stats_counts_every_status,
                storage_now_is_the_pinned_time,
            );
        }
    };
}

/// The tests [`conformance_tests!`] generates, one per named case.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_tests {
    ($factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on($crate::run_case(stringify!($name), $factory));
            }
        )*

        #[test]
        fn the_list_covers_every_kit_case() {
            $crate::assert_all_listed(&[$(stringify!($name)),*]);
        }
    };
}
