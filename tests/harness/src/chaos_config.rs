//! What a chaos run is told (`ChaosConfig`, how workers start, which faults
//! exist) and what it reports back (`ChaosReport`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::checks::Verdict;
use crate::recorder::Recorder;
use crate::recording::CHAOS_KIND;

/// The worker settings both chaos binaries take on their command line:
/// `stuckless-chaos` gives them to every worker it starts, and
/// `stuckless-chaos-worker` reads them back under the same flags.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct WorkerTimingArgs {
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Workers' lease, ms.
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// Workers' heartbeat interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Workers' reap interval, ms.
    #[arg(long, default_value_t = 2000)]
    pub reap_ms: u64,
    /// Workers' poll interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

/// How worker processes are started.
#[derive(Clone, Debug)]
pub enum WorkerCommand {
    /// The shipped binary: `stuckless worker`, its `http` handler pointed at
    /// the harness's [`Recorder`] (which writes the side table).
    Cli(PathBuf),
    /// The harness's own `stuckless-chaos-worker` (core `Worker` over
    /// `PgStorage` with happy-path events on, recording handler writing the
    /// side table itself).
    Harness(PathBuf),
}

impl WorkerCommand {
    /// The binary's path.
    pub fn program(&self) -> &PathBuf {
        match self {
            WorkerCommand::Cli(p) | WorkerCommand::Harness(p) => p,
        }
    }

    /// A short name for the report.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerCommand::Cli(_) => "stuckless-worker",
            WorkerCommand::Harness(_) => "stuckless-chaos-worker",
        }
    }

    /// Command line and environment of worker `worker_id` connecting to `url`
    /// with `config`'s timings, its chaos handler reporting to `recorder`.
    pub fn command(
        &self,
        config: &ChaosConfig,
        url: &str,
        worker_id: &str,
        recorder: &Recorder,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let ms = |d: Duration| d.as_millis().to_string();
        let args: Vec<String> = match self {
            WorkerCommand::Cli(_) => {
                let d = |d: Duration| format!("{}ms", d.as_millis());
                vec![
                    "worker".into(),
                    "--worker-id".into(),
                    worker_id.into(),
                    "--concurrency".into(),
                    config.concurrency.to_string(),
                    "--lease".into(),
                    d(config.lease),
                    "--heartbeat-interval".into(),
                    d(config.heartbeat),
                    "--reap-interval".into(),
                    d(config.reap_interval),
                    "--poll-interval".into(),
                    d(config.poll_interval),
                    "--shutdown-grace".into(),
                    d(config.shutdown_grace),
                    "--handler".into(),
                    format!("{CHAOS_KIND}=http:{}", recorder.url_for(worker_id)),
                    "--http-timeout".into(),
                    "60s".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    "0".into(),
                ]
            }
            WorkerCommand::Harness(_) => vec![
                "--worker-id".into(),
                worker_id.into(),
                "--concurrency".into(),
                config.concurrency.to_string(),
                "--lease-ms".into(),
                ms(config.lease),
                "--heartbeat-ms".into(),
                ms(config.heartbeat),
                "--reap-ms".into(),
                ms(config.reap_interval),
                "--poll-ms".into(),
                ms(config.poll_interval),
                "--grace-ms".into(),
                ms(config.shutdown_grace),
                "--storage-timeout-ms".into(),
                ms(config.storage_timeout),
            ],
        };
        (args, vec![("DATABASE_URL".into(), url.into())])
    }
}

/// Where a chaos run's database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// A throwaway cluster of the run's own ([`crate::cluster`]), which it
    /// may restart.
    OwnCluster,
    /// An existing server (a URL whose user may `CREATE DATABASE`); never
    /// restarted, as others may be using it.
    Existing(String),
}

/// The longest latency the slow-link fault adds per message.
pub const MAX_LATENCY: Duration = Duration::from_millis(250);

/// The default slack of the stuck-time check, 2.5 s. A reaper sleeps its
/// interval *after* each call, so its period is the interval plus one reap
/// call, and a reap statement starts one call's round trips after its tick.
/// Under the slow-link fault a call costs up to two round trips (the pool's
/// liveness check, then the statement) of 2 × [`MAX_LATENCY`] each: 1 s, in
/// the period and again before the statement: 2 s. The other 0.5 s is CPU
/// scheduling of the worker and Postgres on a loaded 2-core machine (seen:
/// reaps 0.09 s and 0.28 s over a 1 s slack in a 10-minute run). The gap the
/// check exists for (locks held by idle-in-transaction backends) showed as
/// reaps 5.4–5.7 s after lease expiry, over the 4.5 s this allows with the
/// default 2 s reap interval, so it would still be caught.
pub const DEFAULT_SLACK: Duration = Duration::from_millis(2500);

