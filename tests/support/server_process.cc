#include "tests/support/server_process.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

namespace ringq::testing {

namespace {
// A wait status as a shell reports it: the exit code, or 128 + the signal.
int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// In a forked child before exec: io_uring_setup(2) fails with ENOSYS from now
// on, in this process and what it execs (seccomp keeps across execve under
// no_new_privs). False when the filter cannot be installed.
bool InstallNoIoUringFilter() {
#if defined(__x86_64__)
  constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

// Whether `binary --help` lists --rqp-port (a server that predates RQP
// refuses the flag). Asked once per binary.
bool HasRqpPortFlag(const std::string& binary) {
  static std::mutex mu;
  static std::map<std::string, bool> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(binary); it != cache.end()) return it->second;
  std::string help;
  if (FILE* p = popen(("'" + binary + "' --help 2>&1").c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) help.append(buf, n);
    pclose(p);
  }
  return cache[binary] = help.find("--rqp-port") != std::string::npos;
}

// How long after "ready" the RQP line may still appear.
constexpr int kRqpLineWaitMs = 1000;
}  // namespace

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
                                   "--http-port=0", "--data-dir=" + data_dir_};
  // Before the test's flags, so that a test's own --rqp-port wins.
  const bool rqp = HasRqpPortFlag(binary_);
  if (rqp) args.push_back("--rqp-port=0");
  args.insert(args.end(), flags_.begin(), flags_.end());
  rqp_port_ = 0;
  log_offset_ = Log().size();
  exit_status_ = -1;
  pid_ = fork();
  if (pid_ == 0) {
    // A test killed mid-run must not leave its server behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (deny_io_uring_) unsetenv("RINGQ_IO");
    for (const auto& [name, value] : env_) setenv(name.c_str(), value.c_str(), 1);
    FILE* log = std::fopen(log_path_.c_str(), "a");
    if (log) dup2(fileno(log), STDERR_FILENO);
    if (deny_io_uring_ && !InstallNoIoUringFilter()) {
      std::fprintf(stderr, "test harness: cannot install the no-io_uring seccomp filter\n");
      _exit(126);
    }
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
      exit_status_ = DecodeStatus(status);
      return false;
    }
    // Only this start's lines count: the log file accumulates restarts.
    const std::string log = Log().substr(std::min(log_offset_, Log().size()));
    std::smatch m;
    const size_t ready = log.find("ringqd: ready");
    if (ready != std::string::npos && std::regex_search(log, m, re)) {
      grpc_port_ = std::atoi(m[1].str().c_str());
      static const std::regex http_re("HTTP listening on [^:]+:([0-9]+)");
      if (std::regex_search(log, m, http_re)) http_port_ = std::atoi(m[1].str().c_str());
      if (rqp && std::find(flags_.begin(), flags_.end(), "--rqp=false") == flags_.end()) {
        ReadRqpPort();
      }
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// The RQP line may come before or after the gRPC one; ready is not tied to
// it, so it gets a short moment of its own.
void ServerProcess::ReadRqpPort() {
  static const std::regex re("RQP listening on [^:]+:([0-9]+)");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kRqpLineWaitMs);
  for (;;) {
    const std::string log = StartLog();
    std::smatch m;
    if (std::regex_search(log, m, re)) {
      rqp_port_ = std::atoi(m[1].str().c_str());
      return;
    }
    if (std::chrono::steady_clock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  exit_status_ = DecodeStatus(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  exit_status_ = DecodeStatus(status);
}

void ServerProcess::SetEnv(std::string name, std::string value) {
  env_.emplace_back(std::move(name), std::move(value));
}

int ServerProcess::WaitExit(int timeout_ms) {
  if (pid_ <= 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = DecodeStatus(status);
      return exit_status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string ServerProcess::StartLog() {
  const std::string log = Log();
  return log.substr(std::min(log_offset_, log.size()));
}

std::string ServerProcess::Log() {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ringq::testing
