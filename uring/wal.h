// Wal: one shard's write-ahead log writer with group commit.
//
// Thread: owned by the shard thread; every call on it. The portable backend
// runs its own I/O thread internally.
//
// Done means:
//   after Append()  the record is logically appended (in memory), not durable;
//   after durable_lsn() >= lsn  the record is on disk (fdatasync completed), in
//   --durability=sync. In --durability=batch, durable_lsn() means written to
//   the OS (not fsynced); an fdatasync follows within sync_interval_ms.
//
// Group commit: at most one write (+ linked fdatasync) in flight. Records
// appended while it flies wait in the next chunk; one sync then commits all
// of them. A chunk is at most kWriteBytesMax (one record may exceed it, and
// then goes alone), so the unsynced region of the log never exceeds one
// write: the recovery scanner relies on this to tell a torn tail from
// corruption (wal_format.h).
//
// Invariants: durable_lsn() <= last_lsn(); writes never overlap; a chunk
// never spans two segments.
//
// Errors: an fdatasync error or EIO on a write is fail-stop (log, abort):
// never retry an fsync. EINTR/EAGAIN resubmit, short writes resubmit the
// rest. Out of space is handled ahead: the next segment is preallocated while
// the current one fills; if that fails (ENOSPC, or --wal-bytes-max reached),
// space_ok() turns false and the engine refuses new pushes, while acks and
// fails still fit in what remains.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringq::uring {

class Ring;

enum class Durability : uint8_t { kSync, kBatch };
enum class IoBackendKind : uint8_t { kUring, kPortable };

const char* DurabilityName(Durability d);
const char* IoBackendName(IoBackendKind b);

// Chooses the backend: RINGQ_IO=uring|portable forces one; otherwise io_uring
// when io_uring_setup works here, else portable (and `why` says why).
IoBackendKind ChooseIoBackend(std::string* why);

struct WalOptions {
  std::string dir;                       // this shard's WAL directory
  uint64_t segment_bytes = 64ull << 20;  // preallocated size of a segment file
  Durability durability = Durability::kSync;
  uint32_t sync_interval_ms = 10;        // batch mode only
  uint64_t wal_bytes_max = 16ull << 30;  // segment bytes on disk, this shard
  IoBackendKind backend = IoBackendKind::kUring;
  // false: one record per write+fdatasync (no group commit), for benchmarks
  // that measure what group commit buys.
  bool group_commit = true;
  // Tests only: retired segments move to <dir>/archive/ instead of being
  // deleted, so a checker can replay the whole log (disk use is unbounded).
  bool archive = false;
  // The shard's shared io_uring (ring.h), with backend kUring: the write and
  // its fdatasync are prepared on it and go out with the shard loop's next
  // Ring::SubmitAndWait, together with the network's SQEs. Reap() then only
  // looks at what that dispatch recorded; event_fd() is -1 (the ring's wait
  // is the wakeup). nullptr: the Wal owns a small ring and an eventfd.
  // Not owned; must outlive the Wal.
  Ring* ring = nullptr;
};

// Retires one segment file: deletes it, or moves it to <dir>/archive/.
void RetireSegmentFile(const std::string& dir, const std::string& path, bool archive);

// Writes one buffer then fdatasyncs, asynchronously. One operation in flight.
class SyncBackend {
 public:
  virtual ~SyncBackend() = default;
  // Writes data[0, len) at `offset` of fd (len may be 0), then fdatasync if `sync`.
  virtual void Start(int fd, uint64_t offset, const char* data, size_t len, bool sync) = 0;
  // Non-blocking: true once the operation in flight completed. Fail-stop on error.
  virtual bool Poll() = 0;
  // Readable when a completion may be ready (for the shard's wait); -1 when
  // completions arrive through a shared Ring instead.
  virtual int event_fd() const = 0;
};

std::unique_ptr<SyncBackend> MakeUringBackend();     // nullptr if io_uring cannot be set up
// On the shard's shared ring: Start() prepares the linked SQEs without
// submitting; the ring's dispatch records their results; Poll() never enters
// the kernel nor dispatches (it prepares the rest of a short write itself).
// nullptr `shared`: the same as MakeUringBackend().
std::unique_ptr<SyncBackend> MakeUringBackend(Ring* shared);
std::unique_ptr<SyncBackend> MakePortableBackend();

