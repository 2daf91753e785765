// End-to-end tests of the C++ client library (client/cpp) against the real
// ringqd on free loopback ports. Every test body runs twice, over gRPC and
// over RQP (the same API, so the same expectations); each opens with its
// goal. The RQP instances skip while the server under test serves no RQP.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "client/cpp/client.h"
#include "tests/support/server_process.h"

namespace ringq {
namespace {

using namespace std::chrono_literals;
using client::Client;
using client::Protocol;
using client::Status;
using client::StatusCode;

#define ASSERT_OK(expr)                      \
  do {                                       \
    const Status _st = (expr);               \
    ASSERT_TRUE(_st.ok()) << _st.ToString(); \
  } while (0)

// Waits (bounded) for a predicate guarded by a mutex.
class Latch {
 public:
  void Notify(const std::function<void()>& change) {
    {
      std::lock_guard lock(mu_);
      change();
    }
    cv_.notify_all();
  }
  bool WaitFor(std::chrono::milliseconds timeout, const std::function<bool()>& done) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, done);
  }
  std::mutex& mu() { return mu_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

std::string Name(const ::testing::TestParamInfo<Protocol>& info) {
  return info.param == Protocol::kGrpc ? "grpc" : "rqp";
}

class ClientApiTest : public ::testing::TestWithParam<Protocol> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<testing::ServerProcess>(RINGQD_PATH,
                                                       std::vector<std::string>{"--shards=2"});
    ASSERT_TRUE(server_->Start()) << server_->Log();
    ASSERT_GT(server_->rqp_port(), 0) << "no \"RQP listening on\" line: " << server_->Log();
    options_.protocol = GetParam();
    options_.address =
        GetParam() == Protocol::kGrpc ? server_->grpc_address() : server_->rqp_address();
    options_.call_timeout_ms = 20'000;
    ASSERT_OK(Client::Connect(options_, &client_));
  }

  uint64_t Push(const std::string& queue, const std::string& payload, uint32_t max_attempts = 0,
                uint32_t lease_ms = 0) {
    v1::PushRequest req;
    req.mutable_job()->set_queue(queue);
    req.mutable_job()->set_payload(payload);
    req.mutable_job()->set_max_attempts(max_attempts);
    req.mutable_job()->set_lease_ms(lease_ms);
    v1::PushResponse resp;
    const Status st = client_->Push(req, &resp);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return resp.id();
  }

  v1::Job Get(uint64_t id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    const Status st = client_->GetJob(req, &job);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return job;
  }

  v1::QueueStats Stats(const std::string& queue) {
    v1::StatsRequest req;
    req.set_queue(queue);
    v1::StatsResponse resp;
    const Status st = client_->Stats(req, &resp);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return resp.queues_size() > 0 ? resp.queues(0) : v1::QueueStats();
  }

  client::Options options_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

// The basic cycle through the blocking layer: push, get, fetch, ack, and the
// job ends completed with the worker's result.
TEST_P(ClientApiTest, PushFetchAckRoundTrip) {
  const uint64_t id = Push("rt", "hello");
  ASSERT_NE(id, 0u);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_WAITING);

  v1::FetchRequest fetch;
  fetch.set_queue("rt");
  fetch.set_max(1);
  fetch.set_wait_ms(2000);
  v1::FetchResponse got;
  ASSERT_OK(client_->Fetch(fetch, &got));
  ASSERT_EQ(got.deliveries_size(), 1);
  const v1::Delivery& d = got.deliveries(0);
  EXPECT_EQ(d.job().id(), id);
  EXPECT_EQ(d.job().payload(), "hello");
  EXPECT_EQ(d.job().attempts(), 1u);

  v1::AckRequest ack;
  ack.set_id(id);
  ack.set_lease_token(d.lease_token());
  ack.set_result("done");
  v1::AckResponse acked;
  ASSERT_OK(client_->Ack(ack, &acked));
  const v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(job.result(), "done");
}

