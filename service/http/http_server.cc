#include "service/http/http_server.h"

#include <civetweb.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

namespace ringq::http {

namespace {

constexpr const char* kPathNames[] = {"/metrics", "/healthz", "/readyz", "/"};
// civetweb patterns: '$' anchors the end, so "/metricsX" is not /metrics.
constexpr const char* kPathPatterns[] = {"/metrics$", "/healthz$", "/readyz$", "/$"};

constexpr std::string_view kIndex =
    "ringqd\n"
    "  /metrics  Prometheus metrics (text format 0.0.4)\n"
    "  /healthz  200 while the process runs\n"
    "  /readyz   200 when ready to serve, 503 before and while shutting down\n";

void Reply(mg_connection* conn, int status, std::string_view content_type, std::string_view body,
           bool head) {
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type.data(),
                         static_cast<int>(content_type.size()));
  const std::string length = std::to_string(body.size());
  mg_response_header_add(conn, "Content-Length", length.c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  if (!head && !body.empty()) mg_write(conn, body.data(), body.size());
}

// Opens and closes one connection to host:port (best effort, bounded by the
// kernel's loopback connect), to wake a thread blocked in poll on it.
void Poke(const std::string& host, uint32_t port) {
  const std::string h = host.empty() || host == "0.0.0.0" ? "127.0.0.1"
                        : host == "::"                    ? "::1"
                                                          : host;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return;
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0) {
    (void)connect(fd, res->ai_addr, res->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(res);
}

}  // namespace

HttpServer::HttpServer(const HttpOptions& options, metrics::Registry& registry)
    : options_(options), registry_(registry) {
  for (size_t i = 0; i < kPaths; ++i) routes_[i] = Route{this, static_cast<Path>(i)};
}

HttpServer::~HttpServer() { Stop(); }

bool HttpServer::Start(std::string* error) {
  mg_init_library(0);
  // Every option civetweb reads that matters here is set (STYLE.md: no
  // unread library defaults). No document_root: no file is ever served.
  const std::string listen = options_.host + ":" + std::to_string(options_.port);
  const std::string threads = std::to_string(options_.threads);
  const std::string timeout = std::to_string(options_.request_timeout_ms);
  const std::string request_max = std::to_string(options_.request_bytes_max);
  // clang-format off
  const char* opts[] = {"listening_ports",       listen.c_str(),
                        "num_threads",           threads.c_str(),
                        "request_timeout_ms",    timeout.c_str(),
                        "max_request_size",      request_max.c_str(),
                        "enable_keep_alive",     "yes",
                        "keep_alive_timeout_ms", "2000",
                        "listen_backlog",        "64",
                        "enable_directory_listing", "no",
                        "decode_url",            "yes",
                        nullptr};
  // clang-format on
  char text[256] = {};
  unsigned code = 0;
  mg_error_data err{&code, text, sizeof text};
  mg_callbacks callbacks{};
  mg_init_data init{&callbacks, this, opts};
  ctx_ = mg_start2(&init, &err);
  if (ctx_ == nullptr) {
    *error = "cannot serve HTTP on " + listen + ": " + (text[0] ? text : "civetweb failed");
    return false;
  }
  for (size_t i = 0; i < kPaths; ++i) {
    mg_set_request_handler(ctx_, kPathPatterns[i], &HttpServer::Handle, &routes_[i]);
  }
  mg_server_port ports[4] = {};
  const int n = mg_get_server_ports(ctx_, 4, ports);
  port_ = n > 0 ? static_cast<uint32_t>(ports[0].port) : 0;
  if (port_ == 0) {
    *error = "cannot tell which port HTTP listens on (" + listen + ")";
    Stop();
    return false;
  }
  return true;
}

void HttpServer::Stop() {
  if (ctx_ == nullptr) return;
  // mg_stop joins civetweb's threads (no handler runs after it), but its
  // accept thread only sees the stop flag when its poll returns, which
  // otherwise takes up to 2 s: poke the port until it is done (bounded).
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    mg_stop(ctx_);
    stopped.store(true, std::memory_order_release);
  });
  for (int i = 0; i < 400 && !stopped.load(std::memory_order_acquire); ++i) {
    Poke(options_.host, port_);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stopper.join();
  ctx_ = nullptr;
}

int HttpServer::Handle(mg_connection* conn, void* cbdata) {
  const Route* route = static_cast<const Route*>(cbdata);
  return route->server->Serve(conn, route->path);
}

int HttpServer::Serve(mg_connection* conn, Path path) {
  const mg_request_info* req = mg_get_request_info(conn);
  const std::string_view method = req->request_method ? req->request_method : "";
  const bool head = method == "HEAD";
  constexpr std::string_view kText = "text/plain; charset=utf-8";
  int status = 200;
  if (method != "GET" && !head) {
    status = 405;
    Reply(conn, status, kText, "only GET and HEAD\n", head);
  } else if (path == kMetrics) {
    const std::string body = registry_.Scrape();
    Reply(conn, status, metrics::kContentType, body, head);
  } else if (path == kHealthz) {
    Reply(conn, status, kText, "ok\n", head);
  } else if (path == kReadyz) {
    status = ready() ? 200 : 503;
    Reply(conn, status, kText, status == 200 ? "ready\n" : "not ready\n", head);
  } else {
    Reply(conn, status, kText, kIndex, head);
  }
  Count(path, status);
  return status;  // civetweb: a status code > 0 means "handled"
}

void HttpServer::Count(Path path, int status) {
  const size_t cls = status < 400 ? 0 : status < 500 ? 1 : 2;
  requests_.Add(static_cast<size_t>(path) * 3 + cls);
}

void HttpServer::Collect(metrics::TextWriter& out) {
  using metrics::Type;
  constexpr const char* kClasses[] = {"2xx", "4xx", "5xx"};
  out.Family("ringq_http_requests_total", Type::kCounter,
             "Requests to the HTTP port by path and status class (this scrape not counted).");
  for (size_t p = 0; p < kPaths; ++p) {
    for (size_t c = 0; c < 3; ++c) {
      out.Sample({{"path", kPathNames[p]}, {"code", kClasses[c]}}, requests_.Get(p * 3 + c));
    }
  }
  out.Family("ringq_ready", Type::kGauge,
             "1 when the server is ready (recovered, serving gRPC); 0 before and while "
             "shutting down. Same as /readyz.");
  out.Sample(metrics::Labels{}, uint64_t{ready() ? 1u : 0u});
}

}  // namespace ringq::http
