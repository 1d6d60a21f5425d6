//! Random operation sequences against `MemStore`, checking the queue's safety
//! invariants after every step.
//!
//! The reference machine only generates operations; it never predicts
//! answers. The system under test applies them to a real `MemStore`, keeps
//! every lease the store handed out (fresh and stale alike), and checks:
//! no job completed twice, no (job, epoch) handed out twice, stale writes
//! refused, attempts within bounds, transitions allowed by the state machine
//! (terminal is forever), and no job lost.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::executor::block_on;
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use serde_json::json;
use stuckless_core::{
    ClaimRequest, Clock, CompleteOutcome, Epoch, FailRequest, Job, JobId, JobStatus, ManualClock, MemStore,
    NewJob, Storage, StorageError, Timestamp,
};

const WORKERS: usize = 3;
const LEASE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Op {
    Insert {
        max_attempts: i32,
        delay_secs: u8,
        key: Option<u8>,
    },
    Claim {
        worker: usize,
        limit: u32,
    },
    Heartbeat {
        worker: usize,
        lease: usize,
    },
    Complete {
        worker: usize,
        lease: usize,
    },
    Fail {
        worker: usize,
        lease: usize,
        permanent: bool,
    },
    Release {
        worker: usize,
        lease: usize,
    },
    Reap,
    Cancel {
        job: usize,
    },
    Advance {
        secs: u16,
    },
}

#[derive(Clone, Debug, Default)]
struct Reference {
    inserted: usize,
}

impl ReferenceStateMachine for Reference {
    type State = Reference;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(Reference::default()).boxed()
    }

    fn transitions(state: &Self::State) -> BoxedStrategy<Self::Transition> {
        let worker = 0..WORKERS;
        let lease = 0..8usize;
        let insert = (
            1..4i32,
            prop_oneof![3 => Just(0u8), 1 => 1..60u8],
            proptest::option::of(0..4u8),
        )
            .prop_map(|(max_attempts, delay_secs, key)| Op::Insert {
                max_attempts,
                delay_secs,
                key,
            });
        if state.inserted == 0 {
            return insert.boxed();
        }
        let jobs = state.inserted;
        prop_oneof![
            2 => insert,
            3 => (worker.clone(), 1..4u32).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
            2 => (worker.clone(), lease.clone()).prop_map(|(worker, lease)| Op::Heartbeat { worker, lease }),
            3 => (worker.clone(), lease.clone()).prop_map(|(worker, lease)| Op::Complete { worker, lease }),
            2 => (worker.clone(), lease.clone(), any::<bool>())
                .prop_map(|(worker, lease, permanent)| Op::Fail { worker, lease, permanent }),
            1 => (worker, lease).prop_map(|(worker, lease)| Op::Release { worker, lease }),
            2 => Just(Op::Reap),
            1 => (0..jobs).prop_map(|job| Op::Cancel { job }),
            2 => prop_oneof![1..10u16, 25..40u16, 60..300u16].prop_map(|secs| Op::Advance { secs }),
        ]
        .boxed()
    }

    fn apply(mut state: Self::State, transition: &Self::Transition) -> Self::State {
        if let Op::Insert { .. } = transition {
            state.inserted += 1;
        }
        state
    }
}

struct Sut {
    clock: ManualClock,
    store: MemStore,
    ids: Vec<JobId>,
    /// Every lease each worker was ever handed, in order.
    leases: Vec<Vec<(JobId, Epoch)>>,
    /// Accepted (non-idempotent) completions per job.
    completions: BTreeMap<JobId, u32>,
    /// Every (job, epoch) any claim returned.
    handed_out: BTreeMap<(JobId, Epoch), usize>,
    before: BTreeMap<JobId, Job>,
}

struct QueueTest;

impl Sut {
    fn snapshot(&self) -> BTreeMap<JobId, Job> {
        self.store.jobs().into_iter().map(|j| (j.id, j)).collect()
    }

    fn lease(&self, worker: usize, index: usize) -> Option<(JobId, Epoch)> {
        let held = &self.leases[worker];
        (!held.is_empty()).then(|| held[index % held.len()])
    }

