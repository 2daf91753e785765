// The RQP transport of the client library against a fake server inside the
// test: a listening socket whose connections are decoded with the reference
// codec (rqp::Decoder, Role::kServer) and answered with canned frames. This
// checks the client's side of the wire on its own — handshake and limits,
// pipelining, request-id matching with answers out of order, ERROR frames,
// deadlines, connection loss, reconnection, and Subscribe framing — without
// depending on ringqd. Each test opens with its goal.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/cpp/client.h"
#include "uring/rqp_frame.h"

namespace ringq {
namespace {

namespace fr = uring::rqp;
using namespace std::chrono_literals;
using client::Client;
using client::Status;
using client::StatusCode;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// One accepted connection of the fake server.
class FakeConn {
 public:
  explicit FakeConn(int fd) : fd_(fd) {}
  ~FakeConn() { close(fd_); }

  void Send(fr::Kind kind, uint64_t id, const std::string& body, uint8_t flags = 0) {
    std::string out;
    ASSERT_EQ(fr::AppendFrame({fr::KindByte(kind), flags, id}, Bytes(body), fr::kFrameBytesMaxLimit,
                              &out),
              fr::FrameError::kNone);
    std::lock_guard lock(mu_);
    size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = send(fd_, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the client is gone
      off += static_cast<size_t>(n);
    }
  }
  void SendMessage(fr::Kind kind, uint64_t id, const google::protobuf::Message& m,
                   uint8_t flags = 0) {
    Send(kind, id, m.SerializeAsString(), flags);
  }
  void SendStatus(fr::Kind kind, uint64_t id, StatusCode code, const std::string& message) {
    std::string body;
    fr::AppendStatusBody(static_cast<uint32_t>(code), message, &body);
    Send(kind, id, body);
  }
  // Ends the connection as a crashed server would.
  void Drop() { shutdown(fd_, SHUT_RDWR); }
  int fd() const { return fd_; }

 private:
  const int fd_;
  std::mutex mu_;
};

// A fake RQP server on 127.0.0.1 with a kernel-picked port. `on_frame` sees
// every frame after the HELLO, on the connection's thread; `on_chunk_end`
// runs after each received chunk was decoded (to answer in batches).
class FakeServer {
 public:
  struct Hooks {
    std::function<void(FakeConn&, const fr::Frame&)> on_frame;
    std::function<void(FakeConn&)> on_chunk_end;
  };

  FakeServer(fr::ServerHello hello, Hooks hooks) : hello_(hello), hooks_(std::move(hooks)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~FakeServer() {
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (auto& c : conns_) c->Drop();
    }
    for (auto& t : threads_) t.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_.load(); }
  std::string last_token() {
    std::lock_guard lock(mu_);
    return last_token_;
  }
  // Refuse the next hellos with a connection-level ERROR.
  void RefuseHello(StatusCode code, std::string message) {
    std::lock_guard lock(mu_);
    refuse_code_ = code;
    refuse_message_ = std::move(message);
  }

 private:
  void AcceptLoop() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stopping_) return;
        continue;
      }
      ++accepted_;
      auto conn = std::make_shared<FakeConn>(fd);
      std::lock_guard lock(mu_);
      conns_.push_back(conn);
      threads_.emplace_back([this, conn] { Serve(*conn); });
    }
  }

  void Serve(FakeConn& conn) {
    fr::DecoderOptions o;
    o.role = fr::Role::kServer;
    fr::Decoder dec(o);
    std::vector<uint8_t> buf(64 << 10);
    for (;;) {
      const ssize_t n = recv(conn.fd(), buf.data(), buf.size(), 0);
      if (n <= 0) return;
      std::span<const uint8_t> chunk(buf.data(), static_cast<size_t>(n));
      for (;;) {
        const auto s = dec.Feed(chunk);
        chunk = chunk.subspan(s.consumed);
        if (s.event == fr::Decoder::Event::kFrame) {
          if (dec.frame().kind == fr::KindByte(fr::Kind::kHello)) {
            if (!Hello(conn, dec.frame())) return;
          } else if (hooks_.on_frame) {
            hooks_.on_frame(conn, dec.frame());
          }
        } else if (s.event == fr::Decoder::Event::kError) {
          ADD_FAILURE() << "client sent a bad frame: " << dec.error().message;
          conn.Drop();
          return;
        } else {
          break;
        }
      }
      if (hooks_.on_chunk_end) hooks_.on_chunk_end(conn);
    }
  }

  bool Hello(FakeConn& conn, const fr::Frame& f) {
    fr::ClientHello ch;
    std::string why;
    EXPECT_TRUE(fr::ParseClientHello(f.body, &ch, &why)) << why;
    StatusCode refuse;
    std::string message;
    {
      std::lock_guard lock(mu_);
      last_token_ = ch.token;
      refuse = refuse_code_;
      message = refuse_message_;
    }
    if (refuse != StatusCode::kOk) {
      conn.SendStatus(fr::Kind::kError, 0, refuse, message);
      conn.Drop();
      return false;
    }
    std::string body;
    fr::AppendServerHelloBody(hello_, &body);
    conn.Send(fr::Kind::kServerHello, 0, body);
    return true;
  }

  const fr::ServerHello hello_;
  const Hooks hooks_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::shared_ptr<FakeConn>> conns_;
  std::vector<std::thread> threads_;
  std::string last_token_;
  StatusCode refuse_code_ = StatusCode::kOk;
  std::string refuse_message_;
};

