#include "service/engine/engine_metrics.h"

#include <array>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "service/engine/journal_probe.h"

namespace ringq::engine {

namespace {

using metrics::Label;
using metrics::Labels;
using metrics::TextWriter;
using metrics::Type;

struct CounterFamily {
  const char* name;
  const char* help;
  metrics::Cell QueueCells::*cell;
};

constexpr CounterFamily kCounters[] = {
    {"ringq_jobs_pushed_total",
     "Jobs accepted by Push, PushBatch and PushStream (duplicates of "
     "a live unique_key not counted).",
     &QueueCells::pushed},
    {"ringq_jobs_delivered_total", "Deliveries (leases) to workers, retries included.",
     &QueueCells::delivered},
    {"ringq_jobs_completed_total", "Jobs acknowledged by a worker.", &QueueCells::completed},
    {"ringq_jobs_failed_total", "Failed attempts: worker Fail, lease expiry or worker disconnect.",
     &QueueCells::failed},
    {"ringq_jobs_retried_total", "Failed attempts scheduled for another attempt.",
     &QueueCells::retried},
    {"ringq_jobs_dead_lettered_total",
     "Jobs moved to the dead-letter list (attempts exhausted or no_retry).",
     &QueueCells::dead_lettered},
    {"ringq_jobs_expired_total", "Jobs whose TTL ran out before any worker started them.",
     &QueueCells::expired},
    {"ringq_jobs_cancelled_total", "Jobs cancelled by Cancel.", &QueueCells::cancelled},
    {"ringq_leases_expired_total",
     "Leases that ran out before the worker settled the job (counted in failed too).",
     &QueueCells::leases_expired},
};
constexpr size_t kCounterCount = std::size(kCounters);

// State of one gauge gather, shared with the shard tasks (which may outlive
// the scrape when a shard is slow).
struct Gather {
  std::mutex mu;
  std::condition_variable cv;
  size_t left = 0;
  std::vector<QueueGauges> gauges;
  std::vector<double> lag_seconds;  // per shard; < 0: not answered
};

struct Agg {
  QueueGauges g;
  void Add(const QueueGauges& x) {
    g.waiting += x.waiting;
    g.delayed += x.delayed;
    g.active += x.active;
    g.completed += x.completed;
    g.dead += x.dead;
    g.cancelled += x.cancelled;
    g.expired += x.expired;
    g.subscribers += x.subscribers;
    g.paused += x.paused;
    g.oldest_waiting_age_ms = std::max(g.oldest_waiting_age_ms, x.oldest_waiting_age_ms);
  }
};

}  // namespace

EngineMetrics::EngineMetrics(Engine& engine, const EngineMetricsOptions& options)
    : engine_(engine), options_(options), budget_(options.queue_labels_max) {
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) {
    engine_.shard(i).scheduler().probe().Configure(&budget_, options.enabled);
  }
}

void EngineMetrics::Collect(TextWriter& out) {
  // Gauges first: gathering them gives every queue its cells, so a queue
  // that had no event yet shows zeros in the counters of this same scrape.
  CollectGauges(out);
  CollectCounters(out);
  CollectHistograms(out);
}

void EngineMetrics::CollectCounters(TextWriter& out) {
  // label -> counts; "_other" of every shard adds up.
  std::map<std::string, std::array<uint64_t, kCounterCount>> by_label;
  for (uint32_t s = 0; s < engine_.shard_count(); ++s) {
    engine_.shard(s).scheduler().probe().ForEachQueue([&](const QueueCells& c) {
      auto& sums = by_label.try_emplace(c.label).first->second;
      for (size_t i = 0; i < kCounterCount; ++i) sums[i] += (c.*kCounters[i].cell).Get();
    });
  }
  for (size_t i = 0; i < kCounterCount; ++i) {
    out.Family(kCounters[i].name, Type::kCounter, kCounters[i].help);
    for (const auto& [label, sums] : by_label) out.Sample({{"queue", label}}, sums[i]);
  }
}

