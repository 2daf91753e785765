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

grpc::Status Exhausted(uint32_t shard, uint32_t inbox_max) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "shard " + std::to_string(shard) + " inbox is full (" +
                          std::to_string(inbox_max) + " tasks, --inbox-max); retry later");
}

grpc::Status NoJob(uint64_t id) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "job " + std::to_string(id) + " not found");
}

grpc::Status Invalid(std::string msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
}

}  // namespace

QueueService::QueueService(engine::Engine& engine, StreamLimits limits, GrpcProbe* probe)
    : engine_(engine),
      limits_(limits),
      probe_(probe),
      streams_(std::make_unique<StreamRegistry>()) {}

QueueService::~QueueService() = default;

void QueueService::Drain() {
  streams_->DrainAll();
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) {
    // A full inbox here leaves the waiters to their (bounded) wait.
    (void)engine_.Post(i, [](Shard& sh) { sh.scheduler().DrainWaiters(); });
  }
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

void QueueService::PostOr(const Reply& r, uint32_t shard, Shard::Task task) {
  if (!engine_.Post(shard, std::move(task))) {
    r->Finish(Exhausted(shard, engine_.options().inbox_max));
  }
}

bool QueueService::JobShard(uint64_t id, uint32_t* shard) const {
  *shard = engine::ShardOfJob(id);
  return id != 0 && *shard < engine_.shard_count();
}

// ------------------------------------------------------------------ push

QueueService::Unary* QueueService::Push(Ctx* ctx, const v1::PushRequest* req,
                                        v1::PushResponse* resp) {
  const uint64_t received_ns = MonotonicNs();
  Reply r = Begin(ctx, Rpc::kPush, *req, resp);
  engine::JobSpec spec;
  if (auto s = FromProto(req->job(), engine_.limits(), &spec); !s.ok()) {
    r->Finish(ToGrpc(s));
    return r;
  }
  const uint32_t shard = engine_.ShardForQueue(spec.queue);
  PostOr(r, shard, [r, resp, received_ns, spec = std::move(spec)](Shard& sh) mutable {
    auto res = sh.scheduler().Push(std::move(spec));
    if (!res.ok()) {
      r->Finish(ToGrpc(res.status()));
      return;
    }
    resp->set_id(res->id);
    resp->set_duplicate(res->duplicate);
    sh.AfterCommit([r, &sh, received_ns] {
      sh.scheduler().probe().PushAnswered(MonotonicNs() - received_ns, 1);
      r->Finish(grpc::Status::OK);
    });
  });
  return r;
}

QueueService::Unary* QueueService::PushBatch(Ctx* ctx, const v1::PushBatchRequest* req,
                                             v1::PushBatchResponse* resp) {
  const uint64_t received_ns = MonotonicNs();
  Reply r = Begin(ctx, Rpc::kPushBatch, *req, resp);
  const auto& limits = engine_.limits();
  const int n = req->jobs_size();
  if (n == 0 || static_cast<uint32_t>(n) > limits.batch_max) {
    r->Finish(grpc::Status(n == 0 ? grpc::StatusCode::INVALID_ARGUMENT
                                  : grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "jobs has " + std::to_string(n) + " items; must be 1.." +
                               std::to_string(limits.batch_max) + " (--batch-max)"));
    return r;
  }
  // Validate everything first: in atomic mode nothing is pushed on any error.
  struct Item {
    int index;
    engine::JobSpec spec;
  };
  std::map<uint32_t, std::vector<Item>> by_shard;
  for (int i = 0; i < n; ++i) resp->add_results();
  for (int i = 0; i < n; ++i) {
    engine::JobSpec spec;
    engine::Status s = FromProto(req->jobs(i), limits, &spec);
    if (!s.ok()) {
      if (req->atomic()) {
        r->Finish(grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                               "jobs[" + std::to_string(i) + "]: " + s.message() +
                                   "; nothing was pushed (atomic)"));
        return r;
      }
      ToProto(engine::Status(s.code(), "jobs[" + std::to_string(i) + "]: " + s.message()),
              resp->mutable_results(i)->mutable_error());
      continue;
    }
    const uint32_t shard = engine_.ShardForQueue(spec.queue);
    by_shard[shard].push_back(Item{i, std::move(spec)});
  }
  if (by_shard.empty()) {
    r->Finish(grpc::Status::OK);
    return r;
  }
  // Each shard writes only its own pre-allocated result slots; the last one
  // to commit finishes the call.
  auto left = std::make_shared<std::atomic<size_t>>(by_shard.size());
  auto finish_one = [r, left] {
    if (left->fetch_sub(1) == 1) r->Finish(grpc::Status::OK);
  };
  for (auto& [shard, items] : by_shard) {
    std::vector<int> indexes;
    for (const Item& it : items) indexes.push_back(it.index);
    auto task = [resp, items = std::move(items), finish_one, received_ns](Shard& sh) mutable {
      uint64_t pushed = 0;
      for (Item& it : items) {
        auto res = sh.scheduler().Push(std::move(it.spec));
        v1::PushResult* out = resp->mutable_results(it.index);
        if (res.ok()) {
          ++pushed;
          out->set_id(res->id);
          out->set_duplicate(res->duplicate);
        } else {
          ToProto(res.status(), out->mutable_error());
        }
      }
      sh.AfterCommit([&sh, finish_one, received_ns, pushed] {
        sh.scheduler().probe().PushAnswered(MonotonicNs() - received_ns, pushed);
        finish_one();
      });
    };
    if (!engine_.Post(shard, std::move(task))) {
      for (int i : indexes) {
        ToProto(engine::ResourceExhausted("shard " + std::to_string(shard) +
                                          " inbox is full; retry later"),
                resp->mutable_results(i)->mutable_error());
      }
      finish_one();
    }
  }
  return r;
}

grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* QueueService::PushStream(
    Ctx* ctx) {
  return NewPushStream(engine_, limits_, probe_);
}

// ------------------------------------------------------------------ workers

QueueService::Unary* QueueService::Fetch(Ctx* ctx, const v1::FetchRequest* req,
                                         v1::FetchResponse* resp) {
  Reply r = Begin(ctx, Rpc::kFetch, *req, resp);
  if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
    r->Finish(ToGrpc(s));
    return r;
  }
  const uint32_t shard = engine_.ShardForQueue(req->queue());
  PostOr(r, shard, [r, resp, queue = req->queue(), max = req->max(),
                    wait = req->wait_ms()](Shard& sh) {
    auto done = [r, resp](std::vector<engine::Delivery> got) {
      for (const auto& d : got) ToProto(d, resp->add_deliveries());
      r->Finish(grpc::Status::OK);
    };
    auto res = sh.scheduler().Fetch(queue, max, wait, done);
    if (!res.ok()) {
      r->Finish(ToGrpc(res.status()));
    } else if (!res->empty() || wait == 0) {
      done(std::move(res.value()));
    }  // else: the waiter calls done later
  });
  return r;
}

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* QueueService::Subscribe(
    Ctx* ctx) {
  return NewSubscribe(engine_, limits_, *streams_, probe_);
}

