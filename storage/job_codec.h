// The on-disk encoding of jobs and of WAL record payloads. The same bytes go
// to the WAL and, coalesced, to RocksDB, so recovery decodes one format.
//
// Little-endian, length-prefixed strings (varint lengths), a version byte
// first. Decoding checks every length against the buffer: a bad buffer is an
// error value, never a crash or an out-of-bounds read.
//
// WAL record payloads by engine::RecordType:
//   kPush                       spec + state (the whole job)
//   kLease, kAck, kFail,
//   kExpire, kCancel, kRetryDead  state (+ result for kAck)
//   kForget, kPurgeDead         id, queue, was_dead
//   kPause, kResume             queue
//   kExtend, kPromote           not logged: a lease is not recovered (active
//                               jobs come back waiting) and a promotion
//                               follows from run_at.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "service/engine/job.h"
#include "service/engine/journal.h"

namespace ringq::storage {

// Immutable part of a job (CF "jobs"): written once.
void EncodeSpec(const engine::Job& job, std::string* out);
// Mutable part (CF "job_state").
void EncodeState(const engine::Job& job, std::string* out);
[[nodiscard]] bool DecodeSpec(std::string_view in, engine::Job* job);
[[nodiscard]] bool DecodeState(std::string_view in, engine::Job* job);

// Whether a record type is written to the WAL at all.
bool IsLogged(engine::RecordType type);
// Encodes the payload of a logged record.
void EncodeRecordPayload(const engine::Record& r, std::string* out);

struct DecodedRecord {
  engine::RecordType type;
  uint64_t id = 0;
  std::string queue;
  std::optional<engine::Job> job;  // spec (kPush) and/or state fields
  std::string spec_bytes;          // kPush: the encoded spec, as stored
  std::string state_bytes;         // state-carrying records: the encoded state
  std::optional<std::string> result;
  bool was_dead = false;           // kForget / kPurgeDead
};

[[nodiscard]] bool DecodeRecordPayload(uint8_t type, std::string_view payload, DecodedRecord* out);

// RocksDB keys: the job id rotated right by engine::kShardBits, big-endian,
// so the shard (the id's low bits) comes first: a scan yields each shard's
// jobs as one run in id order (recovery needs that), and a checkpoint, which
// writes one shard's jobs in id order, appends to the memtable instead of
// weaving between the other shards' keys (bench/RESULTS.md). Dead index:
// queue + '\0' + IdKey(id).
// Layout 1 (ids big-endian, shard last) was never released; layout 2 is this
// one. The store records it (Store::KeyLayout) and recovery refuses another.
inline constexpr uint32_t kJobKeyLayout = 2;
std::string IdKey(uint64_t id);
uint64_t IdFromKey(std::string_view key);
std::string DeadKey(std::string_view queue, uint64_t id);

}  // namespace ringq::storage
