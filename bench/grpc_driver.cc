// The gRPC Driver of ringq-bench: ringq.v1.Queue over grpc++'s callback API.
//
// Each Connection is its own channel with a local subchannel pool, so N
// connections are N TCP connections (gRPC would otherwise share one).
// Options are set explicitly (STYLE.md): message size limits, deadlines.
#include <grpcpp/grpcpp.h>
#include <time.h>

#include <condition_variable>
#include <deque>
#include <mutex>

#include "bench/driver.h"
#include "ringq/v1/queue.grpc.pb.h"

namespace ringq::bench {

namespace {

namespace v1 = ::ringq::v1;

// A subscription message may carry up to `credits` deliveries of up to 10 KiB
// each (plus the server's own limit of 1 MiB per payload): well under this.
constexpr int kMessageBytesMax = 256 << 20;
constexpr int kUnaryDeadlineMs = 30'000;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string StatusText(const grpc::Status& s) {
  return "grpc status " + std::to_string(s.error_code()) + ": " + s.error_message();
}

void Fill(const JobSeed& j, v1::JobSpec* spec) {
  spec->set_queue(j.queue.data(), j.queue.size());
  spec->set_payload(j.payload.data(), j.payload.size());
}

PushOutcome FromResult(const v1::PushResult& r) {
  PushOutcome o;
  if (r.has_error() && r.error().code() != 0) {
    o.error = "code " + std::to_string(r.error().code()) + ": " + r.error().message();
    return o;
  }
  o.ok = true;
  o.id = r.id();
  return o;
}

// Waits for `done` under `mu`; on timeout cancels the call and waits for its end
// (gRPC guarantees OnDone after TryCancel), so the reactor is never freed early.
template <typename Pred>
bool WaitOrCancel(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  grpc::ClientContext& ctx, int timeout_ms, Pred done) {
  if (cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), done)) return true;
  ctx.TryCancel();
  cv.wait(lock, done);
  return false;
}

