// InflightGate: the bound on calls in flight that both transports apply
// (Options::inflight_max; RQP also the server's inflight_max, open streams
// included). Internal to client/cpp.
//
// Invariant: inflight() <= limit(), except after SetLimit lowered the limit
// (no new entry until inflight() < limit()).
// An ordinary thread that finds the gate full blocks until a slot frees. A
// completion-callback thread (InCallbackThread()) never blocks: its start is
// queued, FIFO, and run by the Leave() that frees a slot (on that thread).
// Close() fails queued and blocked starts with start(false); later Enters
// too.
//
// Thread: any; one mutex. `start` never runs under it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <utility>

#include "client/cpp/transport.h"

namespace ringq::client::internal {

class InflightGate {
 public:
  explicit InflightGate(uint32_t limit) : limit_(limit < 1 ? 1 : limit) {}

  // Runs start(true) holding one slot (the caller then owes one Leave), or
  // start(false) holding none when the gate is closed.
  template <class Start>
  void Enter(Start&& start) {
    std::unique_lock lock(mu_);
    if (!closed_ && (inflight_ >= limit_ || !queued_.empty())) {
      if (InCallbackThread()) {
        queued_.emplace_back(std::forward<Start>(start));
        return;
      }
      slot_freed_.wait(lock, [&] { return closed_ || (inflight_ < limit_ && queued_.empty()); });
    }
    if (closed_) {
      lock.unlock();
      start(false);
      return;
    }
    ++inflight_;
    lock.unlock();
    start(true);
  }

  // Frees a slot, or hands it to the first queued start.
  void Leave();
  void SetLimit(uint32_t limit);
  void Close();

  uint32_t inflight() const {
    std::lock_guard lock(mu_);
    return inflight_;
  }
  uint32_t limit() const {
    std::lock_guard lock(mu_);
    return limit_;
  }

 private:
  void RunQueued(std::unique_lock<std::mutex>& lock, bool wake_all);

  mutable std::mutex mu_;
  std::condition_variable slot_freed_;
  uint32_t limit_;
  uint32_t inflight_ = 0;
  bool closed_ = false;
  std::deque<std::function<void(bool)>> queued_;
};

}  // namespace ringq::client::internal
