// ringq-bench: the load generator of ringq (bench/README.md).
//
// Runs the scenarios push (unary, stream, batch), process, steady and
// open-loop latency over a matrix of payload sizes and queue counts against
// one server, verifies that every pushed job was processed exactly once and
// intact (Ledger), and prints a table (and JSON with --json) naming the
// protocol, the server's durability mode and how each latency was measured.
// Exit status: 0 when every row verified with no error, 1 otherwise, 2 on
// bad usage or when the server cannot be started or reached.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/driver.h"
#include "bench/histogram.h"
#include "bench/ledger.h"
#include "bench/load.h"
#include "bench/server.h"

#ifndef RINGQD_PATH
#define RINGQD_PATH "ringqd"
#endif

namespace ringq::bench {
namespace {

constexpr const char* kVersion = "0.1.0";

// ------------------------------------------------------------------ options

struct Sizes {
  double push_s = 3, steady_s = 3, latency_s = 5;
  uint64_t jobs_max = 2'000'000;
  uint64_t bytes_max = 1ull << 30;  // payload bytes one row may leave waiting
  int drain_s = 60;
  uint32_t rate = 5000;
  std::vector<size_t> payloads{100, 10240};
  std::vector<uint32_t> queue_counts{1, 1000};
};

Sizes Preset(const std::string& size) {
  Sizes s;
  if (size == "tiny") {
    s.push_s = 0.5, s.steady_s = 0.5, s.latency_s = 1, s.jobs_max = 50'000;
    s.bytes_max = 64ull << 20, s.drain_s = 20, s.rate = 2000;
    s.payloads = {100};
  } else if (size == "full") {
    s.push_s = 15, s.steady_s = 20, s.latency_s = 30, s.jobs_max = 20'000'000;
    s.bytes_max = 4ull << 30, s.drain_s = 300;
  }
  return s;
}

struct Options {
  std::string size = "short";
  std::string protocol = "grpc";
  std::string server = RINGQD_PATH;
  std::vector<std::string> server_args;
  std::string target, server_log, json_path, label;
  pid_t server_pid = 0;
  std::vector<std::string> scenarios{"push", "process", "steady", "latency"};
  Sizes sizes;
  uint32_t unary_conns = 8, pipe_conns = 2, pipe_window = 512, batch_conns = 4, batch = 100;
  uint32_t worker_conns = 2, streams_min = 4, credits_total = 8000, credits_max = 10'000;
  uint32_t latency_conns = 2;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void Usage() {
  std::printf(
      "ringq-bench %s: load generator for ringq (see bench/README.md)\n\n"
      "usage: ringq-bench [--flag=value ...]\n\n"
      "  --size=tiny|short|full   run length and matrix (default short)\n"
      "  --protocol=grpc          transport (RQP plugs in later)\n"
      "  --server=PATH            ringqd to start (default: the one built beside this tool)\n"
      "  --server-arg=ARG         extra ringqd flag, repeatable (e.g. --server-arg=--shards=2)\n"
      "  --target=HOST:PORT       use a running server instead of starting one\n"
      "  --server-pid=PID         its pid, for server CPU and RSS (from /proc)\n"
      "  --server-log=FILE        its log, for the durability mode\n"
      "  --scenarios=LIST         of push,process,steady,latency (default all)\n"
      "  --payloads=LIST          payload bytes (default of the size: 100,10240)\n"
      "  --queues=LIST            queue counts (default 1,1000)\n"
      "  --seconds=S              duration of each push and steady run\n"
      "  --latency-seconds=S      duration of the open-loop run\n"
      "  --rate=N                 open-loop pushes per second (default 5000)\n"
      "  --connections=N          producer connections for unary pushes (default 8)\n"
      "  --json=FILE              also write the results as JSON\n"
      "  --label=TEXT             free text stored in the JSON\n",
      kVersion);
}

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      Usage();
      std::exit(0);
    }
    const auto eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "ringq-bench: bad argument '%s' (flags are --name=value)\n", argv[i]);
      return false;
    }
    const std::string k = a.substr(2, eq - 2), v = a.substr(eq + 1);
    try {
      if (k == "size") {
        if (v != "tiny" && v != "short" && v != "full") throw std::invalid_argument(v);
        o->size = v;
        o->sizes = Preset(v);
      } else if (k == "protocol") {
        o->protocol = v;
      } else if (k == "server") {
        o->server = v;
      } else if (k == "server-arg") {
        o->server_args.push_back(v);
      } else if (k == "target") {
        o->target = v;
      } else if (k == "server-pid") {
        o->server_pid = std::stoi(v);
      } else if (k == "server-log") {
        o->server_log = v;
      } else if (k == "json") {
        o->json_path = v;
      } else if (k == "label") {
        o->label = v;
      } else if (k == "scenarios") {
        o->scenarios = Split(v);
      } else if (k == "payloads") {
        o->sizes.payloads.clear();
        for (auto& p : Split(v)) o->sizes.payloads.push_back(std::stoul(p));
      } else if (k == "queues") {
        o->sizes.queue_counts.clear();
        for (auto& q : Split(v)) o->sizes.queue_counts.push_back(std::stoul(q));
      } else if (k == "seconds") {
        o->sizes.push_s = o->sizes.steady_s = std::stod(v);
      } else if (k == "latency-seconds") {
        o->sizes.latency_s = std::stod(v);
      } else if (k == "rate") {
        o->sizes.rate = std::stoul(v);
      } else if (k == "connections") {
        o->unary_conns = std::stoul(v);
      } else {
        std::fprintf(stderr, "ringq-bench: unknown flag --%s (see --help)\n", k.c_str());
        return false;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "ringq-bench: bad value '%s' for --%s\n", v.c_str(), k.c_str());
      return false;
    }
  }
  for (auto& s : o->scenarios) {
    if (s != "push" && s != "process" && s != "steady" && s != "latency") {
      std::fprintf(stderr, "ringq-bench: unknown scenario '%s'\n", s.c_str());
      return false;
    }
  }
  // Every loop of the tool is bounded: these bounds keep a run finite.
  const auto& z = o->sizes;
  if (z.payloads.empty() || z.queue_counts.empty() || z.rate == 0 || z.rate > 1'000'000 ||
      z.push_s <= 0 || z.push_s > 3600 || z.latency_s <= 0 || z.latency_s > 3600 ||
      o->unary_conns == 0 || o->unary_conns > 1024) {
        std::fprintf(stderr, "ringq-bench: a size, rate, duration or count is out of range\n");
    return false;
  }
  for (size_t p : z.payloads) {
    if (p < sizeof(PayloadHeader) || p > (1u << 20)) {
      std::fprintf(stderr, "ringq-bench: payloads must be 24..1048576 bytes\n");
      return false;
    }
  }
  for (uint32_t q : z.queue_counts) {
    if (q == 0 || q > 100'000) {
      std::fprintf(stderr, "ringq-bench: queue counts must be 1..100000\n");
      return false;
    }
  }
  return true;
}

