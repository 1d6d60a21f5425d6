//! `make chaos`: a long chaos run against real worker processes and real
//! Postgres: a throwaway cluster of its own, which it restarts, or with
//! `--existing-server` a server you give it (never restarted). Prints the
//! seed first, the checks and fault counts at the end; exits non-zero on any
//! violation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stuckless_harness::chaos::{self, ChaosConfig, Server, WorkerCommand};
use stuckless_harness::chaos_config::{WorkerTimingArgs, DEFAULT_SLACK};
use stuckless_harness::process::workspace_binary;

#[derive(Parser, Debug)]
#[command(about = "Real-process chaos run for stuckless")]
struct Args {
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long, env = "CHAOS_SEED")]
    seed: Option<u64>,
    /// Seconds of fault injection.
    #[arg(long, default_value_t = 120)]
    duration_s: u64,
    /// Jobs enqueued over the run.
    #[arg(long, default_value_t = 3000)]
    jobs: usize,
    /// Worker processes alive at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[command(flatten)]
    timing: WorkerTimingArgs,
    /// Mean time between faults, ms.
    #[arg(long, default_value_t = 1000)]
    fault_every_ms: u64,
    /// Which worker to run: `cli` (the shipped `stuckless worker`, its http
    /// handler pointed at the harness's recorder) or `harness` (the harness's
    /// own stuckless-chaos-worker).
    #[arg(long, default_value = "cli")]
    worker: String,
    /// Path of the worker binary (default: `stuckless` or
    /// `stuckless-chaos-worker` beside this binary).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Set the run database's idle_in_transaction_session_timeout (ms): bounds
    /// how long a worker cut off mid-transaction keeps its rows locked (and
    /// so unreapable). Off by default: the run shows what stuckless does on a
    /// server without it.
    #[arg(long)]
    idle_in_transaction_timeout_ms: Option<u64>,
    /// Slack over lease + reap interval allowed in the stuck-time check, ms
    /// (default 2500: see DEFAULT_SLACK in chaos_config.rs for the derivation).
    #[arg(long, default_value_t = DEFAULT_SLACK.as_millis() as u64)]
    slack_ms: u64,
    /// Postgres restarts at planned times (default 2 on the run's own
    /// cluster; none, and refused, with --existing-server).
    #[arg(long)]
    restarts: Option<u32>,
    /// `pg_terminate_backend` of every worker connection at planned times.
    #[arg(long, default_value_t = 2)]
    terminate_all: u32,
    /// Shortest time a restart keeps Postgres down, ms.
    #[arg(long, default_value_t = 3000)]
    restart_down_min_ms: u64,
    /// Longest time a restart keeps Postgres down, ms.
    #[arg(long, default_value_t = 6000)]
    restart_down_max_ms: u64,
    /// Run on this server (a URL whose user may CREATE DATABASE) instead of a
    /// throwaway cluster of the run's own; it is never restarted.
    #[arg(long)]
    existing_server: Option<String>,
    /// Where worker logs go (default: a temp dir named after the seed).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let default_bin = match args.worker.as_str() {
        "cli" => "stuckless",
        "harness" => "stuckless-chaos-worker",
        other => anyhow::bail!("--worker must be cli or harness, not {other:?}"),
    };
    let worker_bin = match args.worker_bin {
        Some(p) => p,
        None => workspace_binary(default_bin).with_context(|| {
            format!(
                "{default_bin} not found beside this binary; build it (make chaos does) or pass --worker-bin"
            )
        })?,
    };
    let worker = if args.worker == "cli" {
        WorkerCommand::Cli(worker_bin)
    } else {
        WorkerCommand::Harness(worker_bin)
    };
    let ms = Duration::from_millis;
    let mut config = ChaosConfig::short(seed, worker);
    config.slack = ms(args.slack_ms);
    config.idle_in_transaction_timeout = args.idle_in_transaction_timeout_ms.map(ms);
    config.duration = Duration::from_secs(args.duration_s);
    config.jobs = args.jobs;
    config.workers = args.workers;
    config.concurrency = args.timing.concurrency;
    config.lease = ms(args.timing.lease_ms);
    config.heartbeat = ms(args.timing.heartbeat_ms);
    config.reap_interval = ms(args.timing.reap_ms);
    config.poll_interval = ms(args.timing.poll_ms);
    config.fault_every = ms(args.fault_every_ms);
    match args.existing_server {
        Some(url) => {
            if args.restarts.is_some_and(|n| n > 0) {
                anyhow::bail!(
                    "--restarts needs the run's own cluster: an --existing-server is never restarted"
                );
            }
            config.server = Server::Existing(url);
            config.restarts = 0;
        }
        None => {
            config.server = Server::OwnCluster;
            config.restarts = args.restarts.unwrap_or(2);
        }
    }
    config.terminate_all = args.terminate_all;
    anyhow::ensure!(
        args.restart_down_min_ms <= args.restart_down_max_ms,
        "--restart-down-min-ms must not exceed --restart-down-max-ms"
    );
    config.restart_down = (ms(args.restart_down_min_ms), ms(args.restart_down_max_ms));
    if let Some(dir) = args.log_dir {
        config.log_dir = dir;
    }
    println!(
        "chaos start seed={seed} worker={} workers={} jobs={} duration_s={} lease_ms={} reap_ms={} poll_ms={} slack_ms={} server={} restarts={} terminate_all={} restart_down_ms={}-{} idle_in_transaction_timeout_ms={:?}",
        config.worker.name(),
        config.workers,
        config.jobs,
        args.duration_s,
        args.timing.lease_ms,
        args.timing.reap_ms,
        args.timing.poll_ms,
        config.slack.as_millis(),
        match &config.server {
            Server::OwnCluster => "own-cluster".to_owned(),
            Server::Existing(url) => url.clone(),
        },
        config.restarts,
        config.terminate_all,
        args.restart_down_min_ms,
        args.restart_down_max_ms,
        args.idle_in_transaction_timeout_ms
    );
    // Every argument as given, with the seed made explicit.
    let mut replay = vec!["--seed".to_string(), seed.to_string()];
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        if arg == "--seed" {
            given.next();
        } else if !arg.starts_with("--seed=") {
            replay.push(arg);
        }
    }
    println!("replay: make chaos CHAOS_ARGS=\"{}\"", replay.join(" "));
    let report = chaos::run(&config).await?;
    for line in report.lines() {
        println!("{line}");
    }
    if !report.verdict.passed() {
        println!("chaos FAILED seed={seed}");
        std::process::exit(1);
    }
    println!("chaos PASSED seed={seed}");
    Ok(())
}
