//! A worker process for the chaos run: the core `Worker` over `PgStorage`
//! (happy-path events on), woken by `PgWaker`, running the recording handler.
//! Used when the `stuckless` binary is not given (`--worker-bin`); it takes
//! the same timing settings on its command line.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;
use stuckless_core::{RetryPolicy, Worker};
use stuckless_harness::chaos_config::WorkerTimingArgs;
use stuckless_harness::recording::{RecordingHandler, CHAOS_KIND};
use stuckless_pg::{PgStorage, PgWaker};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long)]
    worker_id: String,
    #[arg(long, default_value = "default")]
    queue: String,
    #[command(flatten)]
    timing: WorkerTimingArgs,
    #[arg(long, default_value_t = 2000)]
    grace_ms: u64,
    #[arg(long, default_value_t = 2000)]
    storage_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let ms = Duration::from_millis;
    let pool = PgPoolOptions::new()
        .max_connections(args.timing.concurrency + 4)
        .acquire_timeout(ms(args.storage_timeout_ms))
        .connect_lazy(&args.database_url)
        .context("database url")?;
    let storage = Arc::new(PgStorage::new(pool.clone()).with_happy_path_events(true));
    let waker = PgWaker::start_url(&args.database_url, vec![args.queue.clone()]).context("waker")?;
    let worker = Worker::builder(args.worker_id.clone(), storage)
        .queues([args.queue.clone()])
        .concurrency(args.timing.concurrency)
        .lease(ms(args.timing.lease_ms))
        .heartbeat_interval(ms(args.timing.heartbeat_ms))
        .reap_interval(ms(args.timing.reap_ms))
        .poll_interval(ms(args.timing.poll_ms))
        .shutdown_grace(ms(args.grace_ms))
        .storage_timeout(ms(args.storage_timeout_ms))
        .retry(RetryPolicy {
            base: ms(200),
            max_delay: ms(2000),
            jitter: true,
        })
        .waker(waker)
        .handler(CHAOS_KIND, RecordingHandler::new(pool, args.worker_id.clone()))
        .build()?;
    let shutdown = worker.shutdown_handle();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        while term.recv().await.is_some() {
            shutdown.escalate();
        }
    });
    let report = worker.run().await?;
    eprintln!(
        "worker {} stopped: {}",
        args.worker_id,
        serde_json::to_string(&report)?
    );
    Ok(())
}
