// RQP frame codec: the framing layer of ringq's binary protocol
// (proto/PROTOCOL.md is the specification; this header implements its
// "Frames", "Kinds" and "Handshake" sections and nothing above them).
//
//   [u32 length][u8 kind][u8 flags][u16 reserved][u64 request_id][body]
//
// Little-endian. `length` counts the bytes after itself (12 + body bytes), so
// a whole frame is 4 + length bytes and 16 <= 4 + length <= frame_bytes_max.
// Bodies are opaque here (protobuf messages of ringq.v1 for most kinds); only
// the fixed binary bodies (HELLO, PING/PONG, ERROR, GOAWAY, SUBSCRIBE_END,
// SUBSCRIBE_CLOSE) are checked, because the connection depends on them.
//
// Thread: a Decoder belongs to one connection and is used by one thread at a
// time (the shard's ring thread). The free functions are pure.
//
// Decoder contract:
//   * Feed() takes bytes exactly as recv delivered them (split anywhere) and
//     stops after at most one event: a frame, an error, or "need more".
//   * Buffering is bounded: buffered_bytes() <= frame_bytes_max and
//     buffer_capacity() <= frame_bytes_max - kHeaderBytes, always. A frame
//     that arrives whole in one chunk is not copied at all (its body points
//     into the chunk). A length claim is checked as soon as its 4 bytes are
//     in: a 4 GiB claim fails before anything is allocated.
//   * Errors are fatal (the decoder stays failed; the connection must be
//     closed, after an ERROR frame if the peer should learn why) except
//     kUnknownKind: that frame's body is skipped without buffering and
//     decoding continues at the next frame.
//   * Frame boundaries, frames and errors do not depend on how the stream was
//     split into chunks (the fuzzer checks this).
//   * A client-side decoder adopts the server hello's frame_bytes_max (the
//     protocol's rule: the client accepts frames up to the server's limit).
//
// The canonical loop, per received chunk (feeding until kNeedMore also lets
// the decoder free a large buffer once its frame was handled):
//
//   for (;;) {
//     const Decoder::Step s = dec.Feed(chunk);
//     chunk = chunk.subspan(s.consumed);
//     if (s.event == Decoder::Event::kFrame) Handle(dec.frame());
//     else if (s.event == Decoder::Event::kError) {
//       if (dec.error().fatal) { SendErrorAndClose(dec.error()); break; }
//       AnswerUnimplemented(dec.error());  // kUnknownKind: frame skipped
//     } else break;  // kNeedMore: chunk consumed
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "proto/status_code.h"

