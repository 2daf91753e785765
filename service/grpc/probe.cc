#include "service/grpc/probe.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message_lite.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/interceptor.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ringq/v1/queue.grpc.pb.h"

namespace ringq::grpcsvc {

namespace {

using grpc::experimental::InterceptionHookPoints;

constexpr const char* kCodeNames[GrpcProbe::kCodes] = {
    "OK",          "CANCELLED",      "UNKNOWN",          "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",     "UNAVAILABLE",      "DATA_LOSS",
    "UNAUTHENTICATED"};

// The other services the server registers (server.cc): health and reflection.
constexpr const char* kOtherServiceMethods[][2] = {
    {"grpc.health.v1.Health", "Check"},
    {"grpc.health.v1.Health", "Watch"},
    {"grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"},
};

class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(GrpcProbe& probe, size_t method) : probe_(probe), method_(method) {
    probe_.Started(method_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        probe_.IsProtobuf(method_)) {
      // Every method in the table is a protobuf method: the message is a MessageLite.
      if (const void* msg = m->GetRecvMessage()) {
        probe_.Received(static_cast<const google::protobuf::MessageLite*>(msg)->ByteSizeLong());
      }
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      // Serializes now what gRPC serializes anyway before sending.
      if (grpc::ByteBuffer* buf = m->GetSerializedSendMessage()) probe_.Sent(buf->Length());
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      probe_.Handled(method_, static_cast<int>(m->GetSendStatus().error_code()));
    }
    m->Proceed();
  }

 private:
  GrpcProbe& probe_;
  const size_t method_;
};

class RpcInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(GrpcProbe& probe) : probe_(probe) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(probe_, probe_.MethodIndex(info->method()));
  }

 private:
  GrpcProbe& probe_;
};

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
  methods_.push_back(Method{"other", "other"});
  const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::Queue::service_full_name());
  if (service == nullptr) std::abort();  // linked with the generated code: a bug
  for (int i = 0; i < service->method_count(); ++i) {
    methods_.push_back(Method{service->full_name(), service->method(i)->name()});
  }
  queue_methods_ = static_cast<size_t>(service->method_count());
  for (const auto& [svc, name] : kOtherServiceMethods) methods_.push_back(Method{svc, name});
  if (methods_.size() > kMethodsMax) {
    std::fprintf(stderr, "ringq: GrpcProbe: %zu methods; raise kMethodsMax\n", methods_.size());
    std::abort();
  }
  paths_.reserve(methods_.size());  // no reallocation: the map's keys view into it
  for (size_t i = 0; i < methods_.size(); ++i) {
    paths_.push_back("/" + methods_[i].service + "/" + methods_[i].name);
    if (i != 0) index_by_path_.emplace(paths_.back(), i);
  }
}

size_t GrpcProbe::MethodIndex(std::string_view full_method) const {
  auto it = index_by_path_.find(full_method);
  return it == index_by_path_.end() ? 0 : it->second;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcProbe::NewInterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(*this);
}

void GrpcProbe::Collect(metrics::TextWriter& out) {
  using metrics::Type;
  out.Family("ringq_grpc_server_started_total", Type::kCounter,
             "gRPC calls started, by service and method (streams count once).");
  for (size_t m = 0; m < methods_.size(); ++m) {
    out.Sample({{"service", methods_[m].service}, {"method", methods_[m].name}},
               cells_.Get(kStartedBase + m));
  }
  out.Family("ringq_grpc_server_handled_total", Type::kCounter,
             "gRPC calls finished, by service, method and status code. code=\"OK\" is always "
             "present; other codes appear once they occur.");
  for (size_t m = 0; m < methods_.size(); ++m) {
    for (size_t c = 0; c < kCodes; ++c) {
      const uint64_t n = cells_.Get(m * kCodes + c);
      if (n == 0 && c != 0) continue;
      out.Sample({{"service", methods_[m].service},
                  {"method", methods_[m].name},
                  {"code", kCodeNames[c]}},
                 n);
    }
  }
  out.Family("ringq_bytes_received_total", Type::kCounter,
             "Message bytes received, by protocol (gRPC: serialized protobuf, without HTTP/2 "
             "framing).");
  out.Sample({{"protocol", "grpc"}}, cells_.Get(kBytesIn));
  out.Family("ringq_bytes_sent_total", Type::kCounter,
             "Message bytes sent, by protocol (gRPC: serialized protobuf, without HTTP/2 "
             "framing).");
  out.Sample({{"protocol", "grpc"}}, cells_.Get(kBytesOut));
  const int64_t connections = CountGrpcConnections();
  if (connections >= 0) {
    out.Family("ringq_connections", Type::kGauge, "Open client connections, by protocol.");
    out.Sample({{"protocol", "grpc"}}, static_cast<uint64_t>(connections));
  }
  if (credits_source_) {
    out.Family("ringq_subscribe_credits", Type::kGauge,
               "Credits workers granted on Subscribe streams that the server has not used yet "
               "(how many more jobs it may push to them now).");
    out.Sample(metrics::Labels{}, static_cast<uint64_t>(std::max<int64_t>(0, credits_source_())));
  }
}

}  // namespace ringq::grpcsvc
