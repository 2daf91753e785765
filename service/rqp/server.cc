#include "service/rqp/server.h"

#include <poll.h>

#include <cerrno>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "service/api/subscription.h"
#include "service/engine/allocator.h"
#include "service/log.h"
#include "uring/net/loop.h"
#include "uring/ring.h"
#include "uring/rqp_frame.h"

namespace ringq::rqp {

namespace fr = uring::rqp;
using uring::net::ConnId;

namespace {

uint8_t Byte(fr::Kind k) { return fr::KindByte(k); }

// Appends an ERROR-shaped frame (ERROR, GOAWAY, SUBSCRIBE_END) carrying `code`.
void AppendStatusFrame(fr::Kind kind, uint64_t request_id, uint32_t code, std::string_view msg,
                       uint32_t frame_bytes_max, std::string* out) {
  std::string body;
  fr::AppendStatusBody(code, msg, &body);
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  (void)fr::AppendFrame({Byte(kind), 0, request_id}, {p, body.size()}, frame_bytes_max, out);
}

void AppendError(uint64_t request_id, const engine::Status& s, uint32_t frame_bytes_max,
                 std::string* out) {
  AppendStatusFrame(fr::Kind::kError, request_id, static_cast<uint32_t>(s.code()), s.message(),
                    frame_bytes_max, out);
}

// Appends the final answer of a request: its response message, or ERROR.
void AppendAnswer(uint64_t request_id, uint8_t kind, const engine::Status& s,
                  const google::protobuf::MessageLite* resp, uint32_t frame_bytes_max,
                  std::string* out) {
  if (!s.ok()) {
    AppendError(request_id, s, frame_bytes_max, out);
    return;
  }
  const size_t start = fr::BeginFrame(out);
  resp->AppendToString(out);
  const size_t bytes = out->size() - start;
  if (fr::FinishFrame(out, start, {kind, 0, request_id}, frame_bytes_max) != fr::FrameError::kNone) {
    AppendError(request_id,
                engine::ResourceExhausted("the answer of " + std::to_string(bytes) +
                                          " bytes exceeds frame_bytes_max " +
                                          std::to_string(frame_bytes_max) +
                                          " (--rqp-frame-bytes-max)"),
                frame_bytes_max, out);
  }
}

// A FETCH answer carries as many deliveries as fit one frame (PROTOCOL.md
// section 7); the rest go back to their queues untried.
void FitResponse(engine::Engine& engine, uint32_t frame_bytes_max, v1::FetchResponse* resp) {
  std::vector<std::pair<uint64_t, uint64_t>> back;
  while (resp->deliveries_size() > 0 && resp->ByteSizeLong() + fr::kHeaderBytes > frame_bytes_max) {
    const auto& d = resp->deliveries(resp->deliveries_size() - 1);
    back.emplace_back(d.job().id(), d.lease_token());
    resp->mutable_deliveries()->RemoveLast();
  }
  for (const auto& [id, token] : back) {
    (void)engine.Post(engine::ShardOfJob(id), [id = id, token = token](engine::Shard& sh) {
      sh.scheduler().Release(id, token, false);
    });
  }
}
template <typename Resp>
void FitResponse(engine::Engine&, uint32_t, Resp*) {}

}  // namespace

// ------------------------------------------------------------------ ShardNet

class ShardNet final : public engine::ShardIo, public uring::net::Handler {
 public:
  ShardNet(RqpServer& server, uint32_t index, uring::Ring* ring)
      : server_(server), opts_(server.options_), engine_(server.engine_), index_(index),
        ring_(ring) {}

  // Main thread, before the shard starts.
  bool Listen(uint16_t port, std::string* why) {
    uring::net::LoopOptions lo;
    lo.host = opts_.host;
    lo.port = port;
    lo.send_queue_bytes_max = opts_.send_queue_bytes_max;
    if (ring_ != nullptr) {
      loop_ = uring::net::MakeUringLoop(ring_, this, lo, why);
      if (!loop_) return false;
    } else {
      loop_ = uring::net::MakeEpollLoop(this, lo);
    }
    return loop_->Listen(why);
  }
  uint16_t port() const { return loop_ ? loop_->port() : 0; }
  const char* backend() const { return loop_ ? loop_->name() : "none"; }

