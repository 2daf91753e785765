#include "bench/load.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace ringq::bench {

namespace {
constexpr uint64_t kSeqBits = 40;
constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
// Unary calls carry a 30 s deadline (grpc_driver.cc): every answer arrives within it.
constexpr int kAnswerBoundMs = 40'000;

void SleepUntil(int64_t t_ns) {
  timespec ts{static_cast<time_t>(t_ns / 1'000'000'000), static_cast<long>(t_ns % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}
}  // namespace

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

bool WaitProcessed(const Ledger& ledger, uint64_t target, int64_t deadline_ns) {
  while (ledger.processed() < target) {
    if (NowNs() >= deadline_ns) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// ------------------------------------------------------------------ ClosedLoop

ClosedLoop::ClosedLoop(Config config, std::vector<Connection*> conns,
                       const std::vector<std::string>& queues, Ledger* ledger,
                       Histogram* latency)
    : cfg_(config), queues_(queues), ledger_(ledger), latency_(latency) {
  assert(!conns.empty() && !queues.empty());
  assert(cfg_.jobs_max <= ledger->capacity());
  for (Connection* c : conns) {
    if (cfg_.kind == Kind::kPipe) {
      pipes_.push_back(c->OpenPushPipe(this));
      for (uint32_t w = 0; w < cfg_.window; ++w) {
        Chain chain;
        chain.conn = c;
        chain.pipe = pipes_.back().get();
        chains_.push_back(std::move(chain));
      }
    } else {
      Chain chain;
      chain.conn = c;
      chains_.push_back(std::move(chain));
    }
  }
}

ClosedLoop::~ClosedLoop() {
  std::string ignored;
  for (auto& p : pipes_) p->Close(1000, &ignored);
}

void ClosedLoop::Run(int wait_max_ms) {
  started_ns_ = NowNs();
  {
    std::lock_guard lock(mu_);
    active_ = static_cast<uint32_t>(chains_.size());
  }
  for (uint32_t i = 0; i < chains_.size(); ++i) {
    if (!Issue(i)) EndChain();
  }
  std::unique_lock lock(mu_);
  const int64_t wait_ns = std::max<int64_t>(0, cfg_.deadline_ns - NowNs()) +
                          int64_t{wait_max_ms} * 1'000'000;
  if (!cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [this] { return active_ == 0; })) {
    // Answers are late: end the streams (their pushes are answered with errors).
    lock.unlock();
    for (auto& p : pipes_) {
      std::string e;
      if (!p->Close(1000, &e) && pipe_error_.empty()) pipe_error_ = e;
    }
    lock.lock();
    if (!cv_.wait_for(lock, std::chrono::milliseconds(kAnswerBoundMs),
                      [this] { return active_ == 0; })) {
      std::fprintf(stderr, "ringq-bench: BUG: pushes still unanswered after their deadline\n");
      std::abort();
    }
  }
  lock.unlock();
  for (auto& p : pipes_) {
    std::string e;
    if (!p->Close(10'000, &e) && pipe_error_.empty()) pipe_error_ = e;
  }
}

bool ClosedLoop::Issue(uint32_t i) {
  Chain& c = chains_[i];
  const int64_t now = NowNs();
  if (now >= cfg_.deadline_ns) return false;
  const uint64_t want = cfg_.kind == Kind::kBatch ? cfg_.batch : 1;
  const uint64_t first = next_seq_.fetch_add(want, std::memory_order_relaxed);
  if (first >= cfg_.jobs_max) return false;
  const uint64_t n = std::min(want, cfg_.jobs_max - first);
  c.first = first;
  c.n = n;
  c.start_ns = now;
  c.bufs.resize(n);
  c.seeds.resize(n);
  for (uint64_t k = 0; k < n; ++k) {
    ledger_->MakePayload(first + k, now, &c.bufs[k]);
    c.seeds[k] = JobSeed{QueueOf(queues_, first + k), c.bufs[k]};
  }
  const uint64_t tag = (uint64_t{i} << kSeqBits) | first;
  switch (cfg_.kind) {
    case Kind::kUnary: c.conn->Push(c.seeds[0], tag, this); break;
    case Kind::kPipe: c.pipe->Push(c.seeds[0], tag); break;
    case Kind::kBatch: c.conn->PushBatch(c.seeds, tag, this); break;
  }
  return true;
}

void ClosedLoop::OnPushed(uint64_t tag, const PushOutcome& o) {
  const uint32_t i = static_cast<uint32_t>(tag >> kSeqBits);
  const int64_t now = NowNs();
  latency_->Record(uint64_t(now - chains_[i].start_ns));
  ledger_->OnPushed(tag & kSeqMask, o);
  Answered(i, o.ok);
}

void ClosedLoop::OnBatchPushed(uint64_t tag, std::span<const PushOutcome> outcomes) {
  const uint32_t i = static_cast<uint32_t>(tag >> kSeqBits);
  Chain& c = chains_[i];
  latency_->Record(uint64_t(NowNs() - c.start_ns));
  bool any_ok = false;
  for (size_t k = 0; k < outcomes.size(); ++k) {
    ledger_->OnPushed(c.first + k, outcomes[k]);
    any_ok |= outcomes[k].ok;
  }
  Answered(i, any_ok);
}

void ClosedLoop::Answered(uint32_t i, bool ok) {
  Chain& c = chains_[i];
  c.consecutive_errors = ok ? 0 : c.consecutive_errors + 1;
  if (c.consecutive_errors >= kChainErrorsMax || !Issue(i)) EndChain();
}

void ClosedLoop::EndChain() {
  std::lock_guard lock(mu_);
  assert(active_ > 0);
  if (--active_ == 0) {
    ended_ns_ = NowNs();
    cv_.notify_all();
  }
}

// ------------------------------------------------------------------ OpenLoop

OpenLoop::OpenLoop(Config config, std::vector<Connection*> conns,
                   const std::vector<std::string>& queues, Ledger* ledger,
                   Histogram* push_latency, Histogram* send_lag)
    : cfg_(config),
      conns_(std::move(conns)),
      queues_(queues),
      ledger_(ledger),
      push_latency_(push_latency),
      send_lag_(send_lag) {
  assert(cfg_.rate > 0 && cfg_.jobs <= ledger->capacity() && !conns_.empty());
}

void OpenLoop::Run(int wait_max_ms) {
  t0_ = NowNs() + 2'000'000;
  std::string buf;
  for (uint64_t i = 0; i < cfg_.jobs; ++i) {
    const int64_t due = Intended(i);
    SleepUntil(due);
    // Bounded in flight: past the bound the generator waits, and the wait
    // counts in the latency of every push sent late (measured from `due`).
    while (i - answered_.load(std::memory_order_acquire) >= cfg_.in_flight_max) {
      if (NowNs() > due + int64_t{kAnswerBoundMs} * 1'000'000) break;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    send_lag_->Record(uint64_t(std::max<int64_t>(0, NowNs() - due)));
    ledger_->MakePayload(i, due, &buf);
    conns_[i % conns_.size()]->Push(JobSeed{QueueOf(queues_, i), buf}, i, this);
    issued_ = i + 1;
  }
  const int64_t soft = NowNs() + int64_t{wait_max_ms} * 1'000'000;
  const int64_t hard = soft + int64_t{kAnswerBoundMs} * 1'000'000;
  while (answered_.load(std::memory_order_acquire) < issued_) {
    if (NowNs() > hard) {
      std::fprintf(stderr, "ringq-bench: BUG: pushes still unanswered after their deadline\n");
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ended_ns_ = NowNs();
}

void OpenLoop::OnPushed(uint64_t tag, const PushOutcome& o) {
  push_latency_->Record(uint64_t(std::max<int64_t>(0, NowNs() - Intended(tag))));
  ledger_->OnPushed(tag, o);
  answered_.fetch_add(1, std::memory_order_acq_rel);
}

// ------------------------------------------------------------------ WorkerPool

WorkerPool::WorkerPool(std::vector<Connection*> conns, const std::vector<std::string>& queues,
                       uint32_t streams_min, uint32_t credits_total, uint32_t credits_max,
                       DeliverySink* sink) {
  constexpr size_t kQueuesPerStream = 16;  // SubscribeOpen allows 1..16
  const size_t chunks = (queues.size() + kQueuesPerStream - 1) / kQueuesPerStream;
  const size_t streams = std::max<size_t>(chunks, streams_min);
  const uint32_t credits =
      std::clamp<uint32_t>(credits_total / static_cast<uint32_t>(streams), 16, credits_max);
  for (size_t s = 0; s < streams; ++s) {
    const size_t chunk = s % chunks;
    std::vector<std::string> qs(
        queues.begin() + chunk * kQueuesPerStream,
        queues.begin() + std::min(queues.size(), (chunk + 1) * kQueuesPerStream));
    subs_.push_back(conns[s % conns.size()]->Subscribe(qs, credits, sink));
  }
}

uint64_t WorkerPool::Close(int timeout_ms, std::string* first_error) {
  uint64_t errors = 0;
  for (auto& s : subs_) {
    errors += s->Close(timeout_ms);
    const std::string e = s->error();
    if (!e.empty() && first_error->empty()) *first_error = e;
  }
  subs_.clear();
  return errors;
}

}  // namespace ringq::bench
