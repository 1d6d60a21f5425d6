//! The kit run on `MemStore`, the executable model: one test per case, and
//! the whole suite through `exercise`; and the kit's own checks that a broken
//! storage fails it, naming the cases.

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;
use stuckless_core::driver::{Flow, Hook, Hooked, Op, ReapOutcome, Reply};
use stuckless_core::MemStore;
use stuckless_testkit::{cases, exercise, mem_store, Fixture, Setup};

stuckless_testkit::conformance_tests!(mem, stuckless_testkit::mem_store);

#[tokio::test]
async fn exercise_runs_every_case_on_the_model() {
    assert_eq!(exercise(mem_store).await, cases().len());
}

#[tokio::test]
async fn a_skipping_factory_runs_nothing() {
    assert_eq!(exercise(|_: Setup| async { None }).await, 0);
}

/// A reaper that never takes anything back.
struct LazyReaper;

#[async_trait]
impl Hook for LazyReaper {
    async fn before(&self, op: Op) -> Flow {
        match op {
            Op::JobReapExpired(_) => Flow::Answer(Reply::JobReapExpired(Ok(ReapOutcome::default()))),
            op => Flow::Continue(op),
        }
    }
}

#[tokio::test]
async fn a_broken_storage_fails_naming_each_failed_case() {
    let broken = |setup: Setup| async move {
        let store = MemStore::new(setup.clock).with_happy_path_events(setup.happy_path_events);
        Some(Fixture::new(Hooked::new(store, LazyReaper)))
    };
    let panic = AssertUnwindSafe(exercise(broken))
        .catch_unwind()
        .await
        .unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    // Three cases reap: the reap case itself, the zombie case, and the
    // checkpoint case (a checkpoint kept across a reap).
    let headline = format!("3 of {} conformance cases failed", cases().len());
    assert!(message.starts_with(&headline), "{message}");
    assert!(
        message.contains("job::reap_requeues_or_kills_expired_leases_once"),
        "{message}"
    );
    assert!(
        message.contains("job::a_zombie_is_fenced_after_a_reclaim"),
        "{message}"
    );
    assert!(
        message.contains("job::a_checkpoint_survives_release_retry_reap_requeue_and_complete"),
        "{message}"
    );
}
