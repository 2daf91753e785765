// ringq::client::Client: one C++ API over both of ringq's protocols, gRPC
// (service ringq.v1.Queue) and RQP (proto/PROTOCOL.md), chosen by
// Options::protocol. Requests and responses are the ringq.v1 messages of
// proto/ringq/v1/queue.proto; semantics, validation and durability are the
// server's and identical on both wires (an answer means durable under
// --durability=sync).
//
// Three layers:
//   * async, pipelined: Push(request, done) etc. start the call and return;
//     `done(Status, Response)` runs once when the answer arrives. Many calls
//     may be in flight: at most Options::inflight_max (RQP: and the server's
//     inflight_max); past it the caller blocks until one completes, except
//     on a completion thread, where the call is queued instead.
//   * blocking: Push(request, &response) waits for the answer.
//   * Subscribe: a credit-based worker stream (Subscription below).
//
// Threads: every method of Client is safe from any thread. Callbacks run on
// the transport's threads (gRPC's callback threads; the RQP connection's
// reader thread), never under a client lock; keep them short. A callback
// may start more async calls, and may use a Subscription, but must not make
// a blocking call (that asserts: it could wait for its own thread) nor
// destroy the Client or a Subscription.
//
// Lifetime: destroying the Client fails its calls in flight with CANCELLED,
// ends its subscriptions (on_end CANCELLED) and returns once no callback
// runs. A Subscription may outlive its Client (it is then ended).
//
// Connection loss: every call in flight fails with UNAVAILABLE, every
// subscription ends with UNAVAILABLE (its un-settled jobs go back to their
// queues on the server). The next call connects again (gRPC: the channel
// reconnects; RQP: a new connection and handshake).
//
// Deadlines: each unary call gets Options::call_timeout_ms (a Fetch also its
// wait_ms); streams have none.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/cpp/options.h"
#include "client/cpp/status.h"
#include "ringq/v1/queue.pb.h"

namespace ringq::client {

namespace internal {
class Transport;
class SubscriptionCore;
enum class Rpc : uint8_t;
}  // namespace internal

// What a Subscription calls, on a transport thread, one call at a time for a
// given subscription (never concurrently), in stream order. Each may be empty.
struct SubscriptionHandlers {
  // Jobs leased to this stream: at most the granted credits are un-settled.
  std::function<void(std::vector<v1::Delivery>)> on_deliveries;
  // Answers to Ack/Fail/Extend, in the order they were issued. A stale lease
  // token is a per-item error (FAILED_PRECONDITION), not a stream error.
  std::function<void(std::vector<v1::SettleResult>)> on_results;
  // Exactly once, last: OK after Close() once the server answered every
  // settle it received; else why the stream ended (INVALID_ARGUMENT for a bad
  // open, UNAVAILABLE on connection loss or server shutdown, CANCELLED after
  // Cancel()).
  std::function<void(Status)> on_end;
};

// A worker's stream. The server pushes at most `credits` un-settled jobs;
// each Ack or Fail returns one credit; AddCredits grants more.
//
// Batching: Ack, Fail, Extend and AddCredits are queued and coalesced into
// one stream message (at most Options::settle_batch_items_max items). Those
// issued inside a handler of this subscription go out when the handler
// returns (or at Flush()); those issued elsewhere go out at once, and while
// a message is being written the next ones accumulate behind it.
//
// Thread: every method is safe from any thread, handlers included, except
// the destructor (never from a handler of this subscription).
// Lifetime: the destructor cancels a stream that has not ended (the server
// releases its un-settled jobs) and waits for on_end.
class Subscription {
 public:
  explicit Subscription(std::shared_ptr<internal::SubscriptionCore> core);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Each returns false, sending nothing, once Close() or Cancel() was called
  // or the stream ended.
  bool Ack(uint64_t id, uint64_t lease_token, std::string result = {});
  bool Fail(uint64_t id, uint64_t lease_token, std::string error = {}, bool no_retry = false,
            uint64_t retry_delay_ms = 0);
  bool Extend(uint64_t id, uint64_t lease_token, uint32_t lease_ms);
  bool AddCredits(uint32_t credits);
  // Sends what is queued now (also from inside a handler).
  void Flush();
  // Half-close: sends what is queued, then tells the server no more is
  // coming. The server delivers nothing more, answers the settles it got,
  // releases un-settled jobs to their queues, and ends: on_end(OK) follows.
  void Close();
  // Ends the stream at once; settles not yet answered may or may not apply.
  void Cancel();

