// SyscallCount: the system calls a server process makes over a window of a
// run, counted by `strace -c -f -p PID` (ringq-bench --strace=PATH;
// bench/syscalls.sh).
//
// Start() attaches strace to every thread of the process (and, through -f,
// to threads created later) and returns once each existing thread shows
// strace as its tracer (/proc/PID/task/*/status, TracerPid), so nothing
// before the window is counted and nothing in it is missed. Stop() sends
// strace SIGINT, which detaches it and makes it write its summary; the
// process runs on, untraced.
//
// What it is good for: counts per job, not rates. ptrace stops the server
// twice per system call, so a traced server is several times slower, and the
// more system calls a backend makes, the more it is slowed; never report the
// throughput of a traced run. io_uring requests are not system calls: what
// the kernel does for a submitted SQE (in a worker or inline) counts as the
// one io_uring_enter that submitted it.
//
// Bounds: one strace at a time per SyscallCount; Start waits at most
// attach_timeout_ms; Stop waits at most 10 s for strace to exit, then kills
// it (the tracees are detached by the kernel then, and the window reports
// nothing).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ringq::bench {

struct SyscallCounts {
  struct Entry {
    std::string name;
    uint64_t calls = 0;
    uint64_t errors = 0;
  };
  std::vector<Entry> by_calls;  // descending
  uint64_t total = 0;
};

class SyscallCount {
 public:
  explicit SyscallCount(std::string strace_path) : strace_(std::move(strace_path)) {}
  ~SyscallCount();
  SyscallCount(const SyscallCount&) = delete;
  SyscallCount& operator=(const SyscallCount&) = delete;

  // False (with *error) if strace cannot start or attach in time.
  bool Start(pid_t pid, int attach_timeout_ms, std::string* error);
  // The counts since Start; nullopt (with *error) if strace failed.
  std::optional<SyscallCounts> Stop(std::string* error);

  // Parses the table `strace -c` writes.
  static SyscallCounts Parse(const std::string& summary);

 private:
  bool AllTraced(pid_t pid) const;

  const std::string strace_;
  pid_t strace_pid_ = 0;
  std::string out_path_;
};

// For the signal handler of the tool: the strace to kill if it is interrupted.
extern volatile pid_t g_strace_child_pid;

}  // namespace ringq::bench
