// ServerMetrics: process-wide facts as metrics: build info, which durability
// mode and I/O backend are active (info-style gauges: value 1, the fact in a
// label), RocksDB's live data size, and the standard process_* families
// (CPU, memory, file descriptors, start time) read from /proc at scrape time.
//
// Thread: the setters from main (any time; they lock); Collect() on the
// scrape thread. A source set here must stay callable until the HTTP server
// stops.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "service/metrics/metrics.h"
#include "service/metrics/registry.h"

namespace ringq::http {

class ServerMetrics final : public metrics::Collector {
 public:
  explicit ServerMetrics(std::string version) : version_(std::move(version)) {}

  // "none" (in-memory journal), "sync" or "batch" (--durability).
  void SetDurability(std::string mode);
  // The WAL's I/O backend: "io_uring", or the portable fallback's name;
  // "none" while there is no WAL.
  void SetIoBackend(std::string backend);
  // Asked at scrape time for RocksDB's live data size (thread-safe, e.g.
  // storage::Store::LiveDataBytes). Unset: 0. Setting nullptr waits for a
  // call in progress, so the store may be destroyed after it returns.
  void SetRocksdbLiveDataSource(std::function<uint64_t()> source);

  void Collect(metrics::TextWriter& out) override;

 private:
  const std::string version_;
  std::mutex mu_;
  std::string durability_ = "none";  // guarded by mu_
  std::string io_backend_ = "none";  // guarded by mu_
  std::function<uint64_t()> rocksdb_live_data_;  // guarded by mu_
};

}  // namespace ringq::http
