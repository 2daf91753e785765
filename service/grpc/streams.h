// Factories of the streaming calls (internal to service/grpc).
#pragma once

#include "ringq/v1/queue.grpc.pb.h"
#include "service/engine/engine.h"
#include "service/grpc/queue_service.h"

namespace ringq::grpcsvc {

grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* NewPushStream(
    engine::Engine& engine, const StreamLimits& limits);

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* NewSubscribe(
    engine::Engine& engine, const StreamLimits& limits);

}  // namespace ringq::grpcsvc
