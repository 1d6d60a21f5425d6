//! One run as a picture: the facts the oracle and the driver record while a
//! world runs (claims, the writes that ended attempts, reaps, refusals,
//! faults, restarts), mapped into `stuckless-timeline`'s neutral
//! [`TimelineEvent`]s and reconstructed into a [`Timeline`] by the same rules
//! `stuckless timeline` uses for a real database. What is left here is what
//! only the simulator knows: faults as marks, spans cut at the heal.
//!
//! Facts are recorded only when asked for ([`crate::SimBuilder::keep_timeline`]),
//! in the order the simulation produced them, so the picture of a seed is as
//! deterministic as its trace.

use std::collections::BTreeMap;

use stuckless_core::{Epoch, JobId, Timestamp};
use stuckless_timeline::{reconstruct, Finish, Frame, Mark, MarkKind, Micros, Timeline, TimelineEvent};

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

fn micros(t: Timestamp) -> Micros {
    t.as_micros()
}

/// Simulated time as a tooltip reads it: seconds since the run began.
fn secs(t: Timestamp) -> String {
    let m = t.micros_since(BASE);
    format!("+{}.{:01}s", m / 1_000_000, (m % 1_000_000) / 100_000)
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
    let frame = Frame {
        title,
        start: micros(start),
        end: micros(end),
        lanes: workers.to_vec(),
        time: |t| secs(Timestamp::from_micros(t)),
    };
    let mut events: Vec<TimelineEvent> = facts.iter().filter_map(|f| event(f, workers)).collect();
    events.extend(
        fault_spans(workers, end, facts)
            .into_iter()
            .map(TimelineEvent::Mark),
    );
    reconstruct(&frame, &events)
}

/// The neutral event a fact is, if it is one; span faults are drawn by
/// [`fault_spans`].
fn event(fact: &Fact, workers: &[String]) -> Option<TimelineEvent> {
    let name = |w: usize| workers.get(w).cloned();
    Some(match fact {
        Fact::Inserted { at, job, run_at } => TimelineEvent::Created {
            at: micros(*at),
            job: job.0,
            run_at: Some(micros(*run_at)),
        },
        Fact::Claimed {
            at,
            worker,
            job,
            epoch,
            attempt,
        } => TimelineEvent::Claimed {
            at: micros(*at),
            job: job.0,
            epoch: epoch.0,
            attempt: *attempt,
            worker: Some(worker.clone()),
        },
        Fact::Ended {
            at,
            worker,
            job,
            epoch,
            end,
            error,
        } => TimelineEvent::Ended {
            at: micros(*at),
            job: job.0,
            epoch: epoch.0,
            attempt: None,
            worker: Some(worker.clone()),
            finish: match end {
                End::Succeeded => Finish::Succeeded,
                End::Retried { run_at } => Finish::Retried {
                    run_at: Some(micros(*run_at)),
                },
                End::Dead => Finish::Dead,
                End::Released => Finish::Released,
            },
            error: error.clone(),
        },
        Fact::Reaped {
            at,
            by,
            job,
            epoch,
            holder,
            dead,
        } => TimelineEvent::Reaped {
            at: micros(*at),
            job: job.0,
            epoch: epoch.0,
            attempt: None,
            holder: Some(holder.clone()),
            by: Some(by.clone()),
            lease_expiry: None,
            dead: *dead,
        },
        Fact::Cancelled { at, job } => TimelineEvent::Cancelled {
            at: micros(*at),
            job: job.0,
            epoch: None,
        },
        Fact::Refused {
            at,
            worker,
            job,
            epoch,
            op,
            detail,
        } => TimelineEvent::Refused {
            at: micros(*at),
            worker: worker.clone(),
            job: job.0,
            epoch: epoch.0,
            op: op.clone(),
            detail: detail.clone(),
        },
        Fact::LeaseLost {
            at,
            worker,
            job,
            epoch,
            reason,
        } => TimelineEvent::Stopped {
            at: micros(*at),
            worker: worker.clone(),
            job: job.0,
            epoch: epoch.0,
            note: format!("{worker} gave it up ({reason}) at {}", secs(*at)),
        },
        Fact::Fault { at, fault } => {
            let mark = |lane, kind, note: String| {
                TimelineEvent::Mark(Mark {
                    lane,
                    kind,
                    at: micros(*at),
                    end: None,
                    note: Some(note),
                })
            };
            match fault {
                Fault::Crash { worker, down_ms } => TimelineEvent::Crashed {
                    at: micros(*at),
                    worker: name(*worker).unwrap_or_default(),
                    note: Some(format!("down {:.1}s", *down_ms as f64 / 1000.0)),
                },
                Fault::Sigterm { worker, down_ms } => mark(
                    name(*worker),
                    MarkKind::Sigterm,
                    format!(
                        "graceful shutdown; restart after {:.1}s",
                        *down_ms as f64 / 1000.0
                    ),
                ),
                Fault::DbRestart { down_ms } => mark(
                    None,
                    MarkKind::DatabaseRestart,
                    format!("database down {:.1}s", *down_ms as f64 / 1000.0),
                ),
                _ => return None,
            }
        }
        Fact::Restarted { at, worker } => TimelineEvent::Mark(Mark {
            lane: Some(worker.clone()),
            kind: MarkKind::Restart,
            at: micros(*at),
            end: None,
            note: None,
        }),
        Fact::Capacity { at, free } => TimelineEvent::Capacity {
            at: micros(*at),
            free: *free,
        },
        Fact::Heal { .. } => return None,
    })
}

