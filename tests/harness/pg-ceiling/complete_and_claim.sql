-- One worker cycle in ONE statement, Postgres only: complete the batch the
-- previous cycle claimed (the fenced unnest update) and claim the next, so
-- a cycle costs one commit instead of two. Not what the worker does today:
-- the ceiling a combined storage operation would have (run.sh ... combined).
-- The first cycle's :ids and :epochs are empty arrays (pgbench -D).
\set batch 100
with input as (
    select i.id, i.epoch from unnest(:ids::bigint[], :epochs::bigint[]) as i(id, epoch)
), done as (
    update stuckless.jobs j
    set status = 'succeeded', lease_expires_at = null, updated_at = now(), finished_at = now()
    from input i
    where j.id = i.id and j.epoch = i.epoch and j.status = 'running'
    returning j.id
), picked as (
    select j.id from stuckless.jobs j
    where j.status = 'queued' and j.queue = 'default' and j.run_at <= now()
    order by j.priority desc, j.run_at, j.id
    limit :batch
    for update of j skip locked
), upd as (
    update stuckless.jobs j
    set status = 'running', attempt = j.attempt + 1, epoch = j.epoch + 1, lease_owner = 'ceiling',
        lease_expires_at = now() + interval '30 seconds', claimed_at = now(), heartbeat_at = now(),
        progress = null, updated_at = now()
    from picked where j.id = picked.id
    returning j.id, j.epoch
)
select coalesce(array_agg(id), '{}') as ids, coalesce(array_agg(epoch), '{}') as epochs,
       (select count(*) from done) as completed
from upd \gset
