#!/usr/bin/env bash
# Side-by-side: Redis 7 and kvstore under the same clients, in one run, on loopback.
#
#   scripts/bench-vs-redis.sh    (BENCH_N=200000 requests per unpipelined redis-benchmark
#                                 test, BENCH_N_P16=5x that per -P 16 test)
#
# Systems: Redis (appendfsync everysec | appendonly no | appendfsync always), one kvstore node
# (--fsync interval ≈ everysec, --fsync batch ≈ always) and a 3-node kvstore cluster (N3 R2 W2),
# each kvstore at --cores 1 and --cores 2. Workloads: redis-benchmark -t set,get -d 100
# -r 100000 -c 50, without and with -P 16, and `kv bench --protocol resp` (50/50) as a second
# client. Redis everysec runs first and again last (the box drifts). Prints one markdown
# table: ops/s, p50/p99 (ms), the ratio to the mean of the two Redis everysec runs, and the
# server's CPU per request (utime + stime of every server process, from /proc/PID/stat,
# over that workload alone; SET and GET run as separate redis-benchmark invocations).
# Installs redis-server/redis-tools when missing. Data under target/bench-vs-redis.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-200000}
# Pipelined runs are ~10x faster: more requests, so they are not over before warming up.
N_P16=${BENCH_N_P16:-$((N * 5))}
KV_OPS=${BENCH_KV_OPS:-200000}
DIR=$PWD/target/bench-vs-redis
BIN=target/release
REDIS_PORT=7501
KV_PORT=7511
CL_PORT=7521

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_prepare "$DIR"

rows=()

# redis-benchmark SET, then GET: system label, port, pipeline depth.
rb() {
  local label=$1 port=$2 pipe=$3 args=() n=$N t out c0 c1
  [ "$pipe" != 1 ] && args=(-P "$pipe") && n=$N_P16
  for t in set get; do
    c0=$(cpu_ticks)
    out=$(redis-benchmark -p "$port" -t "$t" -n "$n" -c 50 -d 100 -r 100000 "${args[@]}" \
      --csv 2>/dev/null)
    c1=$(cpu_ticks)
    while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
      test=${test//\"/}
      [ "$test" = test ] && continue
      rows+=("$label|redis-benchmark $test -P $pipe|${rps//\"/}|${p50//\"/}|${p99//\"/}|$(cpu_us "$c0" "$c1" "$n")")
    done <<<"$out"
  done
}

# kv bench --protocol resp, 50/50: system label, port.
kvb() {
  local label=$1 port=$2 json rps p50 p99 c0 c1
  c0=$(cpu_ticks)
  json=$("$BIN/kv" --port "$port" bench --protocol resp --threads 2 --connections 50 \
    --ops "$KV_OPS" --ratio 0.5 --value-size 100 --keys 100000 --json)
  rps=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["ops_per_s"]))' "$json")
  p50=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(max(d["read"]["p50_us"],d["write"]["p50_us"])/1000)' "$json")
  p99=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(max(d["read"]["p99_us"],d["write"]["p99_us"])/1000)' "$json")
  c1=$(cpu_ticks)
  rows+=("$label|kv bench resp 50/50|$rps|$p50|$p99|$(cpu_us "$c0" "$c1" "$KV_OPS")")
}

workloads() { # label port
  echo "-- $1" >&2
  rb "$1" "$2" 1
  rb "$1" "$2" 16
  kvb "$1" "$2"
}

redis_run() { # label, redis args...
  local label=$1
  shift
  mkdir -p "$DIR/$label"
  redis-server --port "$REDIS_PORT" --dir "$DIR/$label" --save "" --daemonize no \
    --logfile "$DIR/$label.log" "$@" &
  pids+=($!)
  wait_ping "$REDIS_PORT"
  workloads "$label" "$REDIS_PORT"
  stop_all
}

kv_single() { # label cores fsync
  mkdir -p "$DIR/$1"
  RUST_LOG=warn "$BIN/kvstore-node" --node-id single --port "$KV_PORT" --data-dir "$DIR/$1" \
    --cores "$2" --fsync "$3" 2>>"$DIR/$1.log" &
  pids+=($!)
  wait_ping "$KV_PORT"
  workloads "$1" "$KV_PORT"
  stop_all
}

kv_cluster() { # label cores
  local i port seed=()
  for i in 1 2 3; do
    port=$((CL_PORT + i - 1))
    mkdir -p "$DIR/$1-n$i"
    RUST_LOG=warn "$BIN/kvstore-node" --node-id "node$i" --port "$port" \
      --data-dir "$DIR/$1-n$i" --cores "$2" "${seed[@]}" 2>>"$DIR/$1-n$i.log" &
    pids+=($!)
    wait_ping "$port"
    seed=(--seed "127.0.0.1:$CL_PORT")
  done
  for _ in $(seq 1 300); do
    [ "$("$BIN/kv" --port "$CL_PORT" info | grep -c ' ALIVE ')" = 3 ] && break
    sleep 0.1
  done
  workloads "$1" "$CL_PORT"
  stop_all
}

redis_run "redis everysec" --appendonly yes --appendfsync everysec
redis_run "redis no-aof" --appendonly no
redis_run "redis always" --appendonly yes --appendfsync always
kv_single "kvstore 1 node interval c1" 1 interval
kv_single "kvstore 1 node interval c2" 2 interval
kv_single "kvstore 1 node batch c1" 1 batch
kv_single "kvstore 1 node batch c2" 2 batch
kv_cluster "kvstore 3 nodes N3R2W2 c1" 1
kv_cluster "kvstore 3 nodes N3R2W2 c2" 2
# Redis again at the end: the box drifts (other tenants, thermal); the ratios use the mean.
redis_run "redis everysec (end)" --appendonly yes --appendfsync everysec

echo
echo "$(nproc) CPUs, $(uname -r), $(redis-server --version | awk '{print $3}'), $(date -u +%F)"
echo
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
runs = {}
for s, w, r, *_ in rows:
    if s.startswith("redis everysec"):
        runs.setdefault(w, []).append(float(r))
base = {w: sum(v) / len(v) for w, v in runs.items()}
print("| system | workload | ops/s | p50 ms | p99 ms | × Redis everysec (mean of both runs) | server CPU µs/req |")
print("|---|---|---:|---:|---:|---:|---:|")
for s, w, r, p50, p99, cpu in rows:
    ratio = float(r) / base[w] if base.get(w) else float("nan")
    print(f"| {s} | {w} | {float(r):,.0f} | {float(p50):.3f} | {float(p99):.3f} | {ratio:.2f} | {cpu} |")
'
