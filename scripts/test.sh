#!/usr/bin/env bash
# Installs what is missing, builds everything (release preset) and runs every
# test with ctest: unit tests, the seeded simulator, and integration tests
# that start the real server and drive it from C++, Python and Node.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j2 "$@"
