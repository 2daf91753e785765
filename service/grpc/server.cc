#include "service/grpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include <chrono>

namespace ringq::grpcsvc {

GrpcServer::GrpcServer(engine::Engine& engine, const GrpcOptions& options)
    : engine_(engine),
      options_(options),
      service_(engine, options.stream_limits, options.probe) {}

GrpcServer::~GrpcServer() { Shutdown(0); }

bool GrpcServer::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder b;
  const std::string addr = options_.host + ":" + std::to_string(options_.port);
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &bound_port_);
  b.RegisterService(&service_);
  // Oversized messages are refused by gRPC with RESOURCE_EXHAUSTED.
  b.SetMaxReceiveMessageSize(static_cast<int>(options_.message_bytes_max));
  b.SetMaxSendMessageSize(static_cast<int>(options_.message_bytes_max));
  b.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(options_.streams_max));
  // Keepalive: ping idle connections every 30 s, drop them after 10 s without answer;
  // accept client pings no more often than every 10 s.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Channelz: the connection count of the metrics comes from it.
  b.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 1);
  if (options_.probe != nullptr) {
    options_.probe->SetCreditsSource([this] { return service_.SubscribeCredits(); });
  }
  server_ = b.BuildAndStart();
  if (!server_ || bound_port_ == 0) {
    std::fprintf(stderr, "ringqd: cannot listen for gRPC on %s\n", addr.c_str());
    server_.reset();
    return false;
  }
  SetServing(false);
  return true;
}

void GrpcServer::SetServing(bool serving) {
  if (!server_) return;
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus("ringq.v1.Queue", serving);
}

void GrpcServer::Shutdown(uint32_t grace_ms) {
  if (!server_) return;
  SetServing(false);
  service_.Drain();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  server_->Wait();
  server_.reset();
}

}  // namespace ringq::grpcsvc
