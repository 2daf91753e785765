// The unary calls of ringq.v1.Queue that the client speaks, listed once.
// Internal to client/cpp: client.cc expands the list into the public async
// and blocking methods, grpc_transport.cc into the stub calls and
// rqp_transport.cc into frame kinds, so adding a call is one line here plus
// its two declarations in client.h.
//
// X(Name, Request, Response, RqpKind): Request and Response are ringq.v1
// messages; RqpKind is the request's rqp::Kind (its answer is kind | 0x80).
#pragma once

#include <cstdint>

#define RINGQ_CLIENT_UNARY_METHODS(X)                               \
  X(Push, PushRequest, PushResponse, kPush)                         \
  X(PushBatch, PushBatchRequest, PushBatchResponse, kPushBatch)     \
  X(Fetch, FetchRequest, FetchResponse, kFetch)                     \
  X(Ack, AckRequest, AckResponse, kAck)                             \
  X(Fail, FailRequest, FailResponse, kFail)                         \
  X(Extend, ExtendRequest, ExtendResponse, kExtend)                 \
  X(Stats, StatsRequest, StatsResponse, kStats)                     \
  X(GetJob, GetJobRequest, Job, kGetJob)                            \
  X(Cancel, CancelRequest, CancelResponse, kCancel)                 \
  X(ListQueues, ListQueuesRequest, ListQueuesResponse, kListQueues) \
  X(Pause, QueueRequest, PauseResponse, kPause)                     \
  X(Resume, QueueRequest, ResumeResponse, kResume)                  \
  X(ListDead, ListDeadRequest, ListDeadResponse, kListDead)         \
  X(RetryDead, DeadSelector, RetryDeadResponse, kRetryDead)         \
  X(PurgeDead, DeadSelector, PurgeDeadResponse, kPurgeDead)

namespace ringq::client::internal {

enum class Rpc : uint8_t {
#define RINGQ_RPC_ENUM(Name, Req, Resp, Kind) k##Name,
  RINGQ_CLIENT_UNARY_METHODS(RINGQ_RPC_ENUM)
#undef RINGQ_RPC_ENUM
      kCount
};
inline constexpr size_t kRpcCount = static_cast<size_t>(Rpc::kCount);

// "Push", "GetJob", ...
const char* RpcName(Rpc rpc);

}  // namespace ringq::client::internal
