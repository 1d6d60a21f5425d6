//! The one list of storage operations, and everything derived from it.
//!
//! [`storage_ops!`] names each operation once: its method, its params struct
//! and what it answers. From that list this module generates the [`Storage`]
//! trait, its forwarders for `Arc<S>` and `Box<S>`, and the serialisable
//! [`Op`]/[`Reply`] pair; [`Hooked`](super::Hooked) and
//! [`Remote`](super::Remote) implement `Storage` from the same list. Adding an
//! operation means one line here, its params struct, and its implementations
//! in each storage (and the test kit's cases for it): nothing else.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::outcomes::{
    CompleteOutcome, FailOutcome, InsertOutcome, KindStats, PruneOutcome, QueueStats, ReapOutcome,
    WorkerRecord,
};
use super::params::*;
use crate::error::StorageError;
use crate::job::{ClaimedJob, Job, JobEvent};
use crate::time::Timestamp;

/// Result of a storage call.
pub type StorageResult<T> = Result<T, StorageError>;

/// Calls `$callback! { … }` with every storage operation as
/// `/// docs  method(Params) -> Output;`.
///
/// The list is the specification's table of contents; the doc comment of each
/// entry is the operation's contract, which [`MemStore`](crate::MemStore)
/// models and every storage's conformance run checks.
#[macro_export]
macro_rules! storage_ops {
    ($callback:ident) => {
        $callback! {
            /// Inserts a job, or returns the existing job with the same
            /// idempotency key. `run_at` defaults to now. The new job is
            /// queued at attempt 0, epoch 0.
            job_insert(JobInsert) -> InsertOutcome;
            /// Inserts many jobs, as if by `job_insert` in order, atomically.
            job_insert_many(JobInsertMany) -> Vec<InsertOutcome>;
            /// Claims up to `limit` due jobs (queued, `run_at <= now`, in one
            /// of `queues`) by priority desc, `run_at`, id. Each claimed job
            /// becomes running with attempt + 1, epoch + 1, owner,
            /// `claimed_at = heartbeat_at = now`, `lease_expires_at = now +
            /// lease`, progress cleared (the checkpoint kept). Two
            /// concurrent claims never take the same job.
            job_claim(JobClaim) -> Vec<ClaimedJob>;
            /// Extends the lease to now + `lease` and sets `heartbeat_at =
            /// now`; stores `progress` when given. Returns the new expiry.
            job_heartbeat(JobHeartbeat) -> Timestamp;
            /// Stores `checkpoint` on a running job the caller holds, with
            /// `checkpointed_at = now`; fenced like a heartbeat, same
            /// refusals, and the lease is not extended. Returns
            /// `checkpointed_at`. The checkpoint outlives its attempt: claim,
            /// release, reap, retry, requeue and complete all keep it, so the
            /// next attempt resumes from it.
            job_checkpoint(JobCheckpoint) -> Timestamp;
            /// Marks the job succeeded. Idempotent for the same epoch.
            job_complete(JobComplete) -> CompleteOutcome;
            /// Completes many jobs; one result per input, in input order.
            job_complete_many(JobCompleteMany) -> Vec<StorageResult<CompleteOutcome>>;
            /// Records a failed attempt: queued at now + delay if attempts
            /// remain and the error is retryable, else dead. Stores the error.
            job_fail(JobFail) -> FailOutcome;
            /// Gives a running job back unfinished (graceful shutdown):
            /// queued, due now, its attempt count decremented so the release
            /// costs no attempt.
            job_release(JobRelease) -> ();
            /// Takes back up to `limit` running jobs whose lease expired
            /// (`lease_expires_at <= now`), ascending id: queued and due now,
            /// or dead (error "lease expired") if that was their last attempt.
            /// Idempotent and safe to run from many workers at once.
            job_reap_expired(JobReapExpired) -> ReapOutcome;
            /// Deletes up to `limit` finished jobs, and their events, whose
            /// `finished_at` is at least the status's age before now: oldest
            /// finish first. Non-terminal jobs are never touched. Safe to run
            /// from many workers at once.
            job_prune(JobPrune) -> PruneOutcome;
            /// Cancels a queued or running job (a running holder's later
            /// writes are refused). Cancelling a cancelled job returns it
            /// unchanged; a succeeded or dead job is `WrongStatus`.
            job_cancel(JobCancel) -> Job;
            /// Operator requeue: a dead job, or a running job whose lease
            /// expired, becomes queued and due now (a dead job with its
            /// attempts reset to 0). A running job with a live lease needs
            /// `force`; its holder is then refused on its next write. Other
            /// statuses are `WrongStatus`. A requeued running job keeps its
            /// attempt count, so requeueing one on its last attempt grants
            /// it one attempt beyond `max_attempts`: the operator asked.
            job_requeue(JobRequeue) -> Job;
            /// The job, if it exists.
            job_get(JobGet) -> Option<Job>;
            /// The job's timeline, oldest first. Unknown id: empty.
            job_events(JobEvents) -> Vec<JobEvent>;
            /// Adds or replaces a worker in the registry; its heartbeat is now.
            worker_register(WorkerRegister) -> ();
            /// Records that a worker is alive with `in_flight` jobs;
            /// `WorkerNotFound` if it is not registered.
            worker_heartbeat(WorkerHeartbeat) -> ();
            /// Removes a worker from the registry. Unknown ids are ignored.
            worker_deregister(WorkerDeregister) -> ();
            /// Registered workers, ascending id.
            worker_list(WorkerList) -> Vec<WorkerRecord>;
            /// Per-queue counts, ascending queue name; queues with no jobs
            /// are absent.
            queue_stats(QueueStatsGet) -> Vec<QueueStats>;
            /// Per queue and kind, counts of non-terminal jobs, ascending
            /// (queue, kind); pairs with none are absent. Costs the same
            /// however many finished jobs the table holds.
            queue_kinds_get(QueueKindsGet) -> Vec<KindStats>;
            /// The storage's current time: the clock every lease is judged by.
            storage_now(StorageNow) -> Timestamp;
        }
    };
}

