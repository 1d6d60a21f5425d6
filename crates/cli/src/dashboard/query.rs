//! The dashboard's SQL reads and its one write of its own (retry-now).
//!
//! Every instant is judged at the page's `now` (the database clock, or a
//! pinned one in tests), passed as microseconds; every read is bounded by
//! an index and a LIMIT, never a count of the whole table.

use std::time::Duration;

use sqlx::{FromRow, PgPool};
use stuckless_core::Timestamp;

/// One queue's jobs by state and its workers: plain grouped counts along
/// the status column, cheap even with a large backlog.
#[derive(Debug, FromRow)]
pub struct QueueCounts {
    pub queue: String,
    pub due: i64,
    pub scheduled: i64,
    pub running: i64,
    pub expired_leases: i64,
    /// Dead jobs kept (not yet pruned).
    pub dead: i64,
    pub live_workers: i64,
    /// Registered workers serving the queue whose heartbeat is stale.
    pub stale_workers: i64,
}

/// Per queue: due, scheduled, running, expired leases, dead; workers alive and stale.
pub async fn counts(pool: &PgPool, now: Timestamp, stale_after: Duration) -> sqlx::Result<Vec<QueueCounts>> {
    sqlx::query_as(
        "with t as (select stuckless.from_micros($1) as now_, $2 * interval '1 microsecond' as stale),
              j as (select j.queue,
                           count(*) filter (where j.status = 'queued' and j.run_at <= t.now_) as due,
                           count(*) filter (where j.status = 'queued' and j.run_at > t.now_) as scheduled,
                           count(*) filter (where j.status = 'running' and j.lease_expires_at > t.now_) as running,
                           count(*) filter (where j.status = 'running' and j.lease_expires_at <= t.now_) as expired_leases,
                           count(*) filter (where j.status = 'dead') as dead
                    from stuckless.jobs j, t where j.status in ('queued', 'running', 'dead') group by j.queue),
              w as (select q.queue,
                           count(*) filter (where t.now_ - w.last_heartbeat_at <= t.stale) as live_workers,
                           count(*) filter (where t.now_ - w.last_heartbeat_at > t.stale) as stale_workers
                    from stuckless.workers w cross join unnest(w.queues) as q(queue), t group by q.queue)
         select coalesce(j.queue, w.queue) as queue,
                coalesce(j.due, 0) as due, coalesce(j.scheduled, 0) as scheduled,
                coalesce(j.running, 0) as running, coalesce(j.expired_leases, 0) as expired_leases,
                coalesce(j.dead, 0) as dead,
                coalesce(w.live_workers, 0) as live_workers, coalesce(w.stale_workers, 0) as stale_workers
         from j full join w on w.queue = j.queue
         order by coalesce(j.queue, w.queue) collate \"C\"",
    )
    .bind(now.as_micros())
    .bind(micros(stale_after))
    .fetch_all(pool)
    .await
}

/// One queue's stuck jobs by cause, from `stuckless.health_at` (the diagnose verdicts).
#[derive(Debug, FromRow)]
pub struct StuckCounts {
    pub queue: String,
    pub stuck_expired_lease: i64,
    pub stuck_worker_gone: i64,
    pub stuck_over_time_limit: i64,
    pub stuck_no_live_worker: i64,
    pub stuck_unhandled_kind: i64,
    pub stuck: i64,
}

/// Stuck jobs per queue and cause. Judges every unfinished job, so on a
/// large backlog it can exceed the pool's statement timeout: callers show
/// the counts without it then.
pub async fn stuck_counts(
    pool: &PgPool,
    now: Timestamp,
    stale_after: Duration,
) -> sqlx::Result<Vec<StuckCounts>> {
    sqlx::query_as(
        "select queue, stuck_expired_lease, stuck_worker_gone, stuck_over_time_limit,
                stuck_no_live_worker, stuck_unhandled_kind, stuck
         from stuckless.health_at(stuckless.from_micros($1), $2 * interval '1 microsecond')",
    )
    .bind(now.as_micros())
    .bind(micros(stale_after))
    .fetch_all(pool)
    .await
}

/// Finished and failed attempts of one queue in one slice of the last hour.
#[derive(Debug, FromRow)]
pub struct Slice {
    pub queue: String,
    /// 0 (oldest) to [`SLICES`] − 1 (ending now).
    pub slice: i32,
    /// Jobs that succeeded in it.
    pub succeeded: i64,
    /// Attempts that failed in it (retried, or dead).
    pub failed: i64,
}

