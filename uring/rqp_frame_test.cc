// Tests of the RQP frame codec (uring/rqp_frame.h, proto/PROTOCOL.md).
//
// Method: frames are built with the encoder (or raw, for invalid ones) and
// fed to a Decoder in every way recv could deliver them: whole, byte by
// byte, cut at every split point. Each way must give the same frames and
// errors; bad input must fail at the first byte that proves it bad, with
// bounded buffering.
#include "uring/rqp_frame.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace ringq::uring::rqp {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string MakeFrame(Kind kind, uint64_t id, std::string_view body, uint8_t flags = 0) {
  std::string out, why;
  const FrameError e =
      AppendFrame({KindByte(kind), flags, id}, Bytes(body), kFrameBytesMaxDefault, &out, &why);
  EXPECT_EQ(e, FrameError::kNone) << why;
  return out;
}

std::string RawFrame(uint32_t length, uint8_t kind, uint8_t flags, uint16_t reserved, uint64_t id,
                     std::string_view body) {
  uint8_t h[kHeaderBytes];
  WriteHeaderUnchecked(length, kind, flags, reserved, id, h);
  return std::string(reinterpret_cast<const char*>(h), sizeof h) + std::string(body);
}

std::string RawFrame(uint8_t kind, uint8_t flags, uint16_t reserved, uint64_t id,
                     std::string_view body) {
  return RawFrame(static_cast<uint32_t>(kLengthMin + body.size()), kind, flags, reserved, id, body);
}

std::string ClientHelloFrame(uint16_t vmin = 1, uint16_t vmax = 1, std::string token = "") {
  std::string body;
  AppendClientHelloBody({vmin, vmax, std::move(token)}, &body);
  return RawFrame(KindByte(Kind::kHello), 0, 0, 0, body);
}

std::string ServerHelloFrame(const ServerHello& h = {}) {
  std::string body;
  AppendServerHelloBody(h, &body);
  return RawFrame(KindByte(Kind::kServerHello), 0, 0, 0, body);
}

std::string StatusFrame(Kind kind, uint64_t id, uint32_t code, std::string_view message) {
  std::string body;
  AppendStatusBody(code, message, &body);
  return MakeFrame(kind, id, body);
}

struct Decoded {
  uint8_t kind;
  uint8_t flags;
  uint64_t request_id;
  std::string body;
  uint64_t offset;
  bool operator==(const Decoded&) const = default;
};

struct Outcome {
  std::vector<Decoded> frames;
  std::vector<std::pair<FrameError, uint64_t>> errors;  // code, offset
  bool fatal = false;
  Decoder::Event end = Decoder::Event::kNeedMore;  // from Finish()
  size_t buffered_max = 0;
  size_t capacity_max = 0;
  bool operator==(const Outcome& o) const {
    return frames == o.frames && errors == o.errors && fatal == o.fatal && end == o.end;
  }
};

// Feeds `stream` cut at the sorted offsets `cuts`, with the canonical loop
// (Feed until kNeedMore), then Finish().
Outcome Decode(const DecoderOptions& opt, std::string_view stream, const std::vector<size_t>& cuts,
               bool finish = true) {
  Decoder d(opt);
  Outcome o;
  size_t from = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(stream.size());
  for (size_t to : ends) {
    std::span<const uint8_t> chunk = Bytes(stream.substr(from, to - from));
    from = to;
    for (;;) {
      const Decoder::Step s = d.Feed(chunk);
      EXPECT_LE(s.consumed, chunk.size());
      chunk = chunk.subspan(s.consumed);
      o.buffered_max = std::max(o.buffered_max, d.buffered_bytes());
      o.capacity_max = std::max(o.capacity_max, d.buffer_capacity());
      EXPECT_LE(d.buffered_bytes(), opt.frame_bytes_max);
      if (s.event == Decoder::Event::kFrame) {
        const Frame& f = d.frame();
        o.frames.push_back(
            {f.kind, f.flags, f.request_id,
             std::string(reinterpret_cast<const char*>(f.body.data()), f.body.size()), f.offset});
      } else if (s.event == Decoder::Event::kError) {
        o.errors.emplace_back(d.error().code, d.error().offset);
        if (d.error().fatal) {
          o.fatal = true;
          return o;
        }
      } else {
        EXPECT_TRUE(chunk.empty());
        break;
      }
    }
  }
  if (finish) {
    o.end = d.Finish();
    if (o.end == Decoder::Event::kError) o.errors.emplace_back(d.error().code, d.error().offset);
  }
  return o;
}

Outcome DecodeWhole(const DecoderOptions& opt, std::string_view stream) {
  return Decode(opt, stream, {});
}

DecoderOptions ServerSide(bool expect_hello = true) {
  DecoderOptions o;
  o.role = Role::kServer;
  o.expect_hello = expect_hello;
  return o;
}

DecoderOptions ClientSide(bool expect_hello = true) {
  DecoderOptions o;
  o.role = Role::kClient;
  o.expect_hello = expect_hello;
  return o;
}

