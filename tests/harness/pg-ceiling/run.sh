#!/usr/bin/env bash
# The Postgres-only ceiling of the worker's claim + batched completion SQL:
# no client library, no worker, just pgbench running the two statements.
#   tests/harness/pg-ceiling/run.sh [jobs] [clients] [separate|combined]
# `separate` (default) runs the worker's two statements (claim_complete.sql);
# `combined` completes the previous batch and claims the next in one
# statement (complete_and_claim.sql), one commit per cycle.
# Needs psql, pgbench and a server at DATABASE_URL where the user may create
# a database; builds a throwaway database with the repository's migrations
# and drops it afterwards. Prints jobs/s = transactions/s × batch (100).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
jobs=${1:-200000}
clients=${2:-2}
case ${3:-separate} in
  separate) script=claim_complete.sql ;;
  combined) script=complete_and_claim.sql ;;
  *) echo "the third argument is separate or combined, not ${3}" >&2; exit 2 ;;
esac
# Each client runs a fixed number of cycles that together claim 90% of the
# jobs, so no cycle runs on an empty queue (which would count as a fast one).
cycles=$((jobs * 9 / 10 / clients / 100))
db=stuckless_ceiling_$$
base=${url%/*}
psql "$url" -qc "create database $db"
trap 'psql "$url" -qc "drop database if exists $db" >/dev/null' EXIT
for m in "$root"/migrations/*.sql; do
  # One transaction per file, as sqlx applies them.
  psql "$base/$db" -q -1 -v ON_ERROR_STOP=1 -f "$m" >/dev/null
done
psql "$base/$db" -q -v ON_ERROR_STOP=1 -c "
  insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
  select 'default', 'noop', '{}', now(), now(), now() from generate_series(1, $jobs);" \
  -c "vacuum analyze stuckless.jobs"
out=$(pgbench -n -M extended -c "$clients" -j "$clients" -t "$cycles" -D ids='{}' -D epochs='{}' -f "$here/$script" "$base/$db")
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
left=$(psql "$base/$db" -Atc "select count(*) from stuckless.jobs where status = 'queued'")
done_jobs=$(psql "$base/$db" -Atc "select count(*) from stuckless.jobs where status = 'succeeded'")
echo "$out" | grep -E '^(number of clients|latency average|tps)'
awk -v tps="$tps" -v left="$left" -v done_jobs="$done_jobs" -v jobs="$jobs" -v script="$script" 'BEGIN {
  printf "ceiling script=%s jobs_per_s=%.0f (tps %.1f x batch 100) queued_left=%d succeeded=%d of %d\n", script, tps * 100, tps, left, done_jobs, jobs }'
