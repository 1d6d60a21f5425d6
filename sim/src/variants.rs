//! Deliberately broken variants of the queue, each one a way real job queues
//! leave jobs stuck or done twice. The oracle must catch every one.
//!
//! They live here, in the simulator, as interceptors on the db host (or as a
//! worker host's behaviour), never in a production code path.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::storage::is_reapable;
use stuckless_core::{
    ClaimedJob, CompleteOutcome, Epoch, Job, JobId, JobStatus, MemStore, ReapOutcome, Storage,
};

use crate::wire::{Request, Response, WireError};

/// Which broken behaviour the world runs, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The real thing: stuckless as shipped.
    #[default]
    Stuckless,
    /// Nothing ever takes back an expired lease (the seed document's design).
    NoReaper,
    /// Completion is accepted whatever epoch it presents.
    UnfencedComplete,
    /// Claim reads due jobs, then writes them in a separate step.
    ClaimReadThenWrite,
    /// Heartbeats are answered but never extend the lease.
    NoHeartbeat,
    /// Graceful shutdown exits at once, leaving in-flight jobs running.
    ShutdownDropsJobs,
    /// The reaper reads expired jobs, then requeues them without checking
    /// whether a completion landed in between.
    ReaperIgnoresCompletion,
}

/// How long the split read-then-write variants wait between their read and
/// their write: one client round trip between two SQL statements.
const SPLIT_GAP: Duration = Duration::from_millis(150);

impl Variant {
    /// Every broken variant, in a fixed order.
    pub const BROKEN: [Variant; 6] = [
        Variant::NoReaper,
        Variant::UnfencedComplete,
        Variant::ClaimReadThenWrite,
        Variant::NoHeartbeat,
        Variant::ShutdownDropsJobs,
        Variant::ReaperIgnoresCompletion,
    ];

    /// The snake_case name used on the command line and in fixtures.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Stuckless => "stuckless",
            Variant::NoReaper => "no_reaper",
            Variant::UnfencedComplete => "unfenced_complete",
            Variant::ClaimReadThenWrite => "claim_read_then_write",
            Variant::NoHeartbeat => "no_heartbeat",
            Variant::ShutdownDropsJobs => "shutdown_drops_jobs",
            Variant::ReaperIgnoresCompletion => "reaper_ignores_completion",
        }
    }

    /// Parses a name from [`Variant::name`].
    pub fn parse(name: &str) -> Option<Variant> {
        std::iter::once(Variant::Stuckless)
            .chain(Variant::BROKEN)
            .find(|v| v.name() == name)
    }

    /// The broken answer to `request`, or `None` to let the real store answer.
    pub async fn intercept(self, store: &MemStore, request: &Request) -> Option<Response> {
        match (self, request) {
            (Variant::NoReaper, Request::Reap { .. }) => Some(Response::Reaped(ReapOutcome::default())),
            (Variant::UnfencedComplete, Request::Complete { id, epoch }) => {
                Some(match unfenced_complete(store, *id, *epoch) {
                    Ok(o) => Response::Completed(o),
                    Err(e) => Response::Error(e),
                })
            }
            (Variant::UnfencedComplete, Request::CompleteMany(jobs)) => Some(Response::CompletedMany(
                jobs.iter()
                    .map(|(id, epoch)| unfenced_complete(store, *id, *epoch))
                    .collect(),
            )),
            (Variant::ClaimReadThenWrite, Request::Claim(req)) => {
                let now = store.storage_now().await.ok()?;
                let mut due: Vec<_> = store
                    .jobs()
                    .into_iter()
                    .filter(|j| {
                        j.status == JobStatus::Queued && j.run_at <= now && req.queues.contains(&j.queue)
                    })
                    .collect();
                due.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.id));
                due.truncate(req.limit as usize);
                tokio::time::sleep(SPLIT_GAP).await;
                let now = store.storage_now().await.ok()?;
                let mut claimed = Vec::new();
                for mut job in due {
                    // The write trusts the read: no "where status = queued".
                    job.status = JobStatus::Running;
                    job.attempt += 1;
                    job.epoch = Epoch(job.epoch.0 + 1);
                    job.lease_owner = Some(req.worker_id.clone());
                    job.lease_expires_at = Some(now + req.lease);
                    job.claimed_at = Some(now);
                    job.heartbeat_at = Some(now);
                    job.progress = None;
                    job.updated_at = now;
                    let written = job.clone();
                    store.unchecked_update(job.id, |j| *j = written);
                    claimed.push(ClaimedJob { job });
                }
                Some(Response::Claimed(claimed))
            }
            (Variant::NoHeartbeat, Request::Heartbeat { lease, .. }) => {
                let now = store.storage_now().await.ok()?;
                Some(Response::Time(now + *lease))
            }
            (Variant::ReaperIgnoresCompletion, Request::Reap { limit }) => {
                let now = store.storage_now().await.ok()?;
                let expired: Vec<JobId> = store
                    .jobs()
                    .iter()
                    .filter(|j| is_reapable(j, now))
                    .map(|j| j.id)
                    .take(*limit as usize)
                    .collect();
                tokio::time::sleep(SPLIT_GAP).await;
                let now = store.storage_now().await.ok()?;
                for id in &expired {
                    // The write trusts the read: no "where status = running".
                    store.unchecked_update(*id, |j| {
                        j.status = JobStatus::Queued;
                        j.run_at = now;
                        j.lease_expires_at = None;
                        j.finished_at = None;
                        j.updated_at = now;
                    });
                }
                Some(Response::Reaped(ReapOutcome {
                    requeued: expired,
                    dead: Vec::new(),
                }))
            }
            _ => None,
        }
    }

    /// Whether a worker host shuts down without releasing its jobs.
    pub fn drops_jobs_on_shutdown(self) -> bool {
        self == Variant::ShutdownDropsJobs
    }
}

fn unfenced_complete(store: &MemStore, id: JobId, epoch: Epoch) -> Result<CompleteOutcome, WireError> {
    let Some(job) = read_job(store, id) else {
        return Err(WireError::NotFound(id));
    };
    if job.status == JobStatus::Succeeded {
        return Ok(CompleteOutcome::AlreadyCompleted);
    }
    if job.status.is_terminal() {
        return Err(WireError::WrongStatus {
            id,
            status: job.status,
            operation: "complete".into(),
            expected: "running".into(),
        });
    }
    let _ = epoch; // Deliberately not compared with the job's epoch.
    store.unchecked_update(id, |j| {
        j.status = JobStatus::Succeeded;
        j.lease_expires_at = None;
    });
    Ok(CompleteOutcome::Completed)
}

/// One job, read without going through the storage API.
fn read_job(store: &MemStore, id: JobId) -> Option<Job> {
    let mut out = None;
    store.unchecked_update(id, |j| out = Some(j.clone()));
    out
}
