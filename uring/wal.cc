#include "uring/wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <limits>

#include "uring/crash_point.h"
#include "uring/ring.h"
#include "uring/wal_format.h"

namespace ringq::uring {

namespace {

[[noreturn]] void FailStop(const std::string& what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): WAL %s: %s; restart recovers from the log\n",
               what.c_str(), std::strerror(err));
  std::abort();
}

uint64_t MonoNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

const char* DurabilityName(Durability d) { return d == Durability::kSync ? "sync" : "batch"; }
const char* IoBackendName(IoBackendKind b) {
  // The portable backend is epoll for the network and pwrite+fdatasync on an
  // I/O thread for the WAL: named after its event loop.
  return b == IoBackendKind::kUring ? "io_uring" : "epoll";
}

IoBackendKind ChooseIoBackend(std::string* why) {
  const char* env = std::getenv("RINGQ_IO");
  if (env != nullptr && (std::strcmp(env, "epoll") == 0 || std::strcmp(env, "portable") == 0)) {
    *why = std::string("forced by RINGQ_IO=") + env;
    return IoBackendKind::kPortable;
  }
  if (MakeUringBackend() != nullptr) {
    *why = env != nullptr ? "forced by RINGQ_IO=uring" : "io_uring_setup works";
    return IoBackendKind::kUring;
  }
  if (env != nullptr && std::strcmp(env, "uring") == 0) {
    std::fprintf(stderr, "ringqd: RINGQ_IO=uring but io_uring cannot be set up here\n");
    std::exit(1);
  }
  *why = "io_uring_setup failed (old kernel, kernel.io_uring_disabled, or a seccomp profile)";
  return IoBackendKind::kPortable;
}

Wal::Wal(const WalOptions& options, uint64_t next_lsn)
    : options_(options), next_lsn_(next_lsn), durable_lsn_(next_lsn - 1) {
  if (next_lsn == 0) FailStop("next lsn is 0", EINVAL);
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  if (ec) FailStop("create " + options_.dir, ec.value());
  if (options_.backend == IoBackendKind::kUring && options_.ring != nullptr) {
    backend_ = MakeUringBackend(options_.ring);
    shared_ring_ = options_.ring;
  } else if (options_.backend == IoBackendKind::kUring) {
    backend_ = MakeUringBackend();
  }
  if (!backend_) backend_ = MakePortableBackend();
  // Leftovers: recovery replayed and retired older segments; a spare from a
  // previous run is just removed.
  std::filesystem::remove(options_.dir + "/spare.tmp", ec);
  for (const auto& e : std::filesystem::directory_iterator(options_.dir)) {
    uint64_t first;
    if (ParseSegmentName(e.path().filename().string(), &first)) {
      if (first >= next_lsn) FailStop("segment " + e.path().string() + " is ahead of recovery", EINVAL);
      segments_.push_back(Segment{first, next_lsn - 1, e.path().string()});
      disk_bytes_ += std::filesystem::file_size(e.path(), ec);
    }
  }
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.first_lsn < b.first_lsn; });
  RollTo(next_lsn);
}

Wal::~Wal() {
  // The shard drains first; should anything still fly, wait for it: the
  // backend writes from in_flight_chunk_ (bounded: 10 s, then fail-stop).
  // On a shared ring nobody else dispatches now: drive it here (the network
  // loop was stopped first, wal.h).
  constexpr uint64_t kRingWaitMs = 10;
  const uint64_t give_up = MonoNs() + 10'000'000'000ull;
  while (in_flight_) {
    if (MonoNs() > give_up) FailStop("write still in flight at close", ETIMEDOUT);
    if (backend_->Poll()) {
      in_flight_ = false;
    } else if (shared_ring_ != nullptr) {
      shared_ring_->SubmitAndWait(kRingWaitMs);
    }
  }
  if (fd_ >= 0) close(fd_);
  if (spare_fd_ >= 0) {
    close(spare_fd_);
    unlink(spare_path_.c_str());
  }
}

uint64_t Wal::Append(uint8_t type, std::string_view payload) {
  // A chunk fits one write and one segment (a lone record may exceed one
  // write; the flags make it fit a segment).
  const size_t chunk_max = std::min<uint64_t>(kWriteBytesMax, options_.segment_bytes);
  if (!open_.empty() && open_.size() + EncodedSize(payload.size()) > chunk_max) CloseChunk();
  if (EncodedSize(payload.size()) > options_.segment_bytes) {
    FailStop("record of " + std::to_string(payload.size()) + " bytes exceeds a segment", E2BIG);
  }
  const uint64_t lsn = next_lsn_++;
  if (open_.empty()) open_first_lsn_ = lsn;
  EncodeRecord(lsn, type, payload, &open_);
  if (!options_.group_commit) CloseChunk();
  return lsn;
}