v1::PushRequest PushOf(const std::string& payload) {
  v1::PushRequest req;
  req.mutable_job()->set_queue("q");
  req.mutable_job()->set_payload(payload);
  return req;
}

client::Options RqpOptions(const FakeServer& server) {
  client::Options o;
  o.protocol = client::Protocol::kRqp;
  o.address = server.address();
  o.connect_timeout_ms = 3000;
  o.call_timeout_ms = 10'000;
  return o;
}

// Counts answers of async calls and waits for them, bounded.
struct Answers {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  std::vector<Status> errors;
  void Add(const Status& st) {
    std::lock_guard lock(mu);
    ++count;
    if (!st.ok()) errors.push_back(st);
    cv.notify_all();
  }
  bool WaitFor(int n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return count >= n; });
  }
};

// Pipelined pushes through a server that allows 16 in flight and answers
// each received batch in reverse order: the client adopts the limit (never
// more than 16 unanswered at the server), and every answer reaches the call
// with its request_id (the id in each PushResponse is derived from the
// payload the call sent). The token travels in the hello.
TEST(RqpFakeServerTest, HandshakeLimitsAndOutOfOrderAnswers) {
  constexpr int kPushes = 2000;
  std::mutex mu;
  std::vector<std::pair<uint64_t, uint64_t>> unanswered;  // request_id, id to answer
  int outstanding = 0, outstanding_max = 0;
  FakeServer::Hooks hooks;
  hooks.on_frame = [&](FakeConn&, const fr::Frame& f) {
    ASSERT_EQ(f.kind, fr::KindByte(fr::Kind::kPush));
    v1::PushRequest req;
    ASSERT_TRUE(req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size())));
    std::lock_guard lock(mu);
    unanswered.emplace_back(f.request_id, 1000 + std::stoull(req.job().payload()));
    outstanding_max = std::max(outstanding_max, ++outstanding);
  };
  hooks.on_chunk_end = [&](FakeConn& conn) {
    std::vector<std::pair<uint64_t, uint64_t>> batch;
    {
      std::lock_guard lock(mu);
      batch.swap(unanswered);
      outstanding -= static_cast<int>(batch.size());
    }
    std::reverse(batch.begin(), batch.end());
    for (const auto& [rid, id] : batch) {
      v1::PushResponse resp;
      resp.set_id(id);
      conn.SendMessage(fr::Kind::kPushResponse, rid, resp);
    }
  };
  fr::ServerHello hello;
  hello.inflight_max = 16;
  FakeServer server(hello, hooks);
  client::Options o = RqpOptions(server);
  o.token = "s3cret";
  std::unique_ptr<Client> c;
  ASSERT_TRUE(Client::Connect(o, &c).ok());
  EXPECT_EQ(server.last_token(), "s3cret");

  Answers answers;
  std::atomic<int> mismatched{0};
  for (int i = 0; i < kPushes; ++i) {
    c->Push(PushOf(std::to_string(i)), [&, i](Status st, v1::PushResponse resp) {
      if (st.ok() && resp.id() != uint64_t(1000 + i)) ++mismatched;
      answers.Add(st);
    });
  }
  ASSERT_TRUE(answers.WaitFor(kPushes, 30s)) << answers.count;
  EXPECT_TRUE(answers.errors.empty()) << answers.errors[0].ToString();
  EXPECT_EQ(mismatched.load(), 0);
  std::lock_guard lock(mu);
  EXPECT_LE(outstanding_max, 16);
  EXPECT_GT(outstanding_max, 1);  // it did pipeline
}

