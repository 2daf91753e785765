#include "service/api/subscription.h"

#include <set>

#include "service/api/convert.h"

namespace ringq::api {

using engine::Shard;

Subscription::Subscription(engine::Engine& engine, uint32_t settle_pending_max,
                           StreamRegistry& registry, SubscriptionSink* sink)
    : engine_(engine), settle_pending_max_(settle_pending_max), registry_(registry), sink_(sink) {}

void Subscription::Begin() {
  if (!registry_.Add(shared_from_this())) {
    Close(engine::Unavailable("server is shutting down"));
    return;
  }
  sink_->StartRead();
}

bool Subscription::finished() const {
  std::lock_guard lock(mu_);
  return finished_;
}

// ---------------------------------------------------------- Consumer

uint32_t Subscription::Acquire(uint32_t want) {
  if (closed_.load(std::memory_order_acquire)) return 0;
  int64_t have = credits_.load(std::memory_order_relaxed);
  while (have > 0) {
    const int64_t take = std::min<int64_t>(have, want);
    if (credits_.compare_exchange_weak(have, have - take, std::memory_order_acq_rel)) {
      return static_cast<uint32_t>(take);
    }
  }
  return 0;
}

void Subscription::Deliver(std::vector<engine::Delivery>&& batch) {
  std::unique_lock lock(mu_);
  if (finished_) {
    // Raced with the end of the stream: give the jobs back untried.
    lock.unlock();
    std::vector<std::pair<uint64_t, uint64_t>> back;
    for (const auto& d : batch) back.emplace_back(d.job.id, d.lease_token);
    ReleaseJobs(std::move(back), false);
    return;
  }
  for (const auto& d : batch) {
    ToProto(d, next_.add_deliveries());
    outstanding_[d.job.id] = Outstanding{d.lease_token, false};
  }
  MaybeWrite(lock);
}

void Subscription::Starved(uint32_t shard) {
  starved_[shard].store(true, std::memory_order_release);
  // Credits may have come back between the failed Acquire and now.
  if (credits_.load(std::memory_order_acquire) > 0) KickStarved();
}

// ---------------------------------------------------------- transport

void Subscription::OnReadEof() {
  // The worker half-closed: deliver nothing more, answer what it sent, end.
  closed_.store(true, std::memory_order_release);
  std::unique_lock lock(mu_);
  read_eof_ = true;
  MaybeWrite(lock);
}

void Subscription::OnRead(const v1::SubscribeRequest& in) {
  engine::Status st = opened_ ? HandleMessage(in) : HandleOpen(in);
  if (!st.ok()) {
    Close(std::move(st));
    return;
  }
  std::unique_lock lock(mu_);
  if (finished_) return;
  if (PendingSettles() < settle_pending_max_) {
    lock.unlock();
    sink_->StartRead();
  } else {
    read_paused_ = true;
  }
}

void Subscription::OnWriteDone(bool ok) {
  std::unique_lock lock(mu_);
  writing_ = false;
  if (!ok) {
    lock.unlock();
    Close(engine::Cancelled("writing to the client failed"));
    return;
  }
  if (finish_pending_) {
    // Close() waited for this write to end before finishing.
    finish_pending_ = false;
    engine::Status st = finish_status_;
    lock.unlock();
    sink_->Finish(st);
    return;
  }
  if (read_paused_ && PendingSettles() < settle_pending_max_ / 2) {
    read_paused_ = false;
    lock.unlock();
    sink_->StartRead();
    lock.lock();
  }
  MaybeWrite(lock);
}

engine::Status Subscription::HandleOpen(const v1::SubscribeRequest& in) {
  if (!in.has_open()) {
    return engine::InvalidArgument("the first Subscribe message must carry open");
  }
  const auto& open = in.open();
  const auto& limits = engine_.limits();
  if (open.queues_size() == 0 ||
      open.queues_size() > static_cast<int>(engine::Limits::kSubscribeQueuesMax)) {
    return engine::InvalidArgument("open.queues has " + std::to_string(open.queues_size()) +
                                   " entries; must be 1..16");
  }
  std::set<std::string> unique;
  for (int i = 0; i < open.queues_size(); ++i) {
    auto s = engine::ValidateQueueName(open.queues(i), "open.queues[" + std::to_string(i) + "]");
    if (!s.ok()) return s;
    unique.insert(open.queues(i));
  }
  if (open.credits() == 0 || open.credits() > limits.subscribe_credits_max) {
    return engine::InvalidArgument("open.credits is " + std::to_string(open.credits()) +
                                   "; must be 1.." + std::to_string(limits.subscribe_credits_max) +
                                   " (--subscribe-credits-max)");
  }
  if (in.credits() != 0 || in.acks_size() || in.fails_size() || in.extends_size()) {
    return engine::InvalidArgument("the open message carries nothing but open");
  }
  for (const auto& q : unique) queues_by_shard_[engine_.ShardForQueue(q)].push_back(q);
  credits_.store(open.credits(), std::memory_order_release);
  opened_ = true;
  auto self = shared_from_this();
  for (const auto& [shard, queues] : queues_by_shard_) {
    bool ok = engine_.Post(shard, [self, queues = queues](Shard& sh) {
      for (const auto& q : queues) {
        auto s = sh.scheduler().AddConsumer(q, self);
        if (!s.ok()) {
          self->Close(std::move(s));
          return;
        }
      }
    });
    if (!ok) {
      return engine::ResourceExhausted("shard " + std::to_string(shard) +
                                       " inbox is full; retry later");
    }
  }
  return engine::Status::Ok();
}

engine::Status Subscription::HandleMessage(const v1::SubscribeRequest& in) {
  if (in.has_open()) {
    return engine::InvalidArgument("open may only be sent once, in the first message");
  }
  const size_t settles = in.acks_size() + in.fails_size() + in.extends_size();
  if (settles > engine_.limits().batch_max) {
    return engine::ResourceExhausted("a Subscribe message carries " + std::to_string(settles) +
                                     " acks, fails and extends; at most " +
                                     std::to_string(engine_.limits().batch_max) +
                                     " (--batch-max)");
  }
  // Credits of settled jobs come back now, whatever the settle's result:
  // the worker is done with them.
  uint32_t returned = 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& a : in.acks()) returned += outstanding_.erase(a.id());
    for (const auto& f : in.fails()) returned += outstanding_.erase(f.id());
    const uint64_t total = static_cast<uint64_t>(credits_.load()) + outstanding_.size() +
                           returned + in.credits();
    if (total > engine_.limits().subscribe_credits_max) {
      return engine::ResourceExhausted(
          "credits granted and outstanding would be " + std::to_string(total) + "; at most " +
          std::to_string(engine_.limits().subscribe_credits_max) + " (--subscribe-credits-max)");
    }
    settles_in_flight_ += settles;
  }
  PostSettles(in);
  const uint32_t added = returned + in.credits();
  if (added > 0) {
    credits_.fetch_add(added, std::memory_order_acq_rel);
    KickStarved();
  }
  return engine::Status::Ok();
}

