// Long-lived calls (Subscribe streams of either transport) registered so
// that a graceful shutdown ends them at once instead of waiting out the grace
// period.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace ringq::api {

// A long-lived call that can be ended early for a graceful shutdown.
class Drainable {
 public:
  virtual ~Drainable() = default;
  virtual void Drain() = 0;  // any thread; ends the call with UNAVAILABLE
  // Subscribe credits granted and not used yet (metrics); 0 for other calls.
  virtual int64_t credits() const { return 0; }
};

// The live long-lived calls, so that shutdown ends them at once instead of
// waiting out the grace period.
class StreamRegistry {
 public:
  // False when draining already: the caller ends the call at once.
  bool Add(const std::shared_ptr<Drainable>& call) {
    std::lock_guard lock(mu_);
    if (draining_) return false;
    live_[call.get()] = call;
    return true;
  }
  void Remove(Drainable* call) {
    std::lock_guard lock(mu_);
    live_.erase(call);
  }
  // Sum of credits() over the live calls (for the scrape).
  int64_t SumCredits() {
    std::lock_guard lock(mu_);
    int64_t sum = 0;
    for (auto& [p, weak] : live_) {
      if (auto c = weak.lock()) sum += c->credits();
    }
    return sum;
  }
  void DrainAll() {
    std::vector<std::shared_ptr<Drainable>> calls;
    {
      std::lock_guard lock(mu_);
      draining_ = true;
      for (auto& [p, weak] : live_) {
        if (auto c = weak.lock()) calls.push_back(std::move(c));
      }
    }
    for (auto& c : calls) c->Drain();
  }

 private:
  std::mutex mu_;
  bool draining_ = false;
  std::unordered_map<Drainable*, std::weak_ptr<Drainable>> live_;
};

}  // namespace ringq::api
