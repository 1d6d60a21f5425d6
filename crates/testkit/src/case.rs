//! The harness around the conformance cases: what a case is, what it gets,
//! and how a storage's factory makes the store each case runs on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::json;
use stuckless_core::driver::{JobClaim, JobInsert, Storage};
use stuckless_core::driver::{JobComplete, JobEvents, JobHeartbeat};
use stuckless_core::{
    ClaimedJob, Clock, Epoch, JobEventKind, JobId, JobStatus, ManualClock, MemStore, NewJob, StorageError,
    Timestamp,
};

/// A pinned clock at a fixed, realistic instant: 2026-11-29T00:00:00Z plus a
/// few odd microseconds, so rounding bugs show.
pub fn manual_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_micros(1_795_910_400_000_000 + 123_457))
}

/// What a factory is asked for: one case's store.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The case's name (for a skip notice, or a database name).
    pub case: &'static str,
    /// The clock the store must judge time by (its "now" is `clock.now()`).
    pub clock: ManualClock,
    /// Whether the store logs inserted, claimed and completed events.
    pub happy_path_events: bool,
}

/// The store a factory made for one case, and whatever must outlive the case
/// with it (a test database, a server).
pub struct Fixture {
    // Dropped before the guard: the store goes first, then what it runs on.
    store: Arc<dyn Storage>,
    guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture holding `store` alone.
    pub fn new(store: impl Storage) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A fixture holding an already shared store.
    pub fn from_arc(store: Arc<dyn Storage>) -> Self {
        Fixture { store, guard: None }
    }

    /// Keeps `guard` alive until the case has finished (dropped after the store).
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }
}

/// The factory for [`MemStore`], the executable model: the kit's own runner.
pub async fn mem_store(setup: Setup) -> Option<Fixture> {
    Some(Fixture::new(
        MemStore::new(setup.clock).with_happy_path_events(setup.happy_path_events),
    ))
}

type RunFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, ()>;

/// One conformance case: a scenario with the exact answers the spec gives.
#[derive(Clone, Copy)]
pub struct Case {
    /// The noun it is about: `job`, `worker`, `queue` or `storage`.
    pub noun: &'static str,
    /// Its name, unique in [`cases`](crate::cases).
    pub name: &'static str,
    /// Whether its store must log happy-path events.
    pub happy_path_events: bool,
    run: RunFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("noun", &self.noun)
            .field("name", &self.name)
            .field("happy_path_events", &self.happy_path_events)
            .finish()
    }
}

impl Case {
    pub(crate) const fn new(noun: &'static str, name: &'static str, happy: bool, run: RunFn) -> Case {
        Case {
            noun,
            name,
            happy_path_events: happy,
            run,
        }
    }

    /// Runs the case on `store`, which must be empty, judge time by `clock`
    /// and log happy-path events exactly when [`Case::happy_path_events`].
    /// Panics, saying what differed from the spec, if the store fails it.
    pub fn run(&self, store: Arc<dyn Storage>, clock: ManualClock) -> BoxFuture<'static, ()> {
        let run = self.run;
        Box::pin(async move {
            let ctx = Ctx { store, clock };
            run(&ctx).await
        })
    }

    /// Asks `factory` for a fresh store and runs the case on it; false when
    /// the factory skipped the case (returned `None`).
    pub async fn run_with<F, Fut>(&self, factory: &F) -> bool
    where
        F: Fn(Setup) -> Fut,
        Fut: Future<Output = Option<Fixture>>,
    {
        let clock = manual_clock();
        let setup = Setup {
            case: self.name,
            clock: clock.clone(),
            happy_path_events: self.happy_path_events,
        };
        let Some(fixture) = factory(setup).await else {
            return false;
        };
        self.run(fixture.store.clone(), clock).await;
        drop(fixture);
        true
    }
}

/// What a case body gets: the store under test and the clock it is judged by.
pub(crate) struct Ctx {
    store: Arc<dyn Storage>,
    clock: ManualClock,
}

impl Ctx {
    /// The store under test.
    pub(crate) fn store(&self) -> Arc<dyn Storage> {
        self.store.clone()
    }

