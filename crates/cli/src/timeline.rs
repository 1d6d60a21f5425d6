//! `stuckless timeline`: a real database's recent history as the SVG picture
//! `make sim SEED=n` draws for a simulated run.
//!
//! With happy-path events off (the default) only abnormal transitions are
//! logged, so attempts are reconstructed: each `retried`, `dead`, `released`
//! or `reaped` event ends an attempt at its epoch (a `cancelled` or
//! `requeued` one only an attempt known to be running); the job row carries
//! the latest attempt (`claimed_at`, `heartbeat_at`, `finished_at`,
//! `lease_owner`, `lease_expires_at`). This file only maps events and rows
//! into `stuckless-timeline`'s neutral events; the rules — a claim that was
//! not logged is drawn from the job's previous event, its creation, or
//! `--since`, and the bar's tooltip says so — are the reconstructor's,
//! shared with the simulator's picture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use stuckless_core::driver::{JobGet, Storage, StorageNow};
use stuckless_core::{Job, JobEvent, JobEventKind, JobId, JobStatus, Timestamp};
use stuckless_pg::PgStorage;
use stuckless_timeline::{
    reconstruct, render_svg, Finish, Frame, Mark, MarkKind, Timeline, TimelineEvent, CLAIM_NOT_LOGGED,
    UNKNOWN_LANE,
};

use crate::ops::Report;
use crate::util::{parse_duration, parse_timestamp};

/// Parses `--since` / `--until`: a duration ago (`10m`, `2h`, `90`) or an
/// RFC 3339 instant in UTC; `now` is the database's clock.
pub fn parse_instant(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    let t = text.trim();
    // An instant has a date and a time; anything else is a duration ago.
    if t.contains('T') || t.contains(':') {
        return parse_timestamp(t);
    }
    let ago = parse_duration(t).with_context(|| {
        format!("{text:?} is neither a duration ago (e.g. 10m, 2h) nor an RFC 3339 time (e.g. 2026-11-29T02:44:00Z)")
    })?;
    Ok(Timestamp::from_micros(
        now.as_micros() - i64::try_from(ago.as_micros()).unwrap_or(i64::MAX),
    ))
}

/// Checks `--since`/`--until` before connecting, so a typo is reported as
/// such even when the database is down.
pub fn validate_instant(text: &str) -> anyhow::Result<()> {
    parse_instant(text, Timestamp::from_micros(0)).map(|_| ())
}

/// What `stuckless timeline` wrote.
#[derive(Debug, Serialize)]
pub struct TimelineReport {
    /// The SVG file.
    pub out: PathBuf,
    /// Left edge (RFC 3339).
    pub since: String,
    /// Right edge (RFC 3339).
    pub until: String,
    /// Worker lanes.
    pub lanes: usize,
    /// Attempt bars.
    pub attempts: usize,
    /// Attempts whose start was not logged and is drawn from an earlier event.
    pub inferred_starts: usize,
    /// Marks (reaps, releases).
    pub marks: usize,
    /// Waits drawn.
    pub waits: usize,
    /// Jobs and events read.
    pub jobs: usize,
    /// Events read.
    pub events: usize,
    /// Whether a limit cut the input short.
    pub truncated: bool,
}

impl Report for TimelineReport {
    fn human(&self) -> String {
        let mut s = format!(
            "wrote {}: {} attempts ({} with an inferred start) on {} workers, {} marks, {} waits\nfrom {} to {} ({} jobs, {} events read)\n",
            self.out.display(),
            self.attempts,
            self.inferred_starts,
            self.lanes,
            self.marks,
            self.waits,
            self.since,
            self.until,
            self.jobs,
            self.events
        );
        if self.truncated {
            s.push_str("warning: --limit cut the input short; the picture is incomplete (raise --limit or narrow --since/--until)\n");
        }
        s
    }
}

/// Reads the window from the database, draws it and writes `out`.
pub async fn run(
    storage: &PgStorage,
    since: &str,
    until: Option<&str>,
    out: &Path,
    limit: u32,
) -> anyhow::Result<TimelineReport> {
    let (svg, mut report) = draw(storage, since, until, limit).await?;
    std::fs::write(out, svg).with_context(|| format!("writing {}", out.display()))?;
    report.out = out.to_owned();
    Ok(report)
}

