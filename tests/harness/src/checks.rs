//! The end-of-run checks: what the database and the side table say happened,
//! and whether it is what stuckless promises.
//!
//! The rows are turned into the simulator's [`Observation`]s
//! ([`observations`]) and judged by the simulator's own checkers — fencing,
//! lifecycle, liveness, plus the executions checker for the side table — so
//! the real-process run and the simulation hold stuckless to the same rules.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::PgPool;
use stuckless_sim::check::{Checkers, Executions, Invariant, Limits};
use stuckless_sim::observe::Observation;

use anyhow::Context;

pub use crate::history::observations;

/// A job as it ended.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JobFact {
    /// Job id.
    pub id: i64,
    /// Final status.
    pub status: String,
    /// Final epoch (the latest claim's).
    pub epoch: i64,
    /// Final attempt number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Latest lease owner.
    pub lease_owner: Option<String>,
    /// When the lease runs out, while running, µs.
    pub lease_expires_at: Option<i64>,
    /// When it is (or was) due, µs.
    pub run_at: i64,
    /// Its last change, µs.
    pub updated_at: i64,
    /// When it became terminal, µs since the epoch (database clock).
    pub finished_at: Option<i64>,
}

/// One row of `job_events`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EventFact {
    /// Job id.
    pub job_id: i64,
    /// Event kind (`claimed`, `completed`, `reaped`, ...).
    pub kind: String,
    /// Epoch at the event.
    pub epoch: i64,
    /// Attempt number at the event.
    pub attempt: i32,
    /// Worker involved.
    pub worker_id: Option<String>,
    /// When, µs (database clock).
    pub at: i64,
    /// For reaps: when the lease had expired, µs (parsed from the detail).
    pub lease_expired_at: Option<i64>,
}

/// One recorded execution of a handler.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ExecFact {
    /// Job id.
    pub job_id: i64,
    /// Epoch the handler was given.
    pub epoch: i64,
    /// Worker that ran it.
    pub worker_id: String,
    /// Start, µs (database clock).
    pub started_at: i64,
    /// Finish of the handler's work, µs, if it got that far.
    pub finished_at: Option<i64>,
}

/// Everything the checks look at.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Ids the run enqueued.
    pub enqueued: Vec<i64>,
    /// Every job row.
    pub jobs: Vec<JobFact>,
    /// Every event.
    pub events: Vec<EventFact>,
    /// Every recorded execution.
    pub executions: Vec<ExecFact>,
}

/// The configuration the stuck-time bound derives from.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Workers' lease.
    pub lease: Duration,
    /// Workers' reap interval.
    pub reap_interval: Duration,
    /// Allowance for a reap statement's own latency and a reaper that had
    /// just started (stated in the report).
    pub slack: Duration,
    /// Spans in which the database was down (restarts) or every worker
    /// connection had just been cut: no reaper can reap then.
    pub outages: Vec<crate::outage::Outage>,
}

impl Bounds {
    /// The most a job may sit with a dead holder: lease + reap interval + slack.
    pub fn stuck_limit(&self) -> Duration {
        self.lease + self.reap_interval + self.slack
    }

    /// The "late reaps" rule: from when a reap of a lease that expired at
    /// `expired_us` is owed, µs. Normally from the expiry; but if an outage
    /// began before the reap was due (expiry + reap interval + slack) and
    /// ended after the expiry, no reaper could reach the row in between, so
    /// it is owed from the server's return: reap interval + slack after it.
    pub fn owed_from(&self, expired_us: i64) -> i64 {
        let due_after = (self.reap_interval + self.slack).as_micros() as i64;
        let mut owed = expired_us;
        let mut outages = self.outages.clone();
        outages.sort_by_key(|o| o.from_us);
        for o in outages {
            if o.from_us <= owed + due_after && o.back_us > owed {
                owed = o.back_us;
            }
        }
        owed
    }
}

