// GrpcProbe: the API layer's metrics (STYLE.md: one probe per component):
// ringq.v1.Queue calls started and finished by method and status code, and
// message bytes received and sent (serialized protobuf size; HTTP/2 framing
// and headers not included). At scrape time it adds the live gRPC
// connections (from channelz) and the Subscribe credits workers granted and
// the server has not used yet.
//
// Fed by the handlers through Reply (unary calls) and by the stream
// reactors, not by a gRPC server interceptor: measured with
// tests/observability/metrics_bench, gRPC 1.51's interceptor machinery costs
// 7-9% more server CPU per unary push even with an interceptor that does
// nothing; this costs a few striped atomic adds. The health and reflection
// services are not counted.
//
// Thread: counted from gRPC threads and shard threads (a reply is finished
// where it is committed); cells are SharedCounters (a stripe per thread).
// Collect() on the scrape thread. Lifecycle: outlives the gRPC server.
#pragma once

#include <google/protobuf/message_lite.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "service/engine/clock.h"
#include "service/metrics/registry.h"

namespace ringq::grpcsvc {

using engine::MonotonicNs;

// The methods of ringq.v1.Queue. GrpcProbe's constructor checks this list
// against the service descriptor: an RPC added to the proto and not here
// stops the server at start-up with a message.
enum class Rpc : uint8_t {
  kPush,
  kPushBatch,
  kPushStream,
  kFetch,
  kSubscribe,
  kAck,
  kFail,
  kExtend,
  kGetJob,
  kCancel,
  kStats,
  kListQueues,
  kPause,
  kResume,
  kListDead,
  kRetryDead,
  kPurgeDead,
  kCount,
};

class GrpcProbe final : public metrics::Collector {
 public:
  static constexpr size_t kRpcs = static_cast<size_t>(Rpc::kCount);
  static constexpr size_t kCodes = 17;  // grpc::StatusCode 0..16

  GrpcProbe();

  // Live Subscribe credits (granted, not used), asked at scrape time.
  void SetCreditsSource(std::function<int64_t()> source) { credits_source_ = std::move(source); }

  // The other protocol's figures (RQP), written into the same families
  // (ringq_bytes_*_total, ringq_connections with protocol="rqp"; credits
  // added to ringq_subscribe_credits). Asked at scrape time.
  struct ProtocolFigures {
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    int64_t connections = 0;
    int64_t credits = 0;
  };
  void SetRqpSource(std::function<ProtocolFigures()> source) { rqp_source_ = std::move(source); }

  void Collect(metrics::TextWriter& out) override;

  // ---- hot path, any thread ----
  void Started(Rpc rpc) { cells_.Add(kStartedBase + Index(rpc)); }
  void Finished(Rpc rpc, grpc::StatusCode code) {
    const int c = static_cast<int>(code);
    cells_.Add(Index(rpc) * kCodes + static_cast<size_t>(c < 0 || c >= 17 ? 2 : c));
  }
  void Received(uint64_t bytes) { cells_.Add(kBytesIn, bytes); }
  void Sent(uint64_t bytes) { cells_.Add(kBytesOut, bytes); }

 private:
  static size_t Index(Rpc rpc) { return static_cast<size_t>(rpc); }
  static constexpr size_t kStartedBase = kRpcs * kCodes;
  static constexpr size_t kBytesIn = kStartedBase + kRpcs;
  static constexpr size_t kBytesOut = kBytesIn + 1;

  metrics::SharedCounters<kBytesOut + 1> cells_;
  std::function<int64_t()> credits_source_;
  std::function<ProtocolFigures()> rqp_source_;
};

// The answer side of a unary call: finishes its reactor and counts the call
// (method, status code, response bytes) in the probe (none: not counted). A
// small value, copied into the tasks that answer from shard threads;
// `r->Finish(status)` and `return r;` read as with a bare reactor.
// Contract: Finish once per call, on any thread, while `response` lives
// (gRPC keeps it until the call is done).
class Reply {
 public:
  Reply(grpc::ServerUnaryReactor* reactor, GrpcProbe* probe, Rpc rpc,
        const google::protobuf::MessageLite* response)
      : reactor_(reactor), probe_(probe), response_(response), rpc_(rpc) {}

  void Finish(grpc::Status status) const {
    if (probe_ != nullptr) {
      probe_->Finished(rpc_, status.error_code());
      // Only a successful call sends its response message.
      if (status.ok() && response_ != nullptr) probe_->Sent(response_->ByteSizeLong());
    }
    reactor_->Finish(std::move(status));
  }
  const Reply* operator->() const { return this; }
  // For `return r;` from a handler. Finishing through the bare reactor would
  // skip the count: pass Reply, not the reactor, to helpers.
  operator grpc::ServerUnaryReactor*() const { return reactor_; }  // NOLINT(runtime/explicit)

 private:
  grpc::ServerUnaryReactor* reactor_;
  GrpcProbe* probe_;
  const google::protobuf::MessageLite* response_;
  Rpc rpc_;
};

}  // namespace ringq::grpcsvc
