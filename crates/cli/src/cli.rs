//! Command-line arguments: every flag has an environment fallback where an
//! operator or Cloud Run would set one, and `--help` shows each default.
//!
//! The worker's settings that the core owns (lease, intervals, time limits,
//! retention, …) are `Option`s here: a flag not given leaves the core's
//! default in place, so the binary cannot drift from the library or the
//! simulator. Their help states the default as `[default: …]`; a test passes
//! each stated default explicitly and checks the worker comes out the same.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::util::{duration_arg, lease_arg, time_limit_arg, TimeLimit};

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
    Worker(Box<WorkerArgs>),
    /// Apply the database migrations (safe to repeat).
    Migrate,
    /// Enqueue a job; the payload is JSON from the argument, or from stdin when absent or `-`.
    Enqueue(EnqueueArgs),
    /// Explain why a job is where it is, and print the safe command to fix it.
    Diagnose(DiagnoseArgs),
    /// Take back every running job whose lease has expired (one pass).
    Reap(ReapArgs),
    /// Delete finished jobs past their retention now (workers also do it every --prune-interval).
    Prune(PruneArgs),
    /// Put a dead or lease-expired job back in the queue (fenced: a late write from the old holder is refused).
    Requeue(RequeueArgs),
    /// Cancel a queued or running job.
    Cancel(JobIdArg),
    /// Per-queue and per-kind counts, kinds no live worker handles, workers alive and stale.
    Stats(StaleArgs),
    /// List registered workers and whether each is alive.
    Workers(StaleArgs),
    /// Measure throughput: enqueue N no-op jobs on a fresh queue and run them with an in-process worker.
    Bench(BenchArgs),
    /// Draw recent history as an SVG: a lane per worker, a bar per attempt, reaps and waits.
    Timeline(TimelineArgs),
    /// Serve the dashboard: overview, stuck jobs, jobs, workers, timeline; requeue, cancel and retry-now with an admin token.
    Dashboard(DashboardArgs),
    /// Move the rows of an old jobs table (UUID id, upper-case status) into stuckless, keeping each old id as external id.
    Import(ImportArgs),
}

/// `dashboard` arguments.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Port to listen on.
    #[arg(long, env = "DASHBOARD_PORT", default_value_t = 8090)]
    pub port: u16,
    /// Address to listen on: loopback unless you mean to expose it (then put
    /// TLS in front and set an admin token only if people must act).
    #[arg(long, env = "DASHBOARD_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    #[command(flatten)]
    pub admin: AdminTokenArgs,
    #[command(flatten)]
    pub stale: StaleArgs,
}

/// The dashboard's admin token: without one it is read-only.
#[derive(Debug, Args)]
pub struct AdminTokenArgs {
    /// File holding the admin token that enables actions (requeue, cancel,
    /// retry-now); surrounding whitespace is ignored. Unset (and no
    /// STUCKLESS_DASHBOARD_TOKEN): the dashboard is read-only.
    #[arg(long, conflicts_with = "admin_token")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The admin token itself; prefer the environment or a file to a flag
    /// other users can read in the process list.
    #[arg(long, env = "STUCKLESS_DASHBOARD_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl AdminTokenArgs {
    /// The token, read from the file when one is named; `None`: read-only.
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        let token = match &self.admin_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the admin token file {}", path.display()))?,
            ),
            None => self.admin_token.clone(),
        };
        let token = token.map(|t| t.trim().to_owned());
        if let Some(t) = &token {
            anyhow::ensure!(
                t.len() >= 16,
                "the admin token is too short ({} characters): use at least 16, e.g. `openssl rand -hex 32`",
                t.len()
            );
        }
        Ok(token)
    }
}

/// `import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The table to read, e.g. jobs or public.jobs. It needs id, status
    /// (QUEUED, PENDING, RUNNING, COMPLETED or FAILED), payload and
    /// created_at; locked_by, lock_expires_at, scheduled_at, attempts,
    /// updated_at and last_error are used when present.
    #[arg(long)]
    pub table: String,
    /// The stuckless queue the jobs go to.
    #[arg(long)]
    pub queue: String,
    /// The column holding each job's kind.
    #[arg(long, conflicts_with = "kind", required_unless_present = "kind")]
    pub kind_column: Option<String>,
    /// One kind for every job.
    #[arg(long)]
    pub kind: Option<String>,
    /// Count what would be imported, write nothing.
    #[arg(long)]
    pub dry_run: bool,
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

/// How long finished jobs are kept (worker and `prune`).
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Delete succeeded jobs finished this long ago [default: 1d]
    #[arg(long, env = "RETENTION_SUCCEEDED", value_parser = duration_arg)]
    pub retention_succeeded: Option<Duration>,
    /// Delete cancelled jobs finished this long ago [default: 1d]
    #[arg(long, env = "RETENTION_CANCELLED", value_parser = duration_arg)]
    pub retention_cancelled: Option<Duration>,
    /// Delete dead jobs finished this long ago; kept longer so someone can
    /// read and requeue them [default: 7d]
    #[arg(long, env = "RETENTION_DEAD", value_parser = duration_arg)]
    pub retention_dead: Option<Duration>,
}

