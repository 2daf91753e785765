#include "service/grpc/queue_service.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "service/grpc/convert.h"
#include "service/grpc/probe.h"
#include "service/grpc/streams.h"

namespace ringq::grpcsvc {

using engine::Shard;

namespace {

// The completion of an api::Ops call finishes the gRPC call.
api::Done FinishWith(const Reply& r) {
  return [r](const engine::Status& s) { r->Finish(ToGrpc(s)); };
}

}  // namespace

QueueService::QueueService(engine::Engine& engine, StreamLimits limits, GrpcProbe* probe)
    : engine_(engine),
      limits_(limits),
      probe_(probe),
      ops_(engine),
      streams_(std::make_unique<StreamRegistry>()) {}

QueueService::~QueueService() = default;

void QueueService::Drain() {
  streams_->DrainAll();
  ops_.DrainWaiters();
}

int64_t QueueService::SubscribeCredits() const { return streams_->SumCredits(); }

Reply QueueService::Begin(Ctx* ctx, Rpc rpc, const google::protobuf::MessageLite& request,
                          const google::protobuf::MessageLite* response) {
  if (probe_ != nullptr) {
    probe_->Started(rpc);
    probe_->Received(request.ByteSizeLong());
  }
  return Reply(ctx->DefaultReactor(), probe_, rpc, response);
}

// Every unary call: count it, hand it to api::Ops, finish it from the completion.
#define RINGQ_UNARY(Method, Req, Resp, RpcKind, ...)                                  \
  QueueService::Unary* QueueService::Method(Ctx* ctx, const Req* req, Resp* resp) {     \
    [[maybe_unused]] const uint64_t received_ns = MonotonicNs();                        \
    Reply r = Begin(ctx, Rpc::RpcKind, *req, resp);                                     \
    ops_.Method(*req, resp, FinishWith(r) __VA_OPT__(, ) __VA_ARGS__);                  \
    return r;                                                                           \
  }

RINGQ_UNARY(Push, v1::PushRequest, v1::PushResponse, kPush, received_ns)
RINGQ_UNARY(PushBatch, v1::PushBatchRequest, v1::PushBatchResponse, kPushBatch, received_ns)
RINGQ_UNARY(Fetch, v1::FetchRequest, v1::FetchResponse, kFetch)
RINGQ_UNARY(Ack, v1::AckRequest, v1::AckResponse, kAck)
RINGQ_UNARY(Fail, v1::FailRequest, v1::FailResponse, kFail)
RINGQ_UNARY(Extend, v1::ExtendRequest, v1::ExtendResponse, kExtend)
RINGQ_UNARY(GetJob, v1::GetJobRequest, v1::Job, kGetJob)
RINGQ_UNARY(Cancel, v1::CancelRequest, v1::CancelResponse, kCancel)
RINGQ_UNARY(Stats, v1::StatsRequest, v1::StatsResponse, kStats)
RINGQ_UNARY(ListQueues, v1::ListQueuesRequest, v1::ListQueuesResponse, kListQueues)
RINGQ_UNARY(Pause, v1::QueueRequest, v1::PauseResponse, kPause)
RINGQ_UNARY(Resume, v1::QueueRequest, v1::ResumeResponse, kResume)
RINGQ_UNARY(ListDead, v1::ListDeadRequest, v1::ListDeadResponse, kListDead)
RINGQ_UNARY(RetryDead, v1::DeadSelector, v1::RetryDeadResponse, kRetryDead)
RINGQ_UNARY(PurgeDead, v1::DeadSelector, v1::PurgeDeadResponse, kPurgeDead)

#undef RINGQ_UNARY

grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* QueueService::PushStream(
    Ctx* ctx) {
  return NewPushStream(engine_, limits_, probe_);
}

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* QueueService::Subscribe(
    Ctx* ctx) {
  return NewSubscribe(engine_, limits_, *streams_, probe_);
}

}  // namespace ringq::grpcsvc