namespace ringq::uring::rqp {

// ---- Wire constants (PROTOCOL.md, "Limits") ----

inline constexpr size_t kHeaderBytes = 16;
inline constexpr size_t kLengthFieldBytes = 4;
// `length` is at least the header bytes after the length field.
inline constexpr uint32_t kLengthMin = kHeaderBytes - kLengthFieldBytes;

// Whole-frame bounds (header + body). The default is what a server uses
// unless configured; min and limit bound what a server may configure.
inline constexpr uint32_t kFrameBytesMaxDefault = 4u << 20;
inline constexpr uint32_t kFrameBytesMaxMin = 64u << 10;
inline constexpr uint32_t kFrameBytesMaxLimit = 256u << 20;

inline constexpr uint32_t kInflightMaxDefault = 1024;
inline constexpr uint32_t kInflightMaxMin = 16;

inline constexpr uint16_t kVersionMin = 1;  // versions this code speaks
inline constexpr uint16_t kVersionMax = 1;
inline constexpr uint32_t kHelloMagic = 0x31505152;  // bytes "RQP1" on the wire

inline constexpr size_t kClientHelloFixedBytes = 12;
inline constexpr size_t kServerHelloBytes = 32;
inline constexpr size_t kTokenBytesMax = 4096;
inline constexpr size_t kPingBytesMax = 64;
inline constexpr size_t kStatusFixedBytes = 4;
inline constexpr size_t kStatusMessageBytesMax = 4096;

// After a frame larger than this, the decoder frees its body buffer, so an
// idle connection's memory returns to baseline.
inline constexpr size_t kRetainBytesMax = 64u << 10;

// ---- Header ----

struct __attribute__((packed)) FrameHeader {
  uint32_t length;  // bytes after this field: 12 + body bytes
  uint8_t kind;
  uint8_t flags;
  uint16_t reserved;  // must be 0
  uint64_t request_id;
};
static_assert(sizeof(FrameHeader) == kHeaderBytes, "RQP frame header is 16 bytes");

// Kinds with the high bit set travel server -> client, the others client ->
// server. A request's answer is its kind | 0x80 (except the stream kinds).
enum class Kind : uint8_t {
  // client -> server
  kHello = 0x01,
  kPing = 0x02,
  kPush = 0x10,
  kPushBatch = 0x11,
  kFetch = 0x12,
  kAck = 0x13,
  kFail = 0x14,
  kExtend = 0x15,
  kStats = 0x16,
  kGetJob = 0x17,
  kCancel = 0x18,
  kListQueues = 0x19,
  kPause = 0x1A,
  kResume = 0x1B,
  kListDead = 0x1C,
  kRetryDead = 0x1D,
  kPurgeDead = 0x1E,
  kSubscribeOpen = 0x20,
  kSubscribeUpdate = 0x21,
  kSubscribeClose = 0x22,
  // server -> client
  kServerHello = 0x81,
  kPong = 0x82,
  kError = 0x83,
  kGoaway = 0x84,
  kPushResponse = 0x90,
  kPushBatchResponse = 0x91,
  kFetchResponse = 0x92,
  kAckResponse = 0x93,
  kFailResponse = 0x94,
  kExtendResponse = 0x95,
  kStatsResponse = 0x96,
  kGetJobResponse = 0x97,
  kCancelResponse = 0x98,
  kListQueuesResponse = 0x99,
  kPauseResponse = 0x9A,
  kResumeResponse = 0x9B,
  kListDeadResponse = 0x9C,
  kRetryDeadResponse = 0x9D,
  kPurgeDeadResponse = 0x9E,
  kSubscribeEvent = 0xA0,
  kSubscribeEnd = 0xA1,
};

inline constexpr uint8_t kServerBit = 0x80;
// flags bit 0: a non-final, server-initiated frame of an open stream (more
// frames follow for this request_id). Set on SUBSCRIBE_EVENT and nothing else.
inline constexpr uint8_t kFlagStream = 0x01;
inline constexpr uint8_t kFlagsKnown = kFlagStream;

inline constexpr uint8_t KindByte(Kind k) { return static_cast<uint8_t>(k); }
inline constexpr bool IsServerKind(uint8_t kind) { return (kind & kServerBit) != 0; }
// True for every kind of the table above (protocol version 1).
bool IsKnownKind(uint8_t kind);
// "PUSH", "SUBSCRIBE_EVENT", ... or "UNKNOWN".
const char* KindName(uint8_t kind);

// gRPC status codes, by value (carried in ERROR, GOAWAY, SUBSCRIBE_END).
using ::ringq::kStatusCodeMax;
using ::ringq::StatusCode;

// ---- Errors ----

enum class FrameError : uint8_t {
  kNone = 0,
  kBadLength,        // length < 12
  kFrameTooLarge,    // 4 + length > frame_bytes_max (checked on the length alone)
  kReservedBits,     // the reserved u16 or an undefined flag bit is set
  kBadFlags,         // STREAM flag on a kind that is not SUBSCRIBE_EVENT, or missing there
  kUnknownKind,      // not a kind of this version (recoverable: the frame is skipped)
  kWrongDirection,   // a server kind sent by a client, or the reverse
  kBadRequestId,     // 0 where a request id is required, or non-zero where 0 is
  kHelloExpected,    // the first frame is not HELLO (or, to a client, ERROR)
  kUnexpectedHello,  // HELLO after the handshake
  kBadHello,         // hello body malformed (size, magic, reserved, ranges)
  kBadVersion,       // no protocol version in common
  kBadBody,          // fixed-layout body malformed (PING, ERROR, GOAWAY, ...)
  kTruncated,        // end of stream inside a frame
};

const char* FrameErrorName(FrameError e);
// What a server answers in its ERROR frame for a decoder error.
StatusCode StatusFor(FrameError e);

struct DecodeError {
  FrameError code = FrameError::kNone;
  bool fatal = false;
  uint8_t kind = 0;         // of the offending frame, when its header was read
  uint64_t request_id = 0;  // idem; 0 otherwise
  uint64_t offset = 0;      // stream offset of the offending frame's first byte
  std::string message;      // names what was wrong, for the ERROR frame and the log
};

// ---- Fixed binary bodies ----

struct ClientHello {
  uint16_t version_min = kVersionMin;
  uint16_t version_max = kVersionMax;
  std::string token;  // opaque auth token, at most kTokenBytesMax; may be empty
};

struct ServerHello {
  uint16_t version = kVersionMax;  // the accepted version
  uint32_t frame_bytes_max = kFrameBytesMaxDefault;
  uint32_t inflight_max = kInflightMaxDefault;
  uint32_t batch_max = 10'000;
  uint32_t payload_bytes_max = 1u << 20;
  uint32_t subscribe_credits_max = 10'000;
  uint32_t fetch_wait_ms_max = 30'000;
};

// The body of ERROR, GOAWAY and SUBSCRIBE_END.
struct StatusBody {
  uint32_t code = 0;
  std::string message;  // at most kStatusMessageBytesMax
};

void AppendClientHelloBody(const ClientHello& h, std::string* out);
void AppendServerHelloBody(const ServerHello& h, std::string* out);
// Truncates the message to kStatusMessageBytesMax at a UTF-8 character boundary.
void AppendStatusBody(uint32_t code, std::string_view message, std::string* out);

// Structural checks only (size, magic, reserved, ranges); version negotiation
// is the caller's (or the Decoder's). On failure `why` says what was wrong.
[[nodiscard]] bool ParseClientHello(std::span<const uint8_t> body, ClientHello* out,
                                    std::string* why);
[[nodiscard]] bool ParseServerHello(std::span<const uint8_t> body, ServerHello* out,
                                    std::string* why);
[[nodiscard]] bool ParseStatusBody(std::span<const uint8_t> body, StatusBody* out,
                                   std::string* why);

// The highest version both ranges hold, or 0 when they do not meet.
uint16_t NegotiateVersion(uint16_t peer_min, uint16_t peer_max, uint16_t our_min, uint16_t our_max);

// ---- Encoder ----

struct FrameFields {
  uint8_t kind = 0;
  uint8_t flags = 0;
  uint64_t request_id = 0;
};

// Checks a frame against the protocol as the decoder will (kind known, flags,
// request id, fixed bodies, size); kNone when valid, else `why` says why.
// Hello version negotiation is not checked here.
[[nodiscard]] FrameError CheckFrame(const FrameFields& f, std::span<const uint8_t> body,
                                    uint32_t frame_bytes_max, std::string* why);

// Appends one frame to `out` after CheckFrame. On error appends nothing.
[[nodiscard]] FrameError AppendFrame(const FrameFields& f, std::span<const uint8_t> body,
                                     uint32_t frame_bytes_max, std::string* out,
                                     std::string* why = nullptr);

// Zero-copy building for protobuf bodies: BeginFrame reserves the header and
// returns where the frame starts; the caller appends the body (for example
// msg.AppendToString(out)); FinishFrame checks the frame and writes its
// header. On error FinishFrame truncates `out` back to `start`.
size_t BeginFrame(std::string* out);
[[nodiscard]] FrameError FinishFrame(std::string* out, size_t start, const FrameFields& f,
                                     uint32_t frame_bytes_max, std::string* why = nullptr);

// Writes a header as given, without any check (tests and fuzzers use it to
// build invalid frames). `length` is 12 + body bytes for a valid frame.
void WriteHeaderUnchecked(uint32_t length, uint8_t kind, uint8_t flags, uint16_t reserved,
                          uint64_t request_id, uint8_t out[kHeaderBytes]);

// ---- Decoder ----

// The side a decoder serves: kServer decodes what clients send.
enum class Role : uint8_t { kServer, kClient };

struct DecoderOptions {
  Role role = Role::kServer;
  // Largest whole frame accepted, kFrameBytesMaxMin..kFrameBytesMaxLimit.
  // Role::kClient: replaced by the server hello's value when it arrives.
  uint32_t frame_bytes_max = kFrameBytesMaxDefault;
  // The first frame must be the peer's HELLO (a client also accepts a
  // connection-level ERROR first). false: decode mid-connection frames.
  bool expect_hello = true;
  // Versions this side speaks (server) or offered in its hello (client).
  uint16_t version_min = kVersionMin;
  uint16_t version_max = kVersionMax;
};

struct Frame {
  uint8_t kind = 0;
  uint8_t flags = 0;
  uint64_t request_id = 0;
  // Points into the chunk passed to Feed (frame arrived whole) or into the
  // decoder's buffer. Valid until the next Feed/Finish, and only while that
  // chunk is alive.
  std::span<const uint8_t> body;
  uint64_t offset = 0;  // stream offset of the frame's first byte
  size_t wire_bytes() const { return kHeaderBytes + body.size(); }
};

class Decoder {
 public:
  enum class Event : uint8_t {
    kNeedMore,  // every byte given was consumed; no complete frame yet
    kFrame,     // frame() holds a frame
    kError,     // error() says what; fatal unless error().fatal is false
    kEnd,       // Finish(): the stream ended cleanly at a frame boundary
  };
  struct Step {
    Event event;
    size_t consumed;  // bytes of the given chunk consumed
  };

