// Tests of net::Loop (loop.h), once per backend: io_uring on a shared Ring
// (skipped with the reason when MakeUringLoop cannot serve here) and epoll.
// Method: a Server runs the loop on its own thread (Flush, then Wait with a
// long timeout, so that commands reach it only through WatchFd's wakeup) with
// a handler that echoes by default; the test thread talks to it through
// blocking client sockets on 127.0.0.1 with 5 s timeouts, and runs loop calls
// on the loop thread through Server::Run. Every wait is bounded by count and
// time: a stuck loop fails a test, never hangs it.
#include "uring/net/loop.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "uring/ring.h"

namespace ringq::uring::net {

// kUringSqpoll: the io_uring loop on a ring with kernel-side submission polling.
enum class Backend : uint8_t { kUring, kUringSqpoll, kEpoll };
inline const char* BackendName(Backend b) {
  return b == Backend::kUring ? "Uring" : b == Backend::kUringSqpoll ? "UringSqpoll" : "Epoll";
}
inline void PrintTo(Backend b, std::ostream* os) { *os << BackendName(b); }

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kLoopWaitMs = 2000;  // the server's Wait: commands must wake it
constexpr int kIoTimeoutSec = 5;        // client socket timeouts
constexpr auto kRunTimeout = 10s;       // a command on the loop thread
constexpr auto kWaitForTimeout = 10s;   // any condition the test waits for

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

std::string Pattern(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// Records every Handler call; echoes unless on_data says otherwise.
class RecordingHandler final : public Handler {
 public:
  using OnDataFn = std::function<void(Loop&, ConnId, std::span<const uint8_t>)>;

  void OnOpen(ConnId id) override {
    std::lock_guard lock(mu_);
    opens_.push_back(id);
  }
  void OnData(ConnId id, std::span<const uint8_t> data) override {
    in_on_data_ = true;
    if (on_data_) {
      on_data_(*loop_, id, data);
    } else {
      EXPECT_TRUE(loop_->Send(
          id, std::string_view(reinterpret_cast<const char*>(data.data()), data.size())));
    }
    in_on_data_ = false;
  }
  void OnClose(ConnId id, int error) override {
    EXPECT_FALSE(in_on_data_) << "OnClose re-entered from OnData";
    std::lock_guard lock(mu_);
    closes_[id].push_back(error);
    EXPECT_EQ(loop_->Output(id), nullptr) << "the id must be dead during OnClose";
  }

  std::vector<ConnId> opens() const {
    std::lock_guard lock(mu_);
    return opens_;
  }
  std::map<ConnId, std::vector<int>> closes() const {
    std::lock_guard lock(mu_);
    return closes_;
  }

  Loop* loop_ = nullptr;
  OnDataFn on_data_;  // set before the server starts

 private:
  bool in_on_data_ = false;  // loop thread only
  mutable std::mutex mu_;
  std::vector<ConnId> opens_;
  std::map<ConnId, std::vector<int>> closes_;
};

// A loop on its own thread, as a shard runs it.
class Server {
 public:
  Server(Backend backend, const LoopOptions& options, RecordingHandler::OnDataFn on_data = {})
      : backend_(backend) {
    handler_.on_data_ = std::move(on_data);
    if (backend != Backend::kEpoll) {
      RingOptions ro;
      ro.entries = 256;
      ro.sqpoll = backend == Backend::kUringSqpoll;
      ring_ = Ring::Create(ro, &why_);
      if (ring_ == nullptr) return;
      loop_ = MakeUringLoop(ring_.get(), &handler_, options, &why_);
    } else {
      loop_ = MakeEpollLoop(&handler_, options);
    }
    if (loop_ == nullptr) return;
    handler_.loop_ = loop_.get();
    if (!loop_->Listen(&why_)) {
      loop_.reset();
      return;
    }
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    loop_->WatchFd(wake_fd_);
    thread_ = std::thread([this] { Body(); });
  }

  ~Server() {
    if (thread_.joinable()) {
      Post([](Loop& loop) { loop.Stop(); });
      quit_ = true;
      Wake();
      thread_.join();
    }
    loop_.reset();  // before the ring (ring.h)
    ring_.reset();
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  bool ok() const { return loop_ != nullptr; }
  const std::string& why() const { return why_; }
  uint16_t port() const { return loop_->port(); }
  Ring* ring() { return ring_.get(); }
  RecordingHandler& handler() { return handler_; }

  // Runs f on the loop thread and returns its result (bounded wait).
  template <typename F>
  auto Run(F f) -> decltype(f(std::declval<Loop&>())) {
    using R = decltype(f(std::declval<Loop&>()));
    auto task = std::make_shared<std::packaged_task<R(Loop&)>>(std::move(f));
    std::future<R> result = task->get_future();
    Post([task](Loop& loop) { (*task)(loop); });
    if (result.wait_for(kRunTimeout) != std::future_status::ready) {
      ADD_FAILURE() << "the loop thread did not run a command within 10 s";
      std::abort();  // the task still references this frame
    }
    return result.get();
  }

  LoopStats Stats() {
    return Run([](Loop& loop) { return loop.stats(); });
  }

 private:
  void Post(std::function<void(Loop&)> f) {
    {
      std::lock_guard lock(mu_);
      commands_.push_back(std::move(f));
    }
    Wake();
  }

  void Wake() {
    const uint64_t one = 1;
    ASSERT_EQ(write(wake_fd_, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }

  void Body() {
    while (!quit_) {
      loop_->Flush();
      loop_->Wait(kLoopWaitMs);
      uint64_t counter;
      while (read(wake_fd_, &counter, sizeof counter) > 0) {
      }
      std::deque<std::function<void(Loop&)>> commands;
      {
        std::lock_guard lock(mu_);
        commands.swap(commands_);
      }
      for (auto& c : commands) c(*loop_);
    }
  }

  const Backend backend_;
  std::string why_;
  RecordingHandler handler_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Loop> loop_;
  int wake_fd_ = -1;
  std::mutex mu_;
  std::deque<std::function<void(Loop&)>> commands_;
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

// Blocking client socket helpers, each bounded by kIoTimeoutSec. All retry
// EINTR: a thread that created an io_uring (here the test thread, for the
// servers' rings) gets task_work notifications (TWA_SIGNAL, e.g. from the
// kernel's asynchronous teardown of an SQPOLL ring), and a socket call with
// SO_RCVTIMEO/SO_SNDTIMEO then returns EINTR instead of restarting.
int Connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Without a timeout set yet, an interrupted connect restarts in the kernel.
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{kIoTimeoutSec, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads exactly n bytes; fewer on EOF, error or timeout.
std::string ReadExactly(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = recv(fd, out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

// Reads until EOF (true) or error/timeout (false), at most max bytes.
bool ReadToEof(int fd, size_t max, std::string* out) {
  char buf[64 << 10];
  while (out->size() <= max) {
    const ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return true;
    if (r < 0) return false;
    out->append(buf, static_cast<size_t>(r));
  }
  return false;
}

template <typename Pred>
bool WaitFor(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kWaitForTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

class LoopTest : public ::testing::TestWithParam<Backend> {
 protected:
  // A started server, or a skip (io_uring unavailable) / failure (epoll).
  std::unique_ptr<Server> Start(LoopOptions options = {}, RecordingHandler::OnDataFn on_data = {}) {
    options.host = "127.0.0.1";
    auto server = std::make_unique<Server>(GetParam(), options, std::move(on_data));
    if (!server->ok()) {
      if (GetParam() != Backend::kEpoll) {
        std::printf("[  SKIPPED ] io_uring loop unavailable: %s\n", server->why().c_str());
        skipped_ = true;
      } else {
        ADD_FAILURE() << "epoll loop: " << server->why();
      }
      return nullptr;
    }
    return server;
  }

  // Every opened connection got exactly one OnClose (after Stop, all of them).
  static void ExpectOneClosePerOpen(Server& server) {
    const auto opens = server.handler().opens();
    const auto closes = server.handler().closes();
    for (ConnId id : opens) {
      auto it = closes.find(id);
      ASSERT_NE(it, closes.end()) << "no OnClose for " << id;
      EXPECT_EQ(it->second.size(), 1u) << "OnClose more than once for " << id;
    }
    EXPECT_EQ(closes.size(), opens.size()) << "OnClose for an id never opened";
  }

  bool skipped_ = false;
};

#define START_OR_SKIP(var, ...)                                  \
  auto var = Start(__VA_ARGS__);                                 \
  if (var == nullptr) {                                          \
    if (skipped_) GTEST_SKIP() << "MakeUringLoop returned null"; \
    return;                                                      \
  }

// Goal: the basic path: a connection is accepted (OnOpen), its bytes reach
// OnData, what the handler sends comes back; a command posted to the loop
// thread is served promptly although Wait sleeps 2 s (WatchFd wakes it).
TEST_P(LoopTest, ConnectAndEchoRoundTrip) {
  START_OR_SKIP(server);
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_TRUE(WriteAll(fd, "hello, ringq"));
  EXPECT_EQ(ReadExactly(fd, 12), "hello, ringq");
  ASSERT_TRUE(WaitFor([&] { return server->handler().opens().size() == 1; }));
  const uint64_t t0 = NowMs();
  const LoopStats st = server->Stats();
  EXPECT_LT(NowMs() - t0, kLoopWaitMs / 2) << "a watched fd did not end Wait";
  EXPECT_EQ(st.accepted, 1u);
  EXPECT_EQ(st.bytes_in, 12u);
  EXPECT_EQ(st.bytes_out, 12u);
  EXPECT_GE(st.recvs, 1u);
  EXPECT_GE(st.sends, 1u);
  EXPECT_EQ(server->Run([](Loop& l) { return l.connections(); }), 1u);
  EXPECT_STREQ(server->Run([](Loop& l) { return l.name(); }),
               GetParam() == Backend::kEpoll ? "epoll" : "io_uring");
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 1; }));
}

// Goal: many connections at once (500) each get their own bytes back, and
// each is closed once. Method: connect all, write all, then read all.
TEST_P(LoopTest, ManyConnectionsEachEcho) {
  START_OR_SKIP(server);
  constexpr int kClients = 500;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = Connect(server->port());
    ASSERT_GE(fd, 0) << "client " << i << ": " << std::strerror(errno);
    fds.push_back(fd);
  }
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(WriteAll(fds[i], "client-" + std::to_string(i) + ";"));
  }
  for (int i = 0; i < kClients; ++i) {
    const std::string want = "client-" + std::to_string(i) + ";";
    ASSERT_EQ(ReadExactly(fds[i], want.size()), want) << "client " << i;
  }
  ASSERT_TRUE(WaitFor([&] { return server->handler().opens().size() == kClients; }));
  EXPECT_EQ(server->Run([](Loop& l) { return l.connections(); }), size_t{kClients});
  for (int fd : fds) close(fd);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == kClients; }));
  EXPECT_EQ(server->Run([](Loop& l) { return l.connections(); }), 0u);
  ExpectOneClosePerOpen(*server);
}

// Goal: bytes written in many small pieces arrive whole and in order (the
// stream is preserved across recv boundaries). Method: 3000 writes of 1..13
// bytes with TCP_NODELAY, echoed, compared.
TEST_P(LoopTest, SmallWritesArriveInOrderAndWhole) {
  START_OR_SKIP(server);
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(7);
  const std::string all = Pattern(3000 * 7, 11);
  size_t off = 0;
  std::string echoed;
  std::thread read_thread([&] { echoed = ReadExactly(fd, all.size()); });
  while (off < all.size()) {
    const size_t n = std::min<size_t>(1 + rng() % 13, all.size() - off);
    ASSERT_TRUE(WriteAll(fd, std::string_view(all).substr(off, n)));
    off += n;
  }
  read_thread.join();
  EXPECT_EQ(echoed.size(), all.size());
  EXPECT_TRUE(echoed == all) << "the echoed stream differs";
  close(fd);
}

// Goal: backpressure. A 16 MiB echo whose client does not read at first:
// the server's unsent output passes send_queue_bytes_max (1 MiB here), so it
// stops reading that connection (read_pauses > 0) instead of buffering all
// 16 MiB; once the client reads, everything arrives intact and the output
// buffer drains to nothing.
TEST_P(LoopTest, SlowReaderPausesReadingThenEverythingArrives) {
  LoopOptions o;
  o.send_queue_bytes_max = 1 << 20;
  START_OR_SKIP(server, o);
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0);
  constexpr size_t kBytes = 16 << 20;
  const std::string data = Pattern(kBytes, 3);
  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    // SO_SNDTIMEO may cut a write while the server pauses: keep going.
    std::string_view rest(data);
    const uint64_t deadline = NowMs() + 30'000;
    while (!rest.empty() && NowMs() < deadline) {
      const ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n > 0) rest.remove_prefix(static_cast<size_t>(n));
      if (n < 0 && errno != EAGAIN && errno != EINTR) break;
    }
    wrote = rest.empty();
  });
  ASSERT_TRUE(WaitFor([&] { return server->Stats().read_pauses > 0; }))
      << "the server never stopped reading a connection whose output exceeds the limit";
  const ConnId id = server->handler().opens().at(0);
  const size_t queued = server->Run([id](Loop& l) { return l.OutputBytes(id); });
  EXPECT_LE(queued, o.send_queue_bytes_max + o.recv_buffer_bytes)
      << "reading must stop within one receive buffer of the limit";
  std::string echoed;
  echoed.reserve(kBytes);
  const uint64_t deadline = NowMs() + 30'000;
  while (echoed.size() < kBytes && NowMs() < deadline) {
    std::string part = ReadExactly(fd, std::min<size_t>(256 << 10, kBytes - echoed.size()));
    if (part.empty()) break;
    echoed += part;
  }
  writer.join();
  EXPECT_TRUE(wrote.load());
  ASSERT_EQ(echoed.size(), kBytes);
  EXPECT_TRUE(echoed == data) << "16 MiB echoed with a difference";
  EXPECT_TRUE(
      WaitFor([&] { return server->Run([id](Loop& l) { return l.OutputBytes(id); }) == 0; }));
  const LoopStats st = server->Stats();
  EXPECT_EQ(st.bytes_in, kBytes);
  EXPECT_EQ(st.bytes_out, kBytes);
  std::printf("[ INFO     ] %s: read_pauses %llu, recvs %llu, sends %llu, no_buffers %llu\n",
              BackendName(GetParam()), static_cast<unsigned long long>(st.read_pauses),
              static_cast<unsigned long long>(st.recvs), static_cast<unsigned long long>(st.sends),
              static_cast<unsigned long long>(st.no_buffers));
  close(fd);
}

