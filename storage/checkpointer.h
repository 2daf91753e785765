// Checkpointer: one thread per shard that applies committed WAL records to
// RocksDB (DESIGN.md, data flow step 5).
//
// The shard hands it chunks of records that are already durable in the WAL.
// It folds them into a Window (net effect), and on a time or size budget
// writes the window with the shard's applied LSN in one batch (RocksDB WAL
// disabled) and flushes (atomic across column families). flushed_lsn() then
// tells the shard which WAL segments it may delete.
//
// Bounds: backlog_bytes() is what was handed over and not applied yet; the
// journal stops submitting new WAL writes while it exceeds
// kBacklogBytesMax (backpressure instead of growth).
// Errors: a full disk postpones the checkpoint (retried every interval,
// after RocksDB's Resume()); WAL segments stay until it succeeds, and the
// journal refuses pushes meanwhile. Any other RocksDB write or flush error is
// fail-stop: the WAL still has every record and recovery replays it.
// Lifecycle: Start(); Stop() applies and flushes everything handed over.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/store.h"
#include "storage/window.h"
#include "uring/wal.h"

namespace ringq::storage {

struct CheckpointOptions {
  uint32_t interval_ms = 2'000;
  uint64_t window_bytes_max = 64ull << 20;
};

class Checkpointer {
 public:
  static constexpr uint64_t kBacklogBytesMax = 256ull << 20;

  Checkpointer(Store& store, uint32_t shard, uint64_t applied_lsn, CheckpointOptions options);
  ~Checkpointer();

  void Start();
  void Stop();
  // Shard thread: chunks that became durable, in LSN order.
  void Enqueue(std::vector<uring::CommittedChunk>&& chunks);
  uint64_t flushed_lsn() const { return flushed_lsn_.load(std::memory_order_acquire); }
  uint64_t backlog_bytes() const { return backlog_bytes_.load(std::memory_order_relaxed); }
  uint64_t checkpoints() const { return checkpoints_.load(std::memory_order_relaxed); }

 private:
  void Run();
  void ApplyChunk(const uring::CommittedChunk& c);
  void Checkpoint();
  void Postpone(const engine::Status& s);

  Store& store_;
  const uint32_t shard_;
  const CheckpointOptions options_;
  Window window_;
  // A checkpoint postponed by a full disk: its batch and how far it got.
  std::unique_ptr<rocksdb::WriteBatch> pending_;
  uint64_t pending_lsn_ = 0;
  bool pending_written_ = false;
  bool logged_full_ = false;
  std::atomic<uint64_t> flushed_lsn_;
  std::atomic<uint64_t> backlog_bytes_{0};
  std::atomic<uint64_t> checkpoints_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uring::CommittedChunk> queue_;  // guarded by mu_
  bool stop_ = false;                        // guarded by mu_
  std::thread thread_;
};

}  // namespace ringq::storage
