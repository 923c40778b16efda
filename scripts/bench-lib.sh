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
