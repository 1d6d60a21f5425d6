//! The one generator of random operation sequences, shared by every
//! property test: the differential test (the model against another storage)
//! and the model's own state-machine test.
//!
//! A [`Step`] is data proptest can generate and shrink. Steps name leases
//! symbolically ([`LeaseRef`]); a [`Session`] resolves each step, in order,
//! into a [`Call`] (a storage [`Op`], or an enqueue through [`Client`], so
//! invalid jobs are refused by [`NewJob::validate`] with the same typed error
//! on every side) against the leases earlier claims really handed out, and
//! moves the pinned clock for time steps.
//!
//! ```
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//! use std::sync::Arc;
//! use stuckless_core::driver::Storage;
//! use stuckless_core::MemStore;
//! use stuckless_testkit::ops::{steps, Session};
//!
//! let mut runner = TestRunner::deterministic();
//! let sequence = steps(1..60).new_tree(&mut runner).unwrap().current();
//! let mut session = Session::new(stuckless_testkit::manual_clock());
//! let store: Arc<dyn Storage> = Arc::new(MemStore::new(session.clock().clone()));
//! stuckless_testkit::block_on(async {
//!     for step in &sequence {
//!         if let Some(call) = session.prepare(step) {
//!             let reply = call.apply(&store).await;
//!             session.record(&reply);
//!         }
//!     }
//! });
//! ```

use std::sync::Arc;
use std::time::Duration;

use proptest::sample::Index;
use serde_json::json;
use stuckless_core::driver::{
    JobCancel, JobCheckpoint, JobClaim, JobComplete, JobCompleteMany, JobEvents, JobFail, JobGet,
    JobHeartbeat, JobPrune, JobReapExpired, JobRelease, JobRequeue, Op, QueueKindsGet, QueueStatsGet, Reply,
    Storage, StorageNow, WorkerDeregister, WorkerHeartbeat, WorkerList, WorkerRegister,
};
use stuckless_core::{Client, Clock, Epoch, JobId, ManualClock, NewJob, Timestamp};

mod strategy;

pub use strategy::{insert_step, job_spec, lease_ref, step, steps};

/// Queue names steps use; the last is invalid (jobs on it are refused).
pub const QUEUES: [&str; 3] = ["default", "mail", "bad queue"];
/// Kinds jobs and claims use.
pub const KINDS: [&str; 2] = ["a", "b"];
/// Worker ids steps use.
pub const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
/// Job ids named directly (cancel, requeue, get, made-up leases) are below this.
pub const MAX_JOB: i64 = 12;

/// A job to insert.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Index into [`QUEUES`].
    pub queue: usize,
    /// Priority.
    pub priority: i16,
    /// Run this long after now; `None`: now.
    pub delay_micros: Option<u32>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Idempotency key `key-<n>`.
    pub key: Option<u8>,
    /// Index into [`KINDS`].
    pub kind: usize,
    /// Time limit on one attempt; 0 is refused alike by every store.
    pub timeout_micros: Option<u32>,
}

/// A lease a step writes with.
#[derive(Clone, Debug)]
pub enum LeaseRef {
    /// One handed out by an earlier claim (fresh or long stale); `(1, 1)`
    /// before any claim.
    Known(Index),
    /// Any pair: unknown jobs, epochs never issued.
    Made {
        /// The job id.
        job: i64,
        /// The epoch.
        epoch: i64,
    },
}

