#include "service/api/convert.h"

namespace ringq::api {

void ToProto(const engine::Status& s, v1::Error* out) {
  out->set_code(static_cast<uint32_t>(s.code()));
  out->set_message(s.message());
}

engine::Status FromProto(const v1::JobSpec& in, const engine::Limits& limits,
                         engine::JobSpec* out) {
  // Size checks before copying anything big.
  if (in.payload().size() > limits.payload_bytes_max) {
    return engine::ResourceExhausted("payload is " + std::to_string(in.payload().size()) +
                                     " bytes; at most " +
                                     std::to_string(limits.payload_bytes_max) +
                                     " (--payload-bytes-max)");
  }
  if (in.headers_size() > static_cast<int>(engine::Limits::kHeadersMax)) {
    return engine::InvalidArgument("headers has " + std::to_string(in.headers_size()) +
                                   " entries; at most 64");
  }
  out->queue = in.queue();
  out->payload = in.payload();
  out->priority = in.priority();
  out->delay_ms = in.delay_ms();
  out->run_at_ms = in.run_at_ms();
  out->max_attempts = in.max_attempts();
  if (in.has_backoff()) {
    const auto& b = in.backoff();
    switch (b.kind()) {
      case v1::BACKOFF_KIND_UNSPECIFIED:
      case v1::BACKOFF_KIND_EXPONENTIAL: out->backoff.kind = engine::BackoffKind::kExponential; break;
      case v1::BACKOFF_KIND_FIXED: out->backoff.kind = engine::BackoffKind::kFixed; break;
      default: return engine::InvalidArgument("backoff.kind " + std::to_string(b.kind()) +
                                              " is unknown; use FIXED or EXPONENTIAL");
    }
    out->backoff.base_ms = b.base_ms();
    out->backoff.cap_ms = b.cap_ms();
    out->backoff.jitter_pct = b.jitter_pct();
  }
  out->lease_ms = in.lease_ms();
  out->ttl_ms = in.ttl_ms();
  out->unique_key = in.unique_key();
  out->headers.clear();
  out->headers.reserve(in.headers_size());
  for (const auto& [k, v] : in.headers()) out->headers.emplace_back(k, v);
  out->group = in.group();
  return engine::ValidateSpec(*out, limits);
}

v1::JobState ToProto(engine::JobState s) {
  switch (s) {
    case engine::JobState::kWaiting: return v1::JOB_STATE_WAITING;
    case engine::JobState::kDelayed: return v1::JOB_STATE_DELAYED;
    case engine::JobState::kActive: return v1::JOB_STATE_ACTIVE;
    case engine::JobState::kCompleted: return v1::JOB_STATE_COMPLETED;
    case engine::JobState::kDead: return v1::JOB_STATE_DEAD;
    case engine::JobState::kCancelled: return v1::JOB_STATE_CANCELLED;
    case engine::JobState::kExpired: return v1::JOB_STATE_EXPIRED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

void ToProto(const engine::Job& job, v1::Job* out) {
  out->set_id(job.id);
  out->set_queue(job.queue);
  if (job.payload) out->set_payload(*job.payload);
  out->set_priority(job.priority);
  out->set_state(ToProto(job.state));
  out->set_attempts(job.attempts);
  out->set_max_attempts(job.max_attempts);
  auto* b = out->mutable_backoff();
  b->set_kind(job.backoff.kind == engine::BackoffKind::kFixed ? v1::BACKOFF_KIND_FIXED
                                                              : v1::BACKOFF_KIND_EXPONENTIAL);
  b->set_base_ms(job.backoff.base_ms);
  b->set_cap_ms(job.backoff.cap_ms);
  b->set_jitter_pct(job.backoff.jitter_pct);
  out->set_lease_ms(job.lease_ms);
  out->set_ttl_ms(job.ttl_ms);
  out->set_unique_key(job.unique_key);
  for (const auto& [k, v] : job.headers) (*out->mutable_headers())[k] = v;
  out->set_group(job.group);
  out->set_created_at_ms(job.created_at_ms);
  out->set_run_at_ms(job.run_at_ms);
  out->set_finished_at_ms(job.finished_at_ms);
  out->set_last_error(job.last_error);
  out->set_reason(job.reason);
  out->set_result(job.result);
  out->set_lease_expires_at_ms(job.lease_expires_at_ms);
}

void ToProto(const engine::Delivery& d, v1::Delivery* out) {
  ToProto(d.job, out->mutable_job());
  out->set_lease_token(d.lease_token);
  out->set_lease_expires_at_ms(d.lease_expires_at_ms);
}

void ToProto(const engine::QueueCounts& c, v1::QueueStats* out) {
  out->set_queue(c.queue);
  out->set_paused(c.paused);
  out->set_waiting(c.waiting);
  out->set_delayed(c.delayed);
  out->set_active(c.active);
  out->set_completed(c.completed);
  out->set_dead(c.dead);
  out->set_cancelled(c.cancelled);
  out->set_expired(c.expired);
  out->set_pushed_total(c.pushed_total);
  out->set_completed_total(c.completed_total);
  out->set_failed_total(c.failed_total);
  out->set_retried_total(c.retried_total);
  out->set_dead_total(c.dead_total);
  out->set_subscribers(c.subscribers);
}

void Accumulate(const engine::QueueCounts& b, engine::QueueCounts* a) {
  a->waiting += b.waiting;
  a->delayed += b.delayed;
  a->active += b.active;
  a->completed += b.completed;
  a->dead += b.dead;
  a->cancelled += b.cancelled;
  a->expired += b.expired;
  a->pushed_total += b.pushed_total;
  a->completed_total += b.completed_total;
  a->failed_total += b.failed_total;
  a->retried_total += b.retried_total;
  a->dead_total += b.dead_total;
  a->subscribers += b.subscribers;
}

}  // namespace ringq::api
