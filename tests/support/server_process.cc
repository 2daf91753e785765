#include "tests/support/server_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace ringq::testing {

ServerProcess::ServerProcess(std::string binary, std::vector<std::string> extra_flags,
                             std::string data_dir)
    : binary_(std::move(binary)), flags_(std::move(extra_flags)), data_dir_(std::move(data_dir)) {
  if (data_dir_.empty()) {
    char tmpl[] = "/tmp/ringq-test-XXXXXX";
    data_dir_ = mkdtemp(tmpl);
    own_data_dir_ = true;
  }
  log_path_ = data_dir_ + ".log";
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Kill();
  if (own_data_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
    std::filesystem::remove(log_path_, ec);
  }
}

bool ServerProcess::Start(int timeout_ms) {
  std::vector<std::string> args = {binary_, "--host=127.0.0.1", "--grpc-port=0",
                                   "--data-dir=" + data_dir_};
  args.insert(args.end(), flags_.begin(), flags_.end());
  pid_ = fork();
  if (pid_ == 0) {
    FILE* log = std::fopen(log_path_.c_str(), "a");
    if (log) dup2(fileno(log), STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  const std::regex re("gRPC listening on [^:]+:([0-9]+)");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    // The port line of this start is the last one in the log.
    std::string log = Log();
    std::smatch m;
    std::string::const_iterator from = log.cbegin();
    int port = 0;
    while (std::regex_search(from, log.cend(), m, re)) {
      port = std::atoi(m[1].str().c_str());
      from = m.suffix().first;
    }
    size_t starts = 0;
    for (size_t p = log.find("starting ringqd"); p != std::string::npos;
         p = log.find("starting ringqd", p + 1)) {
      ++starts;
    }
    size_t listens = 0;
    for (size_t p = log.find("gRPC listening on"); p != std::string::npos;
         p = log.find("gRPC listening on", p + 1)) {
      ++listens;
    }
    if (port != 0 && starts > 0 && listens == starts && log.rfind("ringqd: ready") != std::string::npos && log.rfind("ringqd: ready") > log.rfind("gRPC listening on")) {
      grpc_port_ = port;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string ServerProcess::Log() {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ringq::testing
