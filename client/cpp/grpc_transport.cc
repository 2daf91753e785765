// The gRPC transport: unary calls on the callback stub
// (stub->async()->Push(...)), Subscribe as a bidi callback reactor.
//
// Threads: completions run on gRPC's callback threads, marked with
// CallbackThreadScope. Lifetime: every call and stream is registered until
// its completion finished; Shutdown cancels them and waits for that.
#include <grpcpp/grpcpp.h>

#include <cassert>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <unordered_map>

#include "client/cpp/inflight_gate.h"
#include "client/cpp/transport.h"
#include "ringq/v1/queue.grpc.pb.h"

namespace ringq::client::internal {

namespace {

using google::protobuf::Message;
using Stub = v1::Queue::Stub;

Status FromGrpc(const grpc::Status& s) {
  return Status(StatusCodeFromWire(static_cast<uint32_t>(s.error_code())), s.error_message());
}

// One stub call per Rpc, in methods.h order.
using Invoker = void (*)(Stub*, grpc::ClientContext*, const Message*, Message*,
                         std::function<void(grpc::Status)>);
// After a failed connection attempt, Client::Connect waits this long for
// the retry to succeed before it reports the failure.
constexpr auto kConnectRetryWait = std::chrono::milliseconds(1000);

constexpr Invoker kInvokers[] = {
#define RINGQ_GRPC_INVOKER(Name, Req, Resp, Kind)                                            \
  [](Stub* stub, grpc::ClientContext* ctx, const Message* req, Message* resp,                \
     std::function<void(grpc::Status)> done) {                                               \
    stub->async()->Name(ctx, static_cast<const v1::Req*>(req), static_cast<v1::Resp*>(resp), \
                        std::move(done));                                                    \
  },
    RINGQ_CLIENT_UNARY_METHODS(RINGQ_GRPC_INVOKER)
#undef RINGQ_GRPC_INVOKER
};
static_assert(std::size(kInvokers) == kRpcCount);

class GrpcTransport;

// Counts a stream object as alive for its transport: Shutdown waits until
// every one is destroyed, so that no ClientContext (and its call) outlives
// the channel. Declared first in GrpcStream: destroyed last.
class LiveStream {
 public:
  explicit LiveStream(GrpcTransport* transport);
  ~LiveStream();
  LiveStream(const LiveStream&) = delete;
  LiveStream& operator=(const LiveStream&) = delete;

