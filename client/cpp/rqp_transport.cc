// The RQP transport (proto/PROTOCOL.md): one TCP connection at a time,
// frames built and checked by uring/rqp_frame.h.
//
// Per connection, two threads:
//   * the reader receives, decodes (rqp::Decoder, Role::kClient) and
//     completes: answers by request_id, stream events by stream id, the
//     server HELLO (its limits are adopted: frame_bytes_max for what we send,
//     inflight_max for the gate), GOAWAY, connection-level ERROR;
//   * the writer sends. Callers append whole frames to `out_` under the
//     mutex; the writer swaps the buffer out and sends it with one send(), so
//     pipelined frames coalesce. Before each send it pulls pending Subscribe
//     updates of the streams that were kicked (their settles batch while the
//     previous send runs), and every sweep_interval it fails calls past their
//     deadline.
// Both threads are completion threads (CallbackThreadScope).
//
// Bounds: requests in flight + open streams <= the gate's limit (16 until
// the server HELLO, then min(Options::inflight_max, server inflight_max));
// out_ <= rqp_send_buffer_bytes_max + one frame for ordinary callers (the
// completion threads never wait); received frames <= the server's
// frame_bytes_max (the decoder's bound).
//
// Failure: EOF, a socket error or a fatal decode error ends the connection:
// every pending call fails with UNAVAILABLE (INTERNAL for a protocol error;
// the server's code for a connection-level ERROR), every stream ends the
// same way. After a loss or a GOAWAY the transport opens a new connection
// for the next call.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "client/cpp/inflight_gate.h"
#include "client/cpp/transport.h"
#include "uring/rqp_frame.h"