// Groups the acks, fails and extends of `in` by shard, one task per shard.
void Subscription::PostSettles(const v1::SubscribeRequest& in) {
  struct Batch {
    std::vector<v1::AckRequest> acks;
    std::vector<v1::FailRequest> fails;
    std::vector<v1::ExtendRequest> extends;
  };
  std::map<uint32_t, Batch> by_shard;
  std::vector<v1::SettleResult> unroutable;
  auto route = [&](uint64_t id, v1::SettleOp op) -> Batch* {
    const uint32_t shard = engine::ShardOfJob(id);
    if (id != 0 && shard < engine_.shard_count()) return &by_shard[shard];
    v1::SettleResult r;
    r.set_id(id);
    r.set_op(op);
    ToProto(engine::NotFound("job " + std::to_string(id) + " not found"), r.mutable_error());
    unroutable.push_back(std::move(r));
    return nullptr;
  };
  for (const auto& a : in.acks()) {
    if (Batch* b = route(a.id(), v1::SETTLE_OP_ACK)) b->acks.push_back(a);
  }
  for (const auto& f : in.fails()) {
    if (Batch* b = route(f.id(), v1::SETTLE_OP_FAIL)) b->fails.push_back(f);
  }
  for (const auto& e : in.extends()) {
    if (Batch* b = route(e.id(), v1::SETTLE_OP_EXTEND)) b->extends.push_back(e);
  }
  if (!unroutable.empty()) SettleDone(std::move(unroutable));
  auto self = shared_from_this();
  for (auto& [shard, batch] : by_shard) {
    bool ok = engine_.Post(shard, [self, batch = std::move(batch)](Shard& sh) mutable {
      std::vector<v1::SettleResult> results;
      results.reserve(batch.acks.size() + batch.fails.size() + batch.extends.size());
      auto& s = sh.scheduler();
      for (auto& a : batch.acks) {
        auto& r = results.emplace_back();
        r.set_id(a.id());
        r.set_op(v1::SETTLE_OP_ACK);
        auto st = s.Ack(a.id(), a.lease_token(), std::move(*a.mutable_result()));
        if (!st.ok()) ToProto(st, r.mutable_error());
      }
      for (auto& f : batch.fails) {
        auto& r = results.emplace_back();
        r.set_id(f.id());
        r.set_op(v1::SETTLE_OP_FAIL);
        auto res = s.Fail(f.id(), f.lease_token(), std::move(*f.mutable_error()), f.no_retry(),
                          f.retry_delay_ms());
        if (res.ok()) {
          r.set_state(ToProto(res->state));
        } else {
          ToProto(res.status(), r.mutable_error());
        }
      }
      for (auto& e : batch.extends) {
        auto& r = results.emplace_back();
        r.set_id(e.id());
        r.set_op(v1::SETTLE_OP_EXTEND);
        auto res = s.Extend(e.id(), e.lease_token(), e.lease_ms());
        if (res.ok()) {
          r.set_lease_expires_at_ms(res.value());
        } else {
          ToProto(res.status(), r.mutable_error());
        }
      }
      sh.AfterCommit([self, results = std::move(results)]() mutable {
        self->SettleDone(std::move(results));
      });
    });
    if (!ok) {
      std::vector<v1::SettleResult> failed;
      auto add = [&](uint64_t id, v1::SettleOp op) {
        auto& r = failed.emplace_back();
        r.set_id(id);
        r.set_op(op);
        ToProto(engine::ResourceExhausted("shard inbox is full; retry later"), r.mutable_error());
      };
      for (const auto& a : batch.acks) add(a.id(), v1::SETTLE_OP_ACK);
      for (const auto& f : batch.fails) add(f.id(), v1::SETTLE_OP_FAIL);
      for (const auto& e : batch.extends) add(e.id(), v1::SETTLE_OP_EXTEND);
      SettleDone(std::move(failed));
    }
  }
}

