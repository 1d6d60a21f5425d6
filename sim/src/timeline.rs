//! One run as a picture: the facts the oracle and the driver record while a
//! world runs (claims, the writes that ended attempts, reaps, refusals,
//! faults, restarts), turned into a [`Timeline`] for `stuckless-timeline`.
//!
//! Facts are recorded only when asked for ([`crate::SimBuilder::keep_timeline`]),
//! in the order the simulation produced them, so the picture of a seed is as
//! deterministic as its trace.

use std::collections::BTreeMap;

use stuckless_core::{Epoch, JobId, Timestamp};
use stuckless_timeline::{Attempt, Mark, MarkKind, Micros, Outcome, Timeline, Wait};

use crate::clock::BASE;
use crate::plan::{Direction, Fault};

/// How the database ended an attempt (an accepted write).
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// Completion accepted.
    Succeeded,
    /// Failure accepted; runnable again at `run_at`.
    Retried {
        /// When the retry is due.
        run_at: Timestamp,
    },
    /// Failure accepted; the job is dead.
    Dead,
    /// Given back at shutdown; due again at once.
    Released,
}

/// One thing that happened, as the timeline needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// A job was enqueued (not a duplicate-key no-op).
    Inserted {
        /// When (db clock).
        at: Timestamp,
        /// The job.
        job: JobId,
        /// When it becomes due.
        run_at: Timestamp,
    },
    /// The db handed a job to a worker.
    Claimed {
        /// When.
        at: Timestamp,
        /// The claiming worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The new epoch.
        epoch: Epoch,
        /// The attempt number.
        attempt: i32,
    },
    /// The db accepted a write that ended an attempt.
    Ended {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// What the write did.
        end: End,
        /// The handler's error, for failures.
        error: Option<String>,
    },
    /// The reaper took a job back.
    Reaped {
        /// When.
        at: Timestamp,
        /// The worker whose reaper did it.
        by: String,
        /// The job.
        job: JobId,
        /// The epoch taken back.
        epoch: Epoch,
        /// The lease holder.
        holder: String,
        /// Reaped to dead (last attempt) rather than queued.
        dead: bool,
    },
    /// The job was cancelled.
    Cancelled {
        /// When.
        at: Timestamp,
        /// The job.
        job: JobId,
    },
    /// The db refused a fenced write (stale epoch or wrong status).
    Refused {
        /// When.
        at: Timestamp,
        /// The writing worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch presented.
        epoch: Epoch,
        /// The refused operation.
        op: String,
        /// The db's reason.
        detail: String,
    },
    /// A worker's runtime gave an attempt up (refused heartbeat, local lease
    /// deadline, timeout, shutdown).
    LeaseLost {
        /// When (simulated time, no skew).
        at: Timestamp,
        /// The worker.
        worker: String,
        /// The job.
        job: JobId,
        /// The epoch it held.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// The driver injected a fault (only those that took effect).
    Fault {
        /// When.
        at: Timestamp,
        /// What.
        fault: Fault,
    },
    /// A worker host (re)started.
    Restarted {
        /// When.
        at: Timestamp,
        /// The worker.
        worker: String,
    },
    /// The end of the chaos phase: every fault repaired.
    Heal {
        /// When.
        at: Timestamp,
    },
    /// Whether some healthy worker had a free slot changed (from the
    /// oracle's once-a-second samples).
    Capacity {
        /// When the sample saw it.
        at: Timestamp,
        /// A free slot existed.
        free: bool,
    },
}

/// Shorter waits are not drawn: see [`waits`].
const MIN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn micros(t: Timestamp) -> Micros {
    t.as_micros()
}

fn secs(t: Timestamp) -> String {
    let m = t.micros_since(BASE);
    format!("+{}.{:01}s", m / 1_000_000, (m % 1_000_000) / 100_000)
}

/// An attempt as it is being reconstructed.
struct Open {
    lane: String,
    job: JobId,
    epoch: Epoch,
    attempt: i32,
    start: Timestamp,
    /// The db's end: an accepted write, a reap or a cancel.
    db_end: Option<(Timestamp, Outcome, String)>,
    /// The worker's own end: it crashed, gave up, or had a write refused.
    worker_end: Option<(Timestamp, String)>,
}

