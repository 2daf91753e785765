// QueueService: the ringq.v1.Queue gRPC API over the engine.
//
// Holds no queue state. Unary calls are counted here and executed by
// api::Ops (validation, routing to the owning shard, fan-out, answering once
// the change is durable), shared with the RQP server; streaming calls are
// gRPC reactors over the transport-neutral cores.
//
// Threads: gRPC's callback threads call in; shard threads call Finish and
// stream writes. Streaming calls are objects whose lifetime is shared by gRPC
// and the shards (see the .cc).
#pragma once

#include <cstdint>
#include <memory>

#include "ringq/v1/queue.grpc.pb.h"
#include "service/api/ops.h"
#include "service/engine/engine.h"
#include "service/grpc/probe.h"

namespace ringq::api {
class StreamRegistry;
}  // namespace ringq::api

namespace ringq::grpcsvc {

// Bounds of the streaming calls (STYLE.md: a limit on everything).
struct StreamLimits {
  // PushStream: requests accepted and not yet answered, per stream. Past it
  // the server stops reading until answers drain (flow control, not an error).
  uint32_t push_stream_in_flight_max = 4096;
  // Subscribe: settle results waiting to be written, per stream; past it the
  // server stops reading the stream until the client reads.
  uint32_t settle_pending_max = 16'384;
};


class QueueService final : public v1::Queue::CallbackService {
 public:
  // `probe`: where calls are counted (nullptr: not counted); outlives this.
  QueueService(engine::Engine& engine, StreamLimits limits = {}, GrpcProbe* probe = nullptr);
  ~QueueService() override;

  // Graceful shutdown, step one: ends every Subscribe stream (UNAVAILABLE,
  // its un-acked jobs released) and answers every waiting Fetch (empty), so
  // that no long-lived call holds up the shutdown. New calls of these kinds
  // are refused from then on.
  void Drain();
  // Subscribe credits granted by workers and not used yet, over all streams.
  int64_t SubscribeCredits() const;

  using Ctx = grpc::CallbackServerContext;
  using Unary = grpc::ServerUnaryReactor;

  Unary* Push(Ctx* ctx, const v1::PushRequest* req, v1::PushResponse* resp) override;
  Unary* PushBatch(Ctx* ctx, const v1::PushBatchRequest* req,
                   v1::PushBatchResponse* resp) override;
  grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* PushStream(
      Ctx* ctx) override;
  Unary* Fetch(Ctx* ctx, const v1::FetchRequest* req, v1::FetchResponse* resp) override;
  grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* Subscribe(
      Ctx* ctx) override;
  Unary* Ack(Ctx* ctx, const v1::AckRequest* req, v1::AckResponse* resp) override;
  Unary* Fail(Ctx* ctx, const v1::FailRequest* req, v1::FailResponse* resp) override;
  Unary* Extend(Ctx* ctx, const v1::ExtendRequest* req, v1::ExtendResponse* resp) override;
  Unary* GetJob(Ctx* ctx, const v1::GetJobRequest* req, v1::Job* resp) override;
  Unary* Cancel(Ctx* ctx, const v1::CancelRequest* req, v1::CancelResponse* resp) override;
  Unary* Stats(Ctx* ctx, const v1::StatsRequest* req, v1::StatsResponse* resp) override;
  Unary* ListQueues(Ctx* ctx, const v1::ListQueuesRequest* req,
                    v1::ListQueuesResponse* resp) override;
  Unary* Pause(Ctx* ctx, const v1::QueueRequest* req, v1::PauseResponse* resp) override;
  Unary* Resume(Ctx* ctx, const v1::QueueRequest* req, v1::ResumeResponse* resp) override;
  Unary* ListDead(Ctx* ctx, const v1::ListDeadRequest* req, v1::ListDeadResponse* resp) override;
  Unary* RetryDead(Ctx* ctx, const v1::DeadSelector* req, v1::RetryDeadResponse* resp) override;
  Unary* PurgeDead(Ctx* ctx, const v1::DeadSelector* req, v1::PurgeDeadResponse* resp) override;

 private:
  // The reply of a unary call, counted: call started, request bytes.
  Reply Begin(Ctx* ctx, Rpc rpc, const google::protobuf::MessageLite& request,
              const google::protobuf::MessageLite* response);

  engine::Engine& engine_;
  const StreamLimits limits_;
  GrpcProbe* const probe_;
  api::Ops ops_;
  std::unique_ptr<api::StreamRegistry> streams_;
};

}  // namespace ringq::grpcsvc
