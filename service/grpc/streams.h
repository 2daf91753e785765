// Factories of the streaming calls (internal to service/grpc).
#pragma once

#include "ringq/v1/queue.grpc.pb.h"
#include "service/engine/engine.h"
#include "service/grpc/queue_service.h"

#include <memory>
#include <mutex>
#include <unordered_map>

namespace ringq::grpcsvc {

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

// `probe` (nullptr: not counted): the call, its messages and its status.
grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* NewPushStream(
    engine::Engine& engine, const StreamLimits& limits, GrpcProbe* probe);

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* NewSubscribe(
    engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry, GrpcProbe* probe);

}  // namespace ringq::grpcsvc
