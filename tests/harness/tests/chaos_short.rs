//! The short chaos run of `cargo test`: 3 real worker processes behind fault
//! proxies, ~20 s of seeded faults, then every end-of-run check.

use std::path::PathBuf;

use stuckless_harness::chaos::{self, ChaosConfig, WorkerCommand};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chaos_run_keeps_every_promise() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261129);
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_stuckless-chaos-worker"));
    let config = ChaosConfig::short(seed, WorkerCommand::Harness(worker));
    println!(
        "chaos seed={seed} (replay: CHAOS_SEED={seed} cargo test -p stuckless-harness --test chaos_short)"
    );
    if std::env::var("STUCKLESS_SKIP_PG").is_ok_and(|v| v == "1")
        && sqlx::PgPool::connect(&config.server_url).await.is_err()
    {
        eprintln!("SKIPPED short_chaos_run_keeps_every_promise: no Postgres and STUCKLESS_SKIP_PG=1");
        return;
    }
    let report = chaos::run(&config).await.expect("chaos run");
    for line in report.lines() {
        println!("{line}");
    }
    assert!(
        report.verdict.passed(),
        "violations: {:#?}",
        report.verdict.violations()
    );
    assert_eq!(report.enqueued, config.jobs, "every enqueue acknowledged");
    assert_eq!(
        report.verdict.statuses.get("succeeded"),
        Some(&config.jobs),
        "all jobs succeeded"
    );
    assert!(
        report.verdict.executions >= config.jobs,
        "every job's handler ran at least once: {}",
        report.verdict.executions
    );
    let kinds = report.faults.values().filter(|n| **n > 0).count();
    assert!(
        kinds >= 4,
        "the run must inject several kinds of fault: {:?}",
        report.faults
    );
    assert!(
        report.workers_started > config.workers as u64,
        "workers were replaced"
    );
}