/// Reads the window from the database and draws it: the SVG text and what
/// it holds (`out` left empty). The dashboard serves the same picture.
pub async fn draw(
    storage: &PgStorage,
    since: &str,
    until: Option<&str>,
    limit: u32,
) -> anyhow::Result<(String, TimelineReport)> {
    let now = storage
        .storage_now(StorageNow {})
        .await
        .context("reading the database clock")?;
    let since_t = parse_instant(since, now).context("invalid --since")?;
    let until_t = until
        .map(|u| parse_instant(u, now))
        .transpose()
        .context("invalid --until")?
        .unwrap_or(now);
    anyhow::ensure!(
        since_t < until_t,
        "--since ({since_t}) must be before --until ({until_t})"
    );
    let mut events = storage
        .events_since(since_t, limit)
        .await
        .context("reading job events")?;
    let mut truncated = events.len() as u64 >= u64::from(limit);
    events.retain(|e| e.at <= until_t);
    let mut jobs: BTreeMap<JobId, Job> = BTreeMap::new();
    let changed = storage
        .jobs_changed_since(since_t, limit)
        .await
        .context("reading changed jobs")?;
    truncated |= changed.len() as u64 >= u64::from(limit);
    for job in changed {
        jobs.insert(job.id, job);
    }
    // Jobs queued or running since before the window changed nothing in it
    // but may have waited (or been held) through all of it.
    let idle: Vec<i64> = sqlx::query_scalar(
        "select id from stuckless.jobs where status in ('queued', 'running') \
         and updated_at < stuckless.from_micros($1) order by id limit $2",
    )
    .bind(since_t.as_micros())
    .bind(i64::from(limit))
    .fetch_all(storage.pool())
    .await
    .context("reading jobs idle since before --since")?;
    truncated |= idle.len() as u64 >= u64::from(limit);
    for id in idle {
        if let Some(job) = storage
            .job_get(JobGet { id: JobId(id) })
            .await
            .context("reading a job")?
        {
            jobs.insert(job.id, job);
        }
    }
    let title = format!("stuckless timeline · {since_t} → {until_t}");
    let jobs: Vec<Job> = jobs.into_values().collect();
    let timeline = build(title, &jobs, &events, since_t, until_t);
    let inferred_starts = timeline
        .attempts
        .iter()
        .filter(|a| a.note.as_deref().is_some_and(|n| n.contains(INFERRED)))
        .count();
    let svg = render_svg(&timeline);
    let report = TimelineReport {
        out: PathBuf::new(),
        since: since_t.to_string(),
        until: until_t.to_string(),
        lanes: timeline.lanes.len(),
        attempts: timeline.attempts.len(),
        inferred_starts,
        marks: timeline.marks.len(),
        waits: timeline.waits.len(),
        jobs: jobs.len(),
        events: events.len(),
        truncated,
    };
    Ok((svg, report))
}

/// The words a bar's note carries when its start was not logged.
const INFERRED: &str = CLAIM_NOT_LOGGED;

/// The lease expiry a reap event's detail names ("lease expired at T (owner W)").
fn reap_expiry(detail: Option<&str>) -> Option<Timestamp> {
    let rest = detail?.strip_prefix("lease expired at ")?;
    parse_timestamp(rest.split_whitespace().next()?).ok()
}

/// Draws `jobs` (their current rows) and `events` (oldest first) between
/// `since` and `until`: both mapped into `stuckless-timeline`'s neutral
/// events, which it reconstructs by the rules the simulator's picture uses.
pub fn build(
    title: String,
    jobs: &[Job],
    events: &[JobEvent],
    since: Timestamp,
    until: Timestamp,
) -> Timeline {
    let rows: BTreeMap<JobId, &Job> = jobs.iter().map(|j| (j.id, j)).collect();
    let mut by_job: BTreeMap<JobId, Vec<&JobEvent>> = BTreeMap::new();
    for e in events {
        by_job.entry(e.job_id).or_default().push(e);
    }
    for id in rows.keys() {
        by_job.entry(*id).or_default();
    }
    let mut stream = Vec::new();
    for (id, evs) in &by_job {
        job_stream(&mut stream, *id, rows.get(id).copied(), evs, until);
    }
    // Each job's stream is in order; a stable sort merges them and keeps a
    // job's creation and logged events ahead of row facts at the same instant.
    stream.sort_by_key(TimelineEvent::at);
    stream.extend(shutdowns(events).into_iter().map(TimelineEvent::Mark));
    let frame = Frame {
        title,
        start: since.as_micros(),
        end: until.as_micros(),
        lanes: Vec::new(),
        time: |t| Timestamp::from_micros(t).to_string(),
    };
    reconstruct(&frame, &stream)
}

