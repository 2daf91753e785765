// The gRPC edge of the conversions: engine Status to grpc::Status, plus the
// transport-neutral proto conversions of service/api/convert.h.
#pragma once

#include <grpcpp/support/status.h>

#include "service/api/convert.h"

namespace ringq::grpcsvc {

using api::Accumulate;
using api::FromProto;
using api::ToProto;

inline grpc::Status ToGrpc(const engine::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

}  // namespace ringq::grpcsvc
