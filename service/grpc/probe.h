// GrpcProbe: the API layer's metrics (STYLE.md: one probe per component).
//
// A gRPC server interceptor feeds it for every call of every service, so no
// handler counts anything itself: calls started and handled by method and
// status code, and message bytes received and sent (serialized protobuf
// size; HTTP/2 framing and headers not included). At scrape time it adds the
// live gRPC connections (from channelz) and the Subscribe credits workers
// granted and the server has not used yet.
//
// Thread: the interceptor runs on gRPC threads and on shard threads (a
// reply is finished where it is committed); cells are SharedCounters (a
// stripe per thread). Collect() on the scrape thread.
// Lifecycle: outlives the gRPC server it is installed in.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "service/metrics/registry.h"

namespace ringq::grpcsvc {

// The clock of latency metrics (push latency): monotonic nanoseconds.
inline uint64_t MonotonicNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

class GrpcProbe final : public metrics::Collector {
 public:
  static constexpr size_t kMethodsMax = 32;  // index 0: any method not in the table
  static constexpr size_t kCodes = 17;       // grpc::StatusCode 0..16

  GrpcProbe();

  // For ServerBuilder::experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();
  // Live Subscribe credits (granted, not used), asked at scrape time.
  void SetCreditsSource(std::function<int64_t()> source) { credits_source_ = std::move(source); }

  void Collect(metrics::TextWriter& out) override;

  // ---- hot path, any thread ----
  size_t MethodIndex(std::string_view full_method) const;  // "/pkg.Service/Method"
  // Only ringq.v1.Queue's messages are known to be protobuf here: the health
  // service's are ByteBuffers.
  bool IsProtobuf(size_t method) const { return method != 0 && method <= queue_methods_; }
  void Started(size_t method) { cells_.Add(kStartedBase + method); }
  void Handled(size_t method, int code) {
    cells_.Add(method * kCodes + static_cast<size_t>(code < 0 || code >= 17 ? 2 : code));
  }
  void Received(uint64_t bytes) { cells_.Add(kBytesIn, bytes); }
  void Sent(uint64_t bytes) { cells_.Add(kBytesOut, bytes); }

 private:
  static constexpr size_t kStartedBase = kMethodsMax * kCodes;
  static constexpr size_t kBytesIn = kStartedBase + kMethodsMax;
  static constexpr size_t kBytesOut = kBytesIn + 1;

  size_t queue_methods_ = 0;  // methods_[1..queue_methods_] are ringq.v1.Queue's
  struct Method {
    std::string service;  // "ringq.v1.Queue"
    std::string name;     // "Push"
  };
  std::vector<Method> methods_;  // [0] = other
  std::vector<std::string> paths_;  // "/ringq.v1.Queue/Push" per method; index_by_path_'s keys
  // Read-only after construction; looked up on every call without allocating.
  std::unordered_map<std::string_view, size_t> index_by_path_;
  metrics::SharedCounters<kBytesOut + 1> cells_;
  std::function<int64_t()> credits_source_;
};

}  // namespace ringq::grpcsvc
