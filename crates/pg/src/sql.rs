//! The statements. Each is one round trip unless noted; `$1` is always the
//! pinned time or NULL (see [`now_cte`]).
//!
//! Fenced writes (heartbeat, checkpoint, complete, fail, release) are one statement that
//! updates only when `(id, epoch, status = 'running')` match, and otherwise
//! returns the row's current epoch and status so the caller can say why the
//! write was refused (NotFound → StaleEpoch → WrongStatus, the spec's order).

use crate::rows::{event_cols, job_cols, now_cte};

/// Insert one job, or return the job holding its idempotency key.
///
/// The `not exists` pre-check keeps the common duplicate case from touching
/// the identity sequence, so ids stay gap-free in sequential use (the
/// differential test relies on it). Two racing inserts of one key both pass
/// the pre-check; the loser meets `on conflict` and its no-op `do update`
/// returns the winner's row (`xmax <> 0` tells it apart from a fresh insert),
/// so the statement always answers in one round trip, inside any transaction.
///
/// $2 queue, $3 kind, $4 payload, $5 priority, $6 run_at micros or NULL,
/// $7 max_attempts, $8 idempotency key or NULL, $9 log the happy-path event,
/// $10 time limit micros or NULL.
pub(crate) const INSERT: &str = concat!(
    "with ",
    now_cte!(),
    ", ins as (
        insert into stuckless.jobs
            (queue, kind, payload, priority, run_at, max_attempts, idempotency_key, created_at, updated_at,
             timeout_us)
        select $2, $3, $4, $5, coalesce(stuckless.from_micros($6::bigint), now_.t), $7, $8::text, now_.t, now_.t,
               $10::bigint
        from now_
        where $8::text is null
           or not exists (select 1 from stuckless.jobs where idempotency_key = $8::text)
        on conflict (idempotency_key) do update set idempotency_key = excluded.idempotency_key
        returning *, (xmax = 0) as fresh
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt)
        select id, created_at, 'inserted', epoch, attempt from ins where fresh and $9
    )
    select fresh as inserted, ",
    job_cols!(),
    " from ins
    union all
    select false as inserted, ",
    job_cols!(),
    " from stuckless.jobs
    where $8::text is not null and idempotency_key = $8::text and not exists (select 1 from ins)"
);

/// Insert many jobs without idempotency keys in one statement, ids in input
/// order. $2..$7 and $9 (time limits) are parallel arrays; $8 logs the
/// happy-path event.
pub(crate) const INSERT_MANY: &str = concat!(
    "with ",
    now_cte!(),
    ", ins as (
        insert into stuckless.jobs
            (queue, kind, payload, priority, run_at, max_attempts, created_at, updated_at, timeout_us)
        select t.queue, t.kind, t.payload, t.priority, coalesce(stuckless.from_micros(t.run_at), now_.t),
               t.max_attempts, now_.t, now_.t, t.timeout_us
        from unnest($2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::int8[], $7::int4[], $9::int8[])
             with ordinality as t(queue, kind, payload, priority, run_at, max_attempts, timeout_us, ord),
             now_
        order by t.ord
        returning *
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt)
        select id, created_at, 'inserted', epoch, attempt from ins where $8 order by id
    )
    select true as inserted, ",
    job_cols!(),
    " from ins order by id"
);

/// Claim: one statement, `for update skip locked`, so concurrent claimers
/// never wait on nor take each other's rows.
/// $2 queues, $3 limit, $4 worker id, $5 lease micros, $6 log event, $7 the
/// kinds the worker handles (NULL: any kind).
///
/// The kind is a filter on the claim index's walk, not a key: jobs of kinds
/// this worker cannot run are stepped over (and wait for a worker that can),
/// so the claim stays an ordered index scan that stops after `limit` rows.
/// `run_at > '-infinity'` steps over a row no claim could convert, should the
/// schema's CHECK ever be dropped: one such row must not fail every claim.
macro_rules! claim_sql {
    ($queue_predicate:literal) => {
        concat!(
            "with ",
            now_cte!(),
            ", picked as (
        select j.id from stuckless.jobs j
        where j.status = 'queued' and ",
            $queue_predicate,
            " and j.run_at <= (select t from now_) and j.run_at > '-infinity'::timestamptz
          and ($7::text[] is null or j.kind = any($7::text[]))
        order by j.priority desc, j.run_at, j.id
        limit $3
        for update of j skip locked
    ), upd as (
        update stuckless.jobs j
        set status = 'running', attempt = j.attempt + 1, epoch = j.epoch + 1, lease_owner = $4,
            lease_expires_at = now_.t + stuckless.micros($5), claimed_at = now_.t, heartbeat_at = now_.t,
            progress = null, updated_at = now_.t
        from picked, now_
        where j.id = picked.id
        returning j.*
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id)
        select id, updated_at, 'claimed', epoch, attempt, lease_owner from upd where $6 order by id
    )
    select ",
            job_cols!(),
            " from upd order by priority desc, run_at, id"
        )
    };
}

