#include <cassert>
#include <chrono>

#include "client/cpp/subscription_core.h"

namespace ringq::client {

namespace internal {

namespace {
// Wire bytes of one settle item besides its strings (field tags, ids,
// tokens): an estimate that only decides where batches split.
constexpr size_t kItemOverheadBytes = 32;
}  // namespace

SubscriptionCore::SubscriptionCore(const Options& options, SubscriptionHandlers handlers)
    : batch_items_max_(std::max<uint32_t>(options.settle_batch_items_max, 1)),
      batch_bytes_max_(options.settle_batch_bytes_max),
      handlers_(std::move(handlers)) {}

void SubscriptionCore::Attach(std::shared_ptr<StreamHandle> handle) {
  std::unique_lock lock(mu_);
  assert(handle_ == nullptr);
  // A stream that already ended keeps no handle (it would hold us in a cycle).
  if (end_started_) return;
  handle_ = std::move(handle);
  const bool cancel = cancel_requested_;
  const bool pending = !outbox_.empty() || (close_requested_ && !half_close_taken_);
  std::shared_ptr<StreamHandle> h = handle_;
  lock.unlock();
  if (h == nullptr) return;
  if (cancel) {
    h->Cancel();
  } else if (pending) {
    h->Kick();
  }
}

v1::SubscribeRequest* SubscriptionCore::BatchFor(size_t bytes) {
  if (close_requested_ || cancel_requested_ || end_started_) return nullptr;
  if (outbox_.empty() || back_items_ >= batch_items_max_ ||
      (back_items_ > 0 && back_bytes_ + bytes > batch_bytes_max_)) {
    outbox_.emplace_back();
    back_items_ = 0;
    back_bytes_ = 0;
  }
  ++back_items_;
  back_bytes_ += bytes;
  return &outbox_.back();
}

void SubscriptionCore::Added(std::unique_lock<std::mutex>& lock) {
  const bool defer = handler_thread_ == std::this_thread::get_id();
  lock.unlock();
  if (!defer) Kick();
}

void SubscriptionCore::Kick() {
  std::shared_ptr<StreamHandle> h;
  {
    std::lock_guard lock(mu_);
    h = handle_;
  }
  if (h != nullptr) h->Kick();
}

bool SubscriptionCore::Ack(uint64_t id, uint64_t lease_token, std::string result) {
  std::unique_lock lock(mu_);
  v1::SubscribeRequest* batch = BatchFor(kItemOverheadBytes + result.size());
  if (batch == nullptr) return false;
  v1::AckRequest* a = batch->add_acks();
  a->set_id(id);
  a->set_lease_token(lease_token);
  a->set_result(std::move(result));
  Added(lock);
  return true;
}

bool SubscriptionCore::Fail(uint64_t id, uint64_t lease_token, std::string error, bool no_retry,
                            uint64_t retry_delay_ms) {
  std::unique_lock lock(mu_);
  v1::SubscribeRequest* batch = BatchFor(kItemOverheadBytes + error.size());
  if (batch == nullptr) return false;
  v1::FailRequest* f = batch->add_fails();
  f->set_id(id);
  f->set_lease_token(lease_token);
  f->set_error(std::move(error));
  f->set_no_retry(no_retry);
  f->set_retry_delay_ms(retry_delay_ms);
  Added(lock);
  return true;
}

bool SubscriptionCore::Extend(uint64_t id, uint64_t lease_token, uint32_t lease_ms) {
  std::unique_lock lock(mu_);
  v1::SubscribeRequest* batch = BatchFor(kItemOverheadBytes);
  if (batch == nullptr) return false;
  v1::ExtendRequest* e = batch->add_extends();
  e->set_id(id);
  e->set_lease_token(lease_token);
  e->set_lease_ms(lease_ms);
  Added(lock);
  return true;
}

bool SubscriptionCore::AddCredits(uint32_t credits) {
  std::unique_lock lock(mu_);
  if (credits == 0) return !(close_requested_ || cancel_requested_ || end_started_);
  v1::SubscribeRequest* batch = BatchFor(kItemOverheadBytes);
  if (batch == nullptr) return false;
  // One credits field per message: sum, saturating (the server refuses
  // more than --subscribe-credits-max anyway, with a clear status).
  const uint64_t sum = uint64_t{batch->credits()} + credits;
  batch->set_credits(static_cast<uint32_t>(std::min<uint64_t>(sum, UINT32_MAX)));
  Added(lock);
  return true;
}

void SubscriptionCore::Flush() { Kick(); }

void SubscriptionCore::Close() {
  std::unique_lock lock(mu_);
  if (close_requested_ || end_started_) return;
  close_requested_ = true;
  Added(lock);
}

void SubscriptionCore::Cancel() {
  std::shared_ptr<StreamHandle> h;
  {
    std::lock_guard lock(mu_);
    cancel_requested_ = true;
    outbox_.clear();
    h = handle_;
  }
  if (h != nullptr) h->Cancel();
}

bool SubscriptionCore::ended() const {
  std::lock_guard lock(mu_);
  return ended_;
}

bool SubscriptionCore::WaitEnd(uint32_t timeout_ms, Status* status) const {
  std::unique_lock lock(mu_);
  if (!ended_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return ended_; })) {
    return false;
  }
  if (status != nullptr) *status = end_status_;
  return true;
}

