#!/usr/bin/env bash
# Hashes, sets and sorted sets against plain SET and against Redis, in one run, on loopback.
#
#   scripts/bench-collections.sh    (BENCH_N=100000 requests per test)
#
# Systems: Redis 7 (appendfsync everysec), one kvstore node (--cores 1) and a 3-node kvstore
# cluster (N3 R2 W2, --cores 1 each). Workloads, unpipelined redis-benchmark -c 50 -d 100
# -r 100000: SET, and redis-benchmark's HSET, SADD and ZADD (each on one key, growing to
# ~63,000 fields or members), then HSET on random keys. Prints a markdown table: ops/s, p50
# and p99 (ms), the ratio to the same system's SET and to Redis on the same workload. Then
# memory per field: 100,000 fields of 10-byte values in one hash, Redis's MEMORY USAGE
# against kvstore's used_memory grown (one node). Data under target/bench-collections.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-100000}
DIR=$PWD/target/bench-collections
BIN=target/release
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_prepare "$DIR"

echo "| system | workload | ops/s | p50 ms | p99 ms | × its SET | × Redis |"
echo "|---|---|---|---|---|---|---|"

declare -A redis_rps
run() { # label port
  local label=$1 port=$2 set_rps=""
  local -a names=("SET" "HSET one key" "SADD one key" "ZADD one key" "HSET random keys")
  local -a argv
  for i in 0 1 2 3 4; do
    case $i in
      0) argv=(-t set) ;;
      1) argv=(-t hset) ;;
      2) argv=(-t sadd) ;;
      3) argv=(-t zadd) ;;
      4) argv=(hset "h:__rand_int__" f v) ;;
    esac
    local line rps p50 p99
    line=$(redis-benchmark -p "$port" -n "$N" -c 50 -d 100 -r 100000 --csv "${argv[@]}" \
      2>>"$DIR/benchmark.err" | tail -1 || true)
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"${line//\"/}"
    if [ -z "$rps" ] || [ "$rps" = rps ]; then
      echo "| $label | ${names[$i]} | failed: $(tail -1 "$DIR/benchmark.err") | | | | |"
      continue
    fi
    [ -z "$set_rps" ] && set_rps=$rps
    [ "$label" = "Redis everysec" ] && redis_rps[$i]=$rps
    ratio=$(python3 -c "print(f'{$rps / $set_rps:.2f}')")
    vs=$(python3 -c "print(f'{$rps / ${redis_rps[$i]}:.2f}')")
    echo "| $label | ${names[$i]} | ${rps%.*} | $p50 | $p99 | $ratio | $vs |"
  done
}

# 100,000 `HSET memhash f<i> v<i>` (10-byte values) as RESP, for redis-cli --pipe.
fields() {
  python3 -c '
import sys
out = []
for i in range(100000):
    f, v = b"f%d" % i, b"v%09d" % i
    out.append(b"*4\r\n$4\r\nHSET\r\n$7\r\nmemhash\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(f), f, len(v), v))
sys.stdout.buffer.write(b"".join(out))'
}

redis-server --port 7701 --save '' --appendonly yes --appendfsync everysec \
  --dir "$DIR" >"$DIR/redis.log" 2>&1 &
pids+=($!)
wait_ping 7701
run "Redis everysec" 7701
fields | redis-cli -p 7701 --pipe >/dev/null
redis_mem=$(redis-cli -p 7701 memory usage memhash)
stop_all

"$BIN/kvstore-node" --node-id b1 --port 7711 --data-dir "$DIR/one" --cores 1 \
  >"$DIR/one.log" 2>&1 &
pids+=($!)
wait_ping 7711
run "kvstore, one node" 7711
used() { "$BIN/kv" --port 7711 info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["used_memory"])'; }
before=$(used)
rss0=$(ps -o rss= -p "${pids[0]}")
fields | redis-cli -p 7711 --pipe >/dev/null
rss1=$(ps -o rss= -p "${pids[0]}")
[ "$(redis-cli -p 7711 hlen memhash)" = 100000 ] || echo "memhash did not fill" >&2
kv_mem=$(( $(used) - before ))
stop_all

start_cluster3 7720 "$DIR"
run "kvstore, 3 nodes" 7721
stop_all

echo
echo "Memory of a 100,000-field hash (10-byte values): Redis $((redis_mem / 100000)) B/field" \
  "(MEMORY USAGE $redis_mem); kvstore $((kv_mem / 100000)) B/field by its own estimate" \
  "(used_memory grew $kv_mem), $(((rss1 - rss0) * 1024 / 100000)) B/field by RSS (WAL buffers included)"
