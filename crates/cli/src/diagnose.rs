//! `stuckless diagnose <job-id>`: the seed document's question — why is this
//! job not moving? — answered from the tables alone, against the database's
//! clock, with the one safe command that fixes it.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use stuckless_core::driver::{JobEvents, JobGet, Storage, StorageNow, WorkerList};
use stuckless_core::{Job, JobEvent, JobId, JobStatus, StorageError, Timestamp};

use crate::ops::{worker_view, Report, WorkerView};
use crate::util::human_duration;

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
                (
                    Case::SlowButAlive,
                    format!(
                        "The job is being worked on: {worker_state}, the lease is valid for another {} and is renewed by heartbeats \
                         ({heartbeat}); {progress}. It is slow, not stuck: if the worker dies, the lease runs out and the job is \
                         reaped automatically.",
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
        heartbeat_age_secs: heartbeat_age.map(|d| d.as_secs_f64()),
        events,
        explanation,
        fix,
        fix_note,
        job,
    })
}

impl Report for Diagnosis {
    fn human(&self) -> String {
        let j = &self.job;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "job {} (queue {}, kind {}): {}",
            j.id,
            j.queue,
            j.kind,
            self.case.headline()
        );
        let _ = writeln!(o);
        let row = |o: &mut String, k: &str, v: String| {
            let _ = writeln!(o, "  {k:<14}{v}");
        };
        row(&mut o, "now", format!("{} (database clock)", self.now));
        row(
            &mut o,
            "status",
            format!(
                "{}, attempt {} of {}, epoch {}",
                j.status, j.attempt, j.max_attempts, j.epoch
            ),
        );
        if let Some(l) = &self.lease {
            let when = if l.expired {
                format!("EXPIRED {}", ago(Duration::from_secs_f64(l.expired_for_secs)))
            } else {
                format!(
                    "valid for {}",
                    human_duration(Duration::from_secs_f64(-l.expired_for_secs))
                )
            };
            row(
                &mut o,
                "lease",
                format!(
                    "held by {}, expires {} ({when})",
                    l.owner.as_deref().unwrap_or("?"),
                    l.expires_at
                ),
            );
            let w = match &self.lease_worker {
                Some(w) => format!(
                    "{}, last registry heartbeat {}",
                    if w.alive { "alive" } else { "STALE" },
                    ago(Duration::from_secs_f64(w.heartbeat_age_secs))
                ),
                None => "NOT REGISTERED".into(),
            };
            row(&mut o, "worker", w);
        }
        if let Some(at) = j.heartbeat_at {
            row(
                &mut o,
                "heartbeat",
                format!("{at} ({})", ago(self.now.saturating_since(at))),
            );
        }
        if let Some(p) = &j.progress {
            row(&mut o, "progress", p.to_string());
        }
        row(&mut o, "run at", j.run_at.to_string());
        if let Some(at) = j.claimed_at {
            row(&mut o, "claimed at", at.to_string());
        }
        if let Some(e) = &j.last_error {
            row(&mut o, "last error", e.clone());
        }
        row(
            &mut o,
            "live workers",
            if self.live_workers_for_queue.is_empty() {
                format!("none serving queue {}", j.queue)
            } else {
                self.live_workers_for_queue.join(", ")
            },
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "history (job_events, oldest first):");
        if self.events.is_empty() {
            let _ = writeln!(o, "  (no abnormal transitions recorded)");
        }
        for e in &self.events {
            let _ = writeln!(
                o,
                "  {}  {:<10} epoch {} attempt {}{}{}",
                e.at,
                e.kind.as_str(),
                e.epoch,
                e.attempt,
                e.worker_id
                    .as_ref()
                    .map(|w| format!(" worker {w}"))
                    .unwrap_or_default(),
                e.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "diagnosis:");
        let _ = writeln!(o, "  {}", self.explanation);
        let _ = writeln!(o);
        match &self.fix {
            Some(fix) => {
                let _ = writeln!(o, "fix:");
                let _ = writeln!(o, "  {fix}");
            }
            None => {
                let _ = writeln!(o, "fix: none needed");
            }
        }
        if let Some(note) = &self.fix_note {
            let _ = writeln!(o, "  {note}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use stuckless_core::driver::{JobClaim, WorkerRegister};
    use stuckless_core::{Client, ManualClock, MemStore, NewJob};

    async fn setup() -> (ManualClock, Arc<MemStore>, Client, JobId) {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let s = Arc::new(MemStore::new(clock.clone()));
        let c = Client::new(s.clone());
        let id = c
            .enqueue_job(NewJob::new("default", "report", json!({})))
            .await
            .unwrap()
            .job
            .id;
        (clock, s, c, id)
    }

    async fn register(s: &MemStore, id: &str) {
        let reg = WorkerRegister {
            id: id.into(),
            queues: vec!["default".into()],
            concurrency: 1,
            metadata: json!(null),
            kinds: vec!["k".into()],
        };
        s.worker_register(reg).await.unwrap();
    }

    fn claim(worker: &str) -> JobClaim {
        JobClaim {
            worker_id: worker.into(),
            queues: vec!["default".into()],
            limit: 1,
            lease: Duration::from_secs(300),
            kinds: None,
        }
    }

    const STALE: Duration = Duration::from_secs(90);

    #[test]
    fn headlines_name_the_meaning_with_the_letter_as_a_cross_reference() {
        assert_eq!(
            Case::SlowButAlive.headline(),
            "running, lease valid: slow or waiting on an external call (scenario B)"
        );
        assert_eq!(
            Case::NoLiveWorker.headline(),
            "due, nobody claiming: no live worker serves its queue (scenario C)"
        );
        assert_eq!(Case::Dead.headline(), Case::Dead.title());
        let json = serde_json::to_value(Case::ExpiredLease).unwrap();
        assert_eq!(json, "expired_lease");
    }

    #[tokio::test]
    async fn names_every_case_on_the_model_store() {
        let (clock, s, c, id) = setup().await;
        let d = diagnose(&*s, id, STALE).await.unwrap();
        assert_eq!(d.case, Case::NoLiveWorker);
        assert_eq!(d.fix.as_deref(), Some("stuckless worker --queues default"));
        register(&s, "w1").await;
        assert_eq!(
            diagnose(&*s, id, STALE).await.unwrap().case,
            Case::WaitingForCapacity
        );
        s.job_claim(claim("w1")).await.unwrap();
        let b = diagnose(&*s, id, STALE).await.unwrap();
        assert_eq!((b.case, b.scenario.as_deref()), (Case::SlowButAlive, Some("B")));
        assert!(b.fix.is_none());
        clock.advance(Duration::from_secs(120));
        assert_eq!(diagnose(&*s, id, STALE).await.unwrap().case, Case::WorkerGone);
        clock.advance(Duration::from_secs(200));
        let a = diagnose(&*s, id, STALE).await.unwrap();
        assert_eq!((a.case, a.scenario.as_deref()), (Case::ExpiredLease, Some("A")));
        assert_eq!(a.fix.as_deref(), Some(&*format!("stuckless requeue {id}")));
        assert!(a.human().contains("EXPIRED 20s ago"), "{}", a.human());
        let first = a.human().lines().next().unwrap().to_owned();
        assert_eq!(
            first,
            format!("job {id} (queue default, kind report): lease expired, not reaped (scenario A)")
        );
        // The suggested fix works and is accepted without --force.
        crate::ops::requeue(&c, id, false).await.unwrap();
        let requeued = diagnose(&*s, id, STALE).await.unwrap();
        assert_eq!(requeued.events.len(), 1, "the requeue is in the timeline");
        c.cancel(id).await.unwrap();
        assert_eq!(diagnose(&*s, id, STALE).await.unwrap().case, Case::Cancelled);
        assert_eq!(
            diagnose(&*s, JobId(77), STALE).await.unwrap_err().to_string(),
            "no job with id 77"
        );
    }
}
