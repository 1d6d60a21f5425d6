//! The oracle: sees every request the db host answers and every job in the
//! store, and checks the eight invariants of DESIGN.md against its own model.
//!
//! It is separate from the fault substrates: it knows nothing of turmoil, only
//! what the db acknowledged, what workers reported, and when faults hit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::driver::{
    CompleteOutcome, FailOutcome, JobCancel, JobComplete, JobCompleteMany, JobFail, JobHeartbeat, JobRelease,
    Op, Reply,
};
use stuckless_core::{Epoch, Job, JobId, JobStatus, StorageError, Timestamp, WorkerEvent};

use crate::clock::BASE;
use crate::timeline::{End, Fact};

/// The oracle shared by the db host, the workers' observers and the driver.
pub type SharedOracle = Arc<Mutex<Oracle>>;

/// Which rule was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1. A job was accepted as completed twice.
    CompletedTwice,
    /// 1. A write presenting a stale epoch was accepted.
    StaleWriteAccepted,
    /// 2. A job was claimed while another lease on it was live.
    TwoLiveLeases,
    /// 2. A lease the db had acknowledged as live, or one held by a healthy
    ///    worker, was taken back.
    LiveLeaseReaped,
    /// 3. An enqueued job disappeared.
    JobLost,
    /// 4. A job ran more attempts than it allows.
    AttemptsExceeded,
    /// 4. A job died with attempts left and a retryable error.
    DeadTooEarly,
    /// 5. A transition the state machine forbids (terminal is forever).
    IllegalTransition,
    /// 6. A job was not terminal when the liveness phase ended.
    Stuck,
    /// 7. A job sat running with an expired lease longer than the reap interval.
    ExpiredLeaseNotReaped,
    /// 7. A due job sat queued while a worker had free capacity, longer than
    ///    the poll interval.
    DueJobStarved,
    /// 8. A graceful shutdown left a job running.
    ShutdownLeftRunning,
}

impl Invariant {
    /// The snake_case name.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One broken rule, with where and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule.
    pub invariant: Invariant,
    /// The job, if one.
    pub job: Option<JobId>,
    /// Simulated time since the start.
    pub at: Duration,
    /// What exactly.
    pub detail: String,
}

/// The oracle's settings, from the world's configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Worker lease.
    pub lease: Duration,
    /// Worker reap interval.
    pub reap_interval: Duration,
    /// Worker poll interval.
    pub poll_interval: Duration,
    /// Slack for network round trips and ticks in timed checks.
    pub slack: Duration,
}

#[derive(Clone, Debug)]
struct Track {
    status: JobStatus,
    epoch: Epoch,
    attempt: i32,
    max_attempts: i32,
    holder: Option<String>,
    expires: Option<Timestamp>,
    claimed_at: Timestamp,
    completions: u32,
    completed_epoch: Option<Epoch>,
    history: Vec<String>,
    expired_since: Option<Timestamp>,
    starved_since: Option<Timestamp>,
    expired_max: Duration,
    starved_max: Duration,
    finished_at: Option<Timestamp>,
}

/// The checker.
pub struct Oracle {
    limits: Limits,
    jobs: BTreeMap<JobId, Track>,
    violations: Vec<Violation>,
    trace: String,
    /// Fault windows per worker id ("*" hits everyone: a db restart).
    faults: BTreeMap<String, Vec<(Timestamp, Timestamp)>>,
    /// Claims each worker's runtime actually started: (worker, job, epoch).
    started: BTreeSet<(String, JobId, Epoch)>,
    pickups: Vec<Duration>,
    ops: u64,
    /// Only the first violation per (invariant, job) is kept.
    seen: BTreeSet<(Invariant, Option<JobId>)>,
    /// Structured facts for the timeline picture, when asked for (they cost
    /// memory a batch of seeds does not need).
    facts: Option<Vec<Fact>>,
    /// The capacity the last sample saw, so only changes become facts.
    last_capacity: Option<bool>,
}

fn secs(at: Timestamp) -> String {
    let micros = at.micros_since(BASE);
    format!("{}.{:03}s", micros / 1_000_000, (micros % 1_000_000) / 1000)
}