/// Claim from any of several queues: Postgres sorts every due row of those
/// queues, so single-queue workers use [`CLAIM_ONE_QUEUE`].
pub(crate) const CLAIM: &str = claim_sql!("j.queue = any($2::text[])");

/// Claim from one queue (`$2` holds exactly one name): an equality lets the
/// planner walk `jobs_claim_idx` in order and stop after `limit` rows, where
/// `= any(...)` made it scan and sort the whole queue (3.8 ms against 0.03 ms
/// on 20,000 queued jobs, measured by the bench).
pub const CLAIM_ONE_QUEUE: &str = claim_sql!("j.queue = ($2::text[])[1]");

/// The refusal half shared by fenced statements: the row as it stands.
macro_rules! refused {
    () => {
        " union all
        select false as applied, null::bigint as value, j.epoch as cur_epoch, j.status as cur_status
        from stuckless.jobs j where j.id = $2 and not exists (select 1 from upd)"
    };
}

/// Heartbeat. $2 id, $3 epoch, $4 lease micros, $5 set progress?, $6 progress.
pub(crate) const HEARTBEAT: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set lease_expires_at = now_.t + stuckless.micros($4), heartbeat_at = now_.t,
            progress = case when $5 then $6::jsonb else j.progress end, updated_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.lease_expires_at
    )
    select true as applied, stuckless.to_micros(lease_expires_at) as value,
           null::bigint as cur_epoch, null::text as cur_status from upd",
    refused!()
);

/// Checkpoint, fenced like a heartbeat; the lease is not extended.
/// $2 id, $3 epoch, $4 checkpoint. `value` is `checkpointed_at`.
pub(crate) const CHECKPOINT: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set checkpoint = $4::jsonb, checkpointed_at = now_.t, updated_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.checkpointed_at
    )
    select true as applied, stuckless.to_micros(checkpointed_at) as value,
           null::bigint as cur_epoch, null::text as cur_status from upd",
    refused!()
);

/// Complete. $2 id, $3 epoch, $4 log event.
pub(crate) const COMPLETE: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set status = 'succeeded', lease_expires_at = null, updated_at = now_.t, finished_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.*
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id)
        select id, updated_at, 'completed', epoch, attempt, lease_owner from upd where $4
    )
    select true as applied, null::bigint as value, null::bigint as cur_epoch, null::text as cur_status from upd",
    refused!()
);

/// Complete a batch in one autocommit statement. $2 ids, $3 epochs (parallel
/// arrays, the caller's order), $4 log events.
///
/// Answers one row per input, in input order: `applied`, or the row's epoch
/// and status as the batch left it, so the caller classifies each refusal as
/// the one-at-a-time statement would. Only a job's first entry in the batch
/// may apply; a repeat of it then sees the row this statement wrote (its
/// succeeded status and epoch), as it would after the first completion. A
/// refusal whose row looks writable raced a concurrent change between the
/// snapshot and the update; the caller re-runs those alone.
pub(crate) const COMPLETE_MANY: &str = concat!(
    "with ",
    now_cte!(),
    ", input as (
        select i.id, i.epoch, i.ord from unnest($2::bigint[], $3::bigint[]) with ordinality as i(id, epoch, ord)
    ), firsts as (
        select distinct on (id) id, epoch, ord from input order by id, ord
    ), upd as (
        update stuckless.jobs j
        set status = 'succeeded', lease_expires_at = null, updated_at = now_.t, finished_at = now_.t
        from firsts f, now_
        where j.id = f.id and j.epoch = f.epoch and j.status = 'running'
        returning j.id, j.epoch, j.attempt, j.lease_owner, j.updated_at
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id)
        select id, updated_at, 'completed', epoch, attempt, lease_owner from upd where $4 order by id
    )
    select (u.id is not null and f.ord = i.ord) as applied,
           coalesce(u.epoch, c.epoch) as cur_epoch,
           case when u.id is not null then 'succeeded' else c.status end as cur_status
    from input i
    join firsts f on f.id = i.id
    left join upd u on u.id = i.id
    left join stuckless.jobs c on c.id = i.id
    order by i.ord"
);