class GrpcPushPipe final : public PushPipe,
                           public grpc::ClientBidiReactor<v1::PushRequest, v1::PushStreamResponse> {
 public:
  GrpcPushPipe(v1::Queue::Stub* stub, PushSink* sink) : sink_(sink) {
    stub->async()->PushStream(&ctx_, this);
    StartRead(&resp_);
    StartCall();
  }
  ~GrpcPushPipe() override {
    std::string ignored;
    if (!finished_) Close(1000, &ignored);
  }

  void Push(const JobSeed& job, uint64_t tag) override {
    std::unique_lock lock(mu_);
    if (ended_ || closing_) {
      lock.unlock();
      PushOutcome o;
      o.error = "push stream already ended";
      sink_->OnPushed(tag, o);
      return;
    }
    tags_.push_back(tag);
    Fill(job, queue_.emplace_back().mutable_job());
    if (!writing_) WriteNext(lock);
  }

  bool Close(int timeout_ms, std::string* error) override {
    std::unique_lock lock(mu_);
    closing_ = true;
    MaybeWritesDone(lock);
    if (!lock.owns_lock()) lock.lock();
    const bool in_time = WaitOrCancel(lock, cv_, ctx_, timeout_ms, [this] { return finished_; });
    if (!in_time) {
      *error = "push stream did not end within " + std::to_string(timeout_ms) + " ms";
      return false;
    }
    if (!status_.ok()) {
      *error = StatusText(status_);
      return false;
    }
    return true;
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok) return;  // the stream broke; OnDone answers what is left
    if (!queue_.empty()) {
      WriteNext(lock);
    } else {
      MaybeWritesDone(lock);
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    uint64_t tag;
    {
      std::lock_guard lock(mu_);
      assert(!tags_.empty());  // the server answers only what was sent
      tag = tags_.front();
      tags_.pop_front();
    }
    sink_->OnPushed(tag, FromResult(resp_.result()));
    StartRead(&resp_);
  }

  void OnDone(const grpc::Status& s) override {
    std::deque<uint64_t> orphans;
    {
      std::lock_guard lock(mu_);
      ended_ = true;
      status_ = s;
      orphans.swap(tags_);
    }
    PushOutcome o;
    o.error = "push stream ended: " + StatusText(s);
    for (uint64_t tag : orphans) sink_->OnPushed(tag, o);
    std::lock_guard lock(mu_);
    finished_ = true;
    cv_.notify_all();
  }

 private:
  // Precondition: lock held, no write in flight, queue not empty. Releases the lock.
  void WriteNext(std::unique_lock<std::mutex>& lock) {
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    StartWrite(&current_);
  }
  // Half-closes once everything queued is written. May release the lock.
  void MaybeWritesDone(std::unique_lock<std::mutex>& lock) {
    if (closing_ && !writing_ && queue_.empty() && !writes_done_ && !ended_) {
      writes_done_ = true;
      lock.unlock();
      StartWritesDone();
    }
  }

  PushSink* const sink_;
  grpc::ClientContext ctx_;
  v1::PushStreamResponse resp_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::PushRequest> queue_;  // waiting to be written
  v1::PushRequest current_;            // being written
  std::deque<uint64_t> tags_;          // sent or queued, not answered, in order
  bool writing_ = false, closing_ = false, writes_done_ = false, ended_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

class GrpcSubscription final
    : public Subscription,
      public grpc::ClientBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse> {
 public:
  GrpcSubscription(v1::Queue::Stub* stub, const std::vector<std::string>& queues, uint32_t credits,
                   DeliverySink* sink)
      : sink_(sink) {
    stub->async()->Subscribe(&ctx_, this);
    auto* open = write_.mutable_open();
    for (const auto& q : queues) open->add_queues(q);
    open->set_credits(credits);
    writing_ = true;
    StartWrite(&write_);
    StartRead(&resp_);
    StartCall();
  }
  ~GrpcSubscription() override {
    if (!finished_) Close(1000);
  }

  uint64_t Close(int timeout_ms) override {
    std::unique_lock lock(mu_);
    closing_ = true;
    MaybeWritesDone(lock);
    if (!lock.owns_lock()) lock.lock();
    WaitOrCancel(lock, cv_, ctx_, timeout_ms, [this] { return finished_; });
    return settle_errors_ + (status_.ok() ? 0 : 1);
  }

  uint64_t acks_sent() const override {
    std::lock_guard lock(mu_);
    return acks_sent_;
  }

  std::string error() const override {
    std::lock_guard lock(mu_);
    if (finished_ && !status_.ok()) return "subscription ended: " + StatusText(status_);
    return first_settle_error_;
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    const int n = resp_.deliveries_size();
    if (n > 0) {
      const int64_t now = NowNs();
      // Acks are queued before the sink sees the jobs: once the sink has
      // counted a job, a Close() half-closes only after its ack went out (a
      // dropped ack would release the job at the close, to be delivered again
      // on another stream: a duplicate the ledger reports).
      bool queued;
      {
        std::lock_guard lock(mu_);
        queued = !writes_done_;
        if (queued) {
          for (const auto& d : resp_.deliveries()) {
            auto* a = pending_.add_acks();
            a->set_id(d.job().id());
            a->set_lease_token(d.lease_token());
          }
        }
      }
      jobs_.clear();
      for (const auto& d : resp_.deliveries()) {
        jobs_.push_back(DeliveredJob{d.job().id(), d.job().queue(), d.job().payload()});
      }
      sink_->OnDeliveries(jobs_, now);
      std::unique_lock lock(mu_);
      if (queued && !writing_ && pending_.acks_size() > 0) FlushLocked(lock);
    }
    for (const auto& r : resp_.results()) {
      if (r.has_error() && r.error().code() != 0) {
        std::lock_guard lock(mu_);
        if (settle_errors_++ == 0) {
          first_settle_error_ = "settle of job " + std::to_string(r.id()) + ": code " +
                                std::to_string(r.error().code()) + " " + r.error().message();
        }
      }
    }
    StartRead(&resp_);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok) return;
    if (pending_.acks_size() > 0) {
      FlushLocked(lock);
    } else {
      MaybeWritesDone(lock);
    }
  }

  void OnDone(const grpc::Status& s) override {
    std::lock_guard lock(mu_);
    status_ = s;
    finished_ = true;
    cv_.notify_all();
  }

 private:
  // Sends every pending ack in one message. Releases the lock.
  void FlushLocked(std::unique_lock<std::mutex>& lock) {
    write_.Clear();
    write_.Swap(&pending_);
    acks_sent_ += write_.acks_size();
    writing_ = true;
    lock.unlock();
    StartWrite(&write_);
  }
  void MaybeWritesDone(std::unique_lock<std::mutex>& lock) {
    if (closing_ && !writing_ && pending_.acks_size() == 0 && !writes_done_ && !finished_) {
      writes_done_ = true;
      lock.unlock();
      StartWritesDone();
    }
  }

  DeliverySink* const sink_;
  grpc::ClientContext ctx_;
  v1::SubscribeResponse resp_;
  std::vector<DeliveredJob> jobs_;  // reused: one read at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;
  v1::SubscribeRequest write_;    // being written
  v1::SubscribeRequest pending_;  // acks gathered while a write is in flight
  bool writing_ = false, closing_ = false, writes_done_ = false, finished_ = false;
  uint64_t acks_sent_ = 0, settle_errors_ = 0;
  std::string first_settle_error_;
  grpc::Status status_;
};