/// One step of a random sequence.
#[derive(Clone, Debug)]
pub enum Step {
    /// Enqueue one job.
    Insert(JobSpec),
    /// Enqueue a batch.
    InsertMany(Vec<JobSpec>),
    /// A job far outside Postgres's time range: refused alike by every store.
    InsertAt {
        /// `run_at`, microseconds since 1970.
        micros: i64,
    },
    /// A claim.
    Claim {
        /// Index into [`WORKERS`].
        worker: usize,
        /// Indexes into the valid [`QUEUES`] (taken modulo 2).
        queues: Vec<usize>,
        /// Most jobs.
        limit: u32,
        /// Lease length.
        lease_micros: u32,
        /// `Duration::MAX` instead: refused alike (over 24 hours).
        huge: bool,
        /// Indexes into [`KINDS`]; `None`: any kind.
        kinds: Option<Vec<usize>>,
    },
    /// A job heartbeat.
    Heartbeat {
        /// Whose lease.
        lease: LeaseRef,
        /// New lease length.
        lease_micros: u32,
        /// Progress `{"pct": n}`.
        progress: Option<u8>,
        /// Progress `Some(null)` instead: stored as a JSON null, not "no change".
        null_progress: bool,
    },
    /// A checkpoint.
    Checkpoint {
        /// Whose lease.
        lease: LeaseRef,
        /// Checkpoint `{"section": n}`.
        section: u8,
        /// A JSON null instead: a value, not "none".
        null: bool,
        /// A checkpoint over the size limit instead: refused alike.
        huge: bool,
    },
    /// A completion.
    Complete(LeaseRef),
    /// A batch of completions.
    CompleteMany(Vec<LeaseRef>),
    /// A failed attempt.
    Fail {
        /// Whose lease.
        lease: LeaseRef,
        /// Retry delay; `None`: permanent.
        retry_micros: Option<u32>,
        /// A 9000-byte error with NULs instead of a short one.
        long_error: bool,
    },
    /// A release.
    Release(LeaseRef),
    /// A reaper pass.
    Reap {
        /// Most jobs to take back.
        limit: u32,
    },
    /// A cancel.
    Cancel {
        /// The job id.
        job: i64,
    },
    /// An operator requeue.
    Requeue {
        /// The job id.
        job: i64,
        /// Revoke a live lease too.
        force: bool,
    },
    /// A read of one job.
    Get {
        /// The job id.
        job: i64,
    },
    /// A read of one job's events.
    Events {
        /// The job id.
        job: i64,
    },
    /// Time passes on the pinned clock.
    Advance {
        /// How much.
        micros: u32,
    },
    /// A worker registers.
    Register {
        /// Index into [`WORKERS`].
        worker: usize,
        /// Its concurrency.
        concurrency: u32,
    },
    /// A worker says it is alive.
    WorkerHeartbeat {
        /// Index into [`WORKERS`].
        worker: usize,
        /// Jobs in flight.
        in_flight: u32,
    },
    /// A worker leaves.
    Deregister {
        /// Index into [`WORKERS`].
        worker: usize,
    },
    /// A retention pass.
    Prune {
        /// Age of succeeded and cancelled jobs to delete.
        finished_micros: u32,
        /// Age of dead jobs to delete.
        dead_micros: u32,
        /// Most jobs to delete.
        limit: u32,
    },
    /// Per-kind counts of unfinished jobs.
    Kinds,
    /// Per-queue counts.
    Stats,
    /// The storage's clock.
    Now,
}

/// What a step asks of a storage.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// Enqueue one job through [`Client::enqueue_job`] (validated first).
    Enqueue(NewJob),
    /// Enqueue a batch through [`Client::enqueue_many`] (validated first).
    EnqueueMany(Vec<NewJob>),
    /// Any other operation, as it is.
    Op(Op),
}

impl Call {
    /// Runs the call on `store`; an enqueue answers as `Reply::JobInsert`/`JobInsertMany`.
    pub async fn apply(self, store: &Arc<dyn Storage>) -> Reply {
        match self {
            Call::Enqueue(job) => Reply::JobInsert(Client::new(store.clone()).enqueue_job(job).await),
            Call::EnqueueMany(jobs) => {
                Reply::JobInsertMany(Client::new(store.clone()).enqueue_many(jobs).await)
            }
            Call::Op(op) => op.apply(&**store).await,
        }
    }
}

/// Resolves steps into calls, in order, remembering what earlier answers
/// handed out: the leases of every claim and the highest job id.
#[derive(Clone, Debug)]
pub struct Session {
    clock: ManualClock,
    leases: Vec<(JobId, Epoch)>,
    max_job_id: i64,
}

impl Session {
    /// A session over the stores' shared pinned `clock`.
    pub fn new(clock: ManualClock) -> Self {
        Session {
            clock,
            leases: Vec::new(),
            max_job_id: 0,
        }
    }

    /// The pinned clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The pinned time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Every lease claims handed out so far, in order.
    pub fn leases(&self) -> &[(JobId, Epoch)] {
        &self.leases
    }

