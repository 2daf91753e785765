#!/usr/bin/env bash
# bench/syscalls.sh: system calls per job of ringqd at saturation, over RQP,
# io_uring against epoll (bench/README.md, "Syscalls per job").
#
# For each I/O backend and each run, ringq-bench starts its own ringqd
# (RINGQ_IO=uring|epoll, default durability: sync), pushes a fixed number of
# 100 B jobs over RQP (pipelined PUSH frames: 2 connections x 512 in flight;
# PUSH_BATCH of 100: 4 connections x 1 in flight), then drains them with
# Subscribe workers, then runs producers (PUSH_BATCH) and workers at once
# ("steady": the waiting set does not grow, so neither does the heap), and
# counts the server's system calls over each of these four windows with
# `strace -c -f -p PID` (attached after startup, detached at the end of each
# window; ringq-bench --strace). The job budget, not time, ends every window;
# each is still bounded in time (--seconds, --drain-seconds).
#
# strace stops the server on every system call, so the rates of these runs
# mean nothing; the counts per job do. The report is the median over runs of
# syscalls per job, and the top 5 system calls by that median.
#
# usage: bench/syscalls.sh [--jobs=N] [--runs=N] [--io=uring,epoll]
#                          [--ringq-bench=PATH] [--ringqd=PATH] [--strace=PATH]
#                          [--out-dir=DIR] [-- extra ringq-bench flags]
#   --jobs=N     jobs per window (default 200000)
#   --runs=N     runs per backend; the median is reported (default 3)
#
# Exit status: 0 when every run verified, 1 otherwise, 2 on bad usage, 77
# (CTest's skip) when nothing could be counted: no strace, or ptrace is not
# permitted here.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
jobs=200000
runs=3
ios=uring,epoll
ringq_bench=""
ringqd=""
strace_bin=/usr/bin/strace
out_dir=""
extra=()
while (($#)); do
  case "$1" in
    --jobs=*) jobs=${1#*=} ;;
    --runs=*) runs=${1#*=} ;;
    --io=*) ios=${1#*=} ;;
    --ringq-bench=*) ringq_bench=${1#*=} ;;
    --ringqd=*) ringqd=${1#*=} ;;
    --strace=*) strace_bin=${1#*=} ;;
    --out-dir=*) out_dir=${1#*=} ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "syscalls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -ge 1000 && "$jobs" -le 10000000 ]] ||
  { echo "syscalls.sh: --jobs must be 1000..10000000" >&2; exit 2; }
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 && "$runs" -le 20 ]] ||
  { echo "syscalls.sh: --runs must be 1..20" >&2; exit 2; }
[[ -x "$strace_bin" ]] ||
  { echo "syscalls.sh: SKIP: no strace at $strace_bin (apt install strace)" >&2; exit 77; }

if [[ -z "$ringq_bench" || -z "$ringqd" ]]; then
  build="$ROOT/build/bench"
  [[ -f "$build/build.ninja" ]] ||
    cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j2 --target ringq-bench ringqd >&2
  ringq_bench=${ringq_bench:-$build/bench/ringq-bench}
  ringqd=${ringqd:-$build/service/ringqd}
fi
out_dir=${out_dir:-$(mktemp -d /tmp/rqb-syscalls-XXXXXX)}
mkdir -p "$out_dir"

status=0
for io in ${ios//,/ }; do
  for ((r = 1; r <= runs; r++)); do
    echo "syscalls.sh: $io, run $r of $runs: $jobs jobs per window" >&2
    # Each window is bounded by the job budget and, in time, by 600 s.
    if ! "$ringq_bench" --server="$ringqd" --protocol=rqp --io="$io" --size=short \
        --payloads=100 --queues=1 --scenarios=push,process,steady --push-apis=pipelined,batch \
        --jobs="$jobs" --seconds=600 --drain-seconds=600 --strace="$strace_bin" \
        --label="syscalls $io run $r" --json="$out_dir/$io-$r.json" "${extra[@]}" \
        >"$out_dir/$io-$r.log" 2>&1; then
      echo "syscalls.sh: run failed, see $out_dir/$io-$r.log" >&2
      status=1
    fi
  done
done

report=0
python3 - "$out_dir" "$jobs" <<'EOF' || report=$?
import glob, json, os, statistics, sys
out_dir, jobs = sys.argv[1], sys.argv[2]
per = {}   # (io, row) -> list of {name: per_job, "total": per_job}
notes = {}
for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
    d = json.load(open(path))
    for r in d["rows"]:
        sc = r.get("server_syscalls")
        if not sc:
            continue
        key = (r["io_backend"], f"{r['scenario']} {r['api']}")
        v = {e["name"]: e["per_job"] for e in sc["by_name"]}
        v["total"] = sc["per_job"]
        per.setdefault(key, []).append(v)
        notes.setdefault(key, []).append(r["verify"]["ok"] and r["errors"] == 0)
print(f"## Server syscalls per job at saturation (RQP, sync WAL, 100 B, one queue, "
      f"{jobs} jobs per window; median of runs)\n")
print("| I/O backend | row | runs | syscalls / job | top 5 (syscalls / job) | verified |")
print("|---|---|---|---|---|---|")
order = {"push pipelined": 0, "push batch": 1, "process subscribe": 2, "steady batch+sub": 3}
for (io, row), vs in sorted(per.items(), key=lambda kv: (kv[0][0] != "io_uring", kv[0][0],
                                                          order.get(kv[0][1], 9))):
    names = {n for v in vs for n in v if n != "total"}
    med = {n: statistics.median([v.get(n, 0.0) for v in vs]) for n in names}
    top = sorted(med.items(), key=lambda kv: -kv[1])[:5]
    total = statistics.median([v["total"] for v in vs])
    ok = "yes" if all(notes[(io, row)]) else "**NO**"
    print(f"| {io} | {row} | {len(vs)} | {total:.3f} | "
          + ", ".join(f"{n} {x:.3f}" for n, x in top) + f" | {ok} |")
print("\nPer job: pushed (push rows), processed (process), pushed and processed (steady).")
print(f"Raw JSON and logs: {out_dir}")
sys.exit(0 if per else 3)
EOF
if ((report == 3)); then
  echo "syscalls.sh: SKIP: no run counted any syscall (is ptrace permitted? see $out_dir/*.log)" >&2
  exit 77
fi
((report == 0)) || status=1
exit $status
