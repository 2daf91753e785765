// RqpServer: ringq's binary protocol (proto/PROTOCOL.md) served by each
// shard's own network loop (uring/net), on the shard's thread.
//
// Every shard listens on the RQP port (SO_REUSEPORT: the kernel spreads
// connections across shards) and owns the connections it accepted: their
// decoders, in-flight request ids and Subscribe streams live on that shard's
// thread and are touched by nothing else. A request is executed by api::Ops
// exactly as its gRPC twin: inline when the queue or job belongs to the
// connection's own shard, else through the owning shard's inbox; its answer
// comes back to the connection's shard (inline or through the inbox) and is
// appended to the connection's output, which the loop sends at the end of the
// shard's loop iteration (one submission for all replies of the iteration).
//
// The same object is the shard's ShardIo even when RQP is off: with io_uring
// the shard waits on its shared Ring (WAL and network in one io_uring_enter),
// with the epoll backend on the epoll loop, otherwise on poll(2).
//
// Bounds (flags): frame size, connections (all shards), requests in flight
// per connection (open streams count), output per connection (past it the
// connection is not read until it drains), hello timeout. Each has a clear
// ERROR frame (PROTOCOL.md section 7).
//
// Threads: construct, Start and Stop on the main thread (Start before the
// engine starts, Stop after it stopped); Drain from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "service/api/ops.h"
#include "service/api/streams.h"
#include "service/engine/engine.h"
#include "service/engine/status.h"
#include "service/metrics/registry.h"

namespace ringq::uring {
class Ring;
}

namespace ringq::rqp {

struct RqpOptions {
  bool enabled = true;  // false: no listener; the object only drives the shard waits
  std::string host = "127.0.0.1";
  uint16_t port = 7422;  // 0: the kernel picks (port() tells)
  uint32_t connections_max = 16'384;  // over all shards
  uint32_t inflight_max = 1024;       // per connection (PROTOCOL.md inflight_max)
  uint32_t frame_bytes_max = 4u << 20;
  uint64_t send_queue_bytes_max = 8u << 20;  // per connection
  uint32_t hello_timeout_ms = 10'000;
  uint32_t settle_pending_max = 16'384;  // per stream, as gRPC's Subscribe
  // Auth hook for the handshake: the token of the client's HELLO; a non-OK
  // status refuses the connection with it (the security issue plugs tokens
  // in here). Empty: every client is accepted.
  std::function<engine::Status(std::string_view token)> authenticate;
};

class ShardNet;

class RqpServer final : public metrics::Collector {
 public:
  // `rings`: the shared io_uring of each shard (io_uring backend), or empty
  // (epoll backend: the WAL has its own I/O thread).
  RqpServer(engine::Engine& engine, const RqpOptions& options, std::vector<uring::Ring*> rings);
  ~RqpServer() override;

  // Before engine.Start(): builds each shard's loop, listens, and installs
  // itself as every shard's ShardIo. False (and `why`) when it cannot listen.
  [[nodiscard]] bool Start(std::string* why);
  uint16_t port() const { return port_; }
  // "io_uring" or "epoll".
  const char* backend() const { return backend_; }

  // Graceful shutdown, step one (any thread): every connection gets GOAWAY
  // and is read no more; requests already read are answered; streams end
  // with UNAVAILABLE; waiting fetches are answered; connections close once
  // they have nothing in flight. The listeners stop accepting.
  void Drain();

  void Collect(metrics::TextWriter& out) override;
  // Subscribe credits granted on RQP streams and not used yet.
  int64_t SubscribeCredits() { return streams_.SumCredits(); }

  // Counters (all shards), for metrics and tests.
  struct Counters {
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> refused{0};  // over --rqp-connections-max
    std::atomic<uint64_t> closed{0};
    std::atomic<int64_t> open{0};
    std::atomic<uint64_t> frames_in{0};
    std::atomic<uint64_t> frames_out{0};
    std::atomic<uint64_t> bytes_in{0};
    std::atomic<uint64_t> bytes_out{0};
    std::atomic<uint64_t> protocol_errors{0};  // connection closed for bad framing
    std::atomic<uint64_t> request_errors{0};   // ERROR answers to single requests
    std::atomic<uint64_t> dropped_updates{0};  // SUBSCRIBE_UPDATE/CLOSE for no open stream
    std::atomic<uint64_t> hello_timeouts{0};
    std::atomic<uint64_t> truncated{0};        // EOF inside a frame
  };
  Counters& counters() { return counters_; }

 private:
  friend class ShardNet;

  engine::Engine& engine_;
  const RqpOptions options_;
  std::vector<uring::Ring*> rings_;
  api::Ops ops_;
  api::StreamRegistry streams_;
  std::vector<std::unique_ptr<ShardNet>> shards_;
  uint16_t port_ = 0;
  const char* backend_ = "epoll";
  Counters counters_;
};

}  // namespace ringq::rqp