/// One operation's params struct, tied to its place in [`Op`] and [`Reply`].
pub trait Operation: Send + 'static {
    /// What the operation answers on success.
    type Output: Send + 'static;
    /// The method name, e.g. `"job_claim"`.
    const NAME: &'static str;
    /// Wraps the params as an [`Op`].
    fn into_op(self) -> Op;
    /// Wraps an answer to this operation as a [`Reply`].
    fn into_reply(result: StorageResult<Self::Output>) -> Reply;
    /// Unwraps a reply to this operation; a reply to another one is refused
    /// as [`StorageError::Other`].
    fn from_reply(reply: Reply) -> StorageResult<Self::Output>;
}

macro_rules! define_storage {
    ($( $(#[$doc:meta])* $method:ident($Params:ident) -> $Out:ty; )*) => {
        /// The jobs table and worker registry: one method per operation,
        /// each taking its params struct. See the [module docs](crate::driver)
        /// for the rules every implementation follows.
        #[async_trait]
        pub trait Storage: Send + Sync + 'static {
            $( $(#[$doc])* async fn $method(&self, params: $Params) -> StorageResult<$Out>; )*
        }

        #[async_trait]
        impl<S: Storage + ?Sized> Storage for Arc<S> {
            $( async fn $method(&self, params: $Params) -> StorageResult<$Out> {
                (**self).$method(params).await
            } )*
        }

        #[async_trait]
        impl<S: Storage, H: super::Hook> Storage for super::Hooked<S, H> {
            $( async fn $method(&self, params: $Params) -> StorageResult<$Out> {
                self.dispatch(params).await
            } )*
        }

        #[async_trait]
        impl<T: super::Transport> Storage for super::Remote<T> {
            $( async fn $method(&self, params: $Params) -> StorageResult<$Out> {
                self.dispatch(params).await
            } )*
        }

        #[async_trait]
        impl<S: Storage + ?Sized> Storage for Box<S> {
            $( async fn $method(&self, params: $Params) -> StorageResult<$Out> {
                (**self).$method(params).await
            } )*
        }

        /// One storage call as data: what the simulator sends over its
        /// network and what [`Hook`](super::Hook)s see.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[allow(missing_docs)]
        pub enum Op {
            $( $Params($Params), )*
        }

        /// The answer to an [`Op`], error included.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[allow(missing_docs)]
        pub enum Reply {
            $( $Params(StorageResult<$Out>), )*
        }

        impl Op {
            /// The method name, e.g. `"job_claim"`.
            pub fn name(&self) -> &'static str {
                match self { $( Op::$Params(_) => stringify!($method), )* }
            }

            /// Runs the operation on `storage`.
            pub async fn apply<S: Storage + ?Sized>(self, storage: &S) -> Reply {
                match self { $( Op::$Params(p) => Reply::$Params(storage.$method(p).await), )* }
            }

            /// The reply this operation gets when it fails with `error`.
            pub fn refuse(&self, error: StorageError) -> Reply {
                match self { $( Op::$Params(_) => Reply::$Params(Err(error)), )* }
            }
        }

        impl Reply {
            /// The method name of the operation answered.
            pub fn name(&self) -> &'static str {
                match self { $( Reply::$Params(_) => stringify!($method), )* }
            }

            /// The error, when the whole operation failed.
            pub fn error(&self) -> Option<&StorageError> {
                match self { $( Reply::$Params(r) => r.as_ref().err(), )* }
            }
        }

        $(
            impl Operation for $Params {
                type Output = $Out;
                const NAME: &'static str = stringify!($method);
                fn into_op(self) -> Op {
                    Op::$Params(self)
                }
                fn into_reply(result: StorageResult<$Out>) -> Reply {
                    Reply::$Params(result)
                }
                fn from_reply(reply: Reply) -> StorageResult<$Out> {
                    match reply {
                        Reply::$Params(result) => result,
                        #[allow(unreachable_patterns)]
                        other => Err(mismatch(Self::NAME, other.name())),
                    }
                }
            }

            impl From<$Params> for Op {
                fn from(params: $Params) -> Op {
                    Op::$Params(params)
                }
            }
        )*
    };
}

storage_ops!(define_storage);

fn mismatch(asked: &str, answered: &str) -> StorageError {
    StorageError::Other(format!("{asked} was answered as if it were {answered}"))
}
