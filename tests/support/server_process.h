// ServerProcess: starts the real ringqd binary on 127.0.0.1 with a free port
// (--grpc-port=0) and a fresh data directory, reads the bound port from its
// log, and stops it (SIGTERM, or SIGKILL for crash tests). For tests only.
#pragma once

#include <sys/types.h>

#include <string>
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

  int grpc_port() const { return grpc_port_; }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  const std::string& data_dir() const { return data_dir_; }
  // Everything the server wrote to stderr so far (its log).
  std::string Log();

 private:
  std::string binary_;
  std::vector<std::string> flags_;
  std::string data_dir_;
  bool own_data_dir_ = false;
  std::string log_path_;
  pid_t pid_ = -1;
  int grpc_port_ = 0;
};

}  // namespace ringq::testing
