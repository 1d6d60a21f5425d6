//! Invariants 6–8, liveness: once faults are over every job ends terminal, an
//! expired lease is reaped within the reap interval, a due job is picked up
//! within the poll interval while a worker has room, and a graceful shutdown
//! leaves nothing running.
//!
//! The two timed promises are owed during the chaos phase too, wherever a
//! worker is *live*: up, not shutting down, and with no fault on it or on
//! the db for a lease (its calls have timed out and its connections are
//! fresh). [`Owed`] holds the worst waits measured that way and the bounds
//! ([`Limits::reap_bound`], [`Limits::pickup_bound`]) they are held to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};

use super::{Checker, Finding, Invariant, Limits};
use crate::config::worker_name;
use crate::model::Model;
use crate::observe::{JobRow, Observation, UpWorker};
use crate::plan::Fault;
use crate::recorder::secs;

/// How long a job has sat in a bad state: since when, and the longest yet.
#[derive(Clone, Copy, Debug, Default)]
struct Spell {
    since: Option<Timestamp>,
    max: Duration,
}

impl Spell {
    fn measure(&mut self, on: bool, now: Timestamp) {
        if on {
            let start = *self.since.get_or_insert(now);
            self.max = self.max.max(now.saturating_since(start));
        } else {
            self.since = None;
        }
    }
}

/// A run's worst liveness waits while a live worker owed them, and the
/// bounds they are held to (from the workers' settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    /// Longest a lease stayed expired, counted from the later of its expiry
    /// and the moment some worker became live (and stayed live).
    pub expired: Duration,
    /// What `expired` may reach: [`Limits::reap_bound`].
    pub expired_bound: Duration,
    /// Longest a job stayed due, counted from the later of its becoming due
    /// and the moment some live worker with a handler for its kind had a
    /// free slot (and kept one).
    pub due: Duration,
    /// What `due` may reach: [`Limits::pickup_bound`].
    pub due_bound: Duration,
}

/// The liveness checker: stuck-time measurements per job, the attempts each
/// worker has in flight, and when liveness became owed.
#[derive(Debug)]
pub struct Liveness {
    limits: Limits,
    /// Per job: running with an expired lease; due while a worker had room.
    spells: BTreeMap<JobId, (Spell, Spell)>,
    /// Attempts each worker's runtime started and has not ended.
    started: BTreeSet<(String, JobId, Epoch)>,
    healed: Option<Timestamp>,
    /// Per live worker, since when it has been live without a break.
    live_since: BTreeMap<String, Timestamp>,
    /// Per live worker with a free slot, since when, and its kinds.
    room_since: BTreeMap<String, (Timestamp, Vec<String>)>,
    /// Per queued job, the first sample that saw it queued in this spell.
    queued_since: BTreeMap<JobId, Timestamp>,
    /// Per worker index, its clock's offset from true time, ms.
    offsets: BTreeMap<usize, i64>,
    /// Per worker, until when a backward step of its clock excuses it from
    /// owing pickups (see [`Liveness::clock_step`]).
    stepped_back: BTreeMap<String, Timestamp>,
    owed: Owed,
}

/// Whether `worker` has a free slot and no backward step of its clock
/// excuses it from owing pickups at `now` (see [`Liveness::clock_step`]).
fn owes_pickups(stepped_back: &BTreeMap<String, Timestamp>, worker: &UpWorker, now: Timestamp) -> bool {
    worker.room && stepped_back.get(&worker.name).is_none_or(|until| *until < now)
}

impl Liveness {
    /// A liveness checker with these limits.
    pub fn new(limits: Limits) -> Self {
        Liveness {
            owed: Owed {
                expired_bound: limits.reap_bound(),
                due_bound: limits.pickup_bound(),
                ..Owed::default()
            },
            limits,
            spells: BTreeMap::new(),
            started: BTreeSet::new(),
            healed: None,
            live_since: BTreeMap::new(),
            room_since: BTreeMap::new(),
            queued_since: BTreeMap::new(),
            offsets: BTreeMap::new(),
            stepped_back: BTreeMap::new(),
        }
    }