impl Oracle {
    /// An oracle for a world with these limits.
    pub fn new(limits: Limits) -> Self {
        Oracle {
            limits,
            jobs: BTreeMap::new(),
            violations: Vec::new(),
            trace: String::new(),
            faults: BTreeMap::new(),
            started: BTreeSet::new(),
            pickups: Vec::new(),
            ops: 0,
            seen: BTreeSet::new(),
            facts: None,
            last_capacity: None,
        }
    }

    /// Starts keeping the structured facts the timeline is drawn from.
    pub fn keep_facts(&mut self) {
        self.facts.get_or_insert_with(Vec::new);
    }

    /// The facts kept so far (empty unless [`Oracle::keep_facts`] was called).
    pub fn facts(&self) -> &[Fact] {
        self.facts.as_deref().unwrap_or_default()
    }

    /// Records a fact, if facts are kept.
    pub fn fact(&mut self, fact: Fact) {
        if let Some(facts) = &mut self.facts {
            facts.push(fact);
        }
    }

    /// Claims the db answered, counted from the facts (0 unless kept).
    pub fn claims(&self) -> usize {
        self.facts()
            .iter()
            .filter(|f| matches!(f, Fact::Claimed { .. }))
            .count()
    }

    /// Wraps it for sharing.
    pub fn shared(self) -> SharedOracle {
        Arc::new(Mutex::new(self))
    }

    /// Every violation so far, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The full trace: one line per observed operation and fault.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Operations observed.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Pickup latencies the workers reported.
    pub fn pickups(&self) -> &[Duration] {
        &self.pickups
    }

    /// Jobs the oracle knows.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    /// One job's history, oldest first.
    pub fn history(&self, id: JobId) -> Vec<String> {
        self.jobs.get(&id).map(|t| t.history.clone()).unwrap_or_default()
    }

    /// Per job: longest time running with an expired lease, longest time due
    /// while a worker had capacity.
    pub fn stuck_times(&self) -> Vec<(JobId, Duration, Duration)> {
        self.jobs
            .iter()
            .map(|(id, t)| (*id, t.expired_max, t.starved_max))
            .collect()
    }

    /// Per job: its status in the oracle's model and when it became terminal.
    pub fn statuses(&self) -> Vec<(JobId, JobStatus, Option<Timestamp>)> {
        self.jobs
            .iter()
            .map(|(id, t)| (*id, t.status, t.finished_at))
            .collect()
    }

    /// Whether every known job is terminal.
    pub fn all_terminal(&self) -> bool {
        self.jobs.values().all(|t| t.status.is_terminal())
    }

    fn violate(&mut self, now: Timestamp, invariant: Invariant, job: Option<JobId>, detail: String) {
        if !self.seen.insert((invariant, job)) {
            return;
        }
        let line = format!(
            "{} VIOLATION {} job={:?}: {detail}",
            secs(now),
            invariant.name(),
            job.map(|j| j.0)
        );
        self.trace.push_str(&line);
        self.trace.push('\n');
        if let Some(t) = job.and_then(|j| self.jobs.get_mut(&j)) {
            t.history.push(line);
        }
        self.violations.push(Violation {
            invariant,
            job,
            at: Duration::from_micros(now.micros_since(BASE).max(0) as u64),
            detail,
        });
    }

    fn note(&mut self, now: Timestamp, id: JobId, line: String) {
        let line = format!("{} job {id}: {line}", secs(now));
        self.trace.push_str(&line);
        self.trace.push('\n');
        if let Some(t) = self.jobs.get_mut(&id) {
            t.history.push(line);
        }
    }

    /// Records a line in the trace only.
    pub fn log(&mut self, now: Timestamp, line: &str) {
        let _ = writeln!(self.trace, "{} {line}", secs(now));
    }

    /// Records that `who` ("*" for everyone) was under a fault from `start`
    /// to `end`.
    pub fn fault_window(&mut self, who: &str, start: Timestamp, end: Timestamp) {
        self.faults.entry(who.to_owned()).or_default().push((start, end));
    }

