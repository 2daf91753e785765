#include "service/http/server_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ringq::http {

namespace {

using metrics::Labels;
using metrics::TextWriter;
using metrics::Type;

struct ProcStat {
  bool ok = false;
  double cpu_seconds = 0;
  double start_time_seconds = 0;
  uint64_t virtual_bytes = 0;
  uint64_t resident_bytes = 0;
  uint64_t threads = 0;
};

// /proc/self/stat fields (proc(5)): 14 utime, 15 stime, 20 num_threads,
// 22 starttime (ticks since boot), 23 vsize, 24 rss (pages).
ProcStat ReadProcStat() {
  ProcStat s;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return s;
  const size_t close = line.rfind(')');  // comm may hold spaces and parentheses
  if (close == std::string::npos) return s;
  std::istringstream rest(line.substr(close + 2));
  std::string f[24];  // fields 3..26
  for (auto& x : f) rest >> x;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  auto num = [&](int field) { return std::strtoull(f[field - 3].c_str(), nullptr, 10); };
  s.cpu_seconds = static_cast<double>(num(14) + num(15)) / ticks;
  s.threads = num(20);
  s.virtual_bytes = num(23);
  s.resident_bytes = num(24) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  // Boot time from /proc/stat's btime line.
  std::ifstream stat("/proc/stat");
  uint64_t btime = 0;
  while (std::getline(stat, line)) {
    if (line.rfind("btime ", 0) == 0) btime = std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  s.start_time_seconds = static_cast<double>(btime) + static_cast<double>(num(22)) / ticks;
  s.ok = btime != 0;
  return s;
}

int64_t OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int64_t n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the directory's own fd
}

}  // namespace

void ServerMetrics::SetDurability(std::string mode) {
  std::lock_guard lock(mu_);
  durability_ = std::move(mode);
}

void ServerMetrics::SetIoBackend(std::string backend) {
  std::lock_guard lock(mu_);
  io_backend_ = std::move(backend);
}

void ServerMetrics::SetRocksdbLiveDataSource(std::function<uint64_t()> source) {
  std::lock_guard lock(mu_);
  rocksdb_live_data_ = std::move(source);
}

void ServerMetrics::Collect(TextWriter& out) {
  std::string durability, backend;
  uint64_t live_data = 0;
  {
    // The source is called under the lock: once SetRocksdbLiveDataSource(nullptr)
    // returns, no call of the old source is running.
    std::lock_guard lock(mu_);
    durability = durability_;
    backend = io_backend_;
    if (rocksdb_live_data_) live_data = rocksdb_live_data_();
  }
  out.Family("ringq_build_info", Type::kGauge, "Always 1; the build in labels.");
#ifdef __clang__
  constexpr const char* kCompiler = "clang " __clang_version__;
#else
  constexpr const char* kCompiler = "gcc " __VERSION__;
#endif
  out.Sample({{"version", version_}, {"compiler", kCompiler}}, uint64_t{1});
  out.Family("ringq_durability_info", Type::kGauge,
             "Always 1; mode: what a reply means. none: in memory only; sync: after fdatasync; "
             "batch: after write, fdatasync every --sync-interval-ms.");
  out.Sample({{"mode", durability}}, uint64_t{1});
  out.Family("ringq_io_backend_info", Type::kGauge,
             "Always 1; backend: the write-ahead log's I/O (io_uring, or the portable fallback "
             "where io_uring is not permitted; none without a WAL).");
  out.Sample({{"backend", backend}}, uint64_t{1});
  out.Family("ringq_rocksdb_live_data_bytes", Type::kGauge,
             "RocksDB's estimate of its live data size (0 while nothing reports it).");
  out.Sample(Labels{}, live_data);

  const ProcStat ps = ReadProcStat();
  if (ps.ok) {
    out.Family("process_cpu_seconds_total", Type::kCounter,
               "User and system CPU time spent by the process, in seconds.");
    out.Sample(Labels{}, ps.cpu_seconds);
    out.Family("process_resident_memory_bytes", Type::kGauge, "Resident memory size in bytes.");
    out.Sample(Labels{}, ps.resident_bytes);
    out.Family("process_virtual_memory_bytes", Type::kGauge, "Virtual memory size in bytes.");
    out.Sample(Labels{}, ps.virtual_bytes);
    out.Family("process_start_time_seconds", Type::kGauge,
               "Start time of the process since the Unix epoch, in seconds.");
    out.Sample(Labels{}, ps.start_time_seconds);
    out.Family("process_threads", Type::kGauge, "Threads of the process.");
    out.Sample(Labels{}, ps.threads);
  }
  const int64_t fds = OpenFds();
  rlimit lim{};
  if (fds >= 0 && getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.Family("process_open_fds", Type::kGauge, "Open file descriptors.");
    out.Sample(Labels{}, static_cast<uint64_t>(fds));
    out.Family("process_max_fds", Type::kGauge, "Limit of open file descriptors.");
    out.Sample(Labels{}, static_cast<uint64_t>(lim.rlim_cur));
  }
}

}  // namespace ringq::http