/// Fail. $2 id, $3 epoch, $4 error, $5 retry delay micros or NULL (permanent).
/// `value` is the next run_at when retried, NULL when dead.
pub(crate) const FAIL: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set last_error = $4,
            status = case when $5::bigint is not null and j.attempt < j.max_attempts
                          then 'queued' else 'dead' end,
            run_at = case when $5::bigint is not null and j.attempt < j.max_attempts
                          then now_.t + stuckless.micros($5::bigint) else j.run_at end,
            finished_at = case when $5::bigint is not null and j.attempt < j.max_attempts
                               then j.finished_at else now_.t end,
            lease_expires_at = null, updated_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.*
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id, detail)
        select id, updated_at, case when status = 'queued' then 'retried' else 'dead' end,
               epoch, attempt, lease_owner, last_error
        from upd
    )
    select true as applied,
           case when status = 'queued' then stuckless.to_micros(run_at) end as value,
           null::bigint as cur_epoch, null::text as cur_status from upd",
    refused!()
);

/// Release (graceful shutdown): queued, due now, attempt given back; wakes
/// listeners so another worker picks it up at once. $2 id, $3 epoch.
pub(crate) const RELEASE: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set status = 'queued', attempt = j.attempt - 1, run_at = now_.t, lease_expires_at = null,
            updated_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.*
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id)
        select id, updated_at, 'released', epoch, attempt, lease_owner from upd
    )
    select true as applied, length(pg_notify('stuckless_jobs', queue)::text)::bigint as value,
           null::bigint as cur_epoch, null::text as cur_status from upd",
    refused!()
);

/// Reap: expired leases back to queued, or dead on their last attempt,
/// through `stuckless.reap_at` (migration 5), the one implementation that
/// `stuckless.reap()` and pg_cron run too. Rows another reaper (or a racing
/// completion) holds are skipped. $2 limit.
pub(crate) const REAP: &str = concat!(
    "with ",
    now_cte!(),
    " select r.job_id as id, r.outcome as status
      from now_, stuckless.reap_at(now_.t, least($2::bigint, 2147483647)::integer) r order by r.job_id"
);

/// The job and the storage's now, row locked: operator operations (cancel,
/// requeue) decide in Rust with the model's own rules, then write.
pub(crate) const LOCK_JOB: &str = concat!(
    "with ",
    now_cte!(),
    " select stuckless.to_micros(now_.t) as now, ",
    job_cols!(),
    " from stuckless.jobs, now_ where id = $2 for update of jobs"
);

/// Cancel write. $2 id, $3 now micros.
pub(crate) const CANCEL: &str = "
    with upd as (
        update stuckless.jobs
        set status = 'cancelled', lease_expires_at = null,
            updated_at = stuckless.from_micros($3), finished_at = stuckless.from_micros($3)
        where id = $2
        returning *
    )
    insert into stuckless.job_events (job_id, at, kind, epoch, attempt)
    select id, updated_at, 'cancelled', epoch, attempt from upd";

/// Requeue write. $2 id, $3 now micros, $4 reset attempts (dead job), $5 detail.
pub(crate) const REQUEUE: &str = "
    with upd as (
        update stuckless.jobs
        set status = 'queued', run_at = stuckless.from_micros($3), lease_expires_at = null,
            updated_at = stuckless.from_micros($3),
            attempt = case when $4 then 0 else attempt end,
            finished_at = case when $4 then null else finished_at end
        where id = $2
        returning *
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, detail)
        select id, updated_at, 'requeued', epoch, attempt, $5 from upd
    )
    select pg_notify('stuckless_jobs', queue)::text from upd";

/// One job by id. $1 id.
pub(crate) const GET: &str = concat!("select ", job_cols!(), " from stuckless.jobs where id = $1");

/// A job's events, oldest first. $1 id.
pub(crate) const EVENTS: &str = concat!(
    "select ",
    event_cols!(),
    " from stuckless.job_events where job_id = $1 order by id"
);

/// Events at or after a time, oldest first. $1 since micros, $2 limit.
pub(crate) const EVENTS_SINCE: &str = concat!(
    "select ",
    event_cols!(),
    " from stuckless.job_events where at >= stuckless.from_micros($1) order by at, id limit $2"
);

/// Jobs changed at or after a time, oldest change first. $1 since, $2 limit.
pub(crate) const JOBS_CHANGED_SINCE: &str = concat!(
    "select ",
    job_cols!(),
    " from stuckless.jobs where updated_at >= stuckless.from_micros($1) order by updated_at, id limit $2"
);

