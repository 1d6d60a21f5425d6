//! The chaos orchestrator: real worker processes, each behind its own fault
//! proxy, a seeded schedule of faults, and the end-of-run checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stuckless_core::{Client, NewJob};
use stuckless_pg::PgStorage;

use crate::checks::{self, Bounds};
use crate::cluster::Cluster;
use crate::db::RunDb;
use crate::outage::Outage;
use crate::process::{ChildGuard, Signal};
use crate::proxy::{Fault, FaultProxy};
use crate::recorder::Recorder;
use crate::recording::CHAOS_KIND;
use anyhow::Context;

mod scheduled;
mod shutdown;

pub use crate::chaos_config::{ChaosConfig, ChaosReport, FaultKind, Server, WorkerCommand};
pub use scheduled::{plan, OutageReport, Planned};

/// What a slot is waiting for.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// SIGCONT the zombie.
    Cont,
    /// End the black hole (and cut, so clients reconnect cleanly).
    Heal,
    /// End the latency.
    ClearLatency,
    /// Start a new worker in the slot.
    Respawn,
    /// A SIGTERMed worker must exit by then.
    TermExit,
}

struct Slot {
    index: usize,
    proxy: FaultProxy,
    child: Option<ChildGuard>,
    generation: u32,
    worker_id: String,
    pending: Option<(Instant, Pending)>,
    /// Database time of the latest SIGTERM.
    term_at: Option<i64>,
    /// The worker log's length when SIGTERM was sent.
    term_log_len: u64,
}

impl Slot {
    fn app_name(&self) -> String {
        format!("chaos-w{}-", self.index)
    }

    fn log(&self, config: &ChaosConfig) -> std::path::PathBuf {
        config.log_dir.join(format!("{}.log", self.worker_id))
    }

    fn healthy(&self) -> bool {
        self.pending.is_none() && self.child.is_some()
    }
}

struct Run<'a> {
    config: &'a ChaosConfig,
    db: &'a RunDb,
    recorder: Recorder,
    rng: ChaCha8Rng,
    slots: Vec<Slot>,
    faults: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
    notes: Vec<String>,
    workers_started: u64,
    /// The run's own cluster (None on an existing server, or while a
    /// blocking operation holds it).
    cluster: Option<Cluster>,
    /// Planned faults still to come, soonest first.
    planned: Vec<(Instant, Planned)>,
    /// Outages so far, on the database clock.
    outages: Vec<Outage>,
    outage_reports: Vec<OutageReport>,
    /// Database clock minus this machine's, µs.
    clock_offset_us: i64,
}

