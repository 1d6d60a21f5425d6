//! What can be observed: [`Observation`], and the [`JobRow`] samples carry.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::driver::{CompleteOutcome, FailOutcome};
use stuckless_core::{Epoch, Job, JobId, JobStatus, Timestamp};

use crate::plan::Fault;

/// One job's row as the store holds it, for samples and end-of-run checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// The job.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The latest claim's epoch.
    pub epoch: Epoch,
    /// The attempt number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its kind: only a worker with a handler for it can run it.
    pub kind: String,
    /// The latest lease owner.
    pub lease_owner: Option<String>,
    /// When the lease runs out, while running.
    pub lease_expires_at: Option<Timestamp>,
    /// When it is (or was) due.
    pub run_at: Timestamp,
    /// Its last change.
    pub updated_at: Timestamp,
    /// When it became terminal.
    pub finished_at: Option<Timestamp>,
}

impl From<&Job> for JobRow {
    fn from(job: &Job) -> Self {
        JobRow {
            id: job.id,
            status: job.status,
            epoch: job.epoch,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            kind: job.kind.clone(),
            lease_owner: job.lease_owner.clone(),
            lease_expires_at: job.lease_expires_at,
            run_at: job.run_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

/// Why the db refused a write.
/// A worker host that was up and not shutting down when the rows were read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpWorker {
    /// Its name (its worker id).
    pub name: String,
    /// The kinds its release has handlers for.
    pub kinds: Vec<String>,
    /// Whether it held fewer running leases than its concurrency.
    pub room: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The epoch presented is not the job's current one.
    StaleEpoch,
    /// The job is not in a status that allows the write.
    WrongStatus,
    /// No such job.
    NotFound,
    /// The db was not reachable or timed out: nothing was judged.
    Unavailable,
    /// Anything else.
    Other,
}

/// One fact about a run, stamped with when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Observation {
    /// The db answered one call (whatever it was).
    Answered {
        /// When.
        at: Timestamp,
        /// The caller.
        from: String,
        /// The call's short name.
        op: String,
    },
    /// An enqueue: a new job, or an existing one found by its key.
    Inserted {
        /// When.
        at: Timestamp,
        /// The caller.
        from: String,
        /// The job.
        job: JobId,
        /// Whether a row was created (false: duplicate key).
        new: bool,
        /// Its status.
        status: JobStatus,
        /// Its epoch.
        epoch: Epoch,
        /// Its attempt number.
        attempt: i32,
        /// Attempts allowed.
        max_attempts: i32,
        /// When it is due.
        run_at: Timestamp,
    },
    /// The db handed a job to a worker.
    Claimed {
        /// When.
        at: Timestamp,
        /// The claiming worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The new epoch.
        epoch: Epoch,
        /// The new attempt number.
        attempt: i32,
        /// Attempts allowed.
        max_attempts: i32,
        /// The lease owner the db recorded.
        lease_owner: Option<String>,
        /// The lease the db granted, when known.
        lease_expires_at: Option<Timestamp>,
    },
    /// The db extended a lease.
    HeartbeatAccepted {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// The new lease end.
        lease_expires_at: Timestamp,
    },
    /// The db answered a completion.
    Completed {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// What the db did.
        outcome: CompleteOutcome,
    },
    /// The db accepted a failure.
    Failed {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// The handler's error.
        error: String,
        /// Whether the worker asked for a retry (false when unknown).
        retryable: bool,
        /// What the db did.
        outcome: FailOutcome,
    },
    /// The db accepted a job given back at shutdown.
    Released {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
    },
    /// The reaper took a job back.
    Reaped {
        /// When.
        at: Timestamp,
        /// The worker whose reaper did it.
        by: String,
        /// The job.
        job: JobId,
        /// To dead (last attempt) rather than queued.
        dead: bool,
        /// When the lease had expired, if the db said (Postgres does).
        lease_expired_at: Option<Timestamp>,
    },
    /// The db accepted a cancel.
    Cancelled {
        /// When.
        at: Timestamp,
        /// The caller.
        by: String,
        /// The job.
        job: JobId,
        /// The status the db reported after it.
        status: JobStatus,
    },
    /// The db accepted an operator's requeue.
    Requeued {
        /// When.
        at: Timestamp,
        /// The caller.
        by: String,
        /// The job.
        job: JobId,
    },
    /// The db refused a write on a job, or could not answer it.
    WriteRefused {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The call refused (`complete` for one item of a batch).
        op: String,
        /// The epoch presented, for fenced writes.
        epoch: Option<Epoch>,
        /// Refused as one item of a batched write, not as the whole call.
        in_batch: bool,
        /// Why.
        refusal: Refusal,
        /// The job's current epoch, when the db said.
        current: Option<Epoch>,
        /// The db's reason, verbatim.
        detail: String,
    },
    /// A worker's runtime started an attempt.
    AttemptStarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it holds.
        epoch: Epoch,
        /// How long the job had waited while due.
        pickup_latency: Duration,
    },
    /// A worker's runtime ended an attempt (wrote its result, gave it back,
    /// or had a write refused).
    AttemptEnded {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
    },
    /// A worker's runtime gave an attempt up (refused heartbeat, local lease
    /// deadline, timeout, shutdown); this ends the attempt too.
    LeaseLost {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// A handler's work for an attempt finished (the real-process run's side
    /// table records it; the simulator does not emit this).
    WorkFinished {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
    },
    /// A prune pass the db answered: the finished jobs it deleted, by the
    /// status they had.
    Pruned {
        /// When.
        at: Timestamp,
        /// The worker whose pruner did it.
        by: String,
        /// Succeeded jobs deleted.
        succeeded: u64,
        /// Cancelled jobs deleted.
        cancelled: u64,
        /// Dead jobs deleted.
        dead: u64,
    },
    /// A worker's claim, reap or prune failed, `consecutive` times in a row.
    CallFailed {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The operation.
        operation: String,
        /// The error.
        error: String,
        /// Failures in a row, this one included.
        consecutive: u32,
    },
    /// A handler began its work on an attempt (the simulator's handler says
    /// so; an attempt a worker failed without running a handler has none).
    HandlerStarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it holds.
        epoch: Epoch,
    },
    /// The db accepted a checkpoint.
    CheckpointSaved {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// What was saved.
        checkpoint: serde_json::Value,
    },
    /// A sectioned handler started an attempt from the checkpoint its
    /// claim handed over.
    Resumed {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it holds.
        epoch: Epoch,
        /// The checkpoint it was handed (`None`: it starts from scratch).
        checkpoint: Option<serde_json::Value>,
    },
    /// A sectioned handler started one section of its work.
    SectionStarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it holds.
        epoch: Epoch,
        /// The section, from 1.
        section: u64,
    },
    /// A job's row was written past the storage's checks with a `run_at` no
    /// claim can read (a poison row), as raw SQL could before the schema
    /// refused it.
    PoisonWritten {
        /// When.
        at: Timestamp,
        /// Who wrote it.
        by: String,
        /// The job.
        job: JobId,
        /// The unreadable `run_at`.
        run_at: Timestamp,
    },
    /// The store moved a row no claim can read to dead, with this error (its
    /// own word, as a `dead` event in Postgres's log says it).
    Buried {
        /// When it was seen.
        at: Timestamp,
        /// The job.
        job: JobId,
        /// The error the store recorded.
        error: String,
    },
    /// A rolling deploy stopped a worker (SIGTERM) to bring it back on the
    /// new release, which handles `kinds`.
    Deployed {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The kinds the new release handles.
        kinds: Vec<String>,
    },
    /// The driver injected a fault.
    FaultInjected {
        /// When.
        at: Timestamp,
        /// What.
        fault: Fault,
        /// Whether it changed anything (a crash of a host already down did not).
        took_effect: bool,
    },
    /// `who` (a worker, or `*` for everyone) was under a fault in this window.
    FaultWindow {
        /// Worker id, or `*`.
        who: String,
        /// Start.
        from: Timestamp,
        /// End.
        until: Timestamp,
    },
    /// A worker host (re)started.
    Restarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
    },
    /// From here on liveness is owed: the simulator's heal ended every fault,
    /// or a substrate promises liveness throughout.
    Healed {
        /// When.
        at: Timestamp,
    },
    /// The store's rows at one instant.
    Sampled {
        /// When.
        at: Timestamp,
        /// Every row, in the store's order.
        jobs: Vec<JobRow>,
        /// Whether some healthy worker had a free slot.
        free_capacity: bool,
        /// The worker hosts up and not shutting down, in name order.
        #[serde(default)]
        up: Vec<UpWorker>,
    },
    /// A worker finished a graceful shutdown it began at `since`.
    ShutdownFinished {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
        /// When its SIGTERM came.
        since: Timestamp,
        /// The store's rows then.
        jobs: Vec<JobRow>,
    },
    /// The liveness phase ran out: every job should be terminal by now.
    Ended {
        /// When.
        at: Timestamp,
        /// The store's rows then.
        jobs: Vec<JobRow>,
    },
}