  // Main thread, after the shard's thread ended.
  void StopLoop() {
    if (loop_) loop_->Stop();
  }

  // ---------------------------------------------------------- ShardIo

  void Watch(int inbox_fd, int journal_fd) override {
    inbox_fd_ = inbox_fd;
    journal_fd_ = journal_fd;
    for (int fd : {inbox_fd, journal_fd}) {
      if (fd < 0) continue;
      if (loop_) {
        loop_->WatchFd(fd);
      } else if (ring_ != nullptr) {
        ring_->WatchFd(fd);
      }
    }
  }

  void Wait(uint64_t wait_ms) override {
    if (loop_) {
      loop_->Wait(wait_ms);
    } else if (ring_ != nullptr) {
      ring_->SubmitAndWait(wait_ms);
    } else {
      pollfd pfds[2] = {{inbox_fd_, POLLIN, 0}, {journal_fd_, POLLIN, 0}};
      (void)poll(pfds, journal_fd_ >= 0 ? 2 : 1, static_cast<int>(wait_ms));
    }
    if (!hello_deadlines_.empty()) CheckHelloTimeouts();
    if (closed_since_trim_ >= kTrimClosedMin && conns_.size() <= closed_since_trim_) ReturnMemory();
  }

  void Flush() override {
    if (!blocked_conns_.empty()) ResumeBlocked();
    if (loop_) loop_->Flush();
  }

  // ---------------------------------------------------------- Handler

  void OnOpen(ConnId id) override {
    auto& n = server_.counters_;
    if (draining_ || n.open.load() >= static_cast<int64_t>(opts_.connections_max)) {
      n.refused.fetch_add(1, std::memory_order_relaxed);
      std::string out;
      AppendError(0,
                  draining_ ? engine::Unavailable("server is shutting down")
                            : engine::Unavailable("too many connections (" +
                                                  std::to_string(opts_.connections_max) +
                                                  ", --rqp-connections-max); retry later"),
                  opts_.frame_bytes_max, &out);
      (void)loop_->Send(id, out);
      loop_->CloseAfterFlush(id);
      return;
    }
    n.accepted.fetch_add(1, std::memory_order_relaxed);
    n.open.fetch_add(1, std::memory_order_relaxed);
    fr::DecoderOptions dopt;
    dopt.role = fr::Role::kServer;
    dopt.frame_bytes_max = opts_.frame_bytes_max;
    conns_.emplace(id, std::make_unique<Conn>(dopt));
    hello_deadlines_.emplace_back(NowMs() + opts_.hello_timeout_ms, id);
  }

  void OnData(ConnId id, std::span<const uint8_t> data) override {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = *it->second;
    server_.counters_.bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
    received_ns_ = engine::MonotonicNs();
    for (;;) {
      // After a fatal error or GOAWAY nothing more is read (not executed).
      if (c.closing || c.goaway) return;
      const fr::Decoder::Step step = c.dec.Feed(data);
      data = data.subspan(step.consumed);
      if (step.event == fr::Decoder::Event::kFrame) {
        server_.counters_.frames_in.fetch_add(1, std::memory_order_relaxed);
        HandleFrame(id, c, c.dec.frame());
      } else if (step.event == fr::Decoder::Event::kError) {
        const fr::DecodeError& e = c.dec.error();
        if (e.fatal || e.request_id == 0) {
          FailConnection(id, c, static_cast<engine::Code>(fr::StatusFor(e.code)), e.message);
          return;
        }
        RequestError(id, e.request_id,
                     engine::Status(static_cast<engine::Code>(fr::StatusFor(e.code)), e.message));
      } else {
        return;  // kNeedMore: everything consumed
      }
    }
  }