// Goal: a peer that sends a lot and never reads holds only its own
// connection: another client's echoes go on meanwhile.
TEST_P(LoopTest, PeerThatNeverReadsDoesNotBlockOthers) {
  LoopOptions o;
  o.send_queue_bytes_max = 1 << 20;
  START_OR_SKIP(server, o);
  const int hog = Connect(server->port());
  ASSERT_GE(hog, 0);
  std::thread writer([&] {
    const std::string chunk = Pattern(1 << 20, 5);
    for (int i = 0; i < 32; ++i) {
      if (!WriteAll(hog, chunk)) return;  // blocked then cut by the shutdown below
    }
  });
  ASSERT_TRUE(WaitFor([&] { return server->Stats().read_pauses > 0; }));
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 50; ++i) {
    const std::string msg = "ping " + std::to_string(i);
    ASSERT_TRUE(WriteAll(fd, msg));
    ASSERT_EQ(ReadExactly(fd, msg.size()), msg) << "round trip " << i;
  }
  shutdown(hog, SHUT_RDWR);
  writer.join();
  close(hog);
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 2; }));
  ExpectOneClosePerOpen(*server);
}

// Goal: the peer closing gives OnClose(id, 0) exactly once, and the id is
// dead afterwards: Send false, Output null, OutputBytes 0, even once a new
// connection reuses the slot (same index, new generation).
TEST_P(LoopTest, ClientCloseGivesOneOnCloseAndTheIdDies) {
  START_OR_SKIP(server);
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WriteAll(fd, "x"));
  ASSERT_EQ(ReadExactly(fd, 1), "x");
  const ConnId id = server->handler().opens().at(0);
  EXPECT_NE(id, 0u);
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 1; }));
  std::this_thread::sleep_for(50ms);
  auto closes = server->handler().closes();
  ASSERT_EQ(closes[id], std::vector<int>{0});
  EXPECT_FALSE(server->Run([id](Loop& l) { return l.Send(id, "late"); }));
  EXPECT_EQ(server->Run([id](Loop& l) { return l.Output(id); }), nullptr);
  EXPECT_EQ(server->Run([id](Loop& l) { return l.OutputBytes(id); }), 0u);

  const int fd2 = Connect(server->port());
  ASSERT_GE(fd2, 0);
  ASSERT_TRUE(WaitFor([&] { return server->handler().opens().size() == 2; }));
  const ConnId id2 = server->handler().opens().at(1);
  EXPECT_NE(id2, id);
  EXPECT_EQ(id2 & 0xffffffffu, id & 0xffffffffu) << "the freed slot is reused";
  EXPECT_FALSE(server->Run([id](Loop& l) { return l.Send(id, "stale"); }));
  EXPECT_TRUE(server->Run([id2](Loop& l) { return l.Send(id2, "fresh"); }));
  EXPECT_EQ(ReadExactly(fd2, 5), "fresh");
  close(fd2);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 2; }));
  closes = server->handler().closes();
  EXPECT_EQ(closes[id].size(), 1u);
  ExpectOneClosePerOpen(*server);
}

