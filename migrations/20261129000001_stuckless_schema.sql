-- stuckless schema, version 1.
--
-- Everything lives in the schema `stuckless`, so the queue can sit beside an
-- application's own tables (a Supabase database, say) without name clashes.
-- Timestamps are timestamptz (microsecond resolution, the same as the Rust
-- `Timestamp`); the Rust side moves them as bigint microseconds through
-- `stuckless.from_micros` / `stuckless.to_micros`, which are exact.

create schema if not exists stuckless;

-- Exact conversions between timestamptz and microseconds since the Unix epoch.
-- Integer arithmetic on whole seconds and microseconds, so no float rounding.
create function stuckless.from_micros(micros bigint) returns timestamptz
language sql immutable strict parallel safe
as $$
  select timestamptz 'epoch'
       + (micros / 1000000) * interval '1 second'
       + (micros % 1000000) * interval '1 microsecond'
$$;

create function stuckless.to_micros(t timestamptz) returns bigint
language sql immutable strict parallel safe
as $$ select (extract(epoch from t) * 1000000)::bigint $$;

-- A duration in microseconds as an interval, exactly (for leases and delays).
create function stuckless.micros(m bigint) returns interval
language sql immutable strict parallel safe
as $$ select (m / 1000000) * interval '1 second' + (m % 1000000) * interval '1 microsecond' $$;

create table stuckless.jobs (
    id               bigint generated always as identity primary key,
    queue            text        not null check (queue ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    kind             text        not null check (kind ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    payload          jsonb       not null,
    priority         smallint    not null default 0,
    run_at           timestamptz not null,
    status           text        not null default 'queued'
                     check (status in ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    attempt          integer     not null default 0 check (attempt >= 0),
    max_attempts     integer     not null default 5 check (max_attempts between 1 and 1000),
    -- Fencing token: bumped by every claim; every later write presents it.
    epoch            bigint      not null default 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    claimed_at       timestamptz,
    heartbeat_at     timestamptz,
    progress         jsonb,
    last_error       text,
    idempotency_key  text unique check (octet_length(idempotency_key) between 1 and 255),
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    finished_at      timestamptz,
    -- A running job always has a lease; no other status has one.
    constraint lease_iff_running check ((status = 'running') = (lease_expires_at is not null))
);

comment on table stuckless.jobs is
  'stuckless jobs: one row per job, carrying its latest attempt. Write through the stuckless.* functions or the Rust API.';

-- The claim: an index scan over queued jobs only, in claim order per queue.
create index jobs_claim_idx on stuckless.jobs (queue, priority desc, run_at, id)
  where status = 'queued';

-- The reaper: running jobs by lease expiry.
create index jobs_lease_idx on stuckless.jobs (lease_expires_at)
  where status = 'running';

-- Timelines and "what changed since": operators' views.
create index jobs_updated_idx on stuckless.jobs (updated_at);

create table stuckless.job_events (
    id        bigint generated always as identity primary key,
    job_id    bigint      not null references stuckless.jobs (id) on delete cascade,
    at        timestamptz not null,
    kind      text        not null check (kind in ('inserted', 'claimed', 'completed', 'retried',
                                                   'dead', 'reaped', 'released', 'cancelled', 'requeued')),
    epoch     bigint      not null,
    attempt   integer     not null,
    worker_id text,
    detail    text
);

create index job_events_job_idx on stuckless.job_events (job_id, id);
create index job_events_at_idx on stuckless.job_events (at);

create table stuckless.workers (
    id                text        primary key,
    queues            text[]      not null,
    concurrency       bigint      not null,
    metadata          jsonb       not null,
    started_at        timestamptz not null,
    last_heartbeat_at timestamptz not null,
    in_flight         bigint      not null default 0
);

-- Wake-ups: every insert into jobs, from Rust, from stuckless.enqueue or from a
-- plain INSERT in any language, notifies channel `stuckless_jobs` once per
-- queue and statement, with the queue name as payload. Workers LISTEN; a lost
-- notification is covered by their slow poll.
create function stuckless.notify_inserted() returns trigger
language plpgsql
as $$
begin
  perform pg_notify('stuckless_jobs', q.queue) from (select distinct queue from inserted) q;
  return null;
end
$$;

create trigger jobs_notify_insert
  after insert on stuckless.jobs
  referencing new table as inserted
  for each statement execute function stuckless.notify_inserted();
