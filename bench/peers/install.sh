#!/usr/bin/env bash
# Installs the peers that bench/compare measures ringq against, idempotently:
# Debian's redis-server, beanstalkd and nats-server (apt), and the peers' own
# Node client libraries (bullmq, ioredis, nats) into bench/peers/node from its
# committed package-lock.json. Does nothing when everything is there.
#
# Services are never started by the install: policy-rc.d (in containers) or
# RUNLEVEL=1 keeps the Debian init scripts from launching a system-wide
# redis-server or beanstalkd; each peer script starts its own on loopback.
#
# usage: bench/peers/install.sh [--check]   (--check: exit 1 if anything is missing)
set -euo pipefail
cd "$(dirname "$0")"

DEBS=(redis-server redis-tools beanstalkd nats-server)
missing=()
for p in "${DEBS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

node_ok() {
  [[ -d node/node_modules/bullmq && -d node/node_modules/nats && -d node/node_modules/ioredis ]] &&
    [[ ! node/package-lock.json -nt node/node_modules/.package-lock.json ]]
}

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})) || ! node_ok; then
    echo "peers: missing: ${missing[*]:-} $(node_ok || echo 'node_modules')" >&2
    exit 1
  fi
  exit 0
fi

if ((${#missing[@]})); then
  echo "peers: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq -o DPkg::Lock::Timeout=600
  # RUNLEVEL=1: invoke-rc.d does not start the packages' system services.
  $SUDO env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >&2
fi

if ! node_ok; then
  echo "peers: npm ci in bench/peers/node" >&2
  npm ci --prefix node --no-audit --no-fund --loglevel=error >&2
fi
