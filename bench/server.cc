#include "bench/server.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace ringq::bench {

volatile pid_t g_server_child_pid = 0;

namespace {

// `binary --help`, at most 64 KiB of it; empty if it cannot run.
std::string HelpText(const std::string& binary) {
  const std::string cmd = "'" + binary + "' --help 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while (out.size() < (64u << 10) && (n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  pclose(p);
  return out;
}

}  // namespace

ServerHandle::~ServerHandle() { Stop(10'000); }

bool ServerHandle::Start(const std::string& binary, const std::vector<std::string>& args,
                         const std::vector<std::string>& env, int timeout_ms, std::string* error) {
  char tmpl[] = "/tmp/ringq-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    *error = "mkdtemp failed";
    return false;
  }
  data_dir_ = tmpl;
  log_path_ = data_dir_ + ".log";
  std::vector<std::string> argv_s = {binary, "--host=127.0.0.1", "--grpc-port=0",
                                     "--data-dir=" + data_dir_ + "/data"};
  // Every other listening port the server offers goes ephemeral too, so that a
  // run never collides with another ringqd on this machine.
  const std::string help = HelpText(binary);
  for (const char* flag : {"--http-port", "--rqp-port"}) {
    bool given = false;
    for (const auto& a : args) given |= a.rfind(std::string(flag) + "=", 0) == 0;
    if (!given && help.find(flag) != std::string::npos) argv_s.push_back(std::string(flag) + "=0");
  }
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    *error = "fork failed";
    return false;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // the server never outlives the tool
    if (getppid() != parent) _exit(127);
    for (const auto& kv : env) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) _exit(126);  // checked by the caller
      setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
    }
    FILE* log = std::fopen(log_path_.c_str(), "w");
    if (log) dup2(fileno(log), STDERR_FILENO);
    FILE* null = std::fopen("/dev/null", "w");
    if (null) dup2(fileno(null), STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    std::fprintf(stderr, "exec %s failed\n", binary.c_str());
    _exit(127);
  }
  pid_ = pid;
  child_ = true;
  g_server_child_pid = pid;
  const std::regex re("gRPC listening on ([^ \n]+):([0-9]+)");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      child_ = false;
      g_server_child_pid = 0;
      *error = "ringqd exited during start; its log:\n" + Log();
      return false;
    }
    const std::string log = Log();
    std::smatch m;
    if (std::regex_search(log, m, re) && log.find("ringqd: ready") != std::string::npos) {
      target_ = "127.0.0.1:" + m[2].str();
      rqp_target_ = RqpTargetFromLog();  // logged before "ready" when RQP is served
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  *error = "ringqd did not report 'gRPC listening on' within " + std::to_string(timeout_ms) +
           " ms; its log:\n" + Log();
  Stop(2000);
  return false;
}

void ServerHandle::Attach(std::string target, std::string rqp_target, pid_t pid,
                          std::string log_path) {
  target_ = std::move(target);
  pid_ = pid;
  log_path_ = std::move(log_path);
  child_ = false;
  rqp_target_ = rqp_target.empty() ? RqpTargetFromLog() : std::move(rqp_target);
}

std::string ServerHandle::RqpTargetFromLog() const {
  static const std::regex re("RQP listening on ([^ \n]+):([0-9]+)");
  const std::string log = Log();
  std::smatch m;
  if (!std::regex_search(log, m, re)) return "";
  // The server listens where it says; 0.0.0.0 / :: are reached on loopback.
  std::string host = m[1].str();
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::" || host == "[::]") host = "[::1]";
  return host + ":" + m[2].str();
}

bool SignalAndReap(pid_t pid, int sig, int timeout_ms) {
  kill(pid, sig);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return false;
}

void ServerHandle::Stop(int timeout_ms) {
  if (child_ && pid_ > 0) {
    SignalAndReap(pid_, SIGTERM, timeout_ms);
    pid_ = 0;
    child_ = false;
    g_server_child_pid = 0;
  }
  if (!data_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
    std::filesystem::remove(log_path_, ec);
    data_dir_.clear();
  }
}

std::string ServerHandle::Log() const {
  if (log_path_.empty()) return "";
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ServerHandle::LogField(const std::string& prefix) const {
  const std::string log = Log();
  const auto p = log.rfind(prefix);
  if (p == std::string::npos) return "";
  const auto from = p + prefix.size();
  const auto e = log.find('\n', from);
  std::string s = log.substr(from, e == std::string::npos ? std::string::npos : e - from);
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  return s;
}

std::string ServerHandle::Durability() const {
  if (log_path_.empty()) {
    return "unknown (no server log: pass --server-log, or let ringq-bench start the server)";
  }
  const std::string d = LogField("durability:");
  return d.empty() ? "unknown (the server log has no 'durability:' line)" : d;
}

std::string ServerHandle::IoBackend() const {
  const std::string b = LogField("I/O backend:");
  return b.empty() ? "unknown" : b;
}

std::string ServerHandle::IoBackendName() const {
  const std::string b = IoBackend();
  return b.substr(0, b.find(' '));
}

std::string ServerHandle::Version() const {
  const std::string log = Log();
  std::smatch m;
  static const std::regex re("starting ringqd ([^ :]+)");
  if (std::regex_search(log, m, re)) return m[1].str();
  return "unknown";
}

std::optional<double> ServerHandle::CpuSeconds() const {
  if (pid_ <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto rp = s.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream fields(s.substr(rp + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  // Field 3 (state) is the first after ')'; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

std::optional<uint64_t> ServerHandle::RssBytes() const {
  if (pid_ <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return std::nullopt;
}

}  // namespace ringq::bench