/// Faults that last: pauses, partitions, lossy and slow links, API
/// outages, clock skews. Each ends at its self-heal or at the heal
/// (whichever comes first); a skew lasts until the next one on its worker.
fn fault_spans(workers: &[String], end: Timestamp, facts: &[Fact]) -> Vec<Mark> {
    // The last heal counts (there is one, at the end of the chaos phase).
    let heal = facts.iter().rev().find_map(|f| match f {
        Fact::Heal { at } => Some(*at),
        _ => None,
    });
    let cut = |until: Timestamp| heal.map_or(until, |h| until.min(h)).min(end);
    let mut spans: Vec<(Option<String>, MarkKind, Timestamp, Timestamp, String)> = Vec::new();
    let mut api: Vec<(Timestamp, Timestamp, String)> = Vec::new();
    // Clock offsets in force per worker: (since, offset ms).
    let mut skews: BTreeMap<usize, (Timestamp, i64)> = BTreeMap::new();
    let mut skewed: Vec<(usize, Timestamp, Timestamp, i64)> = Vec::new();
    for fact in facts {
        let Fact::Fault { at, fault } = fact else {
            continue;
        };
        let lane = fault.worker().and_then(|w| workers.get(w).cloned());
        let until = cut(*at + fault.duration()).max(*at);
        let note = match fault {
            Fault::Pause { .. } => "traffic held".to_owned(),
            Fault::Partition { direction, .. } => {
                let way = match direction {
                    Direction::Both => "both ways",
                    Direction::ToDb => "requests lost",
                    Direction::FromDb => "replies lost",
                };
                format!("cut off the db, {way}")
            }
            // No mark kind of their own: drawn as a partition whose note
            // says it is only a lossy or slow link.
            Fault::LoseMessages { probability, .. } => {
                format!("lossy link: {:.0}% of messages lost", probability * 100.0)
            }
            Fault::Delay { latency_ms, .. } => format!("slow link: {latency_ms} ms one way"),
            Fault::Api { mode, .. } => {
                api.push((*at, until, format!("API {mode:?}")));
                continue;
            }
            Fault::Skew { worker, offset_ms } => {
                if let Some((since, off)) = skews.insert(*worker, (*at, *offset_ms)) {
                    skewed.push((*worker, since, *at, off));
                }
                continue;
            }
            Fault::Crash { .. } | Fault::Sigterm { .. } | Fault::DbRestart { .. } => continue,
        };
        let kind = if matches!(fault, Fault::Pause { .. }) {
            MarkKind::Pause
        } else {
            MarkKind::Partition
        };
        spans.push((lane, kind, *at, until, note));
    }
    for (worker, (since, off)) in skews {
        skewed.push((worker, since, end, off));
    }
    let span = |lane, kind, from: Timestamp, until: Timestamp, note| Mark {
        lane,
        kind,
        at: micros(from),
        end: Some(micros(until.max(from))),
        note: Some(note),
    };
    let mut marks: Vec<Mark> = spans
        .into_iter()
        .map(|(lane, kind, from, until, note)| span(lane, kind, from, until, note))
        .collect();
    marks.extend(
        api.into_iter()
            .map(|(from, until, note)| span(None, MarkKind::ApiOutage, from, until, note)),
    );
    marks.extend(
        skewed
            .into_iter()
            .filter(|s| s.3 != 0)
            .map(|(w, from, until, off)| {
                span(
                    workers.get(w).cloned(),
                    MarkKind::ClockSkew,
                    from,
                    until,
                    format!("clock {off:+} ms"),
                )
            }),
    );
    marks
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stuckless_timeline::Outcome;

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
