#include "service/engine/job.h"

#include <string>

namespace ringq::engine {

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kWaiting: return "waiting";
    case JobState::kDelayed: return "delayed";
    case JobState::kActive: return "active";
    case JobState::kCompleted: return "completed";
    case JobState::kDead: return "dead";
    case JobState::kCancelled: return "cancelled";
    case JobState::kExpired: return "expired";
  }
  return "unknown";
}

namespace {

bool QueueNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

std::string Field(std::string_view f) { return std::string(f); }

}  // namespace

Status ValidateQueueName(std::string_view name, std::string_view field) {
  if (name.empty()) return InvalidArgument(Field(field) + " is empty; give 1..128 characters");
  if (name.size() > Limits::kQueueNameBytesMax) {
    return InvalidArgument(Field(field) + " is " + std::to_string(name.size()) +
                           " bytes; at most 128");
  }
  for (char c : name) {
    if (!QueueNameChar(c)) {
      return InvalidArgument(Field(field) + " has a character outside [A-Za-z0-9._:-]");
    }
  }
  return Status::Ok();
}

Status ValidateLeaseMs(uint64_t lease_ms, std::string_view field) {
  if (lease_ms < Limits::kLeaseMsMin || lease_ms > Limits::kLeaseMsMax) {
    return InvalidArgument(Field(field) + " is " + std::to_string(lease_ms) + "; must be 100.." +
                           std::to_string(Limits::kLeaseMsMax));
  }
  return Status::Ok();
}

namespace {

Status ValidateBackoff(Backoff& b, const Limits& limits) {
  if (b.base_ms == 0) b.base_ms = limits.default_backoff_base_ms;
  if (b.cap_ms == 0) b.cap_ms = std::max(limits.default_backoff_cap_ms, b.base_ms);
  if (b.base_ms > Limits::kBackoffBaseMsMax) {
    return InvalidArgument("backoff.base_ms is " + std::to_string(b.base_ms) + "; at most " +
                           std::to_string(Limits::kBackoffBaseMsMax));
  }
  if (b.cap_ms > Limits::kBackoffCapMsMax) {
    return InvalidArgument("backoff.cap_ms is " + std::to_string(b.cap_ms) + "; at most " +
                           std::to_string(Limits::kBackoffCapMsMax));
  }
  if (b.cap_ms < b.base_ms) {
    return InvalidArgument("backoff.cap_ms (" + std::to_string(b.cap_ms) +
                           ") is below backoff.base_ms (" + std::to_string(b.base_ms) + ")");
  }
  if (b.jitter_pct > 100) {
    return InvalidArgument("backoff.jitter_pct is " + std::to_string(b.jitter_pct) +
                           "; must be 0..100");
  }
  return Status::Ok();
}

Status ValidateHeaders(const Headers& headers) {
  if (headers.size() > Limits::kHeadersMax) {
    return InvalidArgument("headers has " + std::to_string(headers.size()) +
                           " entries; at most 64");
  }
  for (const auto& [k, v] : headers) {
    if (k.empty() || k.size() > Limits::kHeaderKeyBytesMax) {
      return InvalidArgument("a headers key is " + std::to_string(k.size()) +
                             " bytes; must be 1..128");
    }
    if (v.size() > Limits::kHeaderValueBytesMax) {
      return InvalidArgument("headers[" + k + "] is " + std::to_string(v.size()) +
                             " bytes; at most 4096");
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateSpec(JobSpec& spec, const Limits& limits) {
  if (Status s = ValidateQueueName(spec.queue); !s.ok()) return s;
  if (spec.payload.size() > limits.payload_bytes_max) {
    return ResourceExhausted("payload is " + std::to_string(spec.payload.size()) +
                             " bytes; at most " + std::to_string(limits.payload_bytes_max) +
                             " (--payload-bytes-max)");
  }
  if (spec.priority > Limits::kPriorityAbsMax || spec.priority < -Limits::kPriorityAbsMax) {
    return InvalidArgument("priority is " + std::to_string(spec.priority) +
                           "; must be -1000000..1000000");
  }
  if (spec.delay_ms != 0 && spec.run_at_ms != 0) {
    return InvalidArgument("delay_ms and run_at_ms are both set; give at most one");
  }
  if (spec.delay_ms > Limits::kDelayMsMax) {
    return InvalidArgument("delay_ms is " + std::to_string(spec.delay_ms) + "; at most " +
                           std::to_string(Limits::kDelayMsMax) + " (365 days)");
  }
  if (spec.ttl_ms > Limits::kDelayMsMax) {
    return InvalidArgument("ttl_ms is " + std::to_string(spec.ttl_ms) + "; at most " +
                           std::to_string(Limits::kDelayMsMax) + " (365 days)");
  }
  if (spec.max_attempts == 0) spec.max_attempts = limits.default_max_attempts;
  if (spec.max_attempts > Limits::kMaxAttemptsMax) {
    return InvalidArgument("max_attempts is " + std::to_string(spec.max_attempts) +
                           "; at most 1000");
  }
  if (spec.lease_ms == 0) spec.lease_ms = limits.default_lease_ms;
  if (Status s = ValidateLeaseMs(spec.lease_ms, "lease_ms"); !s.ok()) return s;
  if (Status s = ValidateBackoff(spec.backoff, limits); !s.ok()) return s;
  if (spec.unique_key.size() > Limits::kUniqueKeyBytesMax) {
    return InvalidArgument("unique_key is " + std::to_string(spec.unique_key.size()) +
                           " bytes; at most 256");
  }
  if (spec.group.size() > Limits::kGroupBytesMax) {
    return InvalidArgument("group is " + std::to_string(spec.group.size()) +
                           " bytes; at most 128");
  }
  return ValidateHeaders(spec.headers);
}

}  // namespace ringq::engine