    /// The highest job id any answer named so far.
    pub fn max_job_id(&self) -> i64 {
        self.max_job_id
    }

    /// The lease `lease` stands for now.
    pub fn lease(&self, lease: &LeaseRef) -> (JobId, Epoch) {
        match lease {
            LeaseRef::Known(i) if !self.leases.is_empty() => self.leases[i.index(self.leases.len())],
            LeaseRef::Known(_) => (JobId(1), Epoch(1)),
            LeaseRef::Made { job, epoch } => (JobId(*job), Epoch(*epoch)),
        }
    }

    /// The call `step` makes now, or `None` for a time step (the clock has
    /// moved instead).
    pub fn prepare(&mut self, step: &Step) -> Option<Call> {
        let now = self.now();
        let op = match step {
            Step::Advance { micros } => {
                self.clock.advance(Duration::from_micros(u64::from(*micros)));
                return None;
            }
            Step::Insert(spec) => return Some(Call::Enqueue(new_job(spec, now))),
            Step::InsertMany(specs) => {
                return Some(Call::EnqueueMany(specs.iter().map(|s| new_job(s, now)).collect()))
            }
            Step::InsertAt { micros } => {
                let job = NewJob::new("default", "kind", json!(null)).run_at(Timestamp::from_micros(*micros));
                return Some(Call::Enqueue(job));
            }
            Step::Claim {
                worker,
                queues,
                limit,
                lease_micros,
                huge,
                kinds,
            } => Op::JobClaim(JobClaim {
                worker_id: WORKERS[*worker].into(),
                queues: queues.iter().map(|q| QUEUES[*q % 2].to_string()).collect(),
                limit: *limit,
                lease: if *huge {
                    Duration::MAX
                } else {
                    Duration::from_micros(u64::from(*lease_micros))
                },
                kinds: kinds
                    .as_ref()
                    .map(|ks| ks.iter().map(|k| KINDS[*k].to_string()).collect()),
            }),
            Step::Heartbeat {
                lease,
                lease_micros,
                progress,
                null_progress,
            } => {
                let (id, epoch) = self.lease(lease);
                let progress = if *null_progress {
                    Some(json!(null))
                } else {
                    progress.map(|p| json!({"pct": p}))
                };
                Op::JobHeartbeat(JobHeartbeat {
                    id,
                    epoch,
                    lease: Duration::from_micros(u64::from(*lease_micros)),
                    progress,
                })
            }
            Step::Checkpoint {
                lease,
                section,
                null,
                huge,
            } => {
                let (id, epoch) = self.lease(lease);
                let checkpoint = if *huge {
                    json!("x".repeat(stuckless_core::limits::MAX_CHECKPOINT_BYTES))
                } else if *null {
                    json!(null)
                } else {
                    json!({"section": section})
                };
                Op::JobCheckpoint(JobCheckpoint {
                    id,
                    epoch,
                    checkpoint,
                })
            }
            Step::Complete(lease) => {
                let (id, epoch) = self.lease(lease);
                Op::JobComplete(JobComplete { id, epoch })
            }
            Step::CompleteMany(leases) => Op::JobCompleteMany(JobCompleteMany {
                jobs: leases
                    .iter()
                    .map(|l| {
                        let (id, epoch) = self.lease(l);
                        JobComplete { id, epoch }
                    })
                    .collect(),
            }),
            Step::Fail {
                lease,
                retry_micros,
                long_error,
            } => {
                let (id, epoch) = self.lease(lease);
                let error = if *long_error {
                    "ü\0".repeat(3000)
                } else {
                    format!("failed at {now}")
                };
                Op::JobFail(JobFail {
                    id,
                    epoch,
                    error,
                    retry_after: retry_micros.map(|m| Duration::from_micros(u64::from(m))),
                })
            }
            Step::Release(lease) => {
                let (id, epoch) = self.lease(lease);
                Op::JobRelease(JobRelease { id, epoch })
            }
            Step::Reap { limit } => Op::JobReapExpired(JobReapExpired { limit: *limit }),
            Step::Cancel { job } => Op::JobCancel(JobCancel { id: JobId(*job) }),
            Step::Requeue { job, force } => Op::JobRequeue(JobRequeue {
                id: JobId(*job),
                force: *force,
            }),
            Step::Get { job } => Op::JobGet(JobGet { id: JobId(*job) }),
            Step::Events { job } => Op::JobEvents(JobEvents { id: JobId(*job) }),
            Step::Register { worker, concurrency } => Op::WorkerRegister(WorkerRegister {
                id: WORKERS[*worker].into(),
                queues: vec!["default".into()],
                concurrency: *concurrency,
                metadata: json!({"pid": worker}),
                kinds: vec!["a".into()],
            }),
            Step::WorkerHeartbeat { worker, in_flight } => Op::WorkerHeartbeat(WorkerHeartbeat {
                id: WORKERS[*worker].into(),
                in_flight: *in_flight,
            }),
            Step::Deregister { worker } => Op::WorkerDeregister(WorkerDeregister {
                id: WORKERS[*worker].into(),
            }),
            Step::Prune {
                finished_micros,
                dead_micros,
                limit,
            } => {
                let finished = Duration::from_micros(u64::from(*finished_micros));
                Op::JobPrune(JobPrune {
                    succeeded_after: finished,
                    cancelled_after: finished,
                    dead_after: Duration::from_micros(u64::from(*dead_micros)),
                    limit: *limit,
                })
            }
            Step::Kinds => Op::QueueKindsGet(QueueKindsGet {}),
            Step::Stats => Op::QueueStatsGet(QueueStatsGet {}),
            Step::Now => Op::StorageNow(StorageNow {}),
        };
        Some(Call::Op(op))
    }

