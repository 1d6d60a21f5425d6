-- Operate the queue from inside the database, with no worker alive.
--
-- Until now only a running worker reaped expired leases, pruned finished
-- jobs or said why a job was stuck. On Supabase (or any managed Postgres)
-- a cron inside the database, pg_cron, can now do the first two, and the SQL
-- editor answers the third:
--
--   stuckless.reap_at(as_of, max_jobs) / stuckless.reap()   expired leases back to queued (or dead)
--   stuckless.prune_at(...) / stuckless.prune()             finished jobs past their retention deleted
--   stuckless.job_verdicts_at(...) / stuckless.job_verdicts() the diagnose verdict of each unfinished job
--   stuckless.job_verdict(job)                               one job's verdict, by id or external id
--   stuckless.stuck_jobs                                     the verdicts that need someone
--   stuckless.health_at(...) / stuckless.health()            one row per queue, for alerting
--
-- reap_at and prune_at are the single implementation: PgStorage's
-- job_reap_expired and job_prune call them, so the conformance and
-- differential suites hold them to the in-memory model.
--
-- Privileges: none of these is SECURITY DEFINER; each runs with its caller's
-- rights on the tables, so a role that may not update stuckless.jobs cannot
-- reap through them.
--
-- jobs.external_id: the id a job had in another system (the UUID of a row
-- imported by `stuckless import`). Unique over the whole table, not per
-- queue, because `stuckless diagnose <external id>` and job_verdict() are
-- given nothing but the id and must find exactly one job.

alter table stuckless.jobs add column external_id text
    constraint external_id_length check (octet_length(external_id) between 1 and 255);

create unique index jobs_external_id_idx on stuckless.jobs (external_id) where external_id is not null;

-- Reap: expired leases back to queued, or dead on their last attempt. Rows
-- another reaper (or a racing completion) holds are skipped, so concurrent
-- reapers split the work and a job is never taken back twice. Requeued jobs
-- wake the listening workers. The event's detail matches the Rust
-- `Timestamp` Display: RFC 3339, UTC, microseconds.
create function stuckless.reap_at(as_of timestamptz, max_jobs integer default 1000)
returns table (job_id bigint, outcome text)
language sql
set search_path = pg_catalog, pg_temp
as $$
    with expired as (
        select j.id, j.attempt >= j.max_attempts as dead,
               'lease expired at '
                 || to_char(j.lease_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                 || ' (owner ' || coalesce(j.lease_owner, '?') || ')' as detail
        from stuckless.jobs j
        where j.status = 'running' and j.lease_expires_at <= reap_at.as_of
        order by j.id
        limit greatest(reap_at.max_jobs, 0)
        for update of j skip locked
    ), upd as (
        update stuckless.jobs j
        set status = case when e.dead then 'dead' else 'queued' end,
            last_error = case when e.dead then e.detail else j.last_error end,
            run_at = case when e.dead then j.run_at else reap_at.as_of end,
            finished_at = case when e.dead then reap_at.as_of else j.finished_at end,
            lease_expires_at = null, updated_at = reap_at.as_of
        from expired e
        where j.id = e.id
        returning j.id, j.queue, j.status, j.epoch, j.attempt, j.lease_owner, j.updated_at, e.detail
    ), ev as (
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id, detail)
        select id, updated_at, case when status = 'dead' then 'dead' else 'reaped' end,
               epoch, attempt, lease_owner, detail
        from upd order by id
    ), woken as (
        select pg_notify('stuckless_jobs', q.queue) from (select distinct queue from upd where status = 'queued') q
    )
    select id, status from upd, (select count(*) from woken) w order by id
$$;

comment on function stuckless.reap_at(timestamptz, integer) is
  'Takes back up to max_jobs expired leases as of as_of: queued again, or dead on their last attempt; logs reaped/dead events. Returns each job and what it became.';

create function stuckless.reap(max_jobs integer default 1000) returns integer
language sql
set search_path = pg_catalog, pg_temp
as $$ select count(*)::integer from stuckless.reap_at(now(), reap.max_jobs) $$;

comment on function stuckless.reap(integer) is
  'Reaps up to max_jobs expired leases now (the workers'' reaper, for pg_cron); returns how many.';

