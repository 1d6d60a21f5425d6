//! Measurements: throughput, pickup latency, idle queries, crash recovery.
//!
//! Each measurement prints as one `key=value` line starting with `bench=`.
//! Targets are printed beside the figures and compared, never asserted.
//!
//! - **Throughput** runs the core `Worker` in-process over `PgStorage` (a
//!   direct pool, `PgWaker` wake-ups) with a no-op handler, on a queue filled
//!   beforehand by `Client::enqueue_many`, so it measures the queue, not process
//!   start-up or a handler.
//! - **Pickup latency** is measured two ways. `claimed_at - run_at` of each
//!   job, both on the database clock: from the enqueueing transaction's start
//!   to the claiming statement's, through commit, NOTIFY, the waker and the
//!   claim. And the peers' way, on the client's clock: from just before the
//!   enqueue call to the handler's start (`client_pickup_*`).
//! - **Throughput** also reports commits per job (`xact_commit` of
//!   `pg_stat_database`, every session of the run's database) and claim and
//!   complete statements per job (counted by the storage hook).
//! - **Idle queries** are counted at a [`FaultProxy`] in front of an idle
//!   in-process worker with the core's default intervals: statements (`Query`
//!   and `Execute` messages) and round trips (`Query` and `Sync`, which
//!   include the pool's liveness pings).
//! - **Recovery** SIGKILLs a real worker process holding a job and times, on
//!   the database clock, from just before the kill to the job's completion by
//!   the other worker process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use stuckless_core::{Client, JobContext, JobError, JobId, NewJob, Worker, WorkerBuilder, WorkerEvent};
use stuckless_pg::{PgStorage, PgWaker};

use crate::chaos::{ChaosConfig, WorkerCommand};
use crate::db::RunDb;
use crate::process::{ChildGuard, Signal};
use crate::proxy::FaultProxy;
use crate::recorder::Recorder;
use crate::recording::CHAOS_KIND;
use crate::timed::timed;
use anyhow::Context;

/// One measurement: an ordered list of `key=value` pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line(Vec<(String, String)>);

impl Line {
    /// A line for measurement `name`.
    pub fn new(name: &str) -> Self {
        Line(vec![("bench".into(), name.into())])
    }

    /// Adds `key=value`.
    pub fn kv(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{k}={v}");
        }
        f.write_str(&out)
    }
}

/// The machine and server the figures were taken on.
pub async fn environment(server_url: &str) -> anyhow::Result<Line> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await
        .context("connecting to report the environment")?;
    let show = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("show {name}")))
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|_| "?".into())
        }
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    Ok(Line::new("environment")
        .kv("cpus", cpus)
        .kv("loadavg_1_5_15", load.join(","))
        .kv("server_version", show("server_version").await.replace(' ', "_"))
        .kv("fsync", show("fsync").await)
        .kv("synchronous_commit", show("synchronous_commit").await))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `measure` on a fresh database on `server_url`, then drops it (also
/// when the measurement failed).
async fn on_fresh_db<T>(
    server_url: &str,
    measure: impl for<'a> FnOnce(&'a RunDb) -> Pin<Box<dyn Future<Output = anyhow::Result<T>> + 'a>>,
) -> anyhow::Result<T> {
    let db = RunDb::create(server_url, "stuckless_bench").await?;
    let result = measure(&db).await;
    db.drop_now().await?;
    result
}

/// A pool of up to `max_connections` on `url`.
async fn pool(url: &str, max_connections: u32, what: &'static str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await
        .context(what)
}

/// Transactions committed in the pool's database so far, from
/// `pg_stat_database`. Statistics reach it up to a second late (PostgreSQL
/// 15 flushes a backend's counters at most once a second), so this waits
/// that long first; every session of the measurement counts, the
/// measurement's own reads included (one per reading) and the worker's start and stop (a few).
async fn commits(pool: &PgPool) -> anyhow::Result<i64> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sqlx::query_scalar("select xact_commit from pg_stat_database where datname = current_database()")
        .fetch_one(pool)
        .await
        .context("reading pg_stat_database")
}

