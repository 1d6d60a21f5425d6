//! Faults at planned times, on top of the random ones: Postgres restarts
//! (only on the run's own cluster) and a `pg_terminate_backend` of every
//! worker connection at once. Each is followed by the outage checks of
//! [`crate::outage`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::Rng;

use super::Run;
use crate::cluster::{Cluster, StopMode};
use crate::outage::{self, Answers, Outage, Watched};
use tokio_util::sync::CancellationToken;

/// The longest a planned fault waits for a healthy worker to watch.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(10);

/// A planned fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Stop Postgres with this mode, keep it down this long, start it.
    Restart(StopMode, Duration),
    /// `pg_terminate_backend` every worker connection.
    TerminateAll,
}

/// What one planned fault did, for the report.
#[derive(Clone, Debug)]
pub struct OutageReport {
    /// `restart_fast`, `restart_immediate` or `terminate_all`.
    pub kind: &'static str,
    /// From the start of the stop to the server accepting connections again.
    pub down: Duration,
    /// Workers that were healthy when it began, and so were watched.
    pub watched: usize,
    /// The slowest watched worker's reconnection (None if one never did).
    pub slowest_reconnect: Option<Duration>,
    /// Watched `stuckless worker`s, and how many of them answered 503 while down.
    pub readyz: (usize, usize),
}

impl OutageReport {
    /// The report line.
    pub fn line(&self) -> String {
        format!(
            "outage kind={} down_ms={} watched={} slowest_reconnect_ms={} readyz_503={}/{}",
            self.kind,
            self.down.as_millis(),
            self.watched,
            self.slowest_reconnect
                .map_or("never".to_owned(), |d| d.as_millis().to_string()),
            self.readyz.1,
            self.readyz.0
        )
    }
}

/// The plan: `restarts` restarts and `terminations` mass terminations, in a
/// seeded order, spread evenly over `duration` (none in its first or last
/// stretch, so workers are up before and the run sees the recovery after).
pub fn plan(
    rng: &mut impl Rng,
    duration: Duration,
    restarts: u32,
    terminations: u32,
    down: (Duration, Duration),
) -> Vec<(Duration, Planned)> {
    let mut kinds: Vec<Planned> = (0..restarts)
        .map(|_| {
            let mode = if rng.random_bool(0.5) {
                StopMode::Fast
            } else {
                StopMode::Immediate
            };
            let (lo, hi) = (down.0.as_millis() as u64, down.1.as_millis() as u64);
            let ms = rng.random_range(lo..=hi.max(lo));
            Planned::Restart(mode, Duration::from_millis(ms))
        })
        .chain((0..terminations).map(|_| Planned::TerminateAll))
        .collect();
    kinds.shuffle(rng);
    let n = kinds.len() as u32;
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| (duration * (i as u32 + 1) / (n + 1), k))
        .collect()
}

