// The RQP Driver of ringq-bench: ringq.v1.Queue over RQP (proto/PROTOCOL.md)
// through the C++ client library (client/cpp, Options::protocol = kRqp).
//
// Each Connection is one ringq::client::Client: one TCP connection with its
// reader and writer threads. Completions, hence the sinks, run on the reader
// thread; a sink that starts the next operation from there never blocks (the
// library queues it when the connection's in-flight bound is reached).
//
// What each Driver operation is over RQP:
//   Push          one PUSH frame, answered by its request id;
//   PushBatch     one PUSH_BATCH frame (atomic = false, as the gRPC driver);
//   PushPipe      pipelined PUSH frames on the connection (RQP has no
//                 PushStream: PROTOCOL.md says pipelined PUSHes are the same
//                 thing); answers may come in any order, matched by tag;
//   Subscribe     SUBSCRIBE_OPEN; acks are issued inside the delivery handler
//                 and leave as one SUBSCRIBE_UPDATE when it returns (at most
//                 kSettleBatchItemsMax per update).
// Options are set explicitly (STYLE.md): call deadline, in-flight bound, send
// buffer, settle batching.
#include <time.h>

#include <condition_variable>
#include <mutex>
#include <utility>

#include "bench/driver.h"
#include "client/cpp/client.h"

namespace ringq::bench {

namespace {

namespace v1 = ::ringq::v1;
using client::Client;
using client::Status;
using client::StatusCode;

// As the gRPC driver's unary deadline: load.cc bounds its wait for the last
// answers on it (every call ends within it, answered or DEADLINE_EXCEEDED).
constexpr uint32_t kCallTimeoutMs = 30'000;
// Requests in flight per connection (the server's default inflight_max too).
// The pipelined rows keep 512 in flight, the open loop at most this.
constexpr uint32_t kInflightMax = 1024;
constexpr size_t kSendBufferBytesMax = 16u << 20;
// Acks per SUBSCRIBE_UPDATE (the server's --batch-max, default 10,000, bounds it).
constexpr uint32_t kSettleBatchItemsMax = 1000;
constexpr uint32_t kSettleBatchBytesMax = 1u << 20;
// A stream that does not end after Cancel within this is reported (and left).
constexpr uint32_t kCancelWaitMs = 10'000;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
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

PushOutcome FromPush(const Status& s, const v1::PushResponse& r) {
  PushOutcome o;
  if (!s.ok()) {
    o.error = "rqp " + s.ToString();
    return o;
  }
  o.ok = true;
  o.id = r.id();
  return o;
}

// Codes the client library makes up for a broken connection or call, as
// opposed to the server refusing one push: the RQP equivalent of a gRPC
// PushStream ending with an error.
bool IsTransportError(const Status& s) {
  return s.code == StatusCode::kUnavailable || s.code == StatusCode::kCancelled ||
         s.code == StatusCode::kDeadlineExceeded || s.code == StatusCode::kInternal;
}

class RqpPushPipe final : public PushPipe {
 public:
  RqpPushPipe(Client* client, PushSink* sink)
      : client_(client), sink_(sink), state_(std::make_shared<State>()) {}
  ~RqpPushPipe() override {
    std::string ignored;
    Close(kCallTimeoutMs + 5'000, &ignored);  // every call ends within its deadline
  }

  void Push(const JobSeed& job, uint64_t tag) override {
    bool closed;
    {
      std::lock_guard lock(state_->mu);
      closed = state_->closed;
      if (!closed) ++state_->unanswered;
    }
    if (closed) {  // outside the lock: the sink may push again
      PushOutcome o;
      o.error = "push pipe already closed";
      sink_->OnPushed(tag, o);
      return;
    }
    v1::PushRequest req;
    Fill(job, req.mutable_job());
    // The state, not `this`: the callback may outlive a pipe whose Close timed out.
    client_->Push(std::move(req),
                  [state = state_, sink = sink_, tag](Status s, v1::PushResponse r) {
                    sink->OnPushed(tag, FromPush(s, r));
                    std::lock_guard lock(state->mu);
                    if (IsTransportError(s) && state->error.empty())
                      state->error = "rqp " + s.ToString();
                    if (--state->unanswered == 0) state->cv.notify_all();
                  });
  }

  bool Close(int timeout_ms, std::string* error) override {
    std::unique_lock lock(state_->mu);
    state_->closed = true;
    if (!state_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                             [&] { return state_->unanswered == 0; })) {
      *error = std::to_string(state_->unanswered) + " pipelined pushes unanswered after " +
               std::to_string(timeout_ms) + " ms";
      return false;
    }
    if (!state_->error.empty()) {
      *error = state_->error;
      return false;
    }
    return true;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    uint64_t unanswered = 0;  // sent, callback not yet returned
    bool closed = false;
    std::string error;  // the first transport error
  };
  Client* const client_;
  PushSink* const sink_;
  const std::shared_ptr<State> state_;
};

class RqpSubscription final : public Subscription {
 public:
  RqpSubscription(Client* client, const std::vector<std::string>& queues, uint32_t credits,
                  DeliverySink* sink)
      : state_(std::make_shared<State>()) {
    state_->sink = sink;
    v1::SubscribeOpen open;
    for (const auto& q : queues) open.add_queues(q);
    open.set_credits(credits);
    client::SubscriptionHandlers h;
    std::weak_ptr<State> weak = state_;  // the handlers live in the library's core
    h.on_deliveries = [weak](std::vector<v1::Delivery> ds) {
      if (auto s = weak.lock()) s->OnDeliveries(ds);
    };
    h.on_results = [weak](std::vector<v1::SettleResult> rs) {
      if (auto s = weak.lock()) s->OnResults(rs);
    };
    h.on_end = [weak](Status st) {
      if (auto s = weak.lock()) s->OnEnd(std::move(st));
    };
    sub_ = client->Subscribe(open, std::move(h));
    state_->Attach(sub_.get());
  }

