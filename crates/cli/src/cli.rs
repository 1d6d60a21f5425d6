//! Command-line arguments: every flag has an environment fallback where an
//! operator or Cloud Run would set one, and `--help` shows each default.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::util::duration_arg;

/// stuckless: a Postgres job queue that never leaves a job stuck.
#[derive(Debug, Parser)]
#[command(name = "stuckless", version, about, long_about = None)]
pub struct Cli {
    /// Postgres URL, e.g. postgres://postgres@127.0.0.1:5432/postgres
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format: `human` (for terminals) or `json` (one object per line with
    /// a `severity` field, for Cloud Logging).
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter in tracing-subscriber's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", global = true, default_value = "info,sqlx=warn")]
    pub log_level: String,

    /// Print machine-readable JSON instead of human tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// JSON lines with `severity`, `message`, span fields (job_id, worker_id, epoch, attempt).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: claim jobs, run handlers, serve /healthz /readyz /metrics /wake on PORT.
    Worker(WorkerArgs),
    /// Apply the database migrations (safe to repeat).
    Migrate,
    /// Enqueue a job; the payload is JSON from the argument, or from stdin when absent or `-`.
    Enqueue(EnqueueArgs),
    /// Explain why a job is where it is, and print the safe command to fix it.
    Diagnose(DiagnoseArgs),
    /// Take back every running job whose lease has expired (one pass).
    Reap(ReapArgs),
    /// Put a dead or lease-expired job back in the queue (fenced: a late write from the old holder is refused).
    Requeue(RequeueArgs),
    /// Cancel a queued or running job.
    Cancel(JobIdArg),
    /// Per-queue counts: due, scheduled, running, expired leases, dead; workers alive and stale.
    Stats(StaleArgs),
    /// List registered workers and whether each is alive.
    Workers(StaleArgs),
    /// Measure throughput: enqueue N no-op jobs on a fresh queue and run them with an in-process worker.
    Bench(BenchArgs),
    /// Draw recent history as an SVG: a lane per worker, a bar per attempt, reaps and waits.
    Timeline(TimelineArgs),
}

/// `timeline` arguments.
#[derive(Debug, Args)]
#[command(after_long_help = TIMELINE_LIMITS)]
pub struct TimelineArgs {
    /// Left edge: a duration ago (10m, 2h, 90 = seconds) or an RFC 3339 time
    /// in UTC (2026-11-29T02:44:00Z).
    #[arg(long)]
    pub since: String,
    /// Right edge, same forms [default: now, by the database's clock].
    #[arg(long)]
    pub until: Option<String>,
    /// The SVG file to write.
    #[arg(long, default_value = "timeline.svg")]
    pub out: std::path::PathBuf,
    /// Most events, and most jobs, read; a warning says when it cut the picture short.
    #[arg(long, default_value_t = 20_000)]
    pub limit: u32,
}

/// What `stuckless timeline --help` says about what it cannot know.
const TIMELINE_LIMITS: &str = "\
How the picture is made, and its limits:
  The database logs only abnormal transitions unless happy-path events are on:
  retried, dead, released, reaped, cancelled and requeued events (each with
  epoch, attempt, worker and time) end earlier attempts; the job row carries
  the latest attempt (claimed_at, heartbeat_at, finished_at, lease_owner).
  - An earlier attempt's claim time is not logged: its bar starts at the job's
    previous event, its creation or --since, whichever is latest, and its
    tooltip says \"claim not logged\".
  - A reaped attempt's bar ends at the lease expiry the reap recorded; when
    the worker really stopped (crash, pause) is not known.
  - Completions are not logged: a successful attempt (always a job's last)
    comes from its row, from claimed_at to finished_at.
  - Waits (due, not running) are drawn only where both ends are known: from
    a lease expiry to its reap; after a reap, release or requeue until the
    row's latest claim (or the right edge); a retried job from the row's
    run_at while that retry is still pending (backoff itself is not a wait);
    before a first claim only for jobs with no event in the window.
  - Cancels and requeues end a bar only when its claim was logged.
  - Worker crashes, pauses, partitions and database restarts are not in the
    database: only their effects (lease expiries, reaps) show. Releases are
    marked as the worker's shutdown.
  - Lanes are the workers seen as lease owners or in events; a worker that ran
    nothing in the window has no lane.
  - Jobs read: those changed in the window, plus those queued or running
    since before it; at most --limit of each, and of events.";

/// `bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Jobs to enqueue and run.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u32,
    /// Worker concurrency.
    #[arg(long, default_value_t = 50)]
    pub concurrency: u32,
}

/// A job id argument.
#[derive(Debug, Args)]
pub struct JobIdArg {
    /// The job's id (a positive integer).
    pub job_id: i64,
}

/// `requeue` arguments.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// The job's id.
    pub job_id: i64,
    /// Also revoke a live lease (the holder's later writes are refused).
    #[arg(long)]
    pub force: bool,
}

