//! Whether LISTEN/NOTIFY works through this connection path, checked once
//! at a worker's start-up.
//!
//! A transaction pooler (pgbouncer in transaction mode, Supabase's Supavisor
//! on port 6543) hands each transaction to whichever server connection is
//! free: the `LISTEN` registers on one server connection and the
//! notifications go to that connection, not to the client that asked, so
//! wake-ups never arrive. The probe listens on a fresh channel, notifies it
//! from another connection of the pool, and waits briefly. If nothing comes,
//! the worker should poll often instead of relying on wake-ups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::PgError;

/// What the probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyProbe {
    /// The notification came back to the listener.
    Delivered,
    /// Nothing arrived within the wait.
    NotDelivered {
        /// How long the probe waited.
        waited: Duration,
    },
}

/// How long the probe waits by default: a notification on a healthy link
/// arrives in milliseconds; a pooler never delivers it.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Listens on a fresh channel through a new connection of `pool`, notifies
/// it through another, and reports whether the notification arrived within
/// `wait`.
pub async fn probe_notify(pool: &PgPool, wait: Duration) -> Result<NotifyProbe, PgError> {
    let channel = probe_channel();
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(&channel).await?;
    probe_listener(&mut listener, pool, &channel, wait).await
}

/// The probe's second half: notifies `channel` through `pool` and waits up
/// to `wait` for `listener` to receive it. Split out so a test can hand it a
/// listener that is not listening on `channel`, as happens behind a
/// transaction pooler.
pub async fn probe_listener(
    listener: &mut PgListener,
    pool: &PgPool,
    channel: &str,
    wait: Duration,
) -> Result<NotifyProbe, PgError> {
    sqlx::query("select pg_notify($1, 'probe')")
        .bind(channel)
        .execute(pool)
        .await?;
    match tokio::time::timeout(wait, listener.recv()).await {
        Ok(Ok(n)) if n.channel() == channel => Ok(NotifyProbe::Delivered),
        Ok(Ok(_)) => Ok(NotifyProbe::NotDelivered { waited: wait }),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Ok(NotifyProbe::NotDelivered { waited: wait }),
    }
}

/// A channel no one else listens on: this process's id, the wall clock's
/// nanoseconds (containers all run as pid 1) and a counter.
pub fn probe_channel() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "stuckless_probe_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