// The first error a decoder reports for `stream` fed whole.
DecodeError FirstError(const DecoderOptions& opt, std::string_view stream) {
  Decoder d(opt);
  std::span<const uint8_t> in = Bytes(stream);
  for (;;) {
    const Decoder::Step s = d.Feed(in);
    in = in.subspan(s.consumed);
    if (s.event == Decoder::Event::kError) return d.error();
    if (s.event == Decoder::Event::kNeedMore) break;
  }
  if (d.Finish() == Decoder::Event::kError) return d.error();
  return {};
}

// A body that is valid for `kind` (fixed layouts) or opaque bytes otherwise.
std::string ValidBody(uint8_t kind, size_t seed) {
  std::string body;
  switch (static_cast<Kind>(kind)) {
    case Kind::kHello:
      AppendClientHelloBody({1, 1, "token-" + std::to_string(seed)}, &body);
      break;
    case Kind::kServerHello:
      AppendServerHelloBody({}, &body);
      break;
    case Kind::kError:
      AppendStatusBody(5, "job 7 not found", &body);
      break;
    case Kind::kGoaway:
      AppendStatusBody(14, "server is shutting down", &body);
      break;
    case Kind::kSubscribeEnd:
      AppendStatusBody(0, "", &body);
      break;
    case Kind::kSubscribeClose:
      break;
    case Kind::kPing:
    case Kind::kPong:
      body = "ping" + std::to_string(seed);
      break;
    default:
      for (size_t i = 0; i < (seed * 37) % 300; ++i)
        body.push_back(static_cast<char>(i * 7 + seed));
  }
  return body;
}

uint64_t ValidId(uint8_t kind, uint64_t id) {
  if (kind == KindByte(Kind::kHello) || kind == KindByte(Kind::kServerHello) ||
      kind == KindByte(Kind::kGoaway)) {
    return 0;
  }
  return id;
}

uint8_t ValidFlags(uint8_t kind) {
  return kind == KindByte(Kind::kSubscribeEvent) ? kFlagStream : 0;
}

// ---- Round trips ----

TEST(RqpFrame, HeaderIsSixteenLittleEndianBytes) {
  // Goal: the wire layout is exactly what PROTOCOL.md says, byte by byte.
  const std::string f = MakeFrame(Kind::kPush, 0x0102030405060708ull, "abc");
  ASSERT_EQ(f.size(), 19u);
  const uint8_t want[] = {15, 0, 0, 0, 0x10, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 'a', 'b', 'c'};
  EXPECT_EQ(0, std::memcmp(f.data(), want, sizeof want));
  std::string hello = ClientHelloFrame(1, 1, "t");
  const uint8_t want_hello[] = {25, 0,   0,   0,   0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0,
                                0,  'R', 'Q', 'P', '1',  1, 0, 1, 0, 1, 0, 0, 0, 't'};
  ASSERT_EQ(hello.size(), sizeof want_hello);
  EXPECT_EQ(0, std::memcmp(hello.data(), want_hello, sizeof want_hello));
}

TEST(RqpFrame, EveryKnownKindRoundTrips) {
  // Goal: each kind of the table encodes and decodes to the same fields, on
  // the side that receives it. Hello kinds open their stream; others are
  // decoded mid-connection.
  int known = 0;
  for (int k = 0; k < 256; ++k) {
    const uint8_t kind = static_cast<uint8_t>(k);
    if (!IsKnownKind(kind)) continue;
    ++known;
    const bool hello = kind == KindByte(Kind::kHello) || kind == KindByte(Kind::kServerHello);
    const std::string body = ValidBody(kind, k);
    std::string out, why;
    ASSERT_EQ(FrameError::kNone, AppendFrame({kind, ValidFlags(kind), ValidId(kind, 1000 + k)},
                                             Bytes(body), kFrameBytesMaxDefault, &out, &why))
        << KindName(kind) << ": " << why;
    DecoderOptions opt = IsServerKind(kind) ? ClientSide(hello) : ServerSide(hello);
    const Outcome o = DecodeWhole(opt, out);
    ASSERT_TRUE(o.errors.empty()) << KindName(kind) << " " << FrameErrorName(o.errors[0].first);
    ASSERT_EQ(o.frames.size(), 1u) << KindName(kind);
    EXPECT_EQ(o.frames[0], (Decoded{kind, ValidFlags(kind), ValidId(kind, 1000 + k), body, 0}));
    EXPECT_EQ(o.end, Decoder::Event::kEnd);
  }
  EXPECT_EQ(known, 41);
}

