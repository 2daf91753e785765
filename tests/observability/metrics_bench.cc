// metrics_bench: what metrics cost. Prints numbers; asserts only that the
// work was done (pushes answered OK, scrapes parsed), never a timing.
//
//  1. Scrape time and size with --queues queues (default 1000): one job
//     pushed to each queue, then --scrapes GETs of /metrics, timed from
//     connect to the last byte. Run with every queue labelled
//     (--metrics-queue-labels-max >= queues) and with a tenth labelled (the
//     rest folded into queue="_other").
//  2. Throughput with metrics on vs off, in one run: --rounds rounds, each
//     starting a fresh ringqd with --metrics=true and one with
//     --metrics=false (order alternating per round), warming up, then
//     pushing for --seconds with --inflight unary Push calls in flight
//     (closed loop: a new call starts when one is answered, so this measures
//     capacity, not latency; coordinated omission does not apply). Reports
//     each round and the median of each mode: pushes/s, the server's CPU time
//     per push (process_cpu_seconds_total over the window; steadier than
//     the rate when other work shares the box).
//
// Both use --durability (default batch: CPU-bound, where metrics' share of the
// cost is largest; say so with the numbers). Client and server share the
// machine's cores, so absolute rates are the box's, not the server's alone.
//
// Usage: metrics_bench --ringqd PATH [--seconds 3] [--rounds 3] [--inflight 64]
//                      [--queues 1000] [--scrapes 20] [--durability batch]
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringq/v1/queue.grpc.pb.h"
#include "tests/support/server_process.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string ringqd;
  double seconds = 3;
  int rounds = 3;
  int inflight = 64;
  int queues = 1000;
  int scrapes = 20;
  std::string durability = "batch";
};

// Servers running now: killed by Die, so none outlives this process.
std::vector<ringq::testing::ServerProcess*> g_servers;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "metrics_bench: %s\n", why.c_str());
  for (auto* s : g_servers) s->Kill();
  std::exit(1);
}

// A started ringqd (--durability from args); stopped (SIGTERM) at scope end.
class Running {
 public:
  Running(const Args& a, std::vector<std::string> flags) {
    flags.push_back("--durability=" + a.durability);
    server_ = std::make_unique<ringq::testing::ServerProcess>(a.ringqd, std::move(flags));
    g_servers.push_back(server_.get());
    if (!server_->Start(20'000)) Die("ringqd did not start:\n" + server_->Log());
    if (server_->http_port() == 0) Die("no 'HTTP listening on' line in the log");
  }
  ~Running() {
    std::erase(g_servers, server_.get());
    server_->Stop();
  }
  ringq::testing::ServerProcess* operator->() { return server_.get(); }
  ringq::testing::ServerProcess& operator*() { return *server_; }

 private:
  std::unique_ptr<ringq::testing::ServerProcess> server_;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) Die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--ringqd") {
      a.ringqd = val();
    } else if (k == "--seconds") {
      a.seconds = std::atof(val().c_str());
    } else if (k == "--rounds") {
      a.rounds = std::atoi(val().c_str());
    } else if (k == "--inflight") {
      a.inflight = std::atoi(val().c_str());
    } else if (k == "--queues") {
      a.queues = std::atoi(val().c_str());
    } else if (k == "--scrapes") {
      a.scrapes = std::atoi(val().c_str());
    } else if (k == "--durability") {
      a.durability = val();
    } else {
      Die("unknown argument " + k);
    }
  }
  if (a.ringqd.empty()) Die("--ringqd PATH is required");
  if (a.rounds < 1 || a.inflight < 1 || a.queues < 1 || a.scrapes < 1 || a.seconds <= 0) {
    Die("bad argument value");
  }
  return a;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// GET path over HTTP/1.0; returns the body ("" on failure).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string all;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) all.append(buf, n);
    }
  }
  close(fd);
  const size_t split = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.", 0) != 0 || all.compare(8, 5, " 200 ") != 0 ||
      split == std::string::npos) {
    return "";
  }
  return all.substr(split + 4);
}