/// Where a job stands, for waits.
enum JobState {
    /// Queued, due at this time, for this reason.
    Due(Timestamp, String),
    /// Held by a live worker, or terminal: not waiting.
    Busy,
}

/// Builds the picture of one run. `workers` are the lane names; `start` and
/// `end` the run's bounds; `facts` in the order they were recorded.
pub fn build(
    title: String,
    workers: &[String],
    start: Timestamp,
    end: Timestamp,
    facts: &[Fact],
) -> Timeline {
    let mut attempts: Vec<Open> = Vec::new();
    // (job, epoch) -> index into `attempts`; a BTreeMap so nothing depends on hashing.
    let mut index: BTreeMap<(JobId, Epoch), usize> = BTreeMap::new();
    // Latest attempt per job, for cancels (which carry no epoch).
    let mut latest: BTreeMap<JobId, usize> = BTreeMap::new();
    let mut marks: Vec<Mark> = Vec::new();
    let mut heal: Option<Timestamp> = None;
    let mut capacity: Vec<(Timestamp, bool)> = Vec::new();
    // Clock offsets in force per worker: (since, offset ms).
    let mut skews: BTreeMap<usize, (Timestamp, i64)> = BTreeMap::new();
    let mut skew_spans: Vec<(usize, Timestamp, Timestamp, i64)> = Vec::new();
    let mut api_spans: Vec<(Timestamp, Timestamp, String)> = Vec::new();
    let mut spans: Vec<(usize, MarkKind, Timestamp, Timestamp, String)> = Vec::new();

    for fact in facts {
        match fact {
            Fact::Claimed {
                at,
                worker,
                job,
                epoch,
                attempt,
            } => {
                index.insert((*job, *epoch), attempts.len());
                latest.insert(*job, attempts.len());
                attempts.push(Open {
                    lane: worker.clone(),
                    job: *job,
                    epoch: *epoch,
                    attempt: *attempt,
                    start: *at,
                    db_end: None,
                    worker_end: None,
                });
            }
            Fact::Ended {
                at,
                job,
                epoch,
                end,
                error,
                ..
            } => {
                if let Some(a) = index.get(&(*job, *epoch)).map(|i| &mut attempts[*i]) {
                    if a.db_end.is_none() {
                        let (outcome, note) = match end {
                            End::Succeeded => (Outcome::Succeeded, String::new()),
                            End::Retried { run_at } => {
                                (Outcome::Retried, format!("retry due at {}", secs(*run_at)))
                            }
                            End::Dead => (Outcome::Dead, String::new()),
                            End::Released => (Outcome::Released, "given back at shutdown".into()),
                        };
                        let note = match error {
                            Some(e) if note.is_empty() => e.clone(),
                            Some(e) => format!("{e}; {note}"),
                            None => note,
                        };
                        a.db_end = Some((*at, outcome, note));
                    }
                }
            }
            Fact::Reaped {
                at,
                by,
                job,
                epoch,
                holder,
                dead,
            } => {
                if let Some(a) = index.get(&(*job, *epoch)).map(|i| &mut attempts[*i]) {
                    if a.db_end.is_none() {
                        let to = if *dead { "dead" } else { "queued" };
                        a.db_end = Some((
                            *at,
                            Outcome::Reaped,
                            format!("reaped by {by} at {} -> {to}", secs(*at)),
                        ));
                    }
                }
                marks.push(Mark {
                    lane: Some(holder.clone()),
                    kind: MarkKind::Reap,
                    at: micros(*at),
                    end: None,
                    note: Some(format!(
                        "job {job} epoch {epoch} reaped by {by} -> {}",
                        if *dead { "dead" } else { "queued" }
                    )),
                });
            }
            Fact::Cancelled { at, job } => {
                if let Some(a) = latest.get(job).map(|i| &mut attempts[*i]) {
                    if a.db_end.is_none() {
                        a.db_end = Some((*at, Outcome::Cancelled, "cancelled while running".into()));
                    }
                }
            }
            Fact::Refused {
                at,
                worker,
                job,
                epoch,
                op,
                detail,
            } => {
                if let Some(a) = index.get(&(*job, *epoch)).map(|i| &mut attempts[*i]) {
                    if a.worker_end.is_none() && a.lane == *worker {
                        a.worker_end = Some((*at, format!("its {op} was refused at {}", secs(*at))));
                    }
                }
                marks.push(Mark {
                    lane: Some(worker.clone()),
                    kind: MarkKind::StaleWriteRejected,
                    at: micros(*at),
                    end: None,
                    note: Some(format!("{op} of job {job} at epoch {epoch} refused: {detail}")),
                });
            }
            Fact::LeaseLost {
                at,
                worker,
                job,
                epoch,
                reason,
            } => {
                if let Some(a) = index.get(&(*job, *epoch)).map(|i| &mut attempts[*i]) {
                    if a.worker_end.is_none() && a.lane == *worker {
                        a.worker_end =
                            Some((*at, format!("{worker} gave it up ({reason}) at {}", secs(*at))));
                    }
                }
            }
            Fact::Fault { at, fault } => {
                let lane = fault.worker().and_then(|w| workers.get(w).cloned());
                let until = *at + fault.duration();
                match fault {
                    Fault::Crash { worker, down_ms } => {
                        let name = workers.get(*worker).cloned().unwrap_or_default();
                        // Every attempt the worker held ends here on its side.
                        for a in attempts.iter_mut().filter(|a| a.lane == name) {
                            if a.db_end.is_none() && a.worker_end.is_none() {
                                a.worker_end = Some((*at, format!("{name} crashed at {}", secs(*at))));
                            }
                        }
                        marks.push(Mark {
                            lane,
                            kind: MarkKind::Crash,
                            at: micros(*at),
                            end: None,
                            note: Some(format!("down {:.1}s", *down_ms as f64 / 1000.0)),
                        });
                    }
                    Fault::Sigterm { down_ms, .. } => marks.push(Mark {
                        lane,
                        kind: MarkKind::Sigterm,
                        at: micros(*at),
                        end: None,
                        note: Some(format!(
                            "graceful shutdown; restart after {:.1}s",
                            *down_ms as f64 / 1000.0
                        )),
                    }),
                    Fault::DbRestart { down_ms } => marks.push(Mark {
                        lane: None,
                        kind: MarkKind::DatabaseRestart,
                        at: micros(*at),
                        end: None,
                        note: Some(format!("database down {:.1}s", *down_ms as f64 / 1000.0)),
                    }),
                    Fault::Pause { worker, .. } => {
                        spans.push((*worker, MarkKind::Pause, *at, until, "traffic held".into()))
                    }
                    Fault::Partition {
                        worker, direction, ..
                    } => {
                        let way = match direction {
                            Direction::Both => "both ways",
                            Direction::ToDb => "requests lost",
                            Direction::FromDb => "replies lost",
                        };
                        spans.push((
                            *worker,
                            MarkKind::Partition,
                            *at,
                            until,
                            format!("cut off the db, {way}"),
                        ))
                    }
                    // No mark kind of their own: drawn as a partition whose
                    // note says it is only a lossy or slow link.
                    Fault::LoseMessages {
                        worker, probability, ..
                    } => spans.push((
                        *worker,
                        MarkKind::Partition,
                        *at,
                        until,
                        format!("lossy link: {:.0}% of messages lost", probability * 100.0),
                    )),
                    Fault::Delay {
                        worker, latency_ms, ..
                    } => spans.push((
                        *worker,
                        MarkKind::Partition,
                        *at,
                        until,
                        format!("slow link: {latency_ms} ms one way"),
                    )),
                    Fault::Api { mode, .. } => api_spans.push((*at, until, format!("API {mode:?}"))),
                    Fault::Skew { worker, offset_ms } => {
                        if let Some((since, off)) = skews.insert(*worker, (*at, *offset_ms)) {
                            skew_spans.push((*worker, since, *at, off));
                        }
                    }
                }
            }
            Fact::Restarted { at, worker } => marks.push(Mark {
                lane: Some(worker.clone()),
                kind: MarkKind::Restart,
                at: micros(*at),
                end: None,
                note: None,
            }),
            Fact::Heal { at } => heal = Some(*at),
            Fact::Capacity { at, free } => capacity.push((*at, *free)),
            Fact::Inserted { .. } => {}
        }
    }
    for (worker, (since, off)) in skews {
        skew_spans.push((worker, since, end, off));
    }

    // Spans end at their self-heal or at the heal, whichever comes first.
    let cut = |until: Timestamp| heal.map_or(until, |h| until.min(h)).min(end);
    for (worker, kind, from, until, note) in spans {
        marks.push(Mark {
            lane: workers.get(worker).cloned(),
            kind,
            at: micros(from),
            end: Some(micros(cut(until).max(from))),
            note: Some(note),
        });
    }
    for (from, until, note) in api_spans {
        marks.push(Mark {
            lane: None,
            kind: MarkKind::ApiOutage,
            at: micros(from),
            end: Some(micros(cut(until).max(from))),
            note: Some(note),
        });
    }
    for (worker, from, until, off) in skew_spans.into_iter().filter(|s| s.3 != 0) {
        marks.push(Mark {
            lane: workers.get(worker).cloned(),
            kind: MarkKind::ClockSkew,
            at: micros(from),
            end: Some(micros(until.max(from))),
            note: Some(format!("clock {off:+} ms")),
        });
    }

    let attempts_out: Vec<Attempt> = attempts.iter().map(|a| finish(a, end)).collect();
    let waits = waits(facts, &attempts, &capacity, end);
    Timeline {
        title,
        start: micros(start),
        end: micros(end),
        lanes: workers.to_vec(),
        attempts: attempts_out,
        marks,
        waits,
    }
}

