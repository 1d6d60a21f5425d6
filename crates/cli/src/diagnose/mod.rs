//! `stuckless diagnose <job-id>`: the seed document's question — why is this
//! job not moving? — answered from the tables alone, against the database's
//! clock, with the one safe command that fixes it. The human rendering is in
//! `render.rs`, a running attempt's time limit in `time_limit.rs`.

mod render;
#[cfg(test)]
mod tests;
mod time_limit;

use std::time::Duration;

use serde::Serialize;
use stuckless_core::driver::{JobEvents, JobGet, Storage, StorageNow, WorkerList};
use stuckless_core::{Job, JobEvent, JobId, JobStatus, StorageError, Timestamp};

use crate::coverage::Coverage;
use crate::ops::{worker_view, WorkerView};
use crate::util::human_duration;

pub use time_limit::{LimitSource, TimeLimitView};

/// The named cases; three of them are the seed document's scenarios A, B
/// and C, whose letters are kept as a cross-reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// Scenario A: running, lease expired; nobody has reaped it yet.
    ExpiredLease,
    /// Scenario B: running, lease valid, its worker alive: slow, not stuck.
    SlowButAlive,
    /// Running with a valid lease whose worker is gone (stale or unregistered):
    /// scenario A in the making; it becomes reapable when the lease runs out.
    WorkerGone,
    /// Scenario C: queued and due, but no live worker serves its queue.
    NoLiveWorker,
    /// Queued and due; live workers serve its queue, but none has a handler
    /// for its kind (e.g. a kind added in a deploy still rolling out).
    UnhandledKind,
    /// Queued and due with live workers serving the queue: waiting its turn.
    WaitingForCapacity,
    /// Queued with `run_at` in the future (a delay or a retry backoff).
    Scheduled,
    /// Dead: permanent error or attempts used up.
    Dead,
    /// Cancelled.
    Cancelled,
    /// Succeeded.
    Succeeded,
}

impl Case {
    /// The scenario letter of the seed document, if the case is one of them.
    pub fn scenario(self) -> Option<char> {
        match self {
            Case::ExpiredLease => Some('A'),
            Case::SlowButAlive => Some('B'),
            Case::NoLiveWorker => Some('C'),
            _ => None,
        }
    }

    /// What the case means, in a few words.
    pub fn title(self) -> &'static str {
        match self {
            Case::ExpiredLease => "lease expired, not reaped",
            Case::SlowButAlive => "running, lease valid: slow or waiting on an external call",
            Case::WorkerGone => "running, lease still valid, but its worker is gone",
            Case::NoLiveWorker => "due, nobody claiming: no live worker serves its queue",
            Case::UnhandledKind => "due, nobody claiming: no live worker handles its kind",
            Case::WaitingForCapacity => "due, waiting for a free worker slot",
            Case::Scheduled => "scheduled for later",
            Case::Dead => "dead, will not be retried",
            Case::Cancelled => "cancelled",
            Case::Succeeded => "succeeded",
        }
    }

    /// The title with the scenario letter as a cross-reference, e.g.
    /// `lease expired, not reaped (scenario A)`.
    pub fn headline(self) -> String {
        match self.scenario() {
            Some(letter) => format!("{} (scenario {letter})", self.title()),
            None => self.title().to_owned(),
        }
    }
}

/// The lease as judged now.
#[derive(Debug, Serialize)]
pub struct LeaseView {
    /// The holder.
    pub owner: Option<String>,
    /// Expiry (storage clock).
    pub expires_at: Timestamp,
    /// Whether it has expired.
    pub expired: bool,
    /// Seconds since expiry (positive) or until expiry (negative).
    pub expired_for_secs: f64,
}

/// Everything `diagnose` found.
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    /// The named case (machine-readable, e.g. `expired_lease`).
    pub case: Case,
    /// The seed document's scenario letter, if any.
    pub scenario: Option<String>,
    /// What the case means, for people (without the letter).
    pub title: &'static str,
    /// The storage's time everything was judged at.
    pub now: Timestamp,
    /// The job row.
    pub job: Job,
    /// The lease, while running.
    pub lease: Option<LeaseView>,
    /// The lease owner's registry entry (absent: not registered).
    pub lease_worker: Option<WorkerView>,
    /// Live workers serving the job's queue.
    pub live_workers_for_queue: Vec<String>,
    /// The kinds those workers have handlers for.
    pub live_kinds_for_queue: Vec<String>,
    /// A running attempt's time limit (while its worker is alive).
    pub time_limit: Option<TimeLimitView>,
    /// Time since the latest job heartbeat, in seconds.
    pub heartbeat_age_secs: Option<f64>,
    /// The job's timeline, oldest first.
    pub events: Vec<JobEvent>,
    /// What is going on, in sentences.
    pub explanation: String,
    /// The safe command that fixes it, if one is needed.
    pub fix: Option<String>,
    /// Why that command is safe, or what else to do.
    pub fix_note: Option<String>,
}

