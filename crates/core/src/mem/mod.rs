//! `MemStore`: the in-memory [`Storage`], and the model Postgres must match.
//!
//! Deterministic by construction: ordered maps, sequential ids, no random
//! state, and time only from the [`Clock`] it is given. Every operation runs
//! under one lock, so each is atomic, as one SQL statement is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::driver::*;
use crate::error::StorageError;
use crate::job::{clamp_error, ClaimedJob, Epoch, Job, JobEvent, JobEventKind, JobId, JobStatus, ValidJob};
use crate::time::Timestamp;

/// The in-memory storage.
pub struct MemStore {
    clock: Arc<dyn Clock>,
    happy_path_events: bool,
    state: Mutex<State>,
}

#[derive(Clone, Default)]
pub(crate) struct State {
    next_id: i64,
    jobs: BTreeMap<JobId, Job>,
    idempotency_keys: BTreeMap<String, JobId>,
    events: BTreeMap<JobId, Vec<JobEvent>>,
    workers: BTreeMap<String, WorkerRecord>,
}

impl MemStore {
    /// An empty store judging time by `clock`, logging abnormal events only.
    pub fn new(clock: impl Clock) -> Self {
        Self::with_clock(Arc::new(clock))
    }

    /// An empty store judging time by a shared clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemStore {
            clock,
            happy_path_events: false,
            state: Mutex::new(State::default()),
        }
    }

    /// Also log inserted, claimed and completed events (off by default).
    pub fn with_happy_path_events(mut self, on: bool) -> Self {
        self.happy_path_events = on;
        self
    }

    /// Every job, ascending id: a consistent snapshot for checkers.
    pub fn jobs(&self) -> Vec<Job> {
        self.lock().jobs.values().cloned().collect()
    }

    /// Reads every job in id order without copying them: for a simulator
    /// that looks at the whole table after every step.
    pub fn with_jobs<R>(&self, read: impl FnOnce(&mut dyn Iterator<Item = &Job>) -> R) -> R {
        let state = self.lock();
        read(&mut state.jobs.values())
    }

    /// Number of jobs stored.
    pub fn job_count(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Applies `f` to a job with no validation, fencing or event logging.
    ///
    /// Exists only so a simulator can build the deliberately broken variants
    /// its oracle must catch (a reaper that ignores a racing completion, a
    /// claim split into read and write). Production code never calls it.
    #[doc(hidden)]
    pub fn unchecked_update(&self, id: JobId, f: impl FnOnce(&mut Job)) -> bool {
        match self.lock().jobs.get_mut(&id) {
            Some(job) => {
                f(job);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-applied operation:
        // every operation validates before it mutates.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

mod upkeep;

impl State {
    fn event(
        &mut self,
        happy: bool,
        job: &Job,
        kind: JobEventKind,
        now: Timestamp,
        worker: Option<&str>,
        detail: Option<String>,
    ) {
        if kind.is_happy_path() && !happy {
            return;
        }
        self.events.entry(job.id).or_default().push(JobEvent {
            job_id: job.id,
            at: now,
            kind,
            epoch: job.epoch,
            attempt: job.attempt,
            worker_id: worker.map(str::to_owned),
            detail,
        });
    }

    /// Logs `kind` for `job` whatever the happy-path setting (the writes
    /// other than claims and inserts always leave their event).
    fn log(
        &mut self,
        job: &Job,
        kind: JobEventKind,
        now: Timestamp,
        worker: Option<&str>,
        detail: Option<String>,
    ) {
        self.event(true, job, kind, now, worker, detail);
    }

    /// The fencing check shared by every write after a claim.
    fn fenced(&mut self, id: JobId, epoch: Epoch, operation: &'static str) -> StorageResult<&mut Job> {
        let job = self.jobs.get_mut(&id).ok_or(StorageError::NotFound(id))?;
        if job.epoch != epoch {
            return Err(StorageError::StaleEpoch {
                id,
                presented: epoch,
                current: job.epoch,
            });
        }
        if job.status != JobStatus::Running {
            return Err(StorageError::WrongStatus {
                id,
                status: job.status,
                operation,
                expected: "running",
            });
        }
        Ok(job)
    }

    fn insert(&mut self, happy: bool, new: ValidJob, now: Timestamp) -> InsertOutcome {
        let new = new.into_inner();
        if let Some(existing) = new
            .idempotency_key
            .as_ref()
            .and_then(|key| self.idempotency_keys.get(key))
        {
            return InsertOutcome {
                job: self.jobs[existing].clone(),
                inserted: false,
            };
        }
        self.next_id += 1;
        let job = Job {
            id: JobId(self.next_id),
            queue: new.queue,
            kind: new.kind,
            payload: new.payload,
            priority: new.priority,
            run_at: new.run_at.unwrap_or(now),
            status: JobStatus::Queued,
            attempt: 0,
            max_attempts: new.max_attempts,
            epoch: Epoch(0),
            lease_owner: None,
            lease_expires_at: None,
            claimed_at: None,
            heartbeat_at: None,
            progress: None,
            last_error: None,
            idempotency_key: new.idempotency_key,
            created_at: now,
            updated_at: now,
            finished_at: None,
            timeout: new.timeout,
            checkpoint: None,
            checkpointed_at: None,
        };
        if let Some(key) = &job.idempotency_key {
            self.idempotency_keys.insert(key.clone(), job.id);
        }
        self.event(happy, &job, JobEventKind::Inserted, now, None, None);
        self.jobs.insert(job.id, job.clone());
        InsertOutcome { job, inserted: true }
    }

    fn complete(
        &mut self,
        happy: bool,
        id: JobId,
        epoch: Epoch,
        now: Timestamp,
    ) -> StorageResult<CompleteOutcome> {
        if let Some(job) = self.jobs.get(&id) {
            if job.epoch == epoch && job.status == JobStatus::Succeeded {
                return Ok(CompleteOutcome::AlreadyCompleted);
            }
        }
        let job = self.fenced(id, epoch, "complete")?;
        job.status = JobStatus::Succeeded;
        job.lease_expires_at = None;
        job.updated_at = now;
        job.finished_at = Some(now);
        let job = job.clone();
        self.event(
            happy,
            &job,
            JobEventKind::Completed,
            now,
            job.lease_owner.as_deref(),
            None,
        );
        Ok(CompleteOutcome::Completed)
    }
}

/// Counts a queued job that is due at `now` (run at `run_at`) into a stats
/// entry's `due` and `oldest_due_age`: per queue and per kind alike.
fn count_due(due: &mut u64, oldest_due_age: &mut Option<Duration>, run_at: Timestamp, now: Timestamp) {
    *due += 1;
    let age = now.saturating_since(run_at);
    *oldest_due_age = Some(oldest_due_age.map_or(age, |a| a.max(age)));
}

fn to_queued(job: &mut Job, run_at: Timestamp, now: Timestamp) {
    job.status = JobStatus::Queued;
    job.run_at = run_at;
    job.lease_expires_at = None;
    job.updated_at = now;
}

fn to_dead(job: &mut Job, now: Timestamp) {
    job.status = JobStatus::Dead;
    job.lease_expires_at = None;
    job.updated_at = now;
    job.finished_at = Some(now);
}

#[async_trait]
impl Storage for MemStore {
    async fn job_insert(&self, JobInsert { job }: JobInsert) -> StorageResult<InsertOutcome> {
        let now = self.clock.now();
        Ok(self.lock().insert(self.happy_path_events, job, now))
    }

    async fn job_insert_many(
        &self,
        JobInsertMany { jobs }: JobInsertMany,
    ) -> StorageResult<Vec<InsertOutcome>> {
        let now = self.clock.now();
        let mut state = self.lock();
        Ok(jobs
            .into_iter()
            .map(|job| state.insert(self.happy_path_events, job, now))
            .collect())
    }

    async fn job_claim(&self, request: JobClaim) -> StorageResult<Vec<ClaimedJob>> {
        request.validate()?;
        let now = self.clock.now();
        let mut state = self.lock();
        state.bury_unreadable(self.happy_path_events, &request, now);
        let mut due: Vec<&Job> = state
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Queued && j.run_at <= now && request.queues.contains(&j.queue))
            .filter(|j| request.kinds.as_ref().is_none_or(|kinds| kinds.contains(&j.kind)))
            .collect();
        due.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.id));
        let ids: Vec<JobId> = due.iter().take(request.limit as usize).map(|j| j.id).collect();
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let job = state.jobs.get_mut(&id).expect("id from this map");
            job.status = JobStatus::Running;
            job.attempt += 1;
            job.epoch = Epoch(job.epoch.0 + 1);
            job.lease_owner = Some(request.worker_id.clone());
            job.lease_expires_at = Some(now + request.lease);
            job.claimed_at = Some(now);
            job.heartbeat_at = Some(now);
            job.progress = None;
            job.updated_at = now;
            let job = job.clone();
            state.event(
                self.happy_path_events,
                &job,
                JobEventKind::Claimed,
                now,
                Some(&request.worker_id),
                None,
            );
            claimed.push(ClaimedJob { job });
        }
        Ok(claimed)
    }

    async fn job_heartbeat(&self, request: JobHeartbeat) -> StorageResult<Timestamp> {
        request.validate()?;
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.fenced(request.id, request.epoch, "heartbeat")?;
        let expires = now + request.lease;
        job.lease_expires_at = Some(expires);
        job.heartbeat_at = Some(now);
        if request.progress.is_some() {
            job.progress = request.progress;
        }
        job.updated_at = now;
        Ok(expires)
    }

    async fn job_checkpoint(&self, request: JobCheckpoint) -> StorageResult<Timestamp> {
        request.validate()?;
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.fenced(request.id, request.epoch, "checkpoint")?;
        job.checkpoint = Some(request.checkpoint);
        job.checkpointed_at = Some(now);
        job.updated_at = now;
        Ok(now)
    }

    async fn job_complete(&self, JobComplete { id, epoch }: JobComplete) -> StorageResult<CompleteOutcome> {
        let now = self.clock.now();
        self.lock().complete(self.happy_path_events, id, epoch, now)
    }

    async fn job_complete_many(
        &self,
        JobCompleteMany { jobs }: JobCompleteMany,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        let now = self.clock.now();
        let mut state = self.lock();
        Ok(jobs
            .into_iter()
            .map(|c| state.complete(self.happy_path_events, c.id, c.epoch, now))
            .collect())
    }

    async fn job_fail(&self, request: JobFail) -> StorageResult<FailOutcome> {
        request.validate()?;
        let JobFail { id, epoch, .. } = request;
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.fenced(id, epoch, "fail")?;
        job.last_error = Some(clamp_error(&request.error));
        let outcome = match request.retry_after {
            Some(delay) if job.attempt < job.max_attempts => {
                let run_at = now + delay;
                to_queued(job, run_at, now);
                FailOutcome::Retried { run_at }
            }
            _ => {
                to_dead(job, now);
                FailOutcome::Dead
            }
        };
        let job = job.clone();
        let kind = match outcome {
            FailOutcome::Retried { .. } => JobEventKind::Retried,
            FailOutcome::Dead => JobEventKind::Dead,
        };
        state.log(
            &job,
            kind,
            now,
            job.lease_owner.as_deref(),
            job.last_error.clone(),
        );
        Ok(outcome)
    }

    async fn job_release(&self, JobRelease { id, epoch }: JobRelease) -> StorageResult<()> {
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.fenced(id, epoch, "release")?;
        job.attempt -= 1;
        to_queued(job, now, now);
        let job = job.clone();
        state.log(
            &job,
            JobEventKind::Released,
            now,
            job.lease_owner.as_deref(),
            None,
        );
        Ok(())
    }

    async fn job_reap_expired(&self, JobReapExpired { limit }: JobReapExpired) -> StorageResult<ReapOutcome> {
        let now = self.clock.now();
        let mut state = self.lock();
        let expired: Vec<JobId> = state
            .jobs
            .values()
            .filter(|j| is_reapable(j, now))
            .map(|j| j.id)
            .take(limit as usize)
            .collect();
        let mut outcome = ReapOutcome::default();
        for id in expired {
            let job = state.jobs.get_mut(&id).expect("id from this map");
            let detail = format!(
                "lease expired at {} (owner {})",
                job.lease_expires_at.expect("running job has a lease"),
                job.lease_owner.as_deref().unwrap_or("?")
            );
            let kind = if job.attempt >= job.max_attempts {
                job.last_error = Some(detail.clone());
                to_dead(job, now);
                outcome.dead.push(id);
                JobEventKind::Dead
            } else {
                to_queued(job, now, now);
                outcome.requeued.push(id);
                JobEventKind::Reaped
            };
            let job = job.clone();
            state.log(&job, kind, now, job.lease_owner.as_deref(), Some(detail));
        }
        Ok(outcome)
    }

    async fn job_cancel(&self, JobCancel { id }: JobCancel) -> StorageResult<Job> {
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.jobs.get_mut(&id).ok_or(StorageError::NotFound(id))?;
        match job.status {
            JobStatus::Cancelled => return Ok(job.clone()),
            JobStatus::Succeeded | JobStatus::Dead => {
                return Err(StorageError::WrongStatus {
                    id,
                    status: job.status,
                    operation: "cancel",
                    expected: "queued or running",
                })
            }
            JobStatus::Queued | JobStatus::Running => {}
        }
        job.status = JobStatus::Cancelled;
        job.lease_expires_at = None;
        job.updated_at = now;
        job.finished_at = Some(now);
        let job = job.clone();
        state.log(&job, JobEventKind::Cancelled, now, None, None);
        Ok(job)
    }

    async fn job_requeue(&self, JobRequeue { id, force }: JobRequeue) -> StorageResult<Job> {
        let now = self.clock.now();
        let mut state = self.lock();
        let job = state.jobs.get_mut(&id).ok_or(StorageError::NotFound(id))?;
        let detail = requeue_detail(job, now, force)?;
        if job.status == JobStatus::Dead {
            job.attempt = 0;
            job.finished_at = None;
        }
        to_queued(job, now, now);
        let job = job.clone();
        state.log(&job, JobEventKind::Requeued, now, None, Some(detail.to_string()));
        Ok(job)
    }

    async fn job_get(&self, JobGet { id }: JobGet) -> StorageResult<Option<Job>> {
        Ok(self.lock().jobs.get(&id).cloned())
    }

    async fn job_events(&self, JobEvents { id }: JobEvents) -> StorageResult<Vec<JobEvent>> {
        Ok(self.lock().events.get(&id).cloned().unwrap_or_default())
    }

    async fn worker_register(&self, worker: WorkerRegister) -> StorageResult<()> {
        worker.validate()?;
        let now = self.clock.now();
        self.lock().workers.insert(
            worker.id.clone(),
            WorkerRecord {
                id: worker.id,
                queues: worker.queues,
                concurrency: worker.concurrency,
                metadata: worker.metadata,
                started_at: now,
                last_heartbeat_at: now,
                in_flight: 0,
                kinds: worker.kinds,
            },
        );
        Ok(())
    }

    async fn worker_heartbeat(
        &self,
        WorkerHeartbeat { id, in_flight }: WorkerHeartbeat,
    ) -> StorageResult<()> {
        let now = self.clock.now();
        let mut state = self.lock();
        let worker = state
            .workers
            .get_mut(&id)
            .ok_or_else(|| StorageError::WorkerNotFound(id.clone()))?;
        worker.last_heartbeat_at = now;
        worker.in_flight = in_flight;
        Ok(())
    }

    async fn worker_deregister(&self, WorkerDeregister { id }: WorkerDeregister) -> StorageResult<()> {
        self.lock().workers.remove(&id);
        Ok(())
    }

    async fn worker_list(&self, _: WorkerList) -> StorageResult<Vec<WorkerRecord>> {
        Ok(self.lock().workers.values().cloned().collect())
    }

    async fn queue_stats(&self, _: QueueStatsGet) -> StorageResult<Vec<QueueStats>> {
        let now = self.clock.now();
        let state = self.lock();
        let mut stats: BTreeMap<&str, QueueStats> = BTreeMap::new();
        for job in state.jobs.values() {
            let entry = stats.entry(&job.queue).or_insert_with(|| QueueStats {
                queue: job.queue.clone(),
                ..QueueStats::default()
            });
            match job.status {
                JobStatus::Queued if job.run_at <= now => {
                    count_due(&mut entry.due, &mut entry.oldest_due_age, job.run_at, now)
                }
                JobStatus::Queued => entry.scheduled += 1,
                JobStatus::Running if is_reapable(job, now) => entry.running_expired += 1,
                JobStatus::Running => entry.running += 1,
                JobStatus::Succeeded => entry.succeeded += 1,
                JobStatus::Dead => entry.dead += 1,
                JobStatus::Cancelled => entry.cancelled += 1,
            }
        }
        Ok(stats.into_values().collect())
    }

    async fn queue_kinds_get(&self, _: QueueKindsGet) -> StorageResult<Vec<KindStats>> {
        let now = self.clock.now();
        Ok(self.lock().kind_stats(now))
    }

    async fn job_prune(&self, request: JobPrune) -> StorageResult<PruneOutcome> {
        request.validate()?;
        let now = self.clock.now();
        Ok(self.lock().prune(&request, now))
    }

    async fn storage_now(&self, _: StorageNow) -> StorageResult<Timestamp> {
        Ok(self.clock.now())
    }
}
