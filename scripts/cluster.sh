#!/usr/bin/env bash
# A local kvstore cluster on 127.0.0.1 ports 7001.. (node ids node1..nodeN).
#
#   scripts/cluster.sh start [--nodes 3] [--cores 1]   build release binaries, start the nodes
#   scripts/cluster.sh stop                            SIGTERM every node, wait for them
#   scripts/cluster.sh status                          `kv info` of every node
#   scripts/cluster.sh kill NODE                       kill -9 one node (e.g. node2)
#   scripts/cluster.sh restart NODE                    start one node again (same data dir)
#
# Data and logs live under $KVSTORE_CLUSTER_DIR (default ./cluster-data): nodeN/ and nodeN.log.
# The cluster runs with a client password and a cluster secret, made at the first start as
# $DIR/password and $DIR/cluster-secret (random); clients need the password:
#   export KVSTORE_PASSWORD=$(cat cluster-data/password)
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${KVSTORE_CLUSTER_DIR:-./cluster-data}
NODES=3
CORES=1
BASE_PORT=${KVSTORE_BASE_PORT:-7001}
BIN=./target/release

cmd=${1:-}
shift || true
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

port_of() { echo $((BASE_PORT + ${1#node} - 1)); }
# A credential file made once, 24 random bytes in base64, readable by us only.
credential() {
  [ -s "$DIR/$1" ] || (umask 077; head -c 24 /dev/urandom | base64 >"$DIR/$1")
  echo "$DIR/$1"
}
pid_file() { echo "$DIR/$1.pid"; }

start_node() {
  local id=$1 port seed=()
  port=$(port_of "$id")
  [ "$id" != node1 ] && seed=(--seed "127.0.0.1:$BASE_PORT")
  mkdir -p "$DIR/$id"
  nohup "$BIN/kvstore-node" --node-id "$id" --port "$port" --data-dir "$DIR/$id" \
    --cores "$CORES" --password-file "$(credential password)" \
    --cluster-secret-file "$(credential cluster-secret)" "${seed[@]}" >>"$DIR/$id.log" 2>&1 &
  echo $! >"$(pid_file "$id")"
  for _ in $(seq 1 300); do
    "$BIN/kv" --port "$port" --timeout-ms 1000 ping >/dev/null 2>&1 && { echo "$id up on 127.0.0.1:$port"; return 0; }
    kill -0 "$(cat "$(pid_file "$id")")" 2>/dev/null || { echo "$id failed to start; see $DIR/$id.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$id did not answer in 30 s; see $DIR/$id.log" >&2
  return 1
}

mkdir -p "$DIR"
KVSTORE_PASSWORD=$(cat "$(credential password)")
export KVSTORE_PASSWORD

case "$cmd" in
  start)
    cargo build --release --quiet
    mkdir -p "$DIR"
    for i in $(seq 1 "$NODES"); do start_node "node$i"; done
    # Wait until node1 sees every node as an ALIVE ring member (a node started with --seed is
    # "waiting" until it has joined; writes before that would see a smaller ring).
    for _ in $(seq 1 600); do
      members=$("$BIN/kv" --port "$BASE_PORT" --timeout-ms 1000 info 2>/dev/null \
        | grep '^member ' | grep ' ALIVE ' | grep -vc ' role=' || true)
      [ "$members" = "$NODES" ] && break
      sleep 0.1
    done
    [ "$members" = "$NODES" ] || { echo "only $members of $NODES nodes joined; see $DIR/*.log" >&2; exit 1; }
    echo "cluster of $NODES up: export KVSTORE_PASSWORD=\$(cat $DIR/password); $BIN/kv --port $BASE_PORT put hello world"
    ;;
  stop)
    for f in "$DIR"/*.pid; do
      [ -e "$f" ] || continue
      pid=$(cat "$f")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$f"
    done
    echo "stopped"
    ;;
  status)
    for f in "$DIR"/*.pid; do
      [ -e "$f" ] || continue
      id=$(basename "$f" .pid)
      echo "== $id"
      "$BIN/kv" --port "$(port_of "$id")" --timeout-ms 2000 info || echo "$id: not answering"
    done
    ;;
  kill)
    id=${args[0]:?usage: cluster.sh kill NODE}
    kill -9 "$(cat "$(pid_file "$id")")" && echo "$id killed"
    ;;
  restart)
    id=${args[0]:?usage: cluster.sh restart NODE}
    start_node "$id"
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 64
    ;;
esac
