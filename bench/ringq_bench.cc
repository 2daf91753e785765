// ringq-bench: the load generator of ringq (bench/README.md).
//
// Runs the scenarios push (unary, pipelined, batch), process, steady and
// open-loop latency over a matrix of payload sizes and queue counts, over
// gRPC and/or RQP, against one server per I/O backend asked for (--io),
// verifies that every pushed job was processed exactly once and intact
// (Ledger), and prints a table (and JSON with --json) naming, on every row,
// the protocol and the server's I/O backend, plus the durability mode and
// how each latency was measured. With --strace it also counts the server's
// system calls per job over each measured window (syscall_count.h).
// Exit status: 0 when every row verified with no error, 1 otherwise, 2 on
// bad usage or when the server cannot be started or reached.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/driver.h"
#include "bench/histogram.h"
#include "bench/ledger.h"
#include "bench/load.h"
#include "bench/server.h"
#include "bench/syscall_count.h"

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
  // "grpc", "rqp"; empty: both when the server serves RQP, else grpc.
  std::vector<std::string> protocols;
  // One server per entry: "default" (the server chooses), "uring", "epoll" (RINGQ_IO).
  std::vector<std::string> ios{"default"};
  std::string server = RINGQD_PATH;
  std::vector<std::string> server_args, server_env;
  std::string target, rqp_target, server_log, json_path, label;
  pid_t server_pid = 0;
  std::string strace;  // path of strace: count server syscalls per job (empty: off)
  std::vector<std::string> scenarios{"push", "process", "steady", "latency"};
  std::vector<std::string> push_apis{"unary", "pipelined", "batch"};
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
      "  --protocol=grpc|rqp|both every scenario over gRPC, RQP or both (default: both\n"
      "                           when the server serves RQP, else grpc)\n"
      "  --io=default|uring|epoll|both\n"
      "                           the server's I/O backend (env RINGQ_IO); both: one server\n"
      "                           each, io_uring first (default: the server chooses)\n"
      "  --server=PATH            ringqd to start (default: the one built beside this tool)\n"
      "  --server-arg=ARG         extra ringqd flag, repeatable (e.g. --server-arg=--shards=2)\n"
      "  --server-env=NAME=VALUE  extra environment of the started ringqd, repeatable\n"
      "  --target=HOST:PORT       use a running server (its gRPC port) instead of starting one\n"
      "  --rqp-target=HOST:PORT   its RQP port (default: read from --server-log)\n"
      "  --server-pid=PID         its pid, for server CPU and RSS (from /proc)\n"
      "  --server-log=FILE        its log, for the durability mode, I/O backend, RQP port\n"
      "  --scenarios=LIST         of push,process,steady,latency (default all)\n"
      "  --push-apis=LIST         push rows: of unary,pipelined,batch (default all; the\n"
      "                           batch push also runs, unprinted, to feed process)\n"
      "  --jobs=N                 job budget of each row (default of the size)\n"
      "  --drain-seconds=S        longest wait for workers to process a row's jobs\n"
      "  --strace=PATH            count the server's syscalls per job in each measured\n"
      "                           window with PATH (strace -c -f -p); slows the server:\n"
      "                           report counts, not rates (bench/syscalls.sh)\n"
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
        o->protocols = v == "both" ? std::vector<std::string>{"grpc", "rqp"} : Split(v);
      } else if (k == "io") {
        o->ios = v == "both" ? std::vector<std::string>{"uring", "epoll"} : Split(v);
      } else if (k == "server-env") {
        if (v.find('=') == std::string::npos || v.front() == '=') throw std::invalid_argument(v);
        o->server_env.push_back(v);
      } else if (k == "rqp-target") {
        o->rqp_target = v;
      } else if (k == "strace") {
        o->strace = v;
      } else if (k == "push-apis") {
        o->push_apis = Split(v);
        for (auto& a : o->push_apis) {
          if (a == "stream") a = "pipelined";
        }
      } else if (k == "jobs") {
        o->sizes.jobs_max = std::stoull(v);
      } else if (k == "drain-seconds") {
        o->sizes.drain_s = std::stoi(v);
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
  // Every listed value must be one of `allowed`; `what` names the flag.
  auto only = [](const std::vector<std::string>& values, std::initializer_list<const char*> allowed,
                 const char* what, const char* hint) {
    for (const auto& v : values) {
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return v == a; })) {
        std::fprintf(stderr, "ringq-bench: unknown %s '%s' (%s)\n", what, v.c_str(), hint);
        return false;
      }
    }
    return true;
  };
  if (!only(o->scenarios, {"push", "process", "steady", "latency"}, "scenario",
            "push, process, steady, latency") ||
      !only(o->push_apis, {"unary", "pipelined", "batch"}, "push api", "unary, pipelined, batch") ||
      !only(o->protocols, {"grpc", "rqp"}, "protocol", "grpc, rqp, both") ||
      !only(o->ios, {"default", "uring", "epoll"}, "--io", "default, uring, epoll, both")) {
    return false;
  }
  if (o->ios.empty() || (!o->target.empty() && (o->ios.size() != 1 || o->ios[0] != "default"))) {
    std::fprintf(stderr,
                 "ringq-bench: --io starts servers; with --target, start the server "
                 "with RINGQ_IO yourself\n");
    return false;
  }
  // Every loop of the tool is bounded: these bounds keep a run finite.
  const auto& z = o->sizes;
  if (z.payloads.empty() || z.queue_counts.empty() || z.rate == 0 || z.rate > 1'000'000 ||
      z.push_s <= 0 || z.push_s > 3600 || z.latency_s <= 0 || z.latency_s > 3600 ||
      z.jobs_max == 0 || z.jobs_max > 1'000'000'000 || z.drain_s <= 0 || z.drain_s > 3600 ||
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

bool In(const std::vector<std::string>& v, const char* s) {
  for (auto& x : v) {
    if (x == s) return true;
  }
  return false;
}
bool Has(const Options& o, const char* s) { return In(o.scenarios, s); }

// ------------------------------------------------------------------ results

struct Summary {
  uint64_t count = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double mean = 0;
};

Summary Summarize(const Histogram& h) {
  return Summary{h.count(),
                 h.Percentile(0.50),
                 h.Percentile(0.90),
                 h.Percentile(0.99),
                 h.Percentile(0.999),
                 h.max(),
                 h.mean()};
}

struct Row {
  std::string protocol, io;            // "grpc"/"rqp"; the server's I/O backend
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
  std::optional<SyscallCounts> syscalls;  // --strace: the server's, over the measured window
  uint64_t syscall_jobs = 0;              // the jobs they are divided by
};

double ClientCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU (server and client) over a window of the run, and with --strace the
// server's system calls (`tracer` non-null).
struct CpuWindow {
  explicit CpuWindow(SyscallCount* tracer) : tracer(tracer) {}
  SyscallCount* const tracer;
  std::optional<double> server0;
  double client0 = 0;
  std::string trace_error;
  void Start(const ServerHandle& s) {
    if (tracer != nullptr && !tracer->Start(s.pid(), 10'000, &trace_error)) {
      std::fprintf(stderr, "ringq-bench: --strace: %s\n", trace_error.c_str());
    }
    server0 = s.CpuSeconds();
    client0 = ClientCpuSeconds();
  }
  // Stops the trace; the rest only when jobs > 0.
  void End(const ServerHandle& s, uint64_t jobs, Row* row) {
    if (tracer != nullptr && trace_error.empty()) {
      row->syscalls = tracer->Stop(&trace_error);
      row->syscall_jobs = jobs;
      if (!row->syscalls) std::fprintf(stderr, "ringq-bench: --strace: %s\n", trace_error.c_str());
    }
    if (jobs == 0) return;
    const auto server1 = s.CpuSeconds();
    if (server0 && server1) row->server_cpu_s_per_m = (*server1 - *server0) * 1e6 / double(jobs);
    row->client_cpu_s_per_m = (ClientCpuSeconds() - client0) * 1e6 / double(jobs);
  }
};

// ------------------------------------------------------------------ scenarios

class Bench {
 public:
  // `protocol` and `io` label the rows; `tracer` (may be null) counts the
  // server's syscalls; queue names are unique per (run_id, protocol, row).
  Bench(const Options& o, ServerHandle& server, std::string protocol, std::string io,
        const std::string& run_id, SyscallCount* tracer,
        std::vector<std::unique_ptr<Connection>>& producers,
        std::vector<std::unique_ptr<Connection>>& workers)
      : o_(o),
        server_(server),
        protocol_(std::move(protocol)),
        io_(std::move(io)),
        tracer_(tracer),
        run_id_(run_id + "-" + protocol_) {
    for (auto& c : producers) producers_.push_back(c.get());
    for (auto& c : workers) workers_.push_back(c.get());
  }

  void RunShape(size_t payload, uint32_t queues) {
    if (Has(o_, "push")) {
      if (In(o_.push_apis, "unary")) PushRow(ClosedLoop::Kind::kUnary, payload, queues);
      if (In(o_.push_apis, "pipelined")) PushRow(ClosedLoop::Kind::kPipe, payload, queues);
    }
    if ((Has(o_, "push") && In(o_.push_apis, "batch")) || Has(o_, "process")) {
      BatchAndProcess(payload, queues);
    }
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
    row->verdict.first_duplicate = ledger.first_duplicate();
    row->errors += ledger.push_errors();
    if (row->first_error.empty()) row->first_error = ledger.first_error();
  }

  Row Base(const char* scenario, const char* api, const char* measure, size_t payload,
           uint32_t queues) {
    Row r;
    r.protocol = protocol_, r.io = io_;
    r.scenario = scenario, r.api = api, r.measure = measure, r.payload = payload, r.queues = queues;
    return r;
  }

  void PushRow(ClosedLoop::Kind kind, size_t payload, uint32_t queue_count) {
    RowSetup s = Setup(payload, queue_count);
    Histogram lat, e2e;
    Ledger ledger(s.id, s.jobs_max, payload, &e2e);
    const bool unary = kind == ClosedLoop::Kind::kUnary;
    const bool rqp = protocol_ == "rqp";
    // gRPC pipelines on a PushStream; RQP has none: pipelined PUSH frames are its equivalent.
    Row row = Base("push",
                   unary ? "unary"
                   : rqp ? "pipelined"
                         : "stream",
                   "closed-loop service time", payload, queue_count);
    const uint32_t conns = unary ? o_.unary_conns : o_.pipe_conns;
    row.params = unary ? std::to_string(conns) + " conns x 1 in flight"
                 : rqp ? std::to_string(conns) + " conns x " + std::to_string(o_.pipe_window) +
                             " PUSH frames in flight"
                       : std::to_string(conns) + " streams x " + std::to_string(o_.pipe_window) +
                             " in flight";
    CpuWindow cpu(tracer_);
    cpu.Start(server_);  // before the deadline: attaching strace takes time
    ClosedLoop::Config cfg{.kind = kind,
                           .window = unary ? 1 : o_.pipe_window,
                           .jobs_max = s.jobs_max,
                           .deadline_ns = Deadline(o_.sizes.push_s)};
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
    CpuWindow cpu(tracer_);
    const auto rss0 = server_.RssBytes();
    cpu.Start(server_);
    ClosedLoop::Config cfg{.kind = ClosedLoop::Kind::kBatch,
                           .batch = o_.batch,
                           .jobs_max = s.jobs_max,
                           .deadline_ns = Deadline(o_.sizes.push_s)};
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
    CpuWindow pcpu(tracer_);
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
    if (Has(o_, "push") && In(o_.push_apis, "batch")) {
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
    Row row = Base("steady", "batch+sub", "closed-loop push->delivery (e2e)", payload, queue_count);
    row.params = std::to_string(o_.batch_conns) + " batch producers, workers as in process";
    CpuWindow cpu(tracer_);
    cpu.Start(server_);
    uint64_t issued, processed_in_window;
    {
      WorkerPool pool(workers_, s.queues, o_.streams_min, o_.credits_total, o_.credits_max,
                      &ledger);
      ClosedLoop::Config cfg{.kind = ClosedLoop::Kind::kBatch,
                             .batch = o_.batch,
                             .jobs_max = s.jobs_max,
                             .deadline_ns = Deadline(o_.sizes.steady_s)};
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
    const uint64_t jobs =
        std::min<uint64_t>(s.jobs_max, uint64_t(o_.sizes.rate * o_.sizes.latency_s));
    Histogram push_lat, e2e, lag;
    Ledger ledger(s.id, jobs, payload, &e2e);
    Row row = Base("latency", "unary", "open-loop, from the INTENDED send time (CO-corrected)",
                   payload, queue_count);
    row.params = std::to_string(o_.sizes.rate) + " jobs/s over " +
                 std::to_string(o_.latency_conns) + " conns, workers subscribed";
    CpuWindow cpu(tracer_);
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
    if (ns < 10'000)
      std::snprintf(b, sizeof b, "%.2fus", ns / 1e3);
    else if (ns < 1'000'000)
      std::snprintf(b, sizeof b, "%.0fus", ns / 1e3);
    else if (ns < 1'000'000'000)
      std::snprintf(b, sizeof b, "%.2fms", ns / 1e6);
    else
      std::snprintf(b, sizeof b, "%.2fs", ns / 1e9);
    return b;
  }
  static std::string Bytes(size_t n) {
    if (n >= 1024 && n % 1024 == 0) return std::to_string(n / 1024) + "KiB";
    return std::to_string(n) + "B";
  }
  static void Header() {
    std::printf(
        "%-5s %-8s %-8s %-9s %-7s %6s %9s %7s %10s %4s %9s %9s %9s %9s %9s %6s %-8s "
        "%-17s %9s %9s\n",
        "proto", "io", "scenario", "api", "payload", "queues", "jobs", "secs", "jobs/s", "lat",
        "p50", "p90", "p99", "p99.9", "max", "errors", "verified", "checksum", "srv cpu",
        "cli cpu");
    std::printf(
        "%-5s %-8s %-8s %-9s %-7s %6s %9s %7s %10s %4s %9s %9s %9s %9s %9s %6s %-8s "
        "%-17s %9s %9s\n",
        "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "s/Mjobs",
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
    std::printf("%-5s %-8s %-8s %-9s %-7s %6u %9s %7s %10s %4s %9s %9s %9s %9s %9s %6" PRIu64
                " %-8s %-17s %9s %9s\n",
                r.protocol.c_str(), r.io.c_str(), first ? r.scenario.c_str() : "",
                first ? r.api.c_str() : "", Bytes(r.payload).c_str(), r.queues, jobs, secs, rate,
                which, v(l ? l->p50 : 0).c_str(), v(l ? l->p90 : 0).c_str(),
                v(l ? l->p99 : 0).c_str(), v(l ? l->p999 : 0).c_str(), v(l ? l->max : 0).c_str(),
                r.errors, r.verdict.ok() ? "ok" : "FAIL", sum, srv, cli);
  }
  static void Print(const Row& r) {
    if (r.e2e_lat && r.push_lat) {
      PrintLine(r, "push", r.push_lat, true);
      PrintLine(r, "e2e", r.e2e_lat, false);
    } else {
      PrintLine(r, r.push_lat ? "push" : "-", r.push_lat, true);
    }
    if (r.scenario == "steady") {
      std::printf("%-23s    pushed %.0f jobs/s and processed %.0f jobs/s at once\n", "",
                  r.push_per_s, r.process_per_s);
    }
    if (r.send_lag) {
      std::printf("%-23s    generator send lag p50 %s p99 %s (included in the latencies above)\n",
                  "", Ns(r.send_lag->p50).c_str(), Ns(r.send_lag->p99).c_str());
    }
    if (r.syscalls && r.syscall_jobs > 0) {
      const SyscallCounts& c = *r.syscalls;
      std::printf("%-23s    server syscalls %.4f per job (%" PRIu64 " calls for %" PRIu64
                  " jobs; under strace: counts, not rates):",
                  "", double(c.total) / double(r.syscall_jobs), c.total, r.syscall_jobs);
      for (size_t i = 0; i < c.by_calls.size() && i < 5; ++i) {
        std::printf("%s %s %.4f", i ? "," : "", c.by_calls[i].name.c_str(),
                    double(c.by_calls[i].calls) / double(r.syscall_jobs));
      }
      std::printf("\n");
    }
    if (r.rss_bytes_per_m_waiting) {
      std::printf("%-23s    server RSS %+.0f MiB per million waiting jobs\n", "",
                  *r.rss_bytes_per_m_waiting / (1 << 20));
    }
    if (!r.verdict.ok()) {
      const Verdict& v = r.verdict;
      std::printf("%-23s    VERIFY FAILED: pushed %" PRIu64 " processed %" PRIu64
                  " missing %" PRIu64 " duplicates %" PRIu64 " corrupt %" PRIu64
                  " id mismatch %" PRIu64 "\n",
                  "", v.pushed, v.processed, v.missing, v.duplicates, v.corrupt, v.id_mismatch);
      if (!v.first_duplicate.empty()) {
        std::printf("%-23s    first duplicate: %s\n", "", v.first_duplicate.c_str());
      }
    }
    if (r.errors > 0) std::printf("%-23s    first error: %s\n", "", r.first_error.c_str());
    std::fflush(stdout);
  }

 private:
  const Options& o_;
  ServerHandle& server_;
  const std::string protocol_, io_;
  SyscallCount* const tracer_;
  const std::string run_id_;
  std::vector<Connection*> producers_, workers_;
  std::vector<Row> rows_;
  uint32_t next_row_ = 1;
};

// ------------------------------------------------------------------ JSON

std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\')
      o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else
      o += c;
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

// What the JSON says about each server a run used (one per --io entry).
struct ServerInfo {
  std::string io, io_backend, durability, version, rqp_backend;
  bool started_by_us = false;
};

std::string Syscalls(const Row& r) {
  if (!r.syscalls || r.syscall_jobs == 0) return "null";
  const SyscallCounts& c = *r.syscalls;
  const double jobs = double(r.syscall_jobs);
  std::ostringstream o;
  o << "{\"jobs\":" << r.syscall_jobs << ",\"total\":" << c.total
    << ",\"per_job\":" << Num(double(c.total) / jobs) << ",\"by_name\":[";
  for (size_t i = 0; i < c.by_calls.size(); ++i) {
    o << (i ? "," : "") << "{\"name\":" << Esc(c.by_calls[i].name)
      << ",\"calls\":" << c.by_calls[i].calls << ",\"errors\":" << c.by_calls[i].errors
      << ",\"per_job\":" << Num(double(c.by_calls[i].calls) / jobs) << "}";
  }
  o << "]}";
  return o.str();
}

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

void WriteJson(const std::string& path, const Options& o, const std::vector<ServerInfo>& servers,
               const std::vector<std::string>& protocols, const std::vector<Row>& rows) {
  std::vector<std::string> backends;
  for (const auto& s : servers) backends.push_back(s.io_backend);
  const ServerInfo first = servers.empty() ? ServerInfo{} : servers.front();
  std::ostringstream j;
  // Top level: what all rows share (protocol and io_backend joined when they
  // differ); every row names its own protocol and I/O backend.
  j << "{\"tool\":\"ringq-bench\",\"version\":" << Esc(kVersion) << ",\"system\":\"ringq\""
    << ",\"protocol\":" << Esc(Join(protocols, ",")) << ",\"size\":" << Esc(o.size)
    << ",\"label\":" << Esc(o.label) << ",\"durability\":" << Esc(first.durability)
    << ",\"server_version\":" << Esc(first.version)
    << ",\"io_backend\":" << Esc(Join(backends, "; "))
    << ",\"server_started_by_tool\":" << (first.started_by_us ? "true" : "false")
    << ",\"syscalls_traced\":" << (o.strace.empty() ? "false" : "true")
    << ",\"cores\":" << sysconf(_SC_NPROCESSORS_ONLN) << ",\"latency_note\":"
    << Esc("closed-loop rows: service time from the actual send; "
           "open-loop rows: from the intended send time "
           "(coordinated omission corrected)")
    << ",\"servers\":[";
  for (size_t i = 0; i < servers.size(); ++i) {
    const ServerInfo& s = servers[i];
    j << (i ? "," : "") << "{\"io\":" << Esc(s.io) << ",\"io_backend\":" << Esc(s.io_backend)
      << ",\"rqp\":" << Esc(s.rqp_backend) << ",\"durability\":" << Esc(s.durability)
      << ",\"version\":" << Esc(s.version) << "}";
  }
  j << "],\"rows\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const Verdict& v = r.verdict;
    j << (i ? "," : "") << "\n{\"protocol\":" << Esc(r.protocol) << ",\"io_backend\":" << Esc(r.io)
      << ",\"scenario\":" << Esc(r.scenario) << ",\"api\":" << Esc(r.api)
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
      << ",\"server_rss_bytes_per_million_waiting\":" << Opt(r.rss_bytes_per_m_waiting)
      << ",\"server_syscalls\":" << Syscalls(r) << "}";
  }
  j << "\n]}\n";
  std::ofstream out(path);
  out << j.str();
}

// ------------------------------------------------------------------ main

void OnSignal(int sig) {
  const pid_t tracer = g_strace_child_pid;
  if (tracer > 0) kill(tracer, SIGKILL);  // detaches the server
  const pid_t child = g_server_child_pid;
  if (child > 0) kill(child, SIGKILL);
  _exit(128 + sig);
}

std::unique_ptr<Driver> MakeDriver(const std::string& protocol, const ServerHandle& server) {
  if (protocol == "grpc") return NewGrpcDriver(server.target());
  if (protocol == "rqp" && !server.rqp_target().empty()) return NewRqpDriver(server.rqp_target());
  return nullptr;
}

// The protocols to run against `server`: as asked, or both when it serves RQP.
std::vector<std::string> Protocols(const Options& o, const ServerHandle& server) {
  if (!o.protocols.empty()) return o.protocols;
  if (server.rqp_target().empty()) return {"grpc"};
  return {"grpc", "rqp"};
}

// One protocol's connections to the server, and the Bench that uses them.
struct ProtocolRun {
  std::string protocol;
  std::unique_ptr<Driver> driver;
  std::vector<std::unique_ptr<Connection>> producers, workers;
  std::unique_ptr<Bench> bench;
};

// Connects every protocol; false (message printed) when one cannot.
bool Connect(const Options& o, const ServerHandle& server, ProtocolRun* run) {
  run->driver = MakeDriver(run->protocol, server);
  if (!run->driver) {
    std::fprintf(stderr, "ringq-bench: %s\n",
                 run->protocol == "rqp"
                     ? "the server serves no RQP (no 'RQP listening on' in its log; pass "
                       "--rqp-target with --target)"
                     : "unknown protocol");
    return false;
  }
  const uint32_t producer_conns =
      std::max({o.unary_conns, o.pipe_conns, o.batch_conns, o.latency_conns});
  for (uint32_t i = 0; i < producer_conns + o.worker_conns; ++i) {
    std::string error;
    auto c = run->driver->Connect(10'000, &error);
    if (!c) {
      std::fprintf(stderr, "ringq-bench: %s\n", error.c_str());
      return false;
    }
    (i < producer_conns ? run->producers : run->workers).push_back(std::move(c));
  }
  return true;
}

// Runs every shape over every protocol against one server (started here
// unless attached). Returns 2 when the server cannot be started or reached.
int RunServer(const Options& o, const std::string& io, SyscallCount* tracer, std::vector<Row>* rows,
              std::vector<ServerInfo>* servers, std::vector<std::string>* protocols_seen) {
  ServerHandle server;
  std::string error;
  if (o.target.empty()) {
    std::vector<std::string> env = o.server_env;
    if (io != "default") env.push_back("RINGQ_IO=" + io);
    if (!server.Start(o.server, o.server_args, env, 15'000, &error)) {
      std::fprintf(stderr, "ringq-bench: %s\n", error.c_str());
      return 2;
    }
  } else {
    server.Attach(o.target, o.rqp_target, o.server_pid, o.server_log);
  }
  if (tracer != nullptr && server.pid() <= 0) {
    std::fprintf(stderr, "ringq-bench: --strace needs the server's pid (--server-pid)\n");
    return 2;
  }
  const std::string io_name = server.IoBackendName();
  std::vector<ProtocolRun> runs;
  const std::string run_id =
      std::to_string(getpid()) + "-" + std::to_string(NowNs() / 1'000'000 % 100'000'000);
  for (const auto& p : Protocols(o, server)) {
    ProtocolRun& r = runs.emplace_back();
    r.protocol = p;
    if (!Connect(o, server, &r)) return 2;
    r.bench =
        std::make_unique<Bench>(o, server, p, io_name, run_id, tracer, r.producers, r.workers);
    if (std::find(protocols_seen->begin(), protocols_seen->end(), p) == protocols_seen->end()) {
      protocols_seen->push_back(p);
    }
  }
  std::vector<std::string> names;
  for (auto& r : runs) names.push_back(r.protocol);
  std::printf("ringq-bench %s: protocols %s, server ringqd %s at grpc://%s%s (pid %d, %s)\n",
              kVersion, Join(names, " and ").c_str(), server.Version().c_str(),
              server.target().c_str(),
              server.rqp_target().empty() ? "" : (" rqp://" + server.rqp_target()).c_str(),
              int(server.pid()), server.started_by_us() ? "started by ringq-bench" : "attached");
  std::printf("durability: %s\n", server.Durability().c_str());
  std::printf("I/O backend: %s\n", server.IoBackend().c_str());
  std::printf(
      "size %s, %ld cores shared by server and client; closed-loop latencies are service "
      "times (from the actual send);\nopen-loop latencies are measured from the INTENDED "
      "send time (coordinated-omission corrected).\nchecksum: sum of a hash of every job "
      "processed (equal to that of every job pushed when verified ok).\n",
      o.size.c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  if (tracer != nullptr) {
    std::printf(
        "--strace: the server runs traced in every measured window; its rates and CPU "
        "are NOT representative, its syscall counts are.\n");
  }
  std::printf("\n");
  Bench::Header();
  // Protocols alternate shape by shape, so both meet the server in a similar state.
  for (size_t payload : o.sizes.payloads) {
    for (uint32_t queues : o.sizes.queue_counts) {
      for (auto& r : runs) r.bench->RunShape(payload, queues);
    }
  }
  for (auto& r : runs) {
    r.producers.clear();
    r.workers.clear();
    rows->insert(rows->end(), r.bench->rows().begin(), r.bench->rows().end());
  }
  const std::string rqp_line = server.LogField("RQP listening on");
  servers->push_back(ServerInfo{io, server.IoBackend(), server.Durability(), server.Version(),
                                rqp_line, server.started_by_us()});
  server.Stop(10'000);
  std::printf("\n");
  return 0;
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) return 2;
  prctl(PR_SET_TIMERSLACK, 1);  // open-loop sleeps wake on time (default slack: 50 us)
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGHUP, OnSignal);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<SyscallCount> tracer;
  if (!o.strace.empty()) tracer = std::make_unique<SyscallCount>(o.strace);
  std::vector<Row> rows;
  std::vector<ServerInfo> servers;
  std::vector<std::string> protocols;
  for (const auto& io : o.ios) {
    const int rc = RunServer(o, io, tracer.get(), &rows, &servers, &protocols);
    if (rc != 0) return rc;
  }
  if (!o.json_path.empty()) WriteJson(o.json_path, o, servers, protocols, rows);

  bool ok = true;
  for (const Row& r : rows) ok &= r.verdict.ok() && r.errors == 0;
  std::printf("%s\n", ok ? "all rows verified: every pushed job processed exactly once, intact"
                         : "SOME ROWS FAILED (see above)");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace ringq::bench

int main(int argc, char** argv) { return ringq::bench::Main(argc, argv); }
