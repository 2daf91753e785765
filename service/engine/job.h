// The job model of the engine: what a producer asks for (JobSpec), what the
// scheduler keeps (Job), what a worker receives (Delivery), and the limits
// every request is checked against.
//
// These are plain structs with no I/O and no protobuf: the API layer converts
// at the edge. Times are epoch milliseconds from the injected Clock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "service/engine/status.h"

namespace ringq::engine {

enum class JobState : uint8_t {
  kWaiting = 1,
  kDelayed = 2,
  kActive = 3,
  kCompleted = 4,
  kDead = 5,
  kCancelled = 6,
  kExpired = 7,
};

const char* JobStateName(JobState s);
inline bool IsLive(JobState s) {
  return s == JobState::kWaiting || s == JobState::kDelayed || s == JobState::kActive;
}

enum class BackoffKind : uint8_t { kExponential = 0, kFixed = 1 };

struct Backoff {
  BackoffKind kind = BackoffKind::kExponential;
  uint32_t base_ms = 0;     // 0 = default
  uint32_t cap_ms = 0;      // 0 = default
  uint32_t jitter_pct = 0;  // 0..100
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// What a producer asks for. Zero fields mean "default" where JobSpec in the
// proto says so; Validate() resolves them.
struct JobSpec {
  std::string queue;
  std::string payload;
  int32_t priority = 0;
  uint64_t delay_ms = 0;
  uint64_t run_at_ms = 0;
  uint32_t max_attempts = 0;
  Backoff backoff;
  uint32_t lease_ms = 0;
  uint64_t ttl_ms = 0;
  std::string unique_key;
  Headers headers;
  std::string group;
};

// Named limits (STYLE.md "Bounds"). Each is a ringqd flag; hitting one is a
// clear error, never growth.
struct Limits {
  static constexpr uint32_t kQueueNameBytesMax = 128;
  static constexpr int32_t kPriorityAbsMax = 1'000'000;
  static constexpr uint64_t kDelayMsMax = 365ull * 24 * 3600 * 1000;
  static constexpr uint32_t kMaxAttemptsMax = 1000;
  static constexpr uint32_t kLeaseMsMin = 100;
  static constexpr uint32_t kLeaseMsMax = 12u * 3600 * 1000;
  static constexpr uint32_t kBackoffBaseMsMax = 24u * 3600 * 1000;
  static constexpr uint32_t kBackoffCapMsMax = 7u * 24 * 3600 * 1000;
  static constexpr uint32_t kUniqueKeyBytesMax = 256;
  static constexpr uint32_t kHeadersMax = 64;
  static constexpr uint32_t kHeaderKeyBytesMax = 128;
  static constexpr uint32_t kHeaderValueBytesMax = 4096;
  static constexpr uint32_t kGroupBytesMax = 128;
  static constexpr uint32_t kErrorBytesMax = 4096;
  static constexpr uint32_t kSubscribeQueuesMax = 16;
  static constexpr uint32_t kListLimitMax = 1000;

  uint32_t payload_bytes_max = 1u << 20;
  uint32_t result_bytes_max = 1u << 20;
  uint32_t batch_max = 10'000;
  uint64_t queue_jobs_max = 10'000'000;  // live (waiting+delayed+active) per queue
  uint32_t queues_max = 100'000;         // per shard
  uint32_t default_max_attempts = 3;
  uint32_t default_lease_ms = 30'000;
  uint32_t default_backoff_base_ms = 1'000;
  uint32_t default_backoff_cap_ms = 3'600'000;
  uint64_t completed_retention_count = 1'000;  // per queue, terminal jobs kept
  uint64_t completed_retention_ms = 3'600'000;
  uint64_t dead_max = 100'000;  // per queue; the oldest is forgotten past it
  uint32_t fetch_wait_ms_max = 30'000;
  uint32_t fetch_waiters_max = 10'000;  // per shard
  uint32_t subscribe_credits_max = 10'000;
};

// What the scheduler keeps per job. Owned by one shard's scheduler.
struct Job {
  uint64_t id = 0;
  std::string queue;
  std::shared_ptr<const std::string> payload;  // shared with deliveries, never copied
  int32_t priority = 0;
  JobState state = JobState::kWaiting;
  uint32_t attempts = 0;
  uint32_t max_attempts = 0;
  Backoff backoff;
  uint32_t lease_ms = 0;
  uint64_t ttl_ms = 0;
  std::string unique_key;
  Headers headers;
  std::string group;
  uint64_t created_at_ms = 0;
  uint64_t run_at_ms = 0;
  uint64_t finished_at_ms = 0;
  std::string last_error;
  std::string reason;
  std::string result;
  uint64_t lease_expires_at_ms = 0;
  uint64_t lease_token = 0;  // 0 when not active
  uint64_t generation = 0;   // bumped on every state change; stale index entries skip
  // When the current (or last) attempt was leased. In memory only: it feeds
  // the processing-time metric and need not survive a restart.
  uint64_t leased_at_ms = 0;
};

// A job handed to a worker: a snapshot of the job and its lease.
struct Delivery {
  Job job;  // snapshot; payload shared
  uint64_t lease_token = 0;
  uint64_t lease_expires_at_ms = 0;
};

// Checks a spec against the limits and fills its defaults. Does not look at
// any state (unique keys and queue depth are the scheduler's).
Status ValidateSpec(JobSpec& spec, const Limits& limits);
Status ValidateQueueName(std::string_view name, std::string_view field = "queue");
Status ValidateLeaseMs(uint64_t lease_ms, std::string_view field);

}  // namespace ringq::engine
