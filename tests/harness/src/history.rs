//! The run's history: the database's rows and the side table turned into
//! the simulator's [`Observation`]s, the one mapping the end-of-run checks
//! ([`crate::checks`]) feed to the simulator's checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use stuckless_core::driver::{CompleteOutcome, FailOutcome};
use stuckless_core::{Epoch, JobId, JobStatus, Timestamp};
use stuckless_sim::observe::{JobRow, Observation};

use crate::checks::{Facts, JobFact};

fn ts(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

fn status(s: &str) -> JobStatus {
    // The schema's check constraint allows only the known statuses.
    s.parse().unwrap_or(JobStatus::Running)
}

fn row(job: &JobFact) -> JobRow {
    JobRow {
        id: JobId(job.id),
        status: status(&job.status),
        epoch: Epoch(job.epoch),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        kind: String::new(),
        lease_owner: job.lease_owner.clone(),
        lease_expires_at: job.lease_expires_at.map(ts),
        run_at: ts(job.run_at),
        updated_at: ts(job.updated_at),
        finished_at: job.finished_at.map(ts),
    }
}

/// The run's history as the simulator's observations, in time order:
///
/// - liveness is owed from the first instant (the run promises its bounds
///   throughout) and every worker may have been faulted at any time (the
///   checks do not get the fault schedule), so a reap is never judged by its
///   holder's health, only by the db's own lease;
/// - every enqueued job or row is inserted first (at its `inserted` event
///   when logged);
/// - each `job_events` row becomes what it records, in the job's log order;
///   an event at an epoch whose `claimed` event was not logged implies that
///   claim, by the event's worker;
/// - each execution starts an attempt and, when it got that far, finishes its
///   work;
/// - the final rows are sampled, and the run ends.
pub fn observations(facts: &Facts) -> Vec<Observation> {
    let rows: BTreeMap<i64, &JobFact> = facts.jobs.iter().map(|j| (j.id, j)).collect();
    let times = facts
        .events
        .iter()
        .map(|e| e.at)
        .chain(
            facts
                .executions
                .iter()
                .flat_map(|x| [Some(x.started_at), x.finished_at])
                .flatten(),
        )
        .chain(
            facts
                .jobs
                .iter()
                .flat_map(|j| [Some(j.updated_at), j.finished_at])
                .flatten(),
        );
    let (start, end) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let (start, end) = if start > end { (0, 0) } else { (start, end) };

    let mut timed: Vec<Observation> = Vec::new();
    let inserted_at: BTreeMap<i64, i64> = facts
        .events
        .iter()
        .filter(|e| e.kind == "inserted")
        .map(|e| (e.job_id, e.at))
        .collect();
    let ids: BTreeSet<i64> = facts
        .enqueued
        .iter()
        .copied()
        .chain(rows.keys().copied())
        .collect();
    for id in ids {
        let max_attempts = rows.get(&id).map_or(i32::MAX, |j| j.max_attempts);
        timed.push(Observation::Inserted {
            at: ts(inserted_at.get(&id).copied().unwrap_or(start)),
            from: "producer".into(),
            job: JobId(id),
            new: true,
            status: JobStatus::Queued,
            epoch: Epoch(0),
            attempt: 0,
            max_attempts,
            run_at: ts(start),
        });
    }

    let mut claimed: BTreeSet<(i64, i64)> = BTreeSet::new();
    // A job's events are in log order; statement clocks may not be, so each
    // event is dated no earlier than the job's previous one.
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for e in &facts.events {
        let previous = last.entry(e.job_id).or_insert(i64::MIN);
        *previous = (*previous).max(e.at);
        let (at, job, epoch) = (ts(*previous), JobId(e.job_id), Epoch(e.epoch));
        let worker = e.worker_id.clone().unwrap_or_else(|| "?".into());
        let max_attempts = rows.get(&e.job_id).map_or(i32::MAX, |j| j.max_attempts);
        let claim = |worker: &str| Observation::Claimed {
            at,
            worker: worker.to_owned(),
            job,
            epoch,
            attempt: e.attempt,
            max_attempts,
            lease_owner: Some(worker.to_owned()),
            lease_expires_at: None,
        };
        let ends_attempt = matches!(
            e.kind.as_str(),
            "completed" | "retried" | "dead" | "reaped" | "released"
        );
        if ends_attempt && e.worker_id.is_some() && !claimed.contains(&(e.job_id, e.epoch)) {
            timed.push(claim(&worker));
        }
        let observation = match e.kind.as_str() {
            "claimed" => claim(&worker),
            "completed" => Observation::Completed {
                at,
                worker,
                job,
                epoch,
                outcome: CompleteOutcome::Completed,
            },
            "retried" => Observation::Failed {
                at,
                worker,
                job,
                epoch,
                error: String::new(),
                retryable: true,
                outcome: FailOutcome::Retried { run_at: at },
            },
            "reaped" | "dead" if e.lease_expired_at.is_some() => Observation::Reaped {
                at,
                by: "reaper".into(),
                job,
                dead: e.kind == "dead",
                lease_expired_at: e.lease_expired_at.map(ts),
            },
            "dead" => Observation::Failed {
                at,
                worker,
                job,
                epoch,
                error: String::new(),
                // Unknown from the event: no claim of an early death.
                retryable: false,
                outcome: FailOutcome::Dead,
            },
            "released" => Observation::Released {
                at,
                worker,
                job,
                epoch,
            },
            "cancelled" => Observation::Cancelled {
                at,
                by: "operator".into(),
                job,
                status: JobStatus::Cancelled,
            },
            "requeued" => Observation::Requeued {
                at,
                by: "operator".into(),
                job,
            },
            _ => continue,
        };
        claimed.insert((e.job_id, e.epoch));
        timed.push(observation);
    }
    for x in &facts.executions {
        let (job, epoch) = (JobId(x.job_id), Epoch(x.epoch));
        timed.push(Observation::AttemptStarted {
            at: ts(x.started_at),
            worker: x.worker_id.clone(),
            job,
            epoch,
            pickup_latency: Duration::ZERO,
        });
        if let Some(finished) = x.finished_at {
            timed.push(Observation::WorkFinished {
                at: ts(finished),
                worker: x.worker_id.clone(),
                job,
                epoch,
            });
        }
    }
    // Stable: events keep their log order at equal times.
    timed.sort_by_key(Observation::at);

    let rows: Vec<JobRow> = facts.jobs.iter().map(row).collect();
    let mut out = vec![
        Observation::Healed { at: ts(start) },
        Observation::FaultWindow {
            who: "*".into(),
            from: ts(start),
            until: ts(end),
        },
    ];
    out.extend(timed);
    out.push(Observation::Sampled {
        at: ts(end),
        jobs: rows.clone(),
        free_capacity: false,
        up: Vec::new(),
    });
    out.push(Observation::Ended {
        at: ts(end),
        jobs: rows,
    });
    out
}
