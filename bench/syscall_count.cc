#include "bench/syscall_count.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "bench/server.h"

namespace ringq::bench {

volatile pid_t g_strace_child_pid = 0;

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// TracerPid of one thread, or -1 when it is gone.
pid_t TracerOf(const std::filesystem::path& status) {
  std::ifstream in(status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("TracerPid:", 0) == 0) return static_cast<pid_t>(std::atol(line.c_str() + 10));
  }
  return -1;
}

}  // namespace

SyscallCount::~SyscallCount() {
  if (strace_pid_ > 0) {
    std::string ignored;
    Stop(&ignored);
  }
}

bool SyscallCount::AllTraced(pid_t pid) const {
  std::error_code ec;
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  size_t n = 0;
  for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
    const pid_t tracer = TracerOf(t.path() / "status");
    if (tracer >= 0 && tracer != strace_pid_) return false;  // -1: the thread just ended
    ++n;
  }
  return !ec && n > 0;
}

bool SyscallCount::Start(pid_t pid, int attach_timeout_ms, std::string* error) {
  if (strace_pid_ > 0 || pid <= 0) {
    *error = pid <= 0 ? "no server pid to trace" : "strace already running";
    return false;
  }
  char tmpl[] = "/tmp/ringq-bench-strace-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) {
    *error = "mkstemp failed";
    return false;
  }
  close(fd);
  out_path_ = tmpl;
  const std::string pid_s = std::to_string(pid);
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) {
    *error = "fork failed";
    return false;
  }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a killed tool leaves no tracer behind
    if (getppid() != parent) _exit(127);
    // -qq: no attach/detach chatter; the summary goes to the -o file.
    execl(strace_.c_str(), "strace", "-qq", "-c", "-f", "-p", pid_s.c_str(), "-o",
          out_path_.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "ringq-bench: exec %s failed\n", strace_.c_str());
    _exit(127);
  }
  strace_pid_ = child;
  g_strace_child_pid = child;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(attach_timeout_ms);
  while (!AllTraced(pid)) {
    int status;
    if (waitpid(strace_pid_, &status, WNOHANG) == strace_pid_) {
      strace_pid_ = 0;
      g_strace_child_pid = 0;
      *error = "strace exited before attaching (exit " + std::to_string(WEXITSTATUS(status)) +
               "; is ptrace allowed here?)";
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::string ignored;
      Stop(&ignored);
      *error = "strace did not attach to every thread of " + pid_s + " within " +
               std::to_string(attach_timeout_ms) + " ms";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::optional<SyscallCounts> SyscallCount::Stop(std::string* error) {
  if (strace_pid_ <= 0) {
    *error = "strace is not running";
    return std::nullopt;
  }
  // SIGINT: strace detaches and writes the summary.
  const bool exited = SignalAndReap(strace_pid_, SIGINT, 10'000);
  strace_pid_ = 0;
  g_strace_child_pid = 0;
  const std::string summary = ReadFile(out_path_);
  std::remove(out_path_.c_str());
  if (!exited) {
    *error = "strace did not exit within 10 s of SIGINT";
    return std::nullopt;
  }
  SyscallCounts c = Parse(summary);
  if (c.by_calls.empty()) {
    *error = "strace wrote no summary";
    return std::nullopt;
  }
  return c;
}

SyscallCounts SyscallCount::Parse(const std::string& summary) {
  // "% time  seconds  usecs/call  calls  errors  syscall": errors may be blank.
  SyscallCounts c;
  std::istringstream in(summary);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> t;
    for (std::string w; f >> w;) t.push_back(w);
    if (t.size() < 5 || t.size() > 6 || t[0] == "%" || t[0].front() == '-') continue;
    if (t.back() == "total") continue;
    char* end = nullptr;
    const uint64_t calls = std::strtoull(t[3].c_str(), &end, 10);
    if (end == nullptr || *end != '\0') continue;
    const uint64_t errors = t.size() == 6 ? std::strtoull(t[4].c_str(), nullptr, 10) : 0;
    c.by_calls.push_back({t.back(), calls, errors});
    c.total += calls;
  }
  std::sort(c.by_calls.begin(), c.by_calls.end(),
            [](const auto& a, const auto& b) { return a.calls > b.calls; });
  return c;
}

}  // namespace ringq::bench
