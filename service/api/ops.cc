#include "service/api/ops.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "service/api/convert.h"

namespace ringq::api {

using engine::Shard;

namespace {

engine::Status Exhausted(uint32_t shard, uint32_t inbox_max) {
  return engine::ResourceExhausted("shard " + std::to_string(shard) + " inbox is full (" +
                                   std::to_string(inbox_max) + " tasks, --inbox-max); retry later");
}

engine::Status NoJob(uint64_t id) { return engine::NotFound("job " + std::to_string(id) + " not found"); }

// A call that only needs its records durable before answering OK.
void CommitThenOk(Shard& sh, const engine::Status& s, const Done& done) {
  if (!s.ok()) {
    done(s);
    return;
  }
  sh.AfterCommit([done] { done(engine::Status::Ok()); });
}

}  // namespace

void Ops::RunOr(uint32_t shard, const Done& done, Shard::Task task) {
  if (!engine_.Run(shard, std::move(task))) done(Exhausted(shard, engine_.options().inbox_max));
}

bool Ops::JobShard(uint64_t id, uint32_t* shard) const {
  *shard = engine::ShardOfJob(id);
  return id != 0 && *shard < engine_.shard_count();
}

void Ops::DrainWaiters() {
  for (uint32_t i = 0; i < engine_.shard_count(); ++i) {
    // A full inbox here leaves the waiters to their (bounded) wait.
    (void)engine_.Post(i, [](Shard& sh) { sh.scheduler().DrainWaiters(); });
  }
}

// ------------------------------------------------------------------ push

void Ops::Push(const v1::PushRequest& req, v1::PushResponse* resp, Done done,
               uint64_t received_ns) {
  engine::JobSpec spec;
  if (auto s = FromProto(req.job(), engine_.limits(), &spec); !s.ok()) {
    done(s);
    return;
  }
  const uint32_t shard = engine_.ShardForQueue(spec.queue);
  RunOr(shard, done, [resp, done, received_ns, spec = std::move(spec)](Shard& sh) mutable {
    auto res = sh.scheduler().Push(std::move(spec));
    if (!res.ok()) {
      done(res.status());
      return;
    }
    resp->set_id(res->id);
    resp->set_duplicate(res->duplicate);
    sh.AfterCommit([done, &sh, received_ns] {
      sh.scheduler().probe().PushAnswered(MonotonicNs() - received_ns, 1);
      done(engine::Status::Ok());
    });
  });
}

void Ops::PushBatch(const v1::PushBatchRequest& req, v1::PushBatchResponse* resp, Done done,
                    uint64_t received_ns) {
  const auto& limits = engine_.limits();
  const int n = req.jobs_size();
  if (n == 0 || static_cast<uint32_t>(n) > limits.batch_max) {
    done(engine::Status(n == 0 ? engine::Code::kInvalidArgument : engine::Code::kResourceExhausted,
                        "jobs has " + std::to_string(n) + " items; must be 1.." +
                            std::to_string(limits.batch_max) + " (--batch-max)"));
    return;
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
    engine::Status s = FromProto(req.jobs(i), limits, &spec);
    if (!s.ok()) {
      if (req.atomic()) {
        done(engine::Status(s.code(), "jobs[" + std::to_string(i) + "]: " + s.message() +
                                          "; nothing was pushed (atomic)"));
        return;
      }
      ToProto(engine::Status(s.code(), "jobs[" + std::to_string(i) + "]: " + s.message()),
              resp->mutable_results(i)->mutable_error());
      continue;
    }
    const uint32_t shard = engine_.ShardForQueue(spec.queue);
    by_shard[shard].push_back(Item{i, std::move(spec)});
  }
  if (by_shard.empty()) {
    done(engine::Status::Ok());
    return;
  }
  // Each shard writes only its own pre-allocated result slots; the last one
  // to commit finishes the call.
  auto left = std::make_shared<std::atomic<size_t>>(by_shard.size());
  auto finish_one = [done, left] {
    if (left->fetch_sub(1) == 1) done(engine::Status::Ok());
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
    if (!engine_.Run(shard, std::move(task))) {
      for (int i : indexes) {
        ToProto(engine::ResourceExhausted("shard " + std::to_string(shard) +
                                          " inbox is full; retry later"),
                resp->mutable_results(i)->mutable_error());
      }
      finish_one();
    }
  }
}

// ------------------------------------------------------------------ workers

void Ops::Fetch(const v1::FetchRequest& req, v1::FetchResponse* resp, Done done) {
  if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) {
    done(s);
    return;
  }
  const uint32_t shard = engine_.ShardForQueue(req.queue());
  RunOr(shard, done, [resp, done, queue = req.queue(), max = req.max(),
                      wait = req.wait_ms()](Shard& sh) {
    auto deliver = [resp, done](std::vector<engine::Delivery> got) {
      for (const auto& d : got) ToProto(d, resp->add_deliveries());
      done(engine::Status::Ok());
    };
    auto res = sh.scheduler().Fetch(queue, max, wait, deliver);
    if (!res.ok()) {
      done(res.status());
    } else if (!res->empty() || wait == 0) {
      deliver(std::move(res.value()));
    }  // else: the waiter calls deliver later
  });
}