/// `reap` arguments.
#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Most jobs to take back.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

/// Arguments of commands that judge worker liveness.
#[derive(Debug, Args)]
pub struct StaleArgs {
    /// A worker whose registry heartbeat is older than this is presumed dead
    /// (workers heartbeat every 30 s by default).
    #[arg(long, env = "STALE_AFTER", value_parser = duration_arg, default_value = "90s")]
    pub stale_after: Duration,
}

/// `diagnose` arguments.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// The job's id.
    pub job_id: i64,
    #[command(flatten)]
    pub stale: StaleArgs,
    /// Judge as if the database's clock read this instant (RFC 3339 or
    /// microseconds); for reproducible output in tests.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

/// `enqueue` arguments.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Job kind: selects the handler.
    #[arg(long)]
    pub kind: String,
    /// Queue.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// JSON payload; read from stdin when absent or `-`.
    pub payload: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i16,
    /// Attempts before the job is dead.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: i32,
    /// Run no earlier than this long from now (e.g. 10m).
    #[arg(long, value_parser = duration_arg)]
    pub delay: Option<Duration>,
    /// One job per key: enqueueing the same key again returns the existing job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `worker` arguments.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Unique worker id [default: <hostname>-<pid>]
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Queues to serve, comma-separated.
    #[arg(long, env = "QUEUES", value_delimiter = ',', default_value = "default")]
    pub queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 10)]
    pub concurrency: u32,
    /// Lease length: a crashed worker's jobs come back within lease + reap interval.
    #[arg(long, env = "LEASE", value_parser = duration_arg, default_value = "30s")]
    pub lease: Duration,
    /// Time between job heartbeats (must be shorter than the lease).
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = duration_arg, default_value = "10s")]
    pub heartbeat_interval: Duration,
    /// Time between reap passes.
    #[arg(long, env = "REAP_INTERVAL", value_parser = duration_arg, default_value = "20s")]
    pub reap_interval: Duration,
    /// Safety-net poll when no wake-up comes.
    #[arg(long, env = "POLL_INTERVAL", value_parser = duration_arg, default_value = "60s")]
    pub poll_interval: Duration,
    /// Time between registry heartbeats ("this worker is alive").
    #[arg(long, env = "REGISTRY_HEARTBEAT_INTERVAL", value_parser = duration_arg, default_value = "30s")]
    pub registry_heartbeat_interval: Duration,
    /// After SIGTERM, how long in-flight jobs may finish before they are released
    /// (Cloud Run gives 10 s before SIGKILL).
    #[arg(long, env = "SHUTDOWN_GRACE", value_parser = duration_arg, default_value = "8s")]
    pub shutdown_grace: Duration,
    /// Per-kind limit on one attempt, KIND=DURATION; repeatable or comma-separated.
    #[arg(long = "kind-timeout", env = "KIND_TIMEOUTS", value_delimiter = ',')]
    pub kind_timeouts: Vec<String>,
    /// Handlers, KIND=HANDLER with HANDLER one of `noop`, `sleep`,
    /// `http:URL`; repeatable or comma-separated.
    #[arg(
        long = "handler",
        env = "HANDLERS",
        value_delimiter = ',',
        default_value = "noop=noop,sleep=sleep"
    )]
    pub handlers: Vec<String>,
    /// Deadline of one request of the `http` handler.
    #[arg(long, env = "HTTP_TIMEOUT", value_parser = duration_arg, default_value = "30s")]
    pub http_timeout: Duration,
    /// Bearer token the `http` handler sends to its endpoints.
    #[arg(long, env = "HTTP_HANDLER_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Port of /healthz, /readyz, /metrics and /wake (Cloud Run sets PORT).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind: String,
    /// Shared secret POST /wake requires as `Authorization: Bearer <secret>`;
    /// unset: every /wake is refused (401).
    #[arg(long, env = "WAKE_SECRET", hide_env_values = true)]
    pub wake_secret: Option<String>,
    /// Apply migrations before starting.
    #[arg(long, env = "MIGRATE")]
    pub migrate: bool,
}
