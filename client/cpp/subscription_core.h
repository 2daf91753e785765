// SubscriptionCore: the Subscribe logic both transports share (internal to
// client/cpp; the public face is Subscription in client.h). It queues the
// worker's settles and credits into outgoing batches, hands them to the
// transport when it pulls (StreamSink::TakeOutgoing), runs the handlers, and
// records the end.
//
// Invariants: every outgoing batch holds 1..settle_batch_items_max items
// (credits count as one item), and its bytes exceed settle_batch_bytes_max
// only when it holds a single item; the half-close is taken after every
// batch and at most once; on_end runs once and nothing runs after it.
//
// Thread: any; one mutex, never held while calling handlers or the
// transport. Lifetime: shared by the Subscription and the transport's
// stream (which drops it after OnEnd).
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "client/cpp/client.h"
#include "client/cpp/transport.h"

namespace ringq::client::internal {

class SubscriptionCore final : public StreamSink {
 public:
  SubscriptionCore(const Options& options, SubscriptionHandlers handlers);

  // The transport's stream; Kicks or cancels what was requested before it
  // was attached.
  void Attach(std::shared_ptr<StreamHandle> handle);

  bool Ack(uint64_t id, uint64_t lease_token, std::string result);
  bool Fail(uint64_t id, uint64_t lease_token, std::string error, bool no_retry,
            uint64_t retry_delay_ms);
  bool Extend(uint64_t id, uint64_t lease_token, uint32_t lease_ms);
  bool AddCredits(uint32_t credits);
  void Flush();
  void Close();
  void Cancel();
  bool ended() const;
  bool WaitEnd(uint32_t timeout_ms, Status* status) const;
  // True while a handler of this subscription runs on the calling thread.
  bool InHandler() const;

  // StreamSink
  void OnMessage(v1::SubscribeResponse* message) override;
  void OnEnd(Status status) override;
  Next TakeOutgoing(v1::SubscribeRequest* out) override;

 private:
  // The batch to add an item of `bytes` to (a new one when the last is
  // full), or nullptr when closing or ended. Requires mu_.
  v1::SubscribeRequest* BatchFor(size_t bytes);
  // After adding: kicks the transport, unless a handler runs on this thread
  // (OnMessage kicks when it returns).
  void Added(std::unique_lock<std::mutex>& lock);
  void Kick();

  const uint32_t batch_items_max_;
  const uint32_t batch_bytes_max_;
  const SubscriptionHandlers handlers_;

  mutable std::mutex mu_;
  mutable std::condition_variable ended_cv_;
  std::deque<v1::SubscribeRequest> outbox_;
  uint32_t back_items_ = 0;  // of outbox_.back()
  size_t back_bytes_ = 0;
  bool close_requested_ = false;
  bool half_close_taken_ = false;
  bool cancel_requested_ = false;
  bool end_started_ = false;  // OnEnd began: settles are refused
  bool ended_ = false;        // on_end returned
  Status end_status_;
  std::thread::id handler_thread_;  // set while a handler runs
  std::shared_ptr<StreamHandle> handle_;
};

}  // namespace ringq::client::internal
