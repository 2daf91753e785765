#!/usr/bin/env bash
# Runs the bench scenarios against NATS JetStream (Debian nats-server) on
# loopback: a work-queue stream with file storage, the server's default sync
# (fsync every 2 minutes). "sync always" needs the jetstream sync_interval
# option (nats-server 2.10+); when the installed server rejects it, the
# script says so and runs nothing for that mode (exit 0, "unsupported").
#   default  file storage, default sync_interval (2 min)
#   always   file storage, sync_interval: always (2.10+ only)
# usage: bench/peers/nats.sh MODE [harness flags]
set -euo pipefail
PEERS_DIR=$(cd "$(dirname "$0")" && pwd)
source "$PEERS_DIR/lib.sh"
mode=${1:?usage: nats.sh default|always [flags]}
shift
case $mode in
  default) sync="" label="NATS JetStream (file, default sync)"
    ack="written to the OS before ack, fsync every 2 min (default sync_interval)" ;;
  always) sync="sync_interval: always" label="NATS JetStream (file, sync always)"
    ack="fsync before ack (sync_interval: always)" ;;
  *) echo "nats.sh: unknown mode $mode" >&2; exit 2 ;;
esac
peer_prologue
port=$(free_port)
cat >"$PEER_TMP/nats.conf" <<CONF
listen: 127.0.0.1:$port
jetstream {
  store_dir: "$PEER_TMP/js"
  max_memory_store: 1GB
  max_file_store: 16GB
  $sync
}
CONF
if ! nats-server -c "$PEER_TMP/nats.conf" -t >"$PEER_TMP/check.log" 2>&1; then
  echo "nats.sh: $(head -1 "$PEER_TMP/check.log")"
  echo "UNSUPPORTED: $(nats-server --version | sed 's/^nats-server: //') rejects '${sync:-its config}' (sync_interval needs nats-server 2.10+)"
  exit 0
fi
nats-server -c "$PEER_TMP/nats.conf" >"$PEER_TMP/nats.log" 2>&1 &
SERVER_PID=$!
wait_port "$port" "$SERVER_PID"
version=$(nats-server --version | sed "s/^nats-server: //")
harness --peer=nats --url="127.0.0.1:$port" --server-pid="$SERVER_PID" --label="$label" \
  --durability="$ack" --server-version="$version" "$@"