// Throughput of the client's RQP side alone: 200,000 pipelined async
// pushes through a fake server that answers each received chunk at once.
// Prints the rate (coalesced writes: many frames per send); the only
// assertion is that all were answered.
TEST(RqpFakeServerTest, PipelinedPushRate) {
  constexpr int kPushes = 200'000;
  FakeServer::Hooks hooks;
  std::string out;  // the connection thread's reply buffer
  hooks.on_frame = [&](FakeConn&, const fr::Frame& f) {
    v1::PushResponse resp;
    resp.set_id(f.request_id);
    const size_t start = fr::BeginFrame(&out);
    resp.AppendToString(&out);
    ASSERT_EQ(fr::FinishFrame(&out, start, {fr::KindByte(fr::Kind::kPushResponse), 0, f.request_id},
                              fr::kFrameBytesMaxDefault),
              fr::FrameError::kNone);
  };
  hooks.on_chunk_end = [&](FakeConn& conn) {
    size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = send(conn.fd(), out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    out.clear();
  };
  FakeServer server(fr::ServerHello(), hooks);
  std::unique_ptr<Client> c;
  ASSERT_TRUE(Client::Connect(RqpOptions(server), &c).ok());
  Answers answers;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kPushes; ++i) {
    c->Push(PushOf("x"), [&](Status st, v1::PushResponse) { answers.Add(st); });
  }
  ASSERT_TRUE(answers.WaitFor(kPushes, 60s)) << answers.count;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(answers.errors.empty()) << answers.errors[0].ToString();
  std::printf("[ rqp fake server ] %d pipelined async pushes in %.3f s: %.0f pushes/s\n", kPushes,
              s, kPushes / s);
}

// A server that dies with calls in flight: each fails with UNAVAILABLE; the
// next call opens a new connection (a second HELLO) and succeeds.
TEST(RqpFakeServerTest, ConnectionLossFailsPendingThenReconnects) {
  std::atomic<int> received{0};
  std::atomic<bool> answer{false};
  FakeServer::Hooks hooks;
  hooks.on_frame = [&](FakeConn& conn, const fr::Frame& f) {
    if (answer) {
      v1::PushResponse resp;
      resp.set_id(7);
      conn.SendMessage(fr::Kind::kPushResponse, f.request_id, resp);
      return;
    }
    if (++received == 5) conn.Drop();  // swallow 5, then "crash"
  };
  FakeServer server(fr::ServerHello(), hooks);
  std::unique_ptr<Client> c;
  ASSERT_TRUE(Client::Connect(RqpOptions(server), &c).ok());
  Answers answers;
  for (int i = 0; i < 5; ++i) {
    c->Push(PushOf("p"), [&](Status st, v1::PushResponse) { answers.Add(st); });
  }
  ASSERT_TRUE(answers.WaitFor(5, 10s)) << answers.count;
  ASSERT_EQ(answers.errors.size(), 5u);
  for (const auto& st : answers.errors) {
    EXPECT_EQ(st.code, StatusCode::kUnavailable) << st.ToString();
  }
  answer = true;
  v1::PushResponse resp;
  const Status st = c->Push(PushOf("again"), &resp);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(resp.id(), 7u);
  EXPECT_EQ(server.accepted(), 2);
}

// A hello refused with a connection-level ERROR fails Connect with the
// server's code and message.
TEST(RqpFakeServerTest, RefusedHelloFailsConnect) {
  FakeServer server(fr::ServerHello(), {});
  server.RefuseHello(StatusCode::kUnauthenticated, "bad token");
  std::unique_ptr<Client> c;
  const Status st = Client::Connect(RqpOptions(server), &c);
  EXPECT_EQ(st.code, StatusCode::kUnauthenticated) << st.ToString();
  EXPECT_NE(st.message.find("bad token"), std::string::npos) << st.message;
}

