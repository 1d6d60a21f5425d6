//! The reconstructor's rules, one test per behaviour.

use super::*;

const S: Micros = 1_000_000;

fn frame(end_s: i64) -> Frame {
    Frame {
        lanes: vec!["w1".into(), "w2".into()],
        ..Frame::new("t", 0, end_s * S)
    }
}

fn created(t: i64, job: i64, run_at: Option<i64>) -> TimelineEvent {
    TimelineEvent::Created {
        at: t * S,
        job,
        run_at: run_at.map(|r| r * S),
    }
}

fn claim(t: i64, worker: &str, job: i64, epoch: i64) -> TimelineEvent {
    TimelineEvent::Claimed {
        at: t * S,
        job,
        epoch,
        attempt: epoch as i32,
        worker: Some(worker.into()),
    }
}

fn ended(t: i64, job: i64, epoch: i64, finish: Finish) -> TimelineEvent {
    TimelineEvent::Ended {
        at: t * S,
        job,
        epoch,
        attempt: None,
        worker: None,
        finish,
        error: None,
    }
}

fn reaped(t: i64, job: i64, epoch: i64, holder: &str, expiry: Option<i64>) -> TimelineEvent {
    TimelineEvent::Reaped {
        at: t * S,
        job,
        epoch,
        attempt: None,
        holder: Some(holder.into()),
        by: None,
        lease_expiry: expiry.map(|x| x * S),
        dead: false,
    }
}

fn crash(t: i64, worker: &str) -> TimelineEvent {
    TimelineEvent::Crashed {
        at: t * S,
        worker: worker.into(),
        note: None,
    }
}

fn bars(t: &Timeline) -> Vec<(&str, Micros, Micros, Outcome)> {
    t.attempts
        .iter()
        .map(|a| (a.lane.as_str(), a.start / S, a.end / S, a.outcome))
        .collect()
}

fn waits(t: &Timeline) -> Vec<(i64, Micros, Micros)> {
    t.waits
        .iter()
        .map(|w| (w.job_id, w.start / S, w.end / S))
        .collect()
}

/// Guards: a retry's backoff and a future run_at are not waits; the wait
/// starts when the retry (or the job) falls due.
#[test]
fn backoff_and_future_run_at_are_not_waits() {
    let t = reconstruct(
        &frame(100),
        &[
            created(0, 1, Some(20)),
            claim(25, "w1", 1, 1),
            ended(30, 1, 1, Finish::Retried { run_at: Some(60 * S) }),
            claim(70, "w1", 1, 2),
            ended(80, 1, 2, Finish::Retried { run_at: None }),
        ],
    );
    assert_eq!(waits(&t), [(1, 20, 25), (1, 60, 70)]);
    assert_eq!(t.waits[0].reason, "due, waiting for its first claim");
    assert_eq!(t.waits[1].reason, "retry due, waiting for a claim");
}

/// Guards: waits under MIN_WAIT (a normal pickup) are not drawn, of any kind.
#[test]
fn short_waits_are_not_drawn() {
    let t = reconstruct(
        &frame(100),
        &[
            created(0, 1, Some(0)),
            TimelineEvent::Claimed {
                at: MIN_WAIT - 1,
                job: 1,
                epoch: 1,
                attempt: 1,
                worker: Some("w1".into()),
            },
            crash(10, "w1"),
            TimelineEvent::Reaped {
                at: 10 * S + MIN_WAIT - 1,
                job: 1,
                epoch: 1,
                attempt: None,
                holder: Some("w1".into()),
                by: None,
                lease_expiry: None,
                dead: true,
            },
        ],
    );
    assert!(t.waits.is_empty(), "{:?}", t.waits);
    assert_eq!(t.attempts.len(), 1);
}

/// Guards: a reaped zombie's bar runs past the reap to when the worker
/// stopped working on it (its refused write), and is still coloured reaped.
#[test]
fn a_reaped_zombie_runs_past_the_reap() {
    let t = reconstruct(
        &frame(100),
        &[
            claim(0, "w1", 7, 1),
            reaped(40, 7, 1, "w1", None),
            TimelineEvent::Refused {
                at: 70 * S,
                worker: "w1".into(),
                job: 7,
                epoch: 1,
                op: "complete".into(),
                detail: "stale".into(),
            },
        ],
    );
    assert_eq!(bars(&t), [("w1", 0, 70, Outcome::Reaped)]);
    assert!(t.marks.iter().any(|m| m.kind == MarkKind::StaleWriteRejected));
    assert!(t.marks.iter().any(|m| m.kind == MarkKind::Reap));
    // Queued again at the reap, never claimed: one wait to the end, and no
    // wait for the reaper (the worker was still at it when the reap came).
    assert_eq!(waits(&t), [(7, 40, 100)]);
}