 private:
  GrpcTransport* const transport_;
};

// One Subscribe stream. Writes: one in flight; the next message is pulled
// from the sink when it completes (Pump), so settles issued meanwhile batch.
// A hold keeps OnDone away while a write may still be started from outside
// a reaction (Kick); it is removed once no write can follow: after the
// half-close, a failed write, or the end of the read side.
class GrpcStream final
    : public grpc::ClientBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>,
      public StreamHandle,
      public std::enable_shared_from_this<GrpcStream> {
 public:
  GrpcStream(GrpcTransport* transport, std::shared_ptr<StreamSink> sink,
             const v1::SubscribeRequest& open, const std::string& token)
      : live_(transport), transport_(transport), sink_(std::move(sink)) {
    out_ = open;
    if (!token.empty()) ctx_.AddMetadata("authorization", "Bearer " + token);
  }

  void Begin(Stub* stub) {
    self_ = shared_from_this();
    stub->async()->Subscribe(&ctx_, this);
    AddHold();
    StartWrite(&out_);  // the open; writing_ is true from construction
    StartRead(&in_);
    StartCall();
  }

  void Kick() override {
    {
      std::lock_guard lock(mu_);
      kicked_ = true;
      if (writing_) return;
      writing_ = true;
    }
    Pump();
  }

  void Cancel() override { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    CallbackThreadScope scope;
    if (!ok) {
      StopWriting();
      return;
    }
    Pump();
  }

  void OnWritesDoneDone(bool ok) override { ReleaseHold(); }

  void OnReadDone(bool ok) override {
    CallbackThreadScope scope;
    if (!ok) {
      // The server ended the stream: no write may start after this one.
      bool release = false;
      {
        std::lock_guard lock(mu_);
        read_done_ = true;
        release = !writing_;
        if (release) writing_ = true;  // keeps Kick out for good
      }
      if (release) ReleaseHold();
      return;
    }
    sink_->OnMessage(&in_);
    in_.Clear();
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override;

 private:
  // Writes the sink's next message, or ends writing. The caller owns
  // writing_ (it set it, or a write just completed).
  void Pump() {
    for (;;) {
      {
        std::lock_guard lock(mu_);
        kicked_ = false;
        if (read_done_) break;
      }
      switch (sink_->TakeOutgoing(&out_)) {
        case StreamSink::Next::kMessage:
          StartWrite(&out_);
          return;
        case StreamSink::Next::kHalfClose:
          StartWritesDone();  // writing_ stays true: nothing follows
          return;
        case StreamSink::Next::kNothing:
          break;
      }
      std::lock_guard lock(mu_);
      if (read_done_) break;
      if (!kicked_) {
        writing_ = false;
        return;
      }
    }
    StopWriting();
  }

  // No write will start again (writing_ stays true).
  void StopWriting() {
    {
      std::lock_guard lock(mu_);
      writing_ = true;
    }
    ReleaseHold();
  }

  void ReleaseHold() {
    {
      std::lock_guard lock(mu_);
      if (hold_released_) return;
      hold_released_ = true;
    }
    RemoveHold();
  }

  LiveStream live_;
  GrpcTransport* const transport_;
  const std::shared_ptr<StreamSink> sink_;
  grpc::ClientContext ctx_;
  v1::SubscribeRequest out_;          // owned by the write in flight
  v1::SubscribeResponse in_;          // owned by the read in flight
  std::shared_ptr<GrpcStream> self_;  // gRPC's reference, until OnDone

  std::mutex mu_;
  bool writing_ = true;  // a write is in flight, or a Pump runs, or writing ended
  bool kicked_ = false;
  bool read_done_ = false;
  bool hold_released_ = false;
};

class GrpcTransport final : public Transport {
 public:
  explicit GrpcTransport(const Options& options) : options_(options), gate_(options.inflight_max) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options.grpc_message_bytes_max));
    args.SetMaxSendMessageSize(static_cast<int>(options.grpc_message_bytes_max));
    // Each Client owns its connection (the default pool shares one between
    // channels with equal arguments).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // Reconnect after a loss within 2 s at most (gRPC's default backoff
    // grows to 120 s).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    channel_ = grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Queue::NewStub(channel_);
  }

  ~GrpcTransport() override { assert(shut_ && active_ == 0 && stream_objects_ == 0); }

