// libFuzzer target for the RQP frame decoder (uring/rqp_frame.h).
//
// Input: [u8 config][u8 chunk seed][stream bytes...]
//   config bit 0     decoder role: 0 server (decodes client frames), 1 client
//   config bit 1     expect_hello
//   config bits 2-3  frame_bytes_max: 64 KiB, 128 KiB, 4 MiB, 64 KiB + 1
//   config bits 4-5  versions this side speaks: 1..(1 + value)
//   chunk seed       drives the chunk sizes the stream is cut into
//
// The stream is decoded twice: in one chunk, and in chunks of pseudo-random
// sizes (1..16 or 1..512 bytes), each copied into its own exact-size heap
// buffer so ASan catches any read past a chunk. Invariants checked (any
// violation traps):
//   * both decodings give the same frames and errors at the same offsets;
//   * Feed consumes at most what it is given, all of it on kNeedMore, and
//     something (or reports an event) when healthy;
//   * buffered_bytes() <= frame_bytes_max and buffer_capacity() <=
//     frame_bytes_max - 16 after every call; offset() == bytes consumed;
//   * every frame re-encodes (AppendFrame, which validates) to exactly the
//     stream bytes it was decoded from;
//   * only kUnknownKind is recoverable; a failed decoder consumes nothing.
//
// Build: tests/fuzz/run_rqp_fuzz.sh (clang++ -fsanitize=fuzzer,address,undefined).
// Seed corpus: uring/fuzz/rqp_frame_corpus/ (see uring/fuzz/README.md).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "uring/rqp_frame.h"

namespace {

using ringq::uring::rqp::AppendFrame;
using ringq::uring::rqp::Decoder;
using ringq::uring::rqp::DecoderOptions;
using ringq::uring::rqp::FrameError;
using ringq::uring::rqp::kFrameBytesMaxDefault;
using ringq::uring::rqp::kFrameBytesMaxMin;
using ringq::uring::rqp::kHeaderBytes;
using ringq::uring::rqp::Role;

#define FUZZ_CHECK(cond)                                                                          \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      std::fprintf(stderr, "rqp_frame_fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                   #cond);                                                                        \
      __builtin_trap();                                                                           \
    }                                                                                             \
  } while (0)

struct Event {
  int type;  // 1 frame, 2 error, 3 end
  uint8_t kind;
  uint8_t flags;
  uint64_t request_id;
  uint64_t offset;
  FrameError code;
  bool fatal;
  std::string body;
  bool operator==(const Event&) const = default;
};

