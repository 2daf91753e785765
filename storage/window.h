// Window: the net effect of a run of committed WAL records, ready to be
// written to RocksDB in one batch (DESIGN.md: a job pushed and forgotten
// between two checkpoints costs RocksDB nothing).
//
// Thread: used by one thread at a time (a checkpointer, or recovery).
#pragma once

#include <rocksdb/write_batch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include "storage/job_codec.h"
#include "storage/store.h"

namespace ringq::storage {

class Window {
 public:
  // Applies one decoded record (LSNs must come in order).
  void Apply(uint64_t lsn, DecodedRecord&& rec);
  // Writes the window and the shard's applied LSN into `batch`, then empties it.
  void WriteTo(Store& store, uint32_t shard, rocksdb::WriteBatch* batch);
  bool empty() const { return entries_.empty() && queues_.empty(); }
  uint64_t last_lsn() const { return last_lsn_; }
  size_t entries() const { return entries_.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct Entry {
    std::string queue;
    std::string spec;    // pushed in this window: its spec
    std::string state;   // latest state, if changed
    std::optional<std::string> result;
    bool pushed = false;
    bool dead = false;    // latest state is DEAD
    bool undead = false;  // left DEAD in this window
    bool deleted = false;
    bool was_dead = false;
  };
  std::unordered_map<uint64_t, Entry> entries_;
  std::map<std::string, bool> queues_;  // queue -> paused
  uint64_t last_lsn_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace ringq::storage