void Wal::CloseChunk() {
  if (open_.empty()) return;
  Chunk c;
  c.first_lsn = open_first_lsn_;
  c.last_lsn = next_lsn_ - 1;  // every record appended so far is in open_ or closed chunks
  c.bytes = std::move(open_);
  open_.clear();
  open_.reserve(64 << 10);
  pending_.push_back(std::move(c));
}

void Wal::Submit(uint64_t now_ms) {
  if (in_flight_) return;
  CloseChunk();
  StartNext(now_ms);
}

void Wal::StartNext(uint64_t now_ms) {
  if (in_flight_) return;
  const bool batch = options_.durability == Durability::kBatch;
  if (pending_.empty()) {
    if (batch && unsynced_bytes_ > 0 && now_ms >= last_sync_ms_ + options_.sync_interval_ms) {
      in_flight_chunk_ = Chunk{};
      in_flight_ = true;
      in_flight_sync_ = true;
      in_flight_started_ns_ = MonoNs();
      backend_->Start(fd_, write_offset_, nullptr, 0, true);
    }
    return;
  }
  Chunk& c = pending_.front();
  // Batch mode: the unsynced region never exceeds one write (the torn-tail
  // rule of wal_format.h): sync what is written before writing more.
  if (batch && unsynced_bytes_ > 0 && unsynced_bytes_ + c.bytes.size() > kWriteBytesMax) {
    in_flight_chunk_ = Chunk{};
    in_flight_ = true;
    in_flight_sync_ = true;
    in_flight_started_ns_ = MonoNs();
    backend_->Start(fd_, write_offset_, nullptr, 0, true);
    return;
  }
  if (write_offset_ + c.bytes.size() > options_.segment_bytes && write_offset_ > 0) {
    RollTo(c.first_lsn);
  }
  in_flight_chunk_ = std::move(c);
  pending_.pop_front();
  // Batch mode syncs on its interval, and before the unsynced region could
  // exceed one write (the torn-tail rule of wal_format.h).
  const bool sync = !batch || now_ms >= last_sync_ms_ + options_.sync_interval_ms;
  in_flight_ = true;
  in_flight_sync_ = sync;
  in_flight_started_ns_ = MonoNs();
  if (CrashPointArmed()) {
    // The write reaches the file (page cache), the sync never happens.
    const std::string detail = "unsynced " + segments_.back().path + " bytes " +
                               std::to_string(write_offset_) + ".." +
                               std::to_string(write_offset_ + in_flight_chunk_.bytes.size());
    if (pwrite(fd_, in_flight_chunk_.bytes.data(), in_flight_chunk_.bytes.size(),
               static_cast<off_t>(write_offset_)) >= 0) {
      CrashPoint("wal_after_write_before_sync", detail.c_str());
    }
  }
  backend_->Start(fd_, write_offset_, in_flight_chunk_.bytes.data(), in_flight_chunk_.bytes.size(),
                  sync);
}

void Wal::Reap(uint64_t now_ms) {
  if (in_flight_ && backend_->Poll()) {
    in_flight_ = false;
    const size_t n = in_flight_chunk_.bytes.size();
    if (in_flight_chunk_.first_lsn != 0) {
      records_since_sync_ += in_flight_chunk_.last_lsn - in_flight_chunk_.first_lsn + 1;
      bytes_since_sync_ += n;
    }
    if (in_flight_sync_) {
      const uint64_t ns = MonoNs() - in_flight_started_ns_;
      unsynced_bytes_ = 0;
      last_sync_ms_ = now_ms;
      ++stats_.syncs;
      stats_.sync_ns_total += ns;
      if (samples_.size() < 4096) samples_.push_back(SyncSample{ns, records_since_sync_, bytes_since_sync_});
      records_since_sync_ = 0;
      bytes_since_sync_ = 0;
    } else {
      unsynced_bytes_ += n;
    }
    if (in_flight_chunk_.first_lsn != 0) {
      CrashPoint("wal_after_sync_before_reply");
      write_offset_ += n;
      segments_.back().last_lsn = in_flight_chunk_.last_lsn;
      durable_lsn_ = in_flight_chunk_.last_lsn;
      stats_.records += in_flight_chunk_.last_lsn - in_flight_chunk_.first_lsn + 1;
      stats_.bytes += n;
      committed_.push_back(CommittedChunk{in_flight_chunk_.first_lsn, in_flight_chunk_.last_lsn,
                                          std::move(in_flight_chunk_.bytes)});
    }
    in_flight_chunk_ = Chunk{};
  }
  Submit(now_ms);
}