  Status Connect(uint32_t timeout_ms) override {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
    bool failed_once = false;
    grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY) {
      auto wait_until = deadline;
      if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) {
        // A refused connection fails after one retry (the channel stays in
        // TRANSIENT_FAILURE while it retries; the backoff starts at 100 ms),
        // like RQP's connect(), instead of waiting for the whole timeout.
        if (failed_once) return ConnectFailed("the connection failed");
        failed_once = true;
        wait_until = std::min(deadline, std::chrono::system_clock::now() + kConnectRetryWait);
      }
      if (state == GRPC_CHANNEL_SHUTDOWN || !channel_->WaitForStateChange(state, wait_until)) {
        return ConnectFailed(failed_once
                                 ? "the connection failed"
                                 : "no connection within " + std::to_string(timeout_ms) + " ms");
      }
      state = channel_->GetState(/*try_to_connect=*/true);
    }
    return Status::Ok();
  }

  void Start(Rpc rpc, const Message& request, Message* response, uint32_t timeout_ms,
             Done done) override {
    gate_.Enter(
        [this, rpc, &request, response, timeout_ms, done = std::move(done)](bool admitted) mutable {
          if (!admitted) {
            done(Status(StatusCode::kCancelled, "the client is shut down"));
            return;
          }
          auto call = std::make_shared<UnaryCall>();
          call->done = std::move(done);
          if (!Register(call.get(), call)) {
            gate_.Leave();
            call->done(Status(StatusCode::kCancelled, "the client is shut down"));
            return;
          }
          if (timeout_ms > 0) {
            call->ctx.set_deadline(std::chrono::system_clock::now() +
                                   std::chrono::milliseconds(timeout_ms));
          }
          if (!options_.token.empty()) {
            call->ctx.AddMetadata("authorization", "Bearer " + options_.token);
          }
          UnaryCall* raw = call.get();
          kInvokers[static_cast<size_t>(rpc)](stub_.get(), &raw->ctx, &request, response,
                                              [this, raw](grpc::Status s) { Complete(raw, s); });
        });
  }

  std::shared_ptr<StreamHandle> OpenStream(const v1::SubscribeRequest& open,
                                           std::shared_ptr<StreamSink> sink) override {
    auto stream = std::make_shared<GrpcStream>(this, sink, open, options_.token);
    gate_.Enter([this, stream, sink](bool admitted) {
      if (!admitted || !Register(stream.get(), stream)) {
        if (admitted) gate_.Leave();
        sink->OnEnd(Status(StatusCode::kCancelled, "the client is shut down"));
        return;
      }
      stream->Begin(stub_.get());
    });
    return stream;
  }

  void Shutdown() override {
    std::vector<std::shared_ptr<void>> live;
    std::vector<grpc::ClientContext*> cancel_calls;
    std::vector<GrpcStream*> cancel_streams;
    {
      std::lock_guard lock(mu_);
      shut_ = true;
      for (auto& [p, ref] : calls_) {
        live.push_back(ref);
        cancel_calls.push_back(&static_cast<UnaryCall*>(p)->ctx);
      }
      for (auto& [p, ref] : streams_) {
        live.push_back(ref);
        cancel_streams.push_back(static_cast<GrpcStream*>(p));
      }
    }
    gate_.Close();
    // Outside the lock: a cancellation may run the completion inline.
    for (auto* ctx : cancel_calls) ctx->TryCancel();
    for (auto* s : cancel_streams) s->Cancel();
    live.clear();
    std::unique_lock lock(mu_);
    idle_.wait(lock, [&] {
      return calls_.empty() && streams_.empty() && active_ == 0 && stream_objects_ == 0;
    });
  }

  void StreamObjectBorn() {
    std::lock_guard lock(mu_);
    ++stream_objects_;
  }
  void StreamObjectGone() {
    std::lock_guard lock(mu_);
    assert(stream_objects_ > 0);
    if (--stream_objects_ == 0 && shut_) idle_.notify_all();
  }

  Status ConnectFailed(const std::string& why) const {
    return Status(StatusCode::kUnavailable,
                  "cannot connect to grpc://" + options_.address + ": " + why);
  }

  // The end of a stream's OnDone: the last time it touches the transport.
  void StreamDone(GrpcStream* stream) {
    std::shared_ptr<void> ref;
    {
      std::lock_guard lock(mu_);
      auto it = streams_.find(stream);
      assert(it != streams_.end());
      ref = std::move(it->second);
      streams_.erase(it);
    }
    gate_.Leave();
    Finished();
  }

 private:
  struct UnaryCall {
    grpc::ClientContext ctx;
    Done done;
  };

  // Registers a call or stream as in flight; false once shut down.
  template <class T>
  bool Register(T* key, std::shared_ptr<T> ref) {
    std::lock_guard lock(mu_);
    if (shut_) return false;
    auto& registry = std::is_same_v<T, UnaryCall> ? calls_ : streams_;
    registry.emplace(key, std::move(ref));
    ++active_;
    return true;
  }

  void Complete(UnaryCall* raw, const grpc::Status& s) {
    CallbackThreadScope scope;
    std::shared_ptr<void> ref;
    {
      std::lock_guard lock(mu_);
      auto it = calls_.find(raw);
      assert(it != calls_.end());
      ref = std::move(it->second);
      calls_.erase(it);
    }
    gate_.Leave();
    raw->done(FromGrpc(s));
    ref.reset();
    Finished();
  }

  void Finished() {
    std::lock_guard lock(mu_);
    assert(active_ > 0);
    if (--active_ == 0 && shut_) idle_.notify_all();
  }

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Stub> stub_;
  InflightGate gate_;

  std::mutex mu_;
  std::condition_variable idle_;
  bool shut_ = false;
  // In flight, owned here until their completion ran.
  std::unordered_map<void*, std::shared_ptr<void>> calls_;
  std::unordered_map<void*, std::shared_ptr<void>> streams_;
  size_t active_ = 0;          // registered and completion not finished
  size_t stream_objects_ = 0;  // GrpcStream objects not yet destroyed
};

LiveStream::LiveStream(GrpcTransport* transport) : transport_(transport) {
  transport_->StreamObjectBorn();
}
LiveStream::~LiveStream() { transport_->StreamObjectGone(); }

void GrpcStream::OnDone(const grpc::Status& status) {
  CallbackThreadScope scope;
  sink_->OnEnd(FromGrpc(status));
  auto keep = std::move(self_);  // may free this at the end of scope
  transport_->StreamDone(this);
}

}  // namespace

std::unique_ptr<Transport> MakeGrpcTransport(const Options& options) {
  return std::make_unique<GrpcTransport>(options);
}

}  // namespace ringq::client::internal