// Goal: server-side closes. "CLOSE" makes the handler Close() at once: the
// client sees the end of the stream and OnClose(id, 0) follows (not from
// inside OnData). "FLUSH" makes it queue 4 MiB then CloseAfterFlush(): a
// client that only starts reading 200 ms later still gets all 4 MiB, then EOF.
TEST_P(LoopTest, ServerCloseAndCloseAfterFlush) {
  constexpr size_t kFlushBytes = 4 << 20;
  const std::string payload = Pattern(kFlushBytes, 9);
  std::atomic<int> output_after_close{0};
  auto on_data = [&](Loop& loop, ConnId id, std::span<const uint8_t> data) {
    const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
    if (text == "CLOSE") {
      loop.Close(id);
      if (loop.Output(id) != nullptr) ++output_after_close;  // closing: no more output
    } else if (text == "FLUSH") {
      ASSERT_TRUE(loop.Send(id, payload));
      loop.CloseAfterFlush(id);
    }
  };
  START_OR_SKIP(server, LoopOptions{}, on_data);
  const int a = Connect(server->port());
  ASSERT_GE(a, 0);
  ASSERT_TRUE(WriteAll(a, "CLOSE"));
  char c;
  ssize_t r;
  do {
    r = recv(a, &c, 1, 0);
  } while (r < 0 && errno == EINTR);
  const int recv_errno = errno;
  EXPECT_TRUE(r == 0 || (r < 0 && recv_errno == ECONNRESET))
      << "expected the end of the stream; recv returned " << r << ": " << std::strerror(recv_errno);
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 1; }));
  EXPECT_EQ(server->handler().closes().begin()->second, std::vector<int>{0});
  EXPECT_EQ(output_after_close.load(), 0);
  close(a);

  const int b = Connect(server->port());
  ASSERT_GE(b, 0);
  ASSERT_TRUE(WriteAll(b, "FLUSH"));
  std::this_thread::sleep_for(200ms);
  std::string got;
  EXPECT_TRUE(ReadToEof(b, kFlushBytes + 1, &got)) << "no EOF after the flushed bytes";
  ASSERT_EQ(got.size(), kFlushBytes);
  EXPECT_TRUE(got == payload);
  close(b);  // the server lingers for our FIN (bounded: 5 s) so its close cannot reset
  const uint64_t t0 = NowMs();
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 2; }));
  EXPECT_LT(NowMs() - t0, 2000u) << "the client's FIN must end the linger";
  for (const auto& [id, errors] : server->handler().closes()) {
    EXPECT_EQ(errors, std::vector<int>{0}) << "connection " << id;
  }
  ExpectOneClosePerOpen(*server);
}