std::vector<CommittedChunk> Wal::TakeCommitted() {
  std::vector<CommittedChunk> out;
  out.swap(committed_);
  return out;
}

uint64_t Wal::NextWakeMs() const {
  if (options_.durability == Durability::kBatch && unsynced_bytes_ > 0 && !in_flight_) {
    return last_sync_ms_ + options_.sync_interval_ms;
  }
  return std::numeric_limits<uint64_t>::max();
}

Wal::SyncStats Wal::TakeStats() {
  SyncStats s = stats_;
  stats_ = SyncStats{};
  return s;
}

int Wal::CreateSegmentFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  // Preallocate: writes into the segment never need new blocks (no ENOSPC
  // mid-write, no metadata update per fdatasync).
  int rc = posix_fallocate(fd, 0, static_cast<off_t>(options_.segment_bytes));
  if (rc != 0) {
    close(fd);
    unlink(path.c_str());
    return -rc;
  }
  if (fdatasync(fd) != 0) FailStop("fdatasync of new segment " + path, errno);
  return fd;
}

void Wal::SyncDir() {
  int dfd = open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) FailStop("open dir " + options_.dir, errno);
  if (fsync(dfd) != 0) FailStop("fsync dir " + options_.dir, errno);
  close(dfd);
}

void Wal::PreallocateSpare() {
  if (spare_fd_ >= 0) return;
  if (disk_bytes_ + options_.segment_bytes > options_.wal_bytes_max) {
    space_ok_ = false;
    return;
  }
  spare_path_ = options_.dir + "/spare.tmp";
  int fd = CreateSegmentFile(spare_path_);
  if (fd < 0) {
    if (fd != -ENOSPC && fd != -EDQUOT) FailStop("preallocate " + spare_path_, -fd);
    space_ok_ = false;
    return;
  }
  spare_fd_ = fd;
  disk_bytes_ += options_.segment_bytes;
  space_ok_ = true;
}

void Wal::RollTo(uint64_t first_lsn) {
  if (fd_ >= 0) {
    // Batch mode may have written without syncing: the old segment is synced
    // before records go to the next one (the torn-tail rule holds per log).
    if (unsynced_bytes_ > 0 && fdatasync(fd_) != 0) FailStop("fdatasync before roll", errno);
    unsynced_bytes_ = 0;
    close(fd_);
    fd_ = -1;
  }
  const std::string path = options_.dir + "/" + SegmentName(first_lsn);
  if (spare_fd_ >= 0) {
    if (rename(spare_path_.c_str(), path.c_str()) != 0) FailStop("rename spare segment", errno);
    CrashPoint("wal_mid_roll");
    fd_ = spare_fd_;
    spare_fd_ = -1;
  } else {
    if (disk_bytes_ + options_.segment_bytes > options_.wal_bytes_max && !segments_.empty()) {
      // Nothing left for the records already acknowledged to clients in
      // memory: stopping is the only safe answer (recovery replays the log).
      FailStop("segment needed past --wal-bytes-max", ENOSPC);
    }
    int fd = CreateSegmentFile(path);
    if (fd < 0) FailStop("create segment " + path, -fd);
    fd_ = fd;
    disk_bytes_ += options_.segment_bytes;
  }
  SyncDir();  // the new name is durable before any record relies on it
  write_offset_ = 0;
  segments_.push_back(Segment{first_lsn, 0, path});
  // The next segment is ready before this one can fill: a roll never needs
  // new space, and when there is none, pushes stop while acks still fit.
  PreallocateSpare();
}

void RetireSegmentFile(const std::string& dir, const std::string& path, bool archive) {
  if (!archive) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) FailStop("unlink " + path, errno);
    return;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir + "/archive", ec);
  const std::string to = dir + "/archive/" + std::filesystem::path(path).filename().string();
  if (rename(path.c_str(), to.c_str()) != 0) FailStop("archive " + path, errno);
}

void Wal::RetireThrough(uint64_t lsn) {
  bool removed = false;
  while (segments_.size() > 1) {
    const Segment& s = segments_.front();
    // Its records end where the next segment begins.
    const uint64_t last = segments_[1].first_lsn - 1;
    if (last > lsn) break;
    RetireSegmentFile(options_.dir, s.path, options_.archive);
    disk_bytes_ -= std::min(disk_bytes_, options_.segment_bytes);
    segments_.pop_front();
    removed = true;
  }
  if (removed) {
    SyncDir();
    if (!space_ok_ && spare_fd_ < 0) PreallocateSpare();
  }
}

}  // namespace ringq::uring