// 10,000 async pushes issued back to back (far more than inflight_max, so
// the gate blocks the producer) are all answered, each once, with distinct
// ids, and the queue holds them all. Prints the rate.
TEST_P(ClientApiTest, PipelinedAsyncPushesAllAnswered) {
  constexpr int kPushes = 10'000;
  Latch latch;
  int answered = 0, failed = 0;
  std::set<uint64_t> ids;
  std::string first_error;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kPushes; ++i) {
    v1::PushRequest req;
    req.mutable_job()->set_queue(i % 2 ? "pipe-a" : "pipe-b");
    req.mutable_job()->set_payload(std::to_string(i));
    client_->Push(std::move(req), [&](Status st, v1::PushResponse resp) {
      latch.Notify([&] {
        ++answered;
        if (!st.ok()) {
          if (failed++ == 0) first_error = st.ToString();
        } else {
          ids.insert(resp.id());
        }
      });
    });
  }
  ASSERT_TRUE(latch.WaitFor(60s, [&] { return answered == kPushes; }))
      << answered << " of " << kPushes << " answered";
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard lock(latch.mu());
  EXPECT_EQ(failed, 0) << first_error;
  EXPECT_EQ(ids.size(), static_cast<size_t>(kPushes));
  std::printf("[ %s ] %d pipelined async pushes (durability sync) in %.3f s: %.0f pushes/s\n",
              Name({GetParam(), 0}).c_str(), kPushes, s, kPushes / s);
  EXPECT_EQ(Stats("pipe-a").waiting() + Stats("pipe-b").waiting(), uint64_t{kPushes});
}

