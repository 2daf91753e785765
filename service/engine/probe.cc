#include "service/engine/probe.h"

namespace ringq::engine {

ShardProbe::ShardProbe()
    : other_(metrics::kOtherLabel),
      push_latency_ns_(metrics::kRequestLatencyNs),
      end_to_end_ms_(metrics::kJobTimeMs),
      processing_ms_(metrics::kJobTimeMs),
      fetch_wait_ms_(metrics::kJobTimeMs) {}

void ShardProbe::Configure(metrics::LabelBudget* budget, bool enabled) {
  budget_ = budget;
  enabled_ = enabled;
}

QueueCells* ShardProbe::QueueCreated(std::string_view name) {
  if (!enabled_ || name == metrics::kOtherLabel) return &other_;
  if (budget_ != nullptr && !budget_->TryTake()) return &other_;
  QueueCells* cells;
  {
    std::lock_guard lock(mu_);
    cells = &labeled_.emplace_back(name);
  }
  return cells;
}

void ShardProbe::Finished(QueueCells& q, const Job& job, JobState terminal, uint64_t now_ms) {
  if (!enabled_) return;
  switch (terminal) {
    case JobState::kCompleted:
      q.completed.Add();
      processing_ms_.Observe(Since(job.leased_at_ms, now_ms));
      break;
    case JobState::kDead:
      q.dead_lettered.Add();
      break;
    case JobState::kCancelled:
      q.cancelled.Add();
      break;
    case JobState::kExpired:
      q.expired.Add();
      break;
    default:
      break;
  }
}

}  // namespace ringq::engine