/// Microseconds since the Unix epoch on this machine's clock.
fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Run<'_> {
    /// The database clock's offset from this machine's, µs (measured once at
    /// the start: outage times are taken while the database cannot be asked).
    pub(super) async fn measure_clock_offset(&mut self) -> anyhow::Result<()> {
        let before = wall_us();
        let db = self.db_now().await?;
        let after = wall_us();
        self.clock_offset_us = db - (before + after) / 2;
        Ok(())
    }

    /// Now on the database clock, computed from this machine's.
    fn db_clock(&self) -> i64 {
        wall_us() + self.clock_offset_us
    }

    /// The healthy workers, to watch through an outage.
    async fn watch_list(&mut self) -> Vec<Watched> {
        let mut watched = Vec::new();
        for i in 0..self.slots.len() {
            if !self.slots[i].healthy() {
                continue;
            }
            let worker_id = self.slots[i].worker_id.clone();
            let http = match self.config.worker {
                super::WorkerCommand::Cli(_) => outage::http_address(self.db.pool(), &worker_id).await,
                super::WorkerCommand::Harness(_) => None,
            };
            watched.push(Watched {
                application_name: format!("{}{}", self.slots[i].app_name(), self.slots[i].generation),
                worker_id,
                http,
            });
        }
        watched
    }

    /// Whether a planned fault due at `due` should wait: while no worker is
    /// healthy (all faulted at once) there is no one to watch recover, so it
    /// waits for one, up to [`MAX_DEFERRAL`].
    pub(super) fn defer_planned(&self, due: Instant) -> bool {
        !self.slots.iter().any(|s| s.healthy()) && due.elapsed() < MAX_DEFERRAL
    }

    /// Applies one planned fault and checks the recovery.
    pub(super) async fn apply_planned(&mut self, planned: Planned) -> anyhow::Result<()> {
        let watched = self.watch_list().await;
        let from_us = self.db_clock();
        let began = Instant::now();
        // `new_since`: a worker backend that started at or after it is a
        // reconnection. It must be taken before the server can accept
        // connections: `back_us` comes after the last /readyz round, which can
        // take seconds, and a worker that reconnected in between (LISTEN
        // backoff, a claim) would then have no backend "after the return"
        // while idle: the chaos_short failure of seed 20261129 under load.
        let (kind, readyz, new_since) = match planned {
            Planned::Restart(mode, down_for) => {
                let cluster = self
                    .cluster
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("a restart needs the run's own cluster"))?;
                let (cluster, stopped) = blocking(cluster, move |c| c.stop(mode)).await?;
                self.cluster = Some(cluster);
                stopped?;
                // Probe from the stop until the server accepts connections
                // again (crash recovery after an immediate stop included).
                let stop_probing = CancellationToken::new();
                let probing = tokio::spawn(outage::probe_until(watched.clone(), stop_probing.clone()));
                tokio::time::sleep_until((began + down_for).into()).await;
                let starting_us = self.db_clock();
                let cluster = self.cluster.take().expect("put back above");
                let (cluster, started) = blocking(cluster, Cluster::start_again).await?;
                self.cluster = Some(cluster);
                stop_probing.cancel();
                let seen = probing.await.context("readyz probes")?;
                started.context("starting Postgres again")?;
                let kind = match mode {
                    StopMode::Fast => "restart_fast",
                    StopMode::Immediate => "restart_immediate",
                };
                (kind, seen, starting_us)
            }
            Planned::TerminateAll => {
                // Every backend that existed when the statement ran is gone,
                // so one that started after `from_us` and is there now is new.
                self.db.terminate_all_but_harness().await?;
                ("terminate_all", vec![Answers::default(); watched.len()], from_us)
            }
        };
        let down = began.elapsed();
        let back_us = self.db_clock();
        self.outages.push(Outage { from_us, back_us });
        let recovery = outage::await_recovery(self.db.pool(), &watched, new_since).await;
        let took: Vec<Option<Duration>> = recovery.iter().map(|r| r.took).collect();
        for (w, r) in watched.iter().zip(&recovery) {
            if r.took.is_none() {
                let missing = if r.reconnected {
                    "/readyz never answered 200"
                } else {
                    "no connection newer than the outage"
                };
                self.violations.push(format!(
                    "reconnect: {} not recovered within {:?} after {kind}: {missing}",
                    w.worker_id,
                    outage::RECONNECT_BOUND
                ));
            }
        }
        let probed: Vec<(&Watched, Answers)> = watched
            .iter()
            .zip(readyz.iter().copied())
            .filter(|(w, _)| w.http.is_some())
            .collect();
        if kind != "terminate_all" {
            for (w, answers) in &probed {
                if answers.not_ready == 0 {
                    self.violations.push(format!(
                        "readyz: {} never answered 503 while Postgres was down ({kind}, down {down:?}): {answers:?}",
                        w.worker_id
                    ));
                }
            }
        }
        let slowest = if took.iter().all(Option::is_some) {
            took.iter().flatten().max().copied().or(Some(Duration::ZERO))
        } else {
            None
        };
        self.outage_reports.push(OutageReport {
            kind,
            down,
            watched: watched.len(),
            slowest_reconnect: slowest,
            readyz: (
                probed.len(),
                probed.iter().filter(|(_, a)| a.not_ready > 0).count(),
            ),
        });
        *self.faults.entry(kind).or_default() += 1;
        Ok(())
    }
}

/// Runs a blocking cluster operation off the async threads (pg_ctl waits for
/// the server), handing the cluster back with the result.
async fn blocking<T: Send + 'static>(
    mut cluster: Cluster,
    op: impl FnOnce(&mut Cluster) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<(Cluster, anyhow::Result<T>)> {
    tokio::task::spawn_blocking(move || {
        let result = op(&mut cluster);
        (cluster, result)
    })
    .await
    .context("cluster task")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_plan_spreads_every_fault_inside_the_run() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let d = Duration::from_secs(60);
        let down = (Duration::from_secs(3), Duration::from_secs(6));
        let plan = plan(&mut rng, d, 3, 2, down);
        assert_eq!(plan.len(), 5);
        let restarts = plan
            .iter()
            .filter(|(_, p)| matches!(p, Planned::Restart(..)))
            .count();
        assert_eq!(restarts, 3);
        for w in plan.windows(2) {
            assert!(w[0].0 < w[1].0, "in time order: {plan:?}");
        }
        assert_eq!(plan[0].0, Duration::from_secs(10));
        assert_eq!(plan[4].0, Duration::from_secs(50));
        for (_, p) in &plan {
            if let Planned::Restart(_, t) = p {
                assert!(*t >= down.0 && *t <= down.1, "{t:?}");
            }
        }
    }
}
