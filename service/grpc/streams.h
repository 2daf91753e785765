// Factories of the streaming calls (internal to service/grpc).
#pragma once

#include "ringq/v1/queue.grpc.pb.h"
#include "service/engine/engine.h"
#include "service/api/streams.h"
#include "service/grpc/queue_service.h"

#include <memory>
#include <mutex>
#include <unordered_map>

namespace ringq::grpcsvc {

using api::Drainable;
using api::StreamRegistry;

// `probe` (nullptr: not counted): the call, its messages and its status.
grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* NewPushStream(
    engine::Engine& engine, const StreamLimits& limits, GrpcProbe* probe);

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* NewSubscribe(
    engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry, GrpcProbe* probe);

}  // namespace ringq::grpcsvc
