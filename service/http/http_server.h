// HttpServer: the operators' HTTP port (--http-port): Prometheus metrics and
// health probes, served by civetweb (Debian's libcivetweb) with a small,
// fixed thread pool.
//
//   GET /metrics  200, the Registry's scrape in text format 0.0.4
//   GET /healthz  200 "ok" while the process runs (liveness)
//   GET /readyz   200 "ready" once SetReady(true) (recovery done, gRPC
//                 serving); 503 "not ready" before and again from
//                 SetReady(false) (shutdown started)
//   GET /         200, a list of the endpoints
// Other paths: 404; other methods than GET/HEAD: 405.
//
// It is also a metrics::Collector for its own families (requests by path and
// code, readiness), so add it to the registry it serves.
//
// Thread: Start/Stop from main; handlers run on civetweb's threads (at most
// HttpOptions::threads at once; one scrape at a time, the Registry
// serializes them). Lifecycle: Start() once; Stop() (or the destructor)
// waits for requests in flight. Everything a handler touches (the registry
// and its collectors) must outlive Stop().
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "service/metrics/metrics.h"
#include "service/metrics/registry.h"

struct mg_context;
struct mg_connection;

namespace ringq::http {

struct HttpOptions {
  std::string host = "0.0.0.0";
  uint32_t port = 7421;  // 0: any free port (see port())
  uint32_t threads = 4;  // civetweb worker threads: concurrent requests
  uint32_t request_timeout_ms = 10'000;
  uint32_t request_bytes_max = 16 * 1024;  // request line + headers
};

class HttpServer final : public metrics::Collector {
 public:
  HttpServer(const HttpOptions& options, metrics::Registry& registry);
  ~HttpServer() override;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // False with `error` set (e.g. the port is taken) when it cannot listen.
  [[nodiscard]] bool Start(std::string* error);
  // The bound port (the chosen one when options.port was 0).
  uint32_t port() const { return port_; }
  void SetReady(bool ready) { ready_.store(ready, std::memory_order_release); }
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  void Stop();

  void Collect(metrics::TextWriter& out) override;

 private:
  enum Path : size_t { kMetrics, kHealthz, kReadyz, kRoot, kPaths };
  static int Handle(mg_connection* conn, void* cbdata);
  int Serve(mg_connection* conn, Path path);
  void Count(Path path, int status);

  const HttpOptions options_;
  metrics::Registry& registry_;
  mg_context* ctx_ = nullptr;
  uint32_t port_ = 0;
  std::atomic<bool> ready_{false};
  // [path][code class]: 2xx, 4xx, 5xx.
  metrics::SharedCounters<kPaths * 3> requests_;
  struct Route {
    HttpServer* server;
    Path path;
  };
  Route routes_[kPaths];
};

}  // namespace ringq::http