void EngineMetrics::CollectHistograms(TextWriter& out) {
  struct H {
    const char* name;
    const char* help;
    const metrics::Histogram& (ShardProbe::*get)() const;
  };
  const H hs[] = {
      {"ringq_push_latency_seconds",
       "Push latency: from the server receiving a push to its durable reply, per job.",
       &ShardProbe::push_latency_ns},
      {"ringq_end_to_end_latency_seconds",
       "From a job becoming due (pushed, or its run_at) to its first delivery. Clock "
       "resolution: 1 ms.",
       &ShardProbe::end_to_end_ms},
      {"ringq_processing_seconds",
       "From a delivery to the worker's ack of it. Clock resolution: 1 ms.",
       &ShardProbe::processing_ms},
      {"ringq_fetch_wait_seconds",
       "How long Fetch calls waited for jobs before their answer (0 when jobs were ready).",
       &ShardProbe::fetch_wait_ms},
  };
  for (const H& h : hs) {
    metrics::HistogramData data;
    const metrics::HistogramLayout* layout = nullptr;
    for (uint32_t s = 0; s < engine_.shard_count(); ++s) {
      const metrics::Histogram& one = (engine_.shard(s).scheduler().probe().*h.get)();
      one.MergeInto(data);
      layout = &one.layout();
    }
    out.Family(h.name, Type::kHistogram, h.help);
    out.HistogramSample(Labels{}, data, *layout);
  }
}

