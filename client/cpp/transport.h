// The seam between the client's one API (client.h) and its two wires
// (grpc_transport.cc, rqp_transport.cc). Internal to client/cpp.
//
// What is shared lives above this seam: the public methods, request and
// response ownership, blocking on top of async, deadlines per call, the
// Subscribe logic (batching settles, handlers, close). What differs lives
// below: how a unary call or a stream message reaches the server.
//
// Threads: a transport runs completions on its own threads (gRPC's callback
// threads; the RQP connection's reader thread). Those threads are marked with
// CallbackThreadScope; the client never blocks on them (InflightGate queues
// instead, the blocking layer asserts).
#pragma once

#include <functional>
#include <memory>

#include "client/cpp/methods.h"
#include "client/cpp/options.h"
#include "client/cpp/status.h"
#include "ringq/v1/queue.pb.h"

namespace google::protobuf {
class Message;
}

namespace ringq::client::internal {

using Done = std::function<void(Status)>;

// True while this thread runs transport completion code.
bool InCallbackThread();
class CallbackThreadScope {
 public:
  CallbackThreadScope();
  ~CallbackThreadScope();
  CallbackThreadScope(const CallbackThreadScope&) = delete;
  CallbackThreadScope& operator=(const CallbackThreadScope&) = delete;
};

// The client side of one Subscribe stream, as a transport sees it. The
// transport calls OnMessage for each server message, in order and one at a
// time, then OnEnd exactly once (no call follows it). It pulls what to send
// with TakeOutgoing whenever it can write (after StreamHandle::Kick, and
// after each write completes), so what the worker issues while a write is in
// flight travels together in the next one.
class StreamSink {
 public:
  enum class Next : uint8_t { kNothing, kMessage, kHalfClose };
  virtual ~StreamSink() = default;
  virtual void OnMessage(v1::SubscribeResponse* message) = 0;
  virtual void OnEnd(Status status) = 0;
  // kMessage: *out holds the next message. kHalfClose: nothing more will be
  // sent; returned once, after every message. Callable from any thread.
  virtual Next TakeOutgoing(v1::SubscribeRequest* out) = 0;
};

// A transport's open stream. Safe to use after the stream ended or the
// transport shut down (both calls are then no-ops).
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  // The sink has something to send (or wants to half-close): pull soon.
  virtual void Kick() = 0;
  // Ends the stream now; OnEnd follows (CANCELLED unless it ended first).
  virtual void Cancel() = 0;
};

class Transport {
 public:
  // Destruction requires Shutdown() to have returned.
  virtual ~Transport() = default;

  // Establishes the connection within timeout_ms (RQP: until the server's
  // HELLO). UNAVAILABLE, or the server's refusal (UNAUTHENTICATED, ...).
  virtual Status Connect(uint32_t timeout_ms) = 0;

  // Starts one unary call. `request` and `response` must stay valid until
  // `done` ran; done runs exactly once, on a transport thread or, for a
  // failure before anything was sent, on the caller's thread before Start
  // returns. timeout_ms 0: no deadline. May block while inflight_max calls
  // are in flight (InflightGate).
  virtual void Start(Rpc rpc, const google::protobuf::Message& request,
                     google::protobuf::Message* response, uint32_t timeout_ms, Done done) = 0;

  // Opens a Subscribe stream whose first message is `open`. The transport
  // keeps `sink` until OnEnd ran. If the stream cannot start, OnEnd runs
  // (possibly before this returns) and the handle is inert.
  virtual std::shared_ptr<StreamHandle> OpenStream(const v1::SubscribeRequest& open,
                                                   std::shared_ptr<StreamSink> sink) = 0;

  // Fails every call in flight (CANCELLED), ends every stream, and returns
  // once no completion runs or will run. Later Starts fail with CANCELLED.
  virtual void Shutdown() = 0;
};

std::unique_ptr<Transport> MakeGrpcTransport(const Options& options);
std::unique_ptr<Transport> MakeRqpTransport(const Options& options);

}  // namespace ringq::client::internal
