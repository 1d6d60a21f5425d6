//! `stuckless timeline`: a real database's recent history as the SVG picture
//! `make sim SEED=n` draws for a simulated run.
//!
//! With happy-path events off (the default) only abnormal transitions are
//! logged, so attempts are reconstructed: each `retried`, `dead`, `released`,
//! `reaped`, `cancelled` or `requeued` event ends an attempt at its epoch; the
//! job row carries the latest attempt (`claimed_at`, `heartbeat_at`,
//! `finished_at`, `lease_owner`). A claim that was not logged is drawn from
//! the job's previous event (or `--since`), and the bar's tooltip says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use stuckless_core::driver::{JobGet, Storage, StorageNow};
use stuckless_core::{Job, JobEvent, JobEventKind, JobId, JobStatus, Timestamp};
use stuckless_pg::PgStorage;
use stuckless_timeline::{render_svg, Attempt, Mark, MarkKind, Outcome, Timeline, Wait};

use crate::ops::Report;
use crate::util::{parse_duration, parse_timestamp};

/// A lane for attempts whose worker nobody recorded.
const UNKNOWN_LANE: &str = "(unknown worker)";

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
    std::fs::write(out, render_svg(&timeline)).with_context(|| format!("writing {}", out.display()))?;
    Ok(TimelineReport {
        out: out.to_owned(),
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
    })
}

/// The words a bar's note carries when its start was not logged.
const INFERRED: &str = "claim not logged";

/// An attempt being reconstructed.
struct Open {
    lane: Option<String>,
    epoch: i64,
    start: Timestamp,
    note: Option<String>,
}

/// Per-job reconstruction state.
struct JobDraw<'a> {
    job: Option<&'a Job>,
    id: JobId,
    since: Timestamp,
    until: Timestamp,
    /// The claim of the attempt in progress, when logged (happy-path events).
    open: Option<Open>,
    /// Time of the job's previous event (or `since`).
    prev: Timestamp,
    /// Due and waiting since, and why.
    due: Option<(Timestamp, String)>,
    /// Epochs whose attempt is already drawn.
    ended: BTreeSet<i64>,
    attempts: Vec<Attempt>,
    waits: Vec<Wait>,
}

impl JobDraw<'_> {
    fn wait(&mut self, start: Timestamp, end: Timestamp, reason: String) {
        let (start, end) = (start.max(self.since), end.min(self.until));
        if end > start {
            self.waits.push(Wait {
                job_id: self.id.0,
                start: start.as_micros(),
                end: end.as_micros(),
                reason,
            });
        }
    }

    /// Closes the open wait at `at` (a claim or a terminal event).
    fn close_wait(&mut self, at: Timestamp) {
        if let Some((start, reason)) = self.due.take() {
            self.wait(start, at, reason);
        }
    }

    /// Where attempt `epoch` began: its logged claim, the row's `claimed_at`
    /// (the row carries the latest attempt), or else the previous event.
    fn start_of(
        &mut self,
        epoch: i64,
        before: Timestamp,
    ) -> (Timestamp, Option<String>, Option<String>, bool) {
        if let Some(open) = self.open.take().filter(|o| o.epoch == epoch) {
            return (open.start, open.lane, open.note, true);
        }
        if let Some(job) = self.job.filter(|j| j.epoch.0 == epoch) {
            if let Some(claimed) = job.claimed_at.filter(|c| *c <= before) {
                return (claimed, job.lease_owner.clone(), None, true);
            }
        }
        // No claim happens before the job exists: the creation time bounds
        // an unlogged first claim far better than --since does.
        let created = self
            .job
            .map(|j| j.created_at)
            .filter(|c| *c > self.prev && *c <= before);
        let (earliest, from) = match created {
            Some(c) => (c, "the job's creation"),
            None if self.prev > self.since => (self.prev, "the previous event"),
            None => (self.prev, "--since"),
        };
        (
            earliest,
            None,
            Some(format!("{INFERRED} (happy-path events off): drawn from {from}")),
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &mut self,
        lane: Option<String>,
        epoch: i64,
        attempt: i32,
        start: Timestamp,
        end: Timestamp,
        outcome: Outcome,
        notes: &[Option<String>],
    ) {
        self.ended.insert(epoch);
        let mut notes: Vec<String> = notes.iter().flatten().cloned().collect();
        if start < self.since {
            notes.push(format!("claimed at {start}, before --since"));
        }
        let (start, end) = (start.max(self.since), end.min(self.until));
        if end < start {
            return;
        }
        self.attempts.push(Attempt {
            lane: lane.unwrap_or_else(|| UNKNOWN_LANE.to_owned()),
            job_id: self.id.0,
            epoch,
            attempt,
            start: start.as_micros(),
            end: end.as_micros(),
            outcome,
            note: Some(notes.join("; ")).filter(|n| !n.is_empty()),
        });
    }

    /// An event that ended attempt `e.epoch` at `end` with `outcome`.
    fn end_attempt(&mut self, e: &JobEvent, end: Timestamp, outcome: Outcome, note: Option<String>) {
        let epoch = e.epoch.0;
        if epoch == 0 || self.ended.contains(&epoch) {
            return;
        }
        let (start, lane, start_note, exact) = self.start_of(epoch, e.at);
        if exact {
            self.close_wait(start);
        } else {
            // The claim is somewhere after `prev`: the wait is unknowable.
            self.due = None;
        }
        let lane = e.worker_id.clone().or(lane);
        let attempt = if outcome == Outcome::Released {
            e.attempt + 1
        } else {
            e.attempt
        };
        self.attempt(lane, epoch, attempt, start, end, outcome, &[start_note, note]);
    }
}