void Ops::Ack(const v1::AckRequest& req, v1::AckResponse* resp, Done done) {
  uint32_t shard;
  if (!JobShard(req.id(), &shard)) return done(NoJob(req.id()));
  RunOr(shard, done, [done, id = req.id(), token = req.lease_token(),
                      result = req.result()](Shard& sh) mutable {
    CommitThenOk(sh, sh.scheduler().Ack(id, token, std::move(result)), done);
  });
}

void Ops::Fail(const v1::FailRequest& req, v1::FailResponse* resp, Done done) {
  uint32_t shard;
  if (!JobShard(req.id(), &shard)) return done(NoJob(req.id()));
  RunOr(shard, done, [resp, done, id = req.id(), token = req.lease_token(),
                      error = req.error(), no_retry = req.no_retry(),
                      delay = req.retry_delay_ms()](Shard& sh) mutable {
    auto res = sh.scheduler().Fail(id, token, std::move(error), no_retry, delay);
    if (res.ok()) {
      resp->set_state(ToProto(res->state));
      resp->set_run_at_ms(res->run_at_ms);
    }
    CommitThenOk(sh, res.status(), done);
  });
}

void Ops::Extend(const v1::ExtendRequest& req, v1::ExtendResponse* resp, Done done) {
  uint32_t shard;
  if (!JobShard(req.id(), &shard)) return done(NoJob(req.id()));
  RunOr(shard, done, [resp, done, id = req.id(), token = req.lease_token(),
                      lease = req.lease_ms()](Shard& sh) {
    auto res = sh.scheduler().Extend(id, token, lease);
    if (res.ok()) resp->set_lease_expires_at_ms(res.value());
    CommitThenOk(sh, res.status(), done);
  });
}

// ------------------------------------------------------------------ admin

void Ops::GetJob(const v1::GetJobRequest& req, v1::Job* resp, Done done) {
  uint32_t shard;
  if (!JobShard(req.id(), &shard)) return done(NoJob(req.id()));
  RunOr(shard, done, [resp, done, id = req.id()](Shard& sh) {
    auto res = sh.scheduler().Get(id);
    if (res.ok()) ToProto(res.value(), resp);
    done(res.status());
  });
}