  // The client shut down its side: it reads the answers in flight
  // (PROTOCOL.md section 9). Its streams end as on SUBSCRIBE_CLOSE; the
  // connection closes once nothing is in flight.
  bool OnPeerEof(ConnId id) override {
    auto it = conns_.find(id);
    if (it == conns_.end()) return true;
    Conn& c = *it->second;
    c.peer_eof = true;
    if (c.dec.buffered_bytes() > 0 && !c.closing) {
      server_.counters_.truncated.fetch_add(1, std::memory_order_relaxed);
    }
    std::vector<std::shared_ptr<Stream>> streams;
    for (auto& [sid, stream] : c.streams) streams.push_back(stream);
    for (auto& stream : streams) stream->core->OnReadEof();
    // The streams may have ended (and the connection with them) just now.
    it = conns_.find(id);
    if (it != conns_.end() && it->second->inflight.empty()) loop_->CloseAfterFlush(id);
    return false;
  }

  void OnClose(ConnId id, int error) override {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;  // refused at open
    std::unique_ptr<Conn> c = std::move(it->second);
    conns_.erase(it);
    auto& n = server_.counters_;
    ++closed_since_trim_;
    n.closed.fetch_add(1, std::memory_order_relaxed);
    n.open.fetch_sub(1, std::memory_order_relaxed);
    if (c->dec.buffered_bytes() > 0 && !c->closing && !c->peer_eof) {
      n.truncated.fetch_add(1, std::memory_order_relaxed);
    }
    // Every stream ends as on a cancelled call: leased jobs go back; a write
    // that waited for the output fails, which lets the stream finish.
    for (auto& [sid, stream] : c->streams) stream->core->OnCancel();
    for (auto& stream : c->blocked) stream->core->OnWriteDone(false);
    blocked_conns_.erase(id);
  }

  // ---------------------------------------------------------- answers

  // Any thread: the final answer of request `rid` of connection `id`.
  void Answer(ConnId id, uint64_t rid, uint8_t kind, const engine::Status& s,
              const google::protobuf::MessageLite* resp) {
    if (engine::Shard::Current() == &engine_.shard(index_)) {
      std::string* out = loop_->Output(id);
      if (out == nullptr) return;  // the connection is gone
      const size_t before = out->size();
      AppendAnswer(rid, kind, s, resp, opts_.frame_bytes_max, out);
      Sent(out->size() - before, !s.ok());
      Finished(id, rid);
      return;
    }
    std::string frame;
    AppendAnswer(rid, kind, s, resp, opts_.frame_bytes_max, &frame);
    DeliverTo(id, std::move(frame), rid, !s.ok());
  }

  // Any thread: appends `frames` to connection `id` on this shard's thread;
  // then, when rid != 0, request rid is answered.
  void DeliverTo(ConnId id, std::string frames, uint64_t rid, bool error = false) {
    if (engine::Shard::Current() == &engine_.shard(index_)) {
      AppendHere(id, frames, rid, error);
      return;
    }
    // Shard stopped: the connection is being torn down anyway.
    (void)engine_.Post(index_, [this, id, frames = std::move(frames), rid, error](engine::Shard&) {
      AppendHere(id, frames, rid, error);
    });
  }

  // Shard thread: GOAWAY to every connection; each closes once answered.
  void Drain() {
    draining_ = true;
    for (auto& [id, c] : conns_) {
      if (c->closing || c->goaway) continue;
      std::string out;
      AppendStatusFrame(fr::Kind::kGoaway, 0, static_cast<uint32_t>(engine::Code::kUnavailable),
                        "server is shutting down", opts_.frame_bytes_max, &out);
      (void)loop_->Send(id, out);
      Sent(out.size(), false);
      c->goaway = true;
      if (c->inflight.empty()) loop_->CloseAfterFlush(id);
    }
  }

  uint32_t frame_bytes_max() const { return opts_.frame_bytes_max; }
  bool OnShardThread() { return engine::Shard::Current() == &engine_.shard(index_); }
  // Any thread: runs `fn` on this shard's thread (dropped once it stopped).
  void PostToShard(std::function<void()> fn) {
    (void)engine_.Post(index_, [fn = std::move(fn)](engine::Shard&) { fn(); });
  }

 private:
  class Stream;

  // Shard thread: a stream's events go to the connection's output. True
  // when the write is complete (the output is below the send queue bound);
  // false when the stream waits for the output to drain (ResumeBlocked).
  bool AppendEvents(ConnId id, const std::shared_ptr<Stream>& stream, std::string_view frames) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return true;  // gone: the core is being closed
    AppendHere(id, frames, 0, false);
    if (loop_->OutputBytes(id) <= opts_.send_queue_bytes_max) return true;
    it->second->blocked.push_back(stream);
    blocked_conns_.insert(id);
    return false;
  }

