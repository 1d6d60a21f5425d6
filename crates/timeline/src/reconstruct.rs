//! One attempt reconstructor: a [`TimelineEvent`] stream in, the
//! [`Timeline`] the renderer draws out.
//!
//! The rules, in one place for every front end:
//!
//! * **Bars.** A claim opens an attempt; it ends on the database's side (an
//!   accepted write, a reap, a cancel, a requeue) and on the worker's side
//!   (a crash, a refused write, giving it up). An accepted write ends the
//!   bar. A reaped, cancelled or requeued attempt's bar runs to when the
//!   worker stopped working on it — past the reap for a zombie — else to the
//!   holder's lease expiry when known, else to the reap. An attempt the
//!   worker stopped and the database never ended is [`Outcome::LeaseLost`];
//!   one ended on neither side is [`Outcome::Unfinished`] at the picture's end.
//! * **Unlogged claims.** An attempt ended with no claim seen is drawn from
//!   the job's previous event — its creation, when that is the latest —
//!   or the picture's start, and its tooltip says "claim not logged". Its
//!   wait is unknowable and not drawn. Cancels and requeues infer nothing:
//!   they do not say whether the job was running.
//! * **Waits.** A job waits while it is due and not claimed: from creation
//!   (when its `run_at` is known), a reap, a release, a requeue, or a retry's
//!   `run_at` — backoff and a future `run_at` are not waits — to the next
//!   claim, a cancel, or the picture's end. A job whose holder stopped waits
//!   for the reaper from the stop (or the lease expiry) to the reap; one
//!   never reaped waits to the picture's end. Waits shorter than
//!   [`MIN_WAIT`] are not drawn: a normal pickup takes a few ticks.
//! * **Determinism.** Output order follows input order, then job id; no
//!   hashing, no clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Finish, Frame, TimelineEvent};
use crate::model::{Attempt, Mark, MarkKind, Micros, Outcome, Timeline, Wait};

/// Shorter waits are not drawn (microseconds).
pub const MIN_WAIT: Micros = 500_000;

/// The lane of attempts and marks whose worker nobody recorded.
pub const UNKNOWN_LANE: &str = "(unknown worker)";

/// The words a bar's tooltip carries when its claim was not logged.
pub const CLAIM_NOT_LOGGED: &str = "claim not logged";

/// The database's end of an attempt.
struct DbEnd {
    at: Micros,
    outcome: Outcome,
    note: String,
    lease_expiry: Option<Micros>,
}

/// An attempt as it is being reconstructed.
struct Open {
    lane: Option<String>,
    job: i64,
    epoch: i64,
    attempt: i32,
    start: Micros,
    claim_note: Option<String>,
    heartbeat: Option<Micros>,
    db_end: Option<DbEnd>,
    /// The worker's own end: when it stopped working on it, and why.
    worker_end: Option<(Micros, String)>,
}

/// Why a job waited.
enum Why {
    Due { cause: &'static str, first: bool }, // due since `cause` ("reaped"...)
    Said(String),                             // already in words
}

/// Where an attempt's event lands: its time, job, epoch and attempt, and
/// the worker it names (the holder, for a reap).
#[derive(Clone, Copy)]
struct Place<'a> {
    at: Micros,
    job: i64,
    epoch: i64,
    attempt: Option<i32>,
    worker: Option<&'a str>,
}

impl<'a> Place<'a> {
    fn new(at: Micros, job: i64, epoch: i64, attempt: Option<i32>, worker: Option<&'a str>) -> Self {
        Place {
            at,
            job,
            epoch,
            attempt,
            worker,
        }
    }
}

/// Where a job stands.
#[derive(Default)]
struct JobState {
    /// Due since, and why; `None` while held, terminal, in backoff or unknown.
    due: Option<(Micros, Why)>,
    /// The job's previous event, and whether it was its creation.
    prev: Option<(Micros, bool)>,
    latest: Option<usize>, // its latest attempt (index into the attempts)
}