    /// A worker's clock stepped to `offset_ms`. The claim loop schedules its
    /// poll as a reading of the worker's clock plus the poll interval, so a
    /// step back of J postpones that poll by J: the pickup bound assumes a
    /// clock that did not step back, and the worker owes pickups again only
    /// J after the step (plus the lease every fault is allowed). Reaps are
    /// timed by sleeps and judged on the db's clock, so no step excuses them.
    fn clock_step(&mut self, at: Timestamp, worker: usize, offset_ms: i64) {
        let before = self.offsets.insert(worker, offset_ms).unwrap_or(0);
        let back = Duration::from_millis(before.saturating_sub(offset_ms).max(0) as u64);
        if !back.is_zero() {
            let until = at + back + self.limits.lease;
            let excused = self.stepped_back.entry(worker_name(worker)).or_insert(until);
            *excused = (*excused).max(until);
        }
    }

    /// The worst waits owed by live workers so far, with their bounds.
    pub fn owed(&self) -> Owed {
        self.owed
    }

    /// Learns which workers are live at `now` (up, and healthy for a lease).
    fn workers(&mut self, model: &Model, now: Timestamp, up: &[UpWorker]) {
        let live: Vec<&UpWorker> = up.iter().filter(|w| model.healthy(&w.name, now, now)).collect();
        self.live_since
            .retain(|name, _| live.iter().any(|w| &w.name == name));
        let stepped_back = &self.stepped_back;
        let owes_pickups = |w: &UpWorker| owes_pickups(stepped_back, w, now);
        self.room_since
            .retain(|name, _| live.iter().any(|w| &w.name == name && owes_pickups(w)));
        for w in live {
            self.live_since.entry(w.name.clone()).or_insert(now);
            if owes_pickups(w) {
                self.room_since
                    .entry(w.name.clone())
                    .or_insert_with(|| (now, w.kinds.clone()));
            }
        }
    }

    /// Invariant 7 wherever a live worker owes it: an expired lease is
    /// reaped, and a due job claimed, within their bounds.
    fn owed_waits(&mut self, now: Timestamp, job: &JobRow, found: &mut Vec<Finding>) {
        let expiry = job
            .lease_expires_at
            .filter(|e| job.status == JobStatus::Running && *e <= now);
        let live_from = self.live_since.values().min().copied();
        if let (Some(expiry), Some(live_from)) = (expiry, live_from) {
            let wait = now.saturating_since(expiry.max(live_from));
            self.owed.expired = self.owed.expired.max(wait);
            if wait > self.owed.expired_bound {
                found.push((
                    Invariant::ExpiredLeaseNotReaped,
                    Some(job.id),
                    format!(
                        "lease expired at {} and not reaped {} ms after a worker was live to reap it (bound {} ms)",
                        secs(expiry),
                        wait.as_millis(),
                        self.owed.expired_bound.as_millis()
                    ),
                ));
            }
        }
        if job.status != JobStatus::Queued {
            self.queued_since.remove(&job.id);
            return;
        }
        let queued = *self.queued_since.entry(job.id).or_insert(now);
        if job.run_at > now {
            return;
        }
        let capable_from = self
            .room_since
            .values()
            .filter(|(_, kinds)| kinds.contains(&job.kind))
            .map(|(since, _)| *since)
            .min();
        if let Some(capable_from) = capable_from {
            let wait = now.saturating_since(job.run_at.max(queued).max(capable_from));
            self.owed.due = self.owed.due.max(wait);
            if wait > self.owed.due_bound {
                found.push((
                    Invariant::DueJobStarved,
                    Some(job.id),
                    format!(
                        "due since {} and not claimed {} ms after a live worker for its kind had a free slot (bound {} ms)",
                        secs(job.run_at.max(queued)),
                        wait.as_millis(),
                        self.owed.due_bound.as_millis()
                    ),
                ));
            }
        }
    }

    /// Per job: longest time running with an expired lease, longest time due
    /// while a worker had capacity.
    pub fn stuck_times(&self) -> Vec<(JobId, Duration, Duration)> {
        self.spells
            .iter()
            .map(|(id, (expired, starved))| (*id, expired.max, starved.max))
            .collect()
    }

