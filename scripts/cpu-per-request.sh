#!/usr/bin/env bash
# Server CPU per request, A/B: Redis 7 (appendfsync everysec) and one kvstore node per binary
# and core count, alternating, ROUNDS rounds, one line per run:
#
#   scripts/cpu-per-request.sh [NODE_BINARY ...]     (default: target/release/kvstore-node)
#   ROUNDS=3 N=200000 CORES="1 2" REDIS=1 scripts/cpu-per-request.sh old-node new-node
#
# Each run: redis-benchmark -t set, then -t get (-n N -c 50 -d 100 -r 100000), and for each the
# ops/s, p50 and the server's CPU per request (utime + stime from /proc/PID/stat over that test
# alone, divided by N). This box is noisy: compare medians of alternating rounds.
# SYSCALLS=1 also counts io_uring_enter, eventfd writes and context switches (perf stat).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N=${N:-200000}
CORES=${CORES:-"1 2"}
REDIS=${REDIS:-1}
PORT=${PORT:-7541}
DIR=$PWD/target/cpu-per-request
[ $# -gt 0 ] || set -- target/release/kvstore-node
command -v redis-benchmark >/dev/null || bash scripts/install-test-deps.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; true' EXIT

one() { # label command...
  local label=$1
  shift
  rm -rf "$DIR"
  mkdir -p "$DIR"
  "$@" >"$DIR.log" 2>&1 &
  pids=($!)
  wait_ping "$PORT"
  local line="$label" t before after r perfpid=
  for t in set get; do
    if [ "${SYSCALLS:-0}" = 1 ]; then
      perf stat -e 'syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write,context-switches' \
        -p "${pids[0]}" -o "$DIR.perf" 2>/dev/null &
      perfpid=$!
      sleep 0.3
    fi
    before=$(cpu_ticks)
    r=$(redis-benchmark -p "$PORT" -t "$t" -n "$N" -c 50 -d 100 -r 100000 -q 2>/dev/null |
      tr '\r' '\n' | grep 'requests per second' | tail -1)
    after=$(cpu_ticks)
    line="$line | $t $(echo "$r" | awk '{print $2}') ops/s $(echo "$r" | grep -o 'p50=[0-9.]*')"
    line="$line $(cpu_us "$before" "$after" "$N") µs"
    if [ -n "$perfpid" ]; then
      kill -INT "$perfpid"
      wait "$perfpid" || true
      line="$line [$(awk '/syscalls|context/ {printf "%s %s ", $1, $2}' "$DIR.perf" |
        sed 's/syscalls:sys_enter_//g')]"
      perfpid=
    fi
  done
  echo "$line"
  kill "${pids[0]}"
  wait "${pids[0]}" 2>/dev/null || true
  pids=()
}

for _ in $(seq 1 "$ROUNDS"); do
  if [ "$REDIS" = 1 ]; then
    one "redis everysec" redis-server --port "$PORT" --save '' --appendonly yes \
      --appendfsync everysec --dir "$DIR"
  fi
  for bin in "$@"; do
    for c in $CORES; do
      one "$bin --cores $c" "$bin" --node-id cpr --port "$PORT" --data-dir "$DIR" --cores "$c"
    done
  done
done
