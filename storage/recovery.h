// Recovery: rebuilds every shard's state at start (DESIGN.md, WAL format).
//
// 1. Open RocksDB; check it was written with the same --shards.
// 2. Load every stored job; read each shard's applied LSN.
// 3. Replay each shard's WAL segments above the applied LSN, in order.
//    A torn tail (a bad record with nothing valid past the last write) is
//    truncated and the dropped bytes logged. A corrupt record followed by
//    valid ones refuses to start, naming the file and offset, unless
//    `repair`: then the bytes from the bad record on are kept in a side file
//    (<segment>.bad-<offset>), later segments move to wal/quarantine/, and
//    the log continues without them.
// 4. Write the replayed net effect to RocksDB with the applied LSN, flush,
//    and delete the replayed segments: the WAL then restarts empty.
// The caller restores each shard's scheduler from the result and only then
// reports ready.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "service/engine/job.h"
#include "service/engine/status.h"
#include "storage/job_codec.h"
#include "storage/store.h"

namespace ringq::storage {

struct RecoveryOptions {
  std::string data_dir;
  uint32_t shards = 1;
  bool repair = false;
  bool archive = false;  // tests: keep replayed segments in wal/shard-NNN/archive/
  std::function<void(const std::string&)> log;  // one line per event
};

struct ShardRecovery {
  std::vector<engine::Job> jobs;
  std::vector<std::string> paused_queues;
  uint64_t applied_lsn = 0;     // from RocksDB
  uint64_t next_lsn = 1;        // where the shard's WAL continues
  uint64_t replayed_records = 0;
  uint64_t dropped_bytes = 0;   // torn tail
};

struct RecoveryResult {
  std::vector<ShardRecovery> shards;
  uint64_t jobs_loaded = 0;
};

std::string WalDir(const std::string& data_dir, uint32_t shard);
std::string DbDir(const std::string& data_dir);

engine::Result<RecoveryResult> Recover(Store& store, const RecoveryOptions& options);

// Applies one decoded WAL record to a shard's jobs (in id order; forgotten
// jobs become tombstones with id 0) and paused-queue map: the replay rule
// recovery uses, exposed for the WAL/RocksDB consistency checker.
void ReplayRecord(DecodedRecord& d, std::vector<engine::Job>& jobs,
                  std::unordered_map<std::string, bool>& paused);

}  // namespace ringq::storage