void EngineMetrics::CollectGauges(TextWriter& out) {
  using Clock = std::chrono::steady_clock;
  const uint32_t shards = engine_.shard_count();
  auto g = std::make_shared<Gather>();
  g->left = shards;
  g->lag_seconds.assign(shards, -1.0);
  const auto posted = Clock::now();
  for (uint32_t s = 0; s < shards; ++s) {
    const bool ok = engine_.Post(s, [g, s, posted](Shard& sh) {
      const double lag = std::chrono::duration<double>(Clock::now() - posted).count();
      std::vector<QueueGauges> mine;
      sh.scheduler().CollectGauges(&mine);
      std::lock_guard lock(g->mu);
      g->lag_seconds[s] = lag;
      for (auto& q : mine) g->gauges.push_back(std::move(q));
      if (--g->left == 0) g->cv.notify_all();
    });
    if (!ok) {
      std::lock_guard lock(g->mu);
      --g->left;
    }
  }
  std::vector<QueueGauges> gauges;
  std::vector<double> lag;
  {
    std::unique_lock lock(g->mu);
    const auto deadline = posted + std::chrono::milliseconds(options_.gather_timeout_ms);
    g->cv.wait_until(lock, deadline, [&] { return g->left == 0; });
    if (g->left != 0) ++gather_timeouts_total_;
    gauges = std::move(g->gauges);
    g->gauges.clear();
    lag = g->lag_seconds;
  }
  const double waited = std::chrono::duration<double>(Clock::now() - posted).count();

  std::map<std::string, Agg> by_label;
  uint64_t queues = 0, active = 0;
  for (const QueueGauges& q : gauges) {
    by_label[q.label].Add(q);
    ++queues;
    active += q.active;
  }
  struct StateField {
    const char* state;
    uint64_t QueueGauges::*field;
  };
  constexpr StateField kStates[] = {
      {"waiting", &QueueGauges::waiting}, {"delayed", &QueueGauges::delayed},
      {"active", &QueueGauges::active},   {"completed", &QueueGauges::completed},
      {"dead", &QueueGauges::dead},       {"cancelled", &QueueGauges::cancelled},
      {"expired", &QueueGauges::expired},
  };
  out.Family("ringq_jobs", Type::kGauge,
             "Jobs by queue and state. completed, cancelled and expired count the finished jobs "
             "still kept (--completed-retention-*); dead, the dead-letter list.");
  for (const auto& [label, a] : by_label) {
    for (const StateField& st : kStates) {
      out.Sample({{"queue", label}, {"state", st.state}}, a.g.*st.field);
    }
  }
  out.Family("ringq_queue_oldest_waiting_age_seconds", Type::kGauge,
             "Age of the longest-waiting ready job at the head of the queue, since it became "
             "due (0: none waiting). For _other: the oldest of the folded queues.");
  for (const auto& [label, a] : by_label) {
    out.Sample({{"queue", label}}, static_cast<double>(a.g.oldest_waiting_age_ms) / 1000.0);
  }
  out.Family("ringq_queue_subscribers", Type::kGauge, "Subscribe streams consuming the queue.");
  for (const auto& [label, a] : by_label) out.Sample({{"queue", label}}, a.g.subscribers);
  out.Family("ringq_queue_paused", Type::kGauge,
             "1 when the queue is paused (for _other: how many folded queues are).");
  for (const auto& [label, a] : by_label) out.Sample({{"queue", label}}, a.g.paused);

  out.Family("ringq_leases_active", Type::kGauge, "Jobs leased to workers and not yet settled.");
  out.Sample(Labels{}, active);
  out.Family("ringq_queues", Type::kGauge, "Queues known to the server.");
  out.Sample(Labels{}, queues);
  out.Family("ringq_shards", Type::kGauge, "Engine shards (threads).");
  out.Sample(Labels{}, static_cast<uint64_t>(shards));
  out.Family("ringq_shard_loop_lag_seconds", Type::kGauge,
             "How long the scrape's task waited in each shard's inbox before running: the "
             "shard's loop lag (the gather timeout so far when it did not answer).");
  for (uint32_t s = 0; s < shards; ++s) {
    const std::string shard = std::to_string(s);
    out.Sample({{"shard", shard}}, lag[s] >= 0 ? lag[s] : waited);
  }
  out.Family("ringq_metrics_queue_labels", Type::kGauge,
             "Queues with a label of their own; past the limit (--metrics-queue-labels-max) "
             "queues fold into queue=\"_other\".");
  out.Sample(Labels{}, static_cast<uint64_t>(budget_.taken()));
  out.Family("ringq_metrics_queue_labels_max", Type::kGauge,
             "--metrics-queue-labels-max: the most queues with a label of their own.");
  out.Sample(Labels{}, static_cast<uint64_t>(budget_.max()));
  out.Family("ringq_metrics_gather_timeouts_total", Type::kCounter,
             "Scrapes in which a shard did not report its gauges in time.");
  out.Sample(Labels{}, gather_timeouts_total_);
}

// ------------------------------------------------------------------ journal

void JournalProbes::Collect(TextWriter& out) {
  metrics::HistogramData sync, records;
  uint64_t written = 0, bytes = 0;
  for (const JournalProbe& p : probes_) {
    p.sync_ns_.MergeInto(sync);
    p.records_per_sync_.MergeInto(records);
    written += p.written_bytes_.Get();
    bytes += p.log_bytes_.Get();
  }
  out.Family("ringq_wal_sync_seconds", Type::kHistogram,
             "Write-ahead log group commits: time from submitting the write to its fdatasync "
             "completing.");
  out.HistogramSample(Labels{}, sync, metrics::kSyncLatencyNs);
  out.Family("ringq_wal_records_per_sync", Type::kHistogram,
             "Records made durable by one write-ahead log sync (group commit size).");
  out.HistogramSample(Labels{}, records, metrics::kBatchCount);
  out.Family("ringq_wal_written_bytes_total", Type::kCounter,
             "Bytes written to the write-ahead log.");
  out.Sample(Labels{}, written);
  out.Family("ringq_wal_bytes", Type::kGauge,
             "Bytes of write-ahead log on disk (segments not yet retired).");
  out.Sample(Labels{}, bytes);
}

}  // namespace ringq::engine