  explicit Decoder(const DecoderOptions& options);

  // Consumes a prefix of `in`, stopping after at most one frame or error; call
  // again with the rest. Postconditions: consumed <= in.size(); with a
  // non-empty `in` and a healthy decoder, consumed > 0 or an event occurred;
  // kNeedMore implies consumed == in.size(). A failed decoder consumes nothing
  // and repeats its error.
  [[nodiscard]] Step Feed(std::span<const uint8_t> in);
  // Call at end of stream: kEnd at a frame boundary, else kError (kTruncated).
  [[nodiscard]] Event Finish();

  const Frame& frame() const { return frame_; }
  const DecodeError& error() const { return error_; }
  bool failed() const { return failed_; }
  // Negotiated version once the hello was decoded; 0 before.
  uint16_t version() const { return version_; }
  // Bytes of the frame in progress held by the decoder (header + body).
  size_t buffered_bytes() const { return header_have_ + body_have_; }
  size_t buffer_capacity() const { return body_capacity_; }
  uint64_t offset() const { return offset_; }  // stream bytes consumed so far
  uint32_t frame_bytes_max() const { return options_.frame_bytes_max; }

 private:
  Step Fail(FrameError code, size_t consumed, std::string message);
  bool CheckLength(uint32_t length, std::string* message, FrameError* code) const;
  FrameError CheckHeader(std::string* message) const;
  FrameError CheckHello(std::span<const uint8_t> body, std::string* message);
  Step Complete(std::span<const uint8_t> body, size_t consumed);
  Step Skip(std::span<const uint8_t> in, size_t used);
  void ResetFrame();

  DecoderOptions options_;
  bool failed_ = false;
  bool hello_seen_ = false;
  uint16_t version_ = 0;
  uint64_t offset_ = 0;       // stream bytes consumed
  uint64_t frame_start_ = 0;  // stream offset of the frame in progress

  uint8_t header_[kHeaderBytes] = {};
  size_t header_have_ = 0;
  uint32_t body_need_ = 0;  // body bytes of the frame in progress
  size_t body_have_ = 0;    // body bytes copied into body_
  uint64_t skip_left_ = 0;  // unknown kind: body bytes still to discard
  bool skipping_ = false;
  std::unique_ptr<uint8_t[]> body_;
  size_t body_capacity_ = 0;

  Frame frame_;
  DecodeError error_;
};

}  // namespace ringq::uring::rqp
