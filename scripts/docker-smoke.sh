#!/usr/bin/env bash
# End-to-end check of the Docker cluster: up; 1,000 keys through node1, read through node3;
# stop node2; writes and reads still succeed; node1 sees node2 DEAD within the suspect timeout
# plus a margin; start node2; keys written while it was down reach its own store (`kv get
# --local`) with no reads, through hinted handoff; down with volumes. Clients authenticate. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same defaults as docker-compose.yml: every `kv` below authenticates with it.
export KVSTORE_PASSWORD=${KVSTORE_PASSWORD:-kvstore-dev-password}
export KVSTORE_CLUSTER_SECRET=${KVSTORE_CLUSTER_SECRET:-kvstore-dev-cluster-secret}

KV=./target/release/kv
DEAD_WITHIN_S=20   # 5 s suspect timeout + probing + margin on a loaded machine

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}
fail() { echo "docker-smoke: FAIL: $*" >&2; compose logs --tail 20 >&2 || true; exit 1; }
cleanup() { compose down --volumes --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

bash scripts/docker-up.sh --fresh

command -v redis-cli >/dev/null 2>&1 || bash scripts/install-test-deps.sh
# Commands through the nodes' Redis front, one reply per line.
resp_batch() { # port, file of commands -> replies on stdout
  redis-cli -p "$1" -a "$KVSTORE_PASSWORD" --no-auth-warning <"$2"
}
tmp=$(mktemp -d)
trap 'cleanup; rm -rf "$tmp"' EXIT

# write_then_read PREFIX COUNT WHAT: COUNT keys PREFIX:i through node1, read back via node3.
write_then_read() {
  local prefix=$1 n=$2 what=$3 ok good
  for i in $(seq 1 "$n"); do echo "SET $prefix:$i $prefix-value-$i"; done >"$tmp/set-$prefix"
  ok=$(resp_batch 7001 "$tmp/set-$prefix" | grep -c '^OK$' || true)
  [ "$ok" = "$n" ] || fail "$what: only $ok of $n SETs through node1 answered OK"
  for i in $(seq 1 "$n"); do echo "GET $prefix:$i"; done >"$tmp/get-$prefix"
  good=$(resp_batch 7003 "$tmp/get-$prefix" | grep -c "^$prefix-value-" || true)
  [ "$good" = "$n" ] || fail "$what: only $good of $n keys read back through node3"
}

write_then_read smoke 1000 "all up"
echo "1000 keys written through node1, read through node3"

compose stop node2 >/dev/null
write_then_read down 200 "node2 stopped"
echo "node2 stopped: writes and reads succeed"

start=$(date +%s)
until $KV --port 7001 info | grep -q '^member node2 .* DEAD'; do
  [ $(( $(date +%s) - start )) -le $DEAD_WITHIN_S ] || fail "node2 not DEAD on node1 within ${DEAD_WITHIN_S}s"
  sleep 0.5
done
echo "node1 sees node2 DEAD after $(( $(date +%s) - start ))s"

# Keys written while node2 was down that its own store lacks.
missing_on_node2() {
  for i in $(seq 1 200); do $KV --port 7002 get --local "down:$i" >/dev/null 2>&1 || echo x; done | wc -l
}

compose start node2 >/dev/null
start=$(date +%s)
until $KV --port 7001 info | grep -q '^member node2 .* ALIVE'; do
  [ $(( $(date +%s) - start )) -le 60 ] || fail "node2 not ALIVE again within 60s"
  sleep 0.5
done
# No reads: the coordinators' hints (hinted handoff) bring node2 what it missed.
start=$(date +%s)
while :; do
  missing=$(missing_on_node2)
  [ "$missing" = 0 ] && break
  [ $(( $(date +%s) - start )) -le 60 ] || fail "$missing keys still missing on node2 60 s after it came back"
  sleep 1
done
echo "hints brought node2 every key written while it was down, with no reads, in $(( $(date +%s) - start ))s"
echo "docker-smoke: OK"
