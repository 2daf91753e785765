// ServerMetrics: process-wide facts as metrics: build info, which durability
// mode and I/O backend are active (info-style gauges: value 1, the fact in a
// label), RocksDB's live data size, and the standard process_* families
// (CPU, memory, file descriptors, start time) read from /proc at scrape time.
//
// Thread: the setters from main before serving (or, for the RocksDB cell,
// from the one thread that owns the store); Collect() on the scrape thread.
#pragma once

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
  // Set by storage/ (the checkpointer thread): RocksDB's live data size.
  metrics::Cell& rocksdb_live_data_bytes() { return rocksdb_live_data_bytes_; }

  void Collect(metrics::TextWriter& out) override;

 private:
  const std::string version_;
  std::mutex mu_;
  std::string durability_ = "none";  // guarded by mu_
  std::string io_backend_ = "none";  // guarded by mu_
  metrics::Cell rocksdb_live_data_bytes_;
};

}  // namespace ringq::http
