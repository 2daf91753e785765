// Writes the seed corpus of rqp_frame_fuzz (uring/fuzz/rqp_frame_corpus/).
// Each seed is [u8 config][u8 chunk seed][stream]; see uring/rqp_frame_fuzz.cc.
//
//   g++ -std=c++20 -I. uring/rqp_frame.cc uring/fuzz/make_rqp_corpus.cc -o /tmp/mk
//   /tmp/mk uring/fuzz/rqp_frame_corpus
#include <cstdio>
#include <cstdlib>
#include <string>

#include "uring/rqp_frame.h"

using namespace ringq::uring::rqp;  // NOLINT: a small generator

namespace {

constexpr uint8_t kServer = 0x00, kClient = 0x01, kHello = 0x02;

std::string Enc(Kind kind, uint64_t id, const std::string& body, uint8_t flags = 0) {
  std::string out, why;
  if (AppendFrame({KindByte(kind), flags, id},
                  {reinterpret_cast<const uint8_t*>(body.data()), body.size()},
                  kFrameBytesMaxDefault, &out, &why) != FrameError::kNone) {
    std::fprintf(stderr, "bad seed frame: %s\n", why.c_str());
    std::exit(1);
  }
  return out;
}

std::string Raw(uint32_t length, uint8_t kind, uint8_t flags, uint16_t reserved, uint64_t id,
                const std::string& body) {
  uint8_t h[kHeaderBytes];
  WriteHeaderUnchecked(length, kind, flags, reserved, id, h);
  return std::string(reinterpret_cast<const char*>(h), sizeof h) + body;
}

std::string ClientHelloFrame(const std::string& token) {
  std::string b;
  AppendClientHelloBody({1, 1, token}, &b);
  return Enc(Kind::kHello, 0, b);
}

std::string ServerHelloFrame() {
  std::string b;
  AppendServerHelloBody({}, &b);
  return Enc(Kind::kServerHello, 0, b);
}

std::string Status(uint32_t code, const std::string& m) {
  std::string b;
  AppendStatusBody(code, m, &b);
  return b;
}

// A PushRequest{job{queue:"emails", payload:"hello"}} in protobuf encoding.
const std::string kPushBody = std::string(
    "\x0a\x0f\x0a\x06"
    "emails"
    "\x12\x05"
    "hello",
    17);

void Write(const std::string& dir, const char* name, uint8_t config, uint8_t seed,
           const std::string& stream) {
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::exit(1);
  }
  const uint8_t head[2] = {config, seed};
  std::fwrite(head, 1, 2, f);
  std::fwrite(stream.data(), 1, stream.size(), f);
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string hello = ClientHelloFrame("token");

  Write(dir, "client_hello", kServer | kHello, 0, hello);
  Write(dir, "hello_push", kServer | kHello, 1, hello + Enc(Kind::kPush, 1, kPushBody));
  // Split frames: many small frames and one body larger than most chunks.
  std::string pipelined = hello;
  for (uint64_t id = 1; id <= 8; ++id) pipelined += Enc(Kind::kPush, id, kPushBody);
  pipelined += Enc(Kind::kPushBatch, 9, std::string(900, 'b'));
  pipelined += Enc(Kind::kSubscribeOpen, 10, "\x0a\x03\x0a\x01q");
  pipelined += Enc(Kind::kSubscribeUpdate, 10, "\x10\x05");
  pipelined += Enc(Kind::kSubscribeClose, 10, "");
  pipelined += Enc(Kind::kPing, 0, "abc");
  Write(dir, "split_frames", kServer | kHello, 7, pipelined);
  Write(dir, "truncated", kServer | kHello, 3, pipelined.substr(0, pipelined.size() - 5));
  Write(dir, "unknown_kind", kServer, 4,
        Raw(12 + 20, 0x7E, 0, 0, 5, std::string(20, 'u')) + Enc(Kind::kAck, 6, "\x08\x01"));
  // Client side: handshake, responses, a subscription stream, shutdown.
  std::string server = ServerHelloFrame();
  server += Enc(Kind::kPushResponse, 1, "\x08\x2a");
  server += Enc(Kind::kSubscribeEvent, 10, "", kFlagStream);
  server += Enc(Kind::kSubscribeEvent, 10, std::string(40, 'd'), kFlagStream);
  server += Enc(Kind::kError, 11, Status(9, "lease token is stale"));
  server += Enc(Kind::kSubscribeEnd, 10, Status(0, ""));
  server += Enc(Kind::kPong, 0, "abc");
  server += Enc(Kind::kGoaway, 0, Status(14, "server is shutting down"));
  Write(dir, "client_stream", kClient | kHello, 2, server);
  Write(dir, "client_rejected", kClient | kHello, 5,
        Enc(Kind::kError, 0, Status(12, "client speaks RQP versions 2..3")));
  // Garbage.
  Write(dir, "garbage_http", kServer | kHello, 0, "GET / HTTP/1.1\r\nHost: ringq\r\n\r\n");
  Write(dir, "garbage_4gib", kServer, 0, Raw(0xFFFFFFFFu, 0x10, 0, 0, 1, "xyz"));
  Write(dir, "garbage_reserved", kServer, 9, hello + Raw(12, 0x10, 0x40, 7, 0, ""));
  Write(dir, "garbage_bytes", kClient, 11,
        std::string("\x13\x00\x00\x00\x90\x01\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\xc3\x28",
                    19));
  return 0;
}
