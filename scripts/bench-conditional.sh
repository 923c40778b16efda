#!/usr/bin/env bash
# Conditional writes against plain SET and against Redis, in one run, on loopback.
#
#   scripts/bench-conditional.sh    (BENCH_N=50000 requests per test; BENCH_BIN=DIR: the
#                                    kvstore-node and kv to run, default target/release)
#
# Systems: Redis 7 (appendfsync everysec), one kvstore node (--cores 1) and a 3-node kvstore
# cluster (N3 R2 W2, --cores 1 each). Workloads, unpipelined redis-benchmark -c 50: plain SET
# (-d 100 -r 100000), SET NX on random keys, INCR on random keys (-t incr -r 100000), INCR of
# one hot key, and redis-benchmark's LPUSH then RPOP (one list, `mylist`, -d 3, a tenth of
# the requests: a kvstore list is one value, rewritten whole by each change), and EXPIRE of
# the keys the SET wrote (-r 100000). Prints a markdown table: ops/s, p50 and p99 (ms), and the ratio to the same
# system's plain SET. Data under target/bench-conditional.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-50000}
DIR=$PWD/target/bench-conditional
BIN=${BENCH_BIN:-target/release}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_prepare "$DIR"

echo "| system | workload | ops/s | p50 ms | p99 ms | × its SET |"
echo "|---|---|---|---|---|---|"

run() { # label port
  local label=$1 port=$2 set_rps=""
  local -a names=("SET" "SET NX" "INCR" "INCR one key" "LPUSH one list" "RPOP one list" "EXPIRE")
  local -a argv
  for i in 0 1 2 3 4 5 6; do
    case $i in
      0) argv=(-t set -d 100 -r 100000) ;;
      1) argv=(-r 100000 set "key:__rand_int__" v NX) ;;
      2) argv=(-t incr -r 100000) ;;
      3) argv=(incr hot) ;;
      4) argv=(-t lpush -d 3) ;;
      5) argv=(-t rpop) ;;
      6) argv=(-r 100000 expire "key:__rand_int__" 1000) ;;
    esac
    local line rps p50 p99 n=$N
    [ "$i" -ge 4 ] && [ "$i" -le 5 ] && n=$((N / 10))
    line=$(redis-benchmark -p "$port" -n "$n" -c 50 --csv "${argv[@]}" 2>/dev/null | tail -1 || true)
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"${line//\"/}"
    [ -z "$set_rps" ] && set_rps=$rps
    ratio=$(python3 -c "print(f'{$rps / $set_rps:.2f}')")
    echo "| $label | ${names[$i]} | ${rps%.*} | $p50 | $p99 | $ratio |"
  done
}

redis-server --port 7601 --save '' --appendonly yes --appendfsync everysec \
  --dir "$DIR" >"$DIR/redis.log" 2>&1 &
pids+=($!)
wait_ping 7601
run "Redis everysec" 7601
stop_all

"$BIN/kvstore-node" --node-id b1 --port 7611 --data-dir "$DIR/one" --cores 1 \
  >"$DIR/one.log" 2>&1 &
pids+=($!)
wait_ping 7611
run "kvstore, one node" 7611
stop_all

start_cluster3 7620 "$DIR"
run "kvstore, 3 nodes" 7621
stop_all
