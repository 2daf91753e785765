# Shared helpers of the peer scripts (sourced, not run).
# Every server a peer script starts listens on 127.0.0.1 only, lives in a
# temp dir, and is stopped by the script's EXIT trap, also on failure.

# A free loopback TCP port (tiny race with other starters; the server's own
# bind error would then say so).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (at most 10 s) until 127.0.0.1:$1 accepts connections and $2 (pid) lives.
wait_port() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "peer: server (pid $pid) exited during start" >&2; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "peer: nothing listens on 127.0.0.1:$port after 10 s" >&2
  return 1
}

# SIGTERM, wait at most 10 s, then SIGKILL. Only the pid given (one we started).
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Standard prologue: install peers, make a temp dir, stop SERVER_PID and remove
# the dir on exit. Sets PEER_TMP; the caller sets SERVER_PID after starting.
peer_prologue() {
  "$PEERS_DIR/install.sh"
  PEER_TMP=$(mktemp -d /tmp/rqb-peer-XXXXXX)
  SERVER_PID=""
  HARNESS_PID=""
  trap 'rc=$?; [[ -n $HARNESS_PID ]] && stop_pid "$HARNESS_PID"; [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"; rm -rf "$PEER_TMP"; exit $rc' EXIT
  trap 'exit 130' INT TERM
}

# Runs the Node harness in the background and waits for it, so that a signal
# to this script is handled at once (bash defers traps during a foreground
# child) and the EXIT trap stops the harness, then the server.
harness() {
  node "$PEERS_DIR/node/harness.js" "$@" &
  HARNESS_PID=$!
  local rc=0
  wait "$HARNESS_PID" || rc=$?
  HARNESS_PID=""
  return "$rc"
}