bool SubscriptionCore::InHandler() const {
  std::lock_guard lock(mu_);
  return handler_thread_ == std::this_thread::get_id();
}

void SubscriptionCore::OnMessage(v1::SubscribeResponse* message) {
  {
    std::lock_guard lock(mu_);
    if (end_started_) return;
    handler_thread_ = std::this_thread::get_id();
  }
  if (message->deliveries_size() > 0 && handlers_.on_deliveries) {
    std::vector<v1::Delivery> deliveries;
    deliveries.reserve(message->deliveries_size());
    for (auto& d : *message->mutable_deliveries()) deliveries.push_back(std::move(d));
    handlers_.on_deliveries(std::move(deliveries));
  }
  if (message->results_size() > 0 && handlers_.on_results) {
    std::vector<v1::SettleResult> results;
    results.reserve(message->results_size());
    for (auto& r : *message->mutable_results()) results.push_back(std::move(r));
    handlers_.on_results(std::move(results));
  }
  bool pending;
  {
    std::lock_guard lock(mu_);
    handler_thread_ = std::thread::id();
    pending = !outbox_.empty() || (close_requested_ && !half_close_taken_);
  }
  // What the handlers settled goes out together, now.
  if (pending) Kick();
}

void SubscriptionCore::OnEnd(Status status) {
  {
    std::lock_guard lock(mu_);
    assert(!end_started_ && "OnEnd twice");
    end_started_ = true;
    outbox_.clear();
    handler_thread_ = std::this_thread::get_id();
  }
  if (handlers_.on_end) handlers_.on_end(status);
  {
    std::lock_guard lock(mu_);
    handler_thread_ = std::thread::id();
    end_status_ = std::move(status);
    ended_ = true;
    // Breaks the cycle with the transport's stream, which holds us.
    handle_.reset();
  }
  ended_cv_.notify_all();
}

StreamSink::Next SubscriptionCore::TakeOutgoing(v1::SubscribeRequest* out) {
  std::lock_guard lock(mu_);
  if (!outbox_.empty()) {
    *out = std::move(outbox_.front());
    outbox_.pop_front();
    if (outbox_.empty()) {
      back_items_ = 0;
      back_bytes_ = 0;
    }
    return Next::kMessage;
  }
  if (close_requested_ && !half_close_taken_ && !end_started_) {
    half_close_taken_ = true;
    return Next::kHalfClose;
  }
  return Next::kNothing;
}

}  // namespace internal

// ---- Subscription: the public face.

Subscription::Subscription(std::shared_ptr<internal::SubscriptionCore> core)
    : core_(std::move(core)) {}

Subscription::~Subscription() {
  // Waiting for on_end from inside a handler would wait for itself.
  assert(!core_->InHandler() && "a Subscription must not be destroyed from its own handler");
  if (!core_->ended()) {
    core_->Cancel();
    core_->WaitEnd(UINT32_MAX, nullptr);
  }
}

bool Subscription::Ack(uint64_t id, uint64_t lease_token, std::string result) {
  return core_->Ack(id, lease_token, std::move(result));
}
bool Subscription::Fail(uint64_t id, uint64_t lease_token, std::string error, bool no_retry,
                        uint64_t retry_delay_ms) {
  return core_->Fail(id, lease_token, std::move(error), no_retry, retry_delay_ms);
}
bool Subscription::Extend(uint64_t id, uint64_t lease_token, uint32_t lease_ms) {
  return core_->Extend(id, lease_token, lease_ms);
}
bool Subscription::AddCredits(uint32_t credits) { return core_->AddCredits(credits); }
void Subscription::Flush() { core_->Flush(); }
void Subscription::Close() { core_->Close(); }
void Subscription::Cancel() { core_->Cancel(); }
bool Subscription::ended() const { return core_->ended(); }
bool Subscription::WaitEnd(uint32_t timeout_ms, Status* status) const {
  return core_->WaitEnd(timeout_ms, status);
}

}  // namespace ringq::client