    /// The pinned time.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the pinned time forward.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// Every conformance case, by noun.
pub fn cases() -> Vec<Case> {
    let mut all = crate::jobs::cases();
    all.extend(crate::workers::cases());
    all.extend(crate::queues::cases());
    all
}

/// The case called `name`; panics listing the known names if there is none.
pub fn case(name: &str) -> Case {
    let all = cases();
    match all.iter().find(|c| c.name == name) {
        Some(case) => *case,
        None => {
            let names: Vec<&str> = all.iter().map(|c| c.name).collect();
            panic!("no conformance case {name:?}; the kit has {names:?}")
        }
    }
}

/// Runs the case called `name` on a fresh store from `factory` (what each
/// test generated by [`conformance_tests!`](crate::conformance_tests) does).
pub async fn run_case<F, Fut>(name: &str, factory: F)
where
    F: Fn(Setup) -> Fut,
    Fut: Future<Output = Option<Fixture>>,
{
    case(name).run_with(&factory).await;
}

/// Runs every case, each on a fresh store from `factory`, then panics naming
/// every case that failed. Returns how many ran (the rest were skipped).
pub async fn exercise<F, Fut>(factory: F) -> usize
where
    F: Fn(Setup) -> Fut,
    Fut: Future<Output = Option<Fixture>>,
{
    let all = cases();
    let mut ran = 0;
    let mut failed = Vec::new();
    for case in &all {
        match AssertUnwindSafe(case.run_with(&factory)).catch_unwind().await {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(panic) => failed.push(format!(
                "{}::{}: {}",
                case.noun,
                case.name,
                panic_message(&*panic)
            )),
        }
    }
    if !failed.is_empty() {
        panic!(
            "{} of {} conformance cases failed:\n  {}",
            failed.len(),
            all.len(),
            failed.join("\n  ")
        );
    }
    ran
}

/// Checks that a runner's list of case tests names every case exactly once.
pub fn assert_all_listed(listed: &[&str]) {
    let mut listed: Vec<&str> = listed.to_vec();
    listed.sort_unstable();
    let mut known: Vec<&str> = cases().iter().map(|c| c.name).collect();
    known.sort_unstable();
    assert_eq!(
        listed, known,
        "conformance_tests! must list every case of cases() once"
    );
}

/// Runs `future` to completion on a fresh current-thread tokio runtime with
/// IO and timers, as `#[tokio::test]` would.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

// Helpers the cases share.

/// The lease every case claims with.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// A job on `queue` with a payload naming it.
pub(crate) fn job(queue: &str) -> NewJob {
    NewJob::new(queue, "kind", json!({"q": queue}))
}

/// The insert of a job the case knows is valid.
pub(crate) fn insert(job: NewJob) -> JobInsert {
    JobInsert::new(job).expect("the case's job is valid")
}

/// A claim of up to `limit` jobs from `queues` with [`LEASE`].
pub(crate) fn claim_req(worker: &str, queues: &[&str], limit: u32) -> JobClaim {
    JobClaim {
        worker_id: worker.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        limit,
        lease: LEASE,
        kinds: None,
    }
}

/// Claims the one due job of `default` for `worker`.
pub(crate) async fn claim_one(s: &dyn Storage, worker: &str) -> ClaimedJob {
    let mut claimed = s.job_claim(claim_req(worker, &["default"], 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due job for {worker}");
    claimed.remove(0)
}

/// The completion `cj`'s holder sends.
pub(crate) fn complete(cj: &ClaimedJob) -> JobComplete {
    complete_at(cj.id(), cj.epoch())
}

/// The heartbeat `cj`'s holder sends, renewing for [`LEASE`] with no progress.
pub(crate) fn heartbeat(cj: &ClaimedJob) -> JobHeartbeat {
    JobHeartbeat {
        id: cj.id(),
        epoch: cj.epoch(),
        lease: LEASE,
        progress: None,
    }
}

/// The kinds of `id`'s events, oldest first.
pub(crate) async fn event_kinds(s: &dyn Storage, id: JobId) -> Vec<JobEventKind> {
    let events = s.job_events(JobEvents { id }).await.unwrap();
    events.iter().map(|e| e.kind).collect()
}

/// What a `WrongStatus` refusal names: the job's status, the refused
/// operation and the status(es) it needed. Panics on any other error.
#[track_caller]
pub(crate) fn refusal(err: &StorageError) -> (JobStatus, &'static str, &'static str) {
    match err {
        StorageError::WrongStatus {
            status,
            operation,
            expected,
            ..
        } => (*status, operation, expected),
        other => panic!("expected a WrongStatus refusal, got: {other}"),
    }
}

/// Asserts that `err` refuses an operation because the job is in `status`.
#[track_caller]
pub(crate) fn assert_wrong_status(err: &StorageError, status: JobStatus) {
    assert_eq!(refusal(err).0, status, "{err}");
}

/// The epochs a `StaleEpoch` refusal names: (presented, current). Panics on
/// any other error.
#[track_caller]
pub(crate) fn stale_epochs(err: &StorageError) -> (Epoch, Epoch) {
    match err {
        StorageError::StaleEpoch {
            presented, current, ..
        } => (*presented, *current),
        other => panic!("expected a StaleEpoch refusal, got: {other}"),
    }
}

/// The completion of `id` presenting `epoch` (a stale or made-up one).
pub(crate) fn complete_at(id: JobId, epoch: Epoch) -> JobComplete {
    JobComplete { id, epoch }
}

/// Asserts that `err` refuses input because of its `field`.
#[track_caller]
pub(crate) fn assert_invalid(err: &StorageError, field: &str) {
    assert!(
        matches!(err, StorageError::Invalid(v) if v.field == field),
        "{err}"
    );
}

/// `Case::new` for an `async fn name(c: &Ctx)` in scope.
macro_rules! kit_case {
    ($noun:literal, $name:ident) => {
        kit_case!($noun, $name, false)
    };
    ($noun:literal, $name:ident, $happy:expr) => {
        $crate::case::Case::new($noun, stringify!($name), $happy, {
            fn run(c: &$crate::case::Ctx) -> futures::future::BoxFuture<'_, ()> {
                Box::pin($name(c))
            }
            run
        })
    };
}
pub(crate) use kit_case;
