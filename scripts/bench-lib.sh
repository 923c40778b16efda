# Shared by scripts/bench-vs-redis.sh and scripts/cpu-per-request.sh (sourced, not run).
# Callers keep the server processes under test in the array `pids`.

TCK=$(getconf CLK_TCK)

wait_ping() { # port
  for _ in $(seq 1 300); do
    if redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers PING on port $1" >&2
  return 1
}

# CPU ticks (utime + stime) of the server processes under test, all summed.
cpu_ticks() {
  local t=0 p
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# Server CPU µs per request between two cpu_ticks readings, over `n` requests.
cpu_us() { python3 -c "print(f'{($2 - $1) * 1e6 / $TCK / $3:.1f}')" "$@"; }

# The common start of a benchmark script: test dependencies installed, a release build, an
# empty data dir `$1`, and every server in `pids` killed on exit.
bench_prepare() { # dir
  bash scripts/install-test-deps.sh
  cargo build --release --quiet
  rm -rf "$1"
  mkdir -p "$1"
  pids=()
  trap stop_all EXIT
}

# Stop every server in `pids` and wait for it.
stop_all() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  pids=()
}

# Three one-core kvstore nodes on ports base+1..base+3 (data and logs under dir/c<i>), joined
# through the first; returns once the first sees all three ALIVE.
start_cluster3() { # base_port dir
  local i seed=()
  for i in 1 2 3; do
    "${BIN:-target/release}/kvstore-node" --node-id "c$i" --port "$(($1 + i))" --data-dir "$2/c$i" \
      --cores 1 "${seed[@]}" >"$2/c$i.log" 2>&1 &
    pids+=($!)
    wait_ping "$(($1 + i))"
    seed=(--seed "127.0.0.1:$(($1 + 1))")
  done
  for _ in $(seq 1 100); do
    [ "$("${BIN:-target/release}/kv" --port "$(($1 + 1))" info 2>/dev/null | grep -c ' ALIVE ')" = 3 ] &&
      break
    sleep 0.1
  done
}