impl Run<'_> {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.worker_id = format!("w{}-g{}", slot.index, slot.generation);
        let url = self.db.url_via(
            slot.proxy.addr(),
            &format!("{}{}", slot.app_name(), slot.generation),
        );
        let (args, envs) = self
            .config
            .worker
            .command(self.config, &url, &slot.worker_id, &self.recorder);
        let log = self.config.log_dir.join(format!("{}.log", slot.worker_id));
        slot.child = Some(ChildGuard::spawn(
            slot.worker_id.clone(),
            self.config.worker.program(),
            &args,
            &envs,
            &log,
        )?);
        self.workers_started += 1;
        Ok(())
    }

    fn count(&mut self, kind: FaultKind) {
        *self.faults.entry(kind.name()).or_default() += 1;
    }

    fn jitter(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = lo.as_millis() as u64;
        let hi_ms = (hi.as_millis() as u64).max(lo_ms);
        Duration::from_millis(self.rng.random_range(lo_ms..=hi_ms))
    }

    /// The database clock, µs.
    async fn db_now(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar("select stuckless.to_micros(clock_timestamp())")
            .fetch_one(self.db.pool())
            .await
            .context("reading the database clock")
    }

    /// Applies a slot's due pending action (or any, when `force`).
    async fn settle_slot(&mut self, i: usize, now: Instant, force: bool) -> anyhow::Result<()> {
        let Some((at, pending)) = self.slots[i].pending else {
            return Ok(());
        };
        let exited = match self.slots[i].child.as_mut() {
            Some(child) => child.try_exit()?,
            None => None,
        };
        if matches!(pending, Pending::TermExit) {
            if let Some(status) = exited {
                let worker_id = self.slots[i].worker_id.clone();
                if !status.success() {
                    self.violations.push(format!(
                        "graceful shutdown: {worker_id} exited with {status} after SIGTERM"
                    ));
                }
                let term_at = self.slots[i].term_at.take().unwrap_or(i64::MAX);
                let log_len = self.slots[i].term_log_len;
                self.check_left_running(&worker_id, term_at, log_len).await?;
                self.slots[i].child = None;
                self.slots[i].pending = None;
                self.spawn(i)?;
                return Ok(());
            }
            if now >= at || force {
                let worker_id = self.slots[i].worker_id.clone();
                if now >= at {
                    self.violations.push(format!(
                        "graceful shutdown: {worker_id} still running {:?} after SIGTERM",
                        self.config.shutdown_grace + self.config.storage_timeout * 2
                    ));
                }
                if let Some(child) = self.slots[i].child.as_mut() {
                    child.kill().await?;
                }
                self.slots[i].child = None;
                self.slots[i].pending = None;
                self.spawn(i)?;
            }
            return Ok(());
        }
        if now < at && !force {
            return Ok(());
        }
        self.slots[i].pending = None;
        match pending {
            Pending::Cont => {
                if let Some(child) = self.slots[i].child.as_mut() {
                    child.signal(Signal::Cont)?;
                }
            }
            Pending::Heal => self.slots[i].proxy.heal(),
            Pending::ClearLatency => self.slots[i].proxy.set_fault(Fault::None),
            Pending::Respawn => self.spawn(i)?,
            Pending::TermExit => unreachable!("handled above"),
        }
        Ok(())
    }

    /// Restarts workers that exited without being told to.
    fn check_unexpected_exits(&mut self) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            if self.slots[i].pending.is_some() {
                continue;
            }
            let status = match self.slots[i].child.as_mut() {
                Some(child) => child.try_exit()?,
                None => continue,
            };
            if let Some(status) = status {
                let id = self.slots[i].worker_id.clone();
                self.violations
                    .push(format!("unexpected exit: {id} exited on its own with {status}"));
                self.slots[i].child = None;
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    async fn inject(&mut self) -> anyhow::Result<()> {
        let kinds = [
            FaultKind::Kill,
            FaultKind::Zombie,
            FaultKind::Term,
            FaultKind::BlackHole,
            FaultKind::Latency,
            FaultKind::Cut,
            FaultKind::TerminateBackend,
        ];
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        let healthy: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].healthy())
            .collect();
        // Keep at least one healthy worker: the run checks recovery, which
        // needs someone to recover; a fault on the last one waits.
        let disabling = matches!(
            kind,
            FaultKind::Kill | FaultKind::Zombie | FaultKind::Term | FaultKind::BlackHole
        );
        if healthy.is_empty() || (disabling && healthy.len() < 2) {
            return Ok(());
        }
        let i = healthy[self.rng.random_range(0..healthy.len())];
        let now = Instant::now();
        let lease = self.config.lease;
        match kind {
            FaultKind::Kill => {
                if let Some(child) = self.slots[i].child.as_mut() {
                    child.kill().await?;
                }
                self.slots[i].child = None;
                let after = self.jitter(Duration::ZERO, Duration::from_secs(1));
                self.slots[i].pending = Some((now + after, Pending::Respawn));
            }
            FaultKind::Zombie => {
                if let Some(child) = self.slots[i].child.as_mut() {
                    child.signal(Signal::Stop)?;
                }
                let pause = lease + self.jitter(Duration::from_millis(500), Duration::from_secs(3));
                self.slots[i].pending = Some((now + pause, Pending::Cont));
            }
            FaultKind::Term => {
                self.slots[i].term_at = Some(self.db_now().await?);
                self.slots[i].term_log_len = crate::worker_log::length(&self.slots[i].log(self.config));
                if let Some(child) = self.slots[i].child.as_mut() {
                    child.signal(Signal::Term)?;
                }
                let limit = self.config.shutdown_grace + self.config.storage_timeout * 2;
                self.slots[i].pending = Some((now + limit, Pending::TermExit));
            }
            FaultKind::BlackHole => {
                self.slots[i].proxy.set_fault(Fault::BlackHole);
                let span = lease + self.jitter(Duration::from_millis(500), Duration::from_secs(3));
                self.slots[i].pending = Some((now + span, Pending::Heal));
            }
            FaultKind::Latency => {
                let delay = self.jitter(Duration::from_millis(10), crate::chaos_config::MAX_LATENCY);
                self.slots[i].proxy.set_fault(Fault::Latency(delay));
                let span = self.jitter(Duration::from_secs(1), Duration::from_secs(4));
                self.slots[i].pending = Some((now + span, Pending::ClearLatency));
            }
            FaultKind::Cut => self.slots[i].proxy.cut_all(),
            FaultKind::TerminateBackend => {
                let prefix = self.slots[i].app_name();
                self.db.terminate_backends(&prefix).await?;
            }
        }
        self.count(kind);
        Ok(())
    }
}

async fn not_terminal(db: &RunDb) -> anyhow::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from stuckless.jobs where status not in ('succeeded', 'dead', 'cancelled')",
    )
    .fetch_one(db.pool())
    .await
    .context("counting unfinished jobs")
}

