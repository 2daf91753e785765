// JournalProbe: what a Journal implementation (the WAL, uring/) reports, one
// per shard; JournalProbes holds them all and writes the ringq_wal_* families.
//
// The probes exist before the engine (a journal is made by the engine's
// JournalFactory), so main owns a JournalProbes and hands probe(shard) to the
// factory's journal:
//
//   engine::JournalProbes wal_probes(flags.shards);
//   Engine engine(eo, clock, [&](uint32_t s) { return MakeWal(..., &wal_probes.shard(s)); });
//   registry.Add(&wal_probes);
//
// Thread: each JournalProbe is written by its shard's thread only (whatever
// thread completes the sync must be that shard's: the ring is reaped there);
// the scrape reads from any thread.
// Until the WAL lands nothing feeds them: histograms stay empty, bytes 0.
#pragma once

#include <cstdint>
#include <deque>

#include "service/metrics/registry.h"

namespace ringq::engine {

class JournalProbe {
 public:
  // One group commit became durable: `records` records of `bytes` bytes in
  // total, written and fdatasync'ed in `sync_ns` (submit to completion).
  void Synced(uint64_t sync_ns, uint64_t records, uint64_t bytes) {
    sync_ns_.Observe(sync_ns);
    records_per_sync_.Observe(records);
    written_bytes_.Add(bytes);
  }
  // Bytes of log on disk now (segments not yet retired by the checkpointer).
  void SetLogBytes(uint64_t bytes) { log_bytes_.Set(bytes); }

 private:
  friend class JournalProbes;
  metrics::Histogram sync_ns_{metrics::kSyncLatencyNs};
  metrics::Histogram records_per_sync_{metrics::kBatchCount};
  metrics::Cell written_bytes_;
  metrics::Cell log_bytes_;
};

class JournalProbes final : public metrics::Collector {
 public:
  explicit JournalProbes(uint32_t shards) : probes_(shards) {}
  JournalProbe& shard(uint32_t index) { return probes_.at(index); }
  void Collect(metrics::TextWriter& out) override;

 private:
  std::deque<JournalProbe> probes_;  // not movable: atomics
};

}  // namespace ringq::engine
