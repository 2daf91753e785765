#include "storage/checkpointer.h"

#include <pthread.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "storage/job_codec.h"
#include "uring/crash_point.h"
#include "uring/wal_format.h"

namespace ringq::storage {

namespace {
[[noreturn]] void FailStop(const std::string& what) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): checkpoint: %s; restart recovers from the WAL\n",
               what.c_str());
  std::abort();
}
}  // namespace

Checkpointer::Checkpointer(Store& store, uint32_t shard, uint64_t applied_lsn,
                           CheckpointOptions options)
    : store_(store), shard_(shard), options_(options), flushed_lsn_(applied_lsn) {}

Checkpointer::~Checkpointer() { Stop(); }

void Checkpointer::Start() {
  thread_ = std::thread([this] {
    const std::string name = "checkpoint-" + std::to_string(shard_);  // top -H, gdb
    pthread_setname_np(pthread_self(), name.c_str());
    Run();
  });
}

void Checkpointer::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Checkpointer::Enqueue(std::vector<uring::CommittedChunk>&& chunks) {
  if (chunks.empty()) return;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(mu_);
    for (auto& c : chunks) {
      bytes += c.bytes.size();
      queue_.push_back(std::move(c));
    }
  }
  backlog_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  cv_.notify_one();
}

void Checkpointer::ApplyChunk(const uring::CommittedChunk& c) {
  std::span<const uint8_t> buf(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size());
  auto r = uring::ScanRecords(buf, c.first_lsn, [&](const uring::ScannedRecord& rec) {
    DecodedRecord d;
    if (!DecodeRecordPayload(rec.type, rec.payload, &d)) {
      FailStop("record " + std::to_string(rec.lsn) + " does not decode");
    }
    window_.Apply(rec.lsn, std::move(d));
  });
  // These bytes were encoded and checked by this process: anything but a
  // clean, complete scan is a bug.
  if (r.stop != uring::ScanStop::kEnd || r.valid_bytes != c.bytes.size() ||
      r.last_lsn != c.last_lsn) {
    FailStop("committed chunk " + std::to_string(c.first_lsn) + " does not scan: " + r.reason);
  }
}

void Checkpointer::Checkpoint() {
  if (!pending_) {
    if (window_.empty() && window_.last_lsn() <= flushed_lsn()) return;
    pending_ = std::make_unique<rocksdb::WriteBatch>();
    pending_lsn_ = window_.last_lsn();
    pending_written_ = false;
    window_.WriteTo(store_, shard_, pending_.get());
  } else if (auto r = store_.Resume(); !r.ok() && r.code() != engine::Code::kResourceExhausted) {
    FailStop(r.message());
  }
  uring::CrashPoint("checkpoint_before_write");
  if (!pending_written_) {
    auto s = store_.Write(pending_.get());
    if (!s.ok()) return Postpone(s);
    pending_written_ = true;
  }
  uring::CrashPoint("checkpoint_after_write_before_flush");
  if (auto s = store_.Flush(); !s.ok()) return Postpone(s);
  if (logged_full_) {
    std::fprintf(stderr, "ringqd: checkpoint of shard %u done again: disk space is back\n", shard_);
    logged_full_ = false;
  }
  pending_.reset();
  flushed_lsn_.store(pending_lsn_, std::memory_order_release);
  checkpoints_.fetch_add(1, std::memory_order_relaxed);
}

void Checkpointer::Postpone(const engine::Status& s) {
  if (s.code() != engine::Code::kResourceExhausted) FailStop(s.message());
  if (!logged_full_) {
    std::fprintf(stderr,
                 "ringqd: checkpoint of shard %u postponed: %s; the WAL keeps everything and "
                 "the checkpoint is retried\n",
                 shard_, s.message().c_str());
    logged_full_ = true;
  }
}

void Checkpointer::Run() {
  using Clock = std::chrono::steady_clock;
  auto last = Clock::now();
  while (true) {
    std::deque<uring::CommittedChunk> work;
    bool stopping;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(options_.interval_ms),
                   [&] { return stop_ || !queue_.empty(); });
      work.swap(queue_);
      stopping = stop_;
    }
    uint64_t bytes = 0;
    for (const auto& c : work) {
      ApplyChunk(c);
      bytes += c.bytes.size();
    }
    backlog_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    const bool due = Clock::now() - last >= std::chrono::milliseconds(options_.interval_ms);
    if (stopping || due || pending_ || window_.bytes() >= options_.window_bytes_max) {
      Checkpoint();
      last = Clock::now();
    }
    if (stopping) {
      std::lock_guard lock(mu_);
      if (queue_.empty()) return;
    }
  }
}

}  // namespace ringq::storage
