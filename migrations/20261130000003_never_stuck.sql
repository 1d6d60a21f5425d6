-- Never stuck by default.
--
-- 1. No row can stall the queue. A run_at of '-infinity' (once accepted by
--    stuckless.enqueue) made every claim fail with "cannot convert infinity to
--    bigint", so every other job waited for ever. run_at must now be a finite
--    time in years 1 to 9999, the range the Rust side accepts. Rows written
--    before this check are made dead, with the reason, so nothing is lost and
--    the constraint can hold.
-- 2. A per-job limit on one attempt (timeout_us), beside the worker's per-kind
--    and default limits.
-- 3. Workers record the kinds they handle, so an operator can see that no
--    live worker handles a waiting job's kind.
-- 4. Indexes for retention (deleting finished jobs) and for the dead-job gauge,
--    so neither scans the whole table.
-- 5. stuckless.enqueue gains `timeout` and refuses an out-of-range run_at with
--    SQLSTATE 22023 naming the field. Its grants are carried over.

with poisoned as (
    update stuckless.jobs
    set status = 'dead',
        lease_expires_at = null,
        last_error = format('run_at %s is outside years 1 to 9999; made dead by a stuckless migration so it cannot stall claims', run_at),
        run_at = case when run_at < timestamptz '0001-01-01 00:00:00+00'
                      then timestamptz '0001-01-01 00:00:00+00'
                      else timestamptz '9999-12-31 23:59:59.999999+00' end,
        updated_at = now(),
        finished_at = coalesce(finished_at, now())
    where not (run_at between timestamptz '0001-01-01 00:00:00+00'
                          and timestamptz '9999-12-31 23:59:59.999999+00')
    returning id, epoch, attempt, last_error
)
insert into stuckless.job_events (job_id, at, kind, epoch, attempt, detail)
select id, now(), 'dead', epoch, attempt, last_error from poisoned;

alter table stuckless.jobs add constraint run_at_in_range
    check (run_at between timestamptz '0001-01-01 00:00:00+00'
                      and timestamptz '9999-12-31 23:59:59.999999+00');

-- Microseconds, like every duration stuckless stores; 1 µs to 7 days.
alter table stuckless.jobs add column timeout_us bigint
    constraint timeout_in_range check (timeout_us between 1 and 604800000000);

alter table stuckless.workers add column kinds text[] not null default '{}';

-- Retention: finished jobs, oldest first.
create index jobs_finished_idx on stuckless.jobs (finished_at, id)
    where status in ('succeeded', 'cancelled', 'dead');

-- The dead-job gauge counts per queue without reading succeeded rows.
create index jobs_dead_idx on stuckless.jobs (queue) where status = 'dead';

-- stuckless.enqueue with `timeout`: remember who may call the old one, drop
-- it (a second overload with defaults would make every call ambiguous), and
-- grant the new one to the same roles.
create temporary table stuckless_enqueue_grantees on commit drop as
select a.grantee::regrole::text as role
from pg_proc p, aclexplode(p.proacl) a
where p.oid = 'stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text)'::regprocedure
  and a.privilege_type = 'EXECUTE'
  and a.grantee <> 0
  and a.grantee <> p.proowner;

drop function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text);

create function stuckless.enqueue(
    queue           text,
    kind            text,
    payload         jsonb       default '{}'::jsonb,
    run_at          timestamptz default null,
    priority        smallint    default 0,
    max_attempts    integer     default 5,
    idempotency_key text        default null,
    timeout         interval    default null
) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_id bigint;
    v_size bigint;
    v_timeout_us numeric;
