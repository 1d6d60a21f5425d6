//! What a timeline shows, independent of where the run came from.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch (the queue's `Timestamp` resolution).
pub type Micros = i64;

/// A whole run: lanes of workers, their attempts, faults, and waits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Heading of the picture (e.g. "seed 42").
    pub title: String,
    /// Left edge of the time axis.
    pub start: Micros,
    /// Right edge of the time axis.
    pub end: Micros,
    /// One lane per worker, top to bottom in this order.
    pub lanes: Vec<String>,
    /// One bar per attempt.
    pub attempts: Vec<Attempt>,
    /// Faults and notable moments.
    pub marks: Vec<Mark>,
    /// Spans in which a job was due but not running.
    pub waits: Vec<Wait>,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Completed.
    Succeeded,
    /// Failed; the job was retried.
    Retried,
    /// Failed; the job is dead.
    Dead,
    /// Given back at shutdown.
    Released,
    /// Lease expired; the reaper took the job back.
    Reaped,
    /// The worker lost the lease (refused write or local deadline).
    LeaseLost,
    /// The job was cancelled while running.
    Cancelled,
    /// Still running when the picture ends.
    Unfinished,
}

impl Outcome {
    /// Every outcome, in legend order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Succeeded,
        Outcome::Retried,
        Outcome::Dead,
        Outcome::Released,
        Outcome::Reaped,
        Outcome::LeaseLost,
        Outcome::Cancelled,
        Outcome::Unfinished,
    ];

    /// Lowercase name, used as the CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Released => "released",
            Outcome::Reaped => "reaped",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Cancelled => "cancelled",
            Outcome::Unfinished => "unfinished",
        }
    }

    pub(crate) fn colour(self) -> &'static str {
        match self {
            Outcome::Succeeded => "#2e9d4f",
            Outcome::Retried => "#e8912d",
            Outcome::Dead => "#c62828",
            Outcome::Released => "#3f6fd8",
            Outcome::Reaped => "#8e44ad",
            Outcome::LeaseLost => "#b07cc6",
            Outcome::Cancelled => "#8a8a8a",
            Outcome::Unfinished => "#c9c9c9",
        }
    }
}

/// One attempt of one job on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker's lane.
    pub lane: String,
    /// The job.
    pub job_id: i64,
    /// The lease epoch of this attempt.
    pub epoch: i64,
    /// The attempt number.
    pub attempt: i32,
    /// Claim time.
    pub start: Micros,
    /// End time (completion, failure, release, reap...).
    pub end: Micros,
    /// How it ended.
    pub outcome: Outcome,
    /// Extra words for the tooltip (an error, a reason).
    pub note: Option<String>,
}

/// Kinds of marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// A worker crashed (instant).
    Crash,
    /// A worker started or restarted (instant).
    Restart,
    /// A worker was paused (span).
    Pause,
    /// A worker was cut off from the database (span).
    Partition,
    /// The database restarted (instant, every lane).
    DatabaseRestart,
    /// A worker received SIGTERM (instant).
    Sigterm,
    /// The reaper took a job back (instant).
    Reap,
    /// The storage refused a stale write (instant).
    StaleWriteRejected,
    /// The worker's clock was skewed (span).
    ClockSkew,
    /// The external API misbehaved (span, every lane).
    ApiOutage,
}

impl MarkKind {
    /// Lowercase name, used as the CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Crash => "crash",
            MarkKind::Restart => "restart",
            MarkKind::Pause => "pause",
            MarkKind::Partition => "partition",
            MarkKind::DatabaseRestart => "database_restart",
            MarkKind::Sigterm => "sigterm",
            MarkKind::Reap => "reap",
            MarkKind::StaleWriteRejected => "stale_write_rejected",
            MarkKind::ClockSkew => "clock_skew",
            MarkKind::ApiOutage => "api_outage",
        }
    }

    pub(crate) fn glyph(self) -> &'static str {
        match self {
            MarkKind::Crash => "✕",
            MarkKind::Restart => "▲",
            MarkKind::Sigterm => "■",
            MarkKind::Reap => "◆",
            MarkKind::StaleWriteRejected => "!",
            MarkKind::DatabaseRestart => "⟲",
            MarkKind::Pause | MarkKind::Partition | MarkKind::ClockSkew | MarkKind::ApiOutage => "",
        }
    }

    pub(crate) fn colour(self) -> &'static str {
        match self {
            MarkKind::Crash | MarkKind::DatabaseRestart => "#c62828",
            MarkKind::Restart => "#2e9d4f",
            MarkKind::Pause => "#f4d03f",
            MarkKind::Partition => "#7f8c8d",
            MarkKind::Sigterm => "#3f6fd8",
            MarkKind::Reap => "#8e44ad",
            MarkKind::StaleWriteRejected => "#d35400",
            MarkKind::ClockSkew => "#48c9b0",
            MarkKind::ApiOutage => "#f1948a",
        }
    }
}

/// A fault or notable moment; a span when `end` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The worker's lane, or `None` for every lane (database, API).
    pub lane: Option<String>,
    /// What happened.
    pub kind: MarkKind,
    /// When it happened or began.
    pub at: Micros,
    /// When it ended, for spans.
    pub end: Option<Micros>,
    /// Extra words for the tooltip.
    pub note: Option<String>,
}

/// A job that was due but not running, and why if known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    /// The job.
    pub job_id: i64,
    /// When it became due (or was taken back).
    pub start: Micros,
    /// When it was claimed again, or the picture's end.
    pub end: Micros,
    /// Why it waited (e.g. "lease expired, waiting for reaper").
    pub reason: String,
}