/// When the worker stopped working on `a`, and the outcome and note of its bar.
fn finish(a: &Open, end: Timestamp) -> Attempt {
    let (bar_end, outcome, note) = match (&a.db_end, &a.worker_end) {
        // An accepted write ends it on both sides.
        (Some((at, outcome, note)), _) if *outcome != Outcome::Reaped && *outcome != Outcome::Cancelled => {
            (*at, *outcome, note.clone())
        }
        // Reaped or cancelled: the bar lasts as long as the worker still
        // worked on it (a zombie after a pause lasts past the reap).
        (Some((_, outcome, note)), Some((wat, wnote))) => (*wat, *outcome, format!("{wnote}; {note}")),
        (Some((at, outcome, note)), None) => (*at, *outcome, note.clone()),
        (None, Some((wat, wnote))) => (*wat, Outcome::LeaseLost, wnote.clone()),
        (None, None) => (
            end,
            Outcome::Unfinished,
            "still running when the run ended".into(),
        ),
    };
    Attempt {
        lane: a.lane.clone(),
        job_id: a.job.0,
        epoch: a.epoch.0,
        attempt: a.attempt,
        start: micros(a.start),
        end: micros(bar_end.max(a.start)),
        outcome,
        note: Some(note).filter(|n| !n.is_empty()),
    }
}