// Goal: Stop() with open connections (some with a send queued) calls OnClose
// for each, leaves no connection, and with io_uring leaves the Ring serving
// others: a WAL-style write prepared afterwards completes.
TEST_P(LoopTest, StopClosesEveryConnectionAndLeavesTheRingUsable) {
  START_OR_SKIP(server);
  constexpr int kClients = 20;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(Connect(server->port()));
    ASSERT_GE(fds.back(), 0);
  }
  ASSERT_TRUE(WaitFor([&] { return server->handler().opens().size() == kClients; }));
  const std::string big = Pattern(2 << 20, 1);
  server->Run([&](Loop& loop) {
    for (ConnId id : server->handler().opens()) EXPECT_TRUE(loop.Send(id, big));
    loop.Flush();
    return 0;
  });
  server->Run([](Loop& loop) {
    loop.Stop();
    return 0;
  });
  EXPECT_EQ(server->handler().closes().size(), size_t{kClients})
      << "Stop must call OnClose for every connection before it returns";
  ExpectOneClosePerOpen(*server);
  EXPECT_EQ(server->Run([](Loop& l) { return l.connections(); }), 0u);
  for (int fd : fds) {
    std::string ignored;
    EXPECT_TRUE(ReadToEof(fd, 64 << 20, &ignored) || errno == ECONNRESET);
    close(fd);
  }
  if (server->ring() == nullptr) return;

  char path[] = "/tmp/ringq_loop_test.XXXXXX";
  const int file = mkstemp(path);
  ASSERT_GE(file, 0);
  struct Done final : Ring::Completion {
    int res = INT32_MIN;
    void OnComplete(int r, uint32_t) override { res = r; }
  };
  const std::string text = "after stop, the ring still writes";
  const int res = server->Run([&](Loop&) {
    Done done;
    io_uring_prep_write(server->ring()->Prep(&done), file, text.data(),
                        static_cast<unsigned>(text.size()), 0);
    for (int i = 0; i < 200 && done.res == INT32_MIN; ++i) server->ring()->SubmitAndWait(10);
    return done.res;
  });
  EXPECT_EQ(res, static_cast<int>(text.size()));
  char back[64] = {};
  EXPECT_EQ(pread(file, back, sizeof back, 0), static_cast<ssize_t>(text.size()));
  EXPECT_EQ(std::string(back), text);
  close(file);
  unlink(path);
}