/// The hour is drawn as this many slices of five minutes.
pub const SLICES: i32 = 12;

/// Throughput and failures over the last hour, per queue and five-minute
/// slice: successes from the finished-jobs index, failures from the
/// events-by-time index.
pub async fn last_hour(pool: &PgPool, now: Timestamp) -> sqlx::Result<Vec<Slice>> {
    sqlx::query_as(
        "with t as (select stuckless.from_micros($1) as now_),
              ok as (select j.queue, j.finished_at as at from stuckless.jobs j, t
                     where j.finished_at > t.now_ - interval '1 hour' and j.finished_at <= t.now_
                       and j.status = 'succeeded'),
              bad as (select j.queue, e.at from stuckless.job_events e join stuckless.jobs j on j.id = e.job_id, t
                      where e.at > t.now_ - interval '1 hour' and e.at <= t.now_ and e.kind in ('retried', 'dead')),
              marked as (select queue, at, 1 as s, 0 as f from ok union all select queue, at, 0, 1 from bad)
         select m.queue,
                least(floor(extract(epoch from (m.at - (t.now_ - interval '1 hour'))) / 300), 11)::int4 as slice,
                sum(m.s)::int8 as succeeded, sum(m.f)::int8 as failed
         from marked m, t group by 1, 2 order by 1, 2",
    )
    .bind(now.as_micros())
    .fetch_all(pool)
    .await
}

/// One verdict of `stuckless.job_verdicts_at`.
#[derive(Debug, FromRow)]
pub struct Verdict {
    pub job_id: i64,
    pub queue: String,
    pub kind: String,
    pub status: String,
    pub verdict: String,
    pub scenario: Option<String>,
    pub title: String,
    pub problem: String,
    pub since_us: Option<i64>,
    pub fix: Option<String>,
    pub fix_in_sql: Option<String>,
    pub epoch: i64,
}

/// The stuck jobs (the `stuckless.stuck_jobs` view, judged at `now`),
/// longest stuck first; at most `limit`.
pub async fn stuck(
    pool: &PgPool,
    now: Timestamp,
    stale_after: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Verdict>> {
    sqlx::query_as(
        "select v.job_id, v.queue, v.kind, v.status, v.verdict, v.scenario, v.title, v.problem,
                stuckless.to_micros(v.since) as since_us, v.fix, v.fix_in_sql, j.epoch
         from stuckless.job_verdicts_at(stuckless.from_micros($1), $2 * interval '1 microsecond') v
         join stuckless.jobs j on j.id = v.job_id
         where v.stuck
         order by v.since, v.job_id limit $3",
    )
    .bind(now.as_micros())
    .bind(micros(stale_after))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A running job not (yet) stuck but running far longer than its kind usually does.
#[derive(Debug, FromRow)]
pub struct AtRisk {
    pub job_id: i64,
    pub queue: String,
    pub kind: String,
    pub lease_owner: Option<String>,
    pub running_secs: f64,
    pub usual_secs: f64,
    pub samples: i64,
    pub epoch: i64,
}

/// How many times its kind's median a healthy-looking attempt may run
/// before it is shown as at risk.
pub const AT_RISK_FACTOR: f64 = 5.0;
/// Fewest recent successes of a kind that make its median worth comparing to.
pub const AT_RISK_SAMPLES: i64 = 5;

/// Running jobs with a live lease that have run more than
/// [`AT_RISK_FACTOR`] × the median of their kind's successes of the last day.
pub async fn at_risk(pool: &PgPool, now: Timestamp) -> sqlx::Result<Vec<AtRisk>> {
    sqlx::query_as(
        "with t as (select stuckless.from_micros($1) as now_),
              usual as (select j.kind,
                               percentile_cont(0.5) within group (order by extract(epoch from j.finished_at - j.claimed_at)) as secs,
                               count(*) as samples
                        from stuckless.jobs j, t
                        where j.finished_at > t.now_ - interval '1 day' and j.status = 'succeeded'
                          and j.claimed_at is not null
                        group by j.kind)
         select j.id as job_id, j.queue, j.kind, j.lease_owner,
                extract(epoch from t.now_ - j.claimed_at)::float8 as running_secs,
                u.secs::float8 as usual_secs, u.samples, j.epoch
         from stuckless.jobs j join usual u on u.kind = j.kind, t
         where j.status = 'running' and j.lease_expires_at > t.now_ and u.samples >= $2
           and extract(epoch from t.now_ - j.claimed_at) > greatest(u.secs * $3, 1)
         order by j.claimed_at, j.id limit 200",
    )
    .bind(now.as_micros())
    .bind(AT_RISK_SAMPLES)
    .bind(AT_RISK_FACTOR)
    .fetch_all(pool)
    .await
}

/// The jobs page's filters, already checked.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    /// Keyset cursor: only ids below this.
    pub before: Option<i64>,
}

/// One line of the jobs page.
#[derive(Debug, FromRow)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at_us: i64,
    pub created_at_us: i64,
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
}