TEST(RqpFrame, FixedBodiesRoundTrip) {
  // Goal: hello and status bodies parse back to what was encoded.
  std::string b;
  AppendClientHelloBody({1, 3, std::string(kTokenBytesMax, 'x')}, &b);
  ClientHello ch;
  std::string why;
  ASSERT_TRUE(ParseClientHello(Bytes(b), &ch, &why)) << why;
  EXPECT_EQ(ch.version_min, 1);
  EXPECT_EQ(ch.version_max, 3);
  EXPECT_EQ(ch.token, std::string(kTokenBytesMax, 'x'));

  ServerHello sh{1, 8u << 20, 500, 100, 2u << 20, 77, 1234};
  b.clear();
  AppendServerHelloBody(sh, &b);
  ServerHello back;
  ASSERT_TRUE(ParseServerHello(Bytes(b), &back, &why)) << why;
  EXPECT_EQ(back.frame_bytes_max, 8u << 20);
  EXPECT_EQ(back.inflight_max, 500u);
  EXPECT_EQ(back.batch_max, 100u);
  EXPECT_EQ(back.payload_bytes_max, 2u << 20);
  EXPECT_EQ(back.subscribe_credits_max, 77u);
  EXPECT_EQ(back.fetch_wait_ms_max, 1234u);

  b.clear();
  AppendStatusBody(8, "in-flight requests per connection exceeded (max 1024)", &b);
  StatusBody st;
  ASSERT_TRUE(ParseStatusBody(Bytes(b), &st, &why)) << why;
  EXPECT_EQ(st.code, 8u);
  EXPECT_EQ(st.message, "in-flight requests per connection exceeded (max 1024)");
}

TEST(RqpFrame, StatusMessageIsCutAtACharacterBoundary) {
  // Goal: an over-long message is truncated to the limit without splitting a
  // UTF-8 character ("é" is two bytes and straddles byte 4096 here).
  std::string msg(kStatusMessageBytesMax - 1, 'a');
  msg += "\xC3\xA9tail";
  std::string b;
  AppendStatusBody(3, msg, &b);
  EXPECT_EQ(b.size(), kStatusFixedBytes + kStatusMessageBytesMax - 1);
  StatusBody st;
  std::string why;
  ASSERT_TRUE(ParseStatusBody(Bytes(b), &st, &why)) << why;
}

TEST(RqpFrame, HandshakeNegotiatesTheHighestCommonVersion) {
  // Goal: the decoder negotiates like PROTOCOL.md says and then takes requests.
  DecoderOptions opt = ServerSide();
  opt.version_max = 3;
  Decoder d(opt);
  const std::string s = ClientHelloFrame(2, 5) + MakeFrame(Kind::kPush, 1, "x");
  std::span<const uint8_t> in = Bytes(s);
  auto st = d.Feed(in);
  ASSERT_EQ(st.event, Decoder::Event::kFrame);
  EXPECT_EQ(d.version(), 3);
  st = d.Feed(in.subspan(st.consumed));
  ASSERT_EQ(st.event, Decoder::Event::kFrame);
  EXPECT_EQ(d.frame().kind, KindByte(Kind::kPush));
  EXPECT_EQ(NegotiateVersion(1, 1, 2, 3), 0);
  EXPECT_EQ(NegotiateVersion(1, 9, 1, 1), 1);
}

TEST(RqpFrame, BeginFinishFrameBuildsInPlace) {
  // Goal: building a frame around a body appended in place gives the same
  // bytes as AppendFrame, and an oversized body leaves the buffer as it was.
  std::string a = "prefix";
  const size_t at = BeginFrame(&a);
  a += "body bytes";
  ASSERT_EQ(FrameError::kNone,
            FinishFrame(&a, at, {KindByte(Kind::kAck), 0, 9}, kFrameBytesMaxMin));
  EXPECT_EQ(a, "prefix" + MakeFrame(Kind::kAck, 9, "body bytes"));

  std::string b = "keep";
  const size_t at2 = BeginFrame(&b);
  b.append(kFrameBytesMaxMin, 'z');  // 16 + 64 KiB > 64 KiB
  std::string why;
  EXPECT_EQ(FrameError::kFrameTooLarge,
            FinishFrame(&b, at2, {KindByte(Kind::kPush), 0, 1}, kFrameBytesMaxMin, &why));
  EXPECT_EQ(b, "keep");
  EXPECT_NE(why.find("exceeds frame_bytes_max"), std::string::npos) << why;
}

