//! The recorder: writes what the observations say for people — the trace (one
//! line per operation, fault and violation), each job's history, the
//! timeline's facts — and counts operations and pickups. It judges nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use stuckless_core::driver::{CompleteOutcome, FailOutcome};
use stuckless_core::{JobId, JobStatus, Timestamp};

use crate::check::Violation;
use crate::clock::BASE;
use crate::model::Model;
use crate::observe::{Observation, Refusal};
use crate::timeline::{End, Fact};

/// A time as seconds since the run's start, to the millisecond ("12.345s";
/// a poison row's `-infinity` is about "-9223372036854.775s").
pub fn secs(at: Timestamp) -> String {
    let micros = at.micros_since(BASE);
    let sign = if micros < 0 { "-" } else { "" };
    let micros = micros.unsigned_abs();
    format!("{sign}{}.{:03}s", micros / 1_000_000, (micros % 1_000_000) / 1000)
}

/// The trace, histories, facts and counts of one run.
#[derive(Debug, Default)]
pub struct Recorder {
    trace: String,
    histories: BTreeMap<JobId, Vec<String>>,
    /// Structured facts for the timeline picture, when asked for (they cost
    /// memory a batch of seeds does not need).
    facts: Option<Vec<Fact>>,
    /// The capacity the last sample saw, so only changes become facts.
    last_capacity: Option<bool>,
    ops: u64,
    pickups: Vec<Duration>,
}

impl Recorder {
    /// A recorder keeping the trace and histories, not the facts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts keeping the structured facts the timeline is drawn from.
    pub fn keep_facts(&mut self) {
        self.facts.get_or_insert_with(Vec::new);
    }

    /// The facts kept so far (empty unless [`Recorder::keep_facts`] was called).
    pub fn facts(&self) -> &[Fact] {
        self.facts.as_deref().unwrap_or_default()
    }

    /// Claims the db answered, counted from the facts (0 unless kept).
    pub fn claims(&self) -> usize {
        self.facts()
            .iter()
            .filter(|f| matches!(f, Fact::Claimed { .. }))
            .count()
    }

    /// The full trace: one line per observed operation and fault.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Operations the db answered.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Pickup latencies the workers reported.
    pub fn pickups(&self) -> &[Duration] {
        &self.pickups
    }

    /// One job's history, oldest first.
    pub fn history(&self, id: JobId) -> Vec<String> {
        self.histories.get(&id).cloned().unwrap_or_default()
    }

    fn fact(&mut self, fact: Fact) {
        if let Some(facts) = &mut self.facts {
            facts.push(fact);
        }
    }

    fn log(&mut self, now: Timestamp, line: &str) {
        let _ = writeln!(self.trace, "{} {line}", secs(now));
    }

    /// A trace line about a job, kept in its history when the job is known.
    fn note(&mut self, known: bool, now: Timestamp, id: JobId, line: String) {
        let line = format!("{} job {id}: {line}", secs(now));
        self.trace.push_str(&line);
        self.trace.push('\n');
        if known {
            self.histories.entry(id).or_default().push(line);
        }
    }

    /// Records a violation found on the observation at `now`.
    pub fn violation(&mut self, model: &Model, now: Timestamp, v: &Violation) {
        let line = format!(
            "{} VIOLATION {} job={:?}: {}",
            secs(now),
            v.invariant.name(),
            v.job.map(|j| j.0),
            v.detail
        );
        self.trace.push_str(&line);
        self.trace.push('\n');
        if let Some(id) = v.job.filter(|id| model.knows(*id)) {
            self.histories.entry(id).or_default().push(line);
        }
    }

