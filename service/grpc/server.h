// GrpcServer: builds and runs the gRPC server for the Queue service, the
// standard health service and server reflection, with every channel option
// set explicitly (STYLE.md: never rely on a library default you have not read).
//
// Health: NOT_SERVING until SetServing(true) (after recovery, once the WAL
// lands), NOT_SERVING again when shutdown starts.
#pragma once

#include <grpcpp/server.h>

#include <cstdint>
#include <memory>
#include <string>

#include "service/engine/engine.h"
#include "service/grpc/probe.h"
#include "service/grpc/queue_service.h"

namespace ringq::grpcsvc {

struct GrpcOptions {
  std::string host = "0.0.0.0";
  uint32_t port = 7420;  // 0: any free port
  uint32_t message_bytes_max = 64u << 20;
  uint32_t streams_max = 1'000;
  StreamLimits stream_limits;
  // Metrics: when set, every ringq.v1.Queue call is counted in it (outlives the server).
  GrpcProbe* probe = nullptr;
};

class GrpcServer {
 public:
  GrpcServer(engine::Engine& engine, const GrpcOptions& options);
  ~GrpcServer();

  // False with a message on stderr when the port cannot be bound.
  [[nodiscard]] bool Start();
  uint32_t port() const { return bound_port_; }
  void SetServing(bool serving);
  // Stops accepting calls; calls in flight get `grace_ms` to finish, then are cancelled.
  void Shutdown(uint32_t grace_ms);

 private:
  engine::Engine& engine_;
  const GrpcOptions options_;
  QueueService service_;
  std::unique_ptr<grpc::Server> server_;
  int bound_port_ = 0;
};

}  // namespace ringq::grpcsvc