/// One job's events, then what its row adds: its creation and its latest
/// attempt (claim, last heartbeat, end), which happy-path events off leave
/// unlogged.
fn job_stream(
    out: &mut Vec<TimelineEvent>,
    id: JobId,
    row: Option<&Job>,
    evs: &[&JobEvent],
    until: Timestamp,
) {
    let job = id.0;
    if let Some(j) = row {
        // The row's run_at is the first one only until an attempt ended
        // and queued the job again (a retry, release or reap moves it).
        let first_run_at = j.epoch.0 == 0 || (j.epoch.0 == 1 && j.status != JobStatus::Queued);
        out.push(TimelineEvent::Created {
            at: j.created_at.as_micros(),
            job,
            run_at: first_run_at.then(|| j.run_at.as_micros()),
        });
    }
    for e in evs {
        if let Some(event) = logged(e, row) {
            out.push(event);
        } else if e.kind == JobEventKind::Inserted && row.is_none() {
            out.push(TimelineEvent::Created {
                at: e.at.as_micros(),
                job,
                run_at: None,
            });
        }
    }
    if let Some(j) = row {
        latest_attempt(out, j, evs, until);
    }
}

/// A logged job event as a neutral event (`None` for an insert: the row says more).
fn logged(e: &JobEvent, row: Option<&Job>) -> Option<TimelineEvent> {
    let (at, job, epoch) = (e.at.as_micros(), e.job_id.0, e.epoch.0);
    let ended = |finish, error: Option<String>, attempt| TimelineEvent::Ended {
        at,
        job,
        epoch,
        attempt: Some(attempt),
        worker: e.worker_id.clone(),
        finish,
        error,
    };
    let expiry = reap_expiry(e.detail.as_deref());
    Some(match e.kind {
        JobEventKind::Inserted => return None,
        JobEventKind::Claimed => TimelineEvent::Claimed {
            at,
            job,
            epoch,
            attempt: e.attempt,
            worker: e.worker_id.clone(),
        },
        JobEventKind::Completed => ended(Finish::Succeeded, None, e.attempt),
        // The retry's run_at is logged nowhere but the row, which holds it
        // only while this is still the latest attempt.
        JobEventKind::Retried => {
            let run_at = row
                .filter(|j| j.status == JobStatus::Queued && j.epoch == e.epoch)
                .map(|j| j.run_at.as_micros());
            ended(Finish::Retried { run_at }, e.detail.clone(), e.attempt)
        }
        // A dead event naming a lease expiry is the reaper's, to dead.
        JobEventKind::Dead | JobEventKind::Reaped if e.kind == JobEventKind::Reaped || expiry.is_some() => {
            TimelineEvent::Reaped {
                at,
                job,
                epoch,
                attempt: Some(e.attempt),
                holder: e.worker_id.clone(),
                by: None,
                lease_expiry: expiry.map(|x| x.as_micros()),
                dead: e.kind == JobEventKind::Dead,
            }
        }
        JobEventKind::Dead | JobEventKind::Reaped => ended(Finish::Dead, e.detail.clone(), e.attempt),
        // A release gives the attempt back: the count logged is one less.
        JobEventKind::Released => ended(Finish::Released, None, e.attempt + 1),
        JobEventKind::Cancelled => TimelineEvent::Cancelled {
            at,
            job,
            epoch: Some(epoch),
        },
        JobEventKind::Requeued => TimelineEvent::Requeued { at, job, epoch },
    })
}

