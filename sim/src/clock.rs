//! Simulated time for every host: turmoil's elapsed time plus a fixed base.
//!
//! `tokio::time::Instant` starts afresh in every host runtime (and again when a
//! host is bounced), so it cannot be the shared time line. turmoil's
//! `sim_elapsed` is the same for every host and survives restarts; adding a
//! fixed base gives every host, and the database, one deterministic calendar.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stuckless_core::{Clock, Timestamp};

/// The simulation's calendar origin: 2026-01-01T00:00:00Z, fixed so traces
/// print the same dates on every run.
pub const BASE: Timestamp = Timestamp::from_secs(1_767_225_600);

/// The simulated elapsed time as the driver last saw it, shared with clocks
/// read outside any host (by the driver and the oracle).
#[derive(Clone, Debug, Default)]
pub struct DriverTime(Arc<AtomicU64>);

impl DriverTime {
    /// Records the driver's view of elapsed time.
    pub fn set(&self, elapsed: Duration) {
        self.0.store(elapsed.as_micros() as u64, Ordering::SeqCst);
    }

    /// The driver's view of elapsed time.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::SeqCst))
    }
}

/// A host's clock: [`BASE`] + simulated elapsed time + this host's skew.
#[derive(Clone, Debug)]
pub struct SimClock {
    skew_micros: Arc<AtomicI64>,
    driver: DriverTime,
}

impl SimClock {
    /// A clock with the given shared skew (microseconds; negative is behind).
    pub fn new(skew_micros: Arc<AtomicI64>, driver: DriverTime) -> Self {
        SimClock { skew_micros, driver }
    }

    /// A clock with no skew: the database's.
    pub fn exact(driver: DriverTime) -> Self {
        Self::new(Arc::new(AtomicI64::new(0)), driver)
    }

    /// Simulated elapsed time: the running host's view inside a host (finer
    /// than a tick), else the driver's.
    pub fn elapsed(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_else(|| self.driver.get())
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let at = BASE + self.elapsed();
        Timestamp::from_micros(
            at.as_micros()
                .saturating_add(self.skew_micros.load(Ordering::SeqCst)),
        )
    }

    async fn sleep(&self, duration: Duration) {
        // Host runtimes run on paused tokio time that turmoil advances tick by
        // tick, so a tokio sleep is a simulated sleep.
        tokio::time::sleep(duration).await
    }
}