bool Has(const Options& o, const char* s) {
  for (auto& x : o.scenarios) {
    if (x == s) return true;
  }
  return false;
}

// ------------------------------------------------------------------ results

struct Summary {
  uint64_t count = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double mean = 0;
};

Summary Summarize(const Histogram& h) {
  return Summary{h.count(),          h.Percentile(0.50), h.Percentile(0.90), h.Percentile(0.99),
                 h.Percentile(0.999), h.max(),           h.mean()};
}

struct Row {
  std::string scenario, api, measure;  // measure: what the latency columns are
  size_t payload = 0;
  uint32_t queues = 0;
  std::string params;
  double seconds = 0;
  uint64_t jobs = 0;
  double jobs_per_s = 0;
  double push_per_s = 0, process_per_s = 0;  // steady: both sides
  std::optional<Summary> push_lat, e2e_lat, send_lag;
  uint64_t errors = 0;
  std::string first_error;
  Verdict verdict;
  std::optional<double> server_cpu_s_per_m, client_cpu_s_per_m, rss_bytes_per_m_waiting;
};

double ClientCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU (server and client) over a window of the run.
struct CpuWindow {
  std::optional<double> server0;
  double client0 = 0;
  void Start(const ServerHandle& s) {
    server0 = s.CpuSeconds();
    client0 = ClientCpuSeconds();
  }
  void End(const ServerHandle& s, uint64_t jobs, Row* row) const {
    if (jobs == 0) return;
    const auto server1 = s.CpuSeconds();
    if (server0 && server1) row->server_cpu_s_per_m = (*server1 - *server0) * 1e6 / double(jobs);
    row->client_cpu_s_per_m = (ClientCpuSeconds() - client0) * 1e6 / double(jobs);
  }
};

