//! `make bench`: throughput, pickup latency, idle queries and crash recovery
//! against fresh databases; one `key=value` line per measurement. Targets are
//! printed and compared, never asserted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stuckless_harness::bench::{self, RecoveryTimings};
use stuckless_harness::chaos::WorkerCommand;
use stuckless_harness::db::server_url;
use stuckless_harness::process::workspace_binary;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks for stuckless against real Postgres")]
struct Args {
    /// No-op jobs per throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Concurrencies to measure throughput at.
    #[arg(long, value_delimiter = ',', default_value = "10,24")]
    concurrency: Vec<u32>,
    /// Jobs the throughput worker claims ahead of a free slot (its
    /// `prefetch`): the setting for many short jobs, the size of the local
    /// queue graphile_worker-rs was measured with. 0 measures the shipped
    /// default.
    #[arg(long, default_value_t = 100)]
    prefetch: u32,
    /// Jobs enqueued one at a time for the pickup latency.
    #[arg(long, default_value_t = 200)]
    pickup_jobs: usize,
    /// Gap between them, ms.
    #[arg(long, default_value_t = 50)]
    pickup_gap_ms: u64,
    /// Idle window, s.
    #[arg(long, default_value_t = 60)]
    idle_s: u64,
    /// Recovery measurements.
    #[arg(long, default_value_t = 3)]
    recovery_runs: usize,
    /// Lease of the recovery workers, ms.
    #[arg(long, default_value_t = 5000)]
    recovery_lease_ms: u64,
    /// Reap interval of the recovery workers, ms.
    #[arg(long, default_value_t = 2000)]
    recovery_reap_ms: u64,
    /// Worker for recovery: `cli` (`stuckless worker`) or `harness`
    /// (stuckless-chaos-worker).
    #[arg(long, default_value = "cli")]
    worker: String,
    /// Path of the worker binary (default: beside this binary).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Only these measurements (throughput, pickup, idle, recovery).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = server_url();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!("{}", bench::environment(&url).await?);
    if wanted("throughput") {
        for &c in &args.concurrency {
            println!("{}", bench::throughput(&url, args.jobs, c, args.prefetch).await?);
        }
    }
    if wanted("pickup") {
        let gap = Duration::from_millis(args.pickup_gap_ms);
        println!("{}", bench::pickup(&url, args.pickup_jobs, gap).await?);
    }
    if wanted("idle") {
        println!("{}", bench::idle(&url, Duration::from_secs(args.idle_s)).await?);
    }
    if wanted("recovery") {
        let default_bin = match args.worker.as_str() {
            "cli" => "stuckless",
            "harness" => "stuckless-chaos-worker",
            other => anyhow::bail!("--worker must be cli or harness, not {other:?}"),
        };
        let worker_bin = match args.worker_bin.clone() {
            Some(p) => p,
            None => workspace_binary(default_bin).with_context(|| {
                format!("{default_bin} not found beside this binary; build it (make bench does) or pass --worker-bin")
            })?,
        };
        let worker = if args.worker == "cli" {
            WorkerCommand::Cli(worker_bin)
        } else {
            WorkerCommand::Harness(worker_bin)
        };
        let timings = RecoveryTimings {
            lease: Duration::from_millis(args.recovery_lease_ms),
            heartbeat: Duration::from_millis(args.recovery_lease_ms / 3),
            reap_interval: Duration::from_millis(args.recovery_reap_ms),
            poll_interval: Duration::from_secs(1),
        };
        let log_dir = std::env::temp_dir().join("stuckless-bench-recovery");
        for line in bench::recovery(&url, &worker, args.recovery_runs, timings, &log_dir).await? {
            println!("{line}");
        }
    }
    println!("{}", bench::environment(&url).await?);
    Ok(())
}