  ~RqpSubscription() override {
    if (!sub_->ended()) Close(kCancelWaitMs);
    // sub_'s destructor cancels and waits if it still runs; no handler runs after.
  }

  uint64_t Close(int timeout_ms) override {
    sub_->Close();
    Status st;
    if (!sub_->WaitEnd(static_cast<uint32_t>(timeout_ms), &st)) {
      sub_->Cancel();
      std::lock_guard lock(state_->mu);
      if (state_->first_error.empty()) {
        state_->first_error =
            "subscription did not end within " + std::to_string(timeout_ms) + " ms of its close";
      }
      return state_->settle_errors + 1;
    }
    std::lock_guard lock(state_->mu);
    return state_->settle_errors + (st.ok() ? 0 : 1);
  }

  uint64_t acks_sent() const override {
    std::lock_guard lock(state_->mu);
    return state_->acks_sent;
  }

  std::string error() const override {
    std::lock_guard lock(state_->mu);
    if (state_->ended && !state_->end.ok())
      return "subscription ended: rqp " + state_->end.ToString();
    return state_->first_error;
  }

 private:
  // Shared with the handlers, which run on the connection's reader thread,
  // one at a time for this subscription.
  struct State {
    DeliverySink* sink = nullptr;
    std::vector<DeliveredJob> jobs;  // reused: handlers never run concurrently
    mutable std::mutex mu;
    client::Subscription* sub = nullptr;               // set once Subscribe returned
    std::vector<std::pair<uint64_t, uint64_t>> early;  // (id, token) delivered before that
    uint64_t acks_sent = 0, settle_errors = 0;
    std::string first_error;
    bool ended = false;
    Status end;

    void OnDeliveries(const std::vector<v1::Delivery>& ds) {
      const int64_t now = NowNs();
      // Acks first, sink second: issued inside the handler, they leave as one
      // update when it returns either way, and once the sink has counted a
      // job a Close() (which refuses later acks) cannot strand its ack: a
      // stranded ack would release the job at the close, to be delivered
      // again on another stream (a duplicate the ledger reports).
      AckAll(ds);
      jobs.clear();
      for (const auto& d : ds) {
        jobs.push_back(DeliveredJob{d.job().id(), d.job().queue(), d.job().payload()});
      }
      sink->OnDeliveries(jobs, now);
    }

    void AckAll(const std::vector<v1::Delivery>& ds) {
      client::Subscription* s;
      {
        std::lock_guard lock(mu);
        s = sub;
        if (s == nullptr) {  // the first event beat Subscribe's return: ack in Attach
          for (const auto& d : ds) early.emplace_back(d.job().id(), d.lease_token());
          return;
        }
      }
      // Inside the handler: these coalesce into one update sent when it returns.
      uint64_t sent = 0;
      for (const auto& d : ds) sent += s->Ack(d.job().id(), d.lease_token()) ? 1 : 0;
      std::lock_guard lock(mu);
      acks_sent += sent;
    }

