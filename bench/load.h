// The load generators of ringq-bench, protocol-independent (they speak to a
// Driver only).
//
// ClosedLoop: "chains" that each keep one operation in flight and start the
// next when it is answered, until a job budget or a deadline is reached:
//   unary   one chain per connection (one push in flight per connection),
//   pipe    `window` chains sharing one push stream per connection,
//   batch   one chain per connection, each operation a batch of `batch` jobs.
// Its latencies are service times (answer - actual send): closed loops hide
// queueing (coordinated omission) and are reported as such.
//
// OpenLoop: pushes at a fixed rate on a precomputed schedule; each latency is
// measured from the INTENDED send time, so a stall of the server (or of the
// generator) counts in full for every push that should have been sent during
// it (coordinated-omission correction, as in wrk2 / HdrHistogram).
//
// WorkerPool: subscriptions over a set of queues (at most 16 per stream)
// with a credit budget split between them; the Ledger is their sink.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/driver.h"
#include "bench/histogram.h"
#include "bench/ledger.h"

namespace ringq::bench {

int64_t NowNs();

// Queue of sequence number `seq` among `queues` (round robin).
inline const std::string& QueueOf(const std::vector<std::string>& queues, uint64_t seq) {
  return queues[seq % queues.size()];
}

class ClosedLoop final : public PushSink, public BatchSink {
 public:
  enum class Kind { kUnary, kPipe, kBatch };
  struct Config {
    Kind kind = Kind::kUnary;
    uint32_t window = 1;  // kPipe: pushes in flight per connection
    uint32_t batch = 1;   // kBatch: jobs per request
    uint64_t jobs_max = 0;
    int64_t deadline_ns = 0;
  };

  ClosedLoop(Config config, std::vector<Connection*> conns, const std::vector<std::string>& queues,
             Ledger* ledger, Histogram* latency);
  ~ClosedLoop() override;

  // Runs to the budget or deadline; returns when every chain has ended.
  // wait_max_ms bounds the wait for the last answers.
  void Run(int wait_max_ms);
  uint64_t issued() const { return std::min(next_seq_.load(), cfg_.jobs_max); }
  int64_t started_ns() const { return started_ns_; }
  int64_t ended_ns() const { return ended_ns_; }
  std::string pipe_error() const { return pipe_error_; }

  void OnPushed(uint64_t tag, const PushOutcome& o) override;
  void OnBatchPushed(uint64_t tag, std::span<const PushOutcome> outcomes) override;

 private:
  struct Chain {
    Connection* conn = nullptr;
    PushPipe* pipe = nullptr;
    int64_t start_ns = 0;
    uint64_t first = 0, n = 0;
    uint32_t consecutive_errors = 0;
    std::vector<std::string> bufs;
    std::vector<JobSeed> seeds;
  };
  static constexpr uint32_t kChainErrorsMax = 100;  // a chain stops after this many in a row

  bool Issue(uint32_t chain_index);
  void Answered(uint32_t chain_index, bool any_ok);
  void EndChain();

  const Config cfg_;
  const std::vector<std::string>& queues_;
  Ledger* const ledger_;
  Histogram* const latency_;
  std::vector<std::unique_ptr<PushPipe>> pipes_;
  std::vector<Chain> chains_;
  std::atomic<uint64_t> next_seq_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t active_ = 0;
  int64_t started_ns_ = 0, ended_ns_ = 0;
  std::string pipe_error_;
};

class OpenLoop final : public PushSink {
 public:
  struct Config {
    uint32_t rate = 5000;   // pushes per second
    uint64_t jobs = 0;      // rate * seconds
    uint32_t in_flight_max = 100'000;
  };
  OpenLoop(Config config, std::vector<Connection*> conns, const std::vector<std::string>& queues,
           Ledger* ledger, Histogram* push_latency, Histogram* send_lag);
  // Sends on schedule and waits (at most wait_max_ms past the schedule) for the answers.
  void Run(int wait_max_ms);
  void OnPushed(uint64_t tag, const PushOutcome& o) override;
  uint64_t issued() const { return issued_; }
  int64_t started_ns() const { return t0_; }
  int64_t ended_ns() const { return ended_ns_; }

 private:
  int64_t Intended(uint64_t i) const {
    return t0_ + static_cast<int64_t>((__int128)i * 1'000'000'000 / cfg_.rate);
  }
  const Config cfg_;
  std::vector<Connection*> conns_;
  const std::vector<std::string>& queues_;
  Ledger* const ledger_;
  Histogram* const push_latency_;
  Histogram* const send_lag_;
  int64_t t0_ = 0, ended_ns_ = 0;
  uint64_t issued_ = 0;
  std::atomic<uint64_t> answered_{0};
};

class WorkerPool {
 public:
  // Opens ceil(queues/16) streams, at least `streams_min`, round robin over conns.
  WorkerPool(std::vector<Connection*> conns, const std::vector<std::string>& queues,
             uint32_t streams_min, uint32_t credits_total, uint32_t credits_max,
             DeliverySink* sink);
  // Closes every stream; returns settle errors plus streams that ended early.
  uint64_t Close(int timeout_ms, std::string* first_error);
  size_t streams() const { return subs_.size(); }

 private:
  std::vector<std::unique_ptr<Subscription>> subs_;
};

// Waits until ledger->processed() reaches `target`, or deadline. True if reached.
bool WaitProcessed(const Ledger& ledger, uint64_t target, int64_t deadline_ns);

}  // namespace ringq::bench
