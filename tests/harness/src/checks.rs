//! The end-of-run checks: what the database and the side table say happened,
//! and whether it is what stuckless promises.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::{PgPool, Row};

use anyhow::Context;

/// A job as it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFact {
    /// Job id.
    pub id: i64,
    /// Final status.
    pub status: String,
    /// Final epoch (the latest claim's).
    pub epoch: i64,
    /// Latest lease owner.
    pub lease_owner: Option<String>,
    /// When it became terminal, µs since the epoch (database clock).
    pub finished_at: Option<i64>,
}

/// One row of `job_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFact {
    /// Job id.
    pub job_id: i64,
    /// Event kind (`claimed`, `completed`, `reaped`, ...).
    pub kind: String,
    /// Epoch at the event.
    pub epoch: i64,
    /// Worker involved.
    pub worker_id: Option<String>,
    /// When, µs (database clock).
    pub at: i64,
    /// For reaps: when the lease had expired, µs (parsed from the detail).
    pub lease_expired_at: Option<i64>,
}

/// One recorded execution of a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Workers' lease.
    pub lease: Duration,
    /// Workers' reap interval.
    pub reap_interval: Duration,
    /// Allowance for a reap statement's own latency and a reaper that had
    /// just started (stated in the report).
    pub slack: Duration,
}

impl Bounds {
    /// The most a job may sit with a dead holder: lease + reap interval + slack.
    pub fn stuck_limit(&self) -> Duration {
        self.lease + self.reap_interval + self.slack
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
    /// Executions recorded.
    pub executions: usize,
    /// Jobs whose handler ran more than once (allowed: at-least-once).
    pub jobs_run_more_than_once: usize,
    /// Reaps seen (expired leases taken back).
    pub reaps: usize,
    /// Longest time from a holder's last heartbeat to the reap, ms.
    pub max_stuck_ms: i64,
    /// The bound it was held to, ms.
    pub stuck_limit_ms: i64,
    /// Extra violations found by the orchestrator during the run.
    pub run_violations: Vec<String>,
}

impl Verdict {
    /// Every violation, one line each; empty when the run passed.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.lost
                .iter()
                .map(|id| format!("lost: job {id} was enqueued and is gone")),
        );
        out.extend(
            self.not_terminal
                .iter()
                .map(|id| format!("not terminal: job {id}")),
        );
        out.extend(
            self.stale_completions
                .iter()
                .map(|s| format!("stale completion: {s}")),
        );
        out.extend(
            self.bogus_executions
                .iter()
                .map(|s| format!("bogus execution: {s}")),
        );
        out.extend(self.stuck.iter().map(|s| format!("stuck: {s}")));
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
        ]
    }
}

