#!/usr/bin/env bash
# Installs what ringq needs on Debian 12, idempotently: Debian packages that
# are missing (apt) and the Node example client's packages (npm ci).
# Safe to run again and again; does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  liburing-dev librocksdb-dev libjemalloc-dev libgtest-dev libgmock-dev libbenchmark-dev libcivetweb-dev
  python3-grpcio python3-protobuf nodejs npm
  prometheus  # prometheus + promtool: tests/observability scrapes ringqd with the real thing
  clang libclang-rt-14-dev  # libFuzzer + sanitizer runtimes for the fuzz tests (tests/fuzz)
  strace  # bench/syscalls.sh counts the server's system calls per job (bench_syscalls_tiny)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# nodejs and npm may come from elsewhere (for example a preinstalled Node);
# only ask apt for them when the commands are absent.
filtered=()
for p in "${missing[@]}"; do
  case "$p" in
    nodejs) command -v node >/dev/null || filtered+=("$p") ;;
    npm) command -v npm >/dev/null || filtered+=("$p") ;;
    *) filtered+=("$p") ;;
  esac
done
missing=("${filtered[@]+"${filtered[@]}"}")

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Node example client and its test use @grpc/grpc-js from npm.
if [[ ! -d client/node/node_modules ]] ||
   [[ client/node/package-lock.json -nt client/node/node_modules/.package-lock.json ]]; then
  echo "setup: npm ci in client/node" >&2
  npm ci --prefix client/node --no-audit --no-fund --loglevel=error
fi
