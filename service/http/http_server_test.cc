// Goal: the HTTP endpoints answer as documented: /healthz 200 always,
// /readyz 503 until SetReady(true) and again after SetReady(false),
// /metrics 200 with the 0.0.4 content type and the registry's text, unknown
// paths 404, other methods 405, and a taken port is a clear error. Method: a
// real HttpServer on 127.0.0.1 with an ephemeral port, spoken to over a
// plain socket (HTTP/1.0, one request per connection).
#include "service/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "service/http/server_metrics.h"

namespace ringq::http {
namespace {

struct Response {
  int status = 0;
  std::string head;
  std::string body;
};

Response Request(uint32_t port, const std::string& method, const std::string& path) {
  Response r;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    ADD_FAILURE() << "connect failed";
    return r;
  }
  const std::string req = method + " " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
  EXPECT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) all.append(buf, n);
  close(fd);
  const size_t split = all.find("\r\n\r\n");
  r.head = all.substr(0, split);
  r.body = split == std::string::npos ? "" : all.substr(split + 4);
  if (all.rfind("HTTP/1.", 0) == 0) r.status = std::atoi(all.c_str() + 9);
  return r;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.threads = 2;
    server = std::make_unique<HttpServer>(o, registry);
    registry.Add(server.get());
    registry.Add(&info);
    std::string error;
    ASSERT_TRUE(server->Start(&error)) << error;
    ASSERT_NE(server->port(), 0u);
  }

  metrics::Registry registry;
  ServerMetrics info{"9.9.9"};
  std::unique_ptr<HttpServer> server;
};

TEST_F(HttpServerTest, HealthAndReadiness) {
  EXPECT_EQ(Request(server->port(), "GET", "/healthz").status, 200);
  const Response before = Request(server->port(), "GET", "/readyz");
  EXPECT_EQ(before.status, 503);
  EXPECT_EQ(before.body, "not ready\n");
  server->SetReady(true);
  EXPECT_EQ(Request(server->port(), "GET", "/readyz").status, 200);
  server->SetReady(false);  // shutdown started
  EXPECT_EQ(Request(server->port(), "GET", "/readyz").status, 503);
  EXPECT_EQ(Request(server->port(), "GET", "/healthz").status, 200);
}

TEST_F(HttpServerTest, MetricsTextAndContentType) {
  info.SetDurability("sync");
  server->SetReady(true);
  const Response r = Request(server->port(), "GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.head.find("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            std::string::npos)
      << r.head;
  EXPECT_NE(r.body.find("ringq_ready 1\n"), std::string::npos);
  EXPECT_NE(r.body.find("ringq_build_info{version=\"9.9.9\""), std::string::npos);
  EXPECT_NE(r.body.find("ringq_durability_info{mode=\"sync\"} 1\n"), std::string::npos);
  EXPECT_NE(r.body.find("process_resident_memory_bytes "), std::string::npos);
  const Response head = Request(server->port(), "HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
}

TEST_F(HttpServerTest, UnknownPathsAndMethods) {
  EXPECT_EQ(Request(server->port(), "GET", "/metricsx").status, 404);
  EXPECT_EQ(Request(server->port(), "GET", "/nope").status, 404);
  EXPECT_EQ(Request(server->port(), "POST", "/metrics").status, 405);
  EXPECT_EQ(Request(server->port(), "GET", "/").status, 200);
  const std::string text = registry.Scrape();
  EXPECT_NE(text.find("ringq_http_requests_total{path=\"/metrics\",code=\"4xx\"} 1\n"),
            std::string::npos)
      << text;
}

TEST_F(HttpServerTest, TakenPortIsAClearError) {
  HttpOptions o;
  o.host = "127.0.0.1";
  o.port = server->port();
  metrics::Registry r;
  HttpServer second(o, r);
  std::string error;
  EXPECT_FALSE(second.Start(&error));
  EXPECT_NE(error.find("cannot serve HTTP on 127.0.0.1:" + std::to_string(server->port())),
            std::string::npos)
      << error;
}

}  // namespace
}  // namespace ringq::http
