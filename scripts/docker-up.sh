#!/usr/bin/env bash
# The one command for a 3-node kvstore cluster in Docker: builds the release binaries, makes
# the base image if it is missing (scripts/docker-base.sh, no registry needed), builds the
# image and runs docker-compose.yml down, then up. Ports: 127.0.0.1:7001-7003 (all protocols),
# 127.0.0.1:9101-9103 (/metrics).
#
#   scripts/docker-up.sh            start (or restart) the cluster, keep the data volumes
#   scripts/docker-up.sh --fresh    also drop the data volumes first
set -euo pipefail
cd "$(dirname "$0")/.."
# The same defaults as docker-compose.yml: every `kv` below authenticates with it.
export KVSTORE_PASSWORD=${KVSTORE_PASSWORD:-kvstore-dev-password}
export KVSTORE_CLUSTER_SECRET=${KVSTORE_CLUSTER_SECRET:-kvstore-dev-cluster-secret}

compose() {
  # Compose v2 (`docker compose`) where present, else v1 (`docker-compose`). v1 breaks when
  # recreating containers on Engine 25+ ('ContainerConfig' KeyError): use v2 there.
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose "$@"
  else
    echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
  fi
}

down_args=(--remove-orphans)
[ "${1:-}" = "--fresh" ] && down_args+=(--volumes)

cargo build --release --quiet
mkdir -p docker/bin
cp target/release/kvstore-node target/release/kv docker/bin/
if [ -z "${KVSTORE_BASE_IMAGE:-}" ]; then
  bash scripts/docker-base.sh
fi
compose build --quiet
compose down "${down_args[@]}" >/dev/null 2>&1 || true
compose up -d
echo "waiting for 3 members..."
for _ in $(seq 1 300); do
  members=$(./target/release/kv --port 7001 --timeout-ms 1000 info 2>/dev/null \
    | grep '^member ' | grep ' ALIVE ' | grep -vc ' role=' || true)
  [ "$members" = 3 ] && break
  sleep 0.2
done
if [ "$members" != 3 ]; then
  echo "the cluster did not form; logs:" >&2
  compose logs --tail 30 >&2
  exit 1
fi
./target/release/kv --port 7001 info | grep '^member '
echo "up: KVSTORE_PASSWORD=$KVSTORE_PASSWORD kv --port 7001 put hello world; redis-cli -p 7002 -a \"$KVSTORE_PASSWORD\" get hello"
