// ServerHandle: the ringqd that ringq-bench measures, either started by the
// tool (on 127.0.0.1, --grpc-port=0 and --rqp-port=0, a fresh temp data dir,
// extra environment such as RINGQ_IO=epoll, stopped and removed at exit,
// killed with the tool via PR_SET_PDEATHSIG) or attached to (--target,
// --rqp-target, --server-pid, --server-log).
//
// Server-side cost comes from /proc/PID: CPU seconds (utime + stime) and RSS.
// The durability mode, the I/O backend and the RQP port are read from the
// server log lines "durability: ...", "I/O backend: ..." and "RQP listening
// on HOST:PORT (...)".
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace ringq::bench {

class ServerHandle {
 public:
  ~ServerHandle();

  // Starts `binary` with `args` and `env` (NAME=VALUE, added to the tool's
  // environment) and waits (at most timeout_ms) for its "gRPC listening on
  // HOST:PORT" and "ready" lines; the "RQP listening on" line, logged before
  // "ready" when the server serves RQP, gives rqp_target(). False with *error.
  bool Start(const std::string& binary, const std::vector<std::string>& args,
             const std::vector<std::string>& env, int timeout_ms, std::string* error);
  // Attaches to a running server; pid 0 and an empty log are allowed
  // (unknown). An empty rqp_target is read from the log when there is one.
  void Attach(std::string target, std::string rqp_target, pid_t pid, std::string log_path);
  // SIGTERM, wait (at most timeout_ms), then SIGKILL; removes the temp dir. Idempotent.
  void Stop(int timeout_ms);

  const std::string& target() const { return target_; }  // gRPC HOST:PORT
  // RQP HOST:PORT, or empty when the server does not serve RQP (or it is unknown).
  const std::string& rqp_target() const { return rqp_target_; }
  pid_t pid() const { return pid_; }
  bool started_by_us() const { return child_; }
  // Text after "durability:" in the log, or a sentence saying why it is unknown.
  std::string Durability() const;
  std::string Version() const;    // from "starting ringqd VERSION", or "unknown"
  std::string IoBackend() const;  // from "I/O backend: ...", or "unknown"
  // Its first word ("io_uring", "epoll"), the label of every row.
  std::string IoBackendName() const;
  // The rest of the last log line containing `prefix`, or empty.
  std::string LogField(const std::string& prefix) const;
  std::string Log() const;
  // Server CPU seconds so far (user + system); nullopt when no pid is known.
  std::optional<double> CpuSeconds() const;
  std::optional<uint64_t> RssBytes() const;

 private:
  std::string RqpTargetFromLog() const;

  std::string target_;
  std::string rqp_target_;
  pid_t pid_ = 0;
  bool child_ = false;
  std::string data_dir_;
  std::string log_path_;
};

// For the signal handler of the tool: the child to kill if the tool is interrupted.
extern volatile pid_t g_server_child_pid;

// Sends `sig` to the child `pid`, waits at most timeout_ms for it to exit,
// else SIGKILLs it; reaps it either way. True when it exited by itself in time.
bool SignalAndReap(pid_t pid, int sig, int timeout_ms);

}  // namespace ringq::bench
