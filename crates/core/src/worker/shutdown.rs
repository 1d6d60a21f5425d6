//! Stopping a worker.

use std::sync::Arc;

use tokio::sync::watch;

/// How far a shutdown has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running,
    /// Stop claiming; let in-flight jobs finish within the grace period.
    Graceful,
    /// Stop claiming; cancel and release in-flight jobs now.
    Immediate,
}

/// Stops a worker. Cloneable; any clone may be used from any task.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    phase: Arc<watch::Sender<Phase>>,
}

impl ShutdownHandle {
    pub(crate) fn new() -> Self {
        ShutdownHandle {
            phase: Arc::new(watch::Sender::new(Phase::Running)),
        }
    }

    /// Starts a graceful shutdown: stop claiming, let in-flight jobs finish
    /// within the grace period, release the rest, deregister.
    pub fn graceful(&self) {
        self.advance(Phase::Graceful);
    }

    /// Shuts down at once: in-flight handlers are cancelled and their jobs
    /// released without costing an attempt. Also ends a graceful shutdown's
    /// grace period early (a second SIGTERM).
    pub fn immediate(&self) {
        self.advance(Phase::Immediate);
    }

    /// Graceful on the first call, immediate on any later one: what a
    /// process does on its first and second signal.
    pub fn escalate(&self) {
        let next = match *self.phase.borrow() {
            Phase::Running => Phase::Graceful,
            _ => Phase::Immediate,
        };
        self.advance(next);
    }

    /// Whether a shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        *self.phase.borrow() != Phase::Running
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            if to > *phase {
                *phase = to;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first signal starts a graceful shutdown and the second makes it
    /// immediate; a shutdown never steps back, and asking for the phase it
    /// is already in wakes nobody. Guards survivors of the full mutants run
    /// (`escalate`'s first arm deleted, `is_requested` constant or
    /// inverted, `>=` for `>` in `advance`).
    #[test]
    fn signals_escalate_and_never_step_back() {
        let handle = ShutdownHandle::new();
        let mut seen = handle.subscribe();
        assert!(!handle.is_requested());
        handle.escalate();
        assert!(handle.is_requested());
        assert_eq!(
            *seen.borrow_and_update(),
            Phase::Graceful,
            "the first signal is graceful"
        );
        handle.graceful();
        assert!(!seen.has_changed().unwrap(), "the same phase again wakes nobody");
        handle.escalate();
        assert_eq!(*seen.borrow_and_update(), Phase::Immediate);
        handle.graceful();
        assert_eq!(*handle.phase.borrow(), Phase::Immediate, "never back to graceful");
        assert!(!seen.has_changed().unwrap());
    }
}
