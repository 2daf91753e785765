// Conversions between the ringq.v1 protobuf messages and the engine's
// structs: the only place that knows both shapes. Shared by both transports
// (service/grpc, service/rqp); grpc::Status lives in service/grpc/convert.h.
#pragma once

#include "ringq/v1/queue.pb.h"
#include "service/engine/job.h"
#include "service/engine/scheduler.h"

namespace ringq::api {

void ToProto(const engine::Status& s, v1::Error* out);

// Copies a JobSpec from the wire and validates it (ValidateSpec). `field` is
// the prefix for error messages, e.g. "jobs[3]".
engine::Status FromProto(const v1::JobSpec& in, const engine::Limits& limits,
                         engine::JobSpec* out);

v1::JobState ToProto(engine::JobState s);
void ToProto(const engine::Job& job, v1::Job* out);
void ToProto(const engine::Delivery& d, v1::Delivery* out);
void ToProto(const engine::QueueCounts& c, v1::QueueStats* out);
// Adds b's counts into a (totals).
void Accumulate(const engine::QueueCounts& b, engine::QueueCounts* a);

}  // namespace ringq::api
