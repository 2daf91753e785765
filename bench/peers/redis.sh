#!/usr/bin/env bash
# Runs the bench scenarios against Redis (Debian redis-server) on loopback:
#   bullmq-everysec  BullMQ, AOF with appendfsync everysec (its common production setting)
#   bullmq-always    BullMQ, AOF with appendfsync always
#   list             a bare Redis list (LPUSH / BRPOP), AOF everysec: the no-semantics baseline
# usage: bench/peers/redis.sh MODE [harness flags, e.g. --push-s=3 --json=FILE]
set -euo pipefail
PEERS_DIR=$(cd "$(dirname "$0")" && pwd)
source "$PEERS_DIR/lib.sh"
mode=${1:?usage: redis.sh bullmq-everysec|bullmq-always|list [flags]}
shift
case $mode in
  bullmq-everysec) peer=bullmq fsync=everysec label="BullMQ (Redis AOF everysec)"
    ack="fsync within ~1 s (AOF appendfsync everysec): acked from memory" ;;
  bullmq-always) peer=bullmq fsync=always label="BullMQ (Redis AOF always)"
    ack="fsync before ack (AOF appendfsync always)" ;;
  list) peer=redis-list fsync=everysec label="Redis list LPUSH/BRPOP (AOF everysec)"
    ack="fsync within ~1 s (AOF appendfsync everysec): acked from memory; no job semantics" ;;
  *) echo "redis.sh: unknown mode $mode" >&2; exit 2 ;;
esac
peer_prologue
port=$(free_port)
cat >"$PEER_TMP/redis.conf" <<CONF
bind 127.0.0.1
port $port
protected-mode yes
daemonize no
dir $PEER_TMP
logfile $PEER_TMP/redis.log
save ""
appendonly yes
appendfsync $fsync
maxmemory-policy noeviction
CONF
redis-server "$PEER_TMP/redis.conf" &
SERVER_PID=$!
wait_port "$port" "$SERVER_PID"
version=$(redis-server --version | sed -E 's/.* v=([^ ]+).*/redis \1/')
harness --peer="$peer" --url="127.0.0.1:$port" --server-pid="$SERVER_PID" --label="$label" \
  --durability="$ack" --server-version="$version" "$@"
