//! The resumable job: a report written in sections, one API call each, with
//! a checkpoint after every section, as a long report generation would. An
//! attempt resumes after the last section its claim's checkpoint records,
//! and says so ([`Observation::Resumed`], [`Observation::SectionStarted`]),
//! so the checkpoint checker can tell a redone section from a new one.

use serde_json::json;
use stuckless_core::{CheckpointError, Clock, JobContext, JobError};

use crate::api::{self, ApiReply};
use crate::check::checkpoints::section_of;
use crate::clock::SimClock;
use crate::observe::{Observation, Sink};

/// Most sections a job of the workload has.
pub const MAX_SECTIONS: u64 = 4;

/// How many sections `ctx`'s job has: `payload.sections`, or `None` for a
/// plain one-call job.
pub fn sections(ctx: &JobContext) -> Option<u64> {
    ctx.payload().get("sections").and_then(|s| s.as_u64())
}

/// Runs the sections left after the handed-over checkpoint, one API call
/// each, checkpointing `{"section": k}` after each.
pub async fn handler(
    ctx: JobContext,
    total: u64,
    observer: Sink,
    worker: String,
    clock: SimClock,
) -> Result<(), JobError> {
    let handed = ctx.last_checkpoint();
    observer.push(Observation::Resumed {
        at: clock.now(),
        worker: worker.clone(),
        job: ctx.id(),
        epoch: ctx.epoch(),
        checkpoint: handed.clone(),
    });
    let done = handed.as_ref().and_then(section_of).unwrap_or(0);
    for section in done + 1..=total {
        observer.push(Observation::SectionStarted {
            at: clock.now(),
            worker: worker.clone(),
            job: ctx.id(),
            epoch: ctx.epoch(),
            section,
        });
        ctx.report_progress(json!({"section": section, "of": total}));
        let reply = tokio::select! {
            biased;
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
            reply = api::call(ctx.id(), ctx.epoch(), section, false) => reply,
        };
        match reply {
            Ok(ApiReply::Ok) => {}
            other => return api::outcome(other),
        }
        // Not confirmed (a lost reply): end the attempt rather than guess;
        // the next one resumes from whatever the db kept.
        match ctx.checkpoint(json!({"section": section})).await {
            Ok(_) => {}
            Err(CheckpointError::LeaseLost(e)) => return Err(JobError::retryable(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
