//! Random operation sequences against `MemStore`, checking the queue's safety
//! invariants after every step.
//!
//! The steps come from the test kit's one generator
//! (`stuckless_testkit::ops`), the same the differential test uses. The
//! reference machine only generates steps; it never predicts answers. The
//! system under test applies them to a real `MemStore` through a kit
//! `Session`, which resolves every lease a step names against the leases
//! earlier claims handed out (fresh and stale alike), and checks: no job
//! completed twice, no (job, epoch) handed out twice, stale writes refused,
//! refused input changes nothing, attempts within bounds, transitions allowed
//! by the state machine (terminal is forever, but for an operator's logged
//! requeue of a dead job), and no job lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::executor::block_on;
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use stuckless_core::driver::{
    is_reapable, CompleteOutcome, FailOutcome, InsertOutcome, JobClaim, JobPrune, JobReapExpired, Op,
    PruneOutcome, Reply, Storage, StorageResult,
};
use stuckless_core::{ClaimedJob, Epoch, Job, JobId, JobStatus, MemStore, NewJob, StorageError, Timestamp};
use stuckless_testkit::ops::{self, Call, Session, Step};

#[derive(Clone, Debug, Default)]
struct Reference {
    inserted: usize,
}

impl ReferenceStateMachine for Reference {
    type State = Reference;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(Reference::default()).boxed()
    }

    fn transitions(state: &Self::State) -> BoxedStrategy<Self::Transition> {
        if state.inserted == 0 {
            return ops::insert_step();
        }
        ops::step()
    }

    fn apply(mut state: Self::State, transition: &Self::Transition) -> Self::State {
        if let Step::Insert(_) = transition {
            state.inserted += 1;
        }
        state
    }
}

struct Sut {
    session: Session,
    model: Arc<MemStore>,
    store: Arc<dyn Storage>,
    /// Every job an insert returned.
    ids: BTreeSet<JobId>,
    /// Accepted (non-idempotent) completions per job.
    completions: BTreeMap<JobId, u32>,
    /// Every (job, epoch) any claim returned.
    handed_out: BTreeMap<(JobId, Epoch), usize>,
    /// Registered workers.
    workers: BTreeSet<String>,
    /// The jobs before the step.
    before: BTreeMap<JobId, Job>,
    /// Operator requeues of each job while it was running. The spec keeps
    /// the attempt count then, so each may let the job run once more than
    /// `max_attempts` (a requeue on the last attempt, then a claim).
    running_requeues: BTreeMap<JobId, i32>,
    /// Jobs a prune deleted (finished, past their retention).
    pruned: BTreeSet<JobId>,
    /// A dead job the step's operator requeue took back (the one allowed
    /// move out of a terminal state).
    requeued_dead: Option<JobId>,
}

struct QueueTest;

impl Sut {
    fn snapshot(&self) -> BTreeMap<JobId, Job> {
        self.model.jobs().into_iter().map(|j| (j.id, j)).collect()
    }

    /// Refused input: the typed error, and nothing written.
    fn check_refused<T: std::fmt::Debug>(
        &self,
        error: stuckless_core::ValidationError,
        result: &StorageResult<T>,
    ) {
        match result {
            Err(StorageError::Invalid(e)) => assert_eq!(*e, error),
            other => panic!("invalid input ({error}) answered {other:?}"),
        }
        assert_eq!(self.snapshot(), self.before, "refused input changed the jobs");
    }

