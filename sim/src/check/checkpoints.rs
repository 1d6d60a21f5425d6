//! Invariant 9, checkpoints: no checkpoint written by a stale epoch is ever
//! visible, and a job interrupted after section k never redoes a section
//! ≤ k once the db acknowledged k's checkpoint.
//!
//! Fed by what the db accepted ([`Observation::CheckpointSaved`]) and what
//! the simulator's sectioned handlers report: the checkpoint each attempt
//! was handed ([`Observation::Resumed`]) and each section they start
//! ([`Observation::SectionStarted`]).

use std::collections::BTreeMap;

use serde_json::Value;
use stuckless_core::{Epoch, JobId, JobStatus};

use super::{Checker, Finding, Invariant};
use crate::model::Model;
use crate::observe::Observation;

/// The checkpoint checker; it remembers each job's latest accepted checkpoint.
#[derive(Debug, Default)]
pub struct Checkpoints {
    /// Per job: the latest checkpoint the db accepted, and its epoch.
    saved: BTreeMap<JobId, (Epoch, Value)>,
}

/// The section a sectioned handler's checkpoint records: `{"section": k}`.
pub fn section_of(checkpoint: &Value) -> Option<u64> {
    checkpoint.get("section").and_then(Value::as_u64)
}

impl Checker for Checkpoints {
    fn check(&mut self, model: &Model, observation: &Observation, found: &mut Vec<Finding>) {
        match observation {
            Observation::CheckpointSaved {
                worker,
                job,
                epoch,
                checkpoint,
                ..
            } => {
                if let Some(t) = model.job(*job) {
                    if t.epoch != *epoch || t.status != JobStatus::Running {
                        found.push((
                            Invariant::StaleCheckpointVisible,
                            Some(*job),
                            format!(
                                "checkpoint {checkpoint} from {worker} at epoch {epoch} accepted; the job is {} at epoch {}",
                                t.status, t.epoch
                            ),
                        ));
                    }
                }
                self.saved.insert(*job, (*epoch, checkpoint.clone()));
            }
            Observation::Resumed {
                worker,
                job,
                epoch,
                checkpoint: Some(handed),
                ..
            } => {
                // Handed nothing while one was saved: the redo shows as
                // `SectionRedone` when the handler starts over.
                let latest = self.saved.get(job);
                if latest.map(|(_, v)| v) != Some(handed) {
                    let latest = latest.map_or("none".to_owned(), |(e, v)| format!("{v} (epoch {e})"));
                    found.push((
                        Invariant::StaleCheckpointVisible,
                        Some(*job),
                        format!(
                            "{worker}'s attempt at epoch {epoch} was handed checkpoint {handed}; the latest accepted is {latest}"
                        ),
                    ));
                }
            }
            Observation::SectionStarted {
                worker,
                job,
                epoch,
                section,
                ..
            } => {
                let Some((saved_by, checkpoint)) = self.saved.get(job) else {
                    return;
                };
                let done = section_of(checkpoint).unwrap_or(0);
                if *section <= done {
                    found.push((
                        Invariant::SectionRedone,
                        Some(*job),
                        format!(
                            "{worker} started section {section} at epoch {epoch}; section {done}'s checkpoint was acknowledged at epoch {saved_by}"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}
