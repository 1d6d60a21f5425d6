-- Payloads every reader can read.
--
-- jsonb holds numbers of any size; the workers (Rust's serde_json, like most
-- JSON readers) read numbers as 64-bit floats and refuse one beyond their
-- range. A payload such as '{"n": 1e400}' was accepted by stuckless.enqueue
-- and only failed when a worker claimed it (the claim now buries such a row
-- as dead with the reason; see crates/pg/src/bury.rs). Refuse it at the door
-- instead, for every writer: a BEFORE INSERT trigger, so the check costs one
-- walk of the payload per insert and nothing on the updates of a job's life
-- (a CHECK constraint would run again on every heartbeat).

create function stuckless.refuse_unreadable_payload() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_number jsonb;
begin
    select n into v_number
    from jsonb_path_query(new.payload,
        'lax $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') as n
    limit 1;
    if v_number is not null then
        raise exception 'invalid payload: holds the number %, outside the range of a 64-bit float (about ±1.8e308), which workers cannot read',
            case when length(v_number::text) > 24 then left(v_number::text, 12) || '…(' || length(v_number::text) || ' digits)'
                 else v_number::text end
            using errcode = '22023';
    end if;
    return new;
end
$$;

comment on function stuckless.refuse_unreadable_payload() is
  'Refuses a job whose payload holds a number no worker can read (beyond the 64-bit float range).';

create trigger jobs_refuse_unreadable_payload
    before insert on stuckless.jobs
    for each row execute function stuckless.refuse_unreadable_payload();