  bool ended() const;
  // Waits at most timeout_ms for on_end to have returned; true if it did,
  // with its status in *status.
  bool WaitEnd(uint32_t timeout_ms, Status* status = nullptr) const;

 private:
  std::shared_ptr<internal::SubscriptionCore> core_;
};

class Client {
 public:
  template <class Response>
  using Callback = std::function<void(Status, Response)>;

  // Connects within options.connect_timeout_ms (RQP: through the handshake).
  // UNAVAILABLE naming the server when it cannot; the server's refusal
  // otherwise (e.g. UNAUTHENTICATED).
  static Status Connect(const Options& options, std::unique_ptr<Client>* client);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Options& options() const { return options_; }

  // ---- Async. `done` runs exactly once; for a failure before anything was
  // sent (client destroyed, cannot connect, frame too large) it may run
  // before the call returns, on the caller's thread.
  void Push(v1::PushRequest request, Callback<v1::PushResponse> done);
  void PushBatch(v1::PushBatchRequest request, Callback<v1::PushBatchResponse> done);
  void Fetch(v1::FetchRequest request, Callback<v1::FetchResponse> done);
  void Ack(v1::AckRequest request, Callback<v1::AckResponse> done);
  void Fail(v1::FailRequest request, Callback<v1::FailResponse> done);
  void Extend(v1::ExtendRequest request, Callback<v1::ExtendResponse> done);
  void Stats(v1::StatsRequest request, Callback<v1::StatsResponse> done);
  void GetJob(v1::GetJobRequest request, Callback<v1::Job> done);
  void Cancel(v1::CancelRequest request, Callback<v1::CancelResponse> done);
  void ListQueues(v1::ListQueuesRequest request, Callback<v1::ListQueuesResponse> done);
  void Pause(v1::QueueRequest request, Callback<v1::PauseResponse> done);
  void Resume(v1::QueueRequest request, Callback<v1::ResumeResponse> done);
  void ListDead(v1::ListDeadRequest request, Callback<v1::ListDeadResponse> done);
  void RetryDead(v1::DeadSelector request, Callback<v1::RetryDeadResponse> done);
  void PurgeDead(v1::DeadSelector request, Callback<v1::PurgeDeadResponse> done);

  // ---- Blocking: wait for the answer. Never from a callback or handler.
  Status Push(const v1::PushRequest& request, v1::PushResponse* response);
  Status PushBatch(const v1::PushBatchRequest& request, v1::PushBatchResponse* response);
  Status Fetch(const v1::FetchRequest& request, v1::FetchResponse* response);
  Status Ack(const v1::AckRequest& request, v1::AckResponse* response);
  Status Fail(const v1::FailRequest& request, v1::FailResponse* response);
  Status Extend(const v1::ExtendRequest& request, v1::ExtendResponse* response);
  Status Stats(const v1::StatsRequest& request, v1::StatsResponse* response);
  Status GetJob(const v1::GetJobRequest& request, v1::Job* response);
  Status Cancel(const v1::CancelRequest& request, v1::CancelResponse* response);
  Status ListQueues(const v1::ListQueuesRequest& request, v1::ListQueuesResponse* response);
  Status Pause(const v1::QueueRequest& request, v1::PauseResponse* response);
  Status Resume(const v1::QueueRequest& request, v1::ResumeResponse* response);
  Status ListDead(const v1::ListDeadRequest& request, v1::ListDeadResponse* response);
  Status RetryDead(const v1::DeadSelector& request, v1::RetryDeadResponse* response);
  Status PurgeDead(const v1::DeadSelector& request, v1::PurgeDeadResponse* response);

  // ---- Subscribe. Opens the stream at once; an open the server refuses
  // (no queues, bad credits) ends it with on_end(INVALID_ARGUMENT).
  // Handlers may run before this returns: a handler that settles through
  // the Subscription reads it from a std::atomic the caller stores after
  // the call (client/cpp/README.md shows the pattern).
  std::unique_ptr<Subscription> Subscribe(const v1::SubscribeOpen& open,
                                          SubscriptionHandlers handlers);

 private:
  Client(Options options, std::unique_ptr<internal::Transport> transport);

  template <class Request, class Response>
  void CallAsync(internal::Rpc rpc, Request request, Callback<Response> done);
  Status CallBlocking(internal::Rpc rpc, const google::protobuf::Message& request,
                      google::protobuf::Message* response);

  const Options options_;
  std::unique_ptr<internal::Transport> transport_;
};

}  // namespace ringq::client
