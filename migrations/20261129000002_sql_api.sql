-- The SQL API for other languages (psql, supabase-js `rpc`, any driver):
--   stuckless.enqueue(queue, kind, payload, run_at, priority, max_attempts, idempotency_key) -> job id
--   stuckless.cancel(job_id)    -> the job's state (jsonb)
--   stuckless.job_state(job_id) -> the job's state (jsonb), NULL when unknown
-- They enforce the same limits as the Rust `NewJob::validate` and follow the
-- same rules as the Rust `Storage` (idempotency, cancel), with the database's
-- clock. Bad input raises SQLSTATE 22023 (invalid_parameter_value) with a
-- message naming the field; nothing is written.
--
-- Privileges: the three functions are SECURITY DEFINER (they run with the
-- migrating role's rights, with a fixed search_path) and EXECUTE is revoked
-- from PUBLIC, so a caller needs exactly
--   grant usage on schema stuckless to app_role;
--   grant execute on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text),
--                             stuckless.cancel(bigint), stuckless.job_state(bigint) to app_role;
-- and no rights on the tables. (On Supabase: grant them to service_role, never to anon.)

create function stuckless.enqueue(
    queue           text,
    kind            text,
    payload         jsonb       default '{}'::jsonb,
    run_at          timestamptz default null,
    priority        smallint    default 0,
    max_attempts    integer     default 5,
    idempotency_key text        default null
) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_id bigint;
    v_size bigint;
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

    -- An existing key answers with its job, without touching the sequence.
    if enqueue.idempotency_key is not null then
        select j.id into v_id from stuckless.jobs j where j.idempotency_key = enqueue.idempotency_key;
        if found then
            return v_id;
        end if;
    end if;
    -- A racing insert of the same key: the no-op update returns its row.
    insert into stuckless.jobs
        (queue, kind, payload, priority, run_at, max_attempts, idempotency_key, created_at, updated_at)
    values
        (enqueue.queue, enqueue.kind, enqueue.payload, enqueue.priority, coalesce(enqueue.run_at, now()),
         enqueue.max_attempts, enqueue.idempotency_key, now(), now())
    on conflict (idempotency_key) do update set idempotency_key = excluded.idempotency_key
    returning id into v_id;
    return v_id;
end
$$;

comment on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text) is
  'Enqueue a job; returns its id. An idempotency key already used returns the existing job''s id.';

create function stuckless.job_state(job_id bigint) returns jsonb
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object(
        'id', j.id, 'queue', j.queue, 'kind', j.kind, 'payload', j.payload, 'priority', j.priority,
        'run_at', j.run_at, 'status', j.status, 'attempt', j.attempt, 'max_attempts', j.max_attempts,
        'epoch', j.epoch, 'lease_owner', j.lease_owner, 'lease_expires_at', j.lease_expires_at,
        'lease_expired', (j.status = 'running' and j.lease_expires_at <= now()),
        'claimed_at', j.claimed_at, 'heartbeat_at', j.heartbeat_at, 'progress', j.progress,
        'last_error', j.last_error, 'idempotency_key', j.idempotency_key, 'created_at', j.created_at,
        'updated_at', j.updated_at, 'finished_at', j.finished_at)
    from stuckless.jobs j
    where j.id = job_state.job_id
$$;

comment on function stuckless.job_state(bigint) is
  'A job''s state as JSON, or NULL if there is no such job.';

create function stuckless.cancel(job_id bigint) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
begin
    select j.status into v_status from stuckless.jobs j where j.id = cancel.job_id for update;
    if not found then
        raise exception 'job % not found', cancel.job_id using errcode = 'P0002';
    end if;
    if v_status in ('succeeded', 'dead') then
        raise exception 'job % is %; cancel needs it queued or running', cancel.job_id, v_status
            using errcode = '55000';
    end if;
    if v_status <> 'cancelled' then
        -- A running holder's later writes are refused: they need status running.
        update stuckless.jobs j
        set status = 'cancelled', lease_expires_at = null, updated_at = now(), finished_at = now()
        where j.id = cancel.job_id;
        insert into stuckless.job_events (job_id, at, kind, epoch, attempt)
        select j.id, now(), 'cancelled', j.epoch, j.attempt from stuckless.jobs j where j.id = cancel.job_id;
    end if;
    return stuckless.job_state(cancel.job_id);
end
$$;

comment on function stuckless.cancel(bigint) is
  'Cancel a queued or running job; returns its state. Cancelling twice is a no-op; a succeeded or dead job raises 55000.';

revoke execute on function stuckless.enqueue(text, text, jsonb, timestamptz, smallint, integer, text) from public;
revoke execute on function stuckless.cancel(bigint) from public;
revoke execute on function stuckless.job_state(bigint) from public;
