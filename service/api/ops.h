// Ops: the unary calls of the ringq.v1 API over the engine, independent of
// the transport. The gRPC service (service/grpc) and the RQP server
// (service/rqp) both turn a request message into one of these calls and the
// completion into their own reply, so validation, routing, fan-out and the
// durability rule exist once.
//
// Each call validates (bad input never reaches a shard), runs on the shard
// that owns the queue or job (inline when the caller is that shard's own
// thread: Engine::Run), and calls `done` exactly once: with an error status
// (the response untouched or partial, to be ignored), or OK once every record
// the call wrote is durable (Shard::AfterCommit), the response filled.
//
// Threads: any caller thread; `done` runs on a shard thread, or on the
// caller's thread for validation errors. `resp` must stay valid until `done`.
#pragma once

#include <cstdint>
#include <functional>

#include "ringq/v1/queue.pb.h"
#include "service/engine/engine.h"

namespace ringq::api {

using Done = std::function<void(const engine::Status&)>;

using engine::MonotonicNs;

class Ops {
 public:
  explicit Ops(engine::Engine& engine) : engine_(engine) {}

  // received_ns: when the request arrived (push latency is measured from it).
  void Push(const v1::PushRequest& req, v1::PushResponse* resp, Done done,
            uint64_t received_ns);
  void PushBatch(const v1::PushBatchRequest& req, v1::PushBatchResponse* resp, Done done,
                 uint64_t received_ns);
  void Fetch(const v1::FetchRequest& req, v1::FetchResponse* resp, Done done);
  void Ack(const v1::AckRequest& req, v1::AckResponse* resp, Done done);
  void Fail(const v1::FailRequest& req, v1::FailResponse* resp, Done done);
  void Extend(const v1::ExtendRequest& req, v1::ExtendResponse* resp, Done done);
  void GetJob(const v1::GetJobRequest& req, v1::Job* resp, Done done);
  void Cancel(const v1::CancelRequest& req, v1::CancelResponse* resp, Done done);
  void Stats(const v1::StatsRequest& req, v1::StatsResponse* resp, Done done);
  void ListQueues(const v1::ListQueuesRequest& req, v1::ListQueuesResponse* resp, Done done);
  void Pause(const v1::QueueRequest& req, v1::PauseResponse* resp, Done done);
  void Resume(const v1::QueueRequest& req, v1::ResumeResponse* resp, Done done);
  void ListDead(const v1::ListDeadRequest& req, v1::ListDeadResponse* resp, Done done);
  void RetryDead(const v1::DeadSelector& req, v1::RetryDeadResponse* resp, Done done);
  void PurgeDead(const v1::DeadSelector& req, v1::PurgeDeadResponse* resp, Done done);

  // Ends every waiting Fetch (answered empty): graceful shutdown.
  void DrainWaiters();

  engine::Engine& engine() { return engine_; }

 private:
  // Runs `task` on `shard` (Engine::Run); when its inbox is full, done(RESOURCE_EXHAUSTED).
  void RunOr(uint32_t shard, const Done& done, engine::Shard::Task task);
  // The shard of a job id, or false (NOT_FOUND) for an id no shard made.
  bool JobShard(uint64_t id, uint32_t* shard) const;

  engine::Engine& engine_;
};

}  // namespace ringq::api