    fn sample(
        &mut self,
        model: &Model,
        now: Timestamp,
        jobs: &[JobRow],
        up: &[UpWorker],
        found: &mut Vec<Finding>,
    ) {
        self.workers(model, now, up);
        // Free capacity is a slot of a worker that owes pickups: one whose
        // clock stepped back owes none until its excuse ends, after the heal
        // too, since its attempts judge their leases on its clock and slots
        // the db counts free can still hold attempts whose leases were reaped
        // (seed 904: a 96.6 s step during a partition).
        let capacity = up.iter().any(|w| owes_pickups(&self.stepped_back, w, now));
        for job in jobs {
            if !model.knows(job.id) {
                continue;
            }
            self.owed_waits(now, job, found);
            let limits = &self.limits;
            let (expired_spell, starved_spell) = self.spells.entry(job.id).or_default();
            let expired = job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|e| e <= now);
            expired_spell.measure(expired, now);
            let starved = capacity && job.status == JobStatus::Queued && job.run_at <= now;
            starved_spell.measure(starved, now);
            let Some(heal) = self.healed else {
                continue;
            };
            let settle = heal + limits.slack;
            let over = |since: Option<Timestamp>| since.map(|s| now.saturating_since(s.max(settle)));
            if over(expired_spell.since).is_some_and(|d| d > limits.reap_interval + limits.slack) {
                found.push((
                    Invariant::ExpiredLeaseNotReaped,
                    Some(job.id),
                    format!(
                        "running with a lease expired at {} and nobody reaps it",
                        secs(job.lease_expires_at.unwrap_or(now))
                    ),
                ));
            }
            if over(starved_spell.since).is_some_and(|d| d > limits.poll_interval + limits.slack) {
                found.push((
                    Invariant::DueJobStarved,
                    Some(job.id),
                    format!("due since {} while a worker had free capacity", secs(job.run_at)),
                ));
            }
        }
    }

    /// A reap the db dated (it said when the lease had expired) must come
    /// within the reap interval and slack, once liveness is owed.
    fn reap_delay(&self, now: Timestamp, job: JobId, expired: Timestamp, found: &mut Vec<Finding>) {
        let Some(heal) = self.healed else {
            return;
        };
        let limit = self.limits.reap_interval + self.limits.slack;
        let delay = now.saturating_since(expired.max(heal + self.limits.slack));
        if delay > limit {
            found.push((
                Invariant::ExpiredLeaseNotReaped,
                Some(job),
                format!(
                    "lease expired {} ms before the reap (limit {} ms)",
                    now.saturating_since(expired).as_millis(),
                    limit.as_millis()
                ),
            ));
        }
    }

    /// Invariant 8: after `worker` finished a graceful shutdown, none of the
    /// jobs it started may still be running under its lease.
    fn shutdown(&self, now: Timestamp, worker: &str, jobs: &[JobRow], found: &mut Vec<Finding>) {
        let left = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Running && j.lease_owner.as_deref() == Some(worker))
            // A lease already expired was given up by an attempt that ended
            // (unconfirmed write, lost lease): the reaper's business.
            .filter(|j| j.lease_expires_at.is_some_and(|e| e > now))
            .filter(|j| self.started.contains(&(worker.to_owned(), j.id, j.epoch)));
        for j in left {
            found.push((
                Invariant::ShutdownLeftRunning,
                Some(j.id),
                format!(
                    "{worker} finished its graceful shutdown with this job still running at epoch {}",
                    j.epoch
                ),
            ));
        }
    }
}

/// Invariant 6: at the end of the liveness phase every job is terminal.
fn terminal(jobs: &[JobRow], found: &mut Vec<Finding>) {
    for j in jobs.iter().filter(|j| !j.status.is_terminal()) {
        found.push((
            Invariant::Stuck,
            Some(j.id),
            format!(
                "{} since {} (attempt {}/{}, lease owner {:?}, lease until {:?}) when the run ended",
                j.status,
                secs(j.updated_at),
                j.attempt,
                j.max_attempts,
                j.lease_owner,
                j.lease_expires_at.map(secs)
            ),
        ));
    }
}