/// Runs one chaos run end to end and checks it. The run's database is
/// dropped afterwards; every worker is killed even on error or panic.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    if config.workers < 2 {
        return Err(anyhow::anyhow!("at least 2 workers are needed"));
    }
    std::fs::create_dir_all(&config.log_dir).context(format!("creating {}", config.log_dir.display()))?;
    if config.restarts > 0 && config.server != Server::OwnCluster {
        return Err(anyhow::anyhow!(
            "restarts need the run's own cluster; an existing server is never restarted (pass --restarts 0)"
        ));
    }
    let started = Instant::now();
    // The cluster outlives the database (dropped after it) and is stopped
    // and removed on every path out of here, panics included.
    let (cluster, server_url, server) = match &config.server {
        Server::OwnCluster => {
            let cluster = tokio::task::spawn_blocking(Cluster::start)
                .await
                .context("cluster task")?
                .context("starting the run's own Postgres cluster")?;
            let url = cluster.url();
            let said = format!(
                "own cluster on port {} ({})",
                cluster.port(),
                cluster.dir().display()
            );
            (Some(cluster), url, said)
        }
        Server::Existing(url) => (None, url.clone(), format!("existing {url}")),
    };
    let db = RunDb::create(&server_url, "stuckless_chaos").await?;
    let (result, cluster) = run_on(config, &db, started, cluster, server).await;
    let dropped = db.drop_now().await;
    drop(cluster);
    let report = result?;
    dropped?;
    Ok(report)
}

async fn run_on(
    config: &ChaosConfig,
    db: &RunDb,
    started: Instant,
    cluster: Option<Cluster>,
    server: String,
) -> (anyhow::Result<ChaosReport>, Option<Cluster>) {
    let mut cluster = cluster;
    let result = run_faults(config, db, started, &mut cluster, server).await;
    (result, cluster)
}

