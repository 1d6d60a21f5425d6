-- Resumable jobs: checkpoints.
--
-- A claim clears `progress` (it describes one attempt), so a long job that a
-- scale-in or a crash interrupted started again from nothing. A checkpoint
-- is the state a handler saves as it goes (`JobContext::checkpoint` in
-- Rust), written under the attempt's epoch fence like a heartbeat, and kept
-- by claim, release, reap, retry, requeue and complete, so the next attempt
-- resumes from it. Both columns are NULL until the first checkpoint.
--
-- Adding nullable columns without defaults rewrites nothing: instant on a
-- table of any size. The size limit (1 MiB as compact JSON) is enforced by
-- every writer before it reaches the table, as the payload's is.

alter table stuckless.jobs
    add column checkpoint      jsonb,
    add column checkpointed_at timestamptz;

comment on column stuckless.jobs.checkpoint is
  'The latest checkpoint any attempt saved (at most 1 MiB as JSON); handed to the next attempt, kept across retries, reaps, releases and requeues.';
comment on column stuckless.jobs.checkpointed_at is
  'When the checkpoint was saved (database clock).';

-- job_state shows them too: the same keys as before, and the two new ones.
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
        || jsonb_build_object('checkpoint', j.checkpoint, 'checkpointed_at', j.checkpointed_at)
    from stuckless.jobs j
    where j.id = job_state.job_id
$$;
