// Metric cells: the few primitives every probe is built from.
//
// The hot path writes cells; only the scrape reads them. Each cell is one
// relaxed atomic, so writing never takes a lock and never waits for a reader.
//
//   Cell            one writer thread (a shard), any reader. Add() is a plain
//                   load + store (no locked instruction): single-writer only.
//   SharedCounter   any number of writers: fetch_add on a per-thread stripe,
//                   summed by the reader. For the gRPC threads.
//   Histogram       one writer; fixed bucket layout (HistogramLayout), values
//                   in integer raw units (ns, ms, records) and a divisor to the
//                   exposed unit (seconds), so no atomic double is needed.
//   LabelBudget     bounds label cardinality: the first `max` values get their
//                   own label, the rest fold into "_other".
//
// A scrape reads each cell at some recent value; cells are not read as one
// consistent set (a histogram's count is derived from its buckets, so count
// and buckets always agree; its sum may lag by the observations in flight).
//
// Thread: writers as stated per type; readers any thread.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ringq::metrics {

// Folded label value: what a queue gets once the LabelBudget is spent.
inline constexpr std::string_view kOtherLabel = "_other";

class Cell {
 public:
  // Single writer only: a second writer would lose increments.
  void Add(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void Set(uint64_t v) { v_.store(v, std::memory_order_relaxed); }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Counters with many writers: each thread adds to its own stripe (assigned
// round robin on first use), so two threads share a cache line only when
// there are more than kStripes of them.
template <size_t N>
class SharedCounters {
 public:
  static constexpr size_t kStripes = 8;

  void Add(size_t index, uint64_t n = 1) {
    stripes_[StripeOfThisThread()].v[index].fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t Get(size_t index) const {
    uint64_t sum = 0;
    for (const auto& s : stripes_) sum += s.v[index].load(std::memory_order_relaxed);
    return sum;
  }
  static constexpr size_t size() { return N; }

 private:
  struct alignas(64) Stripe {
    std::array<std::atomic<uint64_t>, N> v{};
  };
  static size_t StripeOfThisThread() {
    static std::atomic<size_t> next{0};
    thread_local const size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
    return mine;
  }
  std::array<Stripe, kStripes> stripes_{};
};

// Fixed upper bounds (ascending, raw units) and the factor from raw units to
// the exposed unit. The +Inf bucket is implicit.
struct HistogramLayout {
  std::span<const uint64_t> bounds;
  double divisor;  // exposed = raw / divisor (1e9: ns to seconds); division rounds exactly
};

inline constexpr size_t kBucketsMax = 32;  // bounds per layout, +Inf not counted

// Accumulated state of one or more histograms of the same layout.
struct HistogramData {
  std::vector<uint64_t> counts;  // per bucket, NOT cumulative; last is +Inf
  uint64_t sum_raw = 0;
  uint64_t Count() const {
    uint64_t n = 0;
    for (uint64_t c : counts) n += c;
    return n;
  }
};

class Histogram {
 public:
  explicit Histogram(const HistogramLayout& layout) : layout_(layout) {
    // Bounds are checked once here; Observe relies on them being sorted.
    if (layout.bounds.empty() || layout.bounds.size() > kBucketsMax ||
        !std::is_sorted(layout.bounds.begin(), layout.bounds.end()) ||
        std::adjacent_find(layout.bounds.begin(), layout.bounds.end()) != layout.bounds.end()) {
      __builtin_trap();
    }
  }
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Single writer. `n` observations of `value` (raw units).
  void Observe(uint64_t value, uint64_t n = 1) {
    const auto it = std::lower_bound(layout_.bounds.begin(), layout_.bounds.end(), value);
    buckets_[static_cast<size_t>(it - layout_.bounds.begin())].Add(n);
    sum_.Add(value * n);
  }

  // Adds this histogram's cells into `into` (sized on first use).
  void MergeInto(HistogramData& into) const {
    const size_t n = layout_.bounds.size() + 1;
    if (into.counts.empty()) into.counts.assign(n, 0);
    for (size_t i = 0; i < n; ++i) into.counts[i] += buckets_[i].Get();
    into.sum_raw += sum_.Get();
  }
  const HistogramLayout& layout() const { return layout_; }

 private:
  const HistogramLayout layout_;
  std::array<Cell, kBucketsMax + 1> buckets_{};
  Cell sum_;
};

// Shared by every shard: how many distinct label values (queues) may still
// get a label of their own. Taking is lock-free; a value once given keeps it.
class LabelBudget {
 public:
  explicit LabelBudget(uint32_t max) : max_(max) {}
  bool TryTake() {
    uint32_t n = taken_.load(std::memory_order_relaxed);
    while (n < max_) {
      if (taken_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  }
  uint32_t taken() const { return taken_.load(std::memory_order_relaxed); }
  uint32_t max() const { return max_; }

 private:
  const uint32_t max_;
  std::atomic<uint32_t> taken_{0};
};

// ---------------------------------------------------------------- layouts
// Chosen for the ranges measured (see service/http/README.md).

// Request latency in ns: 25 us .. 10 s. A push answered from memory takes tens
// of microseconds; one behind an fdatasync, 0.1..10 ms on SSDs.
inline constexpr uint64_t kRequestLatencyNsBounds[] = {
    25'000,      50'000,      100'000,       250'000,       500'000,       1'000'000,
    2'500'000,   5'000'000,   10'000'000,    25'000'000,    50'000'000,    100'000'000,
    250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
inline constexpr HistogramLayout kRequestLatencyNs{kRequestLatencyNsBounds, 1e9};

// Job times in ms (the engine clock's resolution): 1 ms .. 1 h. Time in a
// queue and time in a worker range from nothing to hours under a backlog.
inline constexpr uint64_t kJobTimeMsBounds[] = {
    1,     5,      10,     25,     50,      100,     250,     500,       1'000,    2'500,
    5'000, 10'000, 30'000, 60'000, 120'000, 300'000, 600'000, 1'800'000, 3'600'000};
inline constexpr HistogramLayout kJobTimeMs{kJobTimeMsBounds, 1e3};

// Disk sync latency in ns: 10 us .. 2.5 s (NVMe fdatasync is tens of us; a
// stalled disk takes seconds).
inline constexpr uint64_t kSyncLatencyNsBounds[] = {
    10'000,      25'000,      50'000,      100'000,       250'000,      500'000,
    1'000'000,   2'500'000,   5'000'000,   10'000'000,    25'000'000,   50'000'000,
    100'000'000, 250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000};
inline constexpr HistogramLayout kSyncLatencyNs{kSyncLatencyNsBounds, 1e9};

// A count of things per batch: 1 .. 65536 in powers of two.
inline constexpr uint64_t kBatchCountBounds[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
inline constexpr HistogramLayout kBatchCount{kBatchCountBounds, 1.0};

}  // namespace ringq::metrics
