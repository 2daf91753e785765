// ShardProbe: the scheduler's metrics, one per shard (STYLE.md: one probe per
// component, so the scheduler reads as logic: one call per event).
//
// Thread: events are called on the owning shard thread only and write that
// shard's cells (metrics::Cell, single writer, relaxed); the scrape reads
// from another thread (EngineMetrics) and sums over shards. The list of
// per-queue cells grows on the shard thread under `mu_` (only when a queue is
// created) and is read by the scrape under it; no event takes it.
//
// Labels: a queue gets cells of its own (label = its name) while the shared
// LabelBudget (--metrics-queue-labels-max, over all shards) lasts; later
// queues share the shard's "_other" cells. A queue named "_other" always
// folds. Queues are never deleted, so cells live as long as the probe and
// counters only grow.
//
// Disabled (Configure(..., false), --metrics=false): events return at once;
// for measuring what metrics cost.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>

#include "service/engine/job.h"
#include "service/metrics/metrics.h"

namespace ringq::engine {

// Counters of one queue label on one shard.
struct QueueCells {
  explicit QueueCells(std::string_view l) : label(l) {}
  const std::string label;  // queue name or "_other"
  metrics::Cell pushed, delivered, completed, failed, retried, dead_lettered, expired, cancelled,
      leases_expired;
};

// Gauges of one queue, gathered on its shard thread at scrape time.
struct QueueGauges {
  std::string label;  // the queue's metrics label (its name or "_other")
  uint64_t waiting = 0, delayed = 0, active = 0;
  uint64_t completed = 0, dead = 0, cancelled = 0, expired = 0;  // kept (retention)
  uint64_t subscribers = 0;
  uint64_t paused = 0;                 // 1 when paused
  uint64_t oldest_waiting_age_ms = 0;  // since the head job became due; 0: none waits
};

class ShardProbe {
 public:
  ShardProbe();
  ShardProbe(const ShardProbe&) = delete;
  ShardProbe& operator=(const ShardProbe&) = delete;

  // Before the shard thread starts. budget == nullptr: every queue gets a
  // label (unit tests). The budget outlives the probe.
  void Configure(metrics::LabelBudget* budget, bool enabled);
  bool enabled() const { return enabled_; }

  // ---- events, shard thread ----
  // A queue was created: the cells its events go to. Never null.
  QueueCells* QueueCreated(std::string_view name);
  void Pushed(QueueCells& q) {
    if (enabled_) q.pushed.Add();
  }
  // A job was leased at `now_ms` (job.attempts already counts this delivery).
  // The first attempt observes end-to-end latency: from when the job became
  // due (pushed, or its run_at for delayed jobs) to this delivery.
  void Delivered(QueueCells& q, const Job& job, uint64_t now_ms) {
    if (!enabled_) return;
    q.delivered.Add();
    if (job.attempts == 1) end_to_end_ms_.Observe(Since(job.run_at_ms, now_ms));
  }
  // A job reached a terminal state; completed jobs observe processing time
  // (from the lease of this attempt to the ack).
  void Finished(QueueCells& q, const Job& job, JobState terminal, uint64_t now_ms);
  // A failure (worker fail, lease expiry, disconnect): before retry or burial.
  void Failed(QueueCells& q) {
    if (enabled_) q.failed.Add();
  }
  void Retried(QueueCells& q) {
    if (enabled_) q.retried.Add();
  }
  void LeaseExpired(QueueCells& q) {
    if (enabled_) q.leases_expired.Add();
  }
  // A Fetch was answered after waiting `waited_ms` (0: jobs were ready).
  void FetchAnswered(uint64_t waited_ms) {
    if (enabled_) fetch_wait_ms_.Observe(waited_ms);
  }
  // `jobs` pushes were answered (durable) `latency_ns` after the server
  // received them. Called by the API layer on this shard's thread.
  void PushAnswered(uint64_t latency_ns, uint64_t jobs) {
    if (enabled_) push_latency_ns_.Observe(latency_ns, jobs);
  }

  // ---- scrape, any thread ----
  // Calls fn(const QueueCells&) for every cell set (labels unique per shard).
  template <typename Fn>
  void ForEachQueue(Fn&& fn) const {
    std::lock_guard lock(mu_);
    fn(other_);
    for (const QueueCells& c : labeled_) fn(c);
  }
  const metrics::Histogram& push_latency_ns() const { return push_latency_ns_; }
  const metrics::Histogram& end_to_end_ms() const { return end_to_end_ms_; }
  const metrics::Histogram& processing_ms() const { return processing_ms_; }
  const metrics::Histogram& fetch_wait_ms() const { return fetch_wait_ms_; }

 private:
  static uint64_t Since(uint64_t from_ms, uint64_t now_ms) {
    return now_ms > from_ms ? now_ms - from_ms : 0;
  }

  metrics::LabelBudget* budget_ = nullptr;
  bool enabled_ = true;
  mutable std::mutex mu_;           // guards the shape of labeled_ against the scrape
  std::deque<QueueCells> labeled_;  // addresses stable: handed out to queues
  QueueCells other_;
  metrics::Histogram push_latency_ns_;
  metrics::Histogram end_to_end_ms_;
  metrics::Histogram processing_ms_;
  metrics::Histogram fetch_wait_ms_;
};

}  // namespace ringq::engine
