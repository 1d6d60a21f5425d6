//! The store's upkeep: rows a claim cannot read, finished jobs past their
//! retention, and the per-kind counts that tell an operator a kind has no
//! worker.

use std::collections::BTreeMap;

use super::{count_due, State};
use crate::driver::{JobClaim, JobPrune, KindStats, PruneOutcome};
use crate::job::{JobEventKind, JobId, JobStatus};
use crate::time::Timestamp;

impl State {
    /// Moves due rows no claim could read (a `run_at` outside the range
    /// every storage accepts, which only a raw write can store) to dead with
    /// the reason, so they never block the jobs behind them. Postgres does
    /// the same in its claim; its schema refuses such rows in the first place.
    pub(super) fn bury_unreadable(&mut self, happy: bool, request: &JobClaim, now: Timestamp) {
        let range = crate::job::limits::MIN_TIMESTAMP_MICROS..=crate::job::limits::MAX_TIMESTAMP_MICROS;
        let unreadable: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Queued && request.queues.contains(&j.queue))
            .filter(|j| !range.contains(&j.run_at.as_micros()))
            .map(|j| j.id)
            .collect();
        for id in unreadable {
            let job = self.jobs.get_mut(&id).expect("id from this map");
            let error = format!(
                "unreadable row: run_at {} µs since 1970 is outside years 1 to 9999; fix run_at and requeue",
                job.run_at.as_micros()
            );
            job.status = JobStatus::Dead;
            job.last_error = Some(error.clone());
            job.finished_at = Some(now);
            job.updated_at = now;
            let job = job.clone();
            self.event(happy, &job, JobEventKind::Dead, now, None, Some(error));
        }
    }

    /// Deletes finished jobs past their status's age, oldest finish first.
    pub(super) fn prune(&mut self, request: &JobPrune, now: Timestamp) -> PruneOutcome {
        let age_limit = |status: JobStatus| match status {
            JobStatus::Succeeded => Some(request.succeeded_after),
            JobStatus::Cancelled => Some(request.cancelled_after),
            JobStatus::Dead => Some(request.dead_after),
            _ => None,
        };
        let mut old: Vec<(Timestamp, JobId, JobStatus)> = self
            .jobs
            .values()
            .filter_map(|j| {
                let finished = j.finished_at?;
                let age = age_limit(j.status)?;
                (now.saturating_since(finished) >= age && finished <= now)
                    .then_some((finished, j.id, j.status))
            })
            .collect();
        old.sort();
        let mut outcome = PruneOutcome::default();
        for (_, id, status) in old.into_iter().take(request.limit as usize) {
            let job = self.jobs.remove(&id).expect("id from this map");
            self.events.remove(&id);
            if let Some(key) = &job.idempotency_key {
                self.idempotency_keys.remove(key);
            }
            match status {
                JobStatus::Succeeded => outcome.succeeded += 1,
                JobStatus::Cancelled => outcome.cancelled += 1,
                _ => outcome.dead += 1,
            }
        }
        outcome
    }

    /// Counts of non-terminal jobs per (queue, kind).
    pub(super) fn kind_stats(&self, now: Timestamp) -> Vec<KindStats> {
        let mut stats: BTreeMap<(&str, &str), KindStats> = BTreeMap::new();
        for job in self.jobs.values().filter(|j| !j.status.is_terminal()) {
            let entry = stats.entry((&job.queue, &job.kind)).or_insert_with(|| KindStats {
                queue: job.queue.clone(),
                kind: job.kind.clone(),
                ..KindStats::default()
            });
            match job.status {
                JobStatus::Queued if job.run_at <= now => {
                    count_due(&mut entry.due, &mut entry.oldest_due_age, job.run_at, now)
                }
                JobStatus::Queued => entry.scheduled += 1,
                _ => entry.running += 1,
            }
        }
        stats.into_values().collect()
    }
}