// An ERROR frame answers one call with its code; the connection stays and
// the next calls succeed. A call the server never answers fails with
// DEADLINE_EXCEEDED after call_timeout_ms; its late answer is dropped.
TEST(RqpFakeServerTest, ErrorFramesAndDeadlines) {
  std::mutex mu;
  std::vector<uint64_t> held;  // ids of "hold" pushes, answered late
  FakeServer::Hooks hooks;
  hooks.on_frame = [&](FakeConn& conn, const fr::Frame& f) {
    v1::PushRequest req;
    ASSERT_TRUE(req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size())));
    if (req.job().payload() == "bad") {
      conn.SendStatus(fr::Kind::kError, f.request_id, StatusCode::kInvalidArgument, "no");
    } else if (req.job().payload() == "hold") {
      std::lock_guard lock(mu);
      held.push_back(f.request_id);
    } else {
      if (req.job().payload() == "flush-held") {
        std::lock_guard lock(mu);
        for (uint64_t id : held) conn.SendMessage(fr::Kind::kPushResponse, id, v1::PushResponse());
        held.clear();
      }
      v1::PushResponse resp;
      resp.set_id(1);
      conn.SendMessage(fr::Kind::kPushResponse, f.request_id, resp);
    }
  };
  FakeServer server(fr::ServerHello(), hooks);
  client::Options o = RqpOptions(server);
  o.call_timeout_ms = 200;
  std::unique_ptr<Client> c;
  ASSERT_TRUE(Client::Connect(o, &c).ok());
  v1::PushResponse resp;
  Status st = c->Push(PushOf("bad"), &resp);
  EXPECT_EQ(st.code, StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message, "no");
  EXPECT_TRUE(c->Push(PushOf("ok"), &resp).ok());

  const auto start = std::chrono::steady_clock::now();
  st = c->Push(PushOf("hold"), &resp);
  EXPECT_EQ(st.code, StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  // The late answer arrives for a call that already failed: ignored.
  st = c->Push(PushOf("flush-held"), &resp);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(resp.id(), 1u);
}

// Subscribe framing: SUBSCRIBE_OPEN carries the open; events arrive with the
// STREAM flag; the two acks issued inside on_deliveries travel together in
// one SUBSCRIBE_UPDATE; their results come back in an event; Close() sends
// SUBSCRIBE_CLOSE and the server's SUBSCRIBE_END (OK) ends the stream.
TEST(RqpFakeServerTest, SubscribeFraming) {
  std::mutex mu;
  std::vector<std::string> seen;  // what the server received, in order
  FakeServer::Hooks hooks;
  hooks.on_frame = [&](FakeConn& conn, const fr::Frame& f) {
    v1::SubscribeRequest req;
    ASSERT_TRUE(req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size())));
    std::lock_guard lock(mu);
    switch (static_cast<fr::Kind>(f.kind)) {
      case fr::Kind::kSubscribeOpen: {
        seen.push_back("open " + req.open().queues(0) + " " + std::to_string(req.open().credits()));
        v1::SubscribeResponse ev;
        for (uint64_t id : {11, 12}) {
          auto* d = ev.add_deliveries();
          d->mutable_job()->set_id(id);
          d->set_lease_token(id * 100);
        }
        conn.SendMessage(fr::Kind::kSubscribeEvent, f.request_id, ev, fr::kFlagStream);
        break;
      }
      case fr::Kind::kSubscribeUpdate: {
        seen.push_back("update acks=" + std::to_string(req.acks_size()));
        v1::SubscribeResponse ev;
        for (const auto& a : req.acks()) {
          EXPECT_EQ(a.lease_token(), a.id() * 100);
          auto* r = ev.add_results();
          r->set_id(a.id());
          r->set_op(v1::SETTLE_OP_ACK);
        }
        conn.SendMessage(fr::Kind::kSubscribeEvent, f.request_id, ev, fr::kFlagStream);
        break;
      }
      case fr::Kind::kSubscribeClose: {
        seen.push_back("close");
        std::string body;
        fr::AppendStatusBody(0, "", &body);
        conn.Send(fr::Kind::kSubscribeEnd, f.request_id, body);
        break;
      }
      default:
        ADD_FAILURE() << "unexpected kind " << fr::KindName(f.kind);
    }
  };
  FakeServer server(fr::ServerHello(), hooks);
  std::unique_ptr<Client> c;
  ASSERT_TRUE(Client::Connect(RqpOptions(server), &c).ok());

  Answers results;
  std::atomic<client::Subscription*> self{nullptr};
  client::SubscriptionHandlers h;
  h.on_deliveries = [&](std::vector<v1::Delivery> ds) {
    while (self.load() == nullptr) std::this_thread::yield();
    for (const auto& d : ds) self.load()->Ack(d.job().id(), d.lease_token());
  };
  h.on_results = [&](std::vector<v1::SettleResult> rs) {
    for (const auto& r : rs)
      results.Add(r.has_error() ? Status(StatusCode::kInternal, "") : Status());
  };
  v1::SubscribeOpen open;
  open.add_queues("work");
  open.set_credits(2);
  auto sub = c->Subscribe(open, h);
  self.store(sub.get());
  ASSERT_TRUE(results.WaitFor(2, 10s)) << results.count;
  sub->Close();
  Status end;
  ASSERT_TRUE(sub->WaitEnd(10'000, &end));
  EXPECT_TRUE(end.ok()) << end.ToString();
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"open work 2", "update acks=2", "close"}));
}

}  // namespace
}  // namespace ringq