impl RetentionArgs {
    /// The ages given, the core's defaults for the rest.
    pub fn resolve(&self) -> stuckless_core::Retention {
        let core = stuckless_core::Retention::default();
        stuckless_core::Retention {
            succeeded: self.retention_succeeded.unwrap_or(core.succeeded),
            cancelled: self.retention_cancelled.unwrap_or(core.cancelled),
            dead: self.retention_dead.unwrap_or(core.dead),
        }
    }
}

/// `prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Most jobs deleted per statement; passes repeat until one deletes fewer.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Run a single statement instead of repeating until done.
    #[arg(long)]
    pub once: bool,
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
    /// The job's id, or its external id (an imported job's old UUID).
    pub job_id: String,
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
    /// This job's limit on one attempt (e.g. 90s, 2h); overrides the worker's
    /// per-kind and default limits [default: the worker's]
    #[arg(long, value_parser = duration_arg)]
    pub timeout: Option<Duration>,
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
    /// Jobs run at once [default: 10]
    #[arg(long, env = "CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// Jobs claimed ahead of a free slot, held with their lease kept alive
    /// until one frees: more throughput for many short jobs; leave it 0 for
    /// long ones, which would wait here while another worker idles [default: 0]
    #[arg(long, env = "PREFETCH")]
    pub prefetch: Option<u32>,
    /// Lease length, at most 24h: a crashed worker's jobs come back within
    /// lease + reap interval [default: 30s]
    #[arg(long, env = "LEASE", value_parser = lease_arg)]
    pub lease: Option<Duration>,
    /// Time between job heartbeats (must be shorter than the lease) [default: 10s]
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = duration_arg)]
    pub heartbeat_interval: Option<Duration>,
    /// Time between reap passes [default: 20s]
    #[arg(long, env = "REAP_INTERVAL", value_parser = duration_arg)]
    pub reap_interval: Option<Duration>,
    /// Safety-net poll when no wake-up comes [default: 60s]
    #[arg(long, env = "POLL_INTERVAL", value_parser = duration_arg)]
    pub poll_interval: Option<Duration>,
    /// The poll interval used instead when the start-up probe finds that
    /// LISTEN/NOTIFY wake-ups do not arrive (a transaction pooler such as
    /// pgbouncer in transaction mode or Supavisor on port 6543); a shorter
    /// --poll-interval is kept.
    #[arg(long, env = "POLL_INTERVAL_WITHOUT_NOTIFY", value_parser = duration_arg, default_value = "2s")]
    pub poll_interval_without_notify: Duration,
    /// Time between registry heartbeats ("this worker is alive") [default: 30s]
    #[arg(long, env = "REGISTRY_HEARTBEAT_INTERVAL", value_parser = duration_arg)]
    pub registry_heartbeat_interval: Option<Duration>,
    /// After SIGTERM, how long in-flight jobs may finish before they are released
    /// (Cloud Run gives 10 s before SIGKILL) [default: 8s]
    #[arg(long, env = "SHUTDOWN_GRACE", value_parser = duration_arg)]
    pub shutdown_grace: Option<Duration>,
    /// Limit on one attempt of a job whose kind has no --kind-timeout and
    /// that has no limit of its own; `off` for none. On expiry the handler is
    /// cancelled and the attempt fails retryably ("timed out after …")
    /// [default: 15m]
    #[arg(long, env = "DEFAULT_TIMEOUT", value_parser = time_limit_arg)]
    pub default_timeout: Option<TimeLimit>,
    /// Per-kind limit on one attempt, KIND=DURATION; repeatable or comma-separated.
    #[arg(long = "kind-timeout", env = "KIND_TIMEOUTS", value_delimiter = ',')]
    pub kind_timeouts: Vec<String>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Time between this worker's prune passes (any worker may prune) [default: 10m]
    #[arg(long, env = "PRUNE_INTERVAL", value_parser = duration_arg)]
    pub prune_interval: Option<Duration>,
    /// Never delete finished jobs from this worker (other workers and
    /// `stuckless prune` still do).
    #[arg(long, env = "NO_PRUNE", conflicts_with_all = ["retention_succeeded", "retention_cancelled", "retention_dead", "prune_interval"])]
    pub no_prune: bool,
    /// A worker whose registry heartbeat is older than this is presumed dead:
    /// the kinds only such workers handle count as unhandled in /metrics.
    #[command(flatten)]
    pub stale: StaleArgs,
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
    /// Also serve the dashboard under /dashboard on PORT (read-only unless
    /// an admin token is given).
    #[arg(long, env = "DASHBOARD")]
    pub dashboard: bool,
    #[command(flatten)]
    pub dashboard_admin: AdminTokenArgs,
}