// ------------------------------------------------------------------ scenarios

class Bench {
 public:
  Bench(const Options& o, ServerHandle& server, std::vector<std::unique_ptr<Connection>>& producers,
        std::vector<std::unique_ptr<Connection>>& workers)
      : o_(o), server_(server) {
    for (auto& c : producers) producers_.push_back(c.get());
    for (auto& c : workers) workers_.push_back(c.get());
    run_id_ = std::to_string(getpid()) + "-" + std::to_string(NowNs() / 1'000'000 % 100'000'000);
  }

  void RunShape(size_t payload, uint32_t queues) {
    if (Has(o_, "push")) {
      PushRow(ClosedLoop::Kind::kUnary, payload, queues);
      PushRow(ClosedLoop::Kind::kPipe, payload, queues);
    }
    if (Has(o_, "push") || Has(o_, "process")) BatchAndProcess(payload, queues);
    if (Has(o_, "steady")) Steady(payload, queues);
    if (Has(o_, "latency")) Latency(payload, queues);
  }

  std::vector<Row>& rows() { return rows_; }

 private:
  struct RowSetup {
    uint32_t id;
    std::vector<std::string> queues;
    uint64_t jobs_max;
  };

  RowSetup Setup(size_t payload, uint32_t queue_count) {
    RowSetup s;
    s.id = next_row_++;
    for (uint32_t q = 0; q < queue_count; ++q) {
      s.queues.push_back("rqb-" + run_id_ + "-" + std::to_string(s.id) + "-" + std::to_string(q));
    }
    s.jobs_max = std::min<uint64_t>(o_.sizes.jobs_max, o_.sizes.bytes_max / payload);
    return s;
  }

  std::vector<Connection*> Producers(uint32_t n) const {
    return {producers_.begin(), producers_.begin() + std::min<size_t>(n, producers_.size())};
  }

  int64_t Deadline(double seconds) const { return NowNs() + int64_t(seconds * 1e9); }

  // Processes everything `ledger` saw pushed, then verifies. Adds to row->errors.
  void DrainAndVerify(Ledger& ledger, const RowSetup& s, uint64_t issued, Row* row,
                      std::vector<Row*> also = {}) {
    {
      WorkerPool pool(workers_, s.queues, o_.streams_min, o_.credits_total, o_.credits_max,
                      &ledger);
      WaitProcessed(ledger, ledger.pushed(), Deadline(o_.sizes.drain_s));
      Close(pool, row);
    }
    Finish(ledger, issued, row);
    for (Row* r : also) r->verdict = row->verdict;
  }

