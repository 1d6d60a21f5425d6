//! What /readyz and /metrics read from the database, kept away from the
//! worker's work.
//!
//! A scrape once counted the whole jobs table through the worker's own pool:
//! 200 concurrent scrapes of a 300,000-row table queued heartbeats behind
//! them and a running job lost its lease. Now:
//!
//! - the endpoints have a pool of their own, [`POOL_SIZE`] connections with a
//!   server-side `statement_timeout` of [`STATEMENT_TIMEOUT`], so they can
//!   never take a connection a heartbeat, claim or completion needs;
//! - at most one read of each kind is in flight and its answer is shared
//!   for [`SNAPSHOT_TTL`] (the ping for [`PING_TTL`]), so any number of
//!   concurrent scrapes costs one query per period;
//! - the gauges read only queued and running rows (the claim and lease
//!   indexes) and dead ones (their own partial index), never succeeded or
//!   cancelled ones, so they cost the same on a table of ten million
//!   finished jobs as on an empty one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use stuckless_core::driver::{QueueKindsGet, QueueStatsGet, Storage, StorageNow, WorkerList};
use stuckless_core::time::duration_micros;

use crate::coverage::Coverage;
use crate::gauges::{QueueDepth, QueueSnapshot};
use crate::single_flight::Cached;

/// Connections of the endpoints' pool: one for a scrape, one for a probe.
pub const POOL_SIZE: u32 = 2;
/// Longest statement the endpoints' pool lets run, enforced by the server.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one of the pool's connections.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an endpoint waits for a read, including the wait for another
/// caller's read in flight.
pub const READ_TIMEOUT: Duration = Duration::from_secs(6);
/// How long one read of the queue gauges serves every scrape.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(5);
/// How long one database ping serves every readiness probe.
pub const PING_TTL: Duration = Duration::from_secs(1);
/// How the endpoints' connections are named in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "stuckless-observability";

/// The endpoints' own small pool to the database `worker_pool` connects to.
/// Connections open lazily: an unreachable database shows in /readyz, it is
/// not an error here.
pub fn pool_beside(worker_pool: &PgPool) -> PgPool {
    let options: PgConnectOptions = worker_pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(APPLICATION_NAME)
        .options([("statement_timeout", STATEMENT_TIMEOUT.as_millis().to_string())]);
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options)
}

/// The reads behind /readyz and /metrics.
#[async_trait]
pub trait Reads: Send + Sync {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), String>;
    /// The queue gauges, with "live" meaning a registry heartbeat at most
    /// the reader's stale threshold old.
    async fn snapshot(&self) -> Result<QueueSnapshot, String>;
}

/// Non-terminal jobs per queue (and due ones per kind) plus dead jobs per
/// queue, one branch per status so each walks its partial index:
/// `jobs_claim_idx` (queued), `jobs_lease_idx` (running), `jobs_dead_idx`
/// (dead). Rows: queue, kind (queued only), due, scheduled, running,
/// running_expired, dead.
pub const DEPTHS_SQL: &str = "
with now_ as (select now() as t)
select queue, kind,
       count(*) filter (where run_at <= now_.t) as due,
       count(*) filter (where run_at > now_.t) as scheduled,
       0::bigint as running, 0::bigint as running_expired, 0::bigint as dead
  from stuckless.jobs, now_
 where status = 'queued'
 group by queue, kind
union all
select queue, null, 0, 0,
       count(*) filter (where lease_expires_at > now_.t),
       count(*) filter (where lease_expires_at <= now_.t),
       0
  from stuckless.jobs, now_
 where status = 'running'
 group by queue
union all
select queue, null, 0, 0, 0, 0, count(*)
  from stuckless.jobs
 where status = 'dead'
 group by queue";

/// Queues and kinds of the workers whose registry heartbeat is at most `$1`
/// microseconds old (a handful of rows).
const LIVE_WORKERS_SQL: &str = "
select queues, kinds from stuckless.workers
 where last_heartbeat_at >= now() - $1::bigint * interval '1 microsecond'";

/// Per queue, running jobs whose live holder should have cancelled them: the
/// lease is live, the holder's registry heartbeat is at most `$1`
/// microseconds old, and the attempt is past its time limit, judged by
/// `stuckless.time_limit` (migration 5), as the `stuck_jobs` view judges it.
/// Walks the lease index.
const OVER_TIME_LIMIT_SQL: &str = "
select j.queue, count(*) as over
  from stuckless.jobs j
  join stuckless.workers w on w.id = j.lease_owner
 where j.status = 'running' and j.lease_expires_at > now()
   and w.last_heartbeat_at >= now() - $1::bigint * interval '1 microsecond'
   and j.claimed_at + stuckless.time_limit(j.timeout_us, j.kind, w.metadata) < now()
 group by j.queue";

/// [`Reads`] on Postgres, through the endpoints' own pool.
pub struct PgReads {
    /// The endpoints' pool ([`pool_beside`]).
    pub pool: PgPool,
    /// Registry heartbeat age past which a worker is presumed dead.
    pub stale_after: Duration,
}