/// Jobs matching `filter`, newest id first, at most `limit`: a keyset page
/// walking the primary key backwards (`id < before`), no OFFSET, no count.
pub async fn jobs(pool: &PgPool, filter: &JobFilter, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(
        "select id, queue, kind, status, attempt, max_attempts,
                stuckless.to_micros(run_at) as run_at_us, stuckless.to_micros(created_at) as created_at_us,
                lease_owner, last_error
         from stuckless.jobs
         where ($1::text is null or queue = $1) and ($2::text is null or kind = $2)
           and ($3::text is null or status = $3)
           and ($4::bigint is null or created_at >= stuckless.from_micros($4))
           and ($5::bigint is null or created_at < stuckless.from_micros($5))
           and ($6::bigint is null or id < $6)
         order by id desc limit $7",
    )
    .bind(&filter.queue)
    .bind(&filter.kind)
    .bind(&filter.status)
    .bind(filter.since.map(Timestamp::as_micros))
    .bind(filter.until.map(Timestamp::as_micros))
    .bind(filter.before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A job a worker holds now.
#[derive(Debug, FromRow)]
pub struct Held {
    pub lease_owner: Option<String>,
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub claimed_at_us: Option<i64>,
}

/// Running jobs by holder, along the running-jobs index; at most `limit`.
pub async fn in_flight(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Held>> {
    sqlx::query_as(
        "select lease_owner, id, queue, kind, stuckless.to_micros(claimed_at) as claimed_at_us
         from stuckless.jobs where status = 'running'
         order by lease_owner, id limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The id of the job's newest event (0 when it has none).
pub async fn last_event_id(pool: &PgPool, job: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("select coalesce(max(id), 0) from stuckless.job_events where job_id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
}

/// Adds "by ACTOR (dashboard)" to the `kind` event an action just wrote
/// (the newest one after `after`); false when the action wrote none.
pub async fn sign_event(pool: &PgPool, job: i64, after: i64, kind: &str, actor: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update stuckless.job_events set detail = concat_ws('; ', detail, 'by ' || $4 || ' (dashboard)')
         where id = (select max(id) from stuckless.job_events where job_id = $1 and id > $2 and kind = $3)",
    )
    .bind(job)
    .bind(after)
    .bind(kind)
    .bind(actor)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Retry-now: a queued job waiting for a later run (a retry's backoff, a
/// delay) becomes due at `now`, only while its epoch is still `epoch`;
/// logs a `requeued` event signed by `actor` and wakes the workers. False:
/// the job was not in that state any more.
pub async fn retry_now(
    pool: &PgPool,
    job: i64,
    epoch: i64,
    now: Timestamp,
    actor: &str,
) -> sqlx::Result<bool> {
    let rows = sqlx::query(
        "with upd as (
             update stuckless.jobs set run_at = stuckless.from_micros($3), updated_at = stuckless.from_micros($3)
             where id = $1 and epoch = $2 and status = 'queued' and run_at > stuckless.from_micros($3)
             returning id, queue, epoch, attempt, updated_at
         ), ev as (
             insert into stuckless.job_events (job_id, at, kind, epoch, attempt, detail)
             select id, updated_at, 'requeued', epoch, attempt, 'retry brought forward to now by ' || $4 || ' (dashboard)'
             from upd
         )
         select pg_notify('stuckless_jobs', queue)::text from upd",
    )
    .bind(job)
    .bind(epoch)
    .bind(now.as_micros())
    .bind(actor)
    .fetch_all(pool)
    .await?;
    Ok(rows.len() == 1)
}

/// A duration in whole microseconds, for `$n * interval '1 microsecond'`.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