    /// A fenced write must be refused exactly when the lease is not current.
    fn check_fenced<T: std::fmt::Debug>(
        &self,
        op: &str,
        (id, epoch): (JobId, Epoch),
        result: &Result<T, StorageError>,
    ) {
        let job = &self.before[&id];
        let current = job.epoch == epoch && job.status == JobStatus::Running;
        let already_done = op == "complete" && job.epoch == epoch && job.status == JobStatus::Succeeded;
        match result {
            Ok(_) => assert!(
                current || already_done,
                "{op} with stale lease {epoch} accepted on {job:?}"
            ),
            Err(StorageError::StaleEpoch { current, .. }) => {
                assert_ne!(job.epoch, epoch, "{op}: StaleEpoch for the current epoch");
                assert_eq!(*current, job.epoch);
            }
            Err(StorageError::WrongStatus { status, .. }) => {
                assert_eq!(job.epoch, epoch, "{op}: stale epoch must be reported first");
                assert_eq!(*status, job.status);
                assert_ne!(job.status, JobStatus::Running);
            }
            Err(other) => panic!("{op}: unexpected error {other}"),
        }
    }
}

impl StateMachineTest for QueueTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Reference) -> Sut {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        Sut {
            store: MemStore::new(clock.clone()),
            clock,
            ids: Vec::new(),
            leases: vec![Vec::new(); WORKERS],
            completions: BTreeMap::new(),
            handed_out: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }

    fn apply(mut sut: Sut, _: &Reference, op: Op) -> Sut {
        sut.before = sut.snapshot();
        let store = &sut.store;
        match op {
            Op::Insert {
                max_attempts,
                delay_secs,
                key,
            } => {
                let now = block_on(store.storage_now()).unwrap();
                let mut job = NewJob::new("default", "work", json!({"n": sut.ids.len()}))
                    .max_attempts(max_attempts)
                    .run_at(now + Duration::from_secs(delay_secs.into()));
                if let Some(key) = key {
                    job = job.idempotency_key(format!("key-{key}"));
                }
                let outcome = block_on(store.job_insert(job)).unwrap();
                let known = sut.ids.contains(&outcome.job.id);
                assert_eq!(outcome.inserted, !known, "idempotency key must map to one job");
                // The reference counts an insert either way; keep indexes aligned.
                sut.ids.push(outcome.job.id);
            }
            Op::Claim { worker, limit } => {
                let request = ClaimRequest {
                    worker_id: format!("w{worker}"),
                    queues: vec!["default".into()],
                    limit,
                    lease: LEASE,
                };
                let claimed = block_on(store.job_claim(request)).unwrap();
                assert!(claimed.len() <= limit as usize);
                let now = sut.clock.now();
                for c in claimed {
                    let before = &sut.before[&c.id()];
                    assert_eq!(
                        before.status,
                        JobStatus::Queued,
                        "claimed a job that was not queued"
                    );
                    assert!(before.run_at <= now, "claimed a job before its run_at");
                    assert_eq!(
                        c.epoch().0,
                        before.epoch.0 + 1,
                        "claim must bump the epoch by one"
                    );
                    let seen = sut.handed_out.entry((c.id(), c.epoch())).or_default();
                    *seen += 1;
                    assert_eq!(*seen, 1, "lease ({}, {}) handed out twice", c.id(), c.epoch());
                    sut.leases[worker].push((c.id(), c.epoch()));
                }
            }
            Op::Heartbeat { worker, lease } => {
                if let Some(l) = sut.lease(worker, lease) {
                    let result = block_on(store.job_heartbeat(l.0, l.1, LEASE, Some(json!({"step": 1}))));
                    sut.check_fenced("heartbeat", l, &result);
                }
            }
            Op::Complete { worker, lease } => {
                if let Some(l) = sut.lease(worker, lease) {
                    let result = block_on(store.job_complete(l.0, l.1));
                    sut.check_fenced("complete", l, &result);
                    if let Ok(CompleteOutcome::Completed) = result {
                        *sut.completions.entry(l.0).or_default() += 1;
                    }
                }
            }
            Op::Fail {
                worker,
                lease,
                permanent,
            } => {
                if let Some(l) = sut.lease(worker, lease) {
                    let request = FailRequest {
                        error: "boom".into(),
                        retry_after: (!permanent).then_some(Duration::from_secs(5)),
                    };
                    let result = block_on(store.job_fail(l.0, l.1, request));
                    sut.check_fenced("fail", l, &result);
                }
            }
            Op::Release { worker, lease } => {
                if let Some(l) = sut.lease(worker, lease) {
                    let result = block_on(store.job_release(l.0, l.1));
                    sut.check_fenced("release", l, &result);
                    if result.is_ok() {
                        let after = block_on(store.job_get(l.0)).unwrap().unwrap();
                        assert_eq!(
                            after.attempt,
                            sut.before[&l.0].attempt - 1,
                            "release must give the attempt back"
                        );
                    }
                }
            }
            Op::Reap => {
                let now = sut.clock.now();
                let outcome = block_on(store.job_reap_expired(1000)).unwrap();
                let expected: Vec<JobId> = sut
                    .before
                    .values()
                    .filter(|j| j.status == JobStatus::Running && j.lease_expires_at.unwrap() <= now)
                    .map(|j| j.id)
                    .collect();
                let mut reaped: Vec<JobId> = outcome.requeued.iter().chain(&outcome.dead).copied().collect();
                reaped.sort();
                assert_eq!(reaped, expected, "reap must take exactly the expired leases");
                let again = block_on(store.job_reap_expired(1000)).unwrap();
                assert!(again.is_empty(), "reap must be idempotent");
            }
            Op::Cancel { job } => {
                let id = sut.ids[job % sut.ids.len()];
                let result = block_on(store.job_cancel(id));
                let before = sut.before[&id].status;
                match result {
                    Ok(job) => {
                        assert!(matches!(
                            before,
                            JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled
                        ));
                        assert_eq!(job.status, JobStatus::Cancelled);
                    }
                    Err(StorageError::WrongStatus { .. }) => {
                        assert!(matches!(before, JobStatus::Succeeded | JobStatus::Dead))
                    }
                    Err(other) => panic!("cancel: unexpected {other}"),
                }
            }
            Op::Advance { secs } => sut.clock.advance(Duration::from_secs(secs.into())),
        }
        sut
    }

