//! Time and sleeping, behind a trait so simulations can own them.
//!
//! The worker reads time only through [`Clock`]: its heartbeat cadence,
//! backoff timers, shutdown grace and local lease deadline. Lease *expiry* is
//! never judged here; the storage's own clock does that (see
//! [`Storage`](crate::Storage)).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::time::Timestamp;

/// A source of the current time and of sleeps.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current time according to this clock.
    fn now(&self) -> Timestamp;

    /// Completes after `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);
}

/// A clock that follows tokio's timer: wall time in production, and paused or
/// simulated time under `tokio::time::pause` or turmoil.
///
/// `now` is a fixed starting instant plus the tokio time elapsed since the
/// clock was made, so under paused time it advances exactly as the timers do.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: Timestamp,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the system's wall time.
    ///
    /// This is the one place in the core that reads the system clock; tests
    /// and simulations use [`TokioClock::starting_at`] instead.
    pub fn system() -> Self {
        #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Self::starting_at(Timestamp::from_micros(micros))
    }

    /// A clock that reads `start` now and advances with tokio time.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            start,
            started: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start + self.started.elapsed()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

/// A clock that moves only when told to; for pinning a store's time in tests.
///
/// `sleep` advances the clock by the requested duration and returns at once,
/// so code that sleeps on a `ManualClock` never waits for real time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Sets the time; it may move backwards.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock") = to;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now = *now + by;
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }

    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}

/// A clock that reads another clock shifted by a fixed offset: clock skew.
#[derive(Clone)]
pub struct SkewedClock<C> {
    inner: C,
    offset_micros: Arc<std::sync::atomic::AtomicI64>,
}

impl<C: Clock> SkewedClock<C> {
    /// `inner` shifted by `offset_micros` (negative: behind).
    pub fn new(inner: C, offset_micros: i64) -> Self {
        SkewedClock {
            inner,
            offset_micros: Arc::new(std::sync::atomic::AtomicI64::new(offset_micros)),
        }
    }

    /// Changes the offset; clones of this clock see the change.
    pub fn set_offset_micros(&self, offset_micros: i64) {
        self.offset_micros
            .store(offset_micros, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl<C: Clock> Clock for SkewedClock<C> {
    fn now(&self) -> Timestamp {
        let offset = self.offset_micros.load(std::sync::atomic::Ordering::SeqCst);
        Timestamp::from_micros(self.inner.now().as_micros().saturating_add(offset))
    }

    async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await
    }
}

#[async_trait]
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }

    async fn sleep(&self, duration: Duration) {
        (**self).sleep(duration).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_secs(100));
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Timestamp::from_secs(105));
    }

    #[tokio::test]
    async fn manual_clock_sleep_advances() {
        let clock = ManualClock::new(Timestamp::from_secs(1));
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Timestamp::from_micros(2_500_000));
        clock.set(Timestamp::from_secs(0));
        assert_eq!(clock.now(), Timestamp::UNIX_EPOCH);
    }

    #[tokio::test(start_paused = true)]
    async fn skewed_clock_shifts_reading_not_sleeps() {
        let base = TokioClock::starting_at(Timestamp::from_secs(100));
        let skewed = SkewedClock::new(base.clone(), -5_000_000);
        assert_eq!(skewed.now(), Timestamp::from_secs(95));
        skewed.sleep(Duration::from_secs(1)).await;
        assert_eq!(base.now(), Timestamp::from_secs(101));
        skewed.set_offset_micros(0);
        assert_eq!(skewed.now(), Timestamp::from_secs(101));
    }
}