QueueService::Unary* QueueService::Ack(Ctx* ctx, const v1::AckRequest* req, v1::AckResponse* resp) {
  Reply r = Begin(ctx, Rpc::kAck, *req, resp);
  uint32_t shard;
  if (!JobShard(req->id(), &shard)) {
    r->Finish(NoJob(req->id()));
    return r;
  }
  PostOr(r, shard, [r, id = req->id(), token = req->lease_token(),
                    result = req->result()](Shard& sh) mutable {
    auto s = sh.scheduler().Ack(id, token, std::move(result));
    if (!s.ok()) {
      r->Finish(ToGrpc(s));
      return;
    }
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

QueueService::Unary* QueueService::Fail(Ctx* ctx, const v1::FailRequest* req,
                                        v1::FailResponse* resp) {
  Reply r = Begin(ctx, Rpc::kFail, *req, resp);
  uint32_t shard;
  if (!JobShard(req->id(), &shard)) {
    r->Finish(NoJob(req->id()));
    return r;
  }
  PostOr(r, shard, [r, resp, id = req->id(), token = req->lease_token(), error = req->error(),
                    no_retry = req->no_retry(), delay = req->retry_delay_ms()](Shard& sh) mutable {
    auto res = sh.scheduler().Fail(id, token, std::move(error), no_retry, delay);
    if (!res.ok()) {
      r->Finish(ToGrpc(res.status()));
      return;
    }
    resp->set_state(ToProto(res->state));
    resp->set_run_at_ms(res->run_at_ms);
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

QueueService::Unary* QueueService::Extend(Ctx* ctx, const v1::ExtendRequest* req,
                                          v1::ExtendResponse* resp) {
  Reply r = Begin(ctx, Rpc::kExtend, *req, resp);
  uint32_t shard;
  if (!JobShard(req->id(), &shard)) {
    r->Finish(NoJob(req->id()));
    return r;
  }
  PostOr(r, shard, [r, resp, id = req->id(), token = req->lease_token(),
                    lease = req->lease_ms()](Shard& sh) {
    auto res = sh.scheduler().Extend(id, token, lease);
    if (!res.ok()) {
      r->Finish(ToGrpc(res.status()));
      return;
    }
    resp->set_lease_expires_at_ms(res.value());
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

// ------------------------------------------------------------------ admin

QueueService::Unary* QueueService::GetJob(Ctx* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  Reply r = Begin(ctx, Rpc::kGetJob, *req, resp);
  uint32_t shard;
  if (!JobShard(req->id(), &shard)) {
    r->Finish(NoJob(req->id()));
    return r;
  }
  PostOr(r, shard, [r, resp, id = req->id()](Shard& sh) {
    auto res = sh.scheduler().Get(id);
    if (res.ok()) ToProto(res.value(), resp);
    r->Finish(ToGrpc(res.status()));
  });
  return r;
}

QueueService::Unary* QueueService::Cancel(Ctx* ctx, const v1::CancelRequest* req,
                                          v1::CancelResponse* resp) {
  Reply r = Begin(ctx, Rpc::kCancel, *req, resp);
  uint32_t shard;
  if (!JobShard(req->id(), &shard)) {
    r->Finish(NoJob(req->id()));
    return r;
  }
  PostOr(r, shard, [r, resp, id = req->id(), reason = req->reason()](Shard& sh) mutable {
    auto res = sh.scheduler().Cancel(id, std::move(reason));
    if (!res.ok()) {
      r->Finish(ToGrpc(res.status()));
      return;
    }
    resp->set_previous_state(ToProto(res.value()));
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

namespace {

// Gathers queue counts from several shards and answers once all replied.
struct CountsGather {
  std::mutex mu;
  std::vector<engine::QueueCounts> counts;
  size_t left = 0;
  bool exhausted = false;
};

template <typename Resp, typename Fill>
void GatherCounts(engine::Engine& engine, Reply r, Resp* resp,
                  const std::string& queue, Fill fill) {
  std::vector<uint32_t> shards;
  if (queue.empty()) {
    for (uint32_t i = 0; i < engine.shard_count(); ++i) shards.push_back(i);
  } else {
    shards.push_back(engine.ShardForQueue(queue));
  }
  auto g = std::make_shared<CountsGather>();
  g->left = shards.size();
  auto finish_if_last = [g, r, resp, fill] {
    // Called with g->mu held by the caller's scope below.
    if (--g->left != 0) return;
    if (g->exhausted) {
      r->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             "a shard inbox is full; retry later"));
      return;
    }
    std::sort(g->counts.begin(), g->counts.end(),
              [](const auto& a, const auto& b) { return a.queue < b.queue; });
    fill(g->counts, resp);
    r->Finish(grpc::Status::OK);
  };
  for (uint32_t s : shards) {
    bool ok = engine.Post(s, [g, queue, finish_if_last](Shard& sh) {
      auto got = sh.scheduler().Stats(queue);
      std::lock_guard lock(g->mu);
      for (auto& c : got) g->counts.push_back(std::move(c));
      finish_if_last();
    });
    if (!ok) {
      std::lock_guard lock(g->mu);
      g->exhausted = true;
      finish_if_last();
    }
  }
}

}  // namespace

QueueService::Unary* QueueService::Stats(Ctx* ctx, const v1::StatsRequest* req,
                                         v1::StatsResponse* resp) {
  Reply r = Begin(ctx, Rpc::kStats, *req, resp);
  if (!req->queue().empty()) {
    if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
      r->Finish(ToGrpc(s));
      return r;
    }
  }
  GatherCounts(engine_, r, resp, req->queue(),
               [](const std::vector<engine::QueueCounts>& all, v1::StatsResponse* out) {
                 engine::QueueCounts totals;
                 for (const auto& c : all) {
                   ToProto(c, out->add_queues());
                   Accumulate(c, &totals);
                 }
                 ToProto(totals, out->mutable_totals());
               });
  return r;
}

QueueService::Unary* QueueService::ListQueues(Ctx* ctx, const v1::ListQueuesRequest* req,
                                              v1::ListQueuesResponse* resp) {
  Reply r = Begin(ctx, Rpc::kListQueues, *req, resp);
  GatherCounts(engine_, r, resp, "",
               [](const std::vector<engine::QueueCounts>& all, v1::ListQueuesResponse* out) {
                 for (const auto& c : all) ToProto(c, out->add_queues());
               });
  return r;
}

QueueService::Unary* QueueService::Pause(Ctx* ctx, const v1::QueueRequest* req,
                                         v1::PauseResponse* resp) {
  Reply r = Begin(ctx, Rpc::kPause, *req, resp);
  if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
    r->Finish(ToGrpc(s));
    return r;
  }
  PostOr(r, engine_.ShardForQueue(req->queue()), [r, q = req->queue()](Shard& sh) {
    auto s = sh.scheduler().Pause(q);
    if (!s.ok()) {
      r->Finish(ToGrpc(s));
      return;
    }
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

QueueService::Unary* QueueService::Resume(Ctx* ctx, const v1::QueueRequest* req,
                                          v1::ResumeResponse* resp) {
  Reply r = Begin(ctx, Rpc::kResume, *req, resp);
  if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
    r->Finish(ToGrpc(s));
    return r;
  }
  PostOr(r, engine_.ShardForQueue(req->queue()), [r, q = req->queue()](Shard& sh) {
    auto s = sh.scheduler().Resume(q);
    if (!s.ok()) {
      r->Finish(ToGrpc(s));
      return;
    }
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  return r;
}

QueueService::Unary* QueueService::ListDead(Ctx* ctx, const v1::ListDeadRequest* req,
                                            v1::ListDeadResponse* resp) {
  Reply r = Begin(ctx, Rpc::kListDead, *req, resp);
  if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
    r->Finish(ToGrpc(s));
    return r;
  }
  const uint32_t limit = req->limit() == 0 ? 100 : req->limit();
  if (limit > engine::Limits::kListLimitMax) {
    r->Finish(Invalid("limit is " + std::to_string(limit) + "; at most 1000"));
    return r;
  }
  PostOr(r, engine_.ShardForQueue(req->queue()),
         [r, resp, q = req->queue(), limit, after = req->after_id()](Shard& sh) {
           auto jobs = sh.scheduler().ListDead(q, limit + 1, after);
           const bool more = jobs.size() > limit;
           if (more) jobs.pop_back();
           for (const auto& j : jobs) ToProto(j, resp->add_jobs());
           resp->set_next_after_id(more ? jobs.back().id : 0);
           r->Finish(grpc::Status::OK);
         });
  return r;
}

namespace {

template <typename Resp, typename Op>
void DeadOp(engine::Engine& engine, Reply r, const v1::DeadSelector* req,
            Resp* resp, Op op) {
  if (auto s = engine::ValidateQueueName(req->queue()); !s.ok()) {
    r->Finish(ToGrpc(s));
    return;
  }
  if (static_cast<uint32_t>(req->ids_size()) > engine.limits().batch_max) {
    r->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "ids has " + std::to_string(req->ids_size()) + " items; at most " +
                               std::to_string(engine.limits().batch_max) + " (--batch-max)"));
    return;
  }
  std::vector<uint64_t> ids(req->ids().begin(), req->ids().end());
  const uint32_t shard = engine.ShardForQueue(req->queue());
  bool ok = engine.Post(shard, [r, resp, q = req->queue(), ids = std::move(ids), op](Shard& sh) {
    resp->set_count(op(sh.scheduler(), q, ids));
    sh.AfterCommit([r] { r->Finish(grpc::Status::OK); });
  });
  if (!ok) r->Finish(Exhausted(shard, engine.options().inbox_max));
}

}  // namespace

QueueService::Unary* QueueService::RetryDead(Ctx* ctx, const v1::DeadSelector* req,
                                             v1::RetryDeadResponse* resp) {
  Reply r = Begin(ctx, Rpc::kRetryDead, *req, resp);
  DeadOp(engine_, r, req, resp, [](engine::Scheduler& s, const std::string& q, const auto& ids) {
    return s.RetryDead(q, ids);
  });
  return r;
}

QueueService::Unary* QueueService::PurgeDead(Ctx* ctx, const v1::DeadSelector* req,
                                             v1::PurgeDeadResponse* resp) {
  Reply r = Begin(ctx, Rpc::kPurgeDead, *req, resp);
  DeadOp(engine_, r, req, resp, [](engine::Scheduler& s, const std::string& q, const auto& ids) {
    return s.PurgeDead(q, ids);
  });
  return r;
}

}  // namespace ringq::grpcsvc
