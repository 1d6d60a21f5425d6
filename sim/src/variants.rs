//! Deliberately broken variants of the queue, each one a way real job queues
//! leave jobs stuck or done twice. The oracle must catch every one.
//!
//! They live here, in the simulator, as a [`Hook`] around the db host's store
//! (or as a worker host's behaviour or setting), never in a production code
//! path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stuckless_core::driver::{
    is_reapable, CompleteOutcome, Flow, Hook, Hooked, JobClaim, JobComplete, JobCompleteMany, JobHeartbeat,
    JobReapExpired, Op, Operation, ReapOutcome, Reply, Storage, StorageNow, StorageResult,
};
use stuckless_core::{
    limits, ClaimedJob, Epoch, Job, JobId, JobStatus, MemStore, StorageError, WorkerBuilder,
};

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
    /// Workers have no time limit on an attempt (the old default): a hung
    /// API call holds its job, heartbeats and all, for ever.
    NoTimeLimit,
    /// Claims take jobs of any kind, whatever handlers the worker has (the
    /// old claim): in a rolling deploy an old worker kills the new kind's jobs.
    KindBlindClaims,
    /// A claim fails while a due row no claim can read is queued (the old
    /// Postgres claim: "cannot convert infinity to bigint"), so one poison
    /// row stalls the whole queue.
    PoisonRow,
    /// A batched completion writes its first job only but answers
    /// `Completed` for all (a bug of one `update … from unnest(…)` statement
    /// whose answers are read from its input instead of from the rows it
    /// changed): the completer believes jobs done that still run.
    BatchAcksUnwritten,
    /// A claim clears the checkpoint along with the progress, as a naive
    /// "new attempt, fresh state" would: an interrupted resumable job starts
    /// again at section 1 and pays for its finished sections twice.
    ClaimWipesCheckpoint,
}

/// What the old Postgres claim answered while a poison row was due.
const POISON_CLAIM_ERROR: &str = "cannot convert infinity to bigint";

/// How long the split read-then-write variants wait between their read and
/// their write: one client round trip between two SQL statements.
const SPLIT_GAP: Duration = Duration::from_millis(150);

impl Variant {
    /// Every broken variant, in a fixed order.
    pub const BROKEN: [Variant; 11] = [
        Variant::NoReaper,
        Variant::UnfencedComplete,
        Variant::ClaimReadThenWrite,
        Variant::NoHeartbeat,
        Variant::ShutdownDropsJobs,
        Variant::ReaperIgnoresCompletion,
        Variant::NoTimeLimit,
        Variant::KindBlindClaims,
        Variant::PoisonRow,
        Variant::BatchAcksUnwritten,
        Variant::ClaimWipesCheckpoint,
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
            Variant::NoTimeLimit => "no_time_limit",
            Variant::KindBlindClaims => "kind_blind_claims",
            Variant::PoisonRow => "poison_row",
            Variant::BatchAcksUnwritten => "batch_acks_unwritten",
            Variant::ClaimWipesCheckpoint => "claim_wipes_checkpoint",
        }
    }

    /// Parses a name from [`Variant::name`].
    pub fn parse(name: &str) -> Option<Variant> {
        std::iter::once(Variant::Stuckless)
            .chain(Variant::BROKEN)
            .find(|v| v.name() == name)
    }

    /// The db's storage under this variant: `store` through its [`VariantHook`].
    pub fn storage(self, store: Arc<MemStore>) -> Hooked<Arc<MemStore>, VariantHook> {
        Hooked::new(store.clone(), VariantHook { variant: self, store })
    }

    /// Whether a worker host shuts down without releasing its jobs.
    pub fn drops_jobs_on_shutdown(self) -> bool {
        self == Variant::ShutdownDropsJobs
    }

    /// A stuckless worker's builder, changed the way this variant's workers
    /// are: only [`Variant::NoTimeLimit`] changes a setting.
    pub fn worker(self, stuckless: WorkerBuilder) -> WorkerBuilder {
        match self {
            Variant::NoTimeLimit => stuckless.default_timeout(None),
            _ => stuckless,
        }
    }
}

/// The [`Hook`] that makes the db answer some operations the broken way; the
/// real store answers the rest (and everything, for [`Variant::Stuckless`]).
pub struct VariantHook {
    variant: Variant,
    /// The store the broken answers read and write directly.
    store: Arc<MemStore>,
}