/// `builder` with a handler for the no-op jobs the measurements enqueue,
/// built.
fn noop_worker(builder: WorkerBuilder) -> anyhow::Result<Worker> {
    builder
        .handler("noop", |_ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))
}

/// Bulk-enqueues `jobs` no-op jobs, then processes them with one in-process
/// worker of `concurrency`; returns the throughput line.
pub async fn throughput(server_url: &str, jobs: usize, concurrency: u32) -> anyhow::Result<Line> {
    on_fresh_db(server_url, |db| Box::pin(throughput_on(db, jobs, concurrency))).await
}

async fn throughput_on(db: &RunDb, jobs: usize, concurrency: u32) -> anyhow::Result<Line> {
    let pool = pool(&db.direct_url(), concurrency + 4, "bench pool").await?;
    let storage = Arc::new(timed(PgStorage::new(pool.clone())));
    let client = Client::new(storage.clone());
    let batch = 5000;
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(batch);
        let new: Vec<NewJob> = (0..n)
            .map(|_| NewJob::new("default", "noop", serde_json::json!({})))
            .collect();
        client.enqueue_many(new).await.context("bulk enqueue")?;
        left -= n;
    }
    let enqueue_s = started.elapsed().as_secs_f64();

    let completed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let target = jobs as u64;
    let observer = {
        let completed = completed.clone();
        let done = done.clone();
        move |event: &WorkerEvent| {
            if matches!(event, WorkerEvent::Completed { .. })
                && completed.fetch_add(1, Ordering::SeqCst) + 1 >= target
            {
                done.notify_one();
            }
        }
    };
    let waker = PgWaker::start(pool.clone(), vec!["default".into()]);
    let worker = noop_worker(
        Worker::builder("bench-throughput", storage.clone())
            .concurrency(concurrency)
            .poll_interval(Duration::from_secs(1))
            .waker(waker)
            .observer(Arc::new(observer)),
    )?;
    let shutdown = worker.shutdown_handle();
    let commits_before = commits(&pool).await?;
    let started = Instant::now();
    let running = tokio::spawn(worker.run());
    let limit = Duration::from_secs(60 + jobs as u64 / 200);
    let finished = tokio::time::timeout(limit, done.notified()).await.is_ok();
    let process_s = started.elapsed().as_secs_f64();
    shutdown.graceful();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    let processed = completed.load(Ordering::SeqCst);
    if !finished {
        return Err(anyhow::anyhow!(
            "timed out: only {processed} of {jobs} jobs processed within {limit:?}"
        ));
    }
    let process_rate = processed as f64 / process_s;
    let commits_during = commits(&pool).await? - commits_before;
    let claims = storage.hook().claims.lock().expect("stats").clone();
    let completions = storage.hook().completions.lock().expect("stats").clone();
    let per_job = |n: f64| format!("{:.3}", n / processed.max(1) as f64);
    Ok(Line::new("throughput")
        .kv("mode", "in_process_core_worker_over_PgStorage")
        .kv("jobs", jobs)
        .kv("concurrency", concurrency)
        .kv("enqueue_batch", batch)
        .kv("enqueue_jobs_per_s", format!("{:.0}", jobs as f64 / enqueue_s))
        .kv("process_jobs_per_s", format!("{process_rate:.0}"))
        .kv("target_process_jobs_per_s", 25000)
        .kv("meets_target", process_rate >= 25000.0)
        .kv("commits_per_job", per_job(commits_during as f64))
        .kv(
            "claim_and_complete_statements_per_job",
            per_job((claims.calls() + completions.calls()) as f64),
        )
        .kv("target_per_job", 0.05)
        .kv("claim_calls", claims.calls())
        .kv("claim_mean_jobs", format!("{:.1}", claims.mean_size()))
        .kv("claim_p50_ms", format!("{:.2}", claims.p_ms(50.0)))
        .kv("claim_p99_ms", format!("{:.2}", claims.p_ms(99.0)))
        .kv("complete_calls", completions.calls())
        .kv("complete_mean_jobs", format!("{:.1}", completions.mean_size()))
        .kv("complete_p50_ms", format!("{:.2}", completions.p_ms(50.0)))
        .kv("complete_p99_ms", format!("{:.2}", completions.p_ms(99.0))))
}