    fn check_invariants(sut: &Sut, _: &Reference) {
        let after = sut.snapshot();
        // No job lost: every job ever inserted is still there.
        for id in &sut.ids {
            assert!(after.contains_key(id), "job {id} disappeared");
        }
        for (id, job) in &after {
            // No job completed twice.
            assert!(
                sut.completions.get(id).copied().unwrap_or(0) <= 1,
                "job {id} completed twice"
            );
            // Attempts within bounds.
            assert!(
                job.attempt >= 0 && job.attempt <= job.max_attempts,
                "attempts out of bounds: {job:?}"
            );
            // A lease exists exactly while running: at most one live lease per job.
            assert_eq!(
                job.lease_expires_at.is_some(),
                job.status == JobStatus::Running,
                "{job:?}"
            );
            // Dead only when attempts ran out or the error was permanent.
            if job.status == JobStatus::Dead {
                assert!(job.last_error.is_some(), "dead without a reason: {job:?}");
            }
            if let Some(before) = sut.before.get(id) {
                // Transitions follow the state machine; terminal is forever.
                if before.status != job.status {
                    assert!(
                        before.status.may_become(job.status),
                        "illegal transition {} -> {} for job {id}",
                        before.status,
                        job.status
                    );
                }
                if before.status.is_terminal() {
                    assert_eq!(before, job, "terminal job {id} changed");
                }
                assert!(job.epoch >= before.epoch, "epoch went backwards");
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// 512 random sequences of 1 to 80 operations (CI runs exactly this).
    #[test]
    fn memstore_keeps_queue_invariants(sequential 1..80 => QueueTest);
}