    /// Whether `worker` was under no fault (its own or everyone's) from
    /// `from` to `to`, allowing a lease after each fault for its effects.
    pub fn healthy(&self, worker: &str, from: Timestamp, to: Timestamp) -> bool {
        let lease = self.limits.lease;
        [worker, "*"].iter().all(|who| {
            self.faults
                .get(*who)
                .is_none_or(|ws| ws.iter().all(|(s, e)| *e + lease < from || *s > to))
        })
    }

    /// Checks a fenced write the db accepted.
    fn accepted_write(&mut self, now: Timestamp, from: &str, op: &str, id: JobId, epoch: Epoch) -> bool {
        let Some(t) = self.jobs.get(&id) else {
            self.violate(
                now,
                Invariant::JobLost,
                Some(id),
                format!("{op} accepted for unknown job"),
            );
            return false;
        };
        let (status, current) = (t.status, t.epoch);
        if epoch != current {
            self.violate(
                now,
                Invariant::StaleWriteAccepted,
                Some(id),
                format!("{op} from {from} at epoch {epoch} accepted; the current epoch is {current}"),
            );
            return false;
        }
        if status != JobStatus::Running {
            self.violate(
                now,
                Invariant::IllegalTransition,
                Some(id),
                format!("{op} from {from} accepted while the job was {status}"),
            );
            return false;
        }
        true
    }

    fn set_status(&mut self, id: JobId, status: JobStatus, now: Timestamp) {
        if let Some(t) = self.jobs.get_mut(&id) {
            t.status = status;
            if status != JobStatus::Running {
                t.expires = None;
            }
            if status.is_terminal() {
                t.finished_at = Some(now);
            }
        }
    }

    fn insert(&mut self, now: Timestamp, from: &str, job: &Job, inserted: bool) {
        if !inserted {
            self.note(now, job.id, format!("{from} insert (duplicate key) -> existing"));
            return;
        }
        self.fact(Fact::Inserted {
            at: now,
            job: job.id,
            run_at: job.run_at,
        });
        self.jobs.insert(
            job.id,
            Track {
                status: job.status,
                epoch: job.epoch,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                holder: None,
                expires: None,
                claimed_at: now,
                completions: 0,
                completed_epoch: None,
                history: Vec::new(),
                expired_since: None,
                starved_since: None,
                expired_max: Duration::ZERO,
                starved_max: Duration::ZERO,
                finished_at: None,
            },
        );
        self.note(
            now,
            job.id,
            format!("{from} insert run_at={} -> queued", secs(job.run_at)),
        );
    }

    fn complete(&mut self, now: Timestamp, from: &str, id: JobId, epoch: Epoch, outcome: CompleteOutcome) {
        self.note(now, id, format!("{from} complete e{epoch} -> {outcome:?}"));
        match outcome {
            CompleteOutcome::Completed => {
                let completions = self.jobs.get(&id).map_or(0, |t| t.completions);
                if completions > 0 {
                    self.violate(
                        now,
                        Invariant::CompletedTwice,
                        Some(id),
                        format!("second completion, by {from} at epoch {epoch}"),
                    );
                }
                self.accepted_write(now, from, "complete", id, epoch);
                self.fact(Fact::Ended {
                    at: now,
                    worker: from.to_owned(),
                    job: id,
                    epoch,
                    end: End::Succeeded,
                    error: None,
                });
                if let Some(t) = self.jobs.get_mut(&id) {
                    t.completions += 1;
                    t.completed_epoch = Some(epoch);
                }
                self.set_status(id, JobStatus::Succeeded, now);
            }
            CompleteOutcome::AlreadyCompleted => {
                let ok = self
                    .jobs
                    .get(&id)
                    .is_some_and(|t| t.status == JobStatus::Succeeded && t.completed_epoch == Some(epoch));
                if !ok {
                    self.violate(
                        now,
                        Invariant::StaleWriteAccepted,
                        Some(id),
                        format!(
                            "{from} told 'already completed' at epoch {epoch}, which did not complete it"
                        ),
                    );
                }
            }
        }
    }

