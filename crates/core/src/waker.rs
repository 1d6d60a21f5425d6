//! Wake-ups: "new work may be available".
//!
//! Notifications can be lost (a dropped LISTEN connection, a lost packet), so
//! a wake-up is only a hint: the worker also polls on a slow interval.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

/// A source of wake-ups for a worker.
#[async_trait]
pub trait Waker: Send + Sync + 'static {
    /// Completes when new work may be available; may complete spuriously.
    async fn wait(&self);
}

/// A waker fired by hand: by a NOTIFY listener, an HTTP `/wake`, a test.
///
/// A wake with nobody waiting is kept (one permit), so a wake between two
/// waits is not lost.
#[derive(Clone, Debug, Default)]
pub struct NotifyWaker {
    notify: Arc<Notify>,
}

impl NotifyWaker {
    /// A waker with no pending wake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiting worker, or the next one to wait.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

#[async_trait]
impl Waker for NotifyWaker {
    async fn wait(&self) {
        self.notify.notified().await
    }
}

/// A waker that never fires: the worker relies on polling alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct PollOnly;

#[async_trait]
impl Waker for PollOnly {
    async fn wait(&self) {
        std::future::pending::<()>().await
    }
}