std::unique_ptr<ringq::v1::Queue::Stub> Connect(const ringq::testing::ServerProcess& s) {
  auto ch = grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials());
  if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    Die("cannot connect");
  }
  return ringq::v1::Queue::NewStub(ch);
}

// ------------------------------------------------------------------ scrape

void ScrapeCost(const Args& a, uint32_t labels_max) {
  Running server(a, {"--metrics-queue-labels-max=" + std::to_string(labels_max)});
  auto stub = Connect(*server);
  ringq::v1::PushBatchRequest batch;
  for (int q = 0; q < a.queues; ++q) {
    auto* job = batch.add_jobs();
    char name[32];
    std::snprintf(name, sizeof name, "bench-q%05d", q);
    job->set_queue(name);
    job->set_payload("x");
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ringq::v1::PushBatchResponse resp;
  const grpc::Status st = stub->PushBatch(&ctx, batch, &resp);
  if (!st.ok()) Die("PushBatch: " + st.error_message());
  for (const auto& r : resp.results()) {
    if (r.has_error()) Die("PushBatch item: " + r.error().message());
  }
  std::vector<double> ms;
  size_t bytes = 0, lines = 0;
  HttpGet(server->http_port(), "/metrics");  // warm: first scrape labels every queue
  for (int i = 0; i < a.scrapes; ++i) {
    const auto t0 = Clock::now();
    const std::string body = HttpGet(server->http_port(), "/metrics");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (body.find("ringq_queues " + std::to_string(a.queues) + "\n") == std::string::npos) {
      Die("scrape lacks ringq_queues " + std::to_string(a.queues) + ":\n" + body.substr(0, 300) +
          "\n...\n" + server->Log());
    }
    bytes = body.size();
    lines = static_cast<size_t>(std::count(body.begin(), body.end(), '\n'));
  }
  const std::string last = HttpGet(server->http_port(), "/metrics");
  constexpr std::string_view kKey = "\nringq_metrics_last_scrape_duration_seconds ";
  const size_t at = last.find(kKey);
  const double server_s = at == std::string::npos ? -1 : std::atof(last.c_str() + at + kKey.size());
  std::sort(ms.begin(), ms.end());
  std::printf(
      "scrape: %d queues, labels max %u: %zu bytes, %zu lines; client-timed median %.2f ms, "
      "p90 %.2f ms, max %.2f ms over %d scrapes; server collect %.2f ms\n",
      a.queues, labels_max, bytes, lines, Median(ms), ms[ms.size() * 9 / 10], ms.back(), a.scrapes,
      server_s * 1e3);
}

// ------------------------------------------------------------------ throughput

// Keeps `inflight` unary Push calls going until stopped; counts answers.
class PushLoad {
 public:
  PushLoad(ringq::v1::Queue::Stub& stub, int inflight) : stub_(stub), inflight_(inflight) {}

  struct Result {
    double pushes_per_s = 0;
    double server_cpu_us_per_push = 0;  // from the server's process_cpu_seconds_total
  };

  // Runs for `seconds` after `warmup_s`, reading the server's CPU time from
  // /metrics (on `http_port`) at both ends of the measured window.
  // Runs for `seconds` after `warmup_s`, reading the server's CPU time from
  // /metrics (on `http_port`) at both ends of the measured window.
  Result Run(double warmup_s, double seconds, int http_port) {
    for (int i = 0; i < inflight_; ++i) Start();
    Sleep(warmup_s);
    const double cpu0 = ServerCpuSeconds(http_port);
    const uint64_t ok0 = ok_.load();
    const auto t0 = Clock::now();
    Sleep(seconds);
    const uint64_t ok1 = ok_.load();
    const double cpu1 = ServerCpuSeconds(http_port);
    Result res;
    res.pushes_per_s =
        static_cast<double>(ok1 - ok0) / std::chrono::duration<double>(Clock::now() - t0).count();
    res.server_cpu_us_per_push = (cpu1 - cpu0) * 1e6 / static_cast<double>(ok1 - ok0);
    stop_ = true;
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return live_ == 0; });
    if (live_ != 0) Die("calls still in flight 30 s after the end");
    if (failed_ != 0) Die(std::to_string(failed_) + " pushes failed: " + first_error_);
    if (ok1 == ok0) Die("no push answered in the measured window");
    return res;
  }

 private:
  struct Call {
    grpc::ClientContext ctx;
    ringq::v1::PushRequest req;
    ringq::v1::PushResponse resp;
  };

  static double ServerCpuSeconds(int http_port) {
    const std::string text = HttpGet(http_port, "/metrics");
    constexpr std::string_view kKey = "\nprocess_cpu_seconds_total ";
    const size_t at = text.find(kKey);
    if (at == std::string::npos) Die("no process_cpu_seconds_total in /metrics");
    return std::atof(text.c_str() + at + kKey.size());
  }

  static void Sleep(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

  void Start() {
    {
      std::lock_guard lock(mu_);
      ++live_;
    }
    auto* c = new Call;
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    c->req.mutable_job()->set_queue("bench-push");
    c->req.mutable_job()->set_payload(std::string(64, 'p'));
    stub_.async()->Push(&c->ctx, &c->req, &c->resp, [this, c](grpc::Status st) {
      if (st.ok()) {
        ok_.fetch_add(1, std::memory_order_relaxed);
      } else {
        std::lock_guard lock(mu_);
        if (failed_++ == 0) first_error_ = st.error_message();
      }
      delete c;
      const bool again = !stop_.load() && st.ok();
      if (again) Start();
      std::lock_guard lock(mu_);
      if (--live_ == 0) cv_.notify_all();
    });
  }

  ringq::v1::Queue::Stub& stub_;
  const int inflight_;
  std::atomic<uint64_t> ok_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int live_ = 0;             // guarded by mu_
  uint64_t failed_ = 0;      // guarded by mu_
  std::string first_error_;  // guarded by mu_
};

