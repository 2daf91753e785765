// Subscribe: the worker stream, credit-based (DESIGN.md, delivery semantics).
//
// The call is both a gRPC bidi reactor and an engine Consumer registered with
// every shard that owns one of its queues. Credits are one atomic counter
// shared by those shards: a shard takes credits (Acquire) before leasing jobs
// to the stream, so the stream never holds more un-acked deliveries than the
// worker granted. Each ack or fail of a job delivered on this stream gives its
// credit back at once; `credits` messages add more, up to
// --subscribe-credits-max in total (granted and outstanding).
//
// Deliveries and settle results accumulate in one pending response and go
// out as one message per write (one write in flight per stream): under load a
// message carries many, a lone job goes at once.
//
// Bounds: deliveries pending <= credits; settle results pending <=
// settle_pending_max (past it the stream is not read until the worker reads).
//
// End: when the worker half-closes, cancels or the write fails, the consumer
// is closed and removed from its shards, and every job leased on this stream
// and not settled is released back to its queue (counted as an attempt if it
// was written to the wire).
//
// Lifetime: shared by gRPC (until OnDone), the shards' consumer lists and the
// tasks in flight; see Begin/OnDone.
#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>

#include "service/grpc/convert.h"
#include "service/grpc/streams.h"

namespace ringq::grpcsvc {

namespace {

using engine::Shard;

class SubscribeCall final
    : public grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>,
      public engine::Consumer,
      public Drainable,
      public std::enable_shared_from_this<SubscribeCall> {
 public:
  SubscribeCall(engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry,
                GrpcProbe* probe)
      : engine_(engine), limits_(limits), registry_(registry), probe_(probe) {
    if (probe_ != nullptr) probe_->Started(Rpc::kSubscribe);
  }

  void Begin() {
    self_ = shared_from_this();
    if (!registry_.Add(self_)) {
      Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
      return;
    }
    StartRead(&in_);
  }

  void Drain() override {
    Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  }

  // ---------------------------------------------------------- Consumer

  uint32_t Acquire(uint32_t want) override {
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

  void Release(uint32_t n) override { credits_.fetch_add(n, std::memory_order_acq_rel); }

  void Deliver(std::vector<engine::Delivery>&& batch) override {
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

  void Starved(uint32_t shard) override {
    starved_[shard].store(true, std::memory_order_release);
    // Credits may have come back between the failed Acquire and now.
    if (credits_.load(std::memory_order_acquire) > 0) KickStarved();
  }

  bool Closed() const override { return closed_.load(std::memory_order_acquire); }

  int64_t credits() const override { return credits_.load(std::memory_order_relaxed); }

  // ---------------------------------------------------------- reactor

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The worker half-closed: deliver nothing more, answer what it sent, end.
      closed_.store(true, std::memory_order_release);
      std::unique_lock lock(mu_);
      read_eof_ = true;
      MaybeWrite(lock);
      return;
    }
    if (probe_ != nullptr) probe_->Received(in_.ByteSizeLong());
    grpc::Status st = opened_ ? HandleMessage() : HandleOpen();
    if (!st.ok()) {
      Close(st);
      return;
    }
    std::unique_lock lock(mu_);
    if (finished_) return;
    if (PendingSettles() < limits_.settle_pending_max) {
      lock.unlock();
      StartRead(&in_);
    } else {
      read_paused_ = true;
    }
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok) {
      lock.unlock();
      Close(grpc::Status::CANCELLED);
      return;
    }
    if (finish_pending_) {
      // Close() waited for this write to end before finishing.
      finish_pending_ = false;
      grpc::Status st = finish_status_;
      lock.unlock();
      FinishCounted(st);
      return;
    }
    if (read_paused_ && PendingSettles() < limits_.settle_pending_max / 2) {
      read_paused_ = false;
      lock.unlock();
      StartRead(&in_);
      lock.lock();
    }
    MaybeWrite(lock);
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override {
    registry_.Remove(this);
    auto keep = std::move(self_);  // may free this at end of scope
  }

 private:
  struct Outstanding {
    uint64_t token;
    bool sent;  // handed to gRPC for writing
  };

  size_t PendingSettles() const { return settles_in_flight_ + next_.results_size(); }

  grpc::Status HandleOpen() {
    if (!in_.has_open()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first Subscribe message must carry open");
    }
    const auto& open = in_.open();
    const auto& limits = engine_.limits();
    if (open.queues_size() == 0 ||
        open.queues_size() > static_cast<int>(engine::Limits::kSubscribeQueuesMax)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "open.queues has " + std::to_string(open.queues_size()) +
                              " entries; must be 1..16");
    }
    std::set<std::string> unique;
    for (int i = 0; i < open.queues_size(); ++i) {
      auto s = engine::ValidateQueueName(open.queues(i), "open.queues[" + std::to_string(i) + "]");
      if (!s.ok()) return ToGrpc(s);
      unique.insert(open.queues(i));
    }
    if (open.credits() == 0 || open.credits() > limits.subscribe_credits_max) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "open.credits is " + std::to_string(open.credits()) + "; must be 1.." +
                              std::to_string(limits.subscribe_credits_max) +
                              " (--subscribe-credits-max)");
    }
    if (in_.credits() != 0 || in_.acks_size() || in_.fails_size() || in_.extends_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the open message carries nothing but open");
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
            self->Close(ToGrpc(s));
            return;
          }
        }
      });
      if (!ok) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "shard " + std::to_string(shard) + " inbox is full; retry later");
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status HandleMessage() {
    if (in_.has_open()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "open may only be sent once, in the first message");
    }
    const size_t settles = in_.acks_size() + in_.fails_size() + in_.extends_size();
    if (settles > engine_.limits().batch_max) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "a Subscribe message carries " + std::to_string(settles) +
                              " acks, fails and extends; at most " +
                              std::to_string(engine_.limits().batch_max) + " (--batch-max)");
    }
    // Credits of settled jobs come back now, whatever the settle's result:
    // the worker is done with them.
    uint32_t returned = 0;
    {
      std::lock_guard lock(mu_);
      for (const auto& a : in_.acks()) returned += outstanding_.erase(a.id());
      for (const auto& f : in_.fails()) returned += outstanding_.erase(f.id());
      const uint64_t total = static_cast<uint64_t>(credits_.load()) + outstanding_.size() +
                             returned + in_.credits();
      if (total > engine_.limits().subscribe_credits_max) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "credits granted and outstanding would be " + std::to_string(total) +
                                "; at most " +
                                std::to_string(engine_.limits().subscribe_credits_max) +
                                " (--subscribe-credits-max)");
      }
      settles_in_flight_ += settles;
    }
    PostSettles();
    const uint32_t added = returned + in_.credits();
    if (added > 0) {
      credits_.fetch_add(added, std::memory_order_acq_rel);
      KickStarved();
    }
    return grpc::Status::OK;
  }

  // Groups the acks, fails and extends of in_ by shard, one task per shard.
  void PostSettles() {
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
    for (const auto& a : in_.acks()) {
      if (Batch* b = route(a.id(), v1::SETTLE_OP_ACK)) b->acks.push_back(a);
    }
    for (const auto& f : in_.fails()) {
      if (Batch* b = route(f.id(), v1::SETTLE_OP_FAIL)) b->fails.push_back(f);
    }
    for (const auto& e : in_.extends()) {
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
  void SettleDone(std::vector<v1::SettleResult> results) {
    std::unique_lock lock(mu_);
    settles_in_flight_ -= results.size();
    if (finished_) return;
    for (auto& r : results) *next_.add_results() = std::move(r);
    MaybeWrite(lock);
  }

  // Starts the next write, or ends a half-closed stream that has nothing left.
  void MaybeWrite(std::unique_lock<std::mutex>& lock) {
    if (finished_ || writing_) return;
    if (next_.deliveries_size() == 0 && next_.results_size() == 0) {
      if (read_eof_ && settles_in_flight_ == 0) {
        lock.unlock();
        Close(grpc::Status::OK);
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
    if (probe_ != nullptr) probe_->Sent(out_.ByteSizeLong());
    StartWrite(&out_);
    lock.lock();
  }

  void KickStarved() {
    for (const auto& [shard, queues] : queues_by_shard_) {
      if (!starved_[shard].exchange(false, std::memory_order_acq_rel)) continue;
      bool ok = engine_.Post(shard, [queues = queues](Shard& sh) {
        for (const auto& q : queues) sh.scheduler().Kick(q);
      });
      if (!ok) starved_[shard].store(true, std::memory_order_release);
    }
  }

  // Gives leased jobs back to their shards.
  void ReleaseJobs(std::vector<std::pair<uint64_t, uint64_t>> jobs, bool attempted) {
    std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> by_shard;
    for (const auto& j : jobs) by_shard[engine::ShardOfJob(j.first)].push_back(j);
    for (auto& [shard, list] : by_shard) {
      // A full inbox here leaves the jobs to their lease expiry: still redelivered.
      (void)engine_.Post(shard, [list = std::move(list), attempted](Shard& sh) {
        for (const auto& [id, token] : list) sh.scheduler().Release(id, token, attempted);
      });
    }
  }

  // Ends the stream once: no more deliveries, consumer removed, unsettled jobs
  // released, Finish sent (after the write in flight, if any).
  void Close(grpc::Status status) {
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
    if (!wait_for_write) FinishCounted(status);
  }

  void FinishCounted(grpc::Status status) {
    if (probe_ != nullptr) probe_->Finished(Rpc::kSubscribe, status.error_code());
    Finish(std::move(status));
  }

  engine::Engine& engine_;
  const StreamLimits limits_;
  StreamRegistry& registry_;
  GrpcProbe* const probe_;
  std::shared_ptr<SubscribeCall> self_;
  v1::SubscribeRequest in_;    // reader only
  v1::SubscribeResponse out_;  // owned by the write in flight
  bool opened_ = false;        // reader only
  std::map<uint32_t, std::vector<std::string>> queues_by_shard_;  // fixed after open

  std::atomic<int64_t> credits_{0};
  std::atomic<bool> closed_{false};
  std::array<std::atomic<bool>, engine::kShardsMax> starved_{};

  std::mutex mu_;
  v1::SubscribeResponse next_;  // accumulating
  std::unordered_map<uint64_t, Outstanding> outstanding_;
  size_t settles_in_flight_ = 0;
  bool writing_ = false;
  bool read_paused_ = false;
  bool read_eof_ = false;
  bool finished_ = false;
  bool finish_pending_ = false;
  grpc::Status finish_status_;
};

}  // namespace

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* NewSubscribe(
    engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry,
    GrpcProbe* probe) {
  auto call = std::make_shared<SubscribeCall>(engine, limits, registry, probe);
  call->Begin();
  return call.get();
}

}  // namespace ringq::grpcsvc