TEST(RqpFrame, EncoderRefusesWhatTheDecoderWouldReject) {
  // Goal: validation in pairs: the encoder checks the same rules.
  std::string out, why;
  const auto enc = [&](uint8_t kind, uint8_t flags, uint64_t id, std::string_view body) {
    return AppendFrame({kind, flags, id}, Bytes(body), kFrameBytesMaxMin, &out, &why);
  };
  EXPECT_EQ(enc(0x7F, 0, 1, ""), FrameError::kUnknownKind);
  EXPECT_EQ(enc(0x10, 0x02, 1, ""), FrameError::kReservedBits);
  EXPECT_EQ(enc(0x10, kFlagStream, 1, ""), FrameError::kBadFlags);
  EXPECT_EQ(enc(0xA0, 0, 1, ""), FrameError::kBadFlags);
  EXPECT_EQ(enc(0x10, 0, 0, ""), FrameError::kBadRequestId);
  EXPECT_EQ(enc(0x84, 0, 5, ValidBody(0x84, 0)), FrameError::kBadRequestId);
  EXPECT_EQ(enc(0x22, 0, 5, "x"), FrameError::kBadBody);
  EXPECT_EQ(enc(0x02, 0, 5, std::string(kPingBytesMax + 1, 'p')), FrameError::kBadBody);
  EXPECT_EQ(enc(0x01, 0, 0, "short"), FrameError::kBadHello);
  EXPECT_EQ(enc(0x10, 0, 1, std::string(kFrameBytesMaxMin - kHeaderBytes + 1, 'x')),
            FrameError::kFrameTooLarge);
  std::string zero_code;
  AppendStatusBody(0, "no", &zero_code);
  EXPECT_EQ(enc(0x83, 0, 1, zero_code), FrameError::kBadBody);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(enc(0x10, 0, 1, std::string(kFrameBytesMaxMin - kHeaderBytes, 'x')), FrameError::kNone);
}

// ---- Splits ----

std::string MultiFrameStream() {
  std::string s = ClientHelloFrame(1, 1, "secret");
  s += MakeFrame(Kind::kPush, 1, "push one");
  s += MakeFrame(Kind::kAck, 2, "");
  s += RawFrame(0x7E, 0, 0, 3, "an unknown kind is skipped");
  s += MakeFrame(Kind::kSubscribeOpen, 4, std::string(700, 's'));
  s += MakeFrame(Kind::kPing, 0, "p");
  s += MakeFrame(Kind::kSubscribeClose, 4, "");
  s += MakeFrame(Kind::kPushBatch, 5, std::string(2500, 'b'));
  return s;
}

TEST(RqpFrame, EverySplitPointYieldsTheSameFrames) {
  // Goal: a stream cut at any one byte, or fed byte by byte, decodes exactly
  // like the whole stream (frames, the recoverable unknown-kind error, offsets).
  const std::string s = MultiFrameStream();
  const Outcome whole = DecodeWhole(ServerSide(), s);
  ASSERT_EQ(whole.frames.size(), 7u);
  ASSERT_EQ(whole.errors.size(), 1u);
  EXPECT_EQ(whole.errors[0].first, FrameError::kUnknownKind);
  EXPECT_EQ(whole.end, Decoder::Event::kEnd);
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    ASSERT_EQ(Decode(ServerSide(), s, {cut}), whole) << "cut at " << cut;
  }
  std::vector<size_t> every(s.size());
  for (size_t i = 0; i < s.size(); ++i) every[i] = i;
  const Outcome bytewise = Decode(ServerSide(), s, every);
  EXPECT_EQ(bytewise, whole);
  EXPECT_LE(bytewise.capacity_max, 2500u);  // the largest body, buffered once
}

TEST(RqpFrame, EveryPairOfSplitPointsYieldsTheSameFrames) {
  // Goal: two cuts (three chunks) anywhere in a small stream change nothing.
  std::string s = ClientHelloFrame() + MakeFrame(Kind::kPush, 1, "abcdefgh") +
                  MakeFrame(Kind::kStats, 2, "") + RawFrame(0x33, 0, 0, 9, "zz") +
                  MakeFrame(Kind::kExtend, 3, "0123456789");
  const Outcome whole = DecodeWhole(ServerSide(), s);
  ASSERT_EQ(whole.frames.size(), 4u);
  for (size_t i = 0; i <= s.size(); ++i) {
    for (size_t j = i; j <= s.size(); ++j) {
      ASSERT_EQ(Decode(ServerSide(), s, {i, j}), whole) << "cuts " << i << "," << j;
    }
  }
}

TEST(RqpFrame, WholeFramesAreNotCopied) {
  // Goal: a frame that arrives whole in one chunk points into that chunk.
  const std::string s = MakeFrame(Kind::kPush, 1, "payload");
  Decoder d(ServerSide(false));
  const auto st = d.Feed(Bytes(s));
  ASSERT_EQ(st.event, Decoder::Event::kFrame);
  EXPECT_EQ(d.frame().body.data(), reinterpret_cast<const uint8_t*>(s.data()) + kHeaderBytes);
  EXPECT_EQ(d.buffer_capacity(), 0u);
}

// ---- Truncation ----