    /// A fenced write must be refused exactly when the lease is not current.
    fn check_fenced<T: std::fmt::Debug>(
        &self,
        op: &str,
        (id, epoch): (JobId, Epoch),
        result: &Result<T, StorageError>,
    ) {
        let Some(job) = self.before.get(&id) else {
            assert_eq!(
                result.as_ref().err(),
                Some(&StorageError::NotFound(id)),
                "{op} on unknown job {id}"
            );
            return;
        };
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

    fn check_insert(&mut self, job: &NewJob, result: &StorageResult<InsertOutcome>) {
        let outcome = result.as_ref().expect("a valid job is inserted");
        let known = self.ids.contains(&outcome.job.id);
        assert_eq!(outcome.inserted, !known, "idempotency key must map to one job");
        if known {
            assert!(
                job.idempotency_key.is_some(),
                "a keyless insert returned job {}",
                outcome.job.id
            );
            assert_eq!(outcome.job.idempotency_key, job.idempotency_key);
        }
        self.ids.insert(outcome.job.id);
    }

    fn check_claim(&mut self, request: &JobClaim, result: &StorageResult<Vec<ClaimedJob>>, now: Timestamp) {
        if let Err(e) = request.validate() {
            return self.check_refused(e, result);
        }
        let claimed = result.as_ref().expect("a valid claim succeeds");
        assert!(claimed.len() <= request.limit as usize);
        for c in claimed {
            let before = &self.before[&c.id()];
            assert_eq!(
                before.status,
                JobStatus::Queued,
                "claimed a job that was not queued"
            );
            assert!(before.run_at <= now, "claimed a job before its run_at");
            assert!(
                request.queues.contains(&c.job.queue),
                "claimed from a queue not asked for"
            );
            assert!(
                request
                    .kinds
                    .as_ref()
                    .is_none_or(|kinds| kinds.contains(&c.job.kind)),
                "claimed a kind not asked for: {} not in {:?}",
                c.job.kind,
                request.kinds
            );
            assert_eq!(
                c.epoch().0,
                before.epoch.0 + 1,
                "claim must bump the epoch by one"
            );
            assert_eq!(c.job.attempt, before.attempt + 1, "claim must count an attempt");
            let seen = self.handed_out.entry((c.id(), c.epoch())).or_default();
            *seen += 1;
            assert_eq!(*seen, 1, "lease ({}, {}) handed out twice", c.id(), c.epoch());
        }
    }

    /// A prune deletes only finished jobs past their age, at most `limit`,
    /// and says how many of each.
    fn check_prune(&mut self, request: &JobPrune, result: &StorageResult<PruneOutcome>, now: Timestamp) {
        let outcome = result.as_ref().expect("a valid prune succeeds");
        let after = self.snapshot();
        let mut deleted = PruneOutcome::default();
        for (id, job) in &self.before {
            if after.contains_key(id) {
                continue;
            }
            let age = match job.status {
                JobStatus::Succeeded => {
                    deleted.succeeded += 1;
                    request.succeeded_after
                }
                JobStatus::Cancelled => {
                    deleted.cancelled += 1;
                    request.cancelled_after
                }
                JobStatus::Dead => {
                    deleted.dead += 1;
                    request.dead_after
                }
                status => panic!("prune deleted job {id}, which was {status}"),
            };
            let finished = job.finished_at.expect("a finished job has finished_at");
            assert!(finished + age <= now, "job {id} pruned before its age: {job:?}");
            self.pruned.insert(*id);
            self.ids.remove(id);
        }
        assert_eq!(*outcome, deleted, "the outcome counts what was deleted");
        assert!(outcome.total() <= u64::from(request.limit));
    }

    fn check_reap(
        &self,
        limit: u32,
        result: &StorageResult<stuckless_core::driver::ReapOutcome>,
        now: Timestamp,
    ) {
        let outcome = result.as_ref().expect("a reap succeeds");
        let expired: Vec<JobId> = self
            .before
            .values()
            .filter(|j| j.status == JobStatus::Running && j.lease_expires_at.unwrap() <= now)
            .map(|j| j.id)
            .collect();
        let expected: Vec<JobId> = expired.iter().take(limit as usize).copied().collect();
        let mut reaped: Vec<JobId> = outcome.requeued.iter().chain(&outcome.dead).copied().collect();
        reaped.sort();
        assert_eq!(
            reaped, expected,
            "reap must take exactly the expired leases (up to its limit)"
        );
        for id in &outcome.dead {
            let b = &self.before[id];
            assert!(
                b.attempt >= b.max_attempts,
                "reap killed job {id} with attempts left"
            );
        }
        for id in &outcome.requeued {
            let b = &self.before[id];
            assert!(
                b.attempt < b.max_attempts,
                "reap requeued job {id} on its last attempt"
            );
        }
        let after = self.snapshot();
        for id in &reaped {
            assert!(
                !is_reapable(&after[id], now),
                "job {id} still reapable after the reap"
            );
        }
        if expired.len() <= limit as usize {
            let again = block_on(self.store.job_reap_expired(JobReapExpired { limit: 1000 })).unwrap();
            assert!(again.is_empty(), "reap must be idempotent");
        }
    }

    fn check_cancel(&self, id: JobId, result: &StorageResult<Job>) {
        let before = self.before.get(&id).map(|j| j.status);
        match result {
            Ok(job) => {
                assert!(matches!(
                    before,
                    Some(JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled)
                ));
                assert_eq!(job.status, JobStatus::Cancelled);
            }
            Err(StorageError::WrongStatus { .. }) => {
                assert!(matches!(before, Some(JobStatus::Succeeded | JobStatus::Dead)))
            }
            Err(StorageError::NotFound(_)) => assert_eq!(before, None),
            Err(other) => panic!("cancel: unexpected {other}"),
        }
    }

    fn check_requeue(&mut self, id: JobId, force: bool, result: &StorageResult<Job>, now: Timestamp) {
        let Some(before) = self.before.get(&id) else {
            assert_eq!(result.as_ref().err(), Some(&StorageError::NotFound(id)));
            return;
        };
        let allowed = before.status == JobStatus::Dead
            || (before.status == JobStatus::Running && (force || is_reapable(before, now)));
        match result {
            Ok(job) => {
                assert!(allowed, "requeue of {before:?} accepted");
                assert_eq!(
                    (job.status, job.run_at, job.epoch),
                    (JobStatus::Queued, now, before.epoch)
                );
                if before.status == JobStatus::Dead {
                    assert_eq!(job.attempt, 0, "a requeued dead job starts over");
                    self.requeued_dead = Some(id);
                } else {
                    assert_eq!(
                        job.attempt, before.attempt,
                        "a requeued running job keeps its attempts"
                    );
                    *self.running_requeues.entry(id).or_default() += 1;
                }
            }
            Err(StorageError::WrongStatus { status, .. }) => {
                assert!(!allowed, "requeue of {before:?} refused");
                assert_eq!(*status, before.status);
            }
            Err(other) => panic!("requeue: unexpected {other}"),
        }
    }

    fn check(&mut self, call: &Call, reply: &Reply, now: Timestamp) {
        match (call, reply) {
            (Call::Enqueue(job), Reply::JobInsert(r)) => match job.check() {
                Err(e) => self.check_refused(e, r),
                Ok(()) => self.check_insert(job, r),
            },
            (Call::EnqueueMany(jobs), Reply::JobInsertMany(r)) => {
                match jobs.iter().try_for_each(NewJob::check) {
                    Err(e) => self.check_refused(e, r),
                    Ok(()) => {
                        let outcomes = r.as_ref().expect("valid jobs are inserted");
                        assert_eq!(outcomes.len(), jobs.len());
                        for (job, outcome) in jobs.iter().zip(outcomes) {
                            self.check_insert(job, &Ok(outcome.clone()));
                        }
                    }
                }
            }
            (Call::Op(Op::JobClaim(p)), Reply::JobClaim(r)) => self.check_claim(p, r, now),
            (Call::Op(Op::JobHeartbeat(p)), Reply::JobHeartbeat(r)) => {
                self.check_fenced("heartbeat", (p.id, p.epoch), r);
                if let Ok(expires) = r {
                    assert_eq!(*expires, now + p.lease);
                }
            }
            (Call::Op(Op::JobCheckpoint(p)), Reply::JobCheckpoint(r)) => match p.validate() {
                Err(e) => assert_eq!(r.as_ref().err(), Some(&StorageError::Invalid(e))),
                Ok(()) => {
                    self.check_fenced("checkpoint", (p.id, p.epoch), r);
                    if let Ok(at) = r {
                        assert_eq!(*at, now);
                        let after = &self.snapshot()[&p.id];
                        assert_eq!(
                            (after.checkpoint.as_ref(), after.checkpointed_at),
                            (Some(&p.checkpoint), Some(now))
                        );
                    }
                }
            },
            (Call::Op(Op::JobComplete(p)), Reply::JobComplete(r)) => {
                self.check_fenced("complete", (p.id, p.epoch), r);
                if let Ok(CompleteOutcome::Completed) = r {
                    *self.completions.entry(p.id).or_default() += 1;
                }
            }
            (Call::Op(Op::JobCompleteMany(p)), Reply::JobCompleteMany(r)) => {
                let results = r.as_ref().expect("a batch of completions is answered");
                assert_eq!(results.len(), p.jobs.len(), "one answer per completion");
                for (c, result) in p.jobs.iter().zip(results) {
                    self.check_fenced("complete", (c.id, c.epoch), result);
                    if let Ok(CompleteOutcome::Completed) = result {
                        *self.completions.entry(c.id).or_default() += 1;
                    }
                }
            }
            (Call::Op(Op::JobFail(p)), Reply::JobFail(r)) => {
                self.check_fenced("fail", (p.id, p.epoch), r);
                if let Ok(outcome) = r {
                    let b = &self.before[&p.id];
                    match (outcome, p.retry_after) {
                        (FailOutcome::Retried { run_at }, Some(delay)) => {
                            assert!(b.attempt < b.max_attempts, "retried with no attempts left");
                            assert_eq!(*run_at, now + delay);
                        }
                        (FailOutcome::Dead, Some(_)) => {
                            assert!(b.attempt >= b.max_attempts, "dead with attempts left")
                        }
                        (FailOutcome::Dead, None) => {}
                        (outcome, None) => panic!("a permanent failure answered {outcome:?}"),
                    }
                }
            }
            (Call::Op(Op::JobRelease(p)), Reply::JobRelease(r)) => {
                self.check_fenced("release", (p.id, p.epoch), r);
                if r.is_ok() {
                    let after = &self.snapshot()[&p.id];
                    assert_eq!(
                        after.attempt,
                        self.before[&p.id].attempt - 1,
                        "release must give the attempt back"
                    );
                }
            }
            (Call::Op(Op::JobReapExpired(p)), Reply::JobReapExpired(r)) => self.check_reap(p.limit, r, now),
            (Call::Op(Op::JobCancel(p)), Reply::JobCancel(r)) => self.check_cancel(p.id, r),
            (Call::Op(Op::JobRequeue(p)), Reply::JobRequeue(r)) => self.check_requeue(p.id, p.force, r, now),
            (Call::Op(Op::JobGet(p)), Reply::JobGet(r)) => {
                assert_eq!(
                    r.as_ref().unwrap().as_ref(),
                    self.before.get(&p.id),
                    "get reads the job as it is"
                );
            }
            (Call::Op(Op::JobEvents(p)), Reply::JobEvents(r)) => {
                for e in r.as_ref().unwrap() {
                    assert_eq!(e.job_id, p.id, "events of another job");
                }
            }
            (Call::Op(Op::WorkerRegister(p)), Reply::WorkerRegister(r)) => {
                r.as_ref().expect("a valid registration succeeds");
                self.workers.insert(p.id.clone());
            }
            (Call::Op(Op::WorkerHeartbeat(p)), Reply::WorkerHeartbeat(r)) => match r {
                Ok(()) => assert!(self.workers.contains(&p.id), "heartbeat of unregistered {}", p.id),
                Err(e) => {
                    assert_eq!(*e, StorageError::WorkerNotFound(p.id.clone()));
                    assert!(!self.workers.contains(&p.id));
                }
            },
            (Call::Op(Op::WorkerDeregister(p)), Reply::WorkerDeregister(r)) => {
                r.as_ref().expect("deregistering succeeds");
                self.workers.remove(&p.id);
            }
            (Call::Op(Op::QueueStatsGet(_)), Reply::QueueStatsGet(r)) => {
                let counted: u64 = r
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|q| {
                        q.due
                            + q.scheduled
                            + q.running
                            + q.running_expired
                            + q.succeeded
                            + q.dead
                            + q.cancelled
                    })
                    .sum();
                assert_eq!(
                    counted,
                    self.before.len() as u64,
                    "stats must count every job once"
                );
            }
            (Call::Op(Op::QueueKindsGet(_)), Reply::QueueKindsGet(r)) => {
                let counted: u64 = r
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|k| k.due + k.scheduled + k.running)
                    .sum();
                let unfinished = self.before.values().filter(|j| !j.status.is_terminal()).count();
                assert_eq!(
                    counted, unfinished as u64,
                    "kinds must count every unfinished job once"
                );
            }
            (Call::Op(Op::JobPrune(p)), Reply::JobPrune(r)) => self.check_prune(p, r, now),
            (Call::Op(Op::StorageNow(_)), Reply::StorageNow(r)) => assert_eq!(r.as_ref().ok(), Some(&now)),
            (call, reply) => panic!("{call:?} was answered as {reply:?}"),
        }
    }
}