    /// Checks one operation the db answered, and updates the model.
    pub fn observe(&mut self, now: Timestamp, from: &str, request: &Op, response: &Reply) {
        self.ops += 1;
        if let Some(e) = response.error() {
            if let Some(id) = request_job(request) {
                let name = short_name(request);
                self.note(now, id, format!("{from} {name} -> refused {e:?}"));
                if let Some(epoch) = request_epoch(request) {
                    self.refused(now, from, name, id, epoch, e);
                }
            }
            return;
        }
        match (request, response) {
            (_, Reply::JobInsert(Ok(o))) => self.insert(now, from, &o.job, o.inserted),
            (_, Reply::JobInsertMany(Ok(os))) => {
                for o in os {
                    self.insert(now, from, &o.job, o.inserted);
                }
            }
            (Op::JobClaim(_), Reply::JobClaim(Ok(jobs))) => {
                for claimed in jobs {
                    self.claimed(now, from, &claimed.job);
                }
            }
            (Op::JobHeartbeat(JobHeartbeat { id, epoch, .. }), Reply::JobHeartbeat(Ok(expires)))
                if self.accepted_write(now, from, "heartbeat", *id, *epoch) =>
            {
                if let Some(t) = self.jobs.get_mut(id) {
                    t.expires = Some(*expires);
                }
            }
            (Op::JobComplete(JobComplete { id, epoch }), Reply::JobComplete(Ok(o))) => {
                self.complete(now, from, *id, *epoch, *o)
            }
            (Op::JobCompleteMany(JobCompleteMany { jobs }), Reply::JobCompleteMany(Ok(results))) => {
                for (JobComplete { id, epoch }, result) in jobs.iter().zip(results) {
                    match result {
                        Ok(o) => self.complete(now, from, *id, *epoch, *o),
                        Err(e) => {
                            self.note(now, *id, format!("{from} complete e{epoch} -> refused {e:?}"));
                            self.refused(now, from, "complete", *id, *epoch, e);
                        }
                    }
                }
            }
            (
                Op::JobFail(JobFail {
                    id,
                    epoch,
                    error,
                    retry_after,
                }),
                Reply::JobFail(Ok(outcome)),
            ) => {
                self.note(now, *id, format!("{from} fail e{epoch} ({error}) -> {outcome:?}"));
                self.fact(Fact::Ended {
                    at: now,
                    worker: from.to_owned(),
                    job: *id,
                    epoch: *epoch,
                    end: match outcome {
                        FailOutcome::Retried { run_at } => End::Retried { run_at: *run_at },
                        FailOutcome::Dead => End::Dead,
                    },
                    error: Some(error.clone()),
                });
                if self.accepted_write(now, from, "fail", *id, *epoch) {
                    match outcome {
                        FailOutcome::Retried { .. } => self.set_status(*id, JobStatus::Queued, now),
                        FailOutcome::Dead => {
                            let (attempt, max) =
                                self.jobs.get(id).map_or((0, 0), |t| (t.attempt, t.max_attempts));
                            if retry_after.is_some() && attempt < max {
                                self.violate(
                                    now,
                                    Invariant::DeadTooEarly,
                                    Some(*id),
                                    format!("dead after attempt {attempt} of {max} on a retryable error"),
                                );
                            }
                            self.set_status(*id, JobStatus::Dead, now);
                        }
                    }
                }
            }
            (Op::JobRelease(JobRelease { id, epoch }), Reply::JobRelease(Ok(()))) => {
                self.note(now, *id, format!("{from} release e{epoch} -> queued"));
                self.fact(Fact::Ended {
                    at: now,
                    worker: from.to_owned(),
                    job: *id,
                    epoch: *epoch,
                    end: End::Released,
                    error: None,
                });
                if self.accepted_write(now, from, "release", *id, *epoch) {
                    if let Some(t) = self.jobs.get_mut(id) {
                        t.attempt -= 1;
                    }
                    self.set_status(*id, JobStatus::Queued, now);
                }
            }
            (Op::JobReapExpired(_), Reply::JobReapExpired(Ok(outcome))) => {
                for id in &outcome.requeued {
                    self.reaped(now, from, *id, false);
                }
                for id in &outcome.dead {
                    self.reaped(now, from, *id, true);
                }
            }
            (Op::JobCancel(JobCancel { id }), Reply::JobCancel(Ok(job))) => {
                let before = self.jobs.get(id).map(|t| t.status);
                self.note(
                    now,
                    *id,
                    format!("{from} cancel -> {} (was {before:?})", job.status),
                );
                match before {
                    Some(JobStatus::Queued | JobStatus::Running) => {
                        self.fact(Fact::Cancelled { at: now, job: *id });
                        self.set_status(*id, JobStatus::Cancelled, now)
                    }
                    Some(JobStatus::Cancelled) => self.set_status(*id, JobStatus::Cancelled, now),
                    Some(status) => self.violate(
                        now,
                        Invariant::IllegalTransition,
                        Some(*id),
                        format!("cancel accepted while the job was {status}"),
                    ),
                    None => self.violate(
                        now,
                        Invariant::JobLost,
                        Some(*id),
                        "cancel of an unknown job".into(),
                    ),
                }
            }
            _ => {}
        }
    }