// Any thread: results of settles are ready to go out.
void Subscription::SettleDone(std::vector<v1::SettleResult> results) {
  std::unique_lock lock(mu_);
  settles_in_flight_ -= results.size();
  if (finished_) return;
  for (auto& r : results) *next_.add_results() = std::move(r);
  MaybeWrite(lock);
}

// Starts the next write, or ends a half-closed stream that has nothing left.
void Subscription::MaybeWrite(std::unique_lock<std::mutex>& lock) {
  while (!finished_ && !writing_) {
    if (next_.deliveries_size() == 0 && next_.results_size() == 0) {
      if (read_eof_ && settles_in_flight_ == 0) {
        lock.unlock();
        Close(engine::Status::Ok());
        lock.lock();
      }
      return;
    }
    out_.Clear();
    out_.Swap(&next_);
    for (const auto& d : out_.deliveries()) {
      auto it = outstanding_.find(d.job().id());
      if (it != outstanding_.end()) it->second.sent = true;
    }
    writing_ = true;
    lock.unlock();
    const bool done = sink_->StartWrite(out_);
    lock.lock();
    if (!done) return;  // OnWriteDone continues
    writing_ = false;
    if (finish_pending_) {
      finish_pending_ = false;
      engine::Status st = finish_status_;
      lock.unlock();
      sink_->Finish(st);
      lock.lock();
      return;
    }
  }
}

void Subscription::KickStarved() {
  for (const auto& [shard, queues] : queues_by_shard_) {
    if (!starved_[shard].exchange(false, std::memory_order_acq_rel)) continue;
    bool ok = engine_.Post(shard, [queues = queues](Shard& sh) {
      for (const auto& q : queues) sh.scheduler().Kick(q);
    });
    if (!ok) starved_[shard].store(true, std::memory_order_release);
  }
}

// Gives leased jobs back to their shards.
void Subscription::ReleaseJobs(std::vector<std::pair<uint64_t, uint64_t>> jobs, bool attempted) {
  std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> by_shard;
  for (const auto& j : jobs) by_shard[engine::ShardOfJob(j.first)].push_back(j);
  for (auto& [shard, list] : by_shard) {
    // A full inbox here leaves the jobs to their lease expiry: still redelivered.
    (void)engine_.Post(shard, [list = std::move(list), attempted](Shard& sh) {
      for (const auto& [id, token] : list) sh.scheduler().Release(id, token, attempted);
    });
  }
}

void Subscription::Close(engine::Status status) {
  std::unique_lock lock(mu_);
  if (finished_) return;
  finished_ = true;
  closed_.store(true, std::memory_order_release);
  std::vector<std::pair<uint64_t, uint64_t>> sent, unsent;
  for (const auto& [id, o] : outstanding_) (o.sent ? sent : unsent).emplace_back(id, o.token);
  outstanding_.clear();
  const bool wait_for_write = writing_;
  if (wait_for_write) {
    finish_pending_ = true;
    finish_status_ = status;
  }
  lock.unlock();

  for (const auto& [shard, queues] : queues_by_shard_) {
    const engine::Consumer* me = this;
    (void)engine_.Post(shard, [queues = queues, me](Shard& sh) {
      for (const auto& q : queues) sh.scheduler().RemoveConsumer(q, me);
    });
  }
  ReleaseJobs(std::move(sent), true);
  ReleaseJobs(std::move(unsent), false);
  registry_.Remove(this);
  if (!wait_for_write) sink_->Finish(status);
}

}  // namespace ringq::api