impl Checker for Liveness {
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::Inserted { job, new: true, .. } => {
                self.spells.insert(*job, Default::default());
            }
            Observation::Healed { at } => self.healed = Some(*at),
            Observation::FaultInjected {
                at,
                fault: Fault::Skew { worker, offset_ms },
                ..
            } => self.clock_step(*at, *worker, *offset_ms),
            Observation::Sampled { at, jobs, up, .. } => self.sample(model, *at, jobs, up, found),
            Observation::Reaped {
                at,
                job,
                lease_expired_at: Some(expired),
                ..
            } if model.knows(*job) => self.reap_delay(*at, *job, *expired, found),
            Observation::AttemptStarted {
                worker, job, epoch, ..
            } => {
                self.started.insert((worker.clone(), *job, *epoch));
            }
            // An attempt that ended (even by giving up a lost lease, which
            // leaves the job to the reaper) is no longer its shutdown's business.
            Observation::AttemptEnded {
                worker, job, epoch, ..
            }
            | Observation::LeaseLost {
                worker, job, epoch, ..
            } => {
                self.started.remove(&(worker.clone(), *job, *epoch));
            }
            // A restarted worker's previous incarnation's attempts are the
            // reaper's business once their leases run out.
            Observation::Restarted { worker, .. } => self.started.retain(|(w, _, _)| w != worker),
            Observation::ShutdownFinished {
                at,
                worker,
                since,
                jobs,
            } if model.healthy(worker, *since, *at) => self.shutdown(*at, worker, jobs, found),
            Observation::Ended { jobs, .. } => terminal(jobs, found),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};

    use crate::check::{Checkers, Invariant, Limits};
    use crate::observe::{JobRow, Observation, UpWorker};
    use crate::plan::Fault;

    const JOB: JobId = JobId(1);

    fn at(secs: u64) -> Timestamp {
        crate::clock::BASE + Duration::from_secs(secs)
    }

    fn checkers() -> Checkers {
        Checkers::new(Limits {
            lease: Duration::from_secs(30),
            reap_interval: Duration::from_secs(20),
            poll_interval: Duration::from_secs(60),
            slack: Duration::from_secs(3),
        })
    }

    /// A queued job of `kind`, due from 0 s, sampled every 10 s up to
    /// `until` with one worker up, with room, for `worker_kind`, after
    /// `before` (observations at 0 s); returns the invariants found.
    fn due_job(
        kind: &str,
        worker_kind: &str,
        before: Vec<Observation>,
        until: u64,
    ) -> (Checkers, Vec<Invariant>) {
        let mut checkers = checkers();
        checkers.observe(&Observation::Inserted {
            at: at(0),
            from: "producer".into(),
            job: JOB,
            new: true,
            status: JobStatus::Queued,
            epoch: Epoch(0),
            attempt: 0,
            max_attempts: 5,
            run_at: at(0),
        });
        for o in before {
            checkers.observe(&o);
        }
        let row = JobRow {
            id: JOB,
            status: JobStatus::Queued,
            epoch: Epoch(0),
            attempt: 0,
            max_attempts: 5,
            kind: kind.into(),
            lease_owner: None,
            lease_expires_at: None,
            run_at: at(0),
            updated_at: at(0),
            finished_at: None,
        };
        for t in (0..=until).step_by(10) {
            checkers.observe(&Observation::Sampled {
                at: at(t),
                jobs: vec![row.clone()],
                free_capacity: true,
                up: vec![UpWorker {
                    name: "w1".into(),
                    kinds: vec![worker_kind.into()],
                    room: true,
                }],
            });
        }
        let found = checkers.violations().iter().map(|v| v.invariant).collect();
        (checkers, found)
    }

    #[test]
    fn a_due_job_a_live_worker_leaves_past_the_poll_bound_is_starved() {
        let (checkers, found) = due_job("report", "report", Vec::new(), 60);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(checkers.liveness().owed().due, Duration::from_secs(60));
        let (checkers, found) = due_job("report", "report", Vec::new(), 70);
        assert_eq!(found, vec![Invariant::DueJobStarved]);
        let owed = checkers.liveness().owed();
        assert_eq!(owed.due_bound, Duration::from_secs(63));
        assert!(owed.due > owed.due_bound);
    }

    #[test]
    fn only_a_worker_with_a_handler_for_the_kind_owes_the_pickup() {
        let (checkers, found) = due_job("summary", "report", Vec::new(), 200);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(checkers.liveness().owed().due, Duration::ZERO);
    }

    #[test]
    fn a_clock_stepped_back_postpones_the_pickup_it_owes() {
        // w1's clock goes 40 s ahead, then 40 s back at 0 s: its poll may
        // come 40 s late, so it owes the pickup from the first sample after
        // 40 s + the lease (80 s) on.
        let skew = |offset_ms| Observation::FaultInjected {
            at: at(0),
            fault: Fault::Skew { worker: 0, offset_ms },
            took_effect: true,
        };
        let (checkers, found) = due_job("report", "report", vec![skew(40_000), skew(0)], 130);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(checkers.liveness().owed().due, Duration::from_secs(50));
        let (_, found) = due_job("report", "report", vec![skew(40_000), skew(0)], 150);
        assert_eq!(found, vec![Invariant::DueJobStarved]);
    }
}