/// The checks' findings.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Job rows found.
    pub jobs: usize,
    /// Final status → count.
    pub statuses: BTreeMap<String, usize>,
    /// Enqueued ids with no row.
    pub lost: Vec<i64>,
    /// Jobs not terminal at the end.
    pub not_terminal: Vec<i64>,
    /// Completions accepted from a stale epoch, described.
    pub stale_completions: Vec<String>,
    /// Executions that belong to no real attempt, described.
    pub bogus_executions: Vec<String>,
    /// Jobs whose lease sat expired longer than the bound, described.
    pub stuck: Vec<String>,
    /// Any other invariant the checkers found broken, described.
    pub other: Vec<String>,
    /// Executions recorded.
    pub executions: usize,
    /// Jobs whose handler ran more than once (allowed: at-least-once).
    pub jobs_run_more_than_once: usize,
    /// Reaps seen (expired leases taken back).
    pub reaps: usize,
    /// Longest time a job sat with a dead holder before its reap (lease +
    /// expiry to reap; for a reap owed from a server's return, counted from
    /// lease before the return), ms.
    pub max_stuck_ms: i64,
    /// The bound it was held to, ms.
    pub stuck_limit_ms: i64,
    /// Reaps owed from a server's return rather than the expiry (late reaps rule).
    pub reaps_after_outage: usize,
    /// Of those, the longest from the return to the reap, ms.
    pub max_reap_after_return_ms: i64,
    /// Extra violations found by the orchestrator during the run.
    pub run_violations: Vec<String>,
    /// The lease the bound includes, ms.
    pub lease_ms: i64,
}

impl Verdict {
    /// Every violation, one line each; empty when the run passed.
    pub fn violations(&self) -> Vec<String> {
        // Each finding, prefixed by what it breaks.
        fn said<T: std::fmt::Display>(what: &str, found: &[T]) -> Vec<String> {
            found.iter().map(|f| format!("{what}{f}")).collect()
        }
        let mut out = Vec::new();
        out.extend(
            self.lost
                .iter()
                .map(|id| format!("lost: job {id} was enqueued and is gone")),
        );
        out.extend(said("not terminal: job ", &self.not_terminal));
        out.extend(said("stale completion: ", &self.stale_completions));
        out.extend(said("bogus execution: ", &self.bogus_executions));
        out.extend(said("stuck: ", &self.stuck));
        out.extend(said("invariant: ", &self.other));
        out.extend(self.run_violations.iter().cloned());
        out
    }

    /// Whether nothing was violated.
    pub fn passed(&self) -> bool {
        self.violations().is_empty()
    }

    /// The summary lines the chaos run prints.
    pub fn summary(&self) -> Vec<String> {
        vec![
            format!("jobs={} statuses={:?}", self.jobs, self.statuses),
            format!("check all_terminal not_terminal={}", self.not_terminal.len()),
            format!("check zero_lost lost={}", self.lost.len()),
            format!(
                "check stale_completions_accepted count={}",
                self.stale_completions.len()
            ),
            format!(
                "check executions_are_real_attempts executions={} bogus={} jobs_run_more_than_once={}",
                self.executions,
                self.bogus_executions.len(),
                self.jobs_run_more_than_once
            ),
            format!(
                "check stuck_time reaps={} max_stuck_ms={} limit_ms={} over_limit={}",
                self.reaps,
                self.max_stuck_ms,
                self.stuck_limit_ms,
                self.stuck.len()
            ),
            format!(
                "check late_reaps reaps_after_outage={} max_after_return_ms={} limit_ms={}",
                self.reaps_after_outage,
                self.max_reap_after_return_ms,
                self.stuck_limit_ms - self.lease_ms
            ),
            format!("check other_invariants count={}", self.other.len()),
        ]
    }
}