/// The latest attempt as the row carries it, unless it is not in the
/// picture: claimed after `until`, or ended outside the window.
fn latest_attempt(out: &mut Vec<TimelineEvent>, j: &Job, evs: &[&JobEvent], until: Timestamp) {
    let (job, epoch) = (j.id.0, j.epoch.0);
    let Some(claimed) = j.claimed_at.filter(|c| epoch > 0 && *c <= until) else {
        return;
    };
    let at_epoch = |kinds: &[JobEventKind]| evs.iter().any(|e| e.epoch == j.epoch && kinds.contains(&e.kind));
    use JobEventKind as K;
    let ended_by_event = at_epoch(&[K::Completed, K::Retried, K::Dead, K::Reaped, K::Released]);
    let finished = j.finished_at.filter(|f| *f >= claimed);
    let terminal = matches!(
        j.status,
        JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
    );
    let drawn = j.status == JobStatus::Running || ended_by_event || (terminal && finished.is_some());
    if !drawn {
        // Queued at this epoch with no event in the window: the attempt
        // ended outside it.
        return;
    }
    if !at_epoch(&[K::Claimed]) {
        out.push(TimelineEvent::Claimed {
            at: claimed.as_micros(),
            job,
            epoch,
            attempt: j.attempt,
            worker: j.lease_owner.clone(),
        });
    }
    if let Some(h) = j.heartbeat_at {
        out.push(TimelineEvent::Heartbeat {
            at: h.as_micros(),
            job,
            epoch,
        });
    }
    let end = match (j.status, finished) {
        (JobStatus::Running, _) => {
            // Past its lease and not reaped: the holder stopped renewing it.
            let Some(expiry) = j.lease_expires_at.filter(|x| *x <= until) else {
                return;
            };
            let owner = j.lease_owner.as_deref().unwrap_or(UNKNOWN_LANE);
            TimelineEvent::Stopped {
                at: expiry.as_micros(),
                worker: owner.to_owned(),
                job,
                epoch,
                note: format!("lease of {owner} expired at {expiry}, not yet reaped"),
            }
        }
        (JobStatus::Cancelled, Some(done)) => TimelineEvent::Cancelled {
            at: done.as_micros(),
            job,
            epoch: Some(epoch),
        },
        (JobStatus::Succeeded | JobStatus::Dead, Some(done)) => TimelineEvent::Ended {
            at: done.as_micros(),
            job,
            epoch,
            attempt: Some(j.attempt),
            worker: j.lease_owner.clone(),
            finish: if j.status == JobStatus::Succeeded {
                Finish::Succeeded
            } else {
                Finish::Dead
            },
            error: j.last_error.clone().filter(|_| j.status == JobStatus::Dead),
        },
        _ => return,
    };
    out.push(end);
}

/// One SIGTERM mark per worker and second of releases: the worker was
/// shutting down (the database logs the releases, not the signal).
fn shutdowns(events: &[JobEvent]) -> Vec<Mark> {
    let mut by: BTreeMap<(String, i64), (Timestamp, u32)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == JobEventKind::Released) {
        let worker = e.worker_id.clone().unwrap_or_else(|| UNKNOWN_LANE.into());
        let slot = by
            .entry((worker, e.at.as_micros().div_euclid(1_000_000)))
            .or_insert((e.at, 0));
        slot.1 += 1;
    }
    by.into_iter()
        .map(|((worker, _), (at, n))| Mark {
            lane: Some(worker),
            kind: MarkKind::Sigterm,
            at: at.as_micros(),
            end: None,
            note: Some(format!("released {n} job(s): the worker was shutting down")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_ago_or_an_instant() {
        let now = parse_timestamp("2026-11-29T04:00:00Z").unwrap();
        assert_eq!(
            parse_instant("10m", now).unwrap(),
            parse_timestamp("2026-11-29T03:50:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("90", now).unwrap(),
            parse_timestamp("2026-11-29T03:58:30Z").unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-28T00:00:00Z", now).unwrap(),
            parse_timestamp("2026-11-28T00:00:00Z").unwrap()
        );
        for bad in ["yesterday", "-5m", "2026-11-29T04:00:00+02:00", ""] {
            assert!(parse_instant(bad, now).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_reap_detail_names_the_lease_expiry() {
        assert_eq!(
            reap_expiry(Some("lease expired at 2026-11-29T04:00:00.250000Z (owner w1)")),
            Some(parse_timestamp("2026-11-29T04:00:00.25Z").unwrap())
        );
        assert_eq!(reap_expiry(Some("boom")), None);
        assert_eq!(reap_expiry(None), None);
    }
}