begin
    if enqueue.queue is null or enqueue.queue !~ '^[A-Za-z0-9_.:-]{1,128}$' then
        raise exception 'invalid queue: must be 1 to 128 bytes of ASCII letters, digits and _ - . : (got %)',
            coalesce(quote_literal(left(enqueue.queue, 140)), 'NULL')
            using errcode = '22023';
    end if;
    if enqueue.kind is null or enqueue.kind !~ '^[A-Za-z0-9_.:-]{1,128}$' then
        raise exception 'invalid kind: must be 1 to 128 bytes of ASCII letters, digits and _ - . : (got %)',
            coalesce(quote_literal(left(enqueue.kind, 140)), 'NULL')
            using errcode = '22023';
    end if;
    if enqueue.payload is null then
        raise exception 'invalid payload: must not be SQL NULL (pass ''null''::jsonb for a JSON null)'
            using errcode = '22023';
    end if;
    -- jsonb's text form (with a space after : and ,) is what is measured here;
    -- the limit is the Rust one, 1 MiB.
    v_size := octet_length(enqueue.payload::text);
    if v_size > 1048576 then
        raise exception 'invalid payload: is % bytes as JSON; the limit is 1048576', v_size
            using errcode = '22023';
    end if;
    if enqueue.run_at is not null
       and not (enqueue.run_at between timestamptz '0001-01-01 00:00:00+00'
                                   and timestamptz '9999-12-31 23:59:59.999999+00') then
        raise exception 'invalid run_at: must be a finite time between years 1 and 9999, got %', enqueue.run_at
            using errcode = '22023';
    end if;
    if enqueue.max_attempts is null or enqueue.max_attempts not between 1 and 1000 then
        raise exception 'invalid max_attempts: must be between 1 and 1000, got %', enqueue.max_attempts
            using errcode = '22023';
    end if;
    if enqueue.priority is null then
        raise exception 'invalid priority: must not be NULL' using errcode = '22023';
    end if;
    if enqueue.idempotency_key is not null
       and octet_length(enqueue.idempotency_key) not between 1 and 255 then
        raise exception 'invalid idempotency_key: must be 1 to 255 bytes, got %',
            octet_length(enqueue.idempotency_key)
            using errcode = '22023';
    end if;
    if enqueue.timeout is not null then
        -- extract(epoch …) is numeric on PostgreSQL 14+: exact to the microsecond.
        v_timeout_us := extract(epoch from enqueue.timeout) * 1000000;
        if v_timeout_us not between 1 and 604800000000 then
            raise exception 'invalid timeout: must be more than 0 and at most 7 days, got %', enqueue.timeout
                using errcode = '22023';
        end if;
    end if;

    -- An existing key answers with its job, without touching the sequence.
    if enqueue.idempotency_key is not null then
        select j.id into v_id from stuckless.jobs j where j.idempotency_key = enqueue.idempotency_key;
        if found then
            return v_id;
        end if;
    end if;
    -- A racing insert of the same key: the no-op update returns its row.
    insert into stuckless.jobs
        (queue, kind, payload, priority, run_at, max_attempts, idempotency_key, timeout_us, created_at, updated_at)
    values
        (enqueue.queue, enqueue.kind, enqueue.payload, enqueue.priority, coalesce(enqueue.run_at, now()),
         enqueue.max_attempts, enqueue.idempotency_key, v_timeout_us::bigint, now(), now())
    on conflict (idempotency_key) do update set idempotency_key = excluded.idempotency_key
    returning id into v_id;
    return v_id;
end
$$;

comment on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text, interval) is
  'Enqueue a job; returns its id. An idempotency key already used returns the existing job''s id. timeout: this job''s limit on one attempt (default: the worker''s).';

revoke execute on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text, interval) from public;

do $$
declare
    r record;
begin
    for r in select role from stuckless_enqueue_grantees loop
        execute format(
            'grant execute on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text, interval) to %s',
            r.role);
    end loop;
end
$$;

create or replace function stuckless.job_state(job_id bigint) returns jsonb
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object(
        'id', j.id, 'queue', j.queue, 'kind', j.kind, 'payload', j.payload, 'priority', j.priority,
        'run_at', j.run_at, 'status', j.status, 'attempt', j.attempt, 'max_attempts', j.max_attempts,
        'timeout', stuckless.micros(j.timeout_us),
        'epoch', j.epoch, 'lease_owner', j.lease_owner, 'lease_expires_at', j.lease_expires_at,
        'lease_expired', (j.status = 'running' and j.lease_expires_at <= now()),
        'claimed_at', j.claimed_at, 'heartbeat_at', j.heartbeat_at, 'progress', j.progress,
        'last_error', j.last_error, 'idempotency_key', j.idempotency_key, 'created_at', j.created_at,
        'updated_at', j.updated_at, 'finished_at', j.finished_at)
    from stuckless.jobs j
    where j.id = job_state.job_id
$$;