// Goal: a receive buffer ring far smaller than the connections sending at
// once (1 buffer of 4 KiB, 64 clients of 64 KiB each) still carries every
// byte: an empty ring (ENOBUFS) re-arms later instead of failing or spinning.
TEST_P(LoopTest, TinyBufferRingStillCarriesEveryByte) {
  LoopOptions o;
  o.recv_buffers = 1;
  o.recv_buffer_bytes = 4096;
  START_OR_SKIP(server, o);
  constexpr int kClients = 64;
  constexpr size_t kBytes = 64 << 10;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(Connect(server->port()));
    ASSERT_GE(fds.back(), 0);
  }
  std::vector<std::thread> writers;
  for (int i = 0; i < kClients; ++i) {
    writers.emplace_back([&, i] { WriteAll(fds[i], Pattern(kBytes, 100 + i)); });
  }
  for (int i = 0; i < kClients; ++i) {
    EXPECT_TRUE(ReadExactly(fds[i], kBytes) == Pattern(kBytes, 100 + i)) << "client " << i;
  }
  for (auto& t : writers) t.join();
  const LoopStats st = server->Stats();
  EXPECT_EQ(st.bytes_in, kBytes * kClients);
  std::printf("[ INFO     ] no_buffers %llu over %llu recvs\n",
              static_cast<unsigned long long>(st.no_buffers),
              static_cast<unsigned long long>(st.recvs));
  for (int fd : fds) close(fd);
}

