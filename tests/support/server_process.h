// ServerProcess: starts the real ringqd binary on 127.0.0.1 with free ports
// (--grpc-port=0 --http-port=0, and --rqp-port=0 when the binary has that
// flag) and a fresh data directory, reads the bound ports from its log, and
// stops it (SIGTERM, or SIGKILL for crash tests). For tests only.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace ringq::testing {

class ServerProcess {
 public:
  // `binary`: path to ringqd. `extra_flags`: more --flag=value arguments.
  ServerProcess(std::string binary, std::vector<std::string> extra_flags = {},
                std::string data_dir = "");
  ~ServerProcess();

  // Starts and waits (at most timeout_ms) for "gRPC listening on". False on timeout or exit.
  bool Start(int timeout_ms = 10'000);
  // SIGTERM and wait; returns the exit status (or -1).
  int Stop();
  // SIGKILL and wait.
  void Kill();

  // Sets an environment variable for the server started by the next Start
  // (for example RINGQ_CRASH_POINT); the test's own environment is inherited.
  void SetEnv(std::string name, std::string value);
  // Starts the next server as on a kernel without io_uring: a seccomp filter
  // makes io_uring_setup(2) fail with ENOSYS, and RINGQ_IO is removed from its
  // environment (SetEnv may put it back) so that the server chooses.
  void DenyIoUring() { deny_io_uring_ = true; }
  // Where the server's log goes (default: <data_dir>.log). Call before Start.
  void SetLogPath(std::string path) { log_path_ = std::move(path); }
  // Waits at most timeout_ms for the server to exit by itself (a crash point,
  // a refused start). Returns its exit code, 128 + the signal that ended it,
  // or -1 if it still runs after timeout_ms (it is left running) or none runs.
  int WaitExit(int timeout_ms);
  // How the last server ended, as WaitExit reports it; -1 while one runs or
  // before any ended. Set by Start (when the server exits while starting),
  // WaitExit, Stop and Kill.
  int exit_status() const { return exit_status_; }
  bool running() const { return pid_ > 0; }

  int grpc_port() const { return grpc_port_; }
  // The HTTP port (/metrics, /healthz, /readyz; started with --http-port=0).
  int http_port() const { return http_port_; }
  // The RQP port, from the log line "RQP listening on HOST:PORT"; 0 when the
  // server does not serve RQP (a binary without --rqp-port, or --rqp=false).
  int rqp_port() const { return rqp_port_; }
  std::string rqp_address() const { return "127.0.0.1:" + std::to_string(rqp_port_); }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  const std::string& data_dir() const { return data_dir_; }
  // Everything the server wrote to stderr so far (its log).
  std::string Log();
  // The part of the log written since the last Start.
  std::string StartLog();

 private:
  void ReadRqpPort();

  std::string binary_;
  std::vector<std::string> flags_;
  std::string data_dir_;
  bool own_data_dir_ = false;
  std::string log_path_;
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int rqp_port_ = 0;
  size_t log_offset_ = 0;  // where this start's lines begin in the log file
  bool deny_io_uring_ = false;
  std::vector<std::pair<std::string, std::string>> env_;
  int exit_status_ = -1;
};

}  // namespace ringq::testing
