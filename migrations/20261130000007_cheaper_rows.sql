-- Cheaper rows on the hot path.
--
-- Every claim and completion writes a new row version, and a btree on
-- updated_at took a new entry for each (updated_at changes on every
-- transition, and a status change is never a HOT update anyway: status is in
-- the partial indexes' predicates). Only operators' "what changed since"
-- reads (`stuckless timeline`) use updated_at, over recent rows, which sit
-- together at the table's end in a queue's append-mostly table: a BRIN index
-- answers them for a few pages of summary instead of a btree entry per
-- transition.
drop index if exists stuckless.jobs_updated_idx;
create index jobs_updated_brin on stuckless.jobs using brin (updated_at) with (pages_per_range = 32);