// A chunk of encoded records that is now durable, for the checkpointer.
struct CommittedChunk {
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  std::string bytes;  // encoded records, back to back
};

class Wal {
 public:
  // Opens the log to append from `next_lsn` in a new segment (recovery has
  // dealt with the old ones). Aborts with a message when the directory
  // cannot be used.
  Wal(const WalOptions& options, uint64_t next_lsn);
  // Waits (bounded: 10 s, then fail-stop) for a write still in flight. With a
  // shared ring it drives ring->SubmitAndWait itself, which dispatches every
  // completion of that ring: stop the network loop (net::Loop::Stop) first.
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  uint64_t Append(uint8_t type, std::string_view payload);
  // Starts the next write if none is in flight and something waits (sync
  // mode), or when the batch interval is due (batch mode).
  void Submit(uint64_t now_ms);
  // Reaps a completion if there is one; then submits what waits.
  void Reap(uint64_t now_ms);
  // Chunks that became durable since the last call, oldest first.
  std::vector<CommittedChunk> TakeCommitted();
  // Deletes segments all of whose records are <= lsn (applied and flushed
  // elsewhere), never the one being written.
  void RetireThrough(uint64_t lsn);

  uint64_t last_lsn() const { return next_lsn_ - 1; }
  uint64_t durable_lsn() const { return durable_lsn_; }
  bool space_ok() const { return space_ok_; }
  uint64_t disk_bytes() const { return disk_bytes_; }
  // -1 with a shared ring (WalOptions::ring): wait on the ring instead.
  int event_fd() const { return backend_->event_fd(); }
  // When Submit should run next even without new records (batch mode), or UINT64_MAX.
  uint64_t NextWakeMs() const;
  bool idle() const { return !in_flight_ && pending_.empty() && open_.empty(); }

  // Per-sync figures for metrics, taken since the last call.
  struct SyncStats {
    uint64_t syncs = 0;
    uint64_t records = 0;
    uint64_t bytes = 0;
    uint64_t sync_ns_total = 0;
  };
  SyncStats TakeStats();

  // One sample per completed fdatasync: how long (submit to completion) and
  // how many records and bytes it made durable. Drained by the caller every
  // loop, so it holds only what one reap produced.
  struct SyncSample {
    uint64_t ns;
    uint64_t records;
    uint64_t bytes;
  };
  std::vector<SyncSample> TakeSyncSamples() {
    std::vector<SyncSample> out;
    out.swap(samples_);
    return out;
  }

 private:
  struct Chunk {
    uint64_t first_lsn = 0;
    uint64_t last_lsn = 0;
    std::string bytes;
  };
  struct Segment {
    uint64_t first_lsn;
    uint64_t last_lsn;  // last record written into it (0: none yet)
    std::string path;
  };

  void StartNext(uint64_t now_ms);
  void RollTo(uint64_t first_lsn);
  void PreallocateSpare();
  int CreateSegmentFile(const std::string& path);
  void SyncDir();
  void CloseChunk();

  const WalOptions options_;
  std::unique_ptr<SyncBackend> backend_;
  Ring* shared_ring_ = nullptr;  // set when backend_ runs on options_.ring
  uint64_t next_lsn_;
  uint64_t durable_lsn_;

  std::string open_;             // records appended since the last closed chunk
  uint64_t open_first_lsn_ = 0;
  std::deque<Chunk> pending_;    // closed, waiting for their write
  Chunk in_flight_chunk_;
  bool in_flight_ = false;
  bool in_flight_sync_ = false;
  uint64_t in_flight_started_ns_ = 0;
  std::vector<CommittedChunk> committed_;

  int fd_ = -1;                  // current segment
  uint64_t write_offset_ = 0;
  std::deque<Segment> segments_; // on disk, oldest first; back() is current
  int spare_fd_ = -1;            // preallocated next segment (temp name), or -1
  std::string spare_path_;
  uint64_t disk_bytes_ = 0;
  bool space_ok_ = true;

  uint64_t unsynced_bytes_ = 0;  // batch mode: written, not fsynced
  uint64_t last_sync_ms_ = 0;
  SyncStats stats_;
  std::vector<SyncSample> samples_;
  uint64_t records_since_sync_ = 0;  // batch mode: written, not yet synced
  uint64_t bytes_since_sync_ = 0;
};

}  // namespace ringq::uring
