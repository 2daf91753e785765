// Journal: the hook where the write-ahead log sits.
//
// Every mutation of scheduler state appends one Record and gets its LSN. A
// reply that depends on a mutation is released only when durable_lsn() has
// reached that LSN (the shard enforces this), and a pushed job becomes
// visible to workers only then (the scheduler enforces this).
//
// Thread: owned by one shard; all calls on the shard thread.
// Invariant: durable_lsn() <= last_lsn(); both only grow.
//
// MemoryJournal commits at once: NO DURABILITY. The WAL (uring/) replaces it.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

#include "service/engine/status.h"

namespace ringq::engine {

struct Job;

// Record types are part of the on-disk format once the WAL lands: never
// renumber; new types take new numbers.
enum class RecordType : uint8_t {
  kPush = 1,       // job: the whole job as pushed
  kLease = 2,      // job_id, token, expiry: a delivery
  kAck = 3,        // job_id (+ result)
  kFail = 4,       // job_id, error, next state
  kExtend = 5,     // job_id, new expiry
  kCancel = 6,     // job_id, reason
  kExpire = 7,     // job_id: lease expiry or TTL, next state
  kPause = 8,      // queue
  kResume = 9,     // queue
  kRetryDead = 10, // job_id
  kPurgeDead = 11, // job_id
  kForget = 12,    // job_id: dropped by retention
  kPromote = 13,   // job_id: delayed -> waiting
};

struct Record {
  RecordType type;
  uint64_t job_id = 0;       // 0 for queue-level records
  const Job* job = nullptr;  // the job after the change, when there is one
  std::string_view queue;
};

class Journal {
 public:
  virtual ~Journal() = default;
  // Appends a record to the log buffer; returns its LSN. Logically appended,
  // not durable.
  virtual uint64_t Append(const Record& record) = 0;
  // Starts making everything appended durable (group commit point).
  virtual void Submit() = 0;
  virtual uint64_t last_lsn() const = 0;
  virtual uint64_t durable_lsn() const = 0;

  // For the shard's wait: a file descriptor that turns readable when a
  // commit may have completed (-1: none), and the next time Reap must run
  // even without it.
  virtual int wake_fd() const { return -1; }
  virtual uint64_t NextWakeMs() const { return std::numeric_limits<uint64_t>::max(); }
  // Collects completed commits (advances durable_lsn) and does housekeeping.
  virtual void Reap() {}
  // Nothing appended is waiting to become durable.
  virtual bool Idle() const { return durable_lsn() == last_lsn(); }
  // Whether a push may be accepted now (disk space); other records always are.
  virtual Status CheckPushSpace() const { return Status::Ok(); }
};

// Commits every record at once; keeps nothing. No durability.
class MemoryJournal final : public Journal {
 public:
  uint64_t Append(const Record&) override { return ++lsn_; }
  void Submit() override {}
  uint64_t last_lsn() const override { return lsn_; }
  uint64_t durable_lsn() const override { return lsn_; }

 private:
  uint64_t lsn_ = 0;
};

}  // namespace ringq::engine