/// Guards: a crash cuts the bar at the crash and leaves a wait for the
/// reaper, then one for a claim.
#[test]
fn a_crash_cuts_the_bar_and_leaves_a_wait_for_the_reaper() {
    let t = reconstruct(
        &frame(100),
        &[
            claim(0, "w1", 1, 1),
            crash(10, "w1"),
            reaped(45, 1, 1, "w1", Some(40)),
            claim(50, "w2", 1, 2),
        ],
    );
    assert_eq!(
        bars(&t),
        [
            ("w1", 0, 10, Outcome::Reaped),
            ("w2", 50, 100, Outcome::Unfinished)
        ]
    );
    assert_eq!(waits(&t), [(1, 10, 45), (1, 45, 50)]);
    assert!(t.waits[0].reason.contains("w1 crashed"), "{}", t.waits[0].reason);
    assert!(t.waits[0].reason.contains("waiting for the reaper"));
    assert_eq!(t.waits[1].reason, "reaped, waiting for a claim");
    assert!(t
        .marks
        .iter()
        .any(|m| m.kind == MarkKind::Crash && m.lane.as_deref() == Some("w1")));
}

/// Guards: a crash only cuts attempts still open on both sides, on its lane.
#[test]
fn a_crash_leaves_finished_attempts_and_other_lanes_alone() {
    let t = reconstruct(
        &frame(100),
        &[
            claim(0, "w1", 1, 1),
            ended(5, 1, 1, Finish::Succeeded),
            claim(6, "w2", 2, 1),
            crash(10, "w1"),
        ],
    );
    assert_eq!(
        bars(&t),
        [
            ("w1", 0, 5, Outcome::Succeeded),
            ("w2", 6, 100, Outcome::Unfinished)
        ]
    );
    assert!(t.waits.is_empty());
}

/// Guards: with the holder's stop unknown, a reaped bar ends at the lease
/// expiry and the job waits for the reaper from there.
#[test]
fn a_reap_with_a_known_expiry_ends_the_bar_there() {
    let t = reconstruct(
        &frame(100),
        &[claim(0, "w1", 1, 1), reaped(45, 1, 1, "w1", Some(35))],
    );
    assert_eq!(bars(&t), [("w1", 0, 35, Outcome::Reaped)]);
    assert_eq!(waits(&t), [(1, 35, 45), (1, 45, 100)]);
    assert!(t.waits[0].reason.starts_with("lease of w1 expired at"));
    assert!(t.waits[0].reason.ends_with("waiting for the reaper"));
}

/// Guards: a job whose holder stopped and was never reaped waits to the end
/// of the picture, and its bar is a lost lease, not a finished attempt.
#[test]
fn a_stopped_holder_never_reaped_waits_to_the_end() {
    let t = reconstruct(
        &frame(800),
        &[
            claim(5, "w1", 3, 1),
            TimelineEvent::Stopped {
                at: 60 * S,
                worker: "w1".into(),
                job: 3,
                epoch: 1,
                note: "w1 gave it up (timeout)".into(),
            },
        ],
    );
    assert_eq!(bars(&t), [("w1", 5, 60, Outcome::LeaseLost)]);
    assert_eq!(waits(&t), [(3, 60, 800)]);
    assert!(t.waits[0].reason.contains("never taken back"));
}

/// Guards: an unlogged claim is drawn from the job's creation when that is
/// later than the previous event, else from the previous event, else from
/// the picture's start; the tooltip says "claim not logged"; the wait
/// before an inferred claim is unknowable and not drawn.
#[test]
fn an_unlogged_claim_is_inferred_from_the_latest_earlier_event() {
    let t = reconstruct(
        &Frame::new("t", 10 * S, 100 * S),
        &[
            // Job 1: created inside the picture, its first attempt reaped.
            created(20, 1, Some(20)),
            reaped(50, 1, 1, "w1", None),
            // ...then retried: drawn from the reap.
            ended(70, 1, 2, Finish::Retried { run_at: None }),
            // Job 2: created before the picture: from its start.
            created(0, 2, None),
            ended(40, 2, 1, Finish::Succeeded),
        ],
    );
    let starts: Vec<(i64, i64, Micros)> = t
        .attempts
        .iter()
        .map(|a| (a.job_id, a.epoch, a.start / S))
        .collect();
    assert_eq!(starts, [(1, 1, 20), (1, 2, 50), (2, 1, 10)]);
    let notes: Vec<&str> = t.attempts.iter().map(|a| a.note.as_deref().unwrap()).collect();
    assert!(notes[0].contains(CLAIM_NOT_LOGGED) && notes[0].contains("the job's creation"));
    assert!(notes[1].contains("the previous event"), "{}", notes[1]);
    assert!(notes[2].contains("the picture's start"), "{}", notes[2]);
    // The first wait of job 1 (from 20) and the reap's (from 50) end at
    // unknown claims: neither is drawn.
    assert!(t.waits.is_empty(), "{:?}", t.waits);
    assert_eq!(t.attempts[0].lane, "w1");
    assert_eq!(t.attempts[2].lane, UNKNOWN_LANE);
}