    /// Records one observation; `model` is the state before it.
    pub fn record(&mut self, model: &Model, observation: &Observation) {
        let known = |id: JobId| model.knows(id);
        match observation {
            Observation::Answered { .. } => self.ops += 1,
            Observation::Inserted {
                at,
                from,
                job,
                new: true,
                run_at,
                ..
            } => {
                self.fact(Fact::Inserted {
                    at: *at,
                    job: *job,
                    run_at: *run_at,
                });
                self.histories.insert(*job, Vec::new());
                self.note(
                    true,
                    *at,
                    *job,
                    format!("{from} insert run_at={} -> queued", secs(*run_at)),
                );
            }
            Observation::Inserted {
                at,
                from,
                job,
                new: false,
                ..
            } => self.note(
                known(*job),
                *at,
                *job,
                format!("{from} insert (duplicate key) -> existing"),
            ),
            Observation::WriteRefused {
                at,
                worker,
                job,
                op,
                epoch,
                in_batch,
                refusal,
                detail,
                ..
            } => {
                let line = match (in_batch, epoch) {
                    (true, Some(e)) => format!("{worker} {op} e{e} -> refused {detail}"),
                    _ => format!("{worker} {op} -> refused {detail}"),
                };
                self.note(known(*job), *at, *job, line);
                if let (Refusal::StaleEpoch | Refusal::WrongStatus, Some(epoch)) = (refusal, epoch) {
                    self.fact(Fact::Refused {
                        at: *at,
                        worker: worker.clone(),
                        job: *job,
                        epoch: *epoch,
                        op: op.clone(),
                        detail: detail.clone(),
                    });
                }
            }
            Observation::Claimed {
                at,
                worker,
                job,
                epoch,
                attempt,
                max_attempts,
                ..
            } if known(*job) => {
                self.note(
                    true,
                    *at,
                    *job,
                    format!("{worker} claim -> e{epoch} attempt {attempt}/{max_attempts}"),
                );
                self.fact(Fact::Claimed {
                    at: *at,
                    worker: worker.clone(),
                    job: *job,
                    epoch: *epoch,
                    attempt: *attempt,
                });
            }
            Observation::Completed {
                at,
                worker,
                job,
                epoch,
                outcome,
            } => {
                self.note(
                    known(*job),
                    *at,
                    *job,
                    format!("{worker} complete e{epoch} -> {outcome:?}"),
                );
                if *outcome == CompleteOutcome::Completed {
                    self.ended(*at, worker, *job, *epoch, End::Succeeded, None);
                }
            }
            Observation::Failed {
                at,
                worker,
                job,
                epoch,
                error,
                outcome,
                ..
            } => {
                self.note(
                    known(*job),
                    *at,
                    *job,
                    format!("{worker} fail e{epoch} ({error}) -> {outcome:?}"),
                );
                let end = match outcome {
                    FailOutcome::Retried { run_at } => End::Retried { run_at: *run_at },
                    FailOutcome::Dead => End::Dead,
                };
                self.ended(*at, worker, *job, *epoch, end, Some(error.clone()));
            }
            Observation::CheckpointSaved {
                at,
                worker,
                job,
                epoch,
                checkpoint,
            } => self.note(
                known(*job),
                *at,
                *job,
                format!("{worker} checkpoint e{epoch} {checkpoint}"),
            ),
            Observation::Resumed {
                at,
                worker,
                job,
                epoch,
                checkpoint,
            } => {
                let from = checkpoint
                    .as_ref()
                    .map_or("scratch".to_owned(), |c| c.to_string());
                self.note(
                    known(*job),
                    *at,
                    *job,
                    format!("{worker} e{epoch} resumes from {from}"),
                );
            }
            Observation::SectionStarted {
                at,
                worker,
                job,
                epoch,
                section,
            } => self.note(
                known(*job),
                *at,
                *job,
                format!("{worker} e{epoch} starts section {section}"),
            ),
            Observation::Released {
                at,
                worker,
                job,
                epoch,
            } => {
                self.note(
                    known(*job),
                    *at,
                    *job,
                    format!("{worker} release e{epoch} -> queued"),
                );
                self.ended(*at, worker, *job, *epoch, End::Released, None);
            }
            Observation::Reaped {
                at, by, job, dead, ..
            } => {
                if let Some(t) = model.job(*job) {
                    let holder = t.holder.clone().unwrap_or_default();
                    let epoch = t.epoch;
                    self.fact(Fact::Reaped {
                        at: *at,
                        by: by.clone(),
                        job: *job,
                        epoch,
                        holder: holder.clone(),
                        dead: *dead,
                    });
                    let to = if *dead { "dead" } else { "queued" };
                    self.note(
                        true,
                        *at,
                        *job,
                        format!("{by} reap e{epoch} (holder {holder}) -> {to}"),
                    );
                }
            }
            Observation::Cancelled { at, by, job, status } => {
                let before = model.job(*job).map(|t| t.status);
                self.note(
                    known(*job),
                    *at,
                    *job,
                    format!("{by} cancel -> {status} (was {before:?})"),
                );
                if matches!(before, Some(JobStatus::Queued | JobStatus::Running)) {
                    self.fact(Fact::Cancelled { at: *at, job: *job });
                }
            }
            Observation::AttemptStarted { pickup_latency, .. } => self.pickups.push(*pickup_latency),
            Observation::LeaseLost {
                at,
                worker,
                job,
                epoch,
                reason,
            } => self.fact(Fact::LeaseLost {
                at: *at,
                worker: worker.clone(),
                job: *job,
                epoch: *epoch,
                reason: reason.clone(),
            }),
            Observation::FaultInjected {
                at,
                fault,
                took_effect,
            } => {
                self.log(
                    *at,
                    &format!("FAULT {}", serde_json::to_string(fault).unwrap_or_default()),
                );
                if *took_effect {
                    self.fact(Fact::Fault {
                        at: *at,
                        fault: fault.clone(),
                    });
                }
            }
            Observation::Restarted { at, worker } => {
                self.log(*at, &format!("restart {worker}"));
                self.fact(Fact::Restarted {
                    at: *at,
                    worker: worker.clone(),
                });
            }
            Observation::Healed { at } => {
                self.log(*at, "HEAL");
                self.fact(Fact::Heal { at: *at });
            }
            Observation::Sampled {
                at, free_capacity, ..
            } => {
                let changed = self.last_capacity.replace(*free_capacity) != Some(*free_capacity);
                if changed {
                    self.fact(Fact::Capacity {
                        at: *at,
                        free: *free_capacity,
                    });
                }
            }
            Observation::ShutdownFinished { at, worker, .. } => {
                self.log(*at, &format!("{worker} finished its shutdown"))
            }
            Observation::Pruned {
                at,
                by,
                succeeded,
                cancelled,
                dead,
            } => self.log(
                *at,
                &format!("{by} prune -> deleted {succeeded} succeeded, {cancelled} cancelled, {dead} dead"),
            ),
            Observation::CallFailed {
                at,
                worker,
                operation,
                error,
                consecutive,
            } => self.log(
                *at,
                &format!("{worker} {operation} failed ({consecutive} in a row): {error}"),
            ),
            Observation::PoisonWritten { at, by, job, run_at } => self.note(
                known(*job),
                *at,
                *job,
                format!("{by} raw write run_at={} µs (unreadable)", run_at.as_micros()),
            ),
            Observation::Buried { at, job, error } => self.note(
                known(*job),
                *at,
                *job,
                format!("store buried it -> dead ({error})"),
            ),
            Observation::Deployed { at, worker, kinds } => self.log(
                *at,
                &format!("DEPLOY {worker} -> new release (kinds {})", kinds.join(", ")),
            ),
            _ => {}
        }
    }

    fn ended(
        &mut self,
        at: Timestamp,
        worker: &str,
        job: JobId,
        epoch: stuckless_core::Epoch,
        end: End,
        error: Option<String>,
    ) {
        self.fact(Fact::Ended {
            at,
            worker: worker.to_owned(),
            job,
            epoch,
            end,
            error,
        });
    }
}
