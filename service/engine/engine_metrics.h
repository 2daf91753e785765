// EngineMetrics: the scrape side of the engine's probes.
//
// Counters and histograms are read straight from every shard's ShardProbe
// (relaxed atomics, summed over shards; no shard is disturbed). Gauges that
// are scheduler state (jobs by state, oldest waiting age, subscribers,
// paused) are gathered by posting one task to each shard and waiting at most
// `gather_timeout_ms` for all of them: a shard that does not answer in time
// is left out of this scrape's gauges and counted in
// ringq_metrics_gather_timeouts_total; its task still runs later, harmlessly.
//
// Lifecycle: construct after the Engine and before Engine::Start() (and
// before recovery) — the constructor configures each shard's probe (label
// budget, on/off). Collect() from the registry's scrape thread only; it must
// not run after the engine is destroyed (stop the HTTP server first).
#pragma once

#include <cstdint>

#include "service/engine/engine.h"
#include "service/metrics/registry.h"

namespace ringq::engine {

struct EngineMetricsOptions {
  uint32_t queue_labels_max = 1000;  // --metrics-queue-labels-max
  bool enabled = true;               // --metrics
  uint32_t gather_timeout_ms = 2000;
};

class EngineMetrics final : public metrics::Collector {
 public:
  EngineMetrics(Engine& engine, const EngineMetricsOptions& options);
  void Collect(metrics::TextWriter& out) override;

 private:
  void CollectCounters(metrics::TextWriter& out);
  void CollectHistograms(metrics::TextWriter& out);
  void CollectGauges(metrics::TextWriter& out);

  Engine& engine_;
  const EngineMetricsOptions options_;
  metrics::LabelBudget budget_;
  uint64_t gather_timeouts_total_ = 0;  // scrape thread only
};

}  // namespace ringq::engine