// Goal: SO_REUSEPORT spreads connections: two loops (two shards, each with
// its own Ring and thread) bound to one port both accept some of 200 clients.
TEST_P(LoopTest, ReusePortSpreadsConnectionsAcrossTwoLoops) {
  START_OR_SKIP(first);
  LoopOptions o;
  o.port = first->port();
  START_OR_SKIP(second, o);
  ASSERT_EQ(second->port(), first->port());
  constexpr int kClients = 200;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(Connect(first->port()));
    ASSERT_GE(fds.back(), 0);
    ASSERT_TRUE(WriteAll(fds.back(), "r"));
    ASSERT_EQ(ReadExactly(fds.back(), 1), "r");
  }
  const size_t a = first->handler().opens().size();
  const size_t b = second->handler().opens().size();
  EXPECT_EQ(a + b, size_t{kClients});
  EXPECT_GE(a, 1u);
  EXPECT_GE(b, 1u);
  std::printf("[ INFO     ] connections per loop: %zu and %zu\n", a, b);
  for (int fd : fds) close(fd);
}

// Goal: CloseAfterFlush is bounded: to a peer that never reads, 16 MiB
// cannot drain, and the loop gives up after ~5 s with OnClose(id, ETIMEDOUT)
// (not sooner, not never), freeing the connection.
TEST_P(LoopTest, CloseAfterFlushGivesUpOnAPeerThatNeverReads) {
  const std::string payload = Pattern(16 << 20, 4);
  auto on_data = [&](Loop& loop, ConnId id, std::span<const uint8_t>) {
    ASSERT_TRUE(loop.Send(id, payload));
    loop.CloseAfterFlush(id);
  };
  START_OR_SKIP(server, LoopOptions{}, on_data);
  const int fd = Connect(server->port());
  ASSERT_GE(fd, 0);
  const uint64_t t0 = NowMs();
  ASSERT_TRUE(WriteAll(fd, "go"));
  ASSERT_TRUE(WaitFor([&] { return server->handler().closes().size() == 1; }));
  const uint64_t took = NowMs() - t0;
  EXPECT_GE(took, 4500u);
  EXPECT_LE(took, 8000u);
  EXPECT_EQ(server->handler().closes().begin()->second, std::vector<int>{ETIMEDOUT});
  EXPECT_EQ(server->Run([](Loop& l) { return l.connections(); }), 0u);
  close(fd);
}

