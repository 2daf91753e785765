// Options of a ringq client, and the server URL form the CLI and tools use.
//
// Every limit the client applies is here, named with its unit; none is left
// to a library default (STYLE.md, Bounds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "client/cpp/status.h"

namespace ringq::client {

enum class Protocol : uint8_t {
  kGrpc,  // service ringq.v1.Queue over HTTP/2 (ringqd --grpc-port, default 7420)
  kRqp,   // RQP frames over TCP (proto/PROTOCOL.md; ringqd --rqp-port, default 7422)
};

inline constexpr uint16_t kGrpcPortDefault = 7420;
inline constexpr uint16_t kRqpPortDefault = 7422;

struct Options {
  // host:port of the server ("[::1]:7420" for IPv6 literals).
  std::string address = "127.0.0.1:7420";
  Protocol protocol = Protocol::kGrpc;
  // Opaque auth token: gRPC metadata "authorization: Bearer <token>", RQP
  // ClientHello token (at most 4096 bytes). Empty: none sent.
  std::string token;
  // Client::Connect waits at most this long for the connection, and over RQP
  // as long again for the server's HELLO. RQP reconnects (the next call after
  // a loss or a GOAWAY) use the same bounds.
  uint32_t connect_timeout_ms = 5'000;
  // Deadline of each unary call, counted from its start; a Fetch gets its
  // wait_ms on top. 0: no deadline. A call past it completes with
  // DEADLINE_EXCEEDED (over RQP it may still run on the server).
  uint32_t call_timeout_ms = 30'000;
  // Unary calls and open subscriptions in flight per client (RQP: per
  // connection, and at most the server's inflight_max). A call past it
  // blocks its caller until one completes, or is queued when issued from a
  // completion callback (those never block).
  uint32_t inflight_max = 1024;
  // gRPC: largest message sent or received (the server's default limit is 64 MiB).
  uint32_t grpc_message_bytes_max = 64u << 20;
  // Subscribe: settles and credits coalesce into one stream message of at
  // most this many items and about this many bytes (the server's --batch-max
  // bounds items per Subscribe message; default 10,000).
  uint32_t settle_batch_items_max = 1000;
  uint32_t settle_batch_bytes_max = 1u << 20;
  // RQP: encoded frames waiting to be sent. Past it a caller blocks until the
  // writer drained (completion callbacks never block).
  size_t rqp_send_buffer_bytes_max = 16u << 20;
};

// Parses "grpc://host:port", "rqp://host:port", "host:port" (gRPC) or
// "grpc://host" / "rqp://host" (default ports 7420 / 7422) into
// options->address and options->protocol. INVALID_ARGUMENT naming what is
// wrong otherwise; *options is unchanged then.
Status ParseServerUrl(std::string_view url, Options* options);

// The URL form of options: "grpc://127.0.0.1:7420".
std::string ServerUrl(const Options& options);

}  // namespace ringq::client