/// Whether some worker had a free slot at `at`, by the latest sample.
fn free_at(capacity: &[(Timestamp, bool)], at: Timestamp) -> bool {
    let i = capacity.partition_point(|(t, _)| *t <= at);
    i == 0 || capacity[i - 1].1
}

/// Spans in which a job was due (or held by a worker that had stopped) and
/// nothing ran it. Backoff and future `run_at` are not waits: not due.
fn waits(facts: &[Fact], attempts: &[Open], capacity: &[(Timestamp, bool)], end: Timestamp) -> Vec<Wait> {
    let mut state: BTreeMap<JobId, JobState> = BTreeMap::new();
    let mut out = Vec::new();
    let by_key: BTreeMap<(JobId, Epoch), &Open> = attempts.iter().map(|a| ((a.job, a.epoch), a)).collect();
    let close = |out: &mut Vec<Wait>, job: JobId, state: Option<JobState>, at: Timestamp| {
        if let Some(JobState::Due(since, reason)) = state {
            // A normal pickup (wake-up plus a round trip) takes a few ticks;
            // drawing those would bury the waits that mean something.
            if at.saturating_since(since) >= MIN_WAIT {
                let reason = if free_at(capacity, since) {
                    reason
                } else {
                    reason.replace(
                        "waiting for a claim",
                        "waiting for capacity (no worker had a free slot)",
                    )
                };
                out.push(Wait {
                    job_id: job.0,
                    start: micros(since),
                    end: micros(at),
                    reason,
                });
            }
        }
    };
    for fact in facts {
        match fact {
            Fact::Inserted { at, job, run_at } => {
                let due = (*at).max(*run_at);
                state.insert(*job, JobState::Due(due, "due, waiting for a claim".into()));
            }
            Fact::Claimed { at, job, .. } => {
                let previous = state.insert(*job, JobState::Busy);
                close(&mut out, *job, previous, *at);
            }
            Fact::Ended { at, job, end, .. } => {
                let next = match end {
                    End::Retried { run_at } => {
                        JobState::Due((*run_at).max(*at), "retry due, waiting for a claim".into())
                    }
                    End::Released => JobState::Due(*at, "released at shutdown, waiting for a claim".into()),
                    End::Succeeded | End::Dead => JobState::Busy,
                };
                state.insert(*job, next);
            }
            Fact::Reaped {
                at,
                job,
                epoch,
                dead,
                holder,
                ..
            } => {
                // The worker stopped before the reap: the job sat held by
                // nobody until the lease ran out and a reaper came by.
                if let Some((stopped, why)) = by_key.get(&(*job, *epoch)).and_then(|a| a.worker_end.clone()) {
                    if stopped < *at {
                        out.push(Wait {
                            job_id: job.0,
                            start: micros(stopped),
                            end: micros(*at),
                            reason: format!("{why}; {holder}'s lease held it until the reaper took it back"),
                        });
                    }
                }
                let next = if *dead {
                    JobState::Busy
                } else {
                    JobState::Due(*at, "reaped, waiting for a claim".into())
                };
                let previous = state.insert(*job, next);
                close(&mut out, *job, previous, *at);
            }
            Fact::Cancelled { at, job } => {
                let previous = state.insert(*job, JobState::Busy);
                close(&mut out, *job, previous, *at);
            }
            _ => {}
        }
    }
    for (job, s) in state {
        close(&mut out, job, Some(s), end);
    }
    // The seed document's incident: the worker stopped, the db still calls
    // the job running under its lease, and nothing ever took it back.
    for a in attempts.iter().filter(|a| a.db_end.is_none()) {
        if let Some((stopped, why)) = &a.worker_end {
            if end.saturating_since(*stopped) >= MIN_WAIT {
                out.push(Wait {
                    job_id: a.job.0,
                    start: micros(*stopped),
                    end: micros(end),
                    reason: format!(
                        "{why}; still running in the db under {}'s lease, never taken back",
                        a.lane
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> Timestamp {
        BASE + Duration::from_secs(secs)
    }

    fn claim(t: u64, worker: &str, job: i64, epoch: i64) -> Fact {
        Fact::Claimed {
            at: at(t),
            worker: worker.into(),
            job: JobId(job),
            epoch: Epoch(epoch),
            attempt: epoch as i32,
        }
    }

    #[test]
    fn a_crash_cuts_the_bar_and_the_job_waits_for_the_reaper_then_a_claim() {
        let workers = vec!["w1".to_owned(), "w2".to_owned()];
        let facts = vec![
            Fact::Inserted {
                at: at(0),
                job: JobId(1),
                run_at: at(0),
            },
            claim(0, "w1", 1, 1),
            Fact::Fault {
                at: at(10),
                fault: Fault::Crash {
                    worker: 0,
                    down_ms: 5_000,
                },
            },
            Fact::Reaped {
                at: at(45),
                by: "w2".into(),
                job: JobId(1),
                epoch: Epoch(1),
                holder: "w1".into(),
                dead: false,
            },
            claim(50, "w2", 1, 2),
            Fact::Ended {
                at: at(60),
                worker: "w2".into(),
                job: JobId(1),
                epoch: Epoch(2),
                end: End::Retried { run_at: at(90) },
                error: Some("boom".into()),
            },
            claim(95, "w2", 1, 3),
        ];
        let t = build("t".into(), &workers, at(0), at(100), &facts);
        let bars: Vec<(&str, Micros, Micros, Outcome)> = t
            .attempts
            .iter()
            .map(|a| (a.lane.as_str(), a.start, a.end, a.outcome))
            .collect();
        let us = |s: u64| micros(at(s));
        assert_eq!(
            bars,
            [
                ("w1", us(0), us(10), Outcome::Reaped),
                ("w2", us(50), us(60), Outcome::Retried),
                ("w2", us(95), us(100), Outcome::Unfinished),
            ]
        );
        let waits: Vec<(Micros, Micros, bool)> = t
            .waits
            .iter()
            .map(|w| (w.start, w.end, w.reason.contains("reaper")))
            .collect();
        // Crash to reap (held by a dead worker), reap to claim, retry due to
        // claim; the backoff from 60 s to 90 s is not a wait.
        assert_eq!(
            waits,
            [
                (us(10), us(45), true),
                (us(45), us(50), false),
                (us(90), us(95), false)
            ]
        );
        assert!(t
            .marks
            .iter()
            .any(|m| m.kind == MarkKind::Crash && m.lane.as_deref() == Some("w1")));
        assert!(t
            .marks
            .iter()
            .any(|m| m.kind == MarkKind::Reap && m.lane.as_deref() == Some("w1")));
    }

    #[test]
    fn a_crashed_holder_never_reaped_leaves_a_wait_to_the_end() {
        let workers = vec!["w1".to_owned()];
        let facts = vec![
            claim(5, "w1", 3, 1),
            Fact::Fault {
                at: at(60),
                fault: Fault::Crash {
                    worker: 0,
                    down_ms: 10_000,
                },
            },
        ];
        let t = build("t".into(), &workers, at(0), at(800), &facts);
        assert_eq!(t.attempts[0].outcome, Outcome::LeaseLost);
        assert_eq!(t.attempts[0].end, micros(at(60)));
        assert_eq!(t.waits.len(), 1);
        assert_eq!(
            (t.waits[0].start, t.waits[0].end),
            (micros(at(60)), micros(at(800)))
        );
        assert!(
            t.waits[0].reason.contains("never taken back"),
            "{}",
            t.waits[0].reason
        );
    }

    #[test]
    fn a_zombie_bar_runs_past_the_reap_to_its_refused_write() {
        let workers = vec!["w1".to_owned()];
        let facts = vec![
            claim(0, "w1", 7, 1),
            Fact::Reaped {
                at: at(40),
                by: "w1".into(),
                job: JobId(7),
                epoch: Epoch(1),
                holder: "w1".into(),
                dead: false,
            },
            Fact::Refused {
                at: at(70),
                worker: "w1".into(),
                job: JobId(7),
                epoch: Epoch(1),
                op: "complete".into(),
                detail: "stale".into(),
            },
        ];
        let t = build("t".into(), &workers, at(0), at(100), &facts);
        assert_eq!(t.attempts.len(), 1);
        assert_eq!(t.attempts[0].end, micros(at(70)));
        assert_eq!(t.attempts[0].outcome, Outcome::Reaped);
        assert!(t.marks.iter().any(|m| m.kind == MarkKind::StaleWriteRejected));
        // Queued since the reap and never claimed again: one wait to the end.
        assert_eq!(t.waits.len(), 1);
        assert_eq!(
            (t.waits[0].start, t.waits[0].end),
            (micros(at(40)), micros(at(100)))
        );
    }
}