TEST(RqpFrame, TruncatedFrameThenEofIsAnError) {
  // Goal: EOF anywhere inside a frame is kTruncated; EOF between frames is a
  // clean end. Covers the header, the body and a skipped unknown-kind body.
  const std::string s = ClientHelloFrame() + MakeFrame(Kind::kPush, 1, "twelve bytes") +
                        RawFrame(0x55, 0, 0, 2, "skipped body");
  std::vector<size_t> boundaries = {0};
  {
    const Outcome whole = DecodeWhole(ServerSide(), s);
    for (const auto& f : whole.frames)
      boundaries.push_back(f.offset + kHeaderBytes + f.body.size());
    boundaries.push_back(s.size());
  }
  for (size_t n = 0; n <= s.size(); ++n) {
    const Outcome o = Decode(ServerSide(), s.substr(0, n), {});
    const bool at_boundary = std::find(boundaries.begin(), boundaries.end(), n) != boundaries.end();
    if (at_boundary) {
      EXPECT_EQ(o.end, Decoder::Event::kEnd) << n;
    } else {
      ASSERT_EQ(o.end, Decoder::Event::kError) << n;
      EXPECT_EQ(o.errors.back().first, FrameError::kTruncated) << n;
    }
  }
  const DecodeError e =
      FirstError(ServerSide(false), MakeFrame(Kind::kPush, 1, "abcdef").substr(0, 19));
  EXPECT_EQ(e.code, FrameError::kTruncated);
  EXPECT_TRUE(e.fatal);
  EXPECT_NE(e.message.find("3 of 6 body bytes"), std::string::npos) << e.message;
}

// ---- Length claims ----

TEST(RqpFrame, FourGibClaimFailsAtOnceWithoutAllocating) {
  // Goal: a length of 0xFFFFFFFF is rejected as soon as its 4 bytes arrive,
  // before the rest of the header is taken and with no large allocation.
  const std::string claim = RawFrame(0xFFFFFFFFu, 0x10, 0, 0, 1, "") + std::string(64, 'x');
  Decoder d(ServerSide(false));
  const size_t heap_before = mallinfo2().uordblks;
  const auto st = d.Feed(Bytes(claim));
  const size_t heap_after = mallinfo2().uordblks;
  ASSERT_EQ(st.event, Decoder::Event::kError);
  EXPECT_EQ(st.consumed, 4u);
  EXPECT_EQ(d.error().code, FrameError::kFrameTooLarge);
  EXPECT_TRUE(d.error().fatal);
  EXPECT_EQ(StatusFor(d.error().code), StatusCode::kResourceExhausted);
  EXPECT_NE(d.error().message.find("4294967299 bytes exceeds frame_bytes_max 4194304"),
            std::string::npos)
      << d.error().message;
  EXPECT_EQ(d.buffer_capacity(), 0u);
  EXPECT_LT(heap_after - heap_before, 1024u);  // the error message, nothing more
  // A failed decoder stays failed and consumes nothing more.
  const auto again = d.Feed(Bytes(claim).subspan(4));
  EXPECT_EQ(again.event, Decoder::Event::kError);
  EXPECT_EQ(again.consumed, 0u);

  // The same claim arriving one byte at a time fails on its fourth byte.
  Decoder slow(ServerSide(false));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(slow.Feed(Bytes(claim).subspan(i, 1)).event, Decoder::Event::kNeedMore);
  }
  EXPECT_EQ(slow.Feed(Bytes(claim).subspan(3, 1)).event, Decoder::Event::kError);
}

TEST(RqpFrame, LengthBounds) {
  // Goal: length < 12 (zero included) is kBadLength; the largest frame that
  // fits frame_bytes_max decodes; one byte more is kFrameTooLarge.
  for (uint32_t len : {0u, 1u, 11u}) {
    const DecodeError e = FirstError(ServerSide(false), RawFrame(len, 0x10, 0, 0, 1, ""));
    EXPECT_EQ(e.code, FrameError::kBadLength) << len;
    EXPECT_TRUE(e.fatal);
  }
  DecoderOptions opt = ServerSide(false);
  opt.frame_bytes_max = kFrameBytesMaxMin;
  const std::string fits = MakeFrame(Kind::kPush, 1, std::string(kFrameBytesMaxMin - 16, 'f'));
  EXPECT_EQ(DecodeWhole(opt, fits).frames.size(), 1u);
  const std::string over = RawFrame(kFrameBytesMaxMin - 3, 0x10, 0, 0, 1, "");
  EXPECT_EQ(FirstError(opt, over).code, FrameError::kFrameTooLarge);
}

TEST(RqpFrame, BufferingIsBoundedAndReleased) {
  // Goal: a max-size frame fed byte by byte never holds more than
  // frame_bytes_max; after it, the large buffer is freed (memory returns to
  // baseline) while small ones are kept for reuse.
  DecoderOptions opt = ServerSide(false);
  opt.frame_bytes_max = kFrameBytesMaxMin * 2;
  const std::string big =
      MakeFrame(Kind::kPushBatch, 1, std::string(opt.frame_bytes_max - 16, 'B'));
  Decoder d(opt);
  size_t buffered_max = 0;
  for (size_t i = 0; i < big.size(); ++i) {
    const auto st = d.Feed(Bytes(big).subspan(i, 1));
    ASSERT_EQ(st.consumed, 1u);
    buffered_max = std::max(buffered_max, d.buffered_bytes());
    ASSERT_LE(d.buffered_bytes(), opt.frame_bytes_max);
    ASSERT_EQ(st.event, i + 1 == big.size() ? Decoder::Event::kFrame : Decoder::Event::kNeedMore);
  }
  EXPECT_EQ(buffered_max, opt.frame_bytes_max - 1);  // the last byte completes it
  EXPECT_EQ(d.frame().body.size(), opt.frame_bytes_max - 16);
  EXPECT_EQ(d.buffer_capacity(), opt.frame_bytes_max - 16);
  EXPECT_EQ(d.Feed({}).event, Decoder::Event::kNeedMore);  // the canonical loop's last call
  EXPECT_EQ(d.buffer_capacity(), 0u);

  const std::string small = MakeFrame(Kind::kPush, 2, std::string(100, 's'));
  ASSERT_EQ(Decode(opt, small, {50}).frames.size(), 1u);
  Decoder k(opt);
  (void)k.Feed(Bytes(small).subspan(0, 50));
  (void)k.Feed(Bytes(small).subspan(50));
  (void)k.Feed({});
  EXPECT_EQ(k.buffer_capacity(), 100u);  // small buffers are kept
}

