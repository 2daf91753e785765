// Subscription: the worker stream, credit-based (DESIGN.md, delivery
// semantics), independent of the transport. gRPC's Subscribe reactor
// (service/grpc/subscribe.cc) and RQP's SUBSCRIBE_* frames (service/rqp) are
// thin sinks around it.
//
// It is an engine Consumer registered with every shard that owns one of its
// queues. Credits are one atomic counter shared by those shards: a shard
// takes credits (Acquire) before leasing jobs to the stream, so the stream
// never holds more un-acked deliveries than the worker granted. Each ack or
// fail of a job delivered on this stream gives its credit back at once;
// `credits` messages add more, up to --subscribe-credits-max in total
// (granted and outstanding).
//
// Deliveries and settle results accumulate in one pending response and go
// out as one message per write (one write in flight): under load a message
// carries many, a lone job goes at once.
//
// Bounds: deliveries pending <= credits; settle results pending <=
// settle_pending_max (past it the stream is not read until the worker reads).
//
// End: when the worker half-closes, cancels or a write fails, the consumer is
// closed and removed from its shards, and every job leased on this stream and
// not settled is released back to its queue (counted as an attempt if it was
// handed to the transport).
//
// Threads: the transport calls On* from its threads, shards call the Consumer
// methods from theirs; all state is atomic or under mu_. No sink call is made
// after Finish. Lifetime: shared by the transport, the shards' consumer lists
// and the tasks in flight (shared_ptr).
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringq/v1/queue.pb.h"
#include "service/api/streams.h"
#include "service/engine/consumer.h"
#include "service/engine/engine.h"

namespace ringq::api {

// The transport side of one subscription.
class SubscriptionSink {
 public:
  virtual ~SubscriptionSink() = default;
  // Sends `msg`, which stays valid until OnWriteDone. One write at a time.
  // Returns true when the write is complete already (the transport copied
  // the message): the core then goes on without waiting for OnWriteDone.
  virtual bool StartWrite(const v1::SubscribeResponse& msg) = 0;
  // Asks for the next client message (gRPC); a transport whose messages
  // arrive unasked (RQP) ignores it.
  virtual void StartRead() = 0;
  // Ends the stream. Called once, with no write in flight; the last sink call.
  virtual void Finish(const engine::Status& status) = 0;
};

class Subscription final : public engine::Consumer,
                           public Drainable,
                           public std::enable_shared_from_this<Subscription> {
 public:
  // `sink` must stay valid until its Finish.
  Subscription(engine::Engine& engine, uint32_t settle_pending_max, StreamRegistry& registry,
               SubscriptionSink* sink);

  // Registers for shutdown and asks for the first message.
  void Begin();

  // Transport: a client message. The first must carry `open`.
  void OnRead(const v1::SubscribeRequest& in);
  // Transport: the worker half-closed (gRPC read end, RQP SUBSCRIBE_CLOSE).
  void OnReadEof();
  // Transport: the write started by StartWrite (returning false) ended.
  void OnWriteDone(bool ok);
  // Transport: the call or connection is gone.
  void OnCancel() { Close(engine::Cancelled("the client went away")); }
  // Ends the stream once (no more deliveries, consumer removed, unsettled
  // jobs released) and finishes the sink after the write in flight.
  void Close(engine::Status status);

  bool finished() const;

  // Drainable
  void Drain() override { Close(engine::Unavailable("server is shutting down")); }
  int64_t credits() const override { return credits_.load(std::memory_order_relaxed); }

  // engine::Consumer
  uint32_t Acquire(uint32_t want) override;
  void Release(uint32_t n) override { credits_.fetch_add(n, std::memory_order_acq_rel); }
  void Deliver(std::vector<engine::Delivery>&& batch) override;
  void Starved(uint32_t shard) override;
  bool Closed() const override { return closed_.load(std::memory_order_acquire); }

 private:
  struct Outstanding {
    uint64_t token;
    bool sent;  // handed to the transport
  };

  size_t PendingSettles() const { return settles_in_flight_ + next_.results_size(); }
  engine::Status HandleOpen(const v1::SubscribeRequest& in);
  engine::Status HandleMessage(const v1::SubscribeRequest& in);
  void PostSettles(const v1::SubscribeRequest& in);
  void SettleDone(std::vector<v1::SettleResult> results);
  void MaybeWrite(std::unique_lock<std::mutex>& lock);
  void KickStarved();
  void ReleaseJobs(std::vector<std::pair<uint64_t, uint64_t>> jobs, bool attempted);

  engine::Engine& engine_;
  const uint32_t settle_pending_max_;
  StreamRegistry& registry_;
  SubscriptionSink* const sink_;
  bool opened_ = false;  // reader only
  std::map<uint32_t, std::vector<std::string>> queues_by_shard_;  // fixed after open

  std::atomic<int64_t> credits_{0};
  std::atomic<bool> closed_{false};
  std::array<std::atomic<bool>, engine::kShardsMax> starved_{};

  mutable std::mutex mu_;
  v1::SubscribeResponse next_;  // accumulating
  v1::SubscribeResponse out_;   // owned by the write in flight
  std::unordered_map<uint64_t, Outstanding> outstanding_;
  size_t settles_in_flight_ = 0;
  bool writing_ = false;
  bool read_paused_ = false;
  bool read_eof_ = false;
  bool finished_ = false;
  bool finish_pending_ = false;
  engine::Status finish_status_;
};

}  // namespace ringq::api