fn ago(d: Duration) -> String {
    format!("{} ago", human_duration(d))
}

/// Diagnoses job `id` as of the storage's clock.
pub async fn diagnose(storage: &dyn Storage, id: JobId, stale_after: Duration) -> anyhow::Result<Diagnosis> {
    let unavailable = |e: StorageError| anyhow::anyhow!("could not diagnose job {id}: {e}");
    let now = storage.storage_now(StorageNow {}).await.map_err(unavailable)?;
    let job = storage
        .job_get(JobGet { id })
        .await
        .map_err(unavailable)?
        .ok_or_else(|| anyhow::anyhow!("no job with id {id}"))?;
    let events = storage.job_events(JobEvents { id }).await.map_err(unavailable)?;
    let workers: Vec<WorkerView> = storage
        .worker_list(WorkerList {})
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|r| worker_view(r, now, stale_after))
        .collect();
    let live_workers_for_queue: Vec<String> = workers
        .iter()
        .filter(|w| w.alive && w.record.queues.contains(&job.queue))
        .map(|w| w.record.id.clone())
        .collect();
    let registry: Vec<_> = workers.iter().map(|w| w.record.clone()).collect();
    let coverage = Coverage::of_live(&registry, now, stale_after);
    let live_kinds_for_queue = coverage.kinds_on(&job.queue);
    let lease_worker_id = job
        .lease_owner
        .clone()
        .filter(|_| job.status == JobStatus::Running);
    let lease_worker = lease_worker_id
        .as_ref()
        .and_then(|owner| workers.into_iter().find(|w| &w.record.id == owner));
    let lease = match (job.status, job.lease_expires_at) {
        (JobStatus::Running, Some(at)) => Some(LeaseView {
            owner: job.lease_owner.clone(),
            expires_at: at,
            expired: at <= now,
            expired_for_secs: now.micros_since(at) as f64 / 1e6,
        }),
        _ => None,
    };
    let heartbeat_age = job.heartbeat_at.map(|at| now.saturating_since(at));
    let owner = job.lease_owner.clone().unwrap_or_else(|| "(unknown)".into());
    let stale_text = format!("no registry heartbeat within {}", human_duration(stale_after));
    let worker_state = match &lease_worker {
        Some(w) if w.alive => format!(
            "worker {owner} is alive (registry heartbeat {})",
            ago(Duration::from_secs_f64(w.heartbeat_age_secs))
        ),
        Some(w) => format!(
            "worker {owner} is stale: last registry heartbeat {} ({stale_text})",
            ago(Duration::from_secs_f64(w.heartbeat_age_secs))
        ),
        None => format!("worker {owner} is not registered (it exited or was never registered)"),
    };
    let live = if live_workers_for_queue.is_empty() {
        format!("No live worker serves queue {:?}", job.queue)
    } else {
        format!(
            "{} live worker(s) serve queue {:?} ({})",
            live_workers_for_queue.len(),
            job.queue,
            live_workers_for_queue.join(", ")
        )
    };
    let progress = job
        .progress
        .as_ref()
        .map(|p| format!("last progress {p}"))
        .unwrap_or_else(|| "no progress reported".into());
    let heartbeat = heartbeat_age
        .map(|a| format!("last job heartbeat {}", ago(a)))
        .unwrap_or_default();

    let mut time_limit = None;
    let (case, explanation, fix, fix_note) = match job.status {
        JobStatus::Running => {
            let lease = lease.as_ref().expect("a running job has a lease");
            let expired_for = Duration::from_secs_f64(lease.expired_for_secs.abs());
            if lease.expired {
                (
                    Case::ExpiredLease,
                    format!(
                        "The lease held by {owner} expired {} and nothing has taken the job back yet; {worker_state}; {heartbeat}. \
                         Any running stuckless worker's reaper returns such a job to the queue within its reap interval. {}",
                        ago(expired_for),
                        if live_workers_for_queue.is_empty() {
                            format!("No live worker serves queue {:?}, so nobody will reap it until one starts.", job.queue)
                        } else {
                            format!(
                                "{live}: one of them should reap it within its reap interval (20s by default); if this \
                                 persists, they cannot reach this database or are wedged."
                            )
                        }
                    ),
                    Some(format!("stuckless requeue {id}")),
                    Some(format!(
                        "Safe: the lease has expired, so no --force is needed, and the epoch fence (epoch {}) refuses any late write \
                         from {owner}. `stuckless reap` does the same for every expired lease. Then make sure a worker serves queue {:?}.",
                        job.epoch, job.queue
                    )),
                )
            } else if lease_worker.as_ref().is_some_and(|w| w.alive) {
                let limit = TimeLimitView::of(&job, lease_worker.as_ref());
                let limit_text = limit.describe(&job.kind, now);
                time_limit = Some(limit);
                (
                    Case::SlowButAlive,
                    format!(
                        "The job is being worked on: {worker_state}, the lease is valid for another {} and is renewed by heartbeats \
                         ({heartbeat}); {progress}. It is slow, not stuck: if the worker dies, the lease runs out and the job is \
                         reaped automatically. Time limit: {limit_text}; a cancelled attempt is retried.",
                        human_duration(expired_for)
                    ),
                    None,
                    Some(format!(
                        "Nothing to fix; wait. To stop it anyway: `stuckless cancel {id}`; to move it to another worker: \
                         `stuckless requeue {id} --force` (the current holder's later writes are refused)."
                    )),
                )
            } else {
                (
                    Case::WorkerGone,
                    format!(
                        "The lease is valid for another {}, but {worker_state}; {heartbeat}. When the lease runs out, any live \
                         worker's reaper takes the job back. {live}.",
                        human_duration(expired_for)
                    ),
                    Some(format!("stuckless requeue {id} --force")),
                    Some(format!(
                        "Or wait {} for the lease to expire. --force is safe here: the epoch fence refuses any late write from {owner}.",
                        human_duration(expired_for)
                    )),
                )
            }
        }
        JobStatus::Queued if job.run_at > now => (
            Case::Scheduled,
            format!(
                "The job is queued to run at {} (in {}), attempt {} of {} so far{}.",
                job.run_at,
                human_duration(job.run_at.saturating_since(now)),
                job.attempt,
                job.max_attempts,
                job.last_error
                    .as_ref()
                    .map(|e| format!("; retrying after: {e}"))
                    .unwrap_or_default()
            ),
            None,
            Some("Nothing to fix: it becomes due by itself.".into()),
        ),
        JobStatus::Queued => {
            let due_for = human_duration(now.saturating_since(job.run_at));
            if live_workers_for_queue.is_empty() {
                (
                    Case::NoLiveWorker,
                    format!("The job has been due for {due_for}, but no live worker serves queue {:?}: none is running, or they poll other queues, or they cannot reach this database.", job.queue),
                    Some(format!("stuckless worker --queues {}", job.queue)),
                    Some("Start a worker for the queue with the same DATABASE_URL (on Cloud Run: min instances 1, or POST /wake); `stuckless workers` lists the registered ones.".into()),
                )
            } else if !coverage.handles(&job.queue, &job.kind) {
                let handled = if live_kinds_for_queue.is_empty() {
                    "none".to_owned()
                } else {
                    live_kinds_for_queue.join(", ")
                };
                (
                    Case::UnhandledKind,
                    format!(
                        "The job has been due for {due_for}. {live}, but no live worker handles kind {:?} (live workers handle: \
                         {handled}). Workers claim only kinds they have a handler for, so the job waits, without using \
                         attempts, until one that handles it starts.",
                        job.kind
                    ),
                    Some(format!("stuckless worker --queues {} --handler {}=<handler>", job.queue, job.kind)),
                    Some(format!(
                        "Deploy a worker with a handler for kind {:?} (in a rolling deploy, the new version takes it as soon \
                         as it is live). `stuckless stats` counts such jobs; /metrics shows them as stuckless_queue_unhandled.",
                        job.kind
                    )),
                )
            } else {
                (
                    Case::WaitingForCapacity,
                    format!("The job has been due for {due_for}. {live}; they claim it as soon as they have a free slot (by priority, then run_at)."),
                    None,
                    Some("Nothing to fix; if the wait grows, add workers or raise --concurrency (`stuckless stats` shows the backlog).".into()),
                )
            }
        }
        JobStatus::Dead => (
            Case::Dead,
            format!(
                "The job is dead after {} of {} attempt(s); last error: {}.",
                job.attempt,
                job.max_attempts,
                job.last_error.as_deref().unwrap_or("(none)")
            ),
            Some(format!("stuckless requeue {id}")),
            Some("Fix the cause first; requeue resets its attempts and makes it due now.".into()),
        ),
        JobStatus::Cancelled => (
            Case::Cancelled,
            "The job was cancelled; it will never run again.".into(),
            None,
            Some("Enqueue a new job if the work is still wanted.".into()),
        ),
        JobStatus::Succeeded => (
            Case::Succeeded,
            format!(
                "The job succeeded{}.",
                job.finished_at.map(|t| format!(" at {t}")).unwrap_or_default()
            ),
            None,
            None,
        ),
    };

    Ok(Diagnosis {
        case,
        scenario: case.scenario().map(String::from),
        title: case.title(),
        now,
        lease,
        lease_worker,
        live_workers_for_queue,
        live_kinds_for_queue,
        time_limit,
        heartbeat_age_secs: heartbeat_age.map(|d| d.as_secs_f64()),
        events,
        explanation,
        fix,
        fix_note,
        job,
    })
}
