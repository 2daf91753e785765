#!/usr/bin/env bash
# Runs the bench scenarios against beanstalkd (Debian) on loopback:
#   default  -b DIR      binlog, fsync at most every 50 ms (its default)
#   f0       -b DIR -f0  binlog, fsync on every write, before the reply
# usage: bench/peers/beanstalkd.sh MODE [harness flags]
set -euo pipefail
PEERS_DIR=$(cd "$(dirname "$0")" && pwd)
source "$PEERS_DIR/lib.sh"
mode=${1:?usage: beanstalkd.sh default|f0 [flags]}
shift
case $mode in
  default) extra=() label="beanstalkd (-b, fsync <= 50 ms)"
    ack="fsync within 50 ms (-b DIR, default -f 50): acked from memory" ;;
  f0) extra=(-f0) label="beanstalkd (-b -f0)"
    ack="fsync before ack (-b DIR -f0)" ;;
  *) echo "beanstalkd.sh: unknown mode $mode" >&2; exit 2 ;;
esac
peer_prologue
port=$(free_port)
mkdir -p "$PEER_TMP/binlog"
beanstalkd -l 127.0.0.1 -p "$port" -b "$PEER_TMP/binlog" "${extra[@]}" 2>"$PEER_TMP/beanstalkd.log" &
SERVER_PID=$!
wait_port "$port" "$SERVER_PID"
version=$(beanstalkd -v 2>&1 | head -1)
harness --peer=beanstalkd --url="127.0.0.1:$port" --server-pid="$SERVER_PID" --label="$label" \
  --durability="$ack" --server-version="$version" "$@"
