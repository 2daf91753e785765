#include "uring/rqp_frame.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringq::uring::rqp {

namespace {

// Bugs crash, in every build (STYLE.md).
#define RQP_ASSERT(cond)                                                                    \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "ringq: bug: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                                  \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

__attribute__((format(printf, 1, 2))) std::string Fmt(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return {};
  return std::string(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
}

void SetWhy(std::string* why, std::string message) {
  if (why != nullptr) *why = std::move(message);
}

// Little-endian loads and stores, independent of the host's byte order.
uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Load64(const uint8_t* p) {
  return static_cast<uint64_t>(Load32(p)) | (static_cast<uint64_t>(Load32(p + 4)) << 32);
}
void Store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void Store32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Store64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void AppendBytes(std::string* out, const uint8_t* p, size_t n) {
  out->append(reinterpret_cast<const char*>(p), n);
}

const char* KnownKindName(uint8_t kind) {
  switch (static_cast<Kind>(kind)) {
    case Kind::kHello:
      return "HELLO";
    case Kind::kPing:
      return "PING";
    case Kind::kPush:
      return "PUSH";
    case Kind::kPushBatch:
      return "PUSH_BATCH";
    case Kind::kFetch:
      return "FETCH";
    case Kind::kAck:
      return "ACK";
    case Kind::kFail:
      return "FAIL";
    case Kind::kExtend:
      return "EXTEND";
    case Kind::kStats:
      return "STATS";
    case Kind::kGetJob:
      return "GET_JOB";
    case Kind::kCancel:
      return "CANCEL";
    case Kind::kListQueues:
      return "LIST_QUEUES";
    case Kind::kPause:
      return "PAUSE";
    case Kind::kResume:
      return "RESUME";
    case Kind::kListDead:
      return "LIST_DEAD";
    case Kind::kRetryDead:
      return "RETRY_DEAD";
    case Kind::kPurgeDead:
      return "PURGE_DEAD";
    case Kind::kSubscribeOpen:
      return "SUBSCRIBE_OPEN";
    case Kind::kSubscribeUpdate:
      return "SUBSCRIBE_UPDATE";
    case Kind::kSubscribeClose:
      return "SUBSCRIBE_CLOSE";
    case Kind::kServerHello:
      return "SERVER_HELLO";
    case Kind::kPong:
      return "PONG";
    case Kind::kError:
      return "ERROR";
    case Kind::kGoaway:
      return "GOAWAY";
    case Kind::kPushResponse:
      return "PUSH_RESPONSE";
    case Kind::kPushBatchResponse:
      return "PUSH_BATCH_RESPONSE";
    case Kind::kFetchResponse:
      return "FETCH_RESPONSE";
    case Kind::kAckResponse:
      return "ACK_RESPONSE";
    case Kind::kFailResponse:
      return "FAIL_RESPONSE";
    case Kind::kExtendResponse:
      return "EXTEND_RESPONSE";
    case Kind::kStatsResponse:
      return "STATS_RESPONSE";
    case Kind::kGetJobResponse:
      return "GET_JOB_RESPONSE";
    case Kind::kCancelResponse:
      return "CANCEL_RESPONSE";
    case Kind::kListQueuesResponse:
      return "LIST_QUEUES_RESPONSE";
    case Kind::kPauseResponse:
      return "PAUSE_RESPONSE";
    case Kind::kResumeResponse:
      return "RESUME_RESPONSE";
    case Kind::kListDeadResponse:
      return "LIST_DEAD_RESPONSE";
    case Kind::kRetryDeadResponse:
      return "RETRY_DEAD_RESPONSE";
    case Kind::kPurgeDeadResponse:
      return "PURGE_DEAD_RESPONSE";
    case Kind::kSubscribeEvent:
      return "SUBSCRIBE_EVENT";
    case Kind::kSubscribeEnd:
      return "SUBSCRIBE_END";
  }
  return nullptr;
}

// Which request ids a kind may carry (PROTOCOL.md, "Request ids").
enum class IdRule : uint8_t { kZero, kAny, kNonZero };

IdRule IdRuleFor(uint8_t kind) {
  switch (static_cast<Kind>(kind)) {
    case Kind::kHello:
    case Kind::kServerHello:
    case Kind::kGoaway:
      return IdRule::kZero;
    case Kind::kPing:
    case Kind::kPong:
    case Kind::kError:
      return IdRule::kAny;
    default:
      return IdRule::kNonZero;
  }
}

bool IsHelloKind(uint8_t kind) {
  return kind == KindByte(Kind::kHello) || kind == KindByte(Kind::kServerHello);
}

bool IsStatusKind(uint8_t kind) {
  return kind == KindByte(Kind::kError) || kind == KindByte(Kind::kGoaway) ||
         kind == KindByte(Kind::kSubscribeEnd);
}

// Body size bounds of the fixed-layout kinds; protobuf bodies are bounded by
// the frame alone.
struct BodyBounds {
  uint32_t min;
  uint32_t max;
};

BodyBounds BoundsFor(uint8_t kind) {
  switch (static_cast<Kind>(kind)) {
    case Kind::kHello:
      return {kClientHelloFixedBytes, kClientHelloFixedBytes + kTokenBytesMax};
    case Kind::kServerHello:
      return {kServerHelloBytes, kServerHelloBytes};
    case Kind::kPing:
    case Kind::kPong:
      return {0, kPingBytesMax};
    case Kind::kSubscribeClose:
      return {0, 0};
    case Kind::kError:
    case Kind::kGoaway:
    case Kind::kSubscribeEnd:
      return {kStatusFixedBytes, kStatusFixedBytes + kStatusMessageBytesMax};
    default:
      return {0, UINT32_MAX};
  }
}

// The header rules every known kind obeys, on both sides: flags, request id,
// body size. `kind` must be known.
FrameError CheckKindRules(uint8_t kind, uint8_t flags, uint64_t request_id, uint64_t body_bytes,
                          std::string* why) {
  const char* name = KnownKindName(kind);
  const bool stream = (flags & kFlagStream) != 0;
  const bool want_stream = kind == KindByte(Kind::kSubscribeEvent);
  if (stream != want_stream) {
    SetWhy(why, Fmt("%s frame %s the STREAM flag (0x01); only SUBSCRIBE_EVENT carries it", name,
                    stream ? "has" : "lacks"));
    return FrameError::kBadFlags;
  }
  const IdRule rule = IdRuleFor(kind);
  if (rule == IdRule::kZero && request_id != 0) {
    SetWhy(why, Fmt("%s frame has request_id %llu; it must be 0", name,
                    static_cast<unsigned long long>(request_id)));
    return FrameError::kBadRequestId;
  }
  if (rule == IdRule::kNonZero && request_id == 0) {
    SetWhy(why,
           Fmt("%s frame has request_id 0; requests and their answers need a non-zero id", name));
    return FrameError::kBadRequestId;
  }
  const BodyBounds b = BoundsFor(kind);
  if (body_bytes < b.min || body_bytes > b.max) {
    SetWhy(why, Fmt("%s body is %llu bytes; it must be %u..%u", name,
                    static_cast<unsigned long long>(body_bytes), b.min, b.max));
    return IsHelloKind(kind) ? FrameError::kBadHello : FrameError::kBadBody;
  }
  return FrameError::kNone;
}

// Structural checks of the fixed-layout bodies. `kind` must be known.
FrameError CheckBodyContent(uint8_t kind, std::span<const uint8_t> body, std::string* why) {
  if (kind == KindByte(Kind::kHello)) {
    ClientHello h;
    return ParseClientHello(body, &h, why) ? FrameError::kNone : FrameError::kBadHello;
  }
  if (kind == KindByte(Kind::kServerHello)) {
    ServerHello h;
    return ParseServerHello(body, &h, why) ? FrameError::kNone : FrameError::kBadHello;
  }
  if (IsStatusKind(kind)) {
    StatusBody s;
    if (!ParseStatusBody(body, &s, why)) return FrameError::kBadBody;
    if (kind == KindByte(Kind::kError) && s.code == 0) {
      SetWhy(why, "ERROR frame carries status code 0 (OK); an error needs a code 1..16");
      return FrameError::kBadBody;
    }
  }
  return FrameError::kNone;
}

}  // namespace

// ---- Names ----

bool IsKnownKind(uint8_t kind) { return KnownKindName(kind) != nullptr; }

const char* KindName(uint8_t kind) {
  const char* name = KnownKindName(kind);
  return name != nullptr ? name : "UNKNOWN";
}

const char* FrameErrorName(FrameError e) {
  switch (e) {
    case FrameError::kNone:
      return "none";
    case FrameError::kBadLength:
      return "bad length";
    case FrameError::kFrameTooLarge:
      return "frame too large";
    case FrameError::kReservedBits:
      return "reserved bits set";
    case FrameError::kBadFlags:
      return "bad flags";
    case FrameError::kUnknownKind:
      return "unknown kind";
    case FrameError::kWrongDirection:
      return "wrong direction";
    case FrameError::kBadRequestId:
      return "bad request id";
    case FrameError::kHelloExpected:
      return "hello expected";
    case FrameError::kUnexpectedHello:
      return "unexpected hello";
    case FrameError::kBadHello:
      return "bad hello";
    case FrameError::kBadVersion:
      return "bad version";
    case FrameError::kBadBody:
      return "bad body";
    case FrameError::kTruncated:
      return "truncated";
  }
  return "?";
}

StatusCode StatusFor(FrameError e) {
  switch (e) {
    case FrameError::kNone:
      return StatusCode::kOk;
    case FrameError::kFrameTooLarge:
      return StatusCode::kResourceExhausted;
    case FrameError::kUnknownKind:
    case FrameError::kBadVersion:
      return StatusCode::kUnimplemented;
    case FrameError::kHelloExpected:
    case FrameError::kUnexpectedHello:
      return StatusCode::kFailedPrecondition;
    case FrameError::kBadLength:
    case FrameError::kReservedBits:
    case FrameError::kBadFlags:
    case FrameError::kWrongDirection:
    case FrameError::kBadRequestId:
    case FrameError::kBadHello:
    case FrameError::kBadBody:
    case FrameError::kTruncated:
      return StatusCode::kInvalidArgument;
  }
  return StatusCode::kInternal;
}

// ---- Fixed bodies ----

void AppendClientHelloBody(const ClientHello& h, std::string* out) {
  RQP_ASSERT(h.token.size() <= kTokenBytesMax);
  uint8_t b[kClientHelloFixedBytes];
  Store32(b, kHelloMagic);
  Store16(b + 4, h.version_min);
  Store16(b + 6, h.version_max);
  Store16(b + 8, static_cast<uint16_t>(h.token.size()));
  Store16(b + 10, 0);
  AppendBytes(out, b, sizeof b);
  out->append(h.token);
}

void AppendServerHelloBody(const ServerHello& h, std::string* out) {
  uint8_t b[kServerHelloBytes];
  Store32(b, kHelloMagic);
  Store16(b + 4, h.version);
  Store16(b + 6, 0);
  Store32(b + 8, h.frame_bytes_max);
  Store32(b + 12, h.inflight_max);
  Store32(b + 16, h.batch_max);
  Store32(b + 20, h.payload_bytes_max);
  Store32(b + 24, h.subscribe_credits_max);
  Store32(b + 28, h.fetch_wait_ms_max);
  AppendBytes(out, b, sizeof b);
}

void AppendStatusBody(uint32_t code, std::string_view message, std::string* out) {
  RQP_ASSERT(code <= kStatusCodeMax);
  size_t n = std::min(message.size(), kStatusMessageBytesMax);
  // Cut before a UTF-8 character that would straddle the limit.
  if (n < message.size()) {
    while (n > 0 && (static_cast<uint8_t>(message[n]) & 0xC0) == 0x80) --n;
  }
  uint8_t b[kStatusFixedBytes];
  Store32(b, code);
  AppendBytes(out, b, sizeof b);
  out->append(message.substr(0, n));
}

bool ParseClientHello(std::span<const uint8_t> body, ClientHello* out, std::string* why) {
  if (body.size() < kClientHelloFixedBytes) {
    SetWhy(why, Fmt("client hello body is %zu bytes; at least %zu", body.size(),
                    kClientHelloFixedBytes));
    return false;
  }
  const uint8_t* p = body.data();
  const uint32_t magic = Load32(p);
  if (magic != kHelloMagic) {
    SetWhy(why, Fmt("hello magic is 0x%08x, not \"RQP1\" (0x%08x): not an RQP peer?", magic,
                    kHelloMagic));
    return false;
  }
  const uint16_t vmin = Load16(p + 4);
  const uint16_t vmax = Load16(p + 6);
  const uint16_t token_bytes = Load16(p + 8);
  const uint16_t reserved = Load16(p + 10);
  if (vmin == 0 || vmin > vmax) {
    SetWhy(why, Fmt("client hello version range %u..%u is empty or starts at 0", vmin, vmax));
    return false;
  }
  if (reserved != 0) {
    SetWhy(why, Fmt("client hello reserved field is 0x%04x; it must be 0", reserved));
    return false;
  }
  if (token_bytes > kTokenBytesMax) {
    SetWhy(why, Fmt("auth token of %u bytes exceeds %zu", token_bytes, kTokenBytesMax));
    return false;
  }
  if (body.size() != kClientHelloFixedBytes + token_bytes) {
    SetWhy(why, Fmt("client hello body is %zu bytes; 12 + token_bytes %u = %zu expected",
                    body.size(), token_bytes, kClientHelloFixedBytes + token_bytes));
    return false;
  }
  out->version_min = vmin;
  out->version_max = vmax;
  out->token.assign(reinterpret_cast<const char*>(p + kClientHelloFixedBytes), token_bytes);
  return true;
}

bool ParseServerHello(std::span<const uint8_t> body, ServerHello* out, std::string* why) {
  if (body.size() != kServerHelloBytes) {
    SetWhy(why,
           Fmt("server hello body is %zu bytes; %zu expected", body.size(), kServerHelloBytes));
    return false;
  }
  const uint8_t* p = body.data();
  const uint32_t magic = Load32(p);
  if (magic != kHelloMagic) {
    SetWhy(why, Fmt("hello magic is 0x%08x, not \"RQP1\" (0x%08x): not an RQP peer?", magic,
                    kHelloMagic));
    return false;
  }
  ServerHello h;
  h.version = Load16(p + 4);
  const uint16_t reserved = Load16(p + 6);
  h.frame_bytes_max = Load32(p + 8);
  h.inflight_max = Load32(p + 12);
  h.batch_max = Load32(p + 16);
  h.payload_bytes_max = Load32(p + 20);
  h.subscribe_credits_max = Load32(p + 24);
  h.fetch_wait_ms_max = Load32(p + 28);
  if (h.version == 0) {
    SetWhy(why, "server hello version is 0");
    return false;
  }
  if (reserved != 0) {
    SetWhy(why, Fmt("server hello reserved field is 0x%04x; it must be 0", reserved));
    return false;
  }
  if (h.frame_bytes_max < kFrameBytesMaxMin || h.frame_bytes_max > kFrameBytesMaxLimit) {
    SetWhy(why, Fmt("server hello frame_bytes_max %u is outside %u..%u", h.frame_bytes_max,
                    kFrameBytesMaxMin, kFrameBytesMaxLimit));
    return false;
  }
  if (h.inflight_max < kInflightMaxMin) {
    SetWhy(why, Fmt("server hello inflight_max %u is below %u", h.inflight_max, kInflightMaxMin));
    return false;
  }
  if (h.batch_max == 0 || h.payload_bytes_max == 0 || h.subscribe_credits_max == 0) {
    SetWhy(why, "server hello batch_max, payload_bytes_max and subscribe_credits_max must be > 0");
    return false;
  }
  *out = h;
  return true;
}

bool ParseStatusBody(std::span<const uint8_t> body, StatusBody* out, std::string* why) {
  if (body.size() < kStatusFixedBytes || body.size() > kStatusFixedBytes + kStatusMessageBytesMax) {
    SetWhy(why, Fmt("status body is %zu bytes; it must be %zu..%zu", body.size(), kStatusFixedBytes,
                    kStatusFixedBytes + kStatusMessageBytesMax));
    return false;
  }
  const uint32_t code = Load32(body.data());
  if (code > kStatusCodeMax) {
    SetWhy(why, Fmt("status code %u is not a gRPC code (0..16)", code));
    return false;
  }
  out->code = code;
  out->message.assign(reinterpret_cast<const char*>(body.data() + kStatusFixedBytes),
                      body.size() - kStatusFixedBytes);
  return true;
}

uint16_t NegotiateVersion(uint16_t peer_min, uint16_t peer_max, uint16_t our_min,
                          uint16_t our_max) {
  const uint16_t lo = std::max(peer_min, our_min);
  const uint16_t hi = std::min(peer_max, our_max);
  return (lo <= hi && lo != 0) ? hi : 0;
}

// ---- Encoder ----

void WriteHeaderUnchecked(uint32_t length, uint8_t kind, uint8_t flags, uint16_t reserved,
                          uint64_t request_id, uint8_t out[kHeaderBytes]) {
  Store32(out, length);
  out[4] = kind;
  out[5] = flags;
  Store16(out + 6, reserved);
  Store64(out + 8, request_id);
}

FrameError CheckFrame(const FrameFields& f, std::span<const uint8_t> body, uint32_t frame_bytes_max,
                      std::string* why) {
  RQP_ASSERT(frame_bytes_max >= kHeaderBytes);
  if (!IsKnownKind(f.kind)) {
    SetWhy(why, Fmt("kind 0x%02x is not an RQP v1 kind", f.kind));
    return FrameError::kUnknownKind;
  }
  if ((f.flags & ~kFlagsKnown) != 0) {
    SetWhy(why, Fmt("flags 0x%02x set undefined bits", f.flags));
    return FrameError::kReservedBits;
  }
  if (body.size() > frame_bytes_max - kHeaderBytes) {
    SetWhy(why, Fmt("%s frame of %zu bytes exceeds frame_bytes_max %u", KindName(f.kind),
                    kHeaderBytes + body.size(), frame_bytes_max));
    return FrameError::kFrameTooLarge;
  }
  const FrameError e = CheckKindRules(f.kind, f.flags, f.request_id, body.size(), why);
  if (e != FrameError::kNone) return e;
  return CheckBodyContent(f.kind, body, why);
}

FrameError AppendFrame(const FrameFields& f, std::span<const uint8_t> body,
                       uint32_t frame_bytes_max, std::string* out, std::string* why) {
  const FrameError e = CheckFrame(f, body, frame_bytes_max, why);
  if (e != FrameError::kNone) return e;
  uint8_t h[kHeaderBytes];
  WriteHeaderUnchecked(static_cast<uint32_t>(kLengthMin + body.size()), f.kind, f.flags, 0,
                       f.request_id, h);
  AppendBytes(out, h, sizeof h);
  AppendBytes(out, body.data(), body.size());
  return FrameError::kNone;
}

size_t BeginFrame(std::string* out) {
  const size_t start = out->size();
  out->append(kHeaderBytes, '\0');
  return start;
}

FrameError FinishFrame(std::string* out, size_t start, const FrameFields& f,
                       uint32_t frame_bytes_max, std::string* why) {
  RQP_ASSERT(start <= out->size() && out->size() - start >= kHeaderBytes);
  auto* base = reinterpret_cast<uint8_t*>(out->data()) + start;
  const std::span<const uint8_t> body(base + kHeaderBytes, out->size() - start - kHeaderBytes);
  const FrameError e = CheckFrame(f, body, frame_bytes_max, why);
  if (e != FrameError::kNone) {
    out->resize(start);
    return e;
  }
  WriteHeaderUnchecked(static_cast<uint32_t>(kLengthMin + body.size()), f.kind, f.flags, 0,
                       f.request_id, base);
  return FrameError::kNone;
}

// ---- Decoder ----

Decoder::Decoder(const DecoderOptions& options) : options_(options) {
  RQP_ASSERT(options.frame_bytes_max >= kFrameBytesMaxMin);
  RQP_ASSERT(options.frame_bytes_max <= kFrameBytesMaxLimit);
  RQP_ASSERT(options.version_min >= 1 && options.version_min <= options.version_max);
}

Decoder::Step Decoder::Fail(FrameError code, size_t consumed, std::string message) {
  RQP_ASSERT(code != FrameError::kNone);
  error_ = DecodeError{};
  error_.code = code;
  error_.fatal = code != FrameError::kUnknownKind;
  error_.offset = frame_start_;
  if (header_have_ >= 5) error_.kind = header_[4];
  if (header_have_ == kHeaderBytes) error_.request_id = Load64(header_ + 8);
  error_.message = std::move(message) + Fmt(" (frame at stream byte %llu)",
                                            static_cast<unsigned long long>(frame_start_));
  if (error_.fatal) {
    failed_ = true;
    body_.reset();
    body_capacity_ = 0;
  }
  return {Event::kError, consumed};
}

bool Decoder::CheckLength(uint32_t length, std::string* message, FrameError* code) const {
  if (length < kLengthMin) {
    *message = Fmt("frame length %u is below the minimum %u (the header after the length)", length,
                   kLengthMin);
    *code = FrameError::kBadLength;
    return false;
  }
  if (uint64_t{kLengthFieldBytes} + length > options_.frame_bytes_max) {
    *message = Fmt("frame of %llu bytes exceeds frame_bytes_max %u",
                   static_cast<unsigned long long>(uint64_t{kLengthFieldBytes} + length),
                   options_.frame_bytes_max);
    *code = FrameError::kFrameTooLarge;
    return false;
  }
  return true;
}

// Checks a complete header, in the order PROTOCOL.md gives ("Bad input").
FrameError Decoder::CheckHeader(std::string* message) const {
  const uint8_t kind = header_[4];
  const uint8_t flags = header_[5];
  const uint16_t reserved = Load16(header_ + 6);
  const uint64_t request_id = Load64(header_ + 8);
  const uint32_t body_bytes = Load32(header_) - kLengthMin;
  if (reserved != 0 || (flags & ~kFlagsKnown) != 0) {
    *message = Fmt("reserved bits set: flags 0x%02x, reserved 0x%04x", flags, reserved);
    return FrameError::kReservedBits;
  }
  const bool server_side = options_.role == Role::kServer;
  if (IsServerKind(kind) == server_side) {
    *message = Fmt("kind 0x%02x (%s) travels %s only", kind, KindName(kind),
                   server_side ? "server to client" : "client to server");
    return FrameError::kWrongDirection;
  }
  const uint8_t peer_hello = KindByte(server_side ? Kind::kHello : Kind::kServerHello);
  if (options_.expect_hello && !hello_seen_) {
    const bool rejection = !server_side && kind == KindByte(Kind::kError) && request_id == 0;
    if (kind != peer_hello && !rejection) {
      *message = Fmt("first frame is kind 0x%02x (%s); the handshake starts with %s", kind,
                     KindName(kind), KindName(peer_hello));
      return FrameError::kHelloExpected;
    }
  } else if (kind == peer_hello) {
    *message = Fmt("%s after the handshake", KindName(kind));
    return FrameError::kUnexpectedHello;
  }
  if (!IsKnownKind(kind)) {
    *message = Fmt("kind 0x%02x is not an RQP v%u kind; its %u body bytes were skipped", kind,
                   version_ != 0 ? version_ : options_.version_max, body_bytes);
    return FrameError::kUnknownKind;
  }
  return CheckKindRules(kind, flags, request_id, body_bytes, message);
}

FrameError Decoder::CheckHello(std::span<const uint8_t> body, std::string* message) {
  if (options_.role == Role::kServer) {
    ClientHello h;
    if (!ParseClientHello(body, &h, message)) return FrameError::kBadHello;
    const uint16_t v =
        NegotiateVersion(h.version_min, h.version_max, options_.version_min, options_.version_max);
    if (v == 0) {
      *message = Fmt("client speaks RQP versions %u..%u; this server speaks %u..%u", h.version_min,
                     h.version_max, options_.version_min, options_.version_max);
      return FrameError::kBadVersion;
    }
    version_ = v;
  } else {
    ServerHello h;
    if (!ParseServerHello(body, &h, message)) return FrameError::kBadHello;
    if (h.version < options_.version_min || h.version > options_.version_max) {
      *message = Fmt("server chose RQP version %u; this client offered %u..%u", h.version,
                     options_.version_min, options_.version_max);
      return FrameError::kBadVersion;
    }
    version_ = h.version;
    // ParseServerHello checked the range; the next frame may use it.
    options_.frame_bytes_max = h.frame_bytes_max;
  }
  return FrameError::kNone;
}

Decoder::Step Decoder::Complete(std::span<const uint8_t> body, size_t consumed) {
  const uint8_t kind = header_[4];
  std::string message;
  FrameError e = CheckBodyContent(kind, body, &message);
  if (e == FrameError::kNone && IsHelloKind(kind)) e = CheckHello(body, &message);
  if (e != FrameError::kNone) return Fail(e, consumed, std::move(message));
  if (IsHelloKind(kind)) hello_seen_ = true;
  frame_.kind = kind;
  frame_.flags = header_[5];
  frame_.request_id = Load64(header_ + 8);
  frame_.body = body;
  frame_.offset = frame_start_;
  RQP_ASSERT(offset_ - frame_start_ == kHeaderBytes + body.size());
  ResetFrame();
  return {Event::kFrame, consumed};
}

void Decoder::ResetFrame() {
  header_have_ = 0;
  body_need_ = 0;
  body_have_ = 0;
  skip_left_ = 0;
  skipping_ = false;
}

// Discards the body of an unknown-kind frame; reports its (recoverable)
// error, prepared when the header was read, once the body is gone.
Decoder::Step Decoder::Skip(std::span<const uint8_t> in, size_t used) {
  RQP_ASSERT(skipping_ && used <= in.size());
  const size_t n = static_cast<size_t>(std::min<uint64_t>(skip_left_, in.size() - used));
  used += n;
  offset_ += n;
  skip_left_ -= n;
  if (skip_left_ > 0) return {Event::kNeedMore, used};
  ResetFrame();
  return {Event::kError, used};
}

Decoder::Step Decoder::Feed(std::span<const uint8_t> in) {
  if (failed_) return {Event::kError, 0};
  size_t used = 0;
  const auto take = [&](size_t n) {
    used += n;
    offset_ += n;
  };

  if (skipping_) return Skip(in, 0);

  if (header_have_ == 0) {
    // Idle: the previous frame is done with, so a large buffer can go.
    if (body_capacity_ > kRetainBytesMax) {
      body_.reset();
      body_capacity_ = 0;
    }
    if (in.empty()) return {Event::kNeedMore, 0};
    frame_start_ = offset_;
  }

  if (header_have_ < kHeaderBytes) {
    // The length field first: a bad claim fails before anything else is taken.
    if (header_have_ < kLengthFieldBytes) {
      const size_t n = std::min(kLengthFieldBytes - header_have_, in.size() - used);
      std::memcpy(header_ + header_have_, in.data() + used, n);
      header_have_ += n;
      take(n);
      if (header_have_ < kLengthFieldBytes) return {Event::kNeedMore, used};
      std::string message;
      FrameError code = FrameError::kNone;
      if (!CheckLength(Load32(header_), &message, &code)) return Fail(code, used, message);
    }
    const size_t n = std::min(kHeaderBytes - header_have_, in.size() - used);
    std::memcpy(header_ + header_have_, in.data() + used, n);
    header_have_ += n;
    take(n);
    if (header_have_ < kHeaderBytes) return {Event::kNeedMore, used};

    body_need_ = Load32(header_) - kLengthMin;
    std::string message;
    const FrameError e = CheckHeader(&message);
    if (e == FrameError::kUnknownKind) {
      // Recoverable: skip the body without buffering it, then report.
      (void)Fail(e, used, std::move(message));
      skipping_ = true;
      skip_left_ = body_need_;
      return Skip(in, used);
    }
    if (e != FrameError::kNone) return Fail(e, used, std::move(message));
  }

  const size_t avail = in.size() - used;
  if (body_have_ == 0 && avail >= body_need_) {
    // The whole body is in this chunk: no copy.
    const std::span<const uint8_t> body = in.subspan(used, body_need_);
    take(body_need_);
    return Complete(body, used);
  }
  if (avail == 0) return {Event::kNeedMore, used};
  if (body_capacity_ < body_need_) {
    body_.reset(new uint8_t[body_need_]);
    body_capacity_ = body_need_;
  }
  RQP_ASSERT(body_capacity_ + kHeaderBytes <= options_.frame_bytes_max);
  const size_t n = std::min(avail, body_need_ - body_have_);
  std::memcpy(body_.get() + body_have_, in.data() + used, n);
  body_have_ += n;
  take(n);
  if (body_have_ < body_need_) return {Event::kNeedMore, used};
  return Complete(std::span<const uint8_t>(body_.get(), body_need_), used);
}

Decoder::Event Decoder::Finish() {
  if (failed_) return Event::kError;
  if (header_have_ == 0 && !skipping_) {
    body_.reset();
    body_capacity_ = 0;
    return Event::kEnd;
  }
  std::string message;
  if (header_have_ < kHeaderBytes) {
    message =
        Fmt("stream ended inside a frame header: %zu of %zu bytes", header_have_, kHeaderBytes);
  } else {
    const uint64_t have = skipping_ ? body_need_ - skip_left_ : body_have_;
    message = Fmt("stream ended inside a %s frame: %llu of %u body bytes", KindName(header_[4]),
                  static_cast<unsigned long long>(have), body_need_);
  }
  (void)Fail(FrameError::kTruncated, 0, std::move(message));
  return Event::kError;
}

}  // namespace ringq::uring::rqp