-- Retention: deletes up to max_jobs finished jobs older than their status's
-- age, oldest finish first, along the finished-jobs index; their events go by
-- `on delete cascade`. Rows another pruner holds are skipped.
create function stuckless.prune_at(
    as_of           timestamptz,
    succeeded_after interval,
    cancelled_after interval,
    dead_after      interval,
    max_jobs        integer
) returns table (succeeded bigint, cancelled bigint, dead bigint)
language sql
set search_path = pg_catalog, pg_temp
as $$
    with doomed as (
        select j.id from stuckless.jobs j
        where j.status in ('succeeded', 'cancelled', 'dead')
          and j.finished_at <= prune_at.as_of
                - least(prune_at.succeeded_after, prune_at.cancelled_after, prune_at.dead_after)
          and j.finished_at <= prune_at.as_of - case j.status
                when 'succeeded' then prune_at.succeeded_after
                when 'cancelled' then prune_at.cancelled_after
                else prune_at.dead_after end
        order by j.finished_at, j.id
        limit greatest(prune_at.max_jobs, 0)
        for update of j skip locked
    ), gone as (
        -- An id array, not a join: a join would hash the whole table.
        delete from stuckless.jobs j where j.id = any(array(select id from doomed)) returning j.status
    )
    select count(*) filter (where status = 'succeeded'),
           count(*) filter (where status = 'cancelled'),
           count(*) filter (where status = 'dead')
    from gone
$$;

comment on function stuckless.prune_at(timestamptz, interval, interval, interval, integer) is
  'Deletes up to max_jobs finished jobs (and their events) past their status''s age as of as_of; returns counts by status.';

create function stuckless.prune(
    succeeded_after interval default interval '1 day',
    cancelled_after interval default interval '1 day',
    dead_after      interval default interval '7 days',
    max_jobs        integer  default 10000
) returns bigint
language sql
set search_path = pg_catalog, pg_temp
as $$
    select p.succeeded + p.cancelled + p.dead
    from stuckless.prune_at(now(), prune.succeeded_after, prune.cancelled_after, prune.dead_after, prune.max_jobs) p
$$;

comment on function stuckless.prune(interval, interval, interval, integer) is
  'Deletes up to max_jobs finished jobs past the workers'' default retention (1 day; dead: 7 days); returns how many.';

-- A running attempt's time limit, as `stuckless diagnose` judges it: the
-- job's own; else the limit its (live) worker recorded in the registry for
-- the kind; else that worker's default (JSON null: no limit, NULL here);
-- else, for a worker that recorded none, the core's default of 15 minutes.
create function stuckless.time_limit(job_timeout_us bigint, kind text, holder_metadata jsonb)
returns interval
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case
        when job_timeout_us is not null then stuckless.micros(job_timeout_us)
        when holder_metadata is null or not (holder_metadata ? 'time_limits') then interval '15 minutes'
        when jsonb_typeof(holder_metadata -> 'time_limits' -> 'kinds_us' -> kind) = 'number'
            then stuckless.micros((holder_metadata -> 'time_limits' -> 'kinds_us' ->> kind)::bigint)
        when jsonb_typeof(holder_metadata -> 'time_limits' -> 'default_us') = 'number'
            then stuckless.micros((holder_metadata -> 'time_limits' ->> 'default_us')::bigint)
        else null
    end
$$;

comment on function stuckless.time_limit(bigint, text, jsonb) is
  'A running attempt''s time limit from the job''s own, its worker''s recorded kind or default limit, else 15 minutes; NULL: none.';

-- An interval as people say it: 4m 0s, 2h 5m, 3d 4h.
create function stuckless.human_interval(i interval) returns text
language sql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
    with s as (select greatest(floor(extract(epoch from i)), 0)::bigint as secs)
    select case
        when secs < 60 then secs || 's'
        when secs < 3600 then (secs / 60) || 'm ' || (secs % 60) || 's'
        when secs < 86400 then (secs / 3600) || 'h ' || (secs % 3600 / 60) || 'm'
        else (secs / 86400) || 'd ' || (secs % 86400 / 3600) || 'h'
    end
    from s
$$;