async fn run_faults(
    config: &ChaosConfig,
    db: &RunDb,
    started: Instant,
    cluster: &mut Option<Cluster>,
    server: String,
) -> anyhow::Result<ChaosReport> {
    if let Some(timeout) = config.idle_in_transaction_timeout {
        let sql = format!(
            "alter database \"{}\" set idle_in_transaction_session_timeout = {}",
            db.name(),
            timeout.as_millis()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await
            .context("setting idle_in_transaction_session_timeout")?;
    }
    let upstream = db.server_addr().await?;
    let mut slots = Vec::new();
    for index in 0..config.workers {
        slots.push(Slot {
            index,
            proxy: FaultProxy::start(upstream).await?,
            child: None,
            generation: 0,
            worker_id: String::new(),
            pending: None,
            term_at: None,
            term_log_len: 0,
        });
    }
    let mut run = Run {
        config,
        db,
        recorder: Recorder::start(db.pool().clone()).await?,
        rng: ChaCha8Rng::seed_from_u64(config.seed),
        slots,
        faults: BTreeMap::new(),
        violations: Vec::new(),
        notes: Vec::new(),
        workers_started: 0,
        cluster: cluster.take(),
        planned: Vec::new(),
        outages: Vec::new(),
        outage_reports: Vec::new(),
        clock_offset_us: 0,
    };
    let result = drive(&mut run, config, db, started, server).await;
    *cluster = run.cluster.take();
    result
}

/// The run proper: workers, enqueues, faults, settling, checks.
async fn drive(
    run: &mut Run<'_>,
    config: &ChaosConfig,
    db: &RunDb,
    started: Instant,
    server: String,
) -> anyhow::Result<ChaosReport> {
    run.measure_clock_offset().await?;
    let begin = Instant::now();
    run.planned = plan(
        &mut run.rng,
        config.duration,
        config.restarts,
        config.terminate_all,
        config.restart_down,
    )
    .into_iter()
    .map(|(after, p)| (begin + after, p))
    .collect();
    for i in 0..config.workers {
        run.spawn(i)?;
    }

    // Enqueue in batches over the first 60% of the run.
    let client = Client::new(Arc::new(PgStorage::new(db.pool().clone())));
    let batch_every = Duration::from_millis(250);
    let batches = ((config.duration.as_millis() * 6 / 10) / batch_every.as_millis()).max(1) as usize;
    let per_batch = config.jobs.div_ceil(batches).max(1);
    let mut enqueued_ids: Vec<i64> = Vec::with_capacity(config.jobs);
    let mut to_enqueue = config.jobs;
    let mut next_batch = Instant::now();
    let (lo, hi) = config.job_sleep_ms;

    let end = Instant::now() + config.duration;
    let mut next_fault = Instant::now() + run.jitter(config.fault_every / 4, config.fault_every);
    // Bounded: the loop ends at `end`; each pass sleeps at least 20 ms.
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for i in 0..run.slots.len() {
            run.settle_slot(i, now, false).await?;
        }
        run.check_unexpected_exits()?;
        if to_enqueue > 0 && now >= next_batch {
            let n = per_batch.min(to_enqueue);
            let jobs: Vec<NewJob> = (0..n)
                .map(|_| {
                    let sleep_ms = run.rng.random_range(lo..=hi.max(lo));
                    NewJob::new("default", CHAOS_KIND, serde_json::json!({ "sleep_ms": sleep_ms }))
                        .max_attempts(100)
                })
                .collect();
            // A failed enqueue (e.g. during a Postgres restart) is retried
            // at the next batch; its jobs, if they did commit, are extra rows
            // the checks still require to be terminal.
            if let Ok(outcomes) = client.enqueue_many(jobs).await {
                enqueued_ids.extend(outcomes.iter().map(|o| o.job.id.0));
                to_enqueue -= n;
            }
            next_batch = now + batch_every;
        }
        if run
            .planned
            .first()
            .is_some_and(|(at, _)| now >= *at && !run.defer_planned(*at))
        {
            let (_, planned) = run.planned.remove(0);
            run.apply_planned(planned).await?;
            continue;
        }
        if now >= next_fault {
            run.inject().await?;
            next_fault = now + run.jitter(config.fault_every / 2, config.fault_every * 3 / 2);
        }
        let mut wake = next_fault.min(end).min(now + Duration::from_millis(100));
        if to_enqueue > 0 {
            wake = wake.min(next_batch);
        }
        tokio::time::sleep(
            wake.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(20)),
        )
        .await;
    }

    // Heal everything and finish the enqueue.
    let faults_over = Instant::now();
    for i in 0..run.slots.len() {
        run.slots[i].proxy.set_fault(Fault::None);
        run.settle_slot(i, Instant::now(), true).await?;
    }
    for attempt in 0..50 {
        if to_enqueue == 0 {
            break;
        }
        let jobs: Vec<NewJob> = (0..to_enqueue)
            .map(|_| {
                NewJob::new("default", CHAOS_KIND, serde_json::json!({ "sleep_ms": lo })).max_attempts(100)
            })
            .collect();
        match client.enqueue_many(jobs).await {
            Ok(outcomes) => {
                enqueued_ids.extend(outcomes.iter().map(|o| o.job.id.0));
                to_enqueue = 0;
            }
            Err(e) if attempt == 49 => return Err(e).context("enqueueing the last jobs"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    // Every job must become terminal.
    let settle_deadline = Instant::now() + config.settle_timeout;
    loop {
        run.check_unexpected_exits()?;
        for i in 0..run.slots.len() {
            run.settle_slot(i, Instant::now(), false).await?;
        }
        if not_terminal(db).await? == 0 || Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settle = faults_over.elapsed();

    // Stop the workers gracefully; nothing may be left running.
    let term_at = run.db_now().await?;
    for slot in run.slots.iter_mut() {
        slot.term_log_len = crate::worker_log::length(&slot.log(config));
        if let Some(child) = slot.child.as_mut() {
            child.signal(Signal::Cont)?;
            child.signal(Signal::Term)?;
        }
    }
    for i in 0..run.slots.len() {
        let worker_id = run.slots[i].worker_id.clone();
        let limit = config.shutdown_grace + config.storage_timeout * 2;
        if let Some(child) = run.slots[i].child.as_mut() {
            match child.wait_for(limit).await {
                Ok(status) if status.success() => {
                    let log_len = run.slots[i].term_log_len;
                    run.check_left_running(&worker_id, term_at, log_len).await?
                }
                Ok(status) => run.violations.push(format!(
                    "graceful shutdown: {worker_id} exited with {status} at the end"
                )),
                Err(_) => {
                    child.kill().await?;
                    run.violations.push(format!(
                        "graceful shutdown: {worker_id} did not exit within {limit:?} at the end"
                    ));
                }
            }
        }
    }

    let facts = checks::gather(db.pool(), enqueued_ids.clone()).await?;
    let bounds = Bounds {
        lease: config.lease,
        reap_interval: config.reap_interval,
        slack: config.slack,
        outages: run.outages.clone(),
    };
    let mut verdict = checks::check(&facts, bounds);
    verdict.run_violations = std::mem::take(&mut run.violations);
    Ok(ChaosReport {
        seed: config.seed,
        worker: config.worker.name(),
        faults: std::mem::take(&mut run.faults),
        enqueued: enqueued_ids.len(),
        workers_started: run.workers_started,
        verdict,
        elapsed: started.elapsed(),
        settle,
        log_dir: config.log_dir.clone(),
        notes: std::mem::take(&mut run.notes),
        server,
        outages: std::mem::take(&mut run.outage_reports),
    })
}
