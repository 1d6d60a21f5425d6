//! Observations: neutral, serialisable facts about a run — what the db
//! acknowledged, what workers reported, what the driver did.
//!
//! Substrates emit observations without knowing who listens: the db host and
//! the workers push them into a [`Sink`], the world drains it in order into
//! the recorder and the checkers. The real-process harness builds the same
//! observations from Postgres rows. [`observation`] says what can be
//! observed; [`mapping`] is the one place that turns the wire protocol and
//! the worker's events into observations: when either changes, only it
//! changes.

pub mod mapping;
pub mod observation;

use std::sync::{Arc, Mutex};

pub use mapping::{from_worker_event, observations, short_name};
pub use observation::{JobRow, Observation, Refusal, UpWorker};

/// Where substrates put observations: a queue the world drains in order.
#[derive(Clone, Debug, Default)]
pub struct Sink(Arc<Mutex<Vec<Observation>>>);

impl Sink {
    /// Adds one observation.
    pub fn push(&self, observation: Observation) {
        self.0.lock().expect("sink lock").push(observation);
    }

    /// Adds several, in order.
    pub fn extend(&self, observations: impl IntoIterator<Item = Observation>) {
        self.0.lock().expect("sink lock").extend(observations);
    }

    /// Takes everything observed so far, oldest first.
    pub fn drain(&self) -> Vec<Observation> {
        std::mem::take(&mut *self.0.lock().expect("sink lock"))
    }
}
