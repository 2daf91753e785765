// Histogram: a log-linear latency histogram (values in nanoseconds), safe to
// record from any thread (relaxed atomics; a reader merges after the writers
// stop). Resolution: exact below 64 ns, then 32 sub-buckets per power of two,
// so a reported percentile is at most 1/32 (3.1 %) above the true value.
// Range: 0 .. 2^40 ns (about 18 minutes); larger values count in the last
// bucket, and max() stays exact.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cassert>
#include <cstdint>

namespace ringq::bench {

class Histogram {
 public:
  static constexpr int kLinear = 64;
  static constexpr int kSubBits = 5;  // 32 sub-buckets per octave
  static constexpr int kOctaves = 35;  // 2^5 .. 2^40
  static constexpr int kBuckets = kLinear + kOctaves * (1 << kSubBits);

  void Record(uint64_t v) {
    buckets_[Index(v)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (v > m && !max_.compare_exchange_weak(m, v, std::memory_order_relaxed)) {
    }
  }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  double mean() const { return count() ? double(sum_.load()) / double(count()) : 0.0; }

  // The smallest bucket upper bound below which at least q (0..1) of the values fall.
  uint64_t Percentile(double q) const {
    const uint64_t n = count();
    if (n == 0) return 0;
    uint64_t want = static_cast<uint64_t>(q * double(n) + 0.999999);
    want = std::clamp<uint64_t>(want, 1, n);
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen >= want) return std::min(UpperBound(i), max());
    }
    return max();
  }

 private:
  static int Index(uint64_t v) {
    if (v < kLinear) return static_cast<int>(v);
    const int msb = 63 - std::countl_zero(v);          // >= 6
    const int shift = msb - kSubBits;                  // >= 1
    const int octave = std::min(shift - 1, kOctaves - 1);
    if (shift - 1 > octave) return kBuckets - 1;       // beyond range
    const int sub = static_cast<int>((v >> shift) & ((1u << kSubBits) - 1));
    const int i = kLinear + octave * (1 << kSubBits) + sub;
    assert(i >= kLinear && i < kBuckets);
    return i;
  }
  static uint64_t UpperBound(int i) {
    if (i < kLinear) return static_cast<uint64_t>(i);
    const int octave = (i - kLinear) >> kSubBits;
    const int sub = (i - kLinear) & ((1 << kSubBits) - 1);
    const int shift = octave + 1;
    const uint64_t base = (uint64_t{1} << (shift + kSubBits)) + (uint64_t(sub) << shift);
    return base + (uint64_t{1} << shift) - 1;
  }

  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0}, sum_{0}, max_{0};
};

}  // namespace ringq::bench
