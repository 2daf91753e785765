#include "client/cpp/inflight_gate.h"

#include <cassert>
#include <vector>

namespace ringq::client::internal {

namespace {
thread_local int callback_depth = 0;
}  // namespace

bool InCallbackThread() { return callback_depth > 0; }
CallbackThreadScope::CallbackThreadScope() { ++callback_depth; }
CallbackThreadScope::~CallbackThreadScope() { --callback_depth; }

void InflightGate::Leave() {
  std::unique_lock lock(mu_);
  assert(inflight_ > 0);
  --inflight_;
  RunQueued(lock, /*wake_all=*/false);
}

void InflightGate::SetLimit(uint32_t limit) {
  std::unique_lock lock(mu_);
  limit_ = limit < 1 ? 1 : limit;
  RunQueued(lock, /*wake_all=*/true);
}

// Starts queued calls while slots are free, then wakes blocked callers if
// any slot is left. Called with the lock held; returns with it released.
void InflightGate::RunQueued(std::unique_lock<std::mutex>& lock, bool wake_all) {
  std::vector<std::function<void(bool)>> ready;
  while (!closed_ && !queued_.empty() && inflight_ < limit_) {
    ready.push_back(std::move(queued_.front()));
    queued_.pop_front();
    ++inflight_;
  }
  const bool wake = inflight_ < limit_ && queued_.empty();
  lock.unlock();
  if (wake) {
    if (wake_all) {
      slot_freed_.notify_all();
    } else {
      slot_freed_.notify_one();
    }
  }
  for (auto& start : ready) start(true);
}

void InflightGate::Close() {
  std::deque<std::function<void(bool)>> failed;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    failed.swap(queued_);
  }
  slot_freed_.notify_all();
  for (auto& start : failed) start(false);
}

}  // namespace ringq::client::internal
