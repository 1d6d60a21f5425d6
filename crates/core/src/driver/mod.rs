//! The storage driver interface: what a storage (Postgres, the in-memory
//! model, the simulator's networked store) implements. Applications use
//! [`Client`](crate::Client) and [`Worker`](crate::Worker) instead.
//!
//! Every operation is declared once, in [`ops`]: a method of [`Storage`]
//! taking one params struct named Noun-Verb ([`JobClaim`], [`JobHeartbeat`],
//! …). The same list gives the `Arc`/`Box` forwarders, the serialisable
//! [`Op`]/[`Reply`] pair, [`Hooked`] (hooks around every call) and [`Remote`]
//! (a storage behind any [`Transport`]).
//!
//! Its documented semantics are the specification every storage meets: the
//! in-memory [`MemStore`](crate::MemStore) is the executable model, and the
//! conformance suite holds Postgres to it operation for operation.
//!
//! # Rules every implementation follows
//!
//! - **Time is the storage's.** "now" below is the storage's own clock
//!   (Postgres: the database's `now()`, or a pinned time in tests), never the
//!   caller's, so a worker with a skewed clock cannot expire a live lease.
//! - **Fencing.** Each claim increments the job's [`Epoch`](crate::Epoch) and its attempt.
//!   Every later write names `(id, epoch)`. The checks, in order: unknown id →
//!   [`StorageError::NotFound`](crate::StorageError::NotFound); epoch not current → [`StorageError::StaleEpoch`](crate::StorageError::StaleEpoch);
//!   job not `running` → [`StorageError::WrongStatus`](crate::StorageError::WrongStatus). A refused write changes
//!   nothing.
//! - **Lease expiry** does not by itself fence a holder: until the reaper (or a
//!   requeue) moves an expired job, its holder may still heartbeat or complete
//!   it, because nobody else can hold it.
//! - **Validation first.** A job to insert is a [`ValidJob`](crate::ValidJob),
//!   which only [`NewJob::validate`](crate::NewJob::validate) makes, so no
//!   storage can forget to check it. Other bad input is refused with
//!   [`StorageError::Invalid`](crate::StorageError::Invalid) (each params
//!   struct's `validate`) before anything is written: names, JSON (size, NUL), `run_at` within
//!   years 1..=9999, leases and retry delays of at most 100 years, and a
//!   worker registration's id, queue names and metadata (as progress: 64 KiB).
//! - **Events.** Abnormal transitions (retried, dead, reaped, released,
//!   cancelled, requeued) always append a [`JobEvent`](crate::JobEvent); inserted, claimed and
//!   completed are appended only when the storage's happy-path logging is on.
//! - **Ordering.** Claims take due jobs by priority (high first), then
//!   `run_at`, then id. Lists are returned in a documented, deterministic order.

mod hooked;
pub mod ops;
mod outcomes;
mod params;
mod remote;

pub use hooked::{Flow, Hook, Hooked};
pub use ops::{Op, Operation, Reply, Storage, StorageResult};
pub use outcomes::{
    is_reapable, requeue_detail, CompleteOutcome, FailOutcome, InsertOutcome, KindStats, PruneOutcome,
    QueueStats, ReapOutcome, WorkerRecord,
};
pub use params::{
    JobCancel, JobCheckpoint, JobClaim, JobComplete, JobCompleteMany, JobEvents, JobFail, JobGet,
    JobHeartbeat, JobInsert, JobInsertMany, JobPrune, JobReapExpired, JobRelease, JobRequeue, QueueKindsGet,
    QueueStatsGet, StorageNow, WorkerDeregister, WorkerHeartbeat, WorkerList, WorkerRegister,
};
pub use remote::{Remote, Transport};
