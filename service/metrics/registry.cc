#include "service/metrics/registry.h"

namespace ringq::metrics {

std::string Registry::Scrape() {
  std::lock_guard lock(mu_);
  const auto start = std::chrono::steady_clock::now();
  TextWriter out;
  for (Collector* c : collectors_) c->Collect(out);
  out.Family("ringq_metrics_scrapes_total", Type::kCounter,
             "Scrapes of /metrics served, this one included.");
  out.Sample(Labels{}, ++scrapes_total_);
  out.Family("ringq_metrics_last_scrape_duration_seconds", Type::kGauge,
             "Time the previous scrape took to collect every family.");
  out.Sample(Labels{}, last_scrape_seconds_);
  out.Family("ringq_metrics_last_scrape_bytes", Type::kGauge,
             "Size of the previous scrape's text, in bytes.");
  out.Sample(Labels{}, last_scrape_bytes_);
  std::string text = out.Take();
  last_scrape_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  last_scrape_bytes_ = text.size();
  return text;
}

}  // namespace ringq::metrics