PushLoad::Result OneRun(const Args& a, bool metrics) {
  Running server(a, {metrics ? "--metrics=true" : "--metrics=false"});
  auto stub = Connect(*server);
  PushLoad load(*stub, a.inflight);
  return load.Run(std::min(1.0, a.seconds / 3), a.seconds, server->http_port());
}

void Throughput(const Args& a) {
  std::vector<double> on, off, cpu_on, cpu_off;
  for (int r = 0; r < a.rounds; ++r) {
    const bool on_first = r % 2 == 0;
    for (int i = 0; i < 2; ++i) {
      const bool m = (i == 0) == on_first;
      const PushLoad::Result res = OneRun(a, m);
      (m ? on : off).push_back(res.pushes_per_s);
      (m ? cpu_on : cpu_off).push_back(res.server_cpu_us_per_push);
      std::printf("throughput: round %d metrics=%s: %.0f pushes/s, server CPU %.2f us/push\n",
                  r + 1, m ? "on " : "off", res.pushes_per_s, res.server_cpu_us_per_push);
      std::fflush(stdout);
    }
  }
  const double mon = Median(on), moff = Median(off);
  const double con = Median(cpu_on), coff = Median(cpu_off);
  std::printf(
      "throughput: unary Push, %d in flight, %.1f s x %d rounds, --durability=%s: median "
      "metrics on %.0f/s, off %.0f/s (%.1f%% fewer); server CPU per push on %.2f us, off "
      "%.2f us (%.1f%% more)\n",
      a.inflight, a.seconds, a.rounds, a.durability.c_str(), mon, moff,
      moff > 0 ? (moff - mon) / moff * 100 : 0.0, con, coff,
      coff > 0 ? (con - coff) / coff * 100 : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  ScrapeCost(a, static_cast<uint32_t>(a.queues));
  ScrapeCost(a, static_cast<uint32_t>(std::max(1, a.queues / 10)));
  Throughput(a);
  return 0;
}