// Open file descriptors of this process below `limit`.
int OpenFdsBelow(int limit) {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd < limit && fd != dirfd(d)) ++n;
  }
  closedir(d);
  return n;
}

// Restores RLIMIT_NOFILE whatever the test's outcome.
struct NofileLimit {
  rlimit saved{};
  NofileLimit() { getrlimit(RLIMIT_NOFILE, &saved); }
  ~NofileLimit() { setrlimit(RLIMIT_NOFILE, &saved); }
};

// Goal: running out of descriptors (EMFILE) neither kills accepting nor
// spins: the failure is counted, accepting pauses ~100 ms at a time with
// few syscalls meanwhile, and once descriptors are back every waiting
// connection is accepted and served. Method: RLIMIT_NOFILE leaves room for
// the server's own 3 fds and 2 accepts before the server starts (an io_uring
// accept takes the limit when it is submitted), then 10 clients connect.
// Under the asan preset, UBSan's vptr check probes memory through a pipe;
// with the descriptors exhausted it cannot, and prints "object has invalid
// vptr ... memory cannot be printed" for live objects: false reports of
// this test only (AddressSanitizer itself reports nothing).
TEST_P(LoopTest, OutOfDescriptorsPausesAcceptingWithoutSpinning) {
  constexpr int kClients = 10;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(fds.back(), 0);
  }
  NofileLimit restore;
  int limit = 0;
  while (limit - OpenFdsBelow(limit) < 3 + 2) ++limit;
  rlimit low = restore.saved;
  low.rlim_cur = static_cast<rlim_t>(limit);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0) << std::strerror(errno);
  START_OR_SKIP(server);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int fd : fds) {
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval tv{kIoTimeoutSec, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ASSERT_TRUE(WaitFor([&] { return server->Stats().accept_errors > 0; }))
      << "no accept failed: the descriptor limit did not bite";
  const LoopStats before = server->Stats();
  const uint64_t enters_before = server->ring() != nullptr ? server->ring()->enters() : 0;
  std::this_thread::sleep_for(500ms);
  const LoopStats after = server->Stats();
  const uint64_t enters_after = server->ring() != nullptr ? server->ring()->enters() : 0;
  EXPECT_LT(after.accepted, size_t{kClients});
  EXPECT_LT(after.syscalls - before.syscalls + (enters_after - enters_before), 200u)
      << "the loop spins while accepting fails";
  EXPECT_LT(after.accept_errors - before.accept_errors, 20u) << "accept retried too often";
  setrlimit(RLIMIT_NOFILE, &restore.saved);
  ASSERT_TRUE(WaitFor([&] { return server->Stats().accepted == kClients; }));
  for (int i = 0; i < kClients; ++i) {
    const std::string msg = "fd-" + std::to_string(i);
    ASSERT_TRUE(WriteAll(fds[i], msg));
    EXPECT_EQ(ReadExactly(fds[i], msg.size()), msg);
  }
  for (int fd : fds) close(fd);
}

INSTANTIATE_TEST_SUITE_P(Backends, LoopTest,
                         ::testing::Values(Backend::kUring, Backend::kUringSqpoll, Backend::kEpoll),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(BackendName(info.param));
                         });

