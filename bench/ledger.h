// Ledger: the proof that every job a scenario pushed was processed exactly
// once, intact. Each payload opens with a header (magic, row, sequence
// number, send time) followed by a deterministic filler; the ledger records
// the id the server gave each sequence number and the id it was delivered
// under, counts deliveries per sequence number, and keeps two checksums (of
// the sequence numbers pushed and of those processed) that must match.
//
// Threads: producers and subscriptions record concurrently (atomics only).
// Bounds: sequence numbers < capacity, fixed at construction.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "bench/driver.h"
#include "bench/histogram.h"

namespace ringq::bench {

struct PayloadHeader {
  uint32_t magic;
  uint32_t row;
  uint64_t seq;
  int64_t t_ns;  // send time (open loop: the intended send time), CLOCK_MONOTONIC
};
static_assert(sizeof(PayloadHeader) == 24);
constexpr uint32_t kPayloadMagic = 0x31425152;  // "RQB1"

inline uint64_t Mix(uint64_t x) {  // splitmix64 finalizer: a checksum term per job
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Verdict {
  uint64_t pushed = 0, push_errors = 0, processed = 0;
  uint64_t duplicates = 0, missing = 0, corrupt = 0, id_mismatch = 0;
  uint64_t checksum_pushed = 0, checksum_processed = 0;
  std::string first_duplicate;  // what the first duplicate delivery was, if any
  bool ok() const {
    return duplicates == 0 && missing == 0 && corrupt == 0 && id_mismatch == 0 &&
           processed == pushed && checksum_pushed == checksum_processed;
  }
};

class Ledger final : public DeliverySink {
 public:
  Ledger(uint32_t row, uint64_t capacity, size_t payload_bytes, Histogram* e2e)
      : row_(row),
        capacity_(capacity),
        payload_bytes_(payload_bytes < sizeof(PayloadHeader) ? sizeof(PayloadHeader)
                                                             : payload_bytes),
        e2e_(e2e),
        ids_(new std::atomic<uint64_t>[capacity]()),
        delivered_ids_(new std::atomic<uint64_t>[capacity]()),
        seen_(new std::atomic<uint8_t>[capacity]()),
        filler_(payload_bytes_, '\0') {
    for (size_t i = 0; i < payload_bytes_; ++i) filler_[i] = static_cast<char>((i * 131 + 7));
  }

  uint64_t capacity() const { return capacity_; }
  size_t payload_bytes() const { return payload_bytes_; }

  void MakePayload(uint64_t seq, int64_t t_ns, std::string* out) const {
    out->assign(filler_);
    const PayloadHeader h{kPayloadMagic, row_, seq, t_ns};
    std::memcpy(out->data(), &h, sizeof h);
  }

  void OnPushed(uint64_t seq, const PushOutcome& o) {
    if (!o.ok || seq >= capacity_) {
      if (push_errors_.fetch_add(1, std::memory_order_relaxed) == 0) {
        std::lock_guard lock(mu_);
        first_error_ = o.error;
      }
      return;
    }
    ids_[seq].store(o.id, std::memory_order_relaxed);
    checksum_pushed_.fetch_add(Mix(seq), std::memory_order_relaxed);
    pushed_.fetch_add(1, std::memory_order_release);
  }

  void OnDeliveries(std::span<const DeliveredJob> jobs, int64_t received_ns) override {
    for (const auto& j : jobs) Check(j, received_ns);
    last_delivery_ns_.store(received_ns, std::memory_order_relaxed);
  }

  uint64_t pushed() const { return pushed_.load(std::memory_order_acquire); }
  uint64_t push_errors() const { return push_errors_.load(std::memory_order_relaxed); }
  uint64_t processed() const { return processed_.load(std::memory_order_acquire); }
  int64_t last_delivery_ns() const { return last_delivery_ns_.load(std::memory_order_relaxed); }
  std::string first_error() const {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  // "seq S delivered again under id B (first under id A)", or empty.
  std::string first_duplicate() const {
    std::lock_guard lock(mu_);
    return first_duplicate_;
  }

  // Call once no push is in flight and the subscriptions are closed.
  Verdict Verify(uint64_t issued) const {
    Verdict v;
    v.pushed = pushed();
    v.push_errors = push_errors();
    v.processed = processed();
    v.duplicates = duplicates_.load();
    v.corrupt = corrupt_.load();
    v.checksum_pushed = checksum_pushed_.load();
    v.checksum_processed = checksum_processed_.load();
    for (uint64_t s = 0; s < issued && s < capacity_; ++s) {
      const uint64_t id = ids_[s].load(std::memory_order_relaxed);
      if (id == 0) continue;  // not pushed (error)
      if (seen_[s].load(std::memory_order_relaxed) == 0) {
        ++v.missing;
      } else if (delivered_ids_[s].load(std::memory_order_relaxed) != id) {
        ++v.id_mismatch;
      }
    }
    return v;
  }

 private:
  void Check(const DeliveredJob& j, int64_t received_ns) {
    PayloadHeader h{};
    if (j.payload.size() != payload_bytes_) return Corrupt();
    std::memcpy(&h, j.payload.data(), sizeof h);
    if (h.magic != kPayloadMagic || h.row != row_ || h.seq >= capacity_) return Corrupt();
    if (std::memcmp(j.payload.data() + sizeof h, filler_.data() + sizeof h,
                    payload_bytes_ - sizeof h) != 0) {
      return Corrupt();
    }
    if (seen_[h.seq].fetch_add(1, std::memory_order_relaxed) != 0) {
      if (duplicates_.fetch_add(1, std::memory_order_relaxed) == 0) {
        std::lock_guard lock(mu_);
        first_duplicate_ = "seq " + std::to_string(h.seq) + " delivered again under id " +
                           std::to_string(j.id) + " (first under id " +
                           std::to_string(delivered_ids_[h.seq].load()) + ")";
      }
      return;
    }
    delivered_ids_[h.seq].store(j.id, std::memory_order_relaxed);
    checksum_processed_.fetch_add(Mix(h.seq), std::memory_order_relaxed);
    if (e2e_ != nullptr && received_ns >= h.t_ns) e2e_->Record(uint64_t(received_ns - h.t_ns));
    processed_.fetch_add(1, std::memory_order_release);
  }
  void Corrupt() { corrupt_.fetch_add(1, std::memory_order_relaxed); }

  const uint32_t row_;
  const uint64_t capacity_;
  const size_t payload_bytes_;
  Histogram* const e2e_;
  std::unique_ptr<std::atomic<uint64_t>[]> ids_, delivered_ids_;
  std::unique_ptr<std::atomic<uint8_t>[]> seen_;
  std::string filler_;
  std::atomic<uint64_t> pushed_{0}, push_errors_{0}, processed_{0};
  std::atomic<uint64_t> duplicates_{0}, corrupt_{0};
  std::atomic<uint64_t> checksum_pushed_{0}, checksum_processed_{0};
  std::atomic<int64_t> last_delivery_ns_{0};
  mutable std::mutex mu_;
  std::string first_error_, first_duplicate_;
};

}  // namespace ringq::bench