impl Observation {
    /// When it happened (a fault window: when it began).
    pub fn at(&self) -> Timestamp {
        match self {
            Observation::FaultWindow { from, .. } => *from,
            Observation::Answered { at, .. }
            | Observation::Inserted { at, .. }
            | Observation::Claimed { at, .. }
            | Observation::HeartbeatAccepted { at, .. }
            | Observation::Completed { at, .. }
            | Observation::Failed { at, .. }
            | Observation::Released { at, .. }
            | Observation::Reaped { at, .. }
            | Observation::Cancelled { at, .. }
            | Observation::Requeued { at, .. }
            | Observation::WriteRefused { at, .. }
            | Observation::AttemptStarted { at, .. }
            | Observation::AttemptEnded { at, .. }
            | Observation::LeaseLost { at, .. }
            | Observation::WorkFinished { at, .. }
            | Observation::Pruned { at, .. }
            | Observation::CallFailed { at, .. }
            | Observation::HandlerStarted { at, .. }
            | Observation::CheckpointSaved { at, .. }
            | Observation::Resumed { at, .. }
            | Observation::SectionStarted { at, .. }
            | Observation::PoisonWritten { at, .. }
            | Observation::Buried { at, .. }
            | Observation::Deployed { at, .. }
            | Observation::FaultInjected { at, .. }
            | Observation::Restarted { at, .. }
            | Observation::Healed { at }
            | Observation::Sampled { at, .. }
            | Observation::ShutdownFinished { at, .. }
            | Observation::Ended { at, .. } => *at,
        }
    }
}
