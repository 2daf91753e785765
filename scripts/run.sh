#!/usr/bin/env bash
# Installs what is missing, builds ringq (release preset) and starts ringqd
# in the foreground with its data under ./data. Extra arguments go to ringqd,
# e.g. scripts/run.sh --shards=4. Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target ringqd ringq
exec build/release/service/ringqd --data-dir=./data "$@"