  void Close(WorkerPool& pool, Row* row) {
    std::string e;
    row->errors += pool.Close(10'000, &e);
    if (!e.empty() && row->first_error.empty()) row->first_error = e;
  }

  void Finish(Ledger& ledger, uint64_t issued, Row* row) {
    row->verdict = ledger.Verify(issued);
    row->errors += ledger.push_errors();
    if (row->first_error.empty()) row->first_error = ledger.first_error();
  }

  Row Base(const char* scenario, const char* api, const char* measure, size_t payload,
           uint32_t queues) {
    Row r;
    r.scenario = scenario, r.api = api, r.measure = measure, r.payload = payload, r.queues = queues;
    return r;
  }

  void PushRow(ClosedLoop::Kind kind, size_t payload, uint32_t queue_count) {
    RowSetup s = Setup(payload, queue_count);
    Histogram lat, e2e;
    Ledger ledger(s.id, s.jobs_max, payload, &e2e);
    const bool unary = kind == ClosedLoop::Kind::kUnary;
    Row row = Base("push", unary ? "unary" : "stream", "closed-loop service time", payload,
                   queue_count);
    ClosedLoop::Config cfg{.kind = kind, .window = unary ? 1 : o_.pipe_window,
                           .jobs_max = s.jobs_max, .deadline_ns = Deadline(o_.sizes.push_s)};
    const uint32_t conns = unary ? o_.unary_conns : o_.pipe_conns;
    row.params = unary ? std::to_string(conns) + " conns x 1 in flight"
                       : std::to_string(conns) + " streams x " + std::to_string(o_.pipe_window) +
                             " in flight";
    CpuWindow cpu;
    cpu.Start(server_);
    uint64_t issued;
    {
      ClosedLoop loop(cfg, Producers(conns), s.queues, &ledger, &lat);
      loop.Run(30'000);
      issued = loop.issued();
      row.seconds = double(loop.ended_ns() - loop.started_ns()) / 1e9;
      if (!loop.pipe_error().empty()) ++row.errors, row.first_error = loop.pipe_error();
    }
    row.jobs = ledger.pushed();
    row.jobs_per_s = row.jobs / row.seconds;
    cpu.End(server_, row.jobs, &row);
    row.push_lat = Summarize(lat);
    DrainAndVerify(ledger, s, issued, &row);
    Print(row);
    rows_.push_back(row);
  }

  void BatchAndProcess(size_t payload, uint32_t queue_count) {
    RowSetup s = Setup(payload, queue_count);
    Histogram lat, e2e;
    Ledger ledger(s.id, s.jobs_max, payload, &e2e);
    Row push = Base("push", "batch", "closed-loop service time (per batch)", payload, queue_count);
    push.params = std::to_string(o_.batch_conns) + " conns x 1 batch of " +
                  std::to_string(o_.batch) + " in flight";
    ClosedLoop::Config cfg{.kind = ClosedLoop::Kind::kBatch, .batch = o_.batch,
                           .jobs_max = s.jobs_max, .deadline_ns = Deadline(o_.sizes.push_s)};
    CpuWindow cpu;
    const auto rss0 = server_.RssBytes();
    cpu.Start(server_);
    uint64_t issued;
    {
      ClosedLoop loop(cfg, Producers(o_.batch_conns), s.queues, &ledger, &lat);
      loop.Run(30'000);
      issued = loop.issued();
      push.seconds = double(loop.ended_ns() - loop.started_ns()) / 1e9;
    }
    push.jobs = ledger.pushed();
    push.jobs_per_s = push.jobs / push.seconds;
    cpu.End(server_, push.jobs, &push);
    const auto rss1 = server_.RssBytes();
    if (rss0 && rss1 && push.jobs > 0) {
      push.rss_bytes_per_m_waiting = (double(*rss1) - double(*rss0)) * 1e6 / double(push.jobs);
    }
    push.push_lat = Summarize(lat);

    // process: workers drain what the batch run left waiting.
    Row proc = Base("process", "subscribe", "-", payload, queue_count);
    CpuWindow pcpu;
    pcpu.Start(server_);
    const int64_t t0 = NowNs();
    {
      WorkerPool pool(workers_, s.queues, o_.streams_min, o_.credits_total, o_.credits_max,
                      &ledger);
      proc.params = std::to_string(pool.streams()) + " streams, " +
                    std::to_string(o_.credits_total) + " credits, acks batched per message";
      WaitProcessed(ledger, ledger.pushed(), Deadline(o_.sizes.drain_s));
      proc.jobs = ledger.processed();
      proc.seconds = double(std::max(ledger.last_delivery_ns(), t0 + 1) - t0) / 1e9;
      Close(pool, &proc);
    }
    pcpu.End(server_, proc.jobs, &proc);
    proc.jobs_per_s = proc.jobs / proc.seconds;
    Finish(ledger, issued, &proc);
    push.verdict = proc.verdict;
    push.errors += ledger.push_errors();
    push.first_error = ledger.first_error();
    if (Has(o_, "push")) {
      Print(push);
      rows_.push_back(push);
    }
    if (Has(o_, "process")) {
      Print(proc);
      rows_.push_back(proc);
    }
  }

  void Steady(size_t payload, uint32_t queue_count) {
    RowSetup s = Setup(payload, queue_count);
    Histogram lat, e2e;
    Ledger ledger(s.id, s.jobs_max, payload, &e2e);
    Row row = Base("steady", "batch+sub", "closed-loop push->delivery (e2e)", payload,
                   queue_count);
    row.params = std::to_string(o_.batch_conns) + " batch producers, workers as in process";
    CpuWindow cpu;
    cpu.Start(server_);
    uint64_t issued, processed_in_window;
    {
      WorkerPool pool(workers_, s.queues, o_.streams_min, o_.credits_total, o_.credits_max,
                      &ledger);
      ClosedLoop::Config cfg{.kind = ClosedLoop::Kind::kBatch, .batch = o_.batch,
                             .jobs_max = s.jobs_max, .deadline_ns = Deadline(o_.sizes.steady_s)};
      {
        ClosedLoop loop(cfg, Producers(o_.batch_conns), s.queues, &ledger, &lat);
        loop.Run(30'000);
        issued = loop.issued();
        processed_in_window = ledger.processed();
        row.seconds = double(loop.ended_ns() - loop.started_ns()) / 1e9;
      }
      row.push_per_s = ledger.pushed() / row.seconds;
      row.process_per_s = processed_in_window / row.seconds;
      WaitProcessed(ledger, ledger.pushed(), Deadline(o_.sizes.drain_s));
      Close(pool, &row);
    }
    row.jobs = ledger.processed();
    row.jobs_per_s = row.process_per_s;
    cpu.End(server_, row.jobs, &row);
    row.push_lat = Summarize(lat);
    row.e2e_lat = Summarize(e2e);
    Finish(ledger, issued, &row);
    Print(row);
    rows_.push_back(row);
  }

  void Latency(size_t payload, uint32_t queue_count) {
    RowSetup s = Setup(payload, queue_count);
    const uint64_t jobs = std::min<uint64_t>(s.jobs_max, uint64_t(o_.sizes.rate * o_.sizes.latency_s));
    Histogram push_lat, e2e, lag;
    Ledger ledger(s.id, jobs, payload, &e2e);
    Row row = Base("latency", "unary", "open-loop, from the INTENDED send time (CO-corrected)",
                   payload, queue_count);
    row.params = std::to_string(o_.sizes.rate) + " jobs/s over " +
                 std::to_string(o_.latency_conns) + " conns, workers subscribed";
    CpuWindow cpu;
    cpu.Start(server_);
    uint64_t issued;
    {
      WorkerPool pool(workers_, s.queues, o_.streams_min, o_.credits_total, o_.credits_max,
                      &ledger);
      OpenLoop loop(OpenLoop::Config{.rate = o_.sizes.rate, .jobs = jobs},
                    Producers(o_.latency_conns), s.queues, &ledger, &push_lat, &lag);
      loop.Run(30'000);
      issued = loop.issued();
      row.seconds = double(loop.ended_ns() - loop.started_ns()) / 1e9;
      WaitProcessed(ledger, ledger.pushed(), Deadline(o_.sizes.drain_s));
      Close(pool, &row);
    }
    row.jobs = ledger.processed();
    row.jobs_per_s = ledger.pushed() / row.seconds;
    cpu.End(server_, row.jobs, &row);
    row.push_lat = Summarize(push_lat);
    row.e2e_lat = Summarize(e2e);
    row.send_lag = Summarize(lag);
    Finish(ledger, issued, &row);
    Print(row);
    rows_.push_back(row);
  }

 public:
  static std::string Ns(uint64_t ns) {
    char b[32];
    if (ns < 10'000) std::snprintf(b, sizeof b, "%.2fus", ns / 1e3);
    else if (ns < 1'000'000) std::snprintf(b, sizeof b, "%.0fus", ns / 1e3);
    else if (ns < 1'000'000'000) std::snprintf(b, sizeof b, "%.2fms", ns / 1e6);
    else std::snprintf(b, sizeof b, "%.2fs", ns / 1e9);
    return b;
  }
  static std::string Bytes(size_t n) {
    if (n >= 1024 && n % 1024 == 0) return std::to_string(n / 1024) + "KiB";
    return std::to_string(n) + "B";
  }
  static void Header() {
    std::printf("%-8s %-9s %-7s %6s %9s %7s %10s %4s %9s %9s %9s %9s %9s %6s %-8s %-17s %9s %9s\n",
                "scenario", "api", "payload", "queues", "jobs", "secs", "jobs/s", "lat", "p50",
                "p90", "p99", "p99.9", "max", "errors", "verified", "checksum", "srv cpu", "cli cpu");
    std::printf("%-8s %-9s %-7s %6s %9s %7s %10s %4s %9s %9s %9s %9s %9s %6s %-8s %-17s %9s %9s\n",
                "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "s/Mjobs",
                "s/Mjobs");
    std::fflush(stdout);
  }
  static void PrintLine(const Row& r, const char* which, const std::optional<Summary>& l,
                        bool first) {
    char srv[32] = "-", cli[32] = "-";
    if (r.server_cpu_s_per_m) std::snprintf(srv, sizeof srv, "%.2f", *r.server_cpu_s_per_m);
    if (r.client_cpu_s_per_m) std::snprintf(cli, sizeof cli, "%.2f", *r.client_cpu_s_per_m);
    char sum[24];
    std::snprintf(sum, sizeof sum, "%016" PRIx64, r.verdict.checksum_processed);
    auto v = [&](uint64_t x) { return l ? Ns(x) : std::string("-"); };
    char jobs[24] = "", secs[24] = "", rate[24] = "";
    if (first) {
      std::snprintf(jobs, sizeof jobs, "%" PRIu64, r.jobs);
      std::snprintf(secs, sizeof secs, "%.2f", r.seconds);
      std::snprintf(rate, sizeof rate, "%.0f", r.jobs_per_s);
    }
    std::printf("%-8s %-9s %-7s %6u %9s %7s %10s %4s %9s %9s %9s %9s %9s %6" PRIu64
                " %-8s %-17s %9s %9s\n",
                first ? r.scenario.c_str() : "", first ? r.api.c_str() : "",
                Bytes(r.payload).c_str(), r.queues, jobs, secs, rate, which, v(l ? l->p50 : 0).c_str(),
                v(l ? l->p90 : 0).c_str(), v(l ? l->p99 : 0).c_str(), v(l ? l->p999 : 0).c_str(),
                v(l ? l->max : 0).c_str(), r.errors, r.verdict.ok() ? "ok" : "FAIL", sum, srv,
                cli);
  }
  static void Print(const Row& r) {
    if (r.e2e_lat && r.push_lat) {
      PrintLine(r, "push", r.push_lat, true);
      PrintLine(r, "e2e", r.e2e_lat, false);
    } else {
      PrintLine(r, r.push_lat ? "push" : "-", r.push_lat, true);
    }
    if (r.scenario == "steady") {
      std::printf("%-8s    pushed %.0f jobs/s and processed %.0f jobs/s at once\n", "",
                  r.push_per_s, r.process_per_s);
    }
    if (r.send_lag) {
      std::printf("%-8s    generator send lag p50 %s p99 %s (included in the latencies above)\n",
                  "", Ns(r.send_lag->p50).c_str(), Ns(r.send_lag->p99).c_str());
    }
    if (r.rss_bytes_per_m_waiting) {
      std::printf("%-8s    server RSS %+.0f MiB per million waiting jobs\n", "",
                  *r.rss_bytes_per_m_waiting / (1 << 20));
    }
    if (!r.verdict.ok()) {
      const Verdict& v = r.verdict;
      std::printf("%-8s    VERIFY FAILED: pushed %" PRIu64 " processed %" PRIu64
                  " missing %" PRIu64 " duplicates %" PRIu64 " corrupt %" PRIu64
                  " id mismatch %" PRIu64 "\n",
                  "", v.pushed, v.processed, v.missing, v.duplicates, v.corrupt, v.id_mismatch);
    }
    if (r.errors > 0) std::printf("%-8s    first error: %s\n", "", r.first_error.c_str());
    std::fflush(stdout);
  }

 private:
  const Options& o_;
  ServerHandle& server_;
  std::vector<Connection*> producers_, workers_;
  std::vector<Row> rows_;
  uint32_t next_row_ = 1;
  std::string run_id_;
};

// ------------------------------------------------------------------ JSON

std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return "\"" + o + "\"";
}

std::string Num(double d) {
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", d);
  return b;
}

std::string Lat(const std::optional<Summary>& l) {
  if (!l) return "null";
  std::ostringstream o;
  o << "{\"count\":" << l->count << ",\"p50_us\":" << Num(l->p50 / 1e3)
    << ",\"p90_us\":" << Num(l->p90 / 1e3) << ",\"p99_us\":" << Num(l->p99 / 1e3)
    << ",\"p999_us\":" << Num(l->p999 / 1e3) << ",\"max_us\":" << Num(l->max / 1e3)
    << ",\"mean_us\":" << Num(l->mean / 1e3) << "}";
  return o.str();
}

std::string Opt(const std::optional<double>& d) { return d ? Num(*d) : "null"; }

void WriteJson(const std::string& path, const Options& o, const ServerHandle& server,
               const std::string& protocol, const std::vector<Row>& rows) {
  std::ostringstream j;
  j << "{\"tool\":\"ringq-bench\",\"version\":" << Esc(kVersion) << ",\"system\":\"ringq\""
    << ",\"protocol\":" << Esc(protocol) << ",\"size\":" << Esc(o.size)
    << ",\"label\":" << Esc(o.label) << ",\"durability\":" << Esc(server.Durability())
    << ",\"server_version\":" << Esc(server.Version())
    << ",\"io_backend\":" << Esc(server.IoBackend())
    << ",\"server_started_by_tool\":" << (server.started_by_us() ? "true" : "false")
    << ",\"cores\":" << sysconf(_SC_NPROCESSORS_ONLN)
    << ",\"latency_note\":" << Esc("closed-loop rows: service time from the actual send; "
                                   "open-loop rows: from the intended send time "
                                   "(coordinated omission corrected)")
    << ",\"rows\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const Verdict& v = r.verdict;
    j << (i ? "," : "") << "\n{\"scenario\":" << Esc(r.scenario) << ",\"api\":" << Esc(r.api)
      << ",\"latency_measure\":" << Esc(r.measure) << ",\"payload_bytes\":" << r.payload
      << ",\"queues\":" << r.queues << ",\"params\":" << Esc(r.params)
      << ",\"seconds\":" << Num(r.seconds) << ",\"jobs\":" << r.jobs
      << ",\"jobs_per_s\":" << Num(r.jobs_per_s);
    if (r.scenario == "steady") {
      j << ",\"push_per_s\":" << Num(r.push_per_s) << ",\"process_per_s\":" << Num(r.process_per_s);
    }
    j << ",\"push_latency\":" << Lat(r.push_lat) << ",\"e2e_latency\":" << Lat(r.e2e_lat)
      << ",\"send_lag\":" << Lat(r.send_lag) << ",\"errors\":" << r.errors
      << ",\"first_error\":" << Esc(r.first_error)
      << ",\"verify\":{\"ok\":" << (v.ok() ? "true" : "false") << ",\"pushed\":" << v.pushed
      << ",\"processed\":" << v.processed << ",\"missing\":" << v.missing
      << ",\"duplicates\":" << v.duplicates << ",\"corrupt\":" << v.corrupt
      << ",\"id_mismatch\":" << v.id_mismatch << ",\"checksum_pushed\":" << v.checksum_pushed
      << ",\"checksum_processed\":" << v.checksum_processed << "}"
      << ",\"server_cpu_s_per_million\":" << Opt(r.server_cpu_s_per_m)
      << ",\"client_cpu_s_per_million\":" << Opt(r.client_cpu_s_per_m)
      << ",\"server_rss_bytes_per_million_waiting\":" << Opt(r.rss_bytes_per_m_waiting) << "}";
  }
  j << "\n]}\n";
  std::ofstream out(path);
  out << j.str();
}

// ------------------------------------------------------------------ main

void OnSignal(int sig) {
  const pid_t child = g_server_child_pid;
  if (child > 0) kill(child, SIGKILL);
  _exit(128 + sig);
}

std::unique_ptr<Driver> MakeDriver(const std::string& protocol, const std::string& target) {
  if (protocol == "grpc") return NewGrpcDriver(target);
  return nullptr;  // "rqp": once the RQP client exists, its Driver goes here
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) return 2;
  prctl(PR_SET_TIMERSLACK, 1);  // open-loop sleeps wake on time (default slack: 50 us)
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGHUP, OnSignal);
  signal(SIGPIPE, SIG_IGN);

  ServerHandle server;
  std::string error;
  if (o.target.empty()) {
    if (!server.Start(o.server, o.server_args, 15'000, &error)) {
      std::fprintf(stderr, "ringq-bench: %s\n", error.c_str());
      return 2;
    }
  } else {
    server.Attach(o.target, o.server_pid, o.server_log);
  }
  auto driver = MakeDriver(o.protocol, server.target());
  if (!driver) {
    std::fprintf(stderr, "ringq-bench: unknown protocol '%s' (known: grpc)\n", o.protocol.c_str());
    return 2;
  }
  std::vector<std::unique_ptr<Connection>> producers, workers;
  const uint32_t producer_conns = std::max({o.unary_conns, o.pipe_conns, o.batch_conns,
                                            o.latency_conns});
  for (uint32_t i = 0; i < producer_conns + o.worker_conns; ++i) {
    auto c = driver->Connect(10'000, &error);
    if (!c) {
      std::fprintf(stderr, "ringq-bench: %s\n", error.c_str());
      return 2;
    }
    (i < producer_conns ? producers : workers).push_back(std::move(c));
  }

  std::printf("ringq-bench %s: protocol %s, server ringqd %s at %s (pid %d, %s)\n", kVersion,
              driver->name().c_str(), server.Version().c_str(), server.target().c_str(),
              int(server.pid()), server.started_by_us() ? "started by ringq-bench" : "attached");
  std::printf("durability: %s\n", server.Durability().c_str());
  std::printf("I/O backend: %s\n", server.IoBackend().c_str());
  std::printf("size %s, %ld cores shared by server and client; closed-loop latencies are service "
              "times (from the actual send);\nopen-loop latencies are measured from the INTENDED "
              "send time (coordinated-omission corrected).\nchecksum: sum of a hash of every job "
              "processed (equal to that of every job pushed when verified ok).\n\n",
              o.size.c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  Bench bench(o, server, producers, workers);
  Bench::Header();
  for (size_t payload : o.sizes.payloads) {
    for (uint32_t queues : o.sizes.queue_counts) bench.RunShape(payload, queues);
  }
  producers.clear();
  workers.clear();
  if (!o.json_path.empty()) WriteJson(o.json_path, o, server, driver->name(), bench.rows());
  server.Stop(10'000);

  bool ok = true;
  for (const Row& r : bench.rows()) ok &= r.verdict.ok() && r.errors == 0;
  std::printf("\n%s\n", ok ? "all rows verified: every pushed job processed exactly once, intact"
                           : "SOME ROWS FAILED (see above)");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace ringq::bench

int main(int argc, char** argv) { return ringq::bench::Main(argc, argv); }