/// The lease expiry a reap event's detail names ("lease expired at T (owner W)").
fn reap_expiry(detail: Option<&str>) -> Option<Timestamp> {
    let rest = detail?.strip_prefix("lease expired at ")?;
    parse_timestamp(rest.split_whitespace().next()?).ok()
}

/// Draws `jobs` (their current rows) and `events` (oldest first) between
/// `since` and `until`.
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
    let mut attempts = Vec::new();
    let mut waits = Vec::new();
    let mut marks = Vec::new();
    // (worker, second) of releases already marked: one shutdown, one mark.
    let mut shutdowns: BTreeMap<(String, i64), (Timestamp, u32)> = BTreeMap::new();

    for (id, evs) in &by_job {
        let job = rows.get(id).copied();
        let mut d = JobDraw {
            job,
            id: *id,
            since,
            until,
            open: None,
            prev: since,
            due: None,
            ended: BTreeSet::new(),
            attempts: Vec::new(),
            waits: Vec::new(),
        };
        for e in evs {
            match e.kind {
                JobEventKind::Inserted => {
                    if let Some(j) = job.filter(|j| j.epoch.0 <= 1) {
                        d.due = Some((e.at.max(j.run_at), "due, waiting for its first claim".into()));
                    }
                }
                JobEventKind::Claimed => {
                    d.close_wait(e.at);
                    d.open = Some(Open {
                        lane: e.worker_id.clone(),
                        epoch: e.epoch.0,
                        start: e.at,
                        note: None,
                    });
                }
                JobEventKind::Completed => {
                    d.end_attempt(e, e.at, Outcome::Succeeded, None);
                    d.due = None;
                }
                JobEventKind::Retried => {
                    d.end_attempt(e, e.at, Outcome::Retried, e.detail.clone());
                    // The retry's run_at is logged nowhere but the row, which
                    // holds it only while this is still the latest attempt.
                    d.due = job
                        .filter(|j| j.status == JobStatus::Queued && j.epoch == e.epoch)
                        .map(|j| (j.run_at, "retry due, waiting for a claim".to_owned()));
                }
                JobEventKind::Dead | JobEventKind::Reaped => {
                    let expiry = reap_expiry(e.detail.as_deref());
                    let by_reaper = e.kind == JobEventKind::Reaped || expiry.is_some();
                    if by_reaper {
                        // The worker's last moment is its lease expiry; the
                        // job then sat held by nobody until the reaper came.
                        let end = expiry.unwrap_or(e.at).min(e.at);
                        let note = format!(
                            "lease expired at {}; reaped at {} -> {}",
                            expiry.map_or("?".into(), |t| t.to_string()),
                            e.at,
                            if e.kind == JobEventKind::Dead {
                                "dead"
                            } else {
                                "queued"
                            }
                        );
                        d.end_attempt(e, end, Outcome::Reaped, Some(note));
                        d.wait(
                            end,
                            e.at,
                            format!(
                                "lease of {} expired, waiting for the reaper",
                                e.worker_id.as_deref().unwrap_or("?")
                            ),
                        );
                        marks.push(Mark {
                            lane: Some(e.worker_id.clone().unwrap_or_else(|| UNKNOWN_LANE.into())),
                            kind: MarkKind::Reap,
                            at: e.at.as_micros(),
                            end: None,
                            note: Some(format!(
                                "job {id} epoch {} reaped: {}",
                                e.epoch,
                                e.detail.clone().unwrap_or_default()
                            )),
                        });
                    } else {
                        d.end_attempt(e, e.at, Outcome::Dead, e.detail.clone());
                    }
                    d.due = (e.kind == JobEventKind::Reaped)
                        .then(|| (e.at, "reaped, waiting for a claim".to_owned()));
                }
                JobEventKind::Released => {
                    d.end_attempt(e, e.at, Outcome::Released, Some("given back at shutdown".into()));
                    d.due = Some((e.at, "released at shutdown, waiting for a claim".into()));
                    let worker = e.worker_id.clone().unwrap_or_else(|| UNKNOWN_LANE.into());
                    let slot = shutdowns
                        .entry((worker, e.at.as_micros() / 1_000_000))
                        .or_insert((e.at, 0));
                    slot.1 += 1;
                }
                JobEventKind::Cancelled | JobEventKind::Requeued => {
                    // Only an attempt known to be open ends here: the event
                    // does not say whether the job was running.
                    if d.open.as_ref().is_some_and(|o| o.epoch == e.epoch.0) {
                        let outcome = if e.kind == JobEventKind::Cancelled {
                            Outcome::Cancelled
                        } else {
                            Outcome::LeaseLost
                        };
                        d.end_attempt(
                            e,
                            e.at,
                            outcome,
                            Some(format!("{} by an operator", e.kind.as_str())),
                        );
                    }
                    d.close_wait(e.at);
                    d.due = (e.kind == JobEventKind::Requeued)
                        .then(|| (e.at, "requeued by an operator, waiting for a claim".to_owned()));
                }
            }
            d.prev = e.at;
        }
        if let Some(j) = job {
            latest_attempt(&mut d, j, evs.is_empty());
        }
        attempts.append(&mut d.attempts);
        waits.append(&mut d.waits);
    }
    for ((worker, _), (at, n)) in shutdowns {
        marks.push(Mark {
            lane: Some(worker),
            kind: MarkKind::Sigterm,
            at: at.as_micros(),
            end: None,
            note: Some(format!("released {n} job(s): the worker was shutting down")),
        });
    }
    let mut lanes: BTreeSet<String> = attempts.iter().map(|a| a.lane.clone()).collect();
    lanes.extend(marks.iter().filter_map(|m| m.lane.clone()));
    Timeline {
        title,
        start: since.as_micros(),
        end: until.as_micros(),
        lanes: lanes.into_iter().collect(),
        attempts,
        marks,
        waits,
    }
}