    void OnResults(const std::vector<v1::SettleResult>& rs) {
      std::lock_guard lock(mu);
      for (const auto& r : rs) {
        if (!r.has_error() || r.error().code() == 0) continue;
        if (settle_errors++ == 0) {
          first_error = "settle of job " + std::to_string(r.id()) + ": code " +
                        std::to_string(r.error().code()) + " " + r.error().message();
        }
      }
    }

    void OnEnd(Status st) {
      std::lock_guard lock(mu);
      ended = true;
      end = std::move(st);
    }

    void Attach(client::Subscription* s) {
      std::vector<std::pair<uint64_t, uint64_t>> due;
      {
        std::lock_guard lock(mu);
        sub = s;
        due.swap(early);
      }
      uint64_t sent = 0;
      for (const auto& [id, token] : due) sent += s->Ack(id, token) ? 1 : 0;
      std::lock_guard lock(mu);
      acks_sent += sent;
    }
  };

  const std::shared_ptr<State> state_;
  std::unique_ptr<client::Subscription> sub_;
};

class RqpConnection final : public Connection {
 public:
  explicit RqpConnection(std::unique_ptr<Client> client) : client_(std::move(client)) {}

  void Push(const JobSeed& job, uint64_t tag, PushSink* sink) override {
    v1::PushRequest req;
    Fill(job, req.mutable_job());
    client_->Push(std::move(req), [tag, sink](Status s, v1::PushResponse r) {
      sink->OnPushed(tag, FromPush(s, r));
    });
  }

  void PushBatch(std::span<const JobSeed> jobs, uint64_t tag, BatchSink* sink) override {
    v1::PushBatchRequest req;
    req.set_atomic(false);
    req.mutable_jobs()->Reserve(static_cast<int>(jobs.size()));
    for (const auto& j : jobs) Fill(j, req.add_jobs());
    const size_t n = jobs.size();
    client_->PushBatch(std::move(req), [n, tag, sink](Status s, v1::PushBatchResponse r) {
      std::vector<PushOutcome> outcomes(n);
      if (!s.ok() || static_cast<size_t>(r.results_size()) != n) {
        const std::string e = s.ok() ? "PUSH_BATCH answered " + std::to_string(r.results_size()) +
                                           " results for " + std::to_string(n) + " jobs"
                                     : "rqp " + s.ToString();
        for (auto& o : outcomes) o.error = e;
      } else {
        for (size_t i = 0; i < n; ++i) outcomes[i] = FromResult(r.results(static_cast<int>(i)));
      }
      sink->OnBatchPushed(tag, outcomes);
    });
  }

  std::unique_ptr<PushPipe> OpenPushPipe(PushSink* sink) override {
    return std::make_unique<RqpPushPipe>(client_.get(), sink);
  }

  std::unique_ptr<Subscription> Subscribe(const std::vector<std::string>& queues, uint32_t credits,
                                          DeliverySink* sink) override {
    return std::make_unique<RqpSubscription>(client_.get(), queues, credits, sink);
  }

 private:
  std::unique_ptr<Client> client_;
};

class RqpDriver final : public Driver {
 public:
  explicit RqpDriver(std::string target) : target_(std::move(target)) {}
  std::string name() const override { return "rqp"; }

  std::unique_ptr<Connection> Connect(int timeout_ms, std::string* error) override {
    client::Options o;
    o.address = target_;
    o.protocol = client::Protocol::kRqp;
    o.connect_timeout_ms = static_cast<uint32_t>(timeout_ms);
    o.call_timeout_ms = kCallTimeoutMs;
    o.inflight_max = kInflightMax;
    o.settle_batch_items_max = kSettleBatchItemsMax;
    o.settle_batch_bytes_max = kSettleBatchBytesMax;
    o.rqp_send_buffer_bytes_max = kSendBufferBytesMax;
    std::unique_ptr<Client> c;
    const Status st = Client::Connect(o, &c);
    if (!st.ok()) {
      *error = "cannot connect to rqp://" + target_ + ": " + st.ToString();
      return nullptr;
    }
    return std::make_unique<RqpConnection>(std::move(c));
  }

 private:
  std::string target_;
};

}  // namespace

std::unique_ptr<Driver> NewRqpDriver(const std::string& target) {
  return std::make_unique<RqpDriver>(target);
}

}  // namespace ringq::bench