// ---- Bad input ----

TEST(RqpFrame, GarbageFailsFastAndFatally) {
  // Goal: common non-RQP openings fail on their first bytes, with a reason.
  const std::string http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  DecodeError e = FirstError(ServerSide(), http);
  EXPECT_EQ(e.code, FrameError::kFrameTooLarge);  // "GET " read as a length
  EXPECT_TRUE(e.fatal);
  e = FirstError(ServerSide(), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  EXPECT_EQ(e.code, FrameError::kFrameTooLarge);
  // A plausible length with a non-hello first frame.
  e = FirstError(ServerSide(), RawFrame(0x10, 0, 0, 1, "not a hello"));
  EXPECT_EQ(e.code, FrameError::kHelloExpected);
  EXPECT_EQ(StatusFor(e.code), StatusCode::kFailedPrecondition);
  // A hello whose body is not an RQP hello.
  e = FirstError(ServerSide(), RawFrame(0x01, 0, 0, 0, "HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(e.code, FrameError::kBadHello);
  EXPECT_NE(e.message.find("not an RQP peer"), std::string::npos) << e.message;
}

TEST(RqpFrame, RandomGarbageNeverEscapesTheBounds) {
  // Goal: seeded random byte streams, after a valid hello or without one, on
  // both sides, in random chunks: the decoder stops at an error or wants
  // more, stays within bounds and never yields a frame the encoder rejects.
  std::mt19937_64 rng(20240601);
  int fatal = 0;
  for (int round = 0; round < 2000; ++round) {
    const bool server = round % 2 == 0;
    std::string s = (round % 4 < 2) ? (server ? ClientHelloFrame() : ServerHelloFrame()) : "";
    const size_t n = rng() % 512;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(rng()));
    std::vector<size_t> cuts;
    for (size_t at = rng() % 64; at < s.size(); at += 1 + rng() % 64) cuts.push_back(at);
    DecoderOptions opt = server ? ServerSide(round % 8 < 6) : ClientSide(round % 8 < 6);
    opt.frame_bytes_max = kFrameBytesMaxMin;
    const Outcome o = Decode(opt, s, cuts);
    ASSERT_EQ(o, DecodeWhole(opt, s)) << "round " << round;
    EXPECT_LE(o.buffered_max, opt.frame_bytes_max);
    for (const Decoded& f : o.frames) {
      std::string out;
      EXPECT_EQ(FrameError::kNone, AppendFrame({f.kind, f.flags, f.request_id}, Bytes(f.body),
                                               opt.frame_bytes_max, &out));
      EXPECT_EQ(out, s.substr(f.offset, out.size()));
    }
    fatal += o.fatal ? 1 : 0;
  }
  EXPECT_GT(fatal, 1500);  // random bytes are almost never valid RQP
}

TEST(RqpFrame, UnknownKindIsSkippedWithoutBuffering) {
  // Goal: an unknown client kind is reported (recoverable, with its request
  // id, so the server answers UNIMPLEMENTED) and its body is skipped without
  // being buffered; the next frame decodes.
  const std::string hello = ClientHelloFrame();
  const std::string unknown = RawFrame(0x7F, 0, 0, 42, std::string(5000, 'u'));
  const std::string s = hello + unknown + MakeFrame(Kind::kPush, 43, "after");
  Decoder d(ServerSide());
  std::span<const uint8_t> in = Bytes(s);
  std::vector<Decoder::Event> events;
  for (size_t i = 0; i < in.size(); ++i) {
    const auto st = d.Feed(in.subspan(i, 1));
    if (i >= hello.size() && i < hello.size() + unknown.size()) {
      EXPECT_LE(d.buffered_bytes(), kHeaderBytes);  // the header only, never the body
    }
    if (st.event == Decoder::Event::kError) {
      EXPECT_EQ(d.error().code, FrameError::kUnknownKind);
      EXPECT_FALSE(d.error().fatal);
      EXPECT_EQ(d.error().request_id, 42u);
      EXPECT_EQ(d.error().kind, 0x7F);
      EXPECT_EQ(StatusFor(d.error().code), StatusCode::kUnimplemented);
    }
    if (st.event != Decoder::Event::kNeedMore) events.push_back(st.event);
  }
  EXPECT_LE(d.buffer_capacity(), hello.size());  // what the hello needed, not 5000
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1], Decoder::Event::kError);
  EXPECT_EQ(events[2], Decoder::Event::kFrame);
  EXPECT_EQ(d.frame().request_id, 43u);
  // The client side skips unknown server kinds the same way.
  const Outcome c = DecodeWhole(
      ClientSide(false), RawFrame(0xEE, 0, 0, 7, "new") + MakeFrame(Kind::kPushResponse, 8, ""));
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_EQ(c.errors[0].first, FrameError::kUnknownKind);
  EXPECT_EQ(c.frames.size(), 1u);
}

