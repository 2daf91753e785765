#include "storage/wal_journal.h"

#include <sys/statvfs.h>

#include <chrono>
#include <limits>

#include "storage/job_codec.h"

namespace ringq::storage {

namespace {
uint64_t MonoMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

WalJournal::WalJournal(std::unique_ptr<uring::Wal> wal, std::unique_ptr<Checkpointer> cp,
                       std::string data_dir, uint64_t disk_free_min_bytes,
                       engine::JournalProbe* probe)
    : wal_(std::move(wal)), checkpointer_(std::move(cp)), data_dir_(std::move(data_dir)),
      probe_(probe), disk_free_min_bytes_(disk_free_min_bytes) {
  checkpointer_->Start();
  CheckDiskFree();
}

// At most every 100 ms: statvfs is cheap but not free.
void WalJournal::CheckDiskFree() {
  if (data_dir_.empty() || disk_free_min_bytes_ == 0) return;
  const uint64_t now = MonoMs();
  if (disk_checked_ms_ != 0 && now < disk_checked_ms_ + 100) return;
  disk_checked_ms_ = now;
  struct statvfs v;
  if (statvfs(data_dir_.c_str(), &v) == 0) {
    disk_free_bytes_ = static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
  }
}

WalJournal::~WalJournal() {
  // Hand over what became durable, then let the checkpointer apply and flush it.
  checkpointer_->Enqueue(wal_->TakeCommitted());
  checkpointer_->Stop();
}

uint64_t WalJournal::Append(const engine::Record& record) {
  if (!IsLogged(record.type)) return wal_->last_lsn();
  scratch_.clear();
  EncodeRecordPayload(record, &scratch_);
  return wal_->Append(static_cast<uint8_t>(record.type), scratch_);
}

void WalJournal::Submit() {
  // Backpressure: while the checkpointer is far behind, no new WAL write
  // starts, so replies wait instead of memory growing.
  throttled_ = checkpointer_->backlog_bytes() > Checkpointer::kBacklogBytesMax;
  if (!throttled_) wal_->Submit(MonoMs());
}

uint64_t WalJournal::NextWakeMs() const {
  // The shard's clock is epoch ms, the WAL's monotonic ms: convert the delay.
  const uint64_t now_mono = MonoMs();
  uint64_t wal_next = wal_->NextWakeMs();
  if (throttled_) wal_next = now_mono + 5;
  if (wal_next == std::numeric_limits<uint64_t>::max()) return wal_next;
  const uint64_t delay = wal_next > now_mono ? wal_next - now_mono : 0;
  const uint64_t now_epoch = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  return now_epoch + delay;
}

void WalJournal::Reap() {
  wal_->Reap(MonoMs());
  auto chunks = wal_->TakeCommitted();
  for (const auto& c : chunks) {
    unflushed_.emplace_back(c.last_lsn, c.bytes.size());
    unflushed_bytes_ += c.bytes.size();
  }
  if (!chunks.empty()) checkpointer_->Enqueue(std::move(chunks));
  const uint64_t flushed = checkpointer_->flushed_lsn();
  while (!unflushed_.empty() && unflushed_.front().first <= flushed) {
    unflushed_bytes_ -= unflushed_.front().second;
    unflushed_.pop_front();
  }
  wal_->RetireThrough(flushed);
  if (probe_ != nullptr) {
    for (const auto& s : wal_->TakeSyncSamples()) probe_->Synced(s.ns, s.records, s.bytes);
    probe_->SetLogBytes(wal_->disk_bytes());
  } else {
    (void)wal_->TakeSyncSamples();
  }
  CheckDiskFree();
}

engine::Status WalJournal::CheckPushSpace() const {
  // Room for the next checkpoint (about twice the unflushed WAL bytes: the
  // SST files, and a compaction) comes on top of the configured headroom.
  const uint64_t needed = disk_free_min_bytes_ == 0 ? 0 : disk_free_min_bytes_ + 2 * unflushed_bytes_;
  if (disk_free_bytes_ < needed) {
    return engine::ResourceExhausted(
        "the data disk has " + std::to_string(disk_free_bytes_ >> 20) + " MiB free; pushes need " +
        std::to_string(needed >> 20) + " MiB (--disk-free-min-bytes " +
        std::to_string(disk_free_min_bytes_ >> 20) +
        " MiB plus room to checkpoint the WAL); pushes resume when space returns");
  }
  if (wal_->space_ok()) return engine::Status::Ok();
  return engine::ResourceExhausted(
      "the WAL has no space for more jobs (--wal-bytes-max or the disk is full); pushes resume "
      "when checkpoints free old segments");
}

}  // namespace ringq::storage
