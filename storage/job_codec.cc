#include "storage/job_codec.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "service/engine/scheduler.h"

namespace ringq::storage {

namespace {

constexpr uint8_t kSpecVersion = 1;
constexpr uint8_t kStateVersion = 1;

void PutU8(std::string* o, uint8_t v) { o->push_back(static_cast<char>(v)); }
void PutU32(std::string* o, uint32_t v) { o->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string* o, uint64_t v) { o->append(reinterpret_cast<const char*>(&v), 8); }
void PutVarint(std::string* o, uint64_t v) {
  while (v >= 0x80) {
    o->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  o->push_back(static_cast<char>(v));
}
void PutBytes(std::string* o, std::string_view s) {
  PutVarint(o, s.size());
  o->append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) { return Fixed(v, 1); }
  bool U32(uint32_t* v) { return Fixed(v, 4); }
  bool U64(uint64_t* v) { return Fixed(v, 8); }
  bool Varint(uint64_t* v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= in_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(in_[pos_++]);
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  bool Bytes(std::string* s) {
    uint64_t n;
    if (!Varint(&n) || n > in_.size() - pos_) return false;
    s->assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Rest(std::string_view* s) {
    *s = in_.substr(pos_);
    pos_ = in_.size();
    return true;
  }
  size_t pos() const { return pos_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  bool Fixed(void* v, size_t n) {
    if (in_.size() - pos_ < n) return false;
    std::memcpy(v, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

void EncodeSpec(const engine::Job& j, std::string* o) {
  PutU8(o, kSpecVersion);
  PutU64(o, j.id);
  PutBytes(o, j.queue);
  PutBytes(o, j.payload ? std::string_view(*j.payload) : std::string_view());
  PutU32(o, static_cast<uint32_t>(j.priority));
  PutU32(o, j.max_attempts);
  PutU8(o, static_cast<uint8_t>(j.backoff.kind));
  PutU32(o, j.backoff.base_ms);
  PutU32(o, j.backoff.cap_ms);
  PutU32(o, j.backoff.jitter_pct);
  PutU32(o, j.lease_ms);
  PutU64(o, j.ttl_ms);
  PutBytes(o, j.unique_key);
  PutVarint(o, j.headers.size());
  for (const auto& [k, v] : j.headers) {
    PutBytes(o, k);
    PutBytes(o, v);
  }
  PutBytes(o, j.group);
}

bool DecodeSpec(std::string_view in, engine::Job* j) {
  Reader r(in);
  uint8_t version, kind;
  uint32_t prio;
  std::string payload;
  uint64_t nheaders;
  if (!r.U8(&version) || version != kSpecVersion || !r.U64(&j->id) || !r.Bytes(&j->queue) ||
      !r.Bytes(&payload) || !r.U32(&prio) || !r.U32(&j->max_attempts) || !r.U8(&kind) ||
      kind > 1 || !r.U32(&j->backoff.base_ms) || !r.U32(&j->backoff.cap_ms) ||
      !r.U32(&j->backoff.jitter_pct) || !r.U32(&j->lease_ms) || !r.U64(&j->ttl_ms) ||
      !r.Bytes(&j->unique_key) || !r.Varint(&nheaders) ||
      nheaders > engine::Limits::kHeadersMax) {
    return false;
  }
  j->priority = static_cast<int32_t>(prio);
  j->backoff.kind = static_cast<engine::BackoffKind>(kind);
  j->payload = std::make_shared<const std::string>(std::move(payload));
  j->headers.clear();
  for (uint64_t i = 0; i < nheaders; ++i) {
    std::string k, v;
    if (!r.Bytes(&k) || !r.Bytes(&v)) return false;
    j->headers.emplace_back(std::move(k), std::move(v));
  }
  return r.Bytes(&j->group) && r.done();
}

void EncodeState(const engine::Job& j, std::string* o) {
  PutU8(o, kStateVersion);
  PutU64(o, j.id);
  PutBytes(o, j.queue);
  PutU8(o, static_cast<uint8_t>(j.state));
  PutU32(o, j.attempts);
  PutU64(o, j.created_at_ms);
  PutU64(o, j.run_at_ms);
  PutU64(o, j.finished_at_ms);
  PutU64(o, j.lease_expires_at_ms);
  PutBytes(o, j.last_error);
  PutBytes(o, j.reason);
}

bool DecodeState(std::string_view in, engine::Job* j) {
  Reader r(in);
  uint8_t version, state;
  if (!r.U8(&version) || version != kStateVersion || !r.U64(&j->id) || !r.Bytes(&j->queue) ||
      !r.U8(&state) || state < 1 || state > 7 || !r.U32(&j->attempts) ||
      !r.U64(&j->created_at_ms) || !r.U64(&j->run_at_ms) || !r.U64(&j->finished_at_ms) ||
      !r.U64(&j->lease_expires_at_ms) || !r.Bytes(&j->last_error) || !r.Bytes(&j->reason)) {
    return false;
  }
  j->state = static_cast<engine::JobState>(state);
  return r.done();
}

bool IsLogged(engine::RecordType t) {
  return t != engine::RecordType::kExtend && t != engine::RecordType::kPromote;
}

namespace {
// A record carries the job as it is after the change: check the pairs that
// must hold (validation before the disk, STYLE.md).
void CheckRecordState(const engine::Record& r) {
  using T = engine::RecordType;
  using S = engine::JobState;
  bool ok = true;
  switch (r.type) {
    case T::kLease: ok = r.job->state == S::kActive; break;
    case T::kAck: ok = r.job->state == S::kCompleted; break;
    case T::kCancel: ok = r.job->state == S::kCancelled; break;
    case T::kFail:
    case T::kExpire: ok = r.job->state != S::kActive; break;
    case T::kRetryDead: ok = r.job->state == S::kWaiting; break;
    default: break;
  }
  if (!ok) {
    std::fprintf(stderr, "ringq: bug: record type %u logged with job %llu in state %s\n",
                 static_cast<unsigned>(r.type), static_cast<unsigned long long>(r.job_id),
                 engine::JobStateName(r.job->state));
    std::abort();
  }
}
}  // namespace

void EncodeRecordPayload(const engine::Record& r, std::string* o) {
  using T = engine::RecordType;
  if (r.job != nullptr) CheckRecordState(r);
  switch (r.type) {
    case T::kPush: {
      // Per-thread scratch: no allocation per record once it has grown.
      thread_local std::string spec;
      spec.clear();
      EncodeSpec(*r.job, &spec);
      PutBytes(o, spec);
      EncodeState(*r.job, o);
      return;
    }
    case T::kLease:
    case T::kFail:
    case T::kExpire:
    case T::kCancel:
    case T::kRetryDead:
    case T::kAck: {
      thread_local std::string state;
      state.clear();
      EncodeState(*r.job, &state);
      PutBytes(o, state);
      if (r.type == T::kAck) PutBytes(o, r.job->result);
      return;
    }
    case T::kForget:
    case T::kPurgeDead:
      PutU64(o, r.job_id);
      PutBytes(o, r.queue);
      PutU8(o, r.job != nullptr && r.job->state == engine::JobState::kDead ? 1 : 0);
      return;
    case T::kPause:
    case T::kResume:
      PutBytes(o, r.queue);
      return;
    case T::kExtend:
    case T::kPromote:
      return;
  }
}

bool DecodeRecordPayload(uint8_t type, std::string_view payload, DecodedRecord* out) {
  using T = engine::RecordType;
  if (type < 1 || type > 13) return false;
  out->type = static_cast<T>(type);
  Reader r(payload);
  switch (out->type) {
    case T::kPush: {
      engine::Job job;
      std::string_view rest;
      if (!r.Bytes(&out->spec_bytes) || !DecodeSpec(out->spec_bytes, &job) || !r.Rest(&rest)) {
        return false;
      }
      out->state_bytes.assign(rest);
      if (!DecodeState(rest, &job)) return false;
      out->id = job.id;
      out->queue = job.queue;
      out->job = std::move(job);
      return true;
    }
    case T::kLease:
    case T::kFail:
    case T::kExpire:
    case T::kCancel:
    case T::kRetryDead:
    case T::kAck: {
      engine::Job job;
      if (!r.Bytes(&out->state_bytes) || !DecodeState(out->state_bytes, &job)) return false;
      if (out->type == T::kAck) {
        std::string result;
        if (!r.Bytes(&result)) return false;
        out->result = std::move(result);
      }
      out->id = job.id;
      out->queue = job.queue;
      out->job = std::move(job);
      return r.done();
    }
    case T::kForget:
    case T::kPurgeDead: {
      uint8_t dead;
      if (!r.U64(&out->id) || !r.Bytes(&out->queue) || !r.U8(&dead)) return false;
      out->was_dead = dead != 0;
      return r.done();
    }
    case T::kPause:
    case T::kResume:
      return r.Bytes(&out->queue) && r.done();
    case T::kExtend:
    case T::kPromote:
      return false;  // never logged
  }
  return false;
}

std::string IdKey(uint64_t id) {
  const uint64_t k = std::rotr(id, engine::kShardBits);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(k >> (56 - 8 * i));
  return out;
}

uint64_t IdFromKey(std::string_view key) {
  uint64_t k = 0;
  for (size_t i = 0; i < 8 && i < key.size(); ++i) k = (k << 8) | static_cast<uint8_t>(key[i]);
  return std::rotl(k, engine::kShardBits);
}

std::string DeadKey(std::string_view queue, uint64_t id) {
  std::string k(queue);
  k.push_back('\0');
  k += IdKey(id);
  return k;
}

}  // namespace ringq::storage
