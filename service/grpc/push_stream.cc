// PushStream: a bidi stream of pushes, each answered in order.
//
// Requests for different shards commit in any order; answers are written in
// request order from a reorder buffer. At most push_stream_in_flight_max
// requests are unanswered per stream: past it the stream is not read until
// answers drain, so a producer that never reads answers stalls itself, not
// the server.
//
// Lifetime: gRPC holds one reference until OnDone; every task posted to a
// shard holds one until it answers. The object is freed when both are gone.
#include <map>
#include <memory>
#include <mutex>

#include "service/grpc/convert.h"
#include "service/grpc/probe.h"
#include "service/grpc/streams.h"

namespace ringq::grpcsvc {

namespace {

class PushStreamCall final
    : public grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>,
      public std::enable_shared_from_this<PushStreamCall> {
 public:
  PushStreamCall(engine::Engine& engine, const StreamLimits& limits, GrpcProbe* probe)
      : engine_(engine), limits_(limits), probe_(probe) {
    if (probe_ != nullptr) probe_->Started(Rpc::kPushStream);
  }

  void Begin() {
    self_ = shared_from_this();
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::unique_lock lock(mu_);
      read_eof_ = true;
      MaybeWriteOrFinish(lock);
      return;
    }
    const uint64_t received_ns = MonotonicNs();
    if (probe_ != nullptr) probe_->Received(in_.ByteSizeLong());
    const uint64_t seq = next_seq_++;  // reads are serial: no lock needed for next_seq_
    {
      // Counted before the answer can possibly be written.
      std::lock_guard lock(mu_);
      ++in_flight_;
    }
    engine::JobSpec spec;
    engine::Status s = FromProto(in_.job(), engine_.limits(), &spec);
    if (!s.ok()) {
      Answer(seq, s, {});
    } else {
      const uint32_t shard = engine_.ShardForQueue(spec.queue);
      auto self = shared_from_this();
      bool posted = engine_.Post(
          shard, [self, seq, received_ns, spec = std::move(spec)](engine::Shard& sh) mutable {
            auto res = sh.scheduler().Push(std::move(spec));
            if (!res.ok()) {
              self->Answer(seq, res.status(), {});
              return;
            }
            engine::PushResult pr = res.value();
            sh.AfterCommit([self, seq, pr, &sh, received_ns] {
              sh.scheduler().probe().PushAnswered(MonotonicNs() - received_ns, 1);
              self->Answer(seq, engine::Status::Ok(), pr);
            });
          });
      if (!posted) {
        Answer(seq, engine::ResourceExhausted("shard inbox is full; retry later"), {});
      }
    }
    std::unique_lock lock(mu_);
    if (finished_) return;
    if (in_flight_ < limits_.push_stream_in_flight_max) {
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
      FinishLocked(lock, grpc::Status::CANCELLED);
      return;
    }
    --in_flight_;
    if (read_paused_ && in_flight_ < limits_.push_stream_in_flight_max / 2) {
      read_paused_ = false;
      lock.unlock();
      StartRead(&in_);
      lock.lock();
    }
    MaybeWriteOrFinish(lock);
  }

  void OnCancel() override {
    std::unique_lock lock(mu_);
    FinishLocked(lock, grpc::Status::CANCELLED);
  }

  void OnDone() override {
    auto keep = std::move(self_);  // may free this at end of scope
  }

 private:
  // Any thread: the answer to request `seq`.
  void Answer(uint64_t seq, const engine::Status& s, engine::PushResult pr) {
    v1::PushStreamResponse resp;
    if (s.ok()) {
      resp.mutable_result()->set_id(pr.id);
      resp.mutable_result()->set_duplicate(pr.duplicate);
    } else {
      ToProto(s, resp.mutable_result()->mutable_error());
    }
    std::unique_lock lock(mu_);
    done_.emplace(seq, std::move(resp));
    MaybeWriteOrFinish(lock);
  }

  void MaybeWriteOrFinish(std::unique_lock<std::mutex>& lock) {
    if (finished_ || writing_) return;
    auto it = done_.find(next_write_);
    if (it != done_.end()) {
      out_ = std::move(it->second);
      done_.erase(it);
      ++next_write_;
      writing_ = true;
      lock.unlock();
      if (probe_ != nullptr) probe_->Sent(out_.ByteSizeLong());
      StartWrite(&out_);
      lock.lock();
      return;
    }
    if (read_eof_ && next_write_ == next_seq_) FinishLocked(lock, grpc::Status::OK);
  }

  void FinishLocked(std::unique_lock<std::mutex>& lock, grpc::Status status) {
    if (finished_) return;
    finished_ = true;
    lock.unlock();
    if (probe_ != nullptr) probe_->Finished(Rpc::kPushStream, status.error_code());
    Finish(status);
    lock.lock();
  }

  engine::Engine& engine_;
  const StreamLimits limits_;
  GrpcProbe* const probe_;
  std::shared_ptr<PushStreamCall> self_;
  v1::PushRequest in_;
  v1::PushStreamResponse out_;
  uint64_t next_seq_ = 0;  // reader thread only (reads are serial)

  std::mutex mu_;
  std::map<uint64_t, v1::PushStreamResponse> done_;  // answered, waiting for their turn
  uint64_t next_write_ = 0;
  uint32_t in_flight_ = 0;
  bool writing_ = false;
  bool read_paused_ = false;
  bool read_eof_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::PushRequest, v1::PushStreamResponse>* NewPushStream(
    engine::Engine& engine, const StreamLimits& limits, GrpcProbe* probe) {
  auto call = std::make_shared<PushStreamCall>(engine, limits, probe);
  call->Begin();
  return call.get();
}

}  // namespace ringq::grpcsvc