/// Every job, ascending id, from an id on. $1 after id, $2 limit.
pub(crate) const JOBS_PAGE: &str = concat!(
    "select ",
    job_cols!(),
    " from stuckless.jobs where id > $1 order by id limit $2"
);

/// Register (or replace) a worker. $2 id, $3 queues, $4 concurrency, $5
/// metadata, $6 kinds.
pub(crate) const WORKER_REGISTER: &str = concat!(
    "with ",
    now_cte!(),
    " insert into stuckless.workers
          (id, queues, concurrency, metadata, started_at, last_heartbeat_at, in_flight, kinds)
      select $2, $3, $4, $5, now_.t, now_.t, 0, $6 from now_
      on conflict (id) do update set queues = excluded.queues, concurrency = excluded.concurrency,
          kinds = excluded.kinds,
          metadata = excluded.metadata, started_at = excluded.started_at,
          last_heartbeat_at = excluded.last_heartbeat_at, in_flight = 0"
);

/// Worker heartbeat. $2 id, $3 in flight.
pub(crate) const WORKER_HEARTBEAT: &str = concat!(
    "with ",
    now_cte!(),
    " update stuckless.workers w set last_heartbeat_at = now_.t, in_flight = $3 from now_ where w.id = $2"
);

/// Registered workers in byte order of id (`collate "C"`, as Rust sorts).
pub(crate) const WORKER_LIST: &str = "
    select id, queues, concurrency, metadata, stuckless.to_micros(started_at) as started_at,
           stuckless.to_micros(last_heartbeat_at) as last_heartbeat_at, in_flight, kinds
    from stuckless.workers order by id collate \"C\"";

/// Per-queue counts as of now, queues in byte order.
pub(crate) const QUEUE_STATS: &str = concat!(
    "with ",
    now_cte!(),
    " select queue,
        count(*) filter (where status = 'queued' and run_at <= now_.t) as due,
        count(*) filter (where status = 'queued' and run_at > now_.t) as scheduled,
        count(*) filter (where status = 'running' and lease_expires_at > now_.t) as running,
        count(*) filter (where status = 'running' and lease_expires_at <= now_.t) as running_expired,
        count(*) filter (where status = 'succeeded') as succeeded,
        count(*) filter (where status = 'dead') as dead,
        count(*) filter (where status = 'cancelled') as cancelled,
        max(stuckless.to_micros(now_.t) - stuckless.to_micros(run_at))
            filter (where status = 'queued' and run_at <= now_.t and run_at > '-infinity') as oldest_due_micros
      from stuckless.jobs, now_
      group by queue
      order by queue collate \"C\""
);

/// Non-terminal jobs per queue and kind, in byte order. Reads only queued
/// and running rows (the claim and lease indexes), so it costs the same
/// however many finished jobs the table holds.
pub const QUEUE_KINDS: &str = concat!(
    "with ",
    now_cte!(),
    // Two arms, one per partial index: `status in (...)` matches neither
    // index's predicate and would read the whole table.
    ", unfinished as (
        select queue, kind, status, run_at from stuckless.jobs where status = 'queued'
        union all
        select queue, kind, status, run_at from stuckless.jobs where status = 'running'
    )
    select queue, kind,
        count(*) filter (where status = 'queued' and run_at <= now_.t) as due,
        count(*) filter (where status = 'queued' and run_at > now_.t) as scheduled,
        count(*) filter (where status = 'running') as running,
        max(stuckless.to_micros(now_.t) - stuckless.to_micros(run_at))
            filter (where status = 'queued' and run_at <= now_.t and run_at > '-infinity') as oldest_due_micros
      from unfinished, now_
      group by queue, kind
      order by queue collate \"C\", kind collate \"C\""
);

/// Retention through `stuckless.prune_at` (migration 5), the one
/// implementation `stuckless.prune()` runs too: deletes up to `$5` finished
/// jobs older than their status's age ($2 succeeded, $3 cancelled, $4 dead,
/// micros), oldest finish first, along the finished-jobs index; their events
/// go by `on delete cascade`. Rows another pruner holds are skipped.
pub(crate) const PRUNE: &str = concat!(
    "with ",
    now_cte!(),
    " select p.succeeded, p.cancelled, p.dead
      from now_, stuckless.prune_at(now_.t, stuckless.micros($2::bigint), stuckless.micros($3::bigint),
                                    stuckless.micros($4::bigint), least($5::bigint, 2147483647)::integer) p"
);

/// The storage's now.
pub(crate) const NOW: &str = concat!("with ", now_cte!(), " select stuckless.to_micros(t) from now_");
