//! When a running attempt is cancelled by its time limit: the job's own,
//! else the limit its worker recorded in the registry for the kind, else
//! that worker's default.

use std::time::Duration;

use serde::Serialize;
use stuckless_core::{Job, Timestamp};

use crate::ops::WorkerView;
use crate::util::human_duration;

/// Where a running attempt's time limit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The job's own (`enqueue --timeout`, `NewJob::timeout`, SQL `timeout`).
    Job,
    /// The worker's `--kind-timeout` for the job's kind.
    WorkerKind,
    /// The worker's `--default-timeout` (`limit_secs` null: off).
    WorkerDefault,
    /// The worker did not record its limits (not registered, or not the
    /// `stuckless` binary): the core's default is assumed.
    AssumedDefault,
}

/// When a running attempt is cancelled by its time limit.
#[derive(Debug, Serialize)]
pub struct TimeLimitView {
    /// The limit in seconds; null: no limit.
    pub limit_secs: Option<f64>,
    /// Where it comes from.
    pub source: LimitSource,
    /// Claim time plus the limit: when the worker cancels the attempt.
    pub cancels_at: Option<Timestamp>,
}

impl TimeLimitView {
    /// The limit of `job`'s attempt held by the worker registered as `holder`.
    pub(super) fn of(job: &Job, holder: Option<&WorkerView>) -> TimeLimitView {
        let recorded = holder.and_then(|w| w.record.metadata.get("time_limits"));
        let micros = |v: &serde_json::Value| v.as_u64().map(Duration::from_micros);
        let (limit, source) = match (job.timeout, recorded) {
            (Some(own), _) => (Some(own), LimitSource::Job),
            (None, Some(limits)) => match limits["kinds_us"].get(&job.kind).and_then(micros) {
                Some(kind) => (Some(kind), LimitSource::WorkerKind),
                None => (micros(&limits["default_us"]), LimitSource::WorkerDefault),
            },
            (None, None) => (Some(stuckless_core::DEFAULT_TIMEOUT), LimitSource::AssumedDefault),
        };
        TimeLimitView {
            limit_secs: limit.map(|d| d.as_secs_f64()),
            source,
            cancels_at: limit.zip(job.claimed_at).map(|(d, at)| at + d),
        }
    }

    /// The limit and when it strikes, in words, judged at `now`.
    pub(super) fn describe(&self, kind: &str, now: Timestamp) -> String {
        let Some(secs) = self.limit_secs else {
            return "none: its worker runs with --default-timeout off, so a hung handler runs until the worker stops"
                .into();
        };
        let limit = human_duration(Duration::from_secs_f64(secs));
        let whose = match self.source {
            LimitSource::Job => format!("{limit}, the job's own"),
            LimitSource::WorkerKind => format!("{limit}, its worker's limit for kind {kind}"),
            LimitSource::WorkerDefault => format!("{limit}, its worker's default"),
            LimitSource::AssumedDefault => format!(
                "the worker's limit for kind {kind} (default {limit}; its worker did not record its limits)"
            ),
        };
        let Some(at) = self.cancels_at else {
            return whose;
        };
        let when = if at > now {
            format!("in {}", human_duration(at.saturating_since(now)))
        } else {
            format!("overdue by {}", human_duration(now.saturating_since(at)))
        };
        let assumed = if self.source == LimitSource::AssumedDefault {
            "at the default, "
        } else {
            ""
        };
        format!("{whose}: {assumed}the attempt is cancelled at {at} ({when}) unless it finishes first")
    }
}
