// Registry: the list of collectors a scrape asks for their families.
//
// Each component's probe is (or has) a Collector: on a scrape it reads its
// cells, sums them over shards/threads and writes its families. Collectors are
// added before the HTTP server starts and live longer than it.
//
// Thread: any. Add() may come while serving (a component registers once it
// exists); one scrape at a time (a second waits), so collectors never run
// concurrently with themselves.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "service/metrics/exposition.h"

namespace ringq::metrics {

class Collector {
 public:
  virtual ~Collector() = default;
  virtual void Collect(TextWriter& out) = 0;
};

class Registry {
 public:
  void Add(Collector* collector) {
    std::lock_guard lock(mu_);
    collectors_.push_back(collector);
  }

  // The whole exposition, ending with the registry's own families (time and
  // size of the previous scrape, so a scrape's cost shows on the next one).
  std::string Scrape();

 private:
  std::mutex mu_;
  std::vector<Collector*> collectors_;  // guarded by mu_
  uint64_t scrapes_total_ = 0;          // guarded by mu_
  double last_scrape_seconds_ = 0;      // guarded by mu_
  uint64_t last_scrape_bytes_ = 0;      // guarded by mu_
};

}  // namespace ringq::metrics