  // Shard thread, every loop iteration: streams whose connection drained
  // below half the bound finish their write.
  void ResumeBlocked() {
    for (auto it = blocked_conns_.begin(); it != blocked_conns_.end();) {
      auto c = conns_.find(*it);
      if (c != conns_.end() && loop_->OutputBytes(*it) > opts_.send_queue_bytes_max / 2) {
        ++it;
        continue;
      }
      std::vector<std::shared_ptr<Stream>> ready;
      if (c != conns_.end()) ready.swap(c->second->blocked);
      it = blocked_conns_.erase(it);
      for (auto& st : ready) st->core->OnWriteDone(true);
    }
  }

  struct Conn {
    explicit Conn(const fr::DecoderOptions& o) : dec(o) {}
    fr::Decoder dec;
    bool closing = false;  // a fatal error was sent: nothing more is read
    bool goaway = false;   // draining: nothing more is read
    bool peer_eof = false; // the client half-closed: answered, then closed
    std::unordered_set<uint64_t> inflight;  // request ids without a final answer
    std::unordered_map<uint64_t, std::shared_ptr<Stream>> streams;
    std::vector<std::shared_ptr<Stream>> blocked;  // writes waiting for the output to drain
  };

  static uint64_t NowMs() { return engine::MonotonicNs() / 1'000'000; }

  void Sent(size_t bytes, bool error) {
    auto& n = server_.counters_;
    n.frames_out.fetch_add(1, std::memory_order_relaxed);
    n.bytes_out.fetch_add(bytes, std::memory_order_relaxed);
    if (error) n.request_errors.fetch_add(1, std::memory_order_relaxed);
  }

  void AppendHere(ConnId id, std::string_view frames, uint64_t rid, bool error) {
    if (!loop_->Send(id, frames)) return;
    Sent(frames.size(), error);
    if (rid != 0) Finished(id, rid);
  }

