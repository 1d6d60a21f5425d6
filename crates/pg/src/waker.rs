//! `PgWaker`: wake-ups from Postgres `LISTEN stuckless_jobs`.
//!
//! Every insert into `stuckless.jobs` (and every release, requeue and reap
//! that makes a job due again) notifies channel [`CHANNEL`] with the queue
//! name. A notification is only a hint: while the listening connection is down
//! notifications are lost, so the worker's slow poll stays the safety net, and
//! the waker fires once after every (re)connect so nothing sent meanwhile is
//! waited for until the next poll.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use stuckless_core::{NotifyWaker, Waker};
use tokio::task::JoinHandle;

/// The channel every enqueue notifies; the payload is the queue name.
pub const CHANNEL: &str = "stuckless_jobs";

/// Backoff between reconnection attempts: doubling from the first to the last.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A [`Waker`] fed by Postgres notifications, reconnecting on its own.
pub struct PgWaker {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

struct Inner {
    waker: NotifyWaker,
    connected: AtomicBool,
    connections: AtomicU64,
    queues: Vec<String>,
}

impl PgWaker {
    /// Starts listening through a connection of `pool`; wakes for
    /// notifications about any of `queues` (all queues when empty). Spawns
    /// its listener task, so call it inside a tokio runtime.
    pub fn start(pool: PgPool, queues: Vec<String>) -> Arc<PgWaker> {
        let inner = Arc::new(Inner {
            waker: NotifyWaker::new(),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            queues,
        });
        let task = tokio::spawn(listen_forever(pool, inner.clone()));
        Arc::new(PgWaker { inner, task })
    }

    /// Starts listening on a new pool to `url` (connections open lazily, so an
    /// unreachable server shows as `is_connected() == false`, not an error).
    pub fn start_url(url: &str, queues: Vec<String>) -> Result<Arc<PgWaker>, crate::PgError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(url)
            .map_err(|e| crate::PgError::BadUrl {
                reason: e.to_string(),
            })?;
        Ok(PgWaker::start(pool, queues))
    }

    /// Whether the LISTEN connection is up right now: a readiness probe.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// How many times the LISTEN connection has been established (1 after the
    /// first connect; each reconnect adds one): for metrics and tests.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Fires the waker by hand (e.g. an HTTP `/wake`).
    pub fn wake(&self) {
        self.inner.waker.wake();
    }
}

impl Drop for PgWaker {
    fn drop(&mut self) {
        // The listener task holds only `Inner`; without this it would run on
        // after every handle to the waker is gone.
        self.task.abort();
    }
}

impl std::fmt::Debug for PgWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWaker")
            .field("connected", &self.is_connected())
            .field("queues", &self.inner.queues)
            .finish()
    }
}

#[async_trait]
impl Waker for PgWaker {
    async fn wait(&self) {
        self.inner.waker.wait().await
    }
}

async fn listen_forever(pool: PgPool, inner: Arc<Inner>) {
    let mut backoff = BACKOFF_START;
    loop {
        match listen_once(&pool, &inner).await {
            // The connection was up and then dropped: reconnect promptly, but
            // not in a tight loop if the server keeps dropping us at once.
            Ok(()) => {
                backoff = BACKOFF_START;
                tokio::time::sleep(BACKOFF_START).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "stuckless LISTEN connection failed");
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
            }
        }
        inner.connected.store(false, Ordering::SeqCst);
    }
}

/// The wait before the next attempt after one failed: doubled, capped, so a
/// server that refuses connections is not hammered.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(BACKOFF_MAX)
}

/// One connection's life: connect, LISTEN, forward notifications until the
/// connection drops (`Ok`) or cannot be made (`Err`).
async fn listen_once(pool: &PgPool, inner: &Inner) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is ours to do (with backoff and the connected flag), not
    // the listener's silent one.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    inner.connections.fetch_add(1, Ordering::SeqCst);
    inner.connected.store(true, Ordering::SeqCst);
    // Anything sent while we were not listening is lost: wake once so the
    // worker looks now rather than at its next poll.
    inner.waker.wake();
    loop {
        match listener.try_recv().await? {
            Some(notification) => {
                if inner.queues.is_empty() || inner.queues.iter().any(|q| q == notification.payload()) {
                    inner.waker.wake();
                }
            }
            None => {
                inner.connected.store(false, Ordering::SeqCst);
                inner.waker.wake();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards a cargo-mutants survivor (`/` for `*` in the backoff): from
    /// 100 ms the LISTEN reconnect waits double up to 5 s, never shrink.
    #[test]
    fn the_reconnect_backoff_doubles_up_to_its_cap() {
        let mut waits = vec![BACKOFF_START];
        while waits.len() < 10 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
    }
}
