//! The differential test: random operation sequences from the test kit's
//! generator (`stuckless_testkit::ops`), applied with pinned time to
//! `MemStore` (the model) and to `PgStorage`, must give the same answer to
//! every operation and leave the same final state (every job, every event,
//! the worker registry, the queue stats).
//!
//! The generator covers valid and invalid input (a bad queue name, `run_at`
//! far outside Postgres's range, a `Duration::MAX` lease: refused alike),
//! fresh, stale and made-up leases, JSON-null progress, 9000-byte errors with
//! NULs, and time steps. Leases a step names are resolved against the claims
//! the model really answered (the same as Postgres's, just checked).
//!
//! Ids: Postgres assigns them from an identity sequence. The insert statement
//! only draws from the sequence when it really inserts (an existing
//! idempotency key is found by a pre-check; invalid input never reaches the
//! database), so in sequential use the ids are *identical* to the model's and
//! are compared directly, with no mapping.
//!
//! Cases: 96 by default (each up to 60 operations), `STUCKLESS_DIFF_CASES=n`
//! to change it. One database serves every case; it is truncated (identity
//! restarted) between cases.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stuckless_core::driver::Storage;
use stuckless_core::MemStore;
use stuckless_pg::PgStorage;
use stuckless_testkit::ops::{self, Session, Step};
use stuckless_tests::TestDb;

/// Both stores' full state, for the diagnosis of a mismatch.
async fn dump(mem: &dyn Storage, pg: &dyn Storage, max_job_id: i64) -> String {
    let (mem, pg) = (
        ops::snapshot(mem, max_job_id).await,
        ops::snapshot(pg, max_job_id).await,
    );
    format!(
        "MemStore:\n  {}\nPostgres:\n  {}",
        mem.join("\n  "),
        pg.join("\n  ")
    )
}

async fn run_case(pg: &PgStorage, steps: &[Step], happy: bool) -> Result<(), TestCaseError> {
    sqlx::query("truncate stuckless.jobs, stuckless.job_events, stuckless.workers restart identity cascade")
        .execute(pg.pool())
        .await
        .map_err(|e| TestCaseError::fail(format!("truncate: {e}")))?;
    let mut session = Session::new(stuckless_testkit::manual_clock());
    let clock = session.clock().clone();
    let mem: Arc<dyn Storage> = Arc::new(MemStore::new(clock.clone()).with_happy_path_events(happy));
    let pg: Arc<dyn Storage> = Arc::new(
        pg.clone()
            .with_pinned_clock(Arc::new(clock))
            .with_happy_path_events(happy),
    );
    for (index, step) in steps.iter().enumerate() {
        let Some(call) = session.prepare(step) else {
            continue;
        };
        let expected = call.clone().apply(&mem).await;
        let actual = call.clone().apply(&pg).await;
        // Compared as text (Debug of the typed answer, error included), so a
        // mismatch prints both sides readably.
        let (left, right) = (format!("{expected:?}"), format!("{actual:?}"));
        if left != right {
            let state = dump(&*mem, &*pg, session.max_job_id()).await;
            prop_assert_eq!(
                left,
                right,
                "step {} {:?} ({:?}): MemStore (left) vs Postgres (right)\n{}",
                index,
                step,
                call,
                state
            );
        }
        session.record(&expected);
    }
    let max_job_id = session.max_job_id();
    let (expected, actual) = (
        ops::snapshot(&*mem, max_job_id).await,
        ops::snapshot(&*pg, max_job_id).await,
    );
    prop_assert_eq!(expected.len(), actual.len());
    for (e, a) in expected.iter().zip(&actual) {
        prop_assert_eq!(e, a, "final state: MemStore (left) vs Postgres (right)");
    }
    Ok(())
}

#[test]
fn memstore_and_postgres_agree_on_random_operation_sequences() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDb::new_or_skip(
        "memstore_and_postgres_agree_on_random_operation_sequences",
    )) else {
        return;
    };
    let pg = db.storage();
    let cases: u32 = std::env::var("STUCKLESS_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let ops_run = std::cell::Cell::new(0usize);
    let result = runner.run(&(ops::steps(1..60), any::<bool>()), |(steps, happy)| {
        ops_run.set(ops_run.get() + steps.len());
        rt.block_on(run_case(&pg, &steps, happy))
    });
    println!(
        "differential: {cases} cases, {} operations (shrinking included) in {:?}",
        ops_run.get(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(db);
}
