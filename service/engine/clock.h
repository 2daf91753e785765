// Clock: the only source of time for the engine, injected so the scheduler
// is tested with a fake clock and no sleeping.
#pragma once

#include <chrono>
#include <cstdint>

namespace ringq::engine {

class Clock {
 public:
  virtual ~Clock() = default;
  // Epoch milliseconds (UTC). Job times shown to users use this clock.
  virtual uint64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  uint64_t NowMs() const override {
    using namespace std::chrono;
    return static_cast<uint64_t>(
        duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
  }
};

// The clock of latency metrics (push latency): monotonic nanoseconds, real
// time whatever Clock the engine runs on.
inline uint64_t MonotonicNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Test clock: moves only when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(uint64_t start_ms = 1'700'000'000'000ull) : now_ms_(start_ms) {}
  uint64_t NowMs() const override { return now_ms_; }
  void AdvanceMs(uint64_t ms) { now_ms_ += ms; }
  void SetMs(uint64_t ms) { now_ms_ = ms; }

 private:
  uint64_t now_ms_;
};

}  // namespace ringq::engine