/// A chaos run's settings.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seeds every random choice of the orchestrator.
    pub seed: u64,
    /// Worker processes alive at once.
    pub workers: usize,
    /// Jobs enqueued over the run.
    pub jobs: usize,
    /// How long faults are injected.
    pub duration: Duration,
    /// Jobs each worker runs at once.
    pub concurrency: u32,
    /// Workers' lease.
    pub lease: Duration,
    /// Workers' heartbeat interval.
    pub heartbeat: Duration,
    /// Workers' reap interval.
    pub reap_interval: Duration,
    /// Workers' poll interval.
    pub poll_interval: Duration,
    /// Workers' shutdown grace.
    pub shutdown_grace: Duration,
    /// Workers' storage timeout (the harness worker's; `stuckless worker`
    /// uses the core default, 10 s).
    pub storage_timeout: Duration,
    /// Allowance over reap interval in the stuck-time check, for the reap
    /// statement's own latency on a loaded machine.
    pub slack: Duration,
    /// Each job's handler sleeps a uniform time in this range, ms.
    pub job_sleep_ms: (u64, u64),
    /// Mean time between faults.
    pub fault_every: Duration,
    /// How workers are started.
    pub worker: WorkerCommand,
    /// Where the run's database lives.
    pub server: Server,
    /// Postgres restarts at planned times (own cluster only).
    pub restarts: u32,
    /// `pg_terminate_backend` of every worker connection at planned times.
    pub terminate_all: u32,
    /// Each restart keeps the server down a uniform time in this range.
    pub restart_down: (Duration, Duration),
    /// Where worker logs go.
    pub log_dir: PathBuf,
    /// How long after the faults stop every job must be terminal.
    pub settle_timeout: Duration,
    /// When set, the run database gets `idle_in_transaction_session_timeout`
    /// of this length. A worker cut off in the middle of a multi-statement
    /// transaction (the batched completion) otherwise leaves its backend idle
    /// in transaction holding the rows' locks, and `skip locked` reapers pass
    /// over those jobs until Postgres notices the connection is gone.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl ChaosConfig {
    /// Short-run defaults: 3 workers, 300 jobs, 20 s of faults, 3 s lease, on
    /// a cluster of its own with one restart and one mass termination.
    pub fn short(seed: u64, worker: WorkerCommand) -> Self {
        ChaosConfig {
            seed,
            workers: 3,
            jobs: 300,
            duration: Duration::from_secs(20),
            concurrency: 8,
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            reap_interval: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(2),
            storage_timeout: Duration::from_secs(2),
            slack: DEFAULT_SLACK,
            job_sleep_ms: (20, 400),
            fault_every: Duration::from_millis(1200),
            worker,
            server: Server::OwnCluster,
            restarts: 1,
            terminate_all: 1,
            restart_down: (Duration::from_secs(3), Duration::from_secs(6)),
            log_dir: std::env::temp_dir().join(format!("stuckless-chaos-{seed}")),
            settle_timeout: Duration::from_secs(60),
            idle_in_transaction_timeout: None,
        }
    }
}

/// The faults the orchestrator injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a worker, start a new one.
    Kill,
    /// SIGSTOP a worker for longer than the lease, then SIGCONT it.
    Zombie,
    /// SIGTERM a worker (graceful shutdown), start a new one.
    Term,
    /// Black-hole a worker's proxy for longer than the lease.
    BlackHole,
    /// Add latency to a worker's proxy for a while.
    Latency,
    /// Cut every connection of a worker's proxy.
    Cut,
    /// `pg_terminate_backend` a worker's backends.
    TerminateBackend,
}

impl FaultKind {
    /// The name printed in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "sigkill",
            FaultKind::Zombie => "sigstop_zombie",
            FaultKind::Term => "sigterm",
            FaultKind::BlackHole => "black_hole",
            FaultKind::Latency => "latency",
            FaultKind::Cut => "cut_connections",
            FaultKind::TerminateBackend => "pg_terminate_backend",
        }
    }
}

/// What a chaos run did and found.
#[derive(Debug)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Which worker binary ran.
    pub worker: &'static str,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Jobs whose enqueue was acknowledged.
    pub enqueued: usize,
    /// Worker processes started in all.
    pub workers_started: u64,
    /// The checks' findings.
    pub verdict: Verdict,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Time from the end of the faults to every job terminal.
    pub settle: Duration,
    /// Where the worker logs are.
    pub log_dir: PathBuf,
    /// Findings that are not violations.
    pub notes: Vec<String>,
    /// The server: `own cluster on port N` or the URL given.
    pub server: String,
    /// One entry per planned outage (restart or mass termination).
    pub outages: Vec<crate::chaos::OutageReport>,
}

impl ChaosReport {
    /// The lines the run prints at the end.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "chaos seed={} worker={} enqueued={} workers_started={} elapsed_s={:.1} settle_s={:.1} logs={}",
            self.seed,
            self.worker,
            self.enqueued,
            self.workers_started,
            self.elapsed.as_secs_f64(),
            self.settle.as_secs_f64(),
            self.log_dir.display()
        )];
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
        out.push(format!("server {}", self.server));
        out.push(format!("faults {}", faults.join(" ")));
        out.extend(self.outages.iter().map(|o| o.line()));
        out.extend(self.verdict.summary());
        out.push(format!("notes={}", self.notes.len()));
        out.extend(self.notes.iter().take(20).map(|n| format!("NOTE {n}")));
        let violations = self.verdict.violations();
        out.push(format!("violations={}", violations.len()));
        out.extend(violations.into_iter().take(50).map(|v| format!("VIOLATION {v}")));
        out
    }
}
