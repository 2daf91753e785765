#include "service/grpc/probe.h"

#include <google/protobuf/descriptor.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "ringq/v1/queue.grpc.pb.h"

namespace ringq::grpcsvc {

namespace {

constexpr const char* kCodeNames[GrpcProbe::kCodes] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// In the order of enum Rpc.
constexpr const char* kRpcNames[GrpcProbe::kRpcs] = {
    "Push",  "PushBatch", "PushStream", "Fetch",     "Subscribe", "Ack",
    "Fail",  "Extend",    "GetJob",     "Cancel",    "Stats",     "ListQueues",
    "Pause", "Resume",    "ListDead",   "RetryDead", "PurgeDead"};

// Live gRPC connections of every server in the process, from channelz
// (bounded: at most kPagesMax pages of 100 sockets per server).
int64_t CountGrpcConnections() {
  constexpr int kPagesMax = 100;
  auto ids_after = [](const char* json, const char* key) {
    std::vector<intptr_t> ids;
    const std::string k = std::string("\"") + key + "\":\"";
    for (const char* p = json; (p = std::strstr(p, k.c_str())) != nullptr;) {
      p += k.size();
      ids.push_back(static_cast<intptr_t>(std::strtoll(p, nullptr, 10)));
    }
    return ids;
  };
  int64_t sockets = 0;
  char* servers = grpc_channelz_get_servers(0);
  if (servers == nullptr) return -1;
  const std::vector<intptr_t> server_ids = ids_after(servers, "serverId");
  gpr_free(servers);
  for (intptr_t id : server_ids) {
    intptr_t start = 0;
    for (int page = 0; page < kPagesMax; ++page) {
      char* json = grpc_channelz_get_server_sockets(id, start, 100);
      if (json == nullptr) break;
      const std::vector<intptr_t> socket_ids = ids_after(json, "socketId");
      const bool end = std::strstr(json, "\"end\":true") != nullptr;
      gpr_free(json);
      sockets += static_cast<int64_t>(socket_ids.size());
      if (end || socket_ids.empty()) break;
      start = socket_ids.back() + 1;
    }
  }
  return sockets;
}

}  // namespace

GrpcProbe::GrpcProbe() {
  // Rpc must name every method of the service, and only those.
  const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::Queue::service_full_name());
  std::set<std::string> in_proto;
  const std::set<std::string> in_enum(std::begin(kRpcNames), std::end(kRpcNames));
  for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
    in_proto.insert(service->method(i)->name());
  }
  if (in_proto != in_enum) {
    std::fprintf(stderr,
                 "ringq: GrpcProbe: enum Rpc (service/grpc/probe.h) does not list the methods of "
                 "%s; update it\n",
                 v1::Queue::service_full_name());
    std::abort();
  }
}

void GrpcProbe::Collect(metrics::TextWriter& out) {
  using metrics::Type;
  const std::string service = v1::Queue::service_full_name();
  out.Family("ringq_grpc_server_started_total", Type::kCounter,
             "ringq.v1.Queue calls started, by method (a stream counts once).");
  for (size_t m = 0; m < kRpcs; ++m) {
    out.Sample({{"service", service}, {"method", kRpcNames[m]}}, cells_.Get(kStartedBase + m));
  }
  out.Family("ringq_grpc_server_handled_total", Type::kCounter,
             "ringq.v1.Queue calls finished, by method and status code. code=\"OK\" is always "
             "present; other codes appear once they occur.");
  for (size_t m = 0; m < kRpcs; ++m) {
    for (size_t c = 0; c < kCodes; ++c) {
      const uint64_t n = cells_.Get(m * kCodes + c);
      if (n == 0 && c != 0) continue;
      out.Sample({{"service", service}, {"method", kRpcNames[m]}, {"code", kCodeNames[c]}}, n);
    }
  }
  const ProtocolFigures rqp = rqp_source_ ? rqp_source_() : ProtocolFigures{};
  out.Family("ringq_bytes_received_total", Type::kCounter,
             "Message bytes received, by protocol (gRPC: serialized protobuf, without HTTP/2 "
             "framing; RQP: whole frames).");
  out.Sample({{"protocol", "grpc"}}, cells_.Get(kBytesIn));
  if (rqp_source_) out.Sample({{"protocol", "rqp"}}, rqp.bytes_in);
  out.Family("ringq_bytes_sent_total", Type::kCounter,
             "Message bytes sent, by protocol (gRPC: serialized protobuf, without HTTP/2 "
             "framing; RQP: whole frames).");
  out.Sample({{"protocol", "grpc"}}, cells_.Get(kBytesOut));
  if (rqp_source_) out.Sample({{"protocol", "rqp"}}, rqp.bytes_out);
  const int64_t connections = CountGrpcConnections();
  if (connections >= 0 || rqp_source_) {
    out.Family("ringq_connections", Type::kGauge, "Open client connections, by protocol.");
    if (connections >= 0) out.Sample({{"protocol", "grpc"}}, static_cast<uint64_t>(connections));
    if (rqp_source_) {
      out.Sample({{"protocol", "rqp"}}, static_cast<uint64_t>(std::max<int64_t>(0, rqp.connections)));
    }
  }
  if (credits_source_ || rqp_source_) {
    const int64_t credits = (credits_source_ ? credits_source_() : 0) + rqp.credits;
    out.Family("ringq_subscribe_credits", Type::kGauge,
               "Credits workers granted on Subscribe streams (gRPC and RQP) that the server has "
               "not used yet (how many more jobs it may push to them now).");
    out.Sample(metrics::Labels{}, static_cast<uint64_t>(std::max<int64_t>(0, credits)));
  }
}

}  // namespace ringq::grpcsvc