TEST(RqpFrame, HeaderViolationsAreFatal) {
  // Goal: each header rule fails with its own error, before the body is read.
  struct Case {
    const char* what;
    DecoderOptions opt;
    std::string stream;
    FrameError want;
  };
  const std::string hello = ClientHelloFrame();
  std::string ok_status;
  AppendStatusBody(3, "x", &ok_status);
  std::string bad_code;
  AppendStatusBody(0, "", &bad_code);
  bad_code[0] = 17;
  const Case cases[] = {
      {"reserved u16", ServerSide(false), RawFrame(0x10, 0, 1, 1, ""), FrameError::kReservedBits},
      {"undefined flag", ServerSide(false), RawFrame(0x10, 0x80, 0, 1, ""),
       FrameError::kReservedBits},
      {"stream flag on PUSH", ServerSide(false), RawFrame(0x10, kFlagStream, 0, 1, ""),
       FrameError::kBadFlags},
      {"event without stream flag", ClientSide(false), RawFrame(0xA0, 0, 0, 1, ""),
       FrameError::kBadFlags},
      {"server kind to server", ServerSide(false), RawFrame(0x90, 0, 0, 1, ""),
       FrameError::kWrongDirection},
      {"unknown server kind to server", ServerSide(false), RawFrame(0xFF, 0, 0, 1, ""),
       FrameError::kWrongDirection},
      {"client kind to client", ClientSide(false), RawFrame(0x10, 0, 0, 1, ""),
       FrameError::kWrongDirection},
      {"PUSH with id 0", ServerSide(false), RawFrame(0x10, 0, 0, 0, ""), FrameError::kBadRequestId},
      {"GOAWAY with an id", ClientSide(false), RawFrame(0x84, 0, 0, 3, ok_status),
       FrameError::kBadRequestId},
      {"HELLO with an id", ServerSide(), RawFrame(0x01, 0, 0, 1, hello.substr(16)),
       FrameError::kBadRequestId},
      {"no hello first", ServerSide(), RawFrame(0x02, 0, 0, 1, ""), FrameError::kHelloExpected},
      {"unknown kind first", ServerSide(), RawFrame(0x7F, 0, 0, 1, ""), FrameError::kHelloExpected},
      {"second hello", ServerSide(), hello + hello, FrameError::kUnexpectedHello},
      {"hello mid-connection", ServerSide(false), hello, FrameError::kUnexpectedHello},
      {"client version 2..3", ServerSide(), ClientHelloFrame(2, 3), FrameError::kBadVersion},
      {"client version 0..0", ServerSide(), ClientHelloFrame(0, 0), FrameError::kBadHello},
      {"token length mismatch", ServerSide(), RawFrame(0x01, 0, 0, 0, hello.substr(16) + "extra"),
       FrameError::kBadHello},
      {"hello body too short", ServerSide(), RawFrame(0x01, 0, 0, 0, "RQP1"),
       FrameError::kBadHello},
      {"ping too long", ServerSide(false), RawFrame(0x02, 0, 0, 1, std::string(65, 'p')),
       FrameError::kBadBody},
      {"close with body", ServerSide(false), RawFrame(0x22, 0, 0, 1, "x"), FrameError::kBadBody},
      {"error code 0", ClientSide(false), RawFrame(0x83, 0, 0, 1, std::string(4, '\0')),
       FrameError::kBadBody},
      {"status code 17", ClientSide(false), RawFrame(0xA1, 0, 0, 1, bad_code),
       FrameError::kBadBody},
      {"status body short", ClientSide(false), RawFrame(0x84, 0, 0, 0, "ab"), FrameError::kBadBody},
      {"server chose v2", ClientSide(), ServerHelloFrame({2}), FrameError::kBadVersion},
      {"server frame max tiny", ClientSide(), ServerHelloFrame({1, 1024}), FrameError::kBadHello},
      {"response before server hello", ClientSide(), RawFrame(0x90, 0, 0, 1, ""),
       FrameError::kHelloExpected},
  };
  for (const Case& c : cases) {
    const DecodeError e = FirstError(c.opt, c.stream);
    EXPECT_EQ(e.code, c.want) << c.what << ": got " << FrameErrorName(e.code) << ": " << e.message;
    EXPECT_TRUE(e.fatal) << c.what;
    EXPECT_FALSE(e.message.empty()) << c.what;
  }
}