struct Builder<'f> {
    frame: &'f Frame,
    attempts: Vec<Open>,
    /// (job, epoch) -> index into `attempts`.
    index: BTreeMap<(i64, i64), usize>,
    jobs: BTreeMap<i64, JobState>,
    marks: Vec<Mark>,
    waits: Vec<(i64, Micros, Micros, Why)>,
    capacity: Vec<(Micros, bool)>,
}

/// Rebuilds attempts, marks and waits from `events` (in the order they
/// happened) and frames them as a [`Timeline`].
pub fn reconstruct(frame: &Frame, events: &[TimelineEvent]) -> Timeline {
    let mut b = Builder {
        frame,
        attempts: Vec::new(),
        index: BTreeMap::new(),
        jobs: BTreeMap::new(),
        marks: Vec::new(),
        waits: Vec::new(),
        capacity: Vec::new(),
    };
    for event in events {
        b.apply(event);
    }
    b.finish()
}

impl Builder<'_> {
    fn time(&self, t: Micros) -> String {
        (self.frame.time)(t)
    }

    fn apply(&mut self, event: &TimelineEvent) {
        match event {
            TimelineEvent::Created { at, job, run_at } => {
                let state = self.jobs.entry(*job).or_default();
                if let Some(run_at) = run_at {
                    let why = Why::Due {
                        cause: "due",
                        first: true,
                    };
                    state.due = Some(((*at).max(*run_at), why));
                }
                state.prev = Some((*at, true));
            }
            TimelineEvent::Claimed {
                at,
                job,
                epoch,
                attempt,
                worker,
            } => {
                if self.index.contains_key(&(*job, *epoch)) {
                    return;
                }
                self.close_due(*job, *at);
                let i = self.open(*job, *epoch, *attempt, *at, worker.clone(), None);
                let state = self.jobs.entry(*job).or_default();
                state.latest = Some(i);
                state.prev = Some((*at, false));
            }
            TimelineEvent::Heartbeat { at, job, epoch } => {
                if let Some(&i) = self.index.get(&(*job, *epoch)) {
                    let a = &mut self.attempts[i];
                    a.heartbeat = a.heartbeat.max(Some(*at));
                }
            }
            TimelineEvent::Ended {
                at,
                job,
                epoch,
                attempt,
                worker,
                finish,
                error,
            } => {
                let place = Place::new(*at, *job, *epoch, *attempt, worker.as_deref());
                self.ended(place, finish, error.as_deref())
            }
            TimelineEvent::Reaped {
                at,
                job,
                epoch,
                attempt,
                holder,
                by,
                lease_expiry,
                dead,
            } => {
                let place = Place::new(*at, *job, *epoch, *attempt, holder.as_deref());
                self.reaped(place, by.as_deref(), *lease_expiry, *dead)
            }
            TimelineEvent::Cancelled { at, job, epoch } => {
                let target = match epoch {
                    Some(e) => self.index.get(&(*job, *e)).copied(),
                    None => self.jobs.get(job).and_then(|s| s.latest),
                };
                self.end_by_db(
                    target,
                    *at,
                    Outcome::Cancelled,
                    "cancelled while running".into(),
                    None,
                );
                self.close_due(*job, *at);
                self.jobs.entry(*job).or_default().prev = Some((*at, false));
            }
            TimelineEvent::Requeued { at, job, epoch } => {
                let target = self.index.get(&(*job, *epoch)).copied();
                self.end_by_db(
                    target,
                    *at,
                    Outcome::LeaseLost,
                    "requeued by an operator".into(),
                    None,
                );
                self.set_due(*job, *at, "requeued by an operator");
                self.jobs.entry(*job).or_default().prev = Some((*at, false));
            }
            TimelineEvent::Refused {
                at,
                worker,
                job,
                epoch,
                op,
                detail,
            } => {
                let note = format!("its {op} was refused at {}", self.time(*at));
                self.end_by_worker(*job, *epoch, worker, *at, note);
                self.marks.push(Mark {
                    lane: Some(worker.clone()),
                    kind: MarkKind::StaleWriteRejected,
                    at: *at,
                    end: None,
                    note: Some(format!("{op} of job {job} at epoch {epoch} refused: {detail}")),
                });
            }
            TimelineEvent::Stopped {
                at,
                worker,
                job,
                epoch,
                note,
            } => self.end_by_worker(*job, *epoch, worker, *at, note.clone()),
            TimelineEvent::Crashed { at, worker, note } => {
                let why = format!("{worker} crashed at {}", self.time(*at));
                // Every attempt the worker was still working on ends here on its side.
                for a in self
                    .attempts
                    .iter_mut()
                    .filter(|a| a.lane.as_deref() == Some(worker))
                {
                    if a.db_end.is_none() && a.worker_end.is_none() {
                        a.worker_end = Some((*at, why.clone()));
                    }
                }
                self.marks.push(Mark {
                    lane: Some(worker.clone()),
                    kind: MarkKind::Crash,
                    at: *at,
                    end: None,
                    note: note.clone(),
                });
            }
            TimelineEvent::Capacity { at, free } => self.capacity.push((*at, *free)),
            TimelineEvent::Mark(mark) => self.marks.push(mark.clone()),
        }
    }

    fn open(
        &mut self,
        job: i64,
        epoch: i64,
        attempt: i32,
        start: Micros,
        lane: Option<String>,
        note: Option<String>,
    ) -> usize {
        let i = self.attempts.len();
        self.index.insert((job, epoch), i);
        self.attempts.push(Open {
            lane,
            job,
            epoch,
            attempt,
            start,
            claim_note: note,
            heartbeat: None,
            db_end: None,
            worker_end: None,
        });
        i
    }

    /// Attempt `epoch` of `job`: the one claimed, or else one whose claim is
    /// inferred from the job's previous event (its wait is then unknowable).
    /// Epoch 0 was never claimed: nothing to infer.
    fn attempt_for(&mut self, place: Place) -> Option<usize> {
        let Place {
            at,
            job,
            epoch,
            attempt,
            worker,
        } = place;
        if let Some(&i) = self.index.get(&(job, epoch)) {
            if self.attempts[i].lane.is_none() {
                self.attempts[i].lane = worker.map(str::to_owned);
            }
            return Some(i);
        }
        if epoch <= 0 {
            return None;
        }
        let frame_start = self.frame.start;
        let state = self.jobs.entry(job).or_default();
        state.due = None;
        let (start, from) = match state.prev.filter(|(t, _)| *t >= frame_start && *t <= at) {
            Some((t, true)) => (t, "the job's creation"),
            Some((t, false)) => (t, "the previous event"),
            None => (frame_start.min(at), "the picture's start"),
        };
        let note = format!("{CLAIM_NOT_LOGGED} (happy-path events off): drawn from {from}");
        let i = self.open(
            job,
            epoch,
            attempt.unwrap_or(0),
            start,
            worker.map(str::to_owned),
            Some(note),
        );
        let state = self.jobs.entry(job).or_default();
        if state.latest.is_none_or(|l| self.attempts[l].epoch < epoch) {
            state.latest = Some(i);
        }
        Some(i)
    }

    fn ended(&mut self, place: Place, finish: &Finish, error: Option<&str>) {
        let (at, job) = (place.at, place.job);
        let i = self.attempt_for(place);
        let (outcome, said) = match finish {
            Finish::Succeeded => (Outcome::Succeeded, None),
            Finish::Retried { run_at } => (
                Outcome::Retried,
                run_at.map(|r| format!("retry due at {}", self.time(r))),
            ),
            Finish::Dead => (Outcome::Dead, None),
            Finish::Released => (Outcome::Released, Some("given back at shutdown".to_owned())),
        };
        let note = [error.map(str::to_owned), said]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        self.end_by_db(i, at, outcome, note, None);
        // An attempt ran, so any wait ended at its claim (already drawn, or
        // unknowable when the claim was inferred); with no attempt the job
        // waited until now.
        match i {
            Some(_) => self.not_due(job),
            None => self.close_due(job, at),
        }
        match finish {
            Finish::Retried { run_at: Some(r) } => self.set_due(job, (*r).max(at), "retry due"),
            Finish::Released => self.set_due(job, at, "released at shutdown"),
            // Backoff to an unknown run_at, or terminal: not due.
            Finish::Retried { run_at: None } | Finish::Succeeded | Finish::Dead => {}
        }
        self.jobs.entry(job).or_default().prev = Some((at, false));
    }

    fn reaped(&mut self, place: Place, by: Option<&str>, lease_expiry: Option<Micros>, dead: bool) {
        let (at, job, epoch, holder) = (place.at, place.job, place.epoch, place.worker);
        let i = self.attempt_for(place);
        let lane = i.and_then(|i| self.attempts[i].lane.clone());
        let holder = lane
            .or(holder.map(str::to_owned))
            .unwrap_or_else(|| UNKNOWN_LANE.to_owned());
        let to = if dead { "dead" } else { "queued" };
        let by_words = by.map(|w| format!(" by {w}")).unwrap_or_default();
        let expiry_words = lease_expiry
            .map(|x| format!("lease expired at {}; ", self.time(x)))
            .unwrap_or_default();
        let note = format!("{expiry_words}reaped{by_words} at {} -> {to}", self.time(at));
        // The holder stopped before the reap: the job sat held by nobody
        // until the lease ran out and a reaper came by.
        let stopped = match i.and_then(|i| self.attempts[i].worker_end.as_ref()) {
            Some((t, why)) => Some((*t, why.clone())),
            None => lease_expiry.map(|x| (x, format!("lease of {holder} expired at {}", self.time(x)))),
        };
        if let Some((t, why)) = stopped.filter(|(t, _)| *t < at) {
            let reason = format!("{why}; {holder}'s lease held it, waiting for the reaper");
            self.waits.push((job, t, at, Why::Said(reason)));
        }
        self.end_by_db(i, at, Outcome::Reaped, note, lease_expiry);
        self.marks.push(Mark {
            lane: Some(holder),
            kind: MarkKind::Reap,
            at,
            end: None,
            note: Some(format!("job {job} epoch {epoch} reaped{by_words} -> {to}")),
        });
        if dead {
            self.close_due(job, at);
            self.not_due(job);
        } else {
            self.set_due(job, at, "reaped");
        }
        self.jobs.entry(job).or_default().prev = Some((at, false));
    }

    fn end_by_db(
        &mut self,
        i: Option<usize>,
        at: Micros,
        outcome: Outcome,
        note: String,
        lease_expiry: Option<Micros>,
    ) {
        if let Some(a) = i.map(|i| &mut self.attempts[i]) {
            if a.db_end.is_none() {
                a.db_end = Some(DbEnd {
                    at,
                    outcome,
                    note,
                    lease_expiry,
                });
            }
        }
    }

    fn end_by_worker(&mut self, job: i64, epoch: i64, worker: &str, at: Micros, note: String) {
        if let Some(&i) = self.index.get(&(job, epoch)) {
            let a = &mut self.attempts[i];
            if a.worker_end.is_none() && a.lane.as_deref().is_none_or(|l| l == worker) {
                a.lane = Some(worker.to_owned());
                a.worker_end = Some((at, note));
            }
        }
    }

    /// Ends the job's wait, if it was due, at `at`.
    fn close_due(&mut self, job: i64, at: Micros) {
        if let Some((since, why)) = self.jobs.get_mut(&job).and_then(|s| s.due.take()) {
            self.waits.push((job, since, at, why));
        }
    }

    fn set_due(&mut self, job: i64, since: Micros, cause: &'static str) {
        self.close_due(job, since);
        let why = Why::Due { cause, first: false };
        self.jobs.entry(job).or_default().due = Some((since, why));
    }

    fn not_due(&mut self, job: i64) {
        self.jobs.entry(job).or_default().due = None;
    }

    fn finish(mut self) -> Timeline {
        let end = self.frame.end;
        let jobs = std::mem::take(&mut self.jobs);
        for (job, state) in jobs {
            if let Some((since, why)) = state.due {
                self.waits.push((job, since, end, why));
            }
        }
        // The worker stopped, the database still calls the job running under
        // its lease, and nothing ever took it back.
        for a in self.attempts.iter().filter(|a| a.db_end.is_none()) {
            if let Some((stopped, why)) = &a.worker_end {
                let lane = a.lane.as_deref().unwrap_or(UNKNOWN_LANE);
                let reason = format!("{why}; still running in the db under {lane}'s lease, never taken back");
                self.waits.push((a.job, *stopped, end, Why::Said(reason)));
            }
        }
        let attempts: Vec<Attempt> = self.attempts.iter().filter_map(|a| self.bar(a)).collect();
        let waits = self.waits_out();
        let mut lanes = self.frame.lanes.clone();
        let known: BTreeSet<&String> = lanes.iter().collect();
        let others: BTreeSet<String> = attempts
            .iter()
            .map(|a| &a.lane)
            .chain(self.marks.iter().filter_map(|m| m.lane.as_ref()))
            .filter(|l| !known.contains(l))
            .cloned()
            .collect();
        lanes.extend(others);
        Timeline {
            title: self.frame.title.clone(),
            start: self.frame.start,
            end,
            lanes,
            attempts,
            marks: self.marks,
            waits,
        }
    }

    /// The bar of `a`, cut to the frame; `None` when it lies outside.
    fn bar(&self, a: &Open) -> Option<Attempt> {
        let (end, outcome, note) = match (&a.db_end, &a.worker_end) {
            // An accepted write ends it on both sides.
            (Some(d), _)
                if !matches!(
                    d.outcome,
                    Outcome::Reaped | Outcome::Cancelled | Outcome::LeaseLost
                ) =>
            {
                (d.at, d.outcome, d.note.clone())
            }
            // Taken away by the db: the bar lasts as long as the worker still
            // worked on it (a zombie after a pause lasts past the reap).
            (Some(d), Some((at, why))) => (*at, d.outcome, format!("{why}; {}", d.note)),
            (Some(d), None) => (
                d.lease_expiry.map_or(d.at, |x| x.min(d.at)),
                d.outcome,
                d.note.clone(),
            ),
            (None, Some((at, why))) => (*at, Outcome::LeaseLost, why.clone()),
            (None, None) => (
                self.frame.end,
                Outcome::Unfinished,
                "still running when the picture ends".into(),
            ),
        };
        if end < self.frame.start || a.start > self.frame.end {
            return None;
        }
        let mut notes: Vec<String> = a.claim_note.iter().cloned().collect();
        if a.start < self.frame.start {
            notes.push(format!(
                "claimed at {}, before the picture's start",
                self.time(a.start)
            ));
        }
        notes.extend(a.heartbeat.map(|h| format!("last heartbeat {}", self.time(h))));
        notes.extend(Some(note).filter(|n| !n.is_empty()));
        let start = a.start.max(self.frame.start);
        Some(Attempt {
            lane: a.lane.clone().unwrap_or_else(|| UNKNOWN_LANE.to_owned()),
            job_id: a.job,
            epoch: a.epoch,
            attempt: a.attempt,
            start,
            end: end.min(self.frame.end).max(start),
            outcome,
            note: Some(notes.join("; ")).filter(|n| !n.is_empty()),
        })
    }

    /// Waits cut to the frame, the short ones dropped, reasons in words.
    fn waits_out(&mut self) -> Vec<Wait> {
        let mut out = Vec::new();
        for (job, since, until, why) in std::mem::take(&mut self.waits) {
            let (start, end) = (since.max(self.frame.start), until.min(self.frame.end));
            if end - start < MIN_WAIT {
                continue;
            }
            let reason = match why {
                Why::Said(words) => words,
                Why::Due { cause, .. } if !self.free_at(since) => {
                    format!("{cause}, waiting for capacity (no worker had a free slot)")
                }
                Why::Due { cause, first: true } => format!("{cause}, waiting for its first claim"),
                Why::Due { cause, first: false } => format!("{cause}, waiting for a claim"),
            };
            out.push(Wait {
                job_id: job,
                start,
                end,
                reason,
            });
        }
        out
    }

    /// Whether some worker had a free slot at `at`, by the latest sample
    /// (samples come in time order; none means capacity was never short).
    fn free_at(&self, at: Micros) -> bool {
        let i = self.capacity.partition_point(|(t, _)| *t <= at);
        i == 0 || self.capacity[i - 1].1
    }
}

#[cfg(test)]
mod tests;