struct UnaryPush {
  grpc::ClientContext ctx;
  v1::PushRequest req;
  v1::PushResponse resp;
};

struct UnaryBatch {
  grpc::ClientContext ctx;
  v1::PushBatchRequest req;
  v1::PushBatchResponse resp;
  std::vector<PushOutcome> outcomes;
};

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(kUnaryDeadlineMs));
}

class GrpcConnection final : public Connection {
 public:
  explicit GrpcConnection(std::shared_ptr<grpc::Channel> channel)
      : channel_(std::move(channel)), stub_(v1::Queue::NewStub(channel_)) {}

  void Push(const JobSeed& job, uint64_t tag, PushSink* sink) override {
    auto* c = new UnaryPush;
    SetDeadline(&c->ctx);
    Fill(job, c->req.mutable_job());
    stub_->async()->Push(&c->ctx, &c->req, &c->resp, [c, tag, sink](grpc::Status s) {
      PushOutcome o;
      if (s.ok()) {
        o.ok = true;
        o.id = c->resp.id();
      } else {
        o.error = StatusText(s);
      }
      sink->OnPushed(tag, o);
      delete c;
    });
  }

  void PushBatch(std::span<const JobSeed> jobs, uint64_t tag, BatchSink* sink) override {
    auto* c = new UnaryBatch;
    SetDeadline(&c->ctx);
    c->req.set_atomic(false);
    for (const auto& j : jobs) Fill(j, c->req.add_jobs());
    const size_t n = jobs.size();
    stub_->async()->PushBatch(&c->ctx, &c->req, &c->resp, [c, n, tag, sink](grpc::Status s) {
      c->outcomes.resize(n);
      if (!s.ok() || static_cast<size_t>(c->resp.results_size()) != n) {
        const std::string e = s.ok()
                                  ? "PushBatch answered " + std::to_string(c->resp.results_size()) +
                                        " results for " + std::to_string(n) + " jobs"
                                  : StatusText(s);
        for (auto& o : c->outcomes) o.error = e;
      } else {
        for (size_t i = 0; i < n; ++i) c->outcomes[i] = FromResult(c->resp.results(i));
      }
      sink->OnBatchPushed(tag, c->outcomes);
      delete c;
    });
  }

  std::unique_ptr<PushPipe> OpenPushPipe(PushSink* sink) override {
    return std::make_unique<GrpcPushPipe>(stub_.get(), sink);
  }

  std::unique_ptr<Subscription> Subscribe(const std::vector<std::string>& queues, uint32_t credits,
                                          DeliverySink* sink) override {
    return std::make_unique<GrpcSubscription>(stub_.get(), queues, credits, sink);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Queue::Stub> stub_;
};

class GrpcDriver final : public Driver {
 public:
  explicit GrpcDriver(std::string target) : target_(std::move(target)) {}
  std::string name() const override { return "grpc"; }

  std::unique_ptr<Connection> Connect(int timeout_ms, std::string* error) override {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one TCP connection per Connection
    args.SetMaxReceiveMessageSize(kMessageBytesMax);
    args.SetMaxSendMessageSize(kMessageBytesMax);
    auto channel = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
    if (!channel->WaitForConnected(deadline)) {
      *error = "cannot connect to " + target_ + " within " + std::to_string(timeout_ms) + " ms";
      return nullptr;
    }
    return std::make_unique<GrpcConnection>(std::move(channel));
  }

 private:
  std::string target_;
};

}  // namespace

std::unique_ptr<Driver> NewGrpcDriver(const std::string& target) {
  return std::make_unique<GrpcDriver>(target);
}

}  // namespace ringq::bench