TEST(RqpFrame, ClientAcceptsARejectionInsteadOfAHello) {
  // Goal: a server that refuses the hello answers with a connection-level
  // ERROR (request id 0) first; the client decoder yields it.
  std::string s = StatusFrame(Kind::kError, 0, 12, "client speaks RQP versions 2..3");
  const Outcome o = DecodeWhole(ClientSide(), s);
  ASSERT_EQ(o.frames.size(), 1u);
  StatusBody st;
  std::string why;
  ASSERT_TRUE(ParseStatusBody(Bytes(o.frames[0].body), &st, &why));
  EXPECT_EQ(st.code, 12u);
  // But not a per-request ERROR: nothing was requested yet.
  EXPECT_EQ(FirstError(ClientSide(), StatusFrame(Kind::kError, 5, 3, "x")).code,
            FrameError::kHelloExpected);
}

TEST(RqpFrame, ClientAdoptsTheServersFrameLimit) {
  // Goal: after the server hello, a client decoder accepts frames up to the
  // server's frame_bytes_max (larger or smaller than its own default).
  ServerHello big;
  big.frame_bytes_max = 8u << 20;
  std::string five_mib = RawFrame(static_cast<uint32_t>(kLengthMin + (5u << 20)), 0x92, 0, 0, 1,
                                  std::string(5u << 20, 'j'));
  const Outcome o = DecodeWhole(ClientSide(), ServerHelloFrame(big) + five_mib);
  ASSERT_TRUE(o.errors.empty()) << FrameErrorName(o.errors[0].first);
  EXPECT_EQ(o.frames.size(), 2u);

  ServerHello small;
  small.frame_bytes_max = kFrameBytesMaxMin;
  const DecodeError e =
      FirstError(ClientSide(), ServerHelloFrame(small) + RawFrame(100'000, 0x92, 0, 0, 1, ""));
  EXPECT_EQ(e.code, FrameError::kFrameTooLarge);
  EXPECT_NE(e.message.find("frame_bytes_max 65536"), std::string::npos) << e.message;
}

// ---- Pipelining ----

TEST(RqpFrame, PipelinedThousandsOfFrames) {
  // Goal: 20,000 pipelined requests in one buffer decode in order without a
  // copy; fed in MTU-sized and in random chunks they decode the same.
  std::string s = ClientHelloFrame();
  constexpr uint64_t kFrames = 20'000;
  for (uint64_t id = 1; id <= kFrames; ++id) {
    const std::string body = "job-" + std::to_string(id);
    s += MakeFrame(id % 3 == 0 ? Kind::kAck : Kind::kPush, id, body);
  }
  Decoder d(ServerSide());
  std::span<const uint8_t> in = Bytes(s);
  const uint8_t* base = in.data();
  uint64_t want = 0;
  for (;;) {
    const auto st = d.Feed(in);
    in = in.subspan(st.consumed);
    if (st.event != Decoder::Event::kFrame) {
      ASSERT_EQ(st.event, Decoder::Event::kNeedMore);
      break;
    }
    const Frame& f = d.frame();
    ASSERT_EQ(f.request_id, want);
    if (want > 0) {
      ASSERT_EQ(f.body.data(), base + f.offset + kHeaderBytes);  // zero-copy
    }
    ++want;
  }
  EXPECT_EQ(want, kFrames + 1);
  EXPECT_EQ(d.buffer_capacity(), 0u);

  const Outcome whole = DecodeWhole(ServerSide(), s);
  std::vector<size_t> mtu;
  for (size_t at = 1448; at < s.size(); at += 1448) mtu.push_back(at);
  EXPECT_EQ(Decode(ServerSide(), s, mtu), whole);
  std::mt19937 rng(7);
  std::vector<size_t> random_cuts;
  for (size_t at = rng() % 100; at < s.size(); at += 1 + rng() % 100) random_cuts.push_back(at);
  const Outcome r = Decode(ServerSide(), s, random_cuts);
  EXPECT_EQ(r, whole);
  EXPECT_LT(r.capacity_max, 64u);
}

TEST(RqpFrame, ErrorNamesAndStatusMapping) {
  // Goal: every error has a name and a status code a server can send.
  for (int e = 1; e <= static_cast<int>(FrameError::kTruncated); ++e) {
    const auto fe = static_cast<FrameError>(e);
    EXPECT_STRNE(FrameErrorName(fe), "?");
    EXPECT_NE(StatusFor(fe), StatusCode::kOk);
    EXPECT_NE(StatusFor(fe), StatusCode::kInternal);
  }
  EXPECT_STREQ(KindName(0x7F), "UNKNOWN");
  EXPECT_STREQ(KindName(0xA0), "SUBSCRIBE_EVENT");
}

}  // namespace
}  // namespace ringq::uring::rqp