// Ring (ring.h) on its own, where the loop tests do not reach.
struct CountingCompletion final : Ring::Completion {
  int calls = 0;
  int last_res = INT32_MIN;
  void OnComplete(int res, uint32_t) override {
    ++calls;
    last_res = res;
  }
};

// Goal: a CQ overflow loses nothing: 400 NOPs completed while nobody
// dispatches, on a ring whose CQ holds 32, all reach their Completion.
TEST(RingTest, CqOverflowLosesNoCompletion) {
  RingOptions ro;
  ro.entries = 8;  // CQ: 32 entries
  std::string why;
  auto ring = Ring::Create(ro, &why);
  if (ring == nullptr) GTEST_SKIP() << why;
  CountingCompletion c;
  for (int i = 0; i < 400; ++i) io_uring_prep_nop(ring->Prep(&c));  // a full SQ submits itself
  ring->Submit();
  const unsigned sq_flags = io_uring_smp_load_acquire(ring->raw()->sq.kflags);
  EXPECT_NE(sq_flags & IORING_SQ_CQ_OVERFLOW, 0u)
      << "the CQ did not overflow: the test tests nothing";
  for (int i = 0; i < 1000 && c.calls < 400; ++i) ring->SubmitAndWait(10);
  EXPECT_EQ(c.calls, 400);
  EXPECT_EQ(c.last_res, 0);
  EXPECT_EQ(ring->SubmitAndWait(0), 0u);
}

// Goal: enters() counts what liburing does: nothing prepared and no wait is
// no syscall; a wait on an empty CQ is one; and a timed wait with nothing to
// complete returns after its timeout, not before and not much later.
TEST(RingTest, EntersAreCountedAndTimedWaitsEnd) {
  std::string why;
  auto ring = Ring::Create(RingOptions{}, &why);
  if (ring == nullptr) GTEST_SKIP() << why;
  EXPECT_FALSE(ring->sqpoll());
  const uint64_t e0 = ring->enters();
  EXPECT_EQ(ring->SubmitAndWait(0), 0u);
  ring->Submit();
  EXPECT_EQ(ring->enters(), e0) << "nothing to submit or wait for: no syscall";
  CountingCompletion c;
  io_uring_prep_nop(ring->Prep(&c));
  EXPECT_EQ(ring->pending(), 1u);
  EXPECT_EQ(ring->SubmitAndWait(1000), 1u);
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(ring->enters(), e0 + 1) << "submit and wait in one io_uring_enter";
  const uint64_t t0 = NowMs();
  EXPECT_EQ(ring->SubmitAndWait(50), 0u);
  const uint64_t waited = NowMs() - t0;
  EXPECT_GE(waited, 45u);
  EXPECT_LT(waited, 1000u);
  EXPECT_EQ(ring->enters(), e0 + 2);
}

}  // namespace
}  // namespace ringq::uring::net