namespace ringq::client::internal {

namespace {

namespace rqp = ringq::uring::rqp;
using google::protobuf::Message;
using Clock = std::chrono::steady_clock;

constexpr rqp::Kind kRequestKinds[] = {
#define RINGQ_RQP_KIND(Name, Req, Resp, RqpKind) rqp::Kind::RqpKind,
    RINGQ_CLIENT_UNARY_METHODS(RINGQ_RQP_KIND)
#undef RINGQ_RQP_KIND
};
static_assert(std::size(kRequestKinds) == kRpcCount);

constexpr size_t kRecvBufferBytes = 256u << 10;
constexpr auto kSweepInterval = std::chrono::milliseconds(50);

std::string Errno(const char* what, int err) { return std::string(what) + ": " + strerror(err); }

Status FromStatusBody(std::span<const uint8_t> body, const char* what) {
  rqp::StatusBody sb;
  std::string why;
  if (!rqp::ParseStatusBody(body, &sb, &why)) {
    return Status(StatusCode::kInternal, std::string("malformed ") + what + " from server: " + why);
  }
  return Status(StatusCodeFromWire(sb.code), std::move(sb.message));
}

// Splits "host:port" / "[v6]:port".
bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty() && !port->empty();
}

// Connects a blocking TCP socket within timeout_ms; -1 and *error otherwise.
int ConnectTcp(const std::string& address, uint32_t timeout_ms, std::string* error) {
  std::string host, port;
  if (!SplitAddress(address, &host, &port)) {
    *error = "address \"" + address + "\" is not HOST:PORT";
    return -1;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
    *error = "resolving " + host + ": " + gai_strerror(rc);
    return -1;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int fd = -1;
  *error = "no address";
  for (addrinfo* ai = list; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      *error = Errno("socket", errno);
      continue;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      rc = poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      if (rc == 0) {
        errno = ETIMEDOUT;
        rc = -1;
      } else if (rc > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        rc = err == 0 ? 0 : -1;
      }
    }
    if (rc != 0) {
      *error = Errno("connect", errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(list);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// One Subscribe stream on a connection. Guarded by the connection's mutex,
// except `sink` (const).
struct StreamState {
  explicit StreamState(std::shared_ptr<StreamSink> s) : sink(std::move(s)) {}
  const std::shared_ptr<StreamSink> sink;
  uint64_t id = 0;          // 0 until SUBSCRIBE_OPEN was queued
  bool dirty = false;       // in the connection's dirty_ list
  bool cancelled = false;   // Cancel(): send CLOSE, drop events, end CANCELLED
  bool close_sent = false;  // SUBSCRIBE_CLOSE queued; nothing follows it
  bool ended = false;       // removed from the connection; OnEnd ran or runs
  Status local_error;       // an update we could not send (too large)
};

class RqpConnection;

class RqpStream final : public StreamHandle {
 public:
  RqpStream(std::weak_ptr<RqpConnection> conn, std::shared_ptr<StreamState> state)
      : conn_(std::move(conn)), state_(std::move(state)) {}
  void Kick() override;
  void Cancel() override;

 private:
  const std::weak_ptr<RqpConnection> conn_;
  const std::shared_ptr<StreamState> state_;
};

class RqpConnection final : public std::enable_shared_from_this<RqpConnection> {
 public:
  explicit RqpConnection(const Options& options)
      : options_(options), gate_(std::min<uint32_t>(options.inflight_max, rqp::kInflightMaxMin)) {}

  ~RqpConnection() {
    assert(!reader_.joinable() && !writer_.joinable());
    if (fd_ >= 0) close(fd_);
  }

  // Connects, queues the HELLO and starts both threads.
  Status Open() {
    if (options_.token.size() > rqp::kTokenBytesMax) {
      return Status(StatusCode::kInvalidArgument,
                    "token is " + std::to_string(options_.token.size()) + " bytes; RQP allows " +
                        std::to_string(rqp::kTokenBytesMax));
    }
    std::string error;
    fd_ = ConnectTcp(options_.address, options_.connect_timeout_ms, &error);
    if (fd_ < 0) {
      return Status(StatusCode::kUnavailable,
                    "cannot connect to rqp://" + options_.address + ": " + error);
    }
    rqp::ClientHello hello;
    hello.token = options_.token;
    std::string body;
    rqp::AppendClientHelloBody(hello, &body);
    const auto e = rqp::AppendFrame({rqp::KindByte(rqp::Kind::kHello), 0, 0},
                                    {reinterpret_cast<const uint8_t*>(body.data()), body.size()},
                                    frame_bytes_max_, &out_);
    assert(e == rqp::FrameError::kNone);
    threads_running_.store(2);  // before they start: TryJoin must not see 0 early
    reader_ = std::thread([this] { ReaderLoop(); });
    writer_ = std::thread([this] { WriterLoop(); });
    return Status::Ok();
  }

  Status WaitHello(uint32_t timeout_ms) {
    std::unique_lock lock(mu_);
    if (!hello_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                            [&] { return hello_done_ || dead_; })) {
      return Status(StatusCode::kUnavailable, "no HELLO from rqp://" + options_.address +
                                                  " within " + std::to_string(timeout_ms) + " ms");
    }
    return dead_ ? dead_status_ : Status::Ok();
  }

  // False once dead or told to go away: new calls need a new connection.
  bool usable() const {
    std::lock_guard lock(mu_);
    return !dead_ && !goaway_;
  }

  void Start(Rpc rpc, const Message& request, Message* response, uint32_t timeout_ms, Done done) {
    gate_.Enter([this, rpc, &request, response, timeout_ms,
                 done = std::move(done)](bool admitted) mutable {
      std::unique_lock lock(mu_);
      if (admitted) WaitForSpace(lock);
      if (!admitted || dead_) {
        Status st = dead_ ? dead_status_ : Status(StatusCode::kCancelled, "connection closed");
        lock.unlock();
        if (admitted) gate_.Leave();
        done(std::move(st));
        return;
      }
      const uint64_t id = next_id_++;
      const rqp::Kind kind = kRequestKinds[static_cast<size_t>(rpc)];
      const size_t start = rqp::BeginFrame(&out_);
      request.AppendToString(&out_);
      std::string why;
      if (rqp::FinishFrame(&out_, start, {rqp::KindByte(kind), 0, id}, frame_bytes_max_, &why) !=
          rqp::FrameError::kNone) {
        lock.unlock();
        gate_.Leave();
        done(Status(StatusCode::kResourceExhausted,
                    std::string(RpcName(rpc)) + " request not sent: " + why));
        return;
      }
      Pending& p = pending_[id];
      p.rpc = rpc;
      p.response = response;
      p.done = std::move(done);
      p.timeout_ms = timeout_ms;
      p.deadline = timeout_ms == 0 ? Clock::time_point::max()
                                   : Clock::now() + std::chrono::milliseconds(timeout_ms);
      lock.unlock();
      writer_cv_.notify_one();
    });
  }

  std::shared_ptr<StreamHandle> OpenStream(const v1::SubscribeRequest& open,
                                           std::shared_ptr<StreamSink> sink) {
    auto state = std::make_shared<StreamState>(sink);
    gate_.Enter([this, state, open](bool admitted) {
      std::unique_lock lock(mu_);
      if (admitted) WaitForSpace(lock);
      if (!admitted || dead_) {
        Status st = dead_ ? dead_status_ : Status(StatusCode::kCancelled, "connection closed");
        state->ended = true;
        lock.unlock();
        if (admitted) gate_.Leave();
        state->sink->OnEnd(std::move(st));
        return;
      }
      const uint64_t id = next_id_++;
      const size_t start = rqp::BeginFrame(&out_);
      open.AppendToString(&out_);
      std::string why;
      if (rqp::FinishFrame(&out_, start, {rqp::KindByte(rqp::Kind::kSubscribeOpen), 0, id},
                           frame_bytes_max_, &why) != rqp::FrameError::kNone) {
        state->ended = true;
        lock.unlock();
        gate_.Leave();
        state->sink->OnEnd(
            Status(StatusCode::kResourceExhausted, "Subscribe open not sent: " + why));
        return;
      }
      state->id = id;
      streams_.emplace(id, state);
      MarkDirty(state);  // settles or a cancel issued before the open went out
      lock.unlock();
      writer_cv_.notify_one();
    });
    return std::make_shared<RqpStream>(weak_from_this(), state);
  }

  void KickStream(const std::shared_ptr<StreamState>& state) {
    {
      std::lock_guard lock(mu_);
      if (state->id == 0 || state->ended || state->close_sent || dead_) return;
      MarkDirty(state);
    }
    writer_cv_.notify_one();
  }

  void CancelStream(const std::shared_ptr<StreamState>& state) {
    {
      std::lock_guard lock(mu_);
      if (state->ended || state->cancelled) return;
      state->cancelled = true;
      if (state->id == 0 || dead_) return;  // the open will see it, or Fail ends it
      MarkDirty(state);
    }
    writer_cv_.notify_one();
  }

  // Ends the connection: fails every call and stream with `status`, once.
  void Fail(Status status) {
    std::unordered_map<uint64_t, Pending> pending;
    std::unordered_map<uint64_t, std::shared_ptr<StreamState>> streams;
    {
      std::lock_guard lock(mu_);
      if (dead_) return;
      dead_ = true;
      dead_status_ = status;
      pending.swap(pending_);
      streams.swap(streams_);
      for (auto& [id, s] : streams) s->ended = true;
      dirty_.clear();
    }
    // Wakes the reader (recv returns 0) and the writer (send fails).
    shutdown(fd_, SHUT_RDWR);
    writer_cv_.notify_all();
    space_cv_.notify_all();
    hello_cv_.notify_all();
    gate_.Close();
    for (auto& [id, p] : pending) {
      if (p.done) p.done(status);
    }
    for (auto& [id, s] : streams) s->sink->OnEnd(status);
  }

  // Joins both threads; not from either of them.
  void Join() {
    assert(std::this_thread::get_id() != reader_.get_id());
    assert(std::this_thread::get_id() != writer_.get_id());
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
  }

  // Joins if both threads already ended and this is neither of them.
  bool TryJoin() {
    if (threads_running_.load() != 0) return false;
    const auto me = std::this_thread::get_id();
    if (me == reader_.get_id() || me == writer_.get_id()) return false;
    Join();
    return true;
  }

 private:
  struct Pending {
    Rpc rpc = Rpc::kPush;
    Message* response = nullptr;  // null once timed out
    Done done;                    // empty once timed out
    uint32_t timeout_ms = 0;
    Clock::time_point deadline;
  };

  // Ordinary callers wait while the send buffer is full; completion threads
  // never wait (they may be what drains it).
  void WaitForSpace(std::unique_lock<std::mutex>& lock) {
    if (InCallbackThread()) return;
    space_cv_.wait(lock, [&] { return dead_ || out_.size() < options_.rqp_send_buffer_bytes_max; });
  }

  void MarkDirty(const std::shared_ptr<StreamState>& state) {
    if (state->dirty) return;
    state->dirty = true;
    dirty_.push_back(state);
  }

  // ---- reader

  void ReaderLoop() {
    CallbackThreadScope scope;
    rqp::DecoderOptions dopt;
    dopt.role = rqp::Role::kClient;
    rqp::Decoder decoder(dopt);
    std::unique_ptr<uint8_t[]> buf(new uint8_t[kRecvBufferBytes]);
    Status end;
    for (;;) {
      const ssize_t n = recv(fd_, buf.get(), kRecvBufferBytes, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        end = Lost(n == 0 ? "the server closed it" : Errno("recv", errno));
        break;
      }
      if (!Consume(&decoder, {buf.get(), static_cast<size_t>(n)}, &end)) break;
    }
    Fail(std::move(end));
    threads_running_.fetch_sub(1);
  }

  // Feeds one received chunk; false (with *end) when the connection must end.
  bool Consume(rqp::Decoder* decoder, std::span<const uint8_t> chunk, Status* end) {
    for (;;) {
      const rqp::Decoder::Step s = decoder->Feed(chunk);
      chunk = chunk.subspan(s.consumed);
      if (s.event == rqp::Decoder::Event::kFrame) {
        if (!HandleFrame(decoder->frame(), end)) return false;
      } else if (s.event == rqp::Decoder::Event::kError) {
        if (decoder->error().fatal) {
          *end = Status(StatusCode::kInternal, "RQP protocol error from rqp://" + options_.address +
                                                   ": " + decoder->error().message);
          return false;
        }
        // An unknown server kind: skipped (a later protocol version).
      } else {
        return true;  // kNeedMore: chunk consumed
      }
    }
  }

  Status Lost(const std::string& why) {
    std::lock_guard lock(mu_);
    if (goaway_) {
      return Status(StatusCode::kUnavailable,
                    "rqp://" + options_.address + " went away: " + goaway_status_.message);
    }
    return Status(StatusCode::kUnavailable,
                  "connection to rqp://" + options_.address + " lost: " + why);
  }

  bool HandleFrame(const rqp::Frame& f, Status* end) {
    if (f.flags & rqp::kFlagStream) {
      HandleEvent(f, end);
      return end->ok();
    }
    switch (static_cast<rqp::Kind>(f.kind)) {
      case rqp::Kind::kServerHello:
        return HandleHello(f, end);
      case rqp::Kind::kError:
        if (f.request_id == 0) {
          *end = FromStatusBody(f.body, "ERROR");
          if (end->ok()) *end = Status(StatusCode::kUnknown, "connection-level ERROR with code 0");
          return false;
        }
        Answer(f.request_id, FromStatusBody(f.body, "ERROR"), f);
        return true;
      case rqp::Kind::kGoaway: {
        std::lock_guard lock(mu_);
        goaway_ = true;
        goaway_status_ = FromStatusBody(f.body, "GOAWAY");
        return true;
      }
      case rqp::Kind::kPong:
        return true;
      case rqp::Kind::kSubscribeEnd:
        EndStream(f.request_id, FromStatusBody(f.body, "SUBSCRIBE_END"));
        return true;
      default:
        Answer(f.request_id, Status::Ok(), f);
        return true;
    }
  }

  bool HandleHello(const rqp::Frame& f, Status* end) {
    rqp::ServerHello h;
    std::string why;
    if (!rqp::ParseServerHello(f.body, &h, &why)) {  // the decoder checked it already
      *end = Status(StatusCode::kInternal, "bad server HELLO: " + why);
      return false;
    }
    {
      std::lock_guard lock(mu_);
      frame_bytes_max_ = h.frame_bytes_max;
      hello_done_ = true;
    }
    hello_cv_.notify_all();
    gate_.SetLimit(std::min(options_.inflight_max, h.inflight_max));
    return true;
  }

  // Completes the call `id` with `status` (OK: parse `f` as its answer).
  void Answer(uint64_t id, Status status, const rqp::Frame& f) {
    Pending p;
    {
      std::unique_lock lock(mu_);
      auto it = pending_.find(id);
      if (it == pending_.end()) {
        // Not a call: an open the server refused is answered with ERROR.
        lock.unlock();
        if (!status.ok()) EndStream(id, std::move(status));
        return;
      }
      p = std::move(it->second);
      pending_.erase(it);
    }
    if (status.ok()) {
      const uint8_t want =
          rqp::KindByte(kRequestKinds[static_cast<size_t>(p.rpc)]) | rqp::kServerBit;
      if (f.kind != want) {
        status = Status(StatusCode::kInternal, std::string("server answered ") + RpcName(p.rpc) +
                                                   " with " + rqp::KindName(f.kind));
      } else if (p.response != nullptr &&
                 !p.response->ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) {
        status = Status(StatusCode::kInternal, std::string("server's answer to ") + RpcName(p.rpc) +
                                                   " is not a valid " + p.response->GetTypeName());
      }
    }
    gate_.Leave();
    if (p.done) p.done(std::move(status));  // empty when it timed out
  }

  void HandleEvent(const rqp::Frame& f, Status* end) {
    std::shared_ptr<StreamState> state;
    {
      std::lock_guard lock(mu_);
      auto it = streams_.find(f.request_id);
      if (it == streams_.end() || it->second->cancelled) return;  // ended, or being cancelled
      state = it->second;
    }
    v1::SubscribeResponse event;
    if (!event.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) {
      *end = Status(StatusCode::kInternal,
                    "SUBSCRIBE_EVENT from server is not a valid ringq.v1.SubscribeResponse");
      return;
    }
    state->sink->OnMessage(&event);
  }

  void EndStream(uint64_t id, Status status) {
    std::shared_ptr<StreamState> state;
    {
      std::lock_guard lock(mu_);
      auto it = streams_.find(id);
      if (it == streams_.end()) return;
      state = std::move(it->second);
      streams_.erase(it);
      state->ended = true;
      if (!state->local_error.ok()) {
        status = state->local_error;
      } else if (state->cancelled) {
        status = Status(StatusCode::kCancelled, "subscription cancelled");
      }
    }
    gate_.Leave();
    state->sink->OnEnd(std::move(status));
  }

  // ---- writer

  void WriterLoop() {
    CallbackThreadScope scope;
    std::string sending;
    std::vector<std::shared_ptr<StreamState>> dirty;
    std::vector<std::pair<Done, Status>> expired;
    auto next_sweep = Clock::now() + kSweepInterval;
    std::unique_lock lock(mu_);
    for (;;) {
      const auto work = [&] { return dead_ || !out_.empty() || !dirty_.empty(); };
      // Deadlines need a tick only while calls are pending.
      if (pending_.empty()) {
        writer_cv_.wait(lock, work);
      } else {
        writer_cv_.wait_until(lock, next_sweep, work);
      }
      if (dead_) break;
      if (!pending_.empty() && Clock::now() >= next_sweep) {
        SweepDeadlines(&expired);
        next_sweep = Clock::now() + kSweepInterval;
      }
      sending.swap(out_);
      dirty.swap(dirty_);
      for (auto& s : dirty) s->dirty = false;
      const uint32_t frame_bytes_max = frame_bytes_max_;
      lock.unlock();
      space_cv_.notify_all();
      for (auto& [done, st] : expired) done(std::move(st));
      expired.clear();
      for (auto& s : dirty) EncodeUpdates(s, frame_bytes_max, &sending);
      dirty.clear();
      if (!SendAll(sending)) break;  // Fail ran
      sending.clear();
      lock.lock();
    }
    if (lock.owns_lock()) lock.unlock();
    threads_running_.fetch_sub(1);
  }

  // Calls past their deadline fail now; the id stays pending (the server
  // may still answer it, and it still counts toward inflight_max).
  void SweepDeadlines(std::vector<std::pair<Done, Status>>* expired) {
    const auto now = Clock::now();
    for (auto& [id, p] : pending_) {
      if (!p.done || p.deadline > now) continue;
      p.response = nullptr;
      expired->emplace_back(std::move(p.done),
                            Status(StatusCode::kDeadlineExceeded,
                                   std::string(RpcName(p.rpc)) + " got no answer within " +
                                       std::to_string(p.timeout_ms) + " ms (call_timeout_ms)"));
      p.done = nullptr;
    }
  }

  // Appends the stream's pending updates (and its CLOSE, once) to `out`.
  void EncodeUpdates(const std::shared_ptr<StreamState>& s, uint32_t frame_bytes_max,
                     std::string* out) {
    v1::SubscribeRequest update;
    for (;;) {
      bool cancelled;
      {
        std::lock_guard lock(mu_);
        if (s->ended || s->close_sent) return;
        cancelled = s->cancelled;
      }
      StreamSink::Next next =
          cancelled ? StreamSink::Next::kHalfClose : s->sink->TakeOutgoing(&update);
      if (next == StreamSink::Next::kNothing) return;
      if (next == StreamSink::Next::kMessage) {
        const size_t start = rqp::BeginFrame(out);
        update.AppendToString(out);
        std::string why;
        if (rqp::FinishFrame(out, start, {rqp::KindByte(rqp::Kind::kSubscribeUpdate), 0, s->id},
                             frame_bytes_max, &why) == rqp::FrameError::kNone) {
          continue;
        }
        // Too large to send: end the stream, reporting why.
        std::lock_guard lock(mu_);
        s->local_error =
            Status(StatusCode::kResourceExhausted, "Subscribe update not sent: " + why);
      }
      const auto e = rqp::AppendFrame({rqp::KindByte(rqp::Kind::kSubscribeClose), 0, s->id}, {},
                                      frame_bytes_max, out);
      assert(e == rqp::FrameError::kNone);
      std::lock_guard lock(mu_);
      s->close_sent = true;
      return;
    }
  }

  bool SendAll(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Fail(Lost(Errno("send", errno)));
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  const Options options_;
  InflightGate gate_;
  int fd_ = -1;
  std::thread reader_;
  std::thread writer_;
  std::atomic<int> threads_running_{0};

  mutable std::mutex mu_;
  std::condition_variable writer_cv_;
  std::condition_variable space_cv_;
  std::condition_variable hello_cv_;
  std::string out_;                                    // whole frames, not yet handed to the writer
  uint32_t frame_bytes_max_ = rqp::kFrameBytesMaxMin;  // the server's, once its HELLO came
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::unordered_map<uint64_t, std::shared_ptr<StreamState>> streams_;
  std::vector<std::shared_ptr<StreamState>> dirty_;
  bool hello_done_ = false;
  bool goaway_ = false;
  Status goaway_status_;
  bool dead_ = false;
  Status dead_status_;
};

void RqpStream::Kick() {
  if (auto c = conn_.lock()) c->KickStream(state_);
}

void RqpStream::Cancel() {
  if (auto c = conn_.lock()) c->CancelStream(state_);
}

class RqpTransport final : public Transport {
 public:
  explicit RqpTransport(const Options& options) : options_(options) {}
  ~RqpTransport() override { assert(shut_); }

  // timeout_ms is options.connect_timeout_ms, which Current() applies.
  Status Connect(uint32_t timeout_ms) override {
    Status st;
    return Current(&st) == nullptr ? st : Status::Ok();
  }

  void Start(Rpc rpc, const Message& request, Message* response, uint32_t timeout_ms,
             Done done) override {
    Status st;
    std::shared_ptr<RqpConnection> conn = Current(&st);
    if (conn == nullptr) {
      done(std::move(st));
      return;
    }
    conn->Start(rpc, request, response, timeout_ms, std::move(done));
  }

  std::shared_ptr<StreamHandle> OpenStream(const v1::SubscribeRequest& open,
                                           std::shared_ptr<StreamSink> sink) override {
    Status st;
    std::shared_ptr<RqpConnection> conn = Current(&st);
    if (conn == nullptr) {
      sink->OnEnd(std::move(st));
      return nullptr;
    }
    return conn->OpenStream(open, std::move(sink));
  }

  void Shutdown() override {
    std::vector<std::shared_ptr<RqpConnection>> all;
    {
      std::lock_guard lock(mu_);
      shut_ = true;
      if (conn_ != nullptr) all.push_back(std::move(conn_));
      for (auto& c : retired_) all.push_back(std::move(c));
      retired_.clear();
    }
    for (auto& c : all) c->Fail(Status(StatusCode::kCancelled, "the client is shut down"));
    for (auto& c : all) c->Join();
  }

 private:
  // The connection for a new call: the current one, or a new one when it
  // died or was told to go away, returned once its handshake completed (so
  // that calls get the server's limits, not the 64 KiB frames assumed before
  // its HELLO). Serialized: one reconnect at a time.
  std::shared_ptr<RqpConnection> Current(Status* st) {
    std::lock_guard lock(mu_);
    if (shut_) {
      *st = Status(StatusCode::kCancelled, "the client is shut down");
      return nullptr;
    }
    if (conn_ != nullptr && conn_->usable()) return conn_;
    if (conn_ != nullptr) retired_.push_back(std::move(conn_));
    // Threads of retired connections that have ended can be joined now.
    std::erase_if(retired_, [](const std::shared_ptr<RqpConnection>& c) { return c->TryJoin(); });
    auto conn = std::make_shared<RqpConnection>(options_);
    *st = conn->Open();
    if (!st->ok()) return nullptr;
    *st = conn->WaitHello(options_.connect_timeout_ms);
    if (!st->ok()) {
      conn->Fail(*st);
      conn->Join();  // its threads are not this one: it was just created
      return nullptr;
    }
    conn_ = conn;
    return conn;
  }

  const Options options_;
  std::mutex mu_;
  bool shut_ = false;
  std::shared_ptr<RqpConnection> conn_;
  std::vector<std::shared_ptr<RqpConnection>> retired_;  // dead or going away; joined later
};

}  // namespace

std::unique_ptr<Transport> MakeRqpTransport(const Options& options) {
  return std::make_unique<RqpTransport>(options);
}

}  // namespace ringq::client::internal