-- The verdict of `stuckless diagnose` for each job, in SQL: the same cases
-- (crates/cli/src/diagnose), judged at as_of with workers alive when their
-- registry heartbeat is at most stale_after old. Without only_job, the
-- unfinished jobs (queued and running, read along their partial indexes);
-- with it, that one job whatever its status. Reads the tables directly.
create function stuckless.job_verdicts_at(
    as_of       timestamptz,
    stale_after interval default interval '90 seconds',
    only_job    bigint   default null
) returns table (
    job_id       bigint,
    external_id  text,
    queue        text,
    kind         text,
    status       text,
    verdict      text,
    scenario     text,
    title        text,
    stuck        boolean,
    problem      text,
    since        timestamptz,
    for_how_long interval,
    time_limit   interval,
    fix          text,
    fix_in_sql   text
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    with live as (
        select w.id, w.queues, w.kinds, w.metadata
        from stuckless.workers w
        where job_verdicts_at.as_of - w.last_heartbeat_at <= job_verdicts_at.stale_after
    ), cand as (
        select j.* from stuckless.jobs j where job_verdicts_at.only_job is not null and j.id = job_verdicts_at.only_job
        union all
        select j.* from stuckless.jobs j where job_verdicts_at.only_job is null and j.status = 'queued'
        union all
        select j.* from stuckless.jobs j where job_verdicts_at.only_job is null and j.status = 'running'
    ), judged as (
        select c.*,
               reg.id is not null as holder_registered,
               reg.last_heartbeat_at as holder_heartbeat_at,
               h.id is not null as holder_alive,
               h.metadata as holder_metadata,
               exists (select 1 from live l where c.queue = any(l.queues)) as queue_served,
               exists (select 1 from live l where c.queue = any(l.queues)
                                             and (cardinality(l.kinds) = 0 or c.kind = any(l.kinds))) as kind_served
        from cand c
        left join stuckless.workers reg on c.status = 'running' and reg.id = c.lease_owner
        left join live h on h.id = reg.id
    ), cased as (
        select j.*,
               case
                   when j.status = 'running' and j.lease_expires_at <= job_verdicts_at.as_of then 'expired_lease'
                   when j.status = 'running' and j.holder_alive then 'slow_but_alive'
                   when j.status = 'running' then 'worker_gone'
                   when j.status = 'queued' and j.run_at > job_verdicts_at.as_of then 'scheduled'
                   when j.status = 'queued' and not j.queue_served then 'no_live_worker'
                   when j.status = 'queued' and not j.kind_served then 'unhandled_kind'
                   when j.status = 'queued' then 'waiting_for_capacity'
                   else j.status
               end as verdict_
        from judged j
    ), limited as (
        select c.*,
               case when c.verdict_ = 'slow_but_alive'
                    then stuckless.time_limit(c.timeout_us, c.kind, c.holder_metadata) end as limit_
        from cased c
    ), timed as (
        select l.*,
               case l.verdict_
                   when 'expired_lease' then l.lease_expires_at
                   when 'slow_but_alive' then l.claimed_at
                   when 'worker_gone' then coalesce(l.holder_heartbeat_at, l.heartbeat_at, l.claimed_at)
                   when 'scheduled' then null
                   when 'no_live_worker' then l.run_at
                   when 'unhandled_kind' then l.run_at
                   when 'waiting_for_capacity' then l.run_at
                   else l.finished_at
               end as since_,
               l.verdict_ = 'slow_but_alive' and l.limit_ is not null
                   and l.claimed_at + l.limit_ < job_verdicts_at.as_of as over_limit
        from limited l
    )
    select t.id, t.external_id, t.queue, t.kind, t.status, t.verdict_,
           case t.verdict_ when 'expired_lease' then 'A' when 'slow_but_alive' then 'B'
                           when 'no_live_worker' then 'C' end,
           case t.verdict_
               when 'expired_lease' then 'lease expired, not reaped'
               when 'slow_but_alive' then 'running, lease valid: slow or waiting on an external call'
               when 'worker_gone' then 'running, lease still valid, but its worker is gone'
               when 'no_live_worker' then 'due, nobody claiming: no live worker serves its queue'
               when 'unhandled_kind' then 'due, nobody claiming: no live worker handles its kind'
               when 'waiting_for_capacity' then 'due, waiting for a free worker slot'
               when 'scheduled' then 'scheduled for later'
               when 'dead' then 'dead, will not be retried'
               when 'cancelled' then 'cancelled'
               when 'succeeded' then 'succeeded'
           end,
           t.verdict_ in ('expired_lease', 'worker_gone', 'no_live_worker', 'unhandled_kind') or t.over_limit,
           case t.verdict_
               when 'expired_lease' then format(
                   'The lease held by %s expired %s ago and no worker has reaped the job; %s',
                   coalesce(t.lease_owner, '(unknown)'),
                   stuckless.human_interval(job_verdicts_at.as_of - t.lease_expires_at),
                   case when t.queue_served
                        then 'live workers serve its queue, so their reaper should take it back within its reap interval: if it persists, they cannot reach this database or are wedged.'
                        else format('no live worker serves queue %s, so only stuckless.reap() (pg_cron) or a new worker will take it back.', t.queue) end)
               when 'slow_but_alive' then
                   case when t.over_limit then format(
                       'Running for %s with a live heartbeat, past its time limit of %s by %s: its worker should have cancelled the attempt; the handler is probably hung where it cannot be cancelled.',
                       stuckless.human_interval(job_verdicts_at.as_of - t.claimed_at),
                       stuckless.human_interval(t.limit_),
                       stuckless.human_interval(job_verdicts_at.as_of - t.claimed_at - t.limit_))
                   else format(
                       'Running for %s on live worker %s, its lease renewed by heartbeats: slow, not stuck (time limit %s).',
                       stuckless.human_interval(job_verdicts_at.as_of - t.claimed_at), t.lease_owner,
                       coalesce(stuckless.human_interval(t.limit_), 'none')) end
               when 'worker_gone' then format(
                   'Running, but its worker %s is %s; the lease runs out in %s, then a reaper (a worker or stuckless.reap()) takes the job back.',
                   coalesce(t.lease_owner, '(unknown)'),
                   case when t.holder_registered then 'stale (no registry heartbeat within ' || stuckless.human_interval(job_verdicts_at.stale_after) || ')'
                        else 'not registered' end,
                   stuckless.human_interval(t.lease_expires_at - job_verdicts_at.as_of))
               when 'no_live_worker' then format(
                   'Due for %s, but no live worker serves queue %s: none is running, they poll other queues, or they cannot reach this database.',
                   stuckless.human_interval(job_verdicts_at.as_of - t.run_at), t.queue)
               when 'unhandled_kind' then format(
                   'Due for %s; live workers serve queue %s but none handles kind %s, so the job waits for one that does.',
                   stuckless.human_interval(job_verdicts_at.as_of - t.run_at), t.queue, t.kind)
               when 'waiting_for_capacity' then format(
                   'Due for %s; live workers serve its queue and claim it when a slot frees.',
                   stuckless.human_interval(job_verdicts_at.as_of - t.run_at))
               when 'scheduled' then format('Scheduled to run in %s.',
                   stuckless.human_interval(t.run_at - job_verdicts_at.as_of))
               when 'dead' then format('Dead after %s of %s attempt(s); last error: %s.',
                   t.attempt, t.max_attempts, coalesce(t.last_error, '(none)'))
               when 'cancelled' then 'Cancelled; it will never run again.'
               else 'Succeeded.'
           end,
           t.since_,
           job_verdicts_at.as_of - t.since_,
           t.limit_,
           case t.verdict_
               when 'expired_lease' then format('stuckless requeue %s', t.id)
               when 'worker_gone' then format('stuckless requeue %s --force', t.id)
               when 'no_live_worker' then format('stuckless worker --queues %s', t.queue)
               when 'unhandled_kind' then format('stuckless worker --queues %s --handler %s=<handler>', t.queue, t.kind)
               when 'dead' then format('stuckless requeue %s', t.id)
           end,
           case t.verdict_
               when 'expired_lease' then 'select stuckless.reap()'
           end
    from timed t
    order by t.id
$$;

comment on function stuckless.job_verdicts_at(timestamptz, interval, bigint) is
  'The stuckless diagnose verdict of each unfinished job (or of only_job) as of as_of: what is wrong in plain words, since when, and the safe fix.';

create function stuckless.job_verdicts(stale_after interval default interval '90 seconds')
returns table (
    job_id bigint, external_id text, queue text, kind text, status text, verdict text, scenario text,
    title text, stuck boolean, problem text, since timestamptz, for_how_long interval,
    time_limit interval, fix text, fix_in_sql text
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select * from stuckless.job_verdicts_at(now(), job_verdicts.stale_after) $$;

comment on function stuckless.job_verdicts(interval) is
  'The diagnose verdict of every unfinished job, now.';

-- The id a person pastes (a stuckless id, or the external id of an imported
-- job) as the job's id; NULL when no job has it.
create function stuckless.job_id_of(job text) returns bigint
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id bigint;
begin
    select j.id into v_id from stuckless.jobs j where j.external_id = job_id_of.job;
    if v_id is null and job_id_of.job ~ '^[0-9]{1,18}$' then
        select j.id into v_id from stuckless.jobs j where j.id = job_id_of.job::bigint;
    end if;
    return v_id;
end
$$;

comment on function stuckless.job_id_of(text) is
  'The job id for a stuckless id or an external id (e.g. an imported UUID); NULL if none.';

create function stuckless.job_verdict(job text, stale_after interval default interval '90 seconds')
returns table (
    job_id bigint, external_id text, queue text, kind text, status text, verdict text, scenario text,
    title text, stuck boolean, problem text, since timestamptz, for_how_long interval,
    time_limit interval, fix text, fix_in_sql text
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select * from stuckless.job_verdicts_at(now(), job_verdict.stale_after, stuckless.job_id_of(job_verdict.job))
    where stuckless.job_id_of(job_verdict.job) is not null
$$;

comment on function stuckless.job_verdict(text, interval) is
  'One job''s diagnose verdict now, by stuckless id or external id: select * from stuckless.job_verdict(''42'').';

create view stuckless.stuck_jobs as
    select v.job_id, v.external_id, v.queue, v.kind, v.verdict, v.scenario, v.problem, v.since,
           v.for_how_long, v.fix, v.fix_in_sql
    from stuckless.job_verdicts() v
    where v.stuck
    order by v.since, v.job_id;

comment on view stuckless.stuck_jobs is
  'Jobs that need someone, now: lease expired and not reaped, worker gone, past its time limit, or due with no live worker for its queue or kind; what is wrong, since when, and the safe fix.';

-- One row per queue (every queue with unfinished jobs or a live worker), for
-- alerting: counts by state, what is stuck by cause, live workers, and the
-- age of the oldest due job and of the oldest expired lease.
create function stuckless.health_at(as_of timestamptz, stale_after interval default interval '90 seconds')
returns table (
    queue                     text,
    due                       bigint,
    scheduled                 bigint,
    running                   bigint,
    expired_leases            bigint,
    stuck_expired_lease       bigint,
    stuck_worker_gone         bigint,
    stuck_over_time_limit     bigint,
    stuck_no_live_worker      bigint,
    stuck_unhandled_kind      bigint,
    stuck                     bigint,
    live_workers              bigint,
    oldest_due_age            interval,
    oldest_expired_lease_age  interval
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    with v as (
        select * from stuckless.job_verdicts_at(health_at.as_of, health_at.stale_after)
    ), j as (
        select v.queue,
               count(*) filter (where v.status = 'queued' and v.verdict <> 'scheduled') as due,
               count(*) filter (where v.verdict = 'scheduled') as scheduled,
               count(*) filter (where v.status = 'running' and v.verdict <> 'expired_lease') as running,
               count(*) filter (where v.verdict = 'expired_lease') as expired_leases,
               count(*) filter (where v.verdict = 'worker_gone') as worker_gone,
               count(*) filter (where v.verdict = 'slow_but_alive' and v.stuck) as over_time_limit,
               count(*) filter (where v.verdict = 'no_live_worker') as no_live_worker,
               count(*) filter (where v.verdict = 'unhandled_kind') as unhandled_kind,
               count(*) filter (where v.stuck) as stuck,
               max(v.for_how_long) filter (where v.status = 'queued' and v.verdict <> 'scheduled') as oldest_due_age,
               max(v.for_how_long) filter (where v.verdict = 'expired_lease') as oldest_expired_lease_age
        from v group by v.queue
    ), w as (
        select q.queue, count(*) as live_workers
        from stuckless.workers wk, unnest(wk.queues) as q(queue)
        where health_at.as_of - wk.last_heartbeat_at <= health_at.stale_after
        group by q.queue
    )
    select coalesce(j.queue, w.queue),
           coalesce(j.due, 0), coalesce(j.scheduled, 0), coalesce(j.running, 0),
           coalesce(j.expired_leases, 0), coalesce(j.expired_leases, 0), coalesce(j.worker_gone, 0),
           coalesce(j.over_time_limit, 0), coalesce(j.no_live_worker, 0), coalesce(j.unhandled_kind, 0),
           coalesce(j.stuck, 0), coalesce(w.live_workers, 0),
           j.oldest_due_age, j.oldest_expired_lease_age
    from j full join w on w.queue = j.queue
    order by coalesce(j.queue, w.queue) collate "C"
$$;

comment on function stuckless.health_at(timestamptz, interval) is
  'One row per queue as of as_of, for alerting: due, scheduled, running, expired leases, stuck jobs by cause, live workers, oldest due and expired-lease ages.';

create function stuckless.health(stale_after interval default interval '90 seconds')
returns table (
    queue text, due bigint, scheduled bigint, running bigint, expired_leases bigint,
    stuck_expired_lease bigint, stuck_worker_gone bigint, stuck_over_time_limit bigint,
    stuck_no_live_worker bigint, stuck_unhandled_kind bigint, stuck bigint, live_workers bigint,
    oldest_due_age interval, oldest_expired_lease_age interval
)
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select * from stuckless.health_at(now(), health.stale_after) $$;

comment on function stuckless.health(interval) is
  'One row per queue now, for alerting (see stuckless.health_at).';
