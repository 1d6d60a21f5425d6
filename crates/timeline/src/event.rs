//! The neutral event stream a timeline is reconstructed from.
//!
//! Both front ends — the simulator's recorded facts and a real database's
//! `job_events` plus job rows — map what they know into [`TimelineEvent`]s;
//! [`crate::reconstruct`] turns the stream into the [`crate::Timeline`] the
//! renderer draws, by one set of rules. Times are plain microseconds; jobs
//! and epochs plain integers; workers plain names.

use crate::model::{Mark, Micros};

/// How the database ended an attempt with a write it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Completion accepted.
    Succeeded,
    /// Failure accepted; runnable again at `run_at` when known (a retry's
    /// backoff is not a wait, so an unknown `run_at` draws no wait at all).
    Retried {
        /// When the retry is due, if known.
        run_at: Option<Micros>,
    },
    /// Failure accepted; the job is dead.
    Dead,
    /// Given back at shutdown; due again at once.
    Released,
}

/// One thing that happened to a job, a worker or the run.
///
/// Events come in the order they happened. [`TimelineEvent::Mark`] and
/// [`TimelineEvent::Capacity`] change no job and may come in any order.
#[derive(Clone, Debug, PartialEq)]
pub enum TimelineEvent {
    /// The job exists. Due at `max(at, run_at)` when `run_at` is known;
    /// with it unknown the job's first wait is not drawn. Also bounds an
    /// unlogged first claim: no claim happens before the job exists.
    Created {
        /// When the job was created.
        at: Micros,
        /// The job.
        job: i64,
        /// When it first became runnable, if known.
        run_at: Option<Micros>,
    },
    /// A worker claimed the job: an attempt begins. A second claim of the
    /// same epoch is ignored.
    Claimed {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The new epoch.
        epoch: i64,
        /// The attempt number.
        attempt: i32,
        /// The claiming worker, if known.
        worker: Option<String>,
    },
    /// The attempt's worker was alive and renewing its lease at `at`.
    Heartbeat {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The epoch heartbeated.
        epoch: i64,
    },
    /// The database accepted a write that ended attempt `epoch`. Without a
    /// claim of that epoch, the claim is inferred (see [`crate::reconstruct`]).
    Ended {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The epoch presented.
        epoch: i64,
        /// The attempt number, for an attempt whose claim was not seen.
        attempt: Option<i32>,
        /// The writing worker, if known.
        worker: Option<String>,
        /// What the write did.
        finish: Finish,
        /// The handler's error, for failures.
        error: Option<String>,
    },
    /// The reaper took the job back from the holder of `epoch`.
    Reaped {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The epoch taken back.
        epoch: i64,
        /// The attempt number, for an attempt whose claim was not seen.
        attempt: Option<i32>,
        /// The lease holder, if known.
        holder: Option<String>,
        /// The worker whose reaper did it, if known.
        by: Option<String>,
        /// When the holder's lease ran out, if known.
        lease_expiry: Option<Micros>,
        /// Reaped to dead (last attempt) rather than queued.
        dead: bool,
    },
    /// The job was cancelled; ends the running attempt (of `epoch`, or the
    /// latest when `None`) if one is known to be running.
    Cancelled {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The job's epoch at the cancel, if known.
        epoch: Option<i64>,
    },
    /// An operator requeued the job; ends attempt `epoch` if it is known to
    /// be running, and the job is due at once.
    Requeued {
        /// When.
        at: Micros,
        /// The job.
        job: i64,
        /// The job's epoch at the requeue.
        epoch: i64,
    },
    /// The database refused a fenced write (stale epoch or wrong status):
    /// the worker stopped working on the attempt here, if it had not yet.
    Refused {
        /// When.
        at: Micros,
        /// The writing worker.
        worker: String,
        /// The job.
        job: i64,
        /// The epoch presented.
        epoch: i64,
        /// The refused operation.
        op: String,
        /// The database's reason.
        detail: String,
    },
    /// The worker stopped working on attempt `epoch` (gave it up: refused
    /// heartbeat, local lease deadline, timeout; or its lease ran out).
    Stopped {
        /// When.
        at: Micros,
        /// The worker.
        worker: String,
        /// The job.
        job: i64,
        /// The epoch it held.
        epoch: i64,
        /// Words for the tooltip, e.g. "w1 gave it up (timeout) at +3.0s".
        note: String,
    },
    /// A worker crashed: every attempt it was still working on stops here.
    Crashed {
        /// When.
        at: Micros,
        /// The worker.
        worker: String,
        /// Words for the crash mark's tooltip.
        note: Option<String>,
    },
    /// Whether some healthy worker had a free slot changed; a wait that began
    /// while none had one says it was waiting for capacity.
    Capacity {
        /// When.
        at: Micros,
        /// A free slot existed.
        free: bool,
    },
    /// A mark drawn as given (pauses, partitions, restarts, shutdowns...).
    Mark(Mark),
}

impl TimelineEvent {
    /// When it happened (a span mark: when it began).
    pub fn at(&self) -> Micros {
        match self {
            TimelineEvent::Created { at, .. }
            | TimelineEvent::Claimed { at, .. }
            | TimelineEvent::Heartbeat { at, .. }
            | TimelineEvent::Ended { at, .. }
            | TimelineEvent::Reaped { at, .. }
            | TimelineEvent::Cancelled { at, .. }
            | TimelineEvent::Requeued { at, .. }
            | TimelineEvent::Refused { at, .. }
            | TimelineEvent::Stopped { at, .. }
            | TimelineEvent::Crashed { at, .. }
            | TimelineEvent::Capacity { at, .. } => *at,
            TimelineEvent::Mark(mark) => mark.at,
        }
    }
}

/// The picture's frame: what the events are drawn into.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Heading of the picture.
    pub title: String,
    /// Left edge of the time axis; earlier parts of bars and waits are cut.
    pub start: Micros,
    /// Right edge; later parts are cut, and what is still open ends here.
    pub end: Micros,
    /// Lanes drawn first, in this order (e.g. every worker of a run, busy or
    /// not); lanes of other workers seen follow in name order.
    pub lanes: Vec<String>,
    /// How a time reads in a tooltip (e.g. "+12.5s" or RFC 3339).
    pub time: fn(Micros) -> String,
}

impl Frame {
    /// A frame from `start` to `end`, no fixed lanes, times in microseconds.
    pub fn new(title: impl Into<String>, start: Micros, end: Micros) -> Self {
        Frame {
            title: title.into(),
            start,
            end,
            lanes: Vec::new(),
            time: |t| format!("{t}µs"),
        }
    }
}
