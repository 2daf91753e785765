// Store: RocksDB as the materialized state of every shard (DESIGN.md).
//
// Column families (keys designed for the scans the API and recovery need):
//   jobs       id (8 bytes big-endian) -> spec (immutable: queue, payload, ...)
//   job_state  id -> state (mutable: state, attempts, times, errors)
//   results    id -> ack result bytes
//   dead       queue '\0' id -> ""  (dead letters per queue, in id order)
//   queues     queue name -> config (paused flag)
//   meta       "applied_lsn/<shard>" -> u64, "shards" -> u32, "format" -> u32
//
// RocksDB's own WAL is disabled on every write: ringq's WAL is the log. A
// write is durable only after Flush() (atomic across column families); the
// applied LSN of a shard is written in the same batch as the state it
// covers, so any flushed state is a consistent cut per shard.
//
// Thread-safe (RocksDB is); the options are all set in store.cc, in one place.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "service/engine/job.h"
#include "service/engine/status.h"

namespace ringq::storage {

class Store {
 public:
  enum Cf : size_t { kJobs = 0, kJobState, kResults, kDead, kQueues, kMeta, kCfCount };

  static engine::Result<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles_[c]; }
  // Writes with RocksDB's WAL disabled (see above).
  engine::Status Write(rocksdb::WriteBatch* batch);
  // Flushes every column family's memtable together; after it, what was
  // written is on disk. Out of space is kResourceExhausted (retry later,
  // after Resume()); other errors kInternal.
  engine::Status Flush();
  // Clears RocksDB's background error after the cause went away (disk space).
  engine::Status Resume();

  uint64_t AppliedLsn(uint32_t shard) const;
  static std::string AppliedKey(uint32_t shard);
  static std::string EncodeU64(uint64_t v);
  // 0 when the store is new.
  uint32_t StoredShards() const;
  engine::Status SetStoredShards(uint32_t shards);
  // The layout of job keys the store was written with (job_codec.h,
  // kJobKeyLayout); 0 when unrecorded (a new store, or one written before
  // layouts were recorded).
  uint32_t KeyLayout() const;
  engine::Status SetKeyLayout(uint32_t layout);
  // Whether any job is stored (jobs column family not empty).
  bool HasJobs() const;

  // Every stored job (spec + state + result), in id order.
  engine::Status ForEachJob(const std::function<void(engine::Job&&)>& fn) const;
  std::vector<std::string> PausedQueues() const;
  uint64_t LiveDataBytes() const;

 private:
  Store() = default;
  uint32_t MetaU32(const char* key) const;  // 0 when absent
  engine::Status SetMetaU32(const char* key, uint32_t value);
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

}  // namespace ringq::storage
