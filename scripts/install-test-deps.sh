#!/usr/bin/env bash
# Installs what the integration tests drive besides our own binaries: Debian's redis-tools
# (redis-cli, redis-benchmark) and redis-server (for scripts/bench-vs-redis.sh), faketime
# (libfaketime: one node with a wrong wall clock), iproute2 and nftables (network namespaces
# and partitions for the fault tests), and the `redis` package from PyPI. Idempotent; skips
# what is already there.
set -euo pipefail

need_apt=()
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || need_apt+=(faketime)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing ${need_apt[*]} with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts a redis-server on 6379 after install; the tests and benchmarks do not use it.
  ($SUDO systemctl stop redis-server || $SUDO service redis-server stop) >/dev/null 2>&1 || true
fi
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  echo "installing the redis package from PyPI"
  python3 -m pip install -q redis 2>/dev/null \
    || python3 -m pip install -q --break-system-packages redis
fi