// PushBatch answers each item: valid ones are pushed, an invalid one gets
// its own error (non-atomic); an atomic batch with a bad item pushes nothing.
TEST_P(ClientApiTest, PushBatch) {
  v1::PushBatchRequest batch;
  for (int i = 0; i < 5; ++i) {
    auto* j = batch.add_jobs();
    j->set_queue("batch");
    j->set_payload("p" + std::to_string(i));
  }
  batch.mutable_jobs(2)->set_queue("");  // invalid
  v1::PushBatchResponse resp;
  ASSERT_OK(client_->PushBatch(batch, &resp));
  ASSERT_EQ(resp.results_size(), 5);
  for (int i = 0; i < 5; ++i) {
    if (i == 2) {
      EXPECT_EQ(resp.results(i).error().code(), uint32_t(StatusCode::kInvalidArgument));
      EXPECT_EQ(resp.results(i).id(), 0u);
    } else {
      EXPECT_FALSE(resp.results(i).has_error()) << resp.results(i).error().message();
      EXPECT_NE(resp.results(i).id(), 0u);
    }
  }
  EXPECT_EQ(Stats("batch").waiting(), 4u);

  batch.set_atomic(true);
  const Status st = client_->PushBatch(batch, &resp);
  EXPECT_EQ(st.code, StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_EQ(Stats("batch").waiting(), 4u);
}

// Errors carry the server's code and a message, through both layers:
// INVALID_ARGUMENT for an empty queue name, NOT_FOUND for an unknown job,
// FAILED_PRECONDITION for a stale lease token.
TEST_P(ClientApiTest, ErrorsCarryCodes) {
  v1::PushRequest bad;
  bad.mutable_job()->set_queue("");
  v1::PushResponse pr;
  Status st = client_->Push(bad, &pr);
  EXPECT_EQ(st.code, StatusCode::kInvalidArgument);
  EXPECT_NE(st.message.find("queue"), std::string::npos) << st.message;

  v1::GetJobRequest get;
  get.set_id(987654321);
  v1::Job job;
  st = client_->GetJob(get, &job);
  EXPECT_EQ(st.code, StatusCode::kNotFound) << st.ToString();

  // The same through the async layer.
  Latch latch;
  bool done = false;
  Status async_st;
  client_->GetJob(get, [&](Status s, v1::Job) {
    latch.Notify([&] {
      async_st = s;
      done = true;
    });
  });
  ASSERT_TRUE(latch.WaitFor(10s, [&] { return done; }));
  EXPECT_EQ(async_st.code, StatusCode::kNotFound);

  const uint64_t id = Push("errs", "x");
  v1::FetchRequest fetch;
  fetch.set_queue("errs");
  fetch.set_max(1);
  fetch.set_wait_ms(1000);
  v1::FetchResponse got;
  ASSERT_OK(client_->Fetch(fetch, &got));
  ASSERT_EQ(got.deliveries_size(), 1);
  v1::AckRequest ack;
  ack.set_id(id);
  ack.set_lease_token(got.deliveries(0).lease_token() + 1);
  v1::AckResponse ar;
  st = client_->Ack(ack, &ar);
  EXPECT_EQ(st.code, StatusCode::kFailedPrecondition) << st.ToString();
}

// Admin calls: pause stops delivery and shows in stats, resume restores it;
// a job failed with max_attempts=1 is dead, listed, retried, failed again
// and purged; cancel reports the previous state; queues are listed.
TEST_P(ClientApiTest, AdminAndDeadLetters) {
  v1::QueueRequest q;
  q.set_queue("adm");
  v1::PauseResponse paused;
  ASSERT_OK(client_->Pause(q, &paused));
  const uint64_t id = Push("adm", "a", /*max_attempts=*/1);
  EXPECT_TRUE(Stats("adm").paused());
  v1::FetchRequest fetch;
  fetch.set_queue("adm");
  fetch.set_max(1);
  fetch.set_wait_ms(200);
  v1::FetchResponse got;
  ASSERT_OK(client_->Fetch(fetch, &got));
  EXPECT_EQ(got.deliveries_size(), 0);
  v1::ResumeResponse resumed;
  ASSERT_OK(client_->Resume(q, &resumed));
  EXPECT_FALSE(Stats("adm").paused());

  auto fail_it = [&] {
    fetch.set_wait_ms(2000);
    ASSERT_OK(client_->Fetch(fetch, &got));
    ASSERT_EQ(got.deliveries_size(), 1);
    v1::FailRequest fail;
    fail.set_id(id);
    fail.set_lease_token(got.deliveries(0).lease_token());
    fail.set_error("boom");
    v1::FailResponse fr;
    ASSERT_OK(client_->Fail(fail, &fr));
    EXPECT_EQ(fr.state(), v1::JOB_STATE_DEAD);
  };
  fail_it();
  v1::ListDeadRequest list;
  list.set_queue("adm");
  v1::ListDeadResponse dead;
  ASSERT_OK(client_->ListDead(list, &dead));
  ASSERT_EQ(dead.jobs_size(), 1);
  EXPECT_EQ(dead.jobs(0).id(), id);
  EXPECT_EQ(dead.jobs(0).last_error(), "boom");

  v1::DeadSelector sel;
  sel.set_queue("adm");
  v1::RetryDeadResponse retried;
  ASSERT_OK(client_->RetryDead(sel, &retried));
  EXPECT_EQ(retried.count(), 1u);
  fail_it();
  v1::PurgeDeadResponse purged;
  ASSERT_OK(client_->PurgeDead(sel, &purged));
  EXPECT_EQ(purged.count(), 1u);

  const uint64_t other = Push("adm", "b");
  v1::CancelRequest cancel;
  cancel.set_id(other);
  cancel.set_reason("test");
  v1::CancelResponse cr;
  ASSERT_OK(client_->Cancel(cancel, &cr));
  EXPECT_EQ(cr.previous_state(), v1::JOB_STATE_WAITING);
  EXPECT_EQ(Get(other).state(), v1::JOB_STATE_CANCELLED);

  v1::ListQueuesResponse queues;
  ASSERT_OK(client_->ListQueues(v1::ListQueuesRequest(), &queues));
  bool found = false;
  for (const auto& qs : queues.queues()) found |= qs.queue() == "adm";
  EXPECT_TRUE(found);
}

// A subscriber with 4 credits receives exactly the 40 pushed jobs (two
// queues), never more than its credits beyond what it acked (a credit comes
// back when the server receives the ack, possibly before its result), and
// acks each from its handler; every ack is answered without error; Close() then ends the stream
// with OK and stats show all 40 completed, none waiting or active.
TEST_P(ClientApiTest, SubscribeWithCreditsAcksExactlyThePushedJobs) {
  constexpr int kJobs = 40;
  constexpr uint32_t kCredits = 4;
  std::set<std::string> pushed;
  for (int i = 0; i < kJobs; ++i) {
    const std::string p = "job" + std::to_string(i);
    Push(i % 2 ? "sub-a" : "sub-b", p);
    pushed.insert(p);
  }
  Latch latch;
  std::set<std::string> seen;
  int duplicates = 0, results = 0, result_errors = 0;
  int delivered = 0, acks_sent = 0, overdrawn_max = 0;
  std::atomic<client::Subscription*> self{nullptr};
  client::SubscriptionHandlers h;
  h.on_deliveries = [&](std::vector<v1::Delivery> ds) {
    latch.Notify([&] {
      for (const auto& d : ds) {
        if (!seen.insert(d.job().payload()).second) ++duplicates;
      }
      delivered += static_cast<int>(ds.size());
      overdrawn_max = std::max(overdrawn_max, delivered - acks_sent);
    });
    while (self.load() == nullptr) std::this_thread::yield();  // set right after Subscribe
    for (const auto& d : ds) {
      EXPECT_TRUE(self.load()->Ack(d.job().id(), d.lease_token(), "ok"));
      latch.Notify([&] { ++acks_sent; });
    }
  };
  h.on_results = [&](std::vector<v1::SettleResult> rs) {
    latch.Notify([&] {
      for (const auto& r : rs) {
        ++results;
        if (r.has_error()) ++result_errors;
        EXPECT_EQ(r.op(), v1::SETTLE_OP_ACK);
      }
    });
  };
  v1::SubscribeOpen open;
  open.add_queues("sub-a");
  open.add_queues("sub-b");
  open.set_credits(kCredits);
  auto sub = client_->Subscribe(open, h);
  self.store(sub.get());
  ASSERT_TRUE(latch.WaitFor(30s, [&] { return results == kJobs; })) << results << " results";
  sub->Close();
  Status end;
  ASSERT_TRUE(sub->WaitEnd(10'000, &end));
  EXPECT_TRUE(end.ok()) << end.ToString();
  EXPECT_FALSE(sub->Ack(1, 1));  // nothing is sent after the end
  {
    std::lock_guard lock(latch.mu());
    EXPECT_EQ(results, kJobs);
    EXPECT_EQ(result_errors, 0);
    EXPECT_EQ(duplicates, 0);
    EXPECT_EQ(seen, pushed);
    EXPECT_LE(overdrawn_max, static_cast<int>(kCredits));
  }
  const v1::QueueStats a = Stats("sub-a"), b = Stats("sub-b");
  EXPECT_EQ(a.completed_total() + b.completed_total(), uint64_t{kJobs});
  EXPECT_EQ(a.waiting() + a.active() + b.waiting() + b.active(), 0u);
}

// Close with jobs un-acked releases them to the queue at once (not after
// their 60 s lease): a Fetch gets them right away, their attempt counted.
TEST_P(ClientApiTest, CloseReleasesUnackedJobs) {
  for (int i = 0; i < 3; ++i) Push("rel", std::to_string(i), 0, /*lease_ms=*/60'000);
  Latch latch;
  int delivered = 0;
  client::SubscriptionHandlers h;
  h.on_deliveries = [&](std::vector<v1::Delivery> ds) {
    latch.Notify([&] { delivered += static_cast<int>(ds.size()); });
  };
  v1::SubscribeOpen open;
  open.add_queues("rel");
  open.set_credits(3);
  auto sub = client_->Subscribe(open, h);
  ASSERT_TRUE(latch.WaitFor(10s, [&] { return delivered == 3; })) << delivered;
  EXPECT_EQ(Stats("rel").active(), 3u);
  sub->Close();
  Status end;
  ASSERT_TRUE(sub->WaitEnd(10'000, &end));
  EXPECT_TRUE(end.ok()) << end.ToString();

  v1::FetchRequest fetch;
  fetch.set_queue("rel");
  fetch.set_max(3);
  fetch.set_wait_ms(3000);
  v1::FetchResponse got;
  ASSERT_OK(client_->Fetch(fetch, &got));
  ASSERT_EQ(got.deliveries_size(), 3);
  for (const auto& d : got.deliveries()) EXPECT_EQ(d.job().attempts(), 2u);
}

// Destroying a Subscription without Close cancels it: on_end runs (before
// the destructor returns) and the leased job goes back to the queue.
TEST_P(ClientApiTest, DestroyingASubscriptionCancelsIt) {
  Push("drop", "x", 0, 60'000);
  Latch latch;
  int delivered = 0;
  bool ended = false;
  client::SubscriptionHandlers h;
  h.on_deliveries = [&](std::vector<v1::Delivery> ds) {
    latch.Notify([&] { delivered += static_cast<int>(ds.size()); });
  };
  h.on_end = [&](Status) { latch.Notify([&] { ended = true; }); };
  v1::SubscribeOpen open;
  open.add_queues("drop");
  open.set_credits(1);
  auto sub = client_->Subscribe(open, h);
  ASSERT_TRUE(latch.WaitFor(10s, [&] { return delivered == 1; }));
  sub.reset();
  {
    std::lock_guard lock(latch.mu());
    EXPECT_TRUE(ended);
  }
  v1::FetchRequest fetch;
  fetch.set_queue("drop");
  fetch.set_max(1);
  fetch.set_wait_ms(3000);
  v1::FetchResponse got;
  ASSERT_OK(client_->Fetch(fetch, &got));
  EXPECT_EQ(got.deliveries_size(), 1);
}

// An open the server refuses (0 credits) ends the subscription with
// INVALID_ARGUMENT; nothing is delivered.
TEST_P(ClientApiTest, BadOpenEndsWithInvalidArgument) {
  v1::SubscribeOpen open;
  open.add_queues("q");
  open.set_credits(0);
  auto sub = client_->Subscribe(open, {});
  Status end;
  ASSERT_TRUE(sub->WaitEnd(10'000, &end));
  EXPECT_EQ(end.code, StatusCode::kInvalidArgument) << end.ToString();
}

// When the server dies, a call in flight (a waiting Fetch) fails with
// UNAVAILABLE and an open subscription ends with UNAVAILABLE.
TEST_P(ClientApiTest, ServerLossFailsCallsInFlight) {
  Latch latch;
  bool fetched = false, ended = false;
  Status fetch_st, end_st;
  v1::FetchRequest fetch;
  fetch.set_queue("idle");
  fetch.set_max(1);
  fetch.set_wait_ms(10'000);
  client_->Fetch(fetch, [&](Status st, v1::FetchResponse) {
    latch.Notify([&] {
      fetched = true;
      fetch_st = st;
    });
  });
  client::SubscriptionHandlers h;
  h.on_end = [&](Status st) {
    latch.Notify([&] {
      ended = true;
      end_st = st;
    });
  };
  v1::SubscribeOpen open;
  open.add_queues("idle2");
  open.set_credits(1);
  auto sub = client_->Subscribe(open, h);
  std::this_thread::sleep_for(300ms);  // both reach the server
  server_->Kill();
  ASSERT_TRUE(latch.WaitFor(15s, [&] { return fetched && ended; }));
  std::lock_guard lock(latch.mu());
  EXPECT_EQ(fetch_st.code, StatusCode::kUnavailable) << fetch_st.ToString();
  EXPECT_EQ(end_st.code, StatusCode::kUnavailable) << end_st.ToString();
}

// A closed port: Connect fails with UNAVAILABLE, quickly.
TEST_P(ClientApiTest, ConnectToClosedPortIsUnavailable) {
  client_.reset();
  server_->Stop();
  client::Options o = options_;
  o.connect_timeout_ms = 3000;
  std::unique_ptr<Client> c;
  const auto start = std::chrono::steady_clock::now();
  const Status st = Client::Connect(o, &c);
  EXPECT_EQ(st.code, StatusCode::kUnavailable) << st.ToString();
  EXPECT_EQ(c, nullptr);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

INSTANTIATE_TEST_SUITE_P(Wire, ClientApiTest, ::testing::Values(Protocol::kGrpc, Protocol::kRqp),
                         Name);

}  // namespace
}  // namespace ringq