void Ops::Cancel(const v1::CancelRequest& req, v1::CancelResponse* resp, Done done) {
  uint32_t shard;
  if (!JobShard(req.id(), &shard)) return done(NoJob(req.id()));
  RunOr(shard, done, [resp, done, id = req.id(), reason = req.reason()](Shard& sh) mutable {
    auto res = sh.scheduler().Cancel(id, std::move(reason));
    if (res.ok()) resp->set_previous_state(ToProto(res.value()));
    CommitThenOk(sh, res.status(), done);
  });
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
void GatherCounts(engine::Engine& engine, const Done& done, Resp* resp, const std::string& queue,
                  Fill fill) {
  std::vector<uint32_t> shards;
  if (queue.empty()) {
    for (uint32_t i = 0; i < engine.shard_count(); ++i) shards.push_back(i);
  } else {
    shards.push_back(engine.ShardForQueue(queue));
  }
  auto g = std::make_shared<CountsGather>();
  g->left = shards.size();
  // Called with g->mu held.
  auto finish_if_last = [g, done, resp, fill] {
    if (--g->left != 0) return;
    if (g->exhausted) {
      done(engine::ResourceExhausted("a shard inbox is full; retry later"));
      return;
    }
    std::sort(g->counts.begin(), g->counts.end(),
              [](const auto& a, const auto& b) { return a.queue < b.queue; });
    fill(g->counts, resp);
    done(engine::Status::Ok());
  };
  for (uint32_t s : shards) {
    bool ok = engine.Run(s, [g, queue, finish_if_last](Shard& sh) {
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

void Ops::Stats(const v1::StatsRequest& req, v1::StatsResponse* resp, Done done) {
  if (!req.queue().empty()) {
    if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) return done(s);
  }
  GatherCounts(engine_, done, resp, req.queue(),
               [](const std::vector<engine::QueueCounts>& all, v1::StatsResponse* out) {
                 engine::QueueCounts totals;
                 for (const auto& c : all) {
                   ToProto(c, out->add_queues());
                   Accumulate(c, &totals);
                 }
                 ToProto(totals, out->mutable_totals());
               });
}

void Ops::ListQueues(const v1::ListQueuesRequest& req, v1::ListQueuesResponse* resp, Done done) {
  GatherCounts(engine_, done, resp, "",
               [](const std::vector<engine::QueueCounts>& all, v1::ListQueuesResponse* out) {
                 for (const auto& c : all) ToProto(c, out->add_queues());
               });
}

void Ops::Pause(const v1::QueueRequest& req, v1::PauseResponse* resp, Done done) {
  if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) return done(s);
  RunOr(engine_.ShardForQueue(req.queue()), done, [done, q = req.queue()](Shard& sh) {
    CommitThenOk(sh, sh.scheduler().Pause(q), done);
  });
}

void Ops::Resume(const v1::QueueRequest& req, v1::ResumeResponse* resp, Done done) {
  if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) return done(s);
  RunOr(engine_.ShardForQueue(req.queue()), done, [done, q = req.queue()](Shard& sh) {
    CommitThenOk(sh, sh.scheduler().Resume(q), done);
  });
}

void Ops::ListDead(const v1::ListDeadRequest& req, v1::ListDeadResponse* resp, Done done) {
  if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) return done(s);
  const uint32_t limit = req.limit() == 0 ? 100 : req.limit();
  if (limit > engine::Limits::kListLimitMax) {
    return done(engine::InvalidArgument("limit is " + std::to_string(limit) + "; at most 1000"));
  }
  RunOr(engine_.ShardForQueue(req.queue()), done,
        [resp, done, q = req.queue(), limit, after = req.after_id()](Shard& sh) {
          auto jobs = sh.scheduler().ListDead(q, limit + 1, after);
          const bool more = jobs.size() > limit;
          if (more) jobs.pop_back();
          for (const auto& j : jobs) ToProto(j, resp->add_jobs());
          resp->set_next_after_id(more ? jobs.back().id : 0);
          done(engine::Status::Ok());
        });
}

namespace {

template <typename Resp, typename Op>
void DeadOp(engine::Engine& engine, const Done& done, const v1::DeadSelector& req, Resp* resp,
            Op op) {
  if (auto s = engine::ValidateQueueName(req.queue()); !s.ok()) return done(s);
  if (static_cast<uint32_t>(req.ids_size()) > engine.limits().batch_max) {
    return done(engine::ResourceExhausted("ids has " + std::to_string(req.ids_size()) +
                                          " items; at most " +
                                          std::to_string(engine.limits().batch_max) +
                                          " (--batch-max)"));
  }
  std::vector<uint64_t> ids(req.ids().begin(), req.ids().end());
  const uint32_t shard = engine.ShardForQueue(req.queue());
  bool ok = engine.Run(shard, [resp, done, q = req.queue(), ids = std::move(ids), op](Shard& sh) {
    resp->set_count(op(sh.scheduler(), q, ids));
    sh.AfterCommit([done] { done(engine::Status::Ok()); });
  });
  if (!ok) done(Exhausted(shard, engine.options().inbox_max));
}

}  // namespace

void Ops::RetryDead(const v1::DeadSelector& req, v1::RetryDeadResponse* resp, Done done) {
  DeadOp(engine_, done, req, resp, [](engine::Scheduler& s, const std::string& q, const auto& ids) {
    return s.RetryDead(q, ids);
  });
}

void Ops::PurgeDead(const v1::DeadSelector& req, v1::PurgeDeadResponse* resp, Done done) {
  DeadOp(engine_, done, req, resp, [](engine::Scheduler& s, const std::string& q, const auto& ids) {
    return s.PurgeDead(q, ids);
  });
}

}  // namespace ringq::api