    fn claimed(&mut self, now: Timestamp, from: &str, job: &Job) {
        let id = job.id;
        let Some(t) = self.jobs.get(&id).cloned() else {
            self.violate(
                now,
                Invariant::JobLost,
                Some(id),
                "claimed a job nobody enqueued".into(),
            );
            return;
        };
        self.note(
            now,
            id,
            format!(
                "{from} claim -> e{} attempt {}/{}",
                job.epoch, job.attempt, job.max_attempts
            ),
        );
        match t.status {
            JobStatus::Queued => {}
            JobStatus::Running if t.expires.is_some_and(|e| e > now) => self.violate(
                now,
                Invariant::TwoLiveLeases,
                Some(id),
                format!(
                    "{from} claimed it at epoch {} while {} held a lease until {}",
                    job.epoch,
                    t.holder.as_deref().unwrap_or("?"),
                    secs(t.expires.unwrap_or(now))
                ),
            ),
            status => self.violate(
                now,
                Invariant::IllegalTransition,
                Some(id),
                format!("claimed while {status}"),
            ),
        }
        if job.epoch.0 != t.epoch.0 + 1 {
            self.violate(
                now,
                Invariant::IllegalTransition,
                Some(id),
                format!("claim moved the epoch from {} to {}", t.epoch, job.epoch),
            );
        }
        if job.attempt > job.max_attempts {
            self.violate(
                now,
                Invariant::AttemptsExceeded,
                Some(id),
                format!("attempt {} of {}", job.attempt, job.max_attempts),
            );
        }
        self.fact(Fact::Claimed {
            at: now,
            worker: from.to_owned(),
            job: id,
            epoch: job.epoch,
            attempt: job.attempt,
        });
        if let Some(t) = self.jobs.get_mut(&id) {
            t.status = JobStatus::Running;
            t.epoch = job.epoch;
            t.attempt = job.attempt;
            t.holder = job.lease_owner.clone();
            t.expires = job.lease_expires_at;
            t.claimed_at = now;
        }
    }

    fn reaped(&mut self, now: Timestamp, from: &str, id: JobId, dead: bool) {
        let Some(t) = self.jobs.get(&id).cloned() else {
            self.violate(
                now,
                Invariant::JobLost,
                Some(id),
                "reaped a job nobody enqueued".into(),
            );
            return;
        };
        let holder = t.holder.clone().unwrap_or_default();
        self.fact(Fact::Reaped {
            at: now,
            by: from.to_owned(),
            job: id,
            epoch: t.epoch,
            holder: holder.clone(),
            dead,
        });
        self.note(
            now,
            id,
            format!(
                "{from} reap e{} (holder {holder}) -> {}",
                t.epoch,
                if dead { "dead" } else { "queued" }
            ),
        );
        if t.status != JobStatus::Running {
            self.violate(
                now,
                Invariant::IllegalTransition,
                Some(id),
                format!("reaped while {}", t.status),
            );
        } else if t.expires.is_some_and(|e| e > now) {
            self.violate(
                now,
                Invariant::LiveLeaseReaped,
                Some(id),
                format!(
                    "reaped by {from}; the db had acknowledged {holder}'s lease until {}",
                    secs(t.expires.unwrap_or(now))
                ),
            );
        } else if self.healthy(&holder, t.claimed_at, now) {
            self.violate(
                now,
                Invariant::LiveLeaseReaped,
                Some(id),
                format!(
                    "reaped by {from} although its holder {holder} met no fault since it claimed the job at {}",
                    secs(t.claimed_at)
                ),
            );
        }
        if dead && t.attempt < t.max_attempts {
            self.violate(
                now,
                Invariant::DeadTooEarly,
                Some(id),
                format!("reaped to dead at attempt {} of {}", t.attempt, t.max_attempts),
            );
        }
        self.set_status(id, if dead { JobStatus::Dead } else { JobStatus::Queued }, now);
    }