/// Reads the facts from the run's database.
pub async fn gather(pool: &PgPool, enqueued: Vec<i64>) -> anyhow::Result<Facts> {
    let jobs = sqlx::query(
        "select id, status, epoch, lease_owner, stuckless.to_micros(finished_at) as finished_at
         from stuckless.jobs order by id",
    )
    .fetch_all(pool)
    .await
    .context("reading jobs")?
    .iter()
    .map(|r| {
        Ok(JobFact {
            id: r.try_get("id")?,
            status: r.try_get("status")?,
            epoch: r.try_get("epoch")?,
            lease_owner: r.try_get("lease_owner")?,
            finished_at: r.try_get("finished_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .context("decoding jobs")?;
    let events = sqlx::query(
        r"select job_id, kind, epoch, worker_id, stuckless.to_micros(at) as at,
                stuckless.to_micros(substring(detail from 'lease expired at ([0-9T:.Z-]+)')::timestamptz)
                  as lease_expired_at
         from stuckless.job_events order by id",
    )
    .fetch_all(pool)
    .await
    .context("reading job_events")?
    .iter()
    .map(|r| {
        Ok(EventFact {
            job_id: r.try_get("job_id")?,
            kind: r.try_get("kind")?,
            epoch: r.try_get("epoch")?,
            worker_id: r.try_get("worker_id")?,
            at: r.try_get("at")?,
            lease_expired_at: r.try_get("lease_expired_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .context("decoding job_events")?;
    let executions = sqlx::query(
        "select job_id, epoch, worker_id, stuckless.to_micros(started_at) as started_at,
                stuckless.to_micros(finished_at) as finished_at
         from stuckless_chaos.executions order by id",
    )
    .fetch_all(pool)
    .await
    .context("reading the side table")?
    .iter()
    .map(|r| {
        Ok(ExecFact {
            job_id: r.try_get("job_id")?,
            epoch: r.try_get("epoch")?,
            worker_id: r.try_get("worker_id")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .context("decoding the side table")?;
    Ok(Facts {
        enqueued,
        jobs,
        events,
        executions,
    })
}

/// Runs every check over `facts`.
///
/// - every enqueued job exists (zero lost) and is terminal;
/// - no stale completion was accepted: at most one `completed` event per job,
///   at the job's final epoch, on a succeeded job; and every succeeded job has
///   an execution at its final epoch, by its final owner, whose work finished
///   no later than the job did (a completion accepted from an older epoch
///   would have succeeded the job while the current holder was still working);
/// - every execution belongs to a real attempt: 1 ≤ epoch ≤ the job's final
///   epoch, at most one execution per (job, epoch), and its worker is the one
///   the events name as that epoch's lease owner (`claimed` when claims are
///   logged, and the reaped/released/retried/dead event that ended the
///   attempt), or for the final epoch the row's lease owner;
/// - every reap came at most `reap_interval + slack` after the lease expired,
///   so a job sat with a dead holder at most `lease + reap_interval + slack`.
pub fn check(facts: &Facts, bounds: Bounds) -> Verdict {
    let mut v = Verdict {
        jobs: facts.jobs.len(),
        executions: facts.executions.len(),
        stuck_limit_ms: bounds.stuck_limit().as_millis() as i64,
        ..Verdict::default()
    };
    let jobs: HashMap<i64, &JobFact> = facts.jobs.iter().map(|j| (j.id, j)).collect();
    for job in &facts.jobs {
        *v.statuses.entry(job.status.clone()).or_default() += 1;
        if !matches!(job.status.as_str(), "succeeded" | "dead" | "cancelled") {
            v.not_terminal.push(job.id);
        }
    }
    v.lost = facts
        .enqueued
        .iter()
        .filter(|id| !jobs.contains_key(id))
        .copied()
        .collect();

    // Who held each attempt: the `claimed` event (when claims are logged),
    // and every event that ends an attempt (reaped, released, retried, dead)
    // names the lease owner at its epoch; the final epoch's owner is on the row.
    let mut owners: HashMap<(i64, i64), &str> = HashMap::new();
    for e in &facts.events {
        if matches!(
            e.kind.as_str(),
            "claimed" | "reaped" | "released" | "retried" | "dead" | "completed"
        ) {
            if let Some(w) = e.worker_id.as_deref() {
                owners.entry((e.job_id, e.epoch)).or_insert(w);
            }
        }
    }
    for job in &facts.jobs {
        if let Some(w) = job.lease_owner.as_deref() {
            owners.entry((job.id, job.epoch)).or_insert(w);
        }
    }

    // Stale completions.
    let mut completed_per_job: BTreeMap<i64, Vec<&EventFact>> = BTreeMap::new();
    for e in facts.events.iter().filter(|e| e.kind == "completed") {
        completed_per_job.entry(e.job_id).or_default().push(e);
    }
    for (id, completions) in &completed_per_job {
        let Some(job) = jobs.get(id) else {
            v.stale_completions
                .push(format!("job {id} completed but has no row"));
            continue;
        };
        if completions.len() > 1 {
            v.stale_completions
                .push(format!("job {id} accepted {} completions", completions.len()));
        }
        for c in completions {
            if c.epoch != job.epoch || job.status != "succeeded" {
                v.stale_completions.push(format!(
                    "job {id} completed at epoch {} but ended {} at epoch {}",
                    c.epoch, job.status, job.epoch
                ));
            }
        }
    }
    let mut by_attempt: HashMap<(i64, i64), Vec<&ExecFact>> = HashMap::new();
    for x in &facts.executions {
        by_attempt.entry((x.job_id, x.epoch)).or_default().push(x);
    }
    for job in facts.jobs.iter().filter(|j| j.status == "succeeded") {
        let finished = job.finished_at.unwrap_or(i64::MAX);
        let done_by_holder = by_attempt.get(&(job.id, job.epoch)).is_some_and(|xs| {
            xs.iter().any(|x| {
                Some(x.worker_id.as_str()) == job.lease_owner.as_deref()
                    && x.finished_at.is_some_and(|f| f <= finished)
            })
        });
        if !done_by_holder {
            v.stale_completions.push(format!(
                "job {} succeeded at epoch {} (owner {:?}) but that attempt had not finished its work",
                job.id, job.epoch, job.lease_owner
            ));
        }
    }

    // Executions belong to real attempts.
    let mut runs_per_job: HashMap<i64, usize> = HashMap::new();
    for ((job_id, epoch), xs) in &by_attempt {
        *runs_per_job.entry(*job_id).or_default() += xs.len();
        let Some(job) = jobs.get(job_id) else {
            v.bogus_executions
                .push(format!("job {job_id} epoch {epoch}: no such job"));
            continue;
        };
        if *epoch < 1 || *epoch > job.epoch {
            v.bogus_executions
                .push(format!("job {job_id} epoch {epoch}: outside 1..={}", job.epoch));
        }
        if xs.len() > 1 {
            let workers: Vec<&str> = xs.iter().map(|x| x.worker_id.as_str()).collect();
            v.bogus_executions.push(format!(
                "job {job_id} epoch {epoch}: ran {} times ({workers:?})",
                xs.len()
            ));
        }
        for x in xs {
            let expected = owners.get(&(*job_id, *epoch)).copied();
            if expected != Some(x.worker_id.as_str()) {
                v.bogus_executions.push(format!(
                    "job {job_id} epoch {epoch}: run by {} but claimed by {expected:?}",
                    x.worker_id
                ));
            }
        }
    }
    v.jobs_run_more_than_once = runs_per_job.values().filter(|n| **n > 1).count();

    // Stuck time.
    let lease_us = bounds.lease.as_micros() as i64;
    let delay_limit_us = (bounds.reap_interval + bounds.slack).as_micros() as i64;
    for e in &facts.events {
        let Some(expired) = e.lease_expired_at else {
            continue;
        };
        v.reaps += 1;
        let delay = e.at - expired;
        v.max_stuck_ms = v.max_stuck_ms.max((delay + lease_us) / 1000);
        if delay > delay_limit_us {
            v.stuck.push(format!(
                "job {} epoch {}: lease expired {} ms before the reap (limit {} ms)",
                e.job_id,
                e.epoch,
                delay / 1000,
                delay_limit_us / 1000
            ));
        }
    }
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
        }
    }

    fn ev(job_id: i64, kind: &str, epoch: i64, worker: &str, at: i64) -> EventFact {
        EventFact {
            job_id,
            kind: kind.into(),
            epoch,
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

    /// Job 1: claimed by a, a dies, reaped, claimed by b, completed.
    fn healthy() -> Facts {
        let mut reap = ev(1, "reaped", 1, "a", 14 * S);
        reap.lease_expired_at = Some(13 * S);
        Facts {
            enqueued: vec![1],
            jobs: vec![JobFact {
                id: 1,
                status: "succeeded".into(),
                epoch: 2,
                lease_owner: Some("b".into()),
                finished_at: Some(20 * S),
            }],
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
        f.jobs.push(JobFact {
            id: 3,
            status: "running".into(),
            epoch: 1,
            lease_owner: Some("a".into()),
            finished_at: None,
        });
        f.executions.push(exec(1, 3, "c", 30 * S, None));
        f.executions.push(exec(1, 2, "c", 16 * S, None));
        f.events[1].at = 17 * S; // reaped 4 s after expiry; limit 3 s
        let v = check(&f, bounds());
        assert_eq!(v.lost, vec![2]);
        assert_eq!(v.not_terminal, vec![3]);
        assert_eq!(v.stuck.len(), 1);
        // Epoch 3 is past the final 2 and was never claimed; epoch 2 ran
        // twice, once by a worker that never claimed it.
        assert_eq!(v.bogus_executions.len(), 4, "{:?}", v.bogus_executions);
        assert!(!v.passed());
    }
}
