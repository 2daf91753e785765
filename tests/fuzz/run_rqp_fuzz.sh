#!/usr/bin/env bash
# Builds the RQP frame fuzzer (uring/rqp_frame_fuzz.cc) with clang++ under
# libFuzzer + ASan + UBSan and runs it over the committed seed corpus for a
# bounded time. Used by ctest (label `fuzz`) and by hand for longer runs.
#
#   tests/fuzz/run_rqp_fuzz.sh OUT_DIR [SECONDS] [extra libFuzzer flags...]
#
# New inputs go to OUT_DIR/rqp_frame_corpus (the committed corpus is only
# read); a crash leaves OUT_DIR/crash-* and fails the run. Needs Debian's
# clang and libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail

src="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: run_rqp_fuzz.sh OUT_DIR [SECONDS] [libFuzzer flags...]}"
seconds="${2:-20}"
shift $(($# >= 2 ? 2 : 1))

cxx="${RINGQ_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "run_rqp_fuzz: $cxx not found; install clang and libclang-rt-14-dev" \
       "(apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

mkdir -p "$out/rqp_frame_corpus"
bin="$out/rqp_frame_fuzz"
if ! "$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined \
     -fno-sanitize-recover=undefined -I"$src" \
     "$src/uring/rqp_frame.cc" "$src/uring/rqp_frame_fuzz.cc" -o "$bin"; then
  echo "run_rqp_fuzz: building the fuzzer failed; is libclang-rt-14-dev installed" \
       "(libclang_rt.fuzzer)?" >&2
  exit 1
fi

cd "$out"
# -runs bounds the work on a fast machine as -max_total_time bounds it on a slow one.
exec "$bin" -max_total_time="$seconds" -runs=20000000 -timeout=10 -rss_limit_mb=2048 \
     -print_final_stats=1 "$@" \
     "$out/rqp_frame_corpus" "$src/uring/fuzz/rqp_frame_corpus"