    /// Records what a worker's runtime reported. `started` holds the
    /// attempts in flight: an attempt that ended (even by giving up a lost
    /// lease, which leaves the job to the reaper) is no longer its
    /// shutdown's business.
    /// `now` is simulated time (no skew), for the timeline.
    pub fn worker_event(&mut self, now: Timestamp, worker: &str, event: &WorkerEvent) {
        if let WorkerEvent::LeaseLost { attempt, reason } = event {
            self.fact(Fact::LeaseLost {
                at: now,
                worker: worker.to_owned(),
                job: attempt.job_id,
                epoch: attempt.epoch,
                reason: format!("{reason:?}"),
            });
        }
        match event {
            WorkerEvent::Claimed {
                attempt,
                pickup_latency,
            } => {
                self.started
                    .insert((worker.to_owned(), attempt.job_id, attempt.epoch));
                self.pickups.push(*pickup_latency);
            }
            WorkerEvent::Completed { attempt, .. }
            | WorkerEvent::Retried { attempt, .. }
            | WorkerEvent::Dead { attempt, .. }
            | WorkerEvent::Released { attempt }
            | WorkerEvent::LeaseLost { attempt, .. }
            | WorkerEvent::StaleWriteRejected { attempt, .. } => {
                self.started
                    .remove(&(worker.to_owned(), attempt.job_id, attempt.epoch));
            }
            _ => {}
        }
    }

    /// A worker restarted: what its previous incarnation started is no longer
    /// its shutdown's business (the reaper's, once the lease runs out).
    pub fn restarted(&mut self, worker: &str) {
        self.started.retain(|(w, _, _)| w != worker);
    }

    /// Compares the store with the model and measures stuck time.
    /// `capacity` says whether some healthy worker had a free slot; `healed`
    /// is when the heal happened, once it has.
    pub fn sample(&mut self, now: Timestamp, store: &[Job], capacity: bool, healed: Option<Timestamp>) {
        if self.last_capacity.replace(capacity) != Some(capacity) {
            self.fact(Fact::Capacity {
                at: now,
                free: capacity,
            });
        }
        let mut present = BTreeSet::new();
        let mut found = Vec::new();
        for job in store {
            present.insert(job.id);
            let Some(t) = self.jobs.get_mut(&job.id) else {
                continue;
            };
            if t.status.is_terminal() && job.status != t.status {
                found.push((
                    Invariant::IllegalTransition,
                    job.id,
                    format!("{} job became {}", t.status, job.status),
                ));
            }
            if job.attempt > job.max_attempts {
                found.push((
                    Invariant::AttemptsExceeded,
                    job.id,
                    format!("attempt {} of {}", job.attempt, job.max_attempts),
                ));
            }
            let expired = job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|e| e <= now);
            measure(&mut t.expired_since, &mut t.expired_max, expired, now);
            let starved = capacity && job.status == JobStatus::Queued && job.run_at <= now;
            measure(&mut t.starved_since, &mut t.starved_max, starved, now);
            if let Some(heal) = healed {
                let settle = heal + self.limits.slack;
                let over = |since: Option<Timestamp>| since.map(|s| now.saturating_since(s.max(settle)));
                if over(t.expired_since).is_some_and(|d| d > self.limits.reap_interval + self.limits.slack) {
                    found.push((
                        Invariant::ExpiredLeaseNotReaped,
                        job.id,
                        format!(
                            "running with a lease expired at {} and nobody reaps it",
                            secs(job.lease_expires_at.unwrap_or(now))
                        ),
                    ));
                }
                if over(t.starved_since).is_some_and(|d| d > self.limits.poll_interval + self.limits.slack) {
                    found.push((
                        Invariant::DueJobStarved,
                        job.id,
                        format!("due since {} while a worker had free capacity", secs(job.run_at)),
                    ));
                }
            }
        }
        let lost: Vec<JobId> = self
            .jobs
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in lost {
            found.push((Invariant::JobLost, id, "missing from the store".into()));
        }
        for (invariant, id, detail) in found {
            self.violate(now, invariant, Some(id), detail);
        }
    }

    /// Invariant 8: after `worker` finished a graceful shutdown, none of the
    /// jobs it started may still be running under its lease.
    pub fn check_shutdown(&mut self, now: Timestamp, worker: &str, store: &[Job]) {
        let left: Vec<(JobId, Epoch)> = store
            .iter()
            .filter(|j| j.status == JobStatus::Running && j.lease_owner.as_deref() == Some(worker))
            // A lease already expired was given up by an attempt that ended
            // (unconfirmed write, lost lease): the reaper's business.
            .filter(|j| j.lease_expires_at.is_some_and(|e| e > now))
            .filter(|j| self.started.contains(&(worker.to_owned(), j.id, j.epoch)))
            .map(|j| (j.id, j.epoch))
            .collect();
        for (id, epoch) in left {
            self.violate(
                now,
                Invariant::ShutdownLeftRunning,
                Some(id),
                format!(
                    "{worker} finished its graceful shutdown with this job still running at epoch {epoch}"
                ),
            );
        }
    }

    /// Invariant 6: at the end of the liveness phase every job is terminal.
    pub fn check_terminal(&mut self, now: Timestamp, store: &[Job]) {
        let stuck: Vec<(JobId, String)> = store
            .iter()
            .filter(|j| !j.status.is_terminal())
            .map(|j| {
                (
                    j.id,
                    format!(
                        "{} since {} (attempt {}/{}, lease owner {:?}, lease until {:?}) when the run ended",
                        j.status,
                        secs(j.updated_at),
                        j.attempt,
                        j.max_attempts,
                        j.lease_owner,
                        j.lease_expires_at.map(secs)
                    ),
                )
            })
            .collect();
        for (id, detail) in stuck {
            self.violate(now, Invariant::Stuck, Some(id), detail);
        }
    }
}