  // Request `rid` got its final answer.
  void Finished(ConnId id, uint64_t rid) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = *it->second;
    c.inflight.erase(rid);
    if ((c.goaway || c.peer_eof) && c.inflight.empty()) loop_->CloseAfterFlush(id);
  }

  // The byte stream can no longer be trusted: connection-level ERROR, close.
  void FailConnection(ConnId id, Conn& c, engine::Code code, const std::string& why) {
    server_.counters_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    std::string out;
    AppendError(0, engine::Status(code, why), opts_.frame_bytes_max, &out);
    (void)loop_->Send(id, out);
    Sent(out.size(), false);
    c.closing = true;
    loop_->CloseAfterFlush(id);
  }

  // One request is wrong; the connection stays.
  void RequestError(ConnId id, uint64_t rid, const engine::Status& s) {
    std::string* out = loop_->Output(id);
    if (out == nullptr) return;
    const size_t before = out->size();
    AppendError(rid, s, opts_.frame_bytes_max, out);
    Sent(out->size() - before, true);
  }

  // After a burst of connections closed: give their memory back, so that a
  // server that once held 10,000 idle connections returns to its baseline.
  static constexpr size_t kTrimClosedMin = 256;
  void ReturnMemory() {
    const uint64_t now = NowMs();
    if (now < last_trim_ms_ + 1000) return;
    last_trim_ms_ = now;
    conns_.rehash(0);
    hello_deadlines_.shrink_to_fit();
    closed_since_trim_ = 0;
    engine::ReturnFreeMemory();
  }

  void CheckHelloTimeouts() {
    const uint64_t now = NowMs();
    while (!hello_deadlines_.empty() && hello_deadlines_.front().first <= now) {
      const ConnId id = hello_deadlines_.front().second;
      hello_deadlines_.pop_front();
      auto it = conns_.find(id);
      if (it == conns_.end() || it->second->dec.version() != 0 || it->second->closing) continue;
      server_.counters_.hello_timeouts.fetch_add(1, std::memory_order_relaxed);
      FailConnection(id, *it->second, engine::Code::kInvalidArgument,
                     "no HELLO within " + std::to_string(opts_.hello_timeout_ms) +
                         " ms (hello_timeout_ms)");
    }
  }

  // ---------------------------------------------------------- frames

  template <typename Req, typename Resp>
  auto Bind(void (api::Ops::*m)(const Req&, Resp*, api::Done)) {
    api::Ops* ops = &server_.ops_;
    return [ops, m](const Req& q, Resp* r, api::Done d) { (ops->*m)(q, r, std::move(d)); };
  }

  void HandleFrame(ConnId id, Conn& c, const fr::Frame& f) {
    using K = fr::Kind;
    switch (static_cast<K>(f.kind)) {
      case K::kHello: return Hello(id, c, f);
      case K::kPing: {
        std::string out;
        (void)fr::AppendFrame({Byte(K::kPong), 0, f.request_id}, f.body, opts_.frame_bytes_max,
                              &out);
        (void)loop_->Send(id, out);
        Sent(out.size(), false);
        return;
      }
      case K::kSubscribeUpdate:
      case K::kSubscribeClose: return StreamFrame(c, f);
      default: break;
    }
    // A request: at most inflight_max in flight, ids unique among them.
    if (c.inflight.count(f.request_id) != 0) {
      return FailConnection(id, c, engine::Code::kInvalidArgument,
                            "request_id " + std::to_string(f.request_id) +
                                " is already in flight on this connection");
    }
    if (c.inflight.size() >= opts_.inflight_max) {
      return RequestError(id, f.request_id,
                          engine::ResourceExhausted(
                              "requests in flight on this connection reached inflight_max " +
                              std::to_string(opts_.inflight_max) + " (--rqp-inflight-max)"));
    }
    api::Ops& ops = server_.ops_;
    const uint64_t at = received_ns_;
    switch (static_cast<K>(f.kind)) {
      case K::kPush:
        return Unary<v1::PushRequest, v1::PushResponse>(
            id, c, f, [&ops, at](auto& q, auto* r, api::Done d) { ops.Push(q, r, std::move(d), at); });
      case K::kPushBatch:
        return Unary<v1::PushBatchRequest, v1::PushBatchResponse>(
            id, c, f,
            [&ops, at](auto& q, auto* r, api::Done d) { ops.PushBatch(q, r, std::move(d), at); });
      case K::kFetch: return Unary<v1::FetchRequest, v1::FetchResponse>(id, c, f, Bind(&api::Ops::Fetch));
      case K::kAck: return Unary<v1::AckRequest, v1::AckResponse>(id, c, f, Bind(&api::Ops::Ack));
      case K::kFail: return Unary<v1::FailRequest, v1::FailResponse>(id, c, f, Bind(&api::Ops::Fail));
      case K::kExtend:
        return Unary<v1::ExtendRequest, v1::ExtendResponse>(id, c, f, Bind(&api::Ops::Extend));
      case K::kStats:
        return Unary<v1::StatsRequest, v1::StatsResponse>(id, c, f, Bind(&api::Ops::Stats));
      case K::kGetJob: return Unary<v1::GetJobRequest, v1::Job>(id, c, f, Bind(&api::Ops::GetJob));
      case K::kCancel:
        return Unary<v1::CancelRequest, v1::CancelResponse>(id, c, f, Bind(&api::Ops::Cancel));
      case K::kListQueues:
        return Unary<v1::ListQueuesRequest, v1::ListQueuesResponse>(id, c, f,
                                                                    Bind(&api::Ops::ListQueues));
      case K::kPause:
        return Unary<v1::QueueRequest, v1::PauseResponse>(id, c, f, Bind(&api::Ops::Pause));
      case K::kResume:
        return Unary<v1::QueueRequest, v1::ResumeResponse>(id, c, f, Bind(&api::Ops::Resume));
      case K::kListDead:
        return Unary<v1::ListDeadRequest, v1::ListDeadResponse>(id, c, f, Bind(&api::Ops::ListDead));
      case K::kRetryDead:
        return Unary<v1::DeadSelector, v1::RetryDeadResponse>(id, c, f, Bind(&api::Ops::RetryDead));
      case K::kPurgeDead:
        return Unary<v1::DeadSelector, v1::PurgeDeadResponse>(id, c, f, Bind(&api::Ops::PurgeDead));
      case K::kSubscribeOpen: return OpenStream(id, c, f);
      default:
        // The decoder passes only known client kinds.
        return RequestError(id, f.request_id,
                            engine::Status(engine::Code::kInvalidArgument,
                                           std::string("unexpected kind ") + fr::KindName(f.kind)));
    }
  }

  template <typename Req, typename Resp, typename Invoke>
  void Unary(ConnId id, Conn& c, const fr::Frame& f, Invoke invoke) {
    struct Call {
      Req req;
      Resp resp;
    };
    auto call = std::make_shared<Call>();
    if (!call->req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) {
      return RequestError(id, f.request_id,
                          engine::InvalidArgument(std::string("body of ") + fr::KindName(f.kind) +
                                                  " is not a valid " + call->req.GetTypeName()));
    }
    c.inflight.insert(f.request_id);
    const uint64_t rid = f.request_id;
    const uint8_t kind = f.kind | fr::kServerBit;
    invoke(call->req, &call->resp, [this, id, rid, kind, call](const engine::Status& s) {
      FitResponse(engine_, opts_.frame_bytes_max, &call->resp);
      Answer(id, rid, kind, s, &call->resp);
    });
  }

  void Hello(ConnId id, Conn& c, const fr::Frame& f) {
    fr::ClientHello hello;
    std::string why;
    if (!fr::ParseClientHello(f.body, &hello, &why)) {
      return FailConnection(id, c, engine::Code::kInvalidArgument, why);
    }
    if (opts_.authenticate) {
      engine::Status s = opts_.authenticate(hello.token);
      if (!s.ok()) return FailConnection(id, c, s.code(), s.message());
    }
    const auto& limits = engine_.limits();
    fr::ServerHello sh;
    sh.version = c.dec.version();
    sh.frame_bytes_max = opts_.frame_bytes_max;
    sh.inflight_max = opts_.inflight_max;
    sh.batch_max = limits.batch_max;
    sh.payload_bytes_max = limits.payload_bytes_max;
    sh.subscribe_credits_max = limits.subscribe_credits_max;
    sh.fetch_wait_ms_max = limits.fetch_wait_ms_max;
    std::string body, out;
    fr::AppendServerHelloBody(sh, &body);
    const auto* p = reinterpret_cast<const uint8_t*>(body.data());
    (void)fr::AppendFrame({Byte(fr::Kind::kServerHello), 0, 0}, {p, body.size()},
                          opts_.frame_bytes_max, &out);
    (void)loop_->Send(id, out);
    Sent(out.size(), false);
  }

  // ---------------------------------------------------------- streams

  // The RQP side of one Subscription: events and the end go to the
  // connection as frames, from whatever thread the core calls on.
  class Stream final : public api::SubscriptionSink,
                       public std::enable_shared_from_this<Stream> {
   public:
    Stream(ShardNet& net, ConnId conn, uint64_t id) : net_(net), conn_(conn), id_(id) {}

    std::shared_ptr<api::Subscription> core;

    // The open was accepted: an empty first event confirms it (unless the
    // stream already ended, for example refused by a shard).
    void Confirm() {
      {
        std::lock_guard lock(mu_);
        if (ended_) return;
        confirmed_ = true;
      }
      std::string out;
      AppendEvent(v1::SubscribeResponse(), &out);
      net_.DeliverTo(conn_, std::move(out), 0);
    }

    // Bounded like the gRPC stream: the write completes once the frames are
    // in the connection's output and that output is below
    // --rqp-send-queue-bytes-max; a worker that does not read holds the
    // core's next write (and so its deliveries, bounded by its credits).
    bool StartWrite(const v1::SubscribeResponse& msg) override {
      std::string out;
      if (msg.ByteSizeLong() + fr::kHeaderBytes <= net_.frame_bytes_max()) {
        AppendEvent(msg, &out);
      } else {
        Split(msg, &out);
      }
      if (net_.OnShardThread()) return net_.AppendEvents(conn_, shared_from_this(), out);
      net_.PostToShard([self = shared_from_this(), out = std::move(out)] {
        if (self->net_.AppendEvents(self->conn_, self, out)) self->core->OnWriteDone(true);
      });
      return false;
    }

    void StartRead() override {}

    void Finish(const engine::Status& status) override {
      bool confirmed;
      {
        std::lock_guard lock(mu_);
        ended_ = true;
        confirmed = confirmed_;
      }
      std::string out;
      if (confirmed || status.ok()) {
        AppendStatusFrame(fr::Kind::kSubscribeEnd, id_, static_cast<uint32_t>(status.code()),
                          status.message(), net_.frame_bytes_max(), &out);
      } else {
        AppendError(id_, status, net_.frame_bytes_max(), &out);
      }
      // The last thing this sink does: the connection drops the stream.
      net_.EndStream(conn_, id_, std::move(out), !confirmed && !status.ok());
    }

   private:
    void AppendEvent(const v1::SubscribeResponse& msg, std::string* out) {
      const size_t start = fr::BeginFrame(out);
      msg.AppendToString(out);
      (void)fr::FinishFrame(out, start, {Byte(fr::Kind::kSubscribeEvent), fr::kFlagStream, id_},
                            net_.frame_bytes_max());
    }

    // A message larger than one frame goes out as several events.
    void Split(const v1::SubscribeResponse& msg, std::string* out) {
      const size_t room = net_.frame_bytes_max() - fr::kHeaderBytes - 64;
      v1::SubscribeResponse part;
      size_t bytes = 0;
      auto flush = [&] {
        if (bytes == 0) return;
        AppendEvent(part, out);
        part.Clear();
        bytes = 0;
      };
      for (const auto& d : msg.deliveries()) {
        const size_t n = d.ByteSizeLong() + 8;
        if (bytes + n > room) flush();
        if (n > room) {
          // Cannot happen with the startup check (frame >= payload + room);
          // the lease expires and the job is delivered again.
          LogLine("rqp: delivery of job %llu (%zu bytes) exceeds --rqp-frame-bytes-max; dropped",
                  static_cast<unsigned long long>(d.job().id()), n);
          continue;
        }
        *part.add_deliveries() = d;
        bytes += n;
      }
      for (const auto& r : msg.results()) {
        const size_t n = r.ByteSizeLong() + 8;
        if (bytes + n > room) flush();
        *part.add_results() = r;
        bytes += n;
      }
      flush();
    }

    ShardNet& net_;
    const ConnId conn_;
    const uint64_t id_;
    std::mutex mu_;
    bool confirmed_ = false;
    bool ended_ = false;
  };

  void OpenStream(ConnId id, Conn& c, const fr::Frame& f) {
    v1::SubscribeRequest req;
    if (!req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) {
      return RequestError(id, f.request_id,
                          engine::InvalidArgument(
                              "body of SUBSCRIBE_OPEN is not a valid ringq.v1.SubscribeRequest"));
    }
    if (!req.has_open()) {
      return RequestError(id, f.request_id,
                          engine::InvalidArgument("SUBSCRIBE_OPEN must carry open"));
    }
    auto stream = std::make_shared<Stream>(*this, id, f.request_id);
    stream->core = std::make_shared<api::Subscription>(engine_, opts_.settle_pending_max,
                                                       server_.streams_, stream.get());
    c.inflight.insert(f.request_id);
    c.streams.emplace(f.request_id, stream);
    stream->core->Begin();
    stream->core->OnRead(req);
    stream->Confirm();
  }

  void StreamFrame(Conn& c, const fr::Frame& f) {
    auto it = c.streams.find(f.request_id);
    if (it == c.streams.end()) {
      server_.counters_.dropped_updates.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::shared_ptr<Stream> stream = it->second;  // the core may end it below
    if (f.kind == Byte(fr::Kind::kSubscribeClose)) {
      stream->core->OnReadEof();
      return;
    }
    v1::SubscribeRequest req;
    if (!req.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) {
      stream->core->Close(engine::InvalidArgument(
          "body of SUBSCRIBE_UPDATE is not a valid ringq.v1.SubscribeRequest"));
      return;
    }
    stream->core->OnRead(req);
  }

  // Any thread: the stream's final frame; the connection forgets it.
  void EndStream(ConnId id, uint64_t sid, std::string frame, bool error) {
    auto end = [this, id, sid, frame = std::move(frame), error] {
      auto it = conns_.find(id);
      if (it == conns_.end()) return;
      it->second->streams.erase(sid);
      AppendHere(id, frame, sid, error);
    };
    if (engine::Shard::Current() == &engine_.shard(index_)) {
      end();
      return;
    }
    (void)engine_.Post(index_, [end = std::move(end)](engine::Shard&) { end(); });
  }

  RqpServer& server_;
  const RqpOptions& opts_;
  engine::Engine& engine_;
  const uint32_t index_;
  uring::Ring* const ring_;
  std::unique_ptr<uring::net::Loop> loop_;
  int inbox_fd_ = -1;
  int journal_fd_ = -1;
  bool draining_ = false;
  uint64_t received_ns_ = 0;
  size_t closed_since_trim_ = 0;  // connections closed since the last ReturnMemory
  uint64_t last_trim_ms_ = 0;
  std::unordered_map<ConnId, std::unique_ptr<Conn>> conns_;
  std::unordered_set<ConnId> blocked_conns_;  // connections with blocked stream writes
  std::deque<std::pair<uint64_t, ConnId>> hello_deadlines_;  // (deadline ms, conn)
};