impl StateMachineTest for QueueTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Reference) -> Sut {
        let session = Session::new(stuckless_testkit::manual_clock());
        let model = Arc::new(MemStore::new(session.clock().clone()));
        Sut {
            session,
            store: model.clone(),
            model,
            ids: BTreeSet::new(),
            completions: BTreeMap::new(),
            handed_out: BTreeMap::new(),
            workers: BTreeSet::new(),
            before: BTreeMap::new(),
            running_requeues: BTreeMap::new(),
            requeued_dead: None,
            pruned: BTreeSet::new(),
        }
    }

    fn apply(mut sut: Sut, _: &Reference, step: Step) -> Sut {
        sut.before = sut.snapshot();
        sut.requeued_dead = None;
        let Some(call) = sut.session.prepare(&step) else {
            return sut;
        };
        let now = sut.session.now();
        let reply = block_on(call.clone().apply(&sut.store));
        sut.session.record(&reply);
        sut.check(&call, &reply, now);
        // A checkpoint changes only by an accepted checkpoint of its job:
        // claims, retries, reaps, releases, requeues and completions keep it.
        let saved = match (&call, &reply) {
            (Call::Op(Op::JobCheckpoint(p)), Reply::JobCheckpoint(Ok(_))) => Some(p.id),
            _ => None,
        };
        for (id, after) in sut.snapshot() {
            if let Some(before) = sut.before.get(&id).filter(|_| saved != Some(id)) {
                assert_eq!(
                    (&after.checkpoint, after.checkpointed_at),
                    (&before.checkpoint, before.checkpointed_at),
                    "{call:?} changed job {id}'s checkpoint"
                );
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, _: &Reference) {
        let after = sut.snapshot();
        // No job lost: every job ever inserted is still there.
        for id in sut.ids.iter().chain(sut.before.keys()) {
            assert!(
                after.contains_key(id) || sut.pruned.contains(id),
                "job {id} disappeared without a prune"
            );
        }
        for (id, job) in &after {
            // No job completed twice.
            assert!(
                sut.completions.get(id).copied().unwrap_or(0) <= 1,
                "job {id} completed twice"
            );
            // Attempts within bounds (one more for each operator requeue of
            // the job while running).
            let extra = sut.running_requeues.get(id).copied().unwrap_or(0);
            assert!(
                job.attempt >= 0 && job.attempt <= job.max_attempts + extra,
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
                // Transitions follow the state machine; terminal is forever,
                // but for an operator's requeue of a dead job.
                let operator_requeue = sut.requeued_dead == Some(*id);
                if before.status != job.status && !operator_requeue {
                    assert!(
                        before.status.may_become(job.status),
                        "illegal transition {} -> {} for job {id}",
                        before.status,
                        job.status
                    );
                }
                if before.status.is_terminal() && !operator_requeue {
                    assert_eq!(before, job, "terminal job {id} changed");
                }
                if operator_requeue {
                    assert_eq!((before.status, job.status), (JobStatus::Dead, JobStatus::Queued));
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