/// Enqueues `jobs` jobs one at a time `gap` apart to an idle worker; returns
/// the pickup latency line.
pub async fn pickup(server_url: &str, jobs: usize, gap: Duration) -> anyhow::Result<Line> {
    on_fresh_db(server_url, |db| Box::pin(pickup_on(db, jobs, gap))).await
}

async fn pickup_on(db: &RunDb, jobs: usize, gap: Duration) -> anyhow::Result<Line> {
    let pool = pool(&db.direct_url(), 6, "bench pool").await?;
    let storage = Arc::new(PgStorage::new(pool.clone()));
    let waker = PgWaker::start(pool.clone(), vec!["default".into()]);
    // Peers measure pickup from the client: the time before the enqueue call
    // to the handler's start. Each handler notes when it started.
    let started_at = Arc::new(Mutex::new(BTreeMap::<JobId, Instant>::new()));
    let worker = Worker::builder("bench-pickup", storage.clone())
        .waker(waker)
        .handler("noop", {
            let started_at = started_at.clone();
            move |ctx: JobContext| {
                started_at
                    .lock()
                    .expect("pickup map")
                    .insert(ctx.id(), Instant::now());
                async { Ok::<(), JobError>(()) }
            }
        })
        .build()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    let shutdown = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    // Let it register and LISTEN, and go idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let enqueuer = Client::new(Arc::new(PgStorage::new(db.pool().clone())));
    let mut sent_at = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let before = Instant::now();
        let outcome = enqueuer
            .enqueue_job(NewJob::new("default", "noop", serde_json::json!({})))
            .await
            .context("enqueue")?;
        sent_at.push((outcome.job.id, before));
        tokio::time::sleep(gap).await;
    }
    // Bounded wait for the last ones.
    for _ in 0..200 {
        let left: i64 = sqlx::query_scalar("select count(*) from stuckless.jobs where status <> 'succeeded'")
            .fetch_one(db.pool())
            .await
            .context("counting")?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.graceful();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "select (stuckless.to_micros(claimed_at) - stuckless.to_micros(run_at))::float8 / 1000.0
         from stuckless.jobs where claimed_at is not null",
    )
    .fetch_all(db.pool())
    .await
    .context("reading pickup latencies")?;
    let picked = latencies.len();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let mut client: Vec<f64> = {
        let started_at = started_at.lock().expect("pickup map");
        sent_at
            .iter()
            .filter_map(|(id, before)| {
                started_at
                    .get(id)
                    .map(|at| (*at - *before).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    client.sort_by(|a, b| a.total_cmp(b));
    let (client_p50, client_p99) = (percentile(&client, 50.0), percentile(&client, 99.0));
    Ok(Line::new("pickup")
        .kv("mode", "in_process_core_worker_PgWaker_idle")
        .kv("jobs", jobs)
        .kv("picked", picked)
        .kv("gap_ms", gap.as_millis())
        .kv("pickup_p50_ms", format!("{p50:.2}"))
        .kv("pickup_p99_ms", format!("{p99:.2}"))
        .kv(
            "pickup_max_ms",
            format!("{:.2}", latencies.last().copied().unwrap_or(f64::NAN)),
        )
        .kv("client_pickup_p50_ms", format!("{client_p50:.2}"))
        .kv("client_pickup_p99_ms", format!("{client_p99:.2}"))
        .kv("client_measured", client.len())
        .kv("target_p50_ms", 3)
        .kv("target_p99_ms", 10)
        .kv(
            "meets_target",
            p50 <= 3.0 && p99 <= 10.0 && client_p50 <= 3.0 && client_p99 <= 10.0,
        ))
}

/// Counts what one idle worker with the core's default intervals sends over
/// `window`; returns the idle-queries line.
pub async fn idle(server_url: &str, window: Duration) -> anyhow::Result<Line> {
    on_fresh_db(server_url, |db| Box::pin(idle_on(db, window))).await
}

async fn idle_on(db: &RunDb, window: Duration) -> anyhow::Result<Line> {
    let proxy = FaultProxy::start(db.server_addr().await?).await?;
    let url = db.url_via(proxy.addr(), "bench-idle");
    let pool = pool(&url, 6, "idle worker pool").await?;
    let storage = Arc::new(PgStorage::new(pool.clone()));
    let waker = PgWaker::start(pool.clone(), vec!["default".into()]);
    let worker = noop_worker(Worker::builder("bench-idle", storage).waker(waker))?;
    let shutdown = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = proxy.stats();
    tokio::time::sleep(window).await;
    let after = proxy.stats();
    shutdown.graceful();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    let queries = after.queries - before.queries;
    let trips = after.round_trips - before.round_trips;
    let per_10s = queries as f64 * 10.0 / window.as_secs_f64();
    Ok(Line::new("idle")
        .kv(
            "mode",
            "in_process_core_worker_default_intervals_counted_at_proxy",
        )
        .kv("window_s", window.as_secs())
        .kv("statements", queries)
        .kv("round_trips", trips)
        .kv(
            "queries_per_s",
            format!("{:.3}", queries as f64 / window.as_secs_f64()),
        )
        .kv("queries_per_worker_per_10s", format!("{per_10s:.2}"))
        .kv(
            "round_trips_per_worker_per_10s",
            format!("{:.2}", trips as f64 * 10.0 / window.as_secs_f64()),
        )
        .kv("target_per_worker_per_10s", 1)
        .kv("meets_target", per_10s <= 1.0))
}

/// Asks `query` (one value of job `id`, or no row or NULL while it is not
/// there yet) every 20 ms while `keep_going` says so; the first value, or
/// `None` if it gave up first.
async fn watch<T>(
    db: &RunDb,
    query: &'static str,
    id: i64,
    mut keep_going: impl FnMut() -> bool,
    what: &'static str,
) -> anyhow::Result<Option<T>>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    while keep_going() {
        let value: Option<T> = sqlx::query_scalar(query)
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .context(what)?
            .flatten();
        if value.is_some() {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Worker timings for the recovery measurement.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryTimings {
    /// Lease.
    pub lease: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Reap interval.
    pub reap_interval: Duration,
    /// Poll interval.
    pub poll_interval: Duration,
}

/// SIGKILLs a real worker process holding a job, `runs` times, and times
/// each job's completion by the surviving worker process. The job's handler
/// (the chaos kind: the harness worker's recording handler, or `stuckless
/// worker`'s http handler calling the recorder) holds the first attempt for
/// ten minutes and finishes any later attempt at once.
pub async fn recovery(
    server_url: &str,
    worker: &WorkerCommand,
    runs: usize,
    timings: RecoveryTimings,
    log_dir: &std::path::Path,
) -> anyhow::Result<Vec<Line>> {
    // The measurement's future may only borrow the database: it owns the rest.
    let (worker, log_dir) = (worker.clone(), log_dir.to_path_buf());
    on_fresh_db(server_url, move |db| {
        Box::pin(async move { recovery_on(db, &worker, runs, timings, &log_dir).await })
    })
    .await
}

async fn recovery_on(
    db: &RunDb,
    worker: &WorkerCommand,
    runs: usize,
    t: RecoveryTimings,
    log_dir: &std::path::Path,
) -> anyhow::Result<Vec<Line>> {
    std::fs::create_dir_all(log_dir).context("creating the log dir")?;
    let recorder = Recorder::start(db.pool().clone()).await?;
    let mut config = ChaosConfig::short(0, worker.clone());
    config.lease = t.lease;
    config.heartbeat = t.heartbeat;
    config.reap_interval = t.reap_interval;
    config.poll_interval = t.poll_interval;
    let url = db.direct_url();
    let spawn = |id: String| -> anyhow::Result<ChildGuard> {
        let (args, envs) = worker.command(&config, &url, &id, &recorder);
        ChildGuard::spawn(
            id.clone(),
            worker.program(),
            &args,
            &envs,
            &log_dir.join(format!("{id}.log")),
        )
    };
    let mut workers: Vec<ChildGuard> = vec![spawn("rec-a".into())?, spawn("rec-b".into())?];
    let mut generation = 0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = Client::new(Arc::new(PgStorage::new(db.pool().clone())));
    let bound = t.lease + t.reap_interval;
    let mut lines = Vec::new();
    for run in 0..runs {
        let job = client
            .enqueue_job(NewJob::new(
                "default",
                CHAOS_KIND,
                serde_json::json!({"sleep_ms": 0, "first_attempt_sleep_ms": 600_000}),
            ))
            .await
            .context("enqueue")?
            .job;
        let mut tries = 0..500;
        let owner: Option<String> = watch(
            db,
            "select lease_owner from stuckless.jobs where id = $1 and status = 'running'",
            job.id.0,
            || tries.next().is_some(),
            "watching the claim",
        )
        .await?;
        let owner = owner.ok_or_else(|| anyhow::anyhow!("timed out: nobody claimed the recovery job"))?;
        let victim = workers
            .iter()
            .position(|w| w.name() == owner)
            .ok_or_else(|| anyhow::anyhow!("unknown owner {owner}"))?;
        let killed_at: i64 = sqlx::query_scalar("select stuckless.to_micros(clock_timestamp())")
            .fetch_one(db.pool())
            .await
            .context("reading the clock")?;
        workers[victim].signal(Signal::Kill)?;
        let deadline = Instant::now() + bound + Duration::from_secs(30);
        let finished: Option<i64> = watch(
            db,
            "select stuckless.to_micros(finished_at) from stuckless.jobs where id = $1 and status = 'succeeded'",
            job.id.0,
            || Instant::now() < deadline,
            "watching the completion",
        )
        .await?;
        let completed_by: Option<String> =
            sqlx::query_scalar("select lease_owner from stuckless.jobs where id = $1")
                .bind(job.id.0)
                .fetch_one(db.pool())
                .await
                .context("reading the owner")?;
        let recovery_ms = finished.map(|f| (f - killed_at) as f64 / 1000.0);
        lines.push(
            Line::new("recovery")
                .kv("mode", format!("real_processes_{}", worker.name()))
                .kv("run", run + 1)
                .kv("lease_ms", t.lease.as_millis())
                .kv("reap_ms", t.reap_interval.as_millis())
                .kv("killed", &owner)
                .kv("completed_by", completed_by.unwrap_or_default())
                .kv(
                    "recovery_ms",
                    recovery_ms.map_or("timeout".to_string(), |r| format!("{r:.0}")),
                )
                .kv("target_ms", bound.as_millis())
                .kv(
                    "meets_target",
                    recovery_ms.is_some_and(|r| r <= bound.as_millis() as f64),
                ),
        );
        workers[victim].wait_for(Duration::from_secs(10)).await?;
        generation += 1;
        workers[victim] = spawn(format!("rec-{generation}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for w in workers.iter_mut() {
        w.signal(Signal::Term)?;
        if w.wait_for(Duration::from_secs(15)).await.is_err() {
            w.kill().await?;
        }
    }
    Ok(lines)
}