// ------------------------------------------------------------------ RqpServer

RqpServer::RqpServer(engine::Engine& engine, const RqpOptions& options,
                     std::vector<uring::Ring*> rings)
    : engine_(engine), options_(options), rings_(std::move(rings)), ops_(engine) {
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) {
    shards_.push_back(
        std::make_unique<ShardNet>(*this, i, rings_.empty() ? nullptr : rings_[i]));
  }
  backend_ = rings_.empty() ? "epoll" : "io_uring";
}

RqpServer::~RqpServer() {
  // The loops run on the shard threads: those must be gone first.
  engine_.Stop();
  for (auto& s : shards_) s->StopLoop();
}

bool RqpServer::Start(std::string* why) {
  if (options_.enabled) {
    uint16_t port = options_.port;
    for (auto& s : shards_) {
      if (!s->Listen(port, why)) return false;
      port = s->port();  // port 0: the first shard's pick, shared by the rest
    }
    port_ = port;
    backend_ = shards_.front()->backend();
  }
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) engine_.shard(i).SetIo(shards_[i].get());
  return true;
}

void RqpServer::Drain() {
  streams_.DrainAll();
  ops_.DrainWaiters();
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) {
    ShardNet* s = shards_[i].get();
    (void)engine_.Post(i, [s](engine::Shard&) { s->Drain(); });
  }
}