#[async_trait]
impl Hook for VariantHook {
    async fn before(&self, op: Op) -> Flow {
        match (self.variant, op) {
            (Variant::KindBlindClaims, Op::JobClaim(claim)) => {
                Flow::Continue(Op::JobClaim(JobClaim { kinds: None, ..claim }))
            }
            (Variant::PoisonRow, Op::JobClaim(claim)) if self.poison_due(&claim).await => Flow::Answer(
                JobClaim::into_reply(Err(StorageError::Other(POISON_CLAIM_ERROR.to_owned()))),
            ),
            (Variant::ClaimWipesCheckpoint, Op::JobClaim(claim)) => {
                let claimed = self.store.job_claim(claim).await.map(|jobs| {
                    jobs.into_iter()
                        .map(|mut c| {
                            self.store.unchecked_update(c.id(), |j| {
                                j.checkpoint = None;
                                j.checkpointed_at = None;
                            });
                            c.job.checkpoint = None;
                            c.job.checkpointed_at = None;
                            c
                        })
                        .collect()
                });
                Flow::Answer(JobClaim::into_reply(claimed))
            }
            (_, op) => match self.broken(&op).await {
                Some(reply) => Flow::Answer(reply),
                None => Flow::Continue(op),
            },
        }
    }
}

impl VariantHook {
    /// Whether a queued row in `claim`'s queues is due with a `run_at` no
    /// claim can read (the old claim's `extract(epoch …)::bigint` failed on it).
    async fn poison_due(&self, claim: &JobClaim) -> bool {
        let Ok(now) = self.store.storage_now(StorageNow {}).await else {
            return false;
        };
        let readable = limits::MIN_TIMESTAMP_MICROS..=limits::MAX_TIMESTAMP_MICROS;
        self.store.jobs().iter().any(|j| {
            j.status == JobStatus::Queued
                && j.run_at <= now
                && claim.queues.contains(&j.queue)
                && !readable.contains(&j.run_at.as_micros())
        })
    }

    /// The broken answer to `op`, or `None` to let the real store answer.
    async fn broken(&self, op: &Op) -> Option<Reply> {
        let store = self.store.as_ref();
        match (self.variant, op) {
            (Variant::NoReaper, Op::JobReapExpired(_)) => {
                Some(JobReapExpired::into_reply(Ok(ReapOutcome::default())))
            }
            (Variant::UnfencedComplete, Op::JobComplete(JobComplete { id, epoch })) => {
                Some(JobComplete::into_reply(unfenced_complete(store, *id, *epoch)))
            }
            (Variant::UnfencedComplete, Op::JobCompleteMany(JobCompleteMany { jobs })) => {
                let results = jobs.iter().map(|c| unfenced_complete(store, c.id, c.epoch));
                Some(JobCompleteMany::into_reply(Ok(results.collect())))
            }
            (Variant::BatchAcksUnwritten, Op::JobCompleteMany(JobCompleteMany { jobs }))
                if jobs.len() > 1 =>
            {
                let first = &jobs[0];
                let written = store
                    .job_complete(JobComplete {
                        id: first.id,
                        epoch: first.epoch,
                    })
                    .await;
                let mut results = vec![written];
                results.extend(jobs[1..].iter().map(|_| Ok(CompleteOutcome::Completed)));
                Some(JobCompleteMany::into_reply(Ok(results)))
            }
            (Variant::ClaimReadThenWrite, Op::JobClaim(req)) => {
                let now = store.storage_now(StorageNow {}).await.ok()?;
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
                let now = store.storage_now(StorageNow {}).await.ok()?;
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
                Some(JobClaim::into_reply(Ok(claimed)))
            }
            (Variant::NoHeartbeat, Op::JobHeartbeat(JobHeartbeat { lease, .. })) => {
                let now = store.storage_now(StorageNow {}).await.ok()?;
                Some(JobHeartbeat::into_reply(Ok(now + *lease)))
            }
            (Variant::ReaperIgnoresCompletion, Op::JobReapExpired(JobReapExpired { limit })) => {
                let now = store.storage_now(StorageNow {}).await.ok()?;
                let expired: Vec<JobId> = store
                    .jobs()
                    .iter()
                    .filter(|j| is_reapable(j, now))
                    .map(|j| j.id)
                    .take(*limit as usize)
                    .collect();
                tokio::time::sleep(SPLIT_GAP).await;
                let now = store.storage_now(StorageNow {}).await.ok()?;
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
                Some(JobReapExpired::into_reply(Ok(ReapOutcome {
                    requeued: expired,
                    dead: Vec::new(),
                })))
            }
            _ => None,
        }
    }
}

fn unfenced_complete(store: &MemStore, id: JobId, epoch: Epoch) -> StorageResult<CompleteOutcome> {
    let Some(job) = read_job(store, id) else {
        return Err(StorageError::NotFound(id));
    };
    if job.status == JobStatus::Succeeded {
        return Ok(CompleteOutcome::AlreadyCompleted);
    }
    if job.status.is_terminal() {
        return Err(StorageError::WrongStatus {
            id,
            status: job.status,
            operation: "complete",
            expected: "running",
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