#[async_trait]
impl Reads for PgReads {
    async fn ping(&self) -> Result<(), String> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn snapshot(&self) -> Result<QueueSnapshot, String> {
        let read = async {
            let mut conn = self.pool.acquire().await?;
            let rows = sqlx::query(DEPTHS_SQL).fetch_all(&mut *conn).await?;
            let live = sqlx::query(LIVE_WORKERS_SQL)
                .bind(duration_micros(self.stale_after))
                .fetch_all(&mut *conn)
                .await?;
            let over = sqlx::query(OVER_TIME_LIMIT_SQL)
                .bind(duration_micros(self.stale_after))
                .fetch_all(&mut *conn)
                .await?;
            let mut parts = Vec::with_capacity(rows.len());
            let mut due_by_kind = Vec::new();
            for row in &rows {
                let count = |col: &str| row.try_get::<i64, _>(col).map(|n| n.max(0) as u64);
                let part = QueueDepth {
                    queue: row.try_get("queue")?,
                    due: count("due")?,
                    scheduled: count("scheduled")?,
                    running: count("running")?,
                    running_expired: count("running_expired")?,
                    dead: count("dead")?,
                    running_over_time_limit: 0,
                };
                if let Some(kind) = row.try_get::<Option<String>, _>("kind")? {
                    due_by_kind.push((part.queue.clone(), kind, part.due));
                }
                parts.push(part);
            }
            for row in &over {
                parts.push(QueueDepth {
                    queue: row.try_get("queue")?,
                    running_over_time_limit: row.try_get::<i64, _>("over")?.max(0) as u64,
                    ..Default::default()
                });
            }
            let live = live
                .iter()
                .map(|row| Ok((row.try_get("queues")?, row.try_get("kinds")?)))
                .collect::<Result<Vec<(Vec<String>, Vec<String>)>, sqlx::Error>>()?;
            Ok::<_, sqlx::Error>(QueueSnapshot::new(parts, due_by_kind, &Coverage::from_live(live)))
        };
        read.await.map_err(|e| e.to_string())
    }
}

/// [`Reads`] through the `Storage` trait, for the in-memory store (tests,
/// examples). Not for Postgres: its per-queue counts read every row.
pub struct StorageReads {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Registry heartbeat age past which a worker is presumed dead.
    pub stale_after: Duration,
}

#[async_trait]
impl Reads for StorageReads {
    async fn ping(&self) -> Result<(), String> {
        self.storage
            .storage_now(StorageNow {})
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn snapshot(&self) -> Result<QueueSnapshot, String> {
        let s = &self.storage;
        let read = async {
            let now = s.storage_now(StorageNow {}).await?;
            let stats = s.queue_stats(QueueStatsGet {}).await?;
            let kinds = s.queue_kinds_get(QueueKindsGet {}).await?;
            let registry = s.worker_list(WorkerList {}).await?;
            let parts = stats.into_iter().map(|q| QueueDepth {
                queue: q.queue,
                due: q.due,
                scheduled: q.scheduled,
                running: q.running,
                running_expired: q.running_expired,
                dead: q.dead,
                // Time limits are judged in SQL (stuckless.time_limit): Postgres only.
                running_over_time_limit: 0,
            });
            let due_by_kind = kinds.into_iter().map(|k| (k.queue, k.kind, k.due));
            let coverage = Coverage::of_live(&registry, now, self.stale_after);
            Ok::<_, stuckless_core::StorageError>(QueueSnapshot::new(parts, due_by_kind, &coverage))
        };
        read.await.map_err(|e| e.to_string())
    }
}

/// [`Reads`] behind single-flight caches and a time bound: what the
/// endpoints call.
pub struct Observed {
    reads: Arc<dyn Reads>,
    ping: Cached<Result<(), String>>,
    snapshot: Cached<Result<Arc<QueueSnapshot>, String>>,
}

impl Observed {
    /// Caches in front of `reads`.
    pub fn new(reads: Arc<dyn Reads>) -> Observed {
        Observed {
            reads,
            ping: Cached::new(PING_TTL),
            snapshot: Cached::new(SNAPSHOT_TTL),
        }
    }

    /// Whether the database answered, at most [`PING_TTL`] ago.
    pub async fn ping(&self) -> Result<(), String> {
        bounded(self.ping.get(|| self.reads.ping())).await
    }

    /// The queue gauges, read at most [`SNAPSHOT_TTL`] ago.
    pub async fn snapshot(&self) -> Result<Arc<QueueSnapshot>, String> {
        let read = || async {
            let read = self.reads.snapshot().await.map(Arc::new);
            if let Err(error) = &read {
                // Logged by the one caller that read, not by every scrape.
                tracing::warn!(%error, "cannot read the queue gauges: /metrics leaves them out");
            }
            read
        };
        bounded(self.snapshot.get(read)).await
    }
}

async fn bounded<T>(read: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                crate::util::human_duration(READ_TIMEOUT)
            ))
        })
}