void RqpServer::Collect(metrics::TextWriter& out) {
  using metrics::Type;
  const auto& n = counters_;
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  out.Family("ringq_rqp_connections_total", Type::kCounter,
             "RQP connections by event: accepted, refused (over --rqp-connections-max or "
             "shutting down), closed.");
  out.Sample({{"event", "accepted"}}, get(n.accepted));
  out.Sample({{"event", "refused"}}, get(n.refused));
  out.Sample({{"event", "closed"}}, get(n.closed));
  out.Family("ringq_rqp_frames_total", Type::kCounter, "RQP frames by direction.");
  out.Sample({{"direction", "in"}}, get(n.frames_in));
  out.Sample({{"direction", "out"}}, get(n.frames_out));
  out.Family("ringq_rqp_errors_total", Type::kCounter,
             "RQP errors by kind: protocol (bad framing: the connection is closed), request "
             "(an ERROR answer; the connection stays), hello_timeout, truncated (EOF inside a "
             "frame), dropped_update (SUBSCRIBE_UPDATE/CLOSE for no open stream).");
  out.Sample({{"kind", "protocol"}}, get(n.protocol_errors));
  out.Sample({{"kind", "request"}}, get(n.request_errors));
  out.Sample({{"kind", "hello_timeout"}}, get(n.hello_timeouts));
  out.Sample({{"kind", "truncated"}}, get(n.truncated));
  out.Sample({{"kind", "dropped_update"}}, get(n.dropped_updates));
}

}  // namespace ringq::rqp