/// The latest attempt, from the job row, unless an event already drew it;
/// then whatever the job is waiting for at the right edge.
fn latest_attempt(d: &mut JobDraw<'_>, j: &Job, no_events: bool) {
    let epoch = j.epoch.0;
    if epoch > 0 && !d.ended.contains(&epoch) {
        if let Some(claimed) = j.claimed_at.filter(|c| *c <= d.until) {
            let (start, lane, note) = match d.open.take().filter(|o| o.epoch == epoch) {
                Some(o) => (o.start, o.lane.or(j.lease_owner.clone()), o.note),
                None => (claimed, j.lease_owner.clone(), None),
            };
            d.close_wait(start);
            // The first claim's wait is knowable when nothing moved run_at.
            if epoch == 1 && no_events {
                d.wait(
                    j.run_at.max(j.created_at),
                    start,
                    "due, waiting for its first claim".into(),
                );
            }
            let heartbeat = j.heartbeat_at.map(|h| format!("last heartbeat {h}"));
            match j.status {
                JobStatus::Running => match j.lease_expires_at {
                    Some(expiry) if expiry <= d.until => {
                        d.attempt(
                            lane,
                            epoch,
                            j.attempt,
                            start,
                            expiry,
                            Outcome::Unfinished,
                            &[
                                note,
                                heartbeat,
                                Some(format!("lease expired at {expiry}, not yet reaped")),
                            ],
                        );
                        d.wait(
                            expiry,
                            d.until,
                            format!(
                                "lease of {} expired, waiting for the reaper",
                                j.lease_owner.as_deref().unwrap_or("?")
                            ),
                        );
                    }
                    _ => d.attempt(
                        lane,
                        epoch,
                        j.attempt,
                        start,
                        d.until,
                        Outcome::Unfinished,
                        &[note, heartbeat, Some("running".into())],
                    ),
                },
                JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled => {
                    if let Some(done) = j.finished_at.filter(|f| *f >= start) {
                        let outcome = match j.status {
                            JobStatus::Succeeded => Outcome::Succeeded,
                            JobStatus::Dead => Outcome::Dead,
                            _ => Outcome::Cancelled,
                        };
                        d.attempt(lane, epoch, j.attempt, start, done, outcome, &[note, heartbeat]);
                    }
                }
                // Queued at this epoch with no event in the window: the
                // attempt ended outside it (after --until).
                JobStatus::Queued => {}
            }
        }
    }
    if j.status == JobStatus::Queued {
        if epoch == 0 && d.due.is_none() {
            d.due = Some((j.run_at.max(j.created_at), "due, never claimed yet".to_owned()));
        }
        if let Some((start, reason)) = d.due.take() {
            if start < d.until {
                d.wait(start, d.until, reason);
            }
        }
    }
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
