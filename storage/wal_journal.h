// WalJournal: the engine's Journal backed by the WAL (uring/) and the
// checkpointer: records are encoded (job_codec.h), appended to the shard's
// WAL, made durable by group commit, then handed to the checkpointer, whose
// flushed LSN lets the WAL delete old segments.
//
// Thread: owned by one shard; every call on the shard thread.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include "service/engine/journal.h"
#include "service/engine/journal_probe.h"
#include "storage/checkpointer.h"
#include "uring/wal.h"

namespace ringq::storage {

class WalJournal final : public engine::Journal {
 public:
  // `data_dir` is watched for free space: below disk_free_min_bytes, pushes
  // are refused (RocksDB still needs room to flush and compact).
  // `probe` (may be null) receives every sync's duration, records and bytes.
  WalJournal(std::unique_ptr<uring::Wal> wal, std::unique_ptr<Checkpointer> checkpointer,
             std::string data_dir = "", uint64_t disk_free_min_bytes = 0,
             engine::JournalProbe* probe = nullptr);
  ~WalJournal() override;

  uint64_t Append(const engine::Record& record) override;
  void Submit() override;
  uint64_t last_lsn() const override { return wal_->last_lsn(); }
  uint64_t durable_lsn() const override { return wal_->durable_lsn(); }
  int wake_fd() const override { return wal_->event_fd(); }
  uint64_t NextWakeMs() const override;
  void Reap() override;
  bool Idle() const override { return wal_->idle(); }
  engine::Status CheckPushSpace() const override;

  uring::Wal& wal() { return *wal_; }
  Checkpointer& checkpointer() { return *checkpointer_; }

 private:
  std::unique_ptr<uring::Wal> wal_;
  std::unique_ptr<Checkpointer> checkpointer_;
  void CheckDiskFree();

  std::string scratch_;
  bool throttled_ = false;
  const std::string data_dir_;
  engine::JournalProbe* const probe_;
  const uint64_t disk_free_min_bytes_;
  uint64_t disk_checked_ms_ = 0;
  uint64_t disk_free_bytes_ = UINT64_MAX;
  // WAL bytes durable but not yet flushed to RocksDB: the checkpoint will
  // need about that much disk, so pushes stop early enough to leave it.
  std::deque<std::pair<uint64_t, uint64_t>> unflushed_;  // (last lsn, bytes)
  uint64_t unflushed_bytes_ = 0;
};

}  // namespace ringq::storage