/// Guards: cancels and requeues end an attempt known to be running, and
/// infer none (they do not say whether the job was running).
#[test]
fn cancels_and_requeues_end_only_known_attempts() {
    let t = reconstruct(
        &frame(100),
        &[
            claim(0, "w1", 1, 1),
            TimelineEvent::Cancelled {
                at: 10 * S,
                job: 1,
                epoch: None,
            },
            claim(0, "w2", 2, 1),
            TimelineEvent::Requeued {
                at: 20 * S,
                job: 2,
                epoch: 1,
            },
            TimelineEvent::Cancelled {
                at: 30 * S,
                job: 3,
                epoch: Some(4),
            },
            TimelineEvent::Requeued {
                at: 30 * S,
                job: 4,
                epoch: 2,
            },
        ],
    );
    assert_eq!(
        bars(&t),
        [
            ("w1", 0, 10, Outcome::Cancelled),
            ("w2", 0, 20, Outcome::LeaseLost)
        ]
    );
    assert_eq!(waits(&t), [(2, 20, 100), (4, 30, 100)]);
    assert_eq!(t.waits[0].reason, "requeued by an operator, waiting for a claim");
}

/// Guards: waits that begin while no worker had a free slot say so.
#[test]
fn a_wait_without_capacity_says_so() {
    let t = reconstruct(
        &frame(100),
        &[
            TimelineEvent::Capacity { at: 0, free: false },
            created(5, 1, Some(5)),
            TimelineEvent::Capacity {
                at: 20 * S,
                free: true,
            },
            created(30, 2, Some(30)),
            claim(40, "w1", 1, 1),
            claim(40, "w1", 2, 1),
        ],
    );
    assert_eq!(
        t.waits[0].reason,
        "due, waiting for capacity (no worker had a free slot)"
    );
    assert_eq!(t.waits[1].reason, "due, waiting for its first claim");
}

/// Guards: bars and waits are cut to the frame; an attempt wholly before it
/// is dropped; one claimed before it says so.
#[test]
fn everything_is_cut_to_the_frame() {
    let t = reconstruct(
        &Frame::new("t", 50 * S, 100 * S),
        &[
            claim(0, "w1", 1, 1),
            ended(10, 1, 1, Finish::Succeeded),
            created(0, 2, Some(0)),
            claim(40, "w1", 2, 1),
            ended(120, 2, 1, Finish::Succeeded),
            created(30, 3, Some(30)),
        ],
    );
    assert_eq!(bars(&t), [("w1", 50, 100, Outcome::Succeeded)]);
    assert!(t.attempts[0]
        .note
        .as_deref()
        .unwrap()
        .contains("before the picture's start"));
    assert_eq!(waits(&t), [(3, 50, 100)]);
}

/// Guards: the frame's lanes come first in their order (busy or not), then
/// any other worker seen, in name order.
#[test]
fn lanes_keep_the_frame_order_then_sort_the_rest() {
    let mut f = frame(10);
    f.lanes = vec!["z".into(), "a".into()];
    let t = reconstruct(
        &f,
        &[
            claim(0, "m", 1, 1),
            claim(0, "b", 2, 1),
            TimelineEvent::Mark(Mark {
                lane: Some("c".into()),
                kind: MarkKind::Restart,
                at: 0,
                end: None,
                note: None,
            }),
        ],
    );
    assert_eq!(t.lanes, ["z", "a", "b", "c", "m"]);
}

/// Guards: a second claim of one epoch changes nothing, and the same events
/// always give the same picture.
#[test]
fn a_repeated_claim_is_ignored_and_output_is_deterministic() {
    let events = [
        claim(0, "w1", 1, 1),
        claim(5, "w2", 1, 1),
        ended(10, 1, 1, Finish::Released),
    ];
    let t = reconstruct(&frame(100), &events);
    assert_eq!(bars(&t), [("w1", 0, 10, Outcome::Released)]);
    assert_eq!(waits(&t), [(1, 10, 100)]);
    assert_eq!(t, reconstruct(&frame(100), &events));
}

/// Guards: an end at epoch 0 (never claimed) infers no attempt, but the job
/// is no longer due.
#[test]
fn an_end_at_epoch_zero_draws_no_bar() {
    let t = reconstruct(
        &frame(100),
        &[created(0, 1, Some(0)), ended(30, 1, 0, Finish::Dead)],
    );
    assert!(t.attempts.is_empty());
    assert_eq!(waits(&t), [(1, 0, 30)]);
}