uint64_t SplitMix(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void CheckBounds(const Decoder& d, uint64_t consumed_total) {
  FUZZ_CHECK(d.buffered_bytes() <= d.frame_bytes_max());
  FUZZ_CHECK(d.buffer_capacity() + kHeaderBytes <= d.frame_bytes_max());
  FUZZ_CHECK(d.offset() == consumed_total);
}

// Feeds one chunk with the canonical loop; appends events; false once fatal.
bool FeedChunk(Decoder& d, const uint8_t* stream, const uint8_t* chunk, size_t size,
               uint64_t* consumed_total, std::vector<Event>* events) {
  std::span<const uint8_t> in(chunk, size);
  for (int guard = 0;; ++guard) {
    FUZZ_CHECK(guard <= static_cast<int>(size) + 2);  // progress on every call
    const Decoder::Step st = d.Feed(in);
    FUZZ_CHECK(st.consumed <= in.size());
    *consumed_total += st.consumed;
    in = in.subspan(st.consumed);
    CheckBounds(d, *consumed_total);
    if (st.event == Decoder::Event::kNeedMore) {
      FUZZ_CHECK(in.empty());
      return true;
    }
    if (st.event == Decoder::Event::kFrame) {
      const auto& f = d.frame();
      FUZZ_CHECK(f.offset + f.wire_bytes() == d.offset());
      std::string re;
      std::string why;
      const FrameError e =
          AppendFrame({f.kind, f.flags, f.request_id}, f.body, d.frame_bytes_max(), &re, &why);
      if (e != FrameError::kNone) std::fprintf(stderr, "re-encode failed: %s\n", why.c_str());
      FUZZ_CHECK(e == FrameError::kNone);
      FUZZ_CHECK(re.size() == f.wire_bytes());
      FUZZ_CHECK(
          std::equal(re.begin(), re.end(), reinterpret_cast<const char*>(stream) + f.offset));
      events->push_back({1, f.kind, f.flags, f.request_id, f.offset, FrameError::kNone, false,
                         std::string(reinterpret_cast<const char*>(f.body.data()), f.body.size())});
      continue;
    }
    FUZZ_CHECK(st.event == Decoder::Event::kError);
    const auto& err = d.error();
    FUZZ_CHECK(err.code != FrameError::kNone && err.code != FrameError::kTruncated);
    FUZZ_CHECK(err.fatal == (err.code != FrameError::kUnknownKind));
    FUZZ_CHECK(!err.message.empty());
    FUZZ_CHECK(err.offset <= d.offset());
    events->push_back({2, err.kind, 0, err.request_id, err.offset, err.code, err.fatal, {}});
    if (err.fatal) {
      FUZZ_CHECK(d.failed());
      const Decoder::Step again = d.Feed(in);
      FUZZ_CHECK(again.event == Decoder::Event::kError && again.consumed == 0);
      return false;
    }
  }
}

void Finish(Decoder& d, std::vector<Event>* events) {
  const Decoder::Event e = d.Finish();
  FUZZ_CHECK(e == Decoder::Event::kEnd || e == Decoder::Event::kError);
  if (e == Decoder::Event::kEnd) {
    FUZZ_CHECK(d.buffered_bytes() == 0 && d.buffer_capacity() == 0);
    events->push_back({3, 0, 0, 0, d.offset(), FrameError::kNone, false, {}});
  } else {
    FUZZ_CHECK(d.failed());
    events->push_back({2, 0, 0, 0, d.error().offset, d.error().code, true, {}});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t config = data[0];
  uint64_t seed = data[1] | (static_cast<uint64_t>(size) << 8);
  const uint8_t* stream = data + 2;
  const size_t n = size - 2;

  DecoderOptions opt;
  opt.role = (config & 1) ? Role::kClient : Role::kServer;
  opt.expect_hello = (config & 2) != 0;
  static constexpr uint32_t kMaxes[4] = {kFrameBytesMaxMin, kFrameBytesMaxMin * 2,
                                         kFrameBytesMaxDefault, kFrameBytesMaxMin + 1};
  opt.frame_bytes_max = kMaxes[(config >> 2) & 3];
  opt.version_min = 1;
  opt.version_max = static_cast<uint16_t>(1 + ((config >> 4) & 3));

  // One chunk.
  std::vector<Event> whole;
  {
    Decoder d(opt);
    uint64_t consumed = 0;
    std::vector<uint8_t> copy(stream, stream + n);
    if (FeedChunk(d, stream, copy.data(), copy.size(), &consumed, &whole)) Finish(d, &whole);
  }
  // Random chunks, each in its own exact-size allocation.
  std::vector<Event> chunked;
  {
    Decoder d(opt);
    uint64_t consumed = 0;
    size_t at = 0;
    bool healthy = true;
    while (healthy && at < n) {
      const uint64_t r = SplitMix(&seed);
      const size_t want = 1 + (r >> 8) % ((r & 1) ? 16 : 512);
      const size_t len = std::min(want, n - at);
      std::vector<uint8_t> chunk(stream + at, stream + at + len);
      healthy = FeedChunk(d, stream, chunk.data(), chunk.size(), &consumed, &chunked);
      at += len;
    }
    if (healthy) Finish(d, &chunked);
  }
  FUZZ_CHECK(whole == chunked);
  return 0;
}