impl Oracle {
    /// A fenced write the db refused as stale (epoch or status) becomes a
    /// fact; a transient error (db down) does not: nothing was judged.
    fn refused(&mut self, now: Timestamp, from: &str, op: &str, id: JobId, epoch: Epoch, e: &StorageError) {
        if matches!(
            e,
            StorageError::StaleEpoch { .. } | StorageError::WrongStatus { .. }
        ) {
            self.fact(Fact::Refused {
                at: now,
                worker: from.to_owned(),
                job: id,
                epoch,
                op: op.to_owned(),
                detail: format!("{e:?}"),
            });
        }
    }
}

fn measure(since: &mut Option<Timestamp>, max: &mut Duration, on: bool, now: Timestamp) {
    if on {
        let start = *since.get_or_insert(now);
        *max = (*max).max(now.saturating_since(start));
    } else {
        *since = None;
    }
}

/// The operation's name as traces print it: `job_complete` is "complete".
fn short_name(request: &Op) -> &'static str {
    let name = request.name();
    name.strip_prefix("job_").unwrap_or(name)
}

fn request_epoch(request: &Op) -> Option<Epoch> {
    match request {
        Op::JobHeartbeat(JobHeartbeat { epoch, .. })
        | Op::JobComplete(JobComplete { epoch, .. })
        | Op::JobFail(JobFail { epoch, .. })
        | Op::JobRelease(JobRelease { epoch, .. }) => Some(*epoch),
        Op::JobCompleteMany(JobCompleteMany { jobs }) if jobs.len() == 1 => Some(jobs[0].epoch),
        _ => None,
    }
}

fn request_job(request: &Op) -> Option<JobId> {
    match request {
        Op::JobHeartbeat(JobHeartbeat { id, .. })
        | Op::JobComplete(JobComplete { id, .. })
        | Op::JobFail(JobFail { id, .. })
        | Op::JobRelease(JobRelease { id, .. })
        | Op::JobCancel(JobCancel { id }) => Some(*id),
        Op::JobCompleteMany(JobCompleteMany { jobs }) if jobs.len() == 1 => Some(jobs[0].id),
        _ => None,
    }
}