    /// Learns from the model's answer to the latest call: the leases a claim
    /// handed out, the ids inserts assigned.
    pub fn record(&mut self, reply: &Reply) {
        match reply {
            Reply::JobClaim(Ok(claimed)) => {
                for c in claimed {
                    let lease = (c.id(), c.epoch());
                    if !self.leases.contains(&lease) {
                        self.leases.push(lease);
                    }
                    self.max_job_id = self.max_job_id.max(c.id().0);
                }
            }
            Reply::JobInsert(Ok(out)) => self.max_job_id = self.max_job_id.max(out.job.id.0),
            Reply::JobInsertMany(Ok(outs)) => {
                for out in outs {
                    self.max_job_id = self.max_job_id.max(out.job.id.0);
                }
            }
            _ => {}
        }
    }
}

/// The job `spec` describes, relative to `now`.
pub fn new_job(spec: &JobSpec, now: Timestamp) -> NewJob {
    let mut job = NewJob::new(
        QUEUES[spec.queue],
        KINDS[spec.kind],
        json!({"p": spec.priority, "k": spec.key}),
    )
    .priority(spec.priority)
    .max_attempts(spec.max_attempts);
    if let Some(d) = spec.delay_micros {
        job = job.run_at(now + Duration::from_micros(u64::from(d)));
    }
    if let Some(k) = spec.key {
        job = job.idempotency_key(format!("key-{k}"));
    }
    if let Some(limit) = spec.timeout_micros {
        job = job.timeout(Duration::from_micros(u64::from(limit)));
    }
    job
}

/// Everything observable about a store, one line per item, for comparing
/// final states: every job up to `max_job_id` (at least `3 * MAX_JOB`) and
/// its events, the worker registry, the queue stats and the clock.
pub async fn snapshot(store: &dyn Storage, max_job_id: i64) -> Vec<String> {
    let mut out = Vec::new();
    for id in 0..=max_job_id.max(MAX_JOB * 3) + 1 {
        let id = JobId(id);
        out.push(format!("job {id}: {:?}", store.job_get(JobGet { id }).await));
        out.push(format!(
            "events {id}: {:?}",
            store.job_events(JobEvents { id }).await
        ));
    }
    out.push(format!("workers: {:?}", store.worker_list(WorkerList {}).await));
    out.push(format!("stats: {:?}", store.queue_stats(QueueStatsGet {}).await));
    out.push(format!(
        "kinds: {:?}",
        store.queue_kinds_get(QueueKindsGet {}).await
    ));
    out.push(format!("now: {:?}", store.storage_now(StorageNow {}).await));
    out
}
