#!/usr/bin/env bash
# `make test-containers`: the Postgres suites through testcontainers, with
# DATABASE_URL unset, on this machine.
#
# 1. engine.sh start: Debian's docker.io, installed and started if missing
#    (host iptables and IP forwarding left as they were);
# 2. build-image.sh: the image the tests request ($STUCKLESS_PG_IMAGE, default
#    postgres:16-alpine), built locally if missing (no registry needed);
# 3. the suites: `cargo test -p stuckless-tests` and `-p stuckless-cli`;
#    each test process starts one container and removes it at exit;
# 4. any test container still there is removed, and a dockerd this script
#    started is stopped.
# Prints setup and total time, tests passed/failed, containers started/left.
set -uo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/containers
LOG_DIR="${TMPDIR:-/tmp}/stuckless-test-containers"
mkdir -p "$LOG_DIR"
IMAGE="${STUCKLESS_PG_IMAGE:-postgres:16-alpine}"
CARGO="${CARGO:-cargo}"
t0=$(date +%s)
since=$(date -u +%Y-%m-%dT%H:%M:%S)

engine=$("$HERE/engine.sh" start) || exit 1
cleanup() {
  local left
  left=$(docker ps -aq --filter label=stuckless.test=1 | wc -l)
  if [ "$left" != 0 ]; then
    echo "test-containers: removing $left leftover test container(s)"
    docker ps -aq --filter label=stuckless.test=1 | xargs -r docker rm -f >/dev/null
  fi
  if [ "$engine" = "engine=started" ] && [ "${KEEP_ENGINE:-0}" != 1 ]; then
    "$HERE/engine.sh" stop >/dev/null
    echo "test-containers: stopped the dockerd it started"
  fi
}
trap cleanup EXIT
"$HERE/build-image.sh" "$IMAGE" || exit 1
setup=$(( $(date +%s) - t0 ))
echo "test-containers: $engine image=$IMAGE setup_s=$setup"

unset DATABASE_URL
export STUCKLESS_PG_IMAGE="$IMAGE"
status=0
for pkg in stuckless-tests stuckless-cli; do
  echo "test-containers: cargo test -p $pkg (log $LOG_DIR/$pkg.log)"
  "$CARGO" test -p "$pkg" --no-fail-fast >"$LOG_DIR/$pkg.log" 2>&1 || status=1
  grep -E '^test result:|FAILED|panicked' "$LOG_DIR/$pkg.log" | sed 's/^/  /'
done

sum() { awk -v f="$1" '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ "^" f) n += $i } END { print n + 0 }' "$LOG_DIR"/stuckless-*.log; }
passed=$(sum passed)
failed=$(sum failed)
started=$(docker events --since "$since" --until "$(date -u +%Y-%m-%dT%H:%M:%S)" \
  --filter type=container --filter event=start --filter label=stuckless.test=1 --format '{{.ID}}' | sort -u | wc -l)
left=$(docker ps -aq --filter label=stuckless.test=1 | wc -l)
total=$(( $(date +%s) - t0 ))
echo "test-containers: passed=${passed:-0} failed=${failed:-0} containers_started=$started containers_left_by_tests=$left setup_s=$setup total_s=$total"
if [ "$left" != 0 ]; then
  echo "test-containers: test processes left $left container(s) behind"; status=1
fi
exit $status