/// Every row of `query`, decoded by column name; `what` names the rows in
/// errors ("reading jobs", "decoding jobs").
async fn read_all<T>(pool: &PgPool, query: &'static str, what: &str) -> anyhow::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow>,
{
    let rows = sqlx::query(query)
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading {what}"))?;
    rows.iter()
        .map(T::from_row)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .with_context(|| format!("decoding {what}"))
}

/// The jobs as they ended, times in µs.
const JOB_FACTS: &str = "select id, status, epoch, attempt, max_attempts, lease_owner,
        stuckless.to_micros(lease_expires_at) as lease_expires_at,
        stuckless.to_micros(run_at) as run_at, stuckless.to_micros(updated_at) as updated_at,
        stuckless.to_micros(finished_at) as finished_at
    from stuckless.jobs order by id";

/// Every job event; a reap's lease expiry is parsed from its detail.
const EVENT_FACTS: &str = r"select job_id, kind, epoch, attempt, worker_id, stuckless.to_micros(at) as at,
        stuckless.to_micros(substring(detail from 'lease expired at ([0-9T:.Z-]+)')::timestamptz)
          as lease_expired_at
    from stuckless.job_events order by id";

/// The side table the recording handler writes.
const EXEC_FACTS: &str = "select job_id, epoch, worker_id, stuckless.to_micros(started_at) as started_at,
        stuckless.to_micros(finished_at) as finished_at
    from stuckless_chaos.executions order by id";

/// Reads the facts from the run's database.
pub async fn gather(pool: &PgPool, enqueued: Vec<i64>) -> anyhow::Result<Facts> {
    let jobs = read_all(pool, JOB_FACTS, "jobs").await?;
    let events = read_all(pool, EVENT_FACTS, "job_events").await?;
    let executions = read_all(pool, EXEC_FACTS, "the side table").await?;
    Ok(Facts {
        enqueued,
        jobs,
        events,
        executions,
    })
}

/// Runs every check over `facts`: the simulator's fencing, lifecycle and
/// liveness checkers and its executions checker, over [`observations`].
///
/// - every enqueued job exists (zero lost) and is terminal;
/// - no stale completion was accepted: at most one completion per job, none
///   from an epoch that was not current; and every succeeded job has an
///   execution at its final epoch, by its final owner, whose work finished no
///   later than the job did (a completion accepted from an older epoch would
///   have succeeded the job while the current holder was still working);
/// - every execution belongs to a real attempt: 1 ≤ epoch ≤ the job's final
///   epoch, at most one execution per (job, epoch), and its worker is the one
///   the db granted that epoch to;
/// - every reap came at most `reap_interval + slack` after the lease expired,
///   so a job sat with a dead holder at most `lease + reap_interval + slack`;
///   a lease that expired during an outage (or too shortly before it to be
///   reaped) is owed from the server's return instead ([`Bounds::owed_from`]);
/// - no other invariant of the state machine was broken (transitions,
///   attempts, epochs moving one at a time).
pub fn check(facts: &Facts, bounds: Bounds) -> Verdict {
    let mut v = Verdict {
        jobs: facts.jobs.len(),
        executions: facts.executions.len(),
        stuck_limit_ms: bounds.stuck_limit().as_millis() as i64,
        lease_ms: bounds.lease.as_millis() as i64,
        ..Verdict::default()
    };
    // The late reaps rule: a reap owed from a server's return is judged from
    // then, by moving the expiry the checkers see to the return.
    let mut moved = facts.clone();
    for e in moved.events.iter_mut() {
        let Some(expired) = e.lease_expired_at else {
            continue;
        };
        let owed = bounds.owed_from(expired);
        if owed != expired {
            v.reaps_after_outage += 1;
            v.max_reap_after_return_ms = v.max_reap_after_return_ms.max((e.at - owed) / 1000);
            e.lease_expired_at = Some(owed);
        }
    }
    let facts = &moved;
    for job in &facts.jobs {
        *v.statuses.entry(job.status.clone()).or_default() += 1;
    }
    let mut checkers = Checkers::new(Limits {
        lease: bounds.lease,
        reap_interval: bounds.reap_interval,
        // No sample here sees free capacity: starvation is not judged.
        poll_interval: Duration::ZERO,
        slack: bounds.slack,
    })
    .with(Box::new(Executions::default()));
    let lease_us = bounds.lease.as_micros() as i64;
    for o in observations(facts) {
        if let Observation::Reaped {
            at,
            lease_expired_at: Some(expired),
            ..
        } = &o
        {
            v.reaps += 1;
            let delay = at.micros_since(*expired);
            v.max_stuck_ms = v.max_stuck_ms.max((delay + lease_us) / 1000);
        }
        checkers.observe(&o);
    }
    for violation in checkers.violations() {
        let id = violation.job.map_or(0, |j| j.0);
        let line = format!("job {id} {}: {}", violation.invariant.name(), violation.detail);
        match violation.invariant {
            Invariant::JobLost => v.lost.push(id),
            Invariant::Stuck => v.not_terminal.push(id),
            Invariant::CompletedTwice | Invariant::StaleWriteAccepted => v.stale_completions.push(line),
            Invariant::BogusExecution => v.bogus_executions.push(format!("job {id} {}", violation.detail)),
            Invariant::ExpiredLeaseNotReaped => v.stuck.push(line),
            _ => v.other.push(line),
        }
    }
    let mut runs_per_job: BTreeMap<i64, usize> = BTreeMap::new();
    for x in &facts.executions {
        *runs_per_job.entry(x.job_id).or_default() += 1;
    }
    v.jobs_run_more_than_once = runs_per_job.values().filter(|n| **n > 1).count();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn bounds() -> Bounds {
        Bounds {
            lease: Duration::from_secs(3),
            reap_interval: Duration::from_secs(2),
            slack: Duration::from_secs(1),
            outages: Vec::new(),
        }
    }

    fn ev(job_id: i64, kind: &str, epoch: i64, worker: &str, at: i64) -> EventFact {
        EventFact {
            job_id,
            kind: kind.into(),
            epoch,
            attempt: epoch as i32,
            worker_id: Some(worker.into()),
            at,
            lease_expired_at: None,
        }
    }

    fn exec(job_id: i64, epoch: i64, worker: &str, started: i64, finished: Option<i64>) -> ExecFact {
        ExecFact {
            job_id,
            epoch,
            worker_id: worker.into(),
            started_at: started,
            finished_at: finished,
        }
    }

    fn job(id: i64, status: &str, epoch: i64, owner: &str, finished: Option<i64>) -> JobFact {
        JobFact {
            id,
            status: status.into(),
            epoch,
            attempt: epoch as i32,
            max_attempts: 5,
            lease_owner: Some(owner.into()),
            lease_expires_at: None,
            run_at: 0,
            updated_at: finished.unwrap_or(30 * S),
            finished_at: finished,
        }
    }

    /// Job 1: claimed by a, a dies, reaped, claimed by b, completed.
    fn healthy() -> Facts {
        let mut reap = ev(1, "reaped", 1, "a", 14 * S);
        reap.lease_expired_at = Some(13 * S);
        Facts {
            enqueued: vec![1],
            jobs: vec![job(1, "succeeded", 2, "b", Some(20 * S))],
            events: vec![
                ev(1, "claimed", 1, "a", 10 * S),
                reap,
                ev(1, "claimed", 2, "b", 15 * S),
                ev(1, "completed", 2, "b", 20 * S),
            ],
            executions: vec![
                exec(1, 1, "a", 10 * S, None),
                exec(1, 2, "b", 15 * S, Some(19 * S)),
            ],
        }
    }

    #[test]
    fn a_healthy_history_passes() {
        let v = check(&healthy(), bounds());
        assert!(v.passed(), "{:?}", v.violations());
        assert_eq!(v.reaps, 1);
        assert_eq!(v.max_stuck_ms, 4000);
        assert_eq!(v.jobs_run_more_than_once, 1);
    }

    #[test]
    fn a_zombie_completion_is_caught() {
        // b still working at epoch 2 when a's stale completion succeeded the job.
        let mut f = healthy();
        f.executions[1].finished_at = None;
        let v = check(&f, bounds());
        assert_eq!(v.stale_completions.len(), 1, "{:?}", v.violations());
        // A completed event at an old epoch is caught too.
        let mut f = healthy();
        f.events.push(ev(1, "completed", 1, "a", 21 * S));
        let v = check(&f, bounds());
        assert_eq!(v.stale_completions.len(), 2, "{:?}", v.violations());
    }

    #[test]
    fn lost_unfinished_bogus_and_stuck_jobs_are_caught() {
        let mut f = healthy();
        f.enqueued.push(2);
        f.jobs.push(job(3, "running", 1, "a", None));
        f.executions.push(exec(1, 3, "c", 30 * S, None));
        f.executions.push(exec(1, 2, "c", 16 * S, None));
        f.events[1].at = 17 * S; // reaped 4 s after expiry; limit 3 s
        let v = check(&f, bounds());
        assert_eq!(v.lost, vec![2]);
        assert_eq!(v.not_terminal, vec![3]);
        assert_eq!(v.stuck.len(), 1);
        // Epoch 3 is past the final 2 and was never claimed; epoch 2 ran
        // twice, once by a worker that never claimed it: one line for job 1.
        assert_eq!(v.bogus_executions.len(), 1, "{:?}", v.bogus_executions);
        let line = &v.bogus_executions[0];
        for reason in [
            "epoch 2: ran 2 times",
            "epoch 2: run by c but claimed by Some(\"b\")",
            "epoch 3: outside 1..=2",
            "epoch 3: run by c but claimed by None",
        ] {
            assert!(line.contains(reason), "{reason} missing from {line}");
        }
        assert!(v.other.is_empty(), "{:?}", v.other);
        assert!(!v.passed());
    }

    #[test]
    fn a_reap_late_because_the_server_was_down_is_judged_from_its_return() {
        use crate::outage::Outage;
        // Lease expired at 13 s, reaped at 17.5 s: 4.5 s, over the 3 s allowed.
        let mut f = healthy();
        f.events[1].at = 17 * S + S / 2;
        f.events[2].at = 18 * S;
        assert_eq!(check(&f, bounds()).stuck.len(), 1);
        // The server was down 13.5-15.5 s: owed from 15.5 s, reaped 2 s after.
        let mut b = bounds();
        b.outages = vec![Outage {
            from_us: 13 * S + S / 2,
            back_us: 15 * S + S / 2,
        }];
        let v = check(&f, b.clone());
        assert!(v.passed(), "{:?}", v.violations());
        assert_eq!((v.reaps_after_outage, v.max_reap_after_return_ms), (1, 2000));
        // Back at 15.5 but the reap at 19 s: 3.5 s after the return, too late.
        let mut g = f.clone();
        g.events[1].at = 19 * S;
        g.events[2].at = 20 * S;
        g.jobs[0].finished_at = Some(21 * S);
        g.events[3].at = 21 * S;
        assert_eq!(check(&g, b).stuck.len(), 1);
        // An outage that began after the reap was due (13 + 3 s) excuses nothing.
        let mut late = bounds();
        late.outages = vec![Outage {
            from_us: 16 * S + S / 2,
            back_us: 17 * S,
        }];
        assert_eq!(check(&f, late).stuck.len(), 1);
    }

    #[test]
    fn a_broken_state_machine_is_caught_by_the_simulators_checkers() {
        // A second claim at the same epoch, and a completion after it died.
        let mut f = healthy();
        f.events.insert(3, ev(1, "claimed", 2, "c", 16 * S));
        let v = check(&f, bounds());
        assert!(
            v.other.iter().any(|s| s.contains("illegal_transition")),
            "{:?}",
            v.violations()
        );
        let obs = observations(&f);
        assert!(matches!(obs.first(), Some(Observation::Healed { .. })));
        assert!(matches!(obs.last(), Some(Observation::Ended { .. })));
    }
}
