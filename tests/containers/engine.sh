#!/usr/bin/env bash
# Makes a Docker engine reachable for testcontainers, idempotently.
#
#   tests/containers/engine.sh start   # install docker.io if missing, start dockerd if not running
#   tests/containers/engine.sh stop    # stop the dockerd this script started (and nothing else)
#
# The daemon runs with --iptables=false --ip-forward=false --ip-masq=false, so
# the host's firewall rules and IP forwarding stay as they were; containers are
# reached through docker-proxy on the bridge gateway (--ip), which is where
# testcontainers connects when it believes it runs inside a container (the
# /.dockerenv marker file). Prints `engine=started` or `engine=already-running`.
set -euo pipefail

STATE_DIR="${STUCKLESS_DOCKER_STATE:-/var/tmp/stuckless-docker}"
PIDFILE="$STATE_DIR/dockerd.pid"
LOG="$STATE_DIR/dockerd.log"
# The bridge's gateway address and network; testcontainers connects to the gateway.
BRIDGE_IP="${STUCKLESS_DOCKER_BRIDGE_IP:-172.17.0.1}"
BRIDGE_CIDR="${STUCKLESS_DOCKER_BRIDGE_CIDR:-$BRIDGE_IP/16}"

say() { echo "engine: $*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" != 0 ]; then
    say "dockerd is missing and installing docker.io needs root"; exit 1
  fi
  say "installing Debian's docker.io"
  # No service may start during the install: the packaged init script would
  # start dockerd with its defaults, which rewrite the host's iptables.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >"$STATE_DIR/apt.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    apt-get update -q >>"$STATE_DIR/apt.log" 2>&1 || true
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >>"$STATE_DIR/apt.log" 2>&1 || rc=$?
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$rc" != 0 ]; then say "apt-get install docker.io failed; see $STATE_DIR/apt.log"; exit 1; fi
}

start() {
  mkdir -p "$STATE_DIR"
  if engine_up; then echo "engine=already-running"; return; fi
  install_engine
  say "starting dockerd (log $LOG)"
  # Its own process group, so it outlives this script and can be stopped alone.
  setsid dockerd \
    --iptables=false --ip-forward=false --ip-masq=false \
    --bip="$BRIDGE_CIDR" --ip="$BRIDGE_IP" \
    --pidfile=/var/run/docker.pid >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do
    if engine_up; then echo "engine=started"; return; fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      say "dockerd exited; last lines of $LOG:"; tail -n 20 "$LOG" >&2; exit 1
    fi
    sleep 1
  done
  say "dockerd did not answer within 60 s; see $LOG"; exit 1
}

stop() {
  if [ ! -f "$PIDFILE" ]; then say "no dockerd started by this script"; return; fi
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    # containerd is dockerd's child and ends with it.
  fi
  rm -f "$PIDFILE"
  echo "engine=stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
