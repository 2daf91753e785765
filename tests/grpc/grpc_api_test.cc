// End-to-end tests of the gRPC API: the real ringqd binary on a free loopback
// port, driven by the generated C++ client. Each test opens with its goal.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "ringq/v1/queue.grpc.pb.h"
#include "tests/support/server_process.h"

namespace ringq {
namespace {

using namespace std::chrono_literals;
using grpc::StatusCode;

class GrpcApiTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({"--shards=2"}); }

  void StartServer(std::vector<std::string> flags) {
    server_ = std::make_unique<testing::ServerProcess>(RINGQD_PATH, std::move(flags));
    ASSERT_TRUE(server_->Start()) << server_->Log();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(128 << 20);
    args.SetMaxSendMessageSize(128 << 20);
    channel_ = grpc::CreateCustomChannel(server_->grpc_address(),
                                         grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Queue::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Ctx(std::chrono::milliseconds timeout = 10s) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + timeout);
    return ctx;
  }

  uint64_t Push(const std::string& queue, const std::string& payload, int priority = 0,
                uint32_t max_attempts = 0) {
    v1::PushRequest req;
    req.mutable_job()->set_queue(queue);
    req.mutable_job()->set_payload(payload);
    req.mutable_job()->set_priority(priority);
    req.mutable_job()->set_max_attempts(max_attempts);
    req.mutable_job()->mutable_backoff()->set_kind(v1::BACKOFF_KIND_FIXED);
    req.mutable_job()->mutable_backoff()->set_base_ms(10);
    v1::PushResponse resp;
    auto st = stub_->Push(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.id();
  }

  v1::Job Get(uint64_t id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    auto st = stub_->GetJob(Ctx().get(), req, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }

  v1::FetchResponse Fetch(const std::string& queue, uint32_t max, uint32_t wait_ms = 0) {
    v1::FetchRequest req;
    req.set_queue(queue);
    req.set_max(max);
    req.set_wait_ms(wait_ms);
    v1::FetchResponse resp;
    auto st = stub_->Fetch(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Queue::Stub> stub_;
};

// A pushed job is readable with GetJob, waiting, with its fields as sent.
TEST_F(GrpcApiTest, PushThenGet) {
  v1::PushRequest req;
  auto* j = req.mutable_job();
  j->set_queue("emails");
  j->set_payload("hello");
  j->set_priority(7);
  (*j->mutable_headers())["trace"] = "abc";
  v1::PushResponse resp;
  ASSERT_TRUE(stub_->Push(Ctx().get(), req, &resp).ok());
  ASSERT_NE(resp.id(), 0u);
  EXPECT_FALSE(resp.duplicate());
  v1::Job job = Get(resp.id());
  EXPECT_EQ(job.queue(), "emails");
  EXPECT_EQ(job.payload(), "hello");
  EXPECT_EQ(job.priority(), 7);
  EXPECT_EQ(job.state(), v1::JOB_STATE_WAITING);
  EXPECT_EQ(job.headers().at("trace"), "abc");
  EXPECT_EQ(job.max_attempts(), 3u);  // the server default
}

// Bad input gets the documented code, names the field, and changes nothing.
TEST_F(GrpcApiTest, BadInputIsRejectedAndChangesNothing) {
  struct Case {
    std::function<void(v1::JobSpec*)> mutate;
    StatusCode code;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](v1::JobSpec* j) { j->set_queue(""); }, StatusCode::INVALID_ARGUMENT, "queue"},
      {[](v1::JobSpec* j) { j->set_queue("bad name!"); }, StatusCode::INVALID_ARGUMENT, "queue"},
      {[](v1::JobSpec* j) { j->set_queue(std::string(129, 'a')); }, StatusCode::INVALID_ARGUMENT,
       "queue"},
      {[](v1::JobSpec* j) { j->set_payload(std::string((1 << 20) + 1, 'x')); },
       StatusCode::RESOURCE_EXHAUSTED, "payload"},
      {[](v1::JobSpec* j) { j->set_lease_ms(5); }, StatusCode::INVALID_ARGUMENT, "lease_ms"},
      {[](v1::JobSpec* j) { j->set_delay_ms(400ull * 24 * 3600 * 1000); },
       StatusCode::INVALID_ARGUMENT, "delay_ms"},
      {[](v1::JobSpec* j) {
         j->set_delay_ms(5);
         j->set_run_at_ms(5);
       },
       StatusCode::INVALID_ARGUMENT, "run_at_ms"},
      {[](v1::JobSpec* j) { j->set_max_attempts(5000); }, StatusCode::INVALID_ARGUMENT,
       "max_attempts"},
      {[](v1::JobSpec* j) { j->set_priority(2'000'000); }, StatusCode::INVALID_ARGUMENT,
       "priority"},
      {[](v1::JobSpec* j) { j->mutable_backoff()->set_jitter_pct(101); },
       StatusCode::INVALID_ARGUMENT, "jitter_pct"},
  };
  for (const auto& c : cases) {
    v1::PushRequest req;
    req.mutable_job()->set_queue("valid");
    c.mutate(req.mutable_job());
    v1::PushResponse resp;
    auto st = stub_->Push(Ctx().get(), req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << c.field << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(c.field), std::string::npos) << st.error_message();
  }
  v1::StatsRequest sreq;
  v1::StatsResponse sresp;
  ASSERT_TRUE(stub_->Stats(Ctx().get(), sreq, &sresp).ok());
  EXPECT_EQ(sresp.totals().pushed_total(), 0u);

  // Unknown ids and zero ids are NOT_FOUND; a stale token is FAILED_PRECONDITION.
  v1::AckRequest ack;
  ack.set_id(12345 << 8);
  v1::AckResponse aresp;
  EXPECT_EQ(stub_->Ack(Ctx().get(), ack, &aresp).error_code(), StatusCode::NOT_FOUND);
  ack.set_id(0);
  EXPECT_EQ(stub_->Ack(Ctx().get(), ack, &aresp).error_code(), StatusCode::NOT_FOUND);

  // Fetch limits.
  v1::FetchRequest f;
  f.set_queue("valid");
  f.set_max(0);
  v1::FetchResponse fr;
  EXPECT_EQ(stub_->Fetch(Ctx().get(), f, &fr).error_code(), StatusCode::INVALID_ARGUMENT);
  f.set_max(1);
  f.set_wait_ms(10'000'000);
  EXPECT_EQ(stub_->Fetch(Ctx().get(), f, &fr).error_code(), StatusCode::INVALID_ARGUMENT);
}

// A message over --grpc-message-bytes-max is refused by gRPC itself.
TEST_F(GrpcApiTest, OversizedMessageIsResourceExhausted) {
  server_.reset();
  StartServer({"--grpc-message-bytes-max=65536"});
  v1::PushRequest req;
  req.mutable_job()->set_queue("q");
  req.mutable_job()->set_payload(std::string(100'000, 'x'));
  v1::PushResponse resp;
  EXPECT_EQ(stub_->Push(Ctx().get(), req, &resp).error_code(), StatusCode::RESOURCE_EXHAUSTED);
}

// A unique key of a live job answers that job's id with duplicate = true.
TEST_F(GrpcApiTest, UniqueKeyDeduplicates) {
  v1::PushRequest req;
  req.mutable_job()->set_queue("u");
  req.mutable_job()->set_unique_key("order-1");
  v1::PushResponse a, b;
  ASSERT_TRUE(stub_->Push(Ctx().get(), req, &a).ok());
  ASSERT_TRUE(stub_->Push(Ctx().get(), req, &b).ok());
  EXPECT_EQ(a.id(), b.id());
  EXPECT_FALSE(a.duplicate());
  EXPECT_TRUE(b.duplicate());
}

// PushBatch reports an invalid item by index and pushes the rest; atomic
// mode pushes nothing.
TEST_F(GrpcApiTest, PushBatchPerItemAndAtomic) {
  v1::PushBatchRequest req;
  for (int i = 0; i < 5; ++i) {
    auto* j = req.add_jobs();
    j->set_queue(i == 2 ? "bad queue" : "batch" + std::to_string(i % 2));
    j->set_payload("p" + std::to_string(i));
  }
  v1::PushBatchResponse resp;
  ASSERT_TRUE(stub_->PushBatch(Ctx().get(), req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 5);
  for (int i = 0; i < 5; ++i) {
    if (i == 2) {
      EXPECT_EQ(resp.results(i).error().code(), 3u);
      EXPECT_NE(resp.results(i).error().message().find("jobs[2]"), std::string::npos);
      EXPECT_EQ(resp.results(i).id(), 0u);
    } else {
      EXPECT_FALSE(resp.results(i).has_error());
      EXPECT_EQ(Get(resp.results(i).id()).payload(), "p" + std::to_string(i));
    }
  }
  req.set_atomic(true);
  v1::PushBatchResponse resp2;
  auto st = stub_->PushBatch(Ctx().get(), req, &resp2);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("jobs[2]"), std::string::npos);
  v1::StatsResponse s;
  ASSERT_TRUE(stub_->Stats(Ctx().get(), v1::StatsRequest(), &s).ok());
  EXPECT_EQ(s.totals().pushed_total(), 4u);
}

// PushStream answers every request in order, errors in their place.
TEST_F(GrpcApiTest, PushStreamAnswersInOrder) {
  auto ctx = Ctx();
  auto stream = stub_->PushStream(ctx.get());
  const int n = 500;
  std::thread writer([&] {
    for (int i = 0; i < n; ++i) {
      v1::PushRequest req;
      req.mutable_job()->set_queue(i % 100 == 7 ? "" : "ps" + std::to_string(i % 3));
      req.mutable_job()->set_payload(std::to_string(i));
      ASSERT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
  });
  int got = 0;
  v1::PushStreamResponse resp;
  while (stream->Read(&resp)) {
    if (got % 100 == 7) {
      EXPECT_EQ(resp.result().error().code(), 3u) << got;
    } else {
      ASSERT_FALSE(resp.result().has_error()) << resp.result().error().message();
      EXPECT_EQ(Get(resp.result().id()).payload(), std::to_string(got));
    }
    ++got;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(got, n);
}

// Higher priority first, FIFO within a priority; delayed jobs wait.
TEST_F(GrpcApiTest, FetchOrderAndDelay) {
  Push("order", "low1", 0);
  Push("order", "high", 5);
  Push("order", "low2", 0);
  v1::PushRequest delayed;
  delayed.mutable_job()->set_queue("order");
  delayed.mutable_job()->set_payload("delayed");
  delayed.mutable_job()->set_priority(100);
  delayed.mutable_job()->set_delay_ms(300);
  v1::PushResponse dr;
  ASSERT_TRUE(stub_->Push(Ctx().get(), delayed, &dr).ok());
  auto got = Fetch("order", 10);
  ASSERT_EQ(got.deliveries_size(), 3);
  EXPECT_EQ(got.deliveries(0).job().payload(), "high");
  EXPECT_EQ(got.deliveries(1).job().payload(), "low1");
  EXPECT_EQ(got.deliveries(2).job().payload(), "low2");
  EXPECT_EQ(Get(dr.id()).state(), v1::JOB_STATE_DELAYED);
  auto later = Fetch("order", 10, 5000);
  ASSERT_EQ(later.deliveries_size(), 1);
  EXPECT_EQ(later.deliveries(0).job().payload(), "delayed");
}

// A Fetch waiting on an empty queue returns the job pushed during the wait;
// with nothing pushed it returns empty when the wait runs out.
TEST_F(GrpcApiTest, FetchWaits) {
  std::thread pusher([&] {
    std::this_thread::sleep_for(200ms);
    Push("waitq", "late");
  });
  auto start = std::chrono::steady_clock::now();
  auto got = Fetch("waitq", 5, 5000);
  pusher.join();
  ASSERT_EQ(got.deliveries_size(), 1);
  EXPECT_EQ(got.deliveries(0).job().payload(), "late");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  auto none = Fetch("waitq", 5, 100);
  EXPECT_EQ(none.deliveries_size(), 0);
}

// Ack completes; a second ack (stale) is FAILED_PRECONDITION; Fail retries
// until max_attempts, then the job is dead; RetryDead brings it back;
// PurgeDead forgets it.
TEST_F(GrpcApiTest, AckFailRetryDeadLetter) {
  const uint64_t id = Push("life", "x", 0, 2);
  auto d = Fetch("life", 1);
  ASSERT_EQ(d.deliveries_size(), 1);
  v1::FailRequest fail;
  fail.set_id(id);
  fail.set_lease_token(d.deliveries(0).lease_token());
  fail.set_error("boom");
  v1::FailResponse fresp;
  ASSERT_TRUE(stub_->Fail(Ctx().get(), fail, &fresp).ok());
  EXPECT_EQ(fresp.state(), v1::JOB_STATE_DELAYED);
  // The old token is stale now.
  v1::AckRequest ack;
  ack.set_id(id);
  ack.set_lease_token(d.deliveries(0).lease_token());
  v1::AckResponse aresp;
  EXPECT_EQ(stub_->Ack(Ctx().get(), ack, &aresp).error_code(), StatusCode::FAILED_PRECONDITION);

  auto d2 = Fetch("life", 1, 5000);
  ASSERT_EQ(d2.deliveries_size(), 1);
  EXPECT_EQ(d2.deliveries(0).job().attempts(), 2u);
  fail.set_lease_token(d2.deliveries(0).lease_token());
  ASSERT_TRUE(stub_->Fail(Ctx().get(), fail, &fresp).ok());
  EXPECT_EQ(fresp.state(), v1::JOB_STATE_DEAD);
  v1::Job dead = Get(id);
  EXPECT_EQ(dead.state(), v1::JOB_STATE_DEAD);
  EXPECT_NE(dead.reason().find("max attempts"), std::string::npos) << dead.reason();
  EXPECT_EQ(dead.last_error(), "boom");

  v1::ListDeadRequest lreq;
  lreq.set_queue("life");
  v1::ListDeadResponse lresp;
  ASSERT_TRUE(stub_->ListDead(Ctx().get(), lreq, &lresp).ok());
  ASSERT_EQ(lresp.jobs_size(), 1);
  EXPECT_EQ(lresp.jobs(0).id(), id);

  v1::DeadSelector sel;
  sel.set_queue("life");
  v1::RetryDeadResponse rresp;
  ASSERT_TRUE(stub_->RetryDead(Ctx().get(), sel, &rresp).ok());
  EXPECT_EQ(rresp.count(), 1u);
  auto d3 = Fetch("life", 1, 1000);
  ASSERT_EQ(d3.deliveries_size(), 1);
  EXPECT_EQ(d3.deliveries(0).job().attempts(), 1u);
  ack.set_lease_token(d3.deliveries(0).lease_token());
  ack.set_result("done");
  ASSERT_TRUE(stub_->Ack(Ctx().get(), ack, &aresp).ok());
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(Get(id).result(), "done");

  // Dead by no_retry, then purged.
  const uint64_t id2 = Push("life", "y");
  auto d4 = Fetch("life", 1);
  ASSERT_EQ(d4.deliveries_size(), 1);
  fail.set_id(id2);
  fail.set_lease_token(d4.deliveries(0).lease_token());
  fail.set_no_retry(true);
  ASSERT_TRUE(stub_->Fail(Ctx().get(), fail, &fresp).ok());
  EXPECT_EQ(fresp.state(), v1::JOB_STATE_DEAD);
  v1::PurgeDeadResponse presp;
  ASSERT_TRUE(stub_->PurgeDead(Ctx().get(), sel, &presp).ok());
  EXPECT_EQ(presp.count(), 1u);
  v1::GetJobRequest g;
  g.set_id(id2);
  v1::Job j;
  EXPECT_EQ(stub_->GetJob(Ctx().get(), g, &j).error_code(), StatusCode::NOT_FOUND);
}

// An expired lease counts as an attempt and the job is delivered again;
// Extend keeps a lease alive.
TEST_F(GrpcApiTest, LeaseExpiryAndExtend) {
  v1::PushRequest req;
  req.mutable_job()->set_queue("lease");
  req.mutable_job()->set_lease_ms(200);
  req.mutable_job()->mutable_backoff()->set_kind(v1::BACKOFF_KIND_FIXED);
  req.mutable_job()->mutable_backoff()->set_base_ms(1);
  v1::PushResponse pr;
  ASSERT_TRUE(stub_->Push(Ctx().get(), req, &pr).ok());
  auto d = Fetch("lease", 1);
  ASSERT_EQ(d.deliveries_size(), 1);
  v1::ExtendRequest ext;
  ext.set_id(pr.id());
  ext.set_lease_token(d.deliveries(0).lease_token());
  ext.set_lease_ms(1000);
  v1::ExtendResponse eresp;
  ASSERT_TRUE(stub_->Extend(Ctx().get(), ext, &eresp).ok());
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(Get(pr.id()).state(), v1::JOB_STATE_ACTIVE);  // extended past 200 ms
  auto again = Fetch("lease", 1, 3000);                    // expires at ~1000 ms
  ASSERT_EQ(again.deliveries_size(), 1);
  EXPECT_EQ(again.deliveries(0).job().attempts(), 2u);
  EXPECT_NE(again.deliveries(0).lease_token(), d.deliveries(0).lease_token());
  ext.set_lease_token(d.deliveries(0).lease_token());
  EXPECT_EQ(stub_->Extend(Ctx().get(), ext, &eresp).error_code(),
            StatusCode::FAILED_PRECONDITION);
}

// Cancel, pause and resume.
TEST_F(GrpcApiTest, CancelPauseResume) {
  const uint64_t id = Push("adm", "a");
  v1::CancelRequest c;
  c.set_id(id);
  v1::CancelResponse cr;
  ASSERT_TRUE(stub_->Cancel(Ctx().get(), c, &cr).ok());
  EXPECT_EQ(cr.previous_state(), v1::JOB_STATE_WAITING);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(stub_->Cancel(Ctx().get(), c, &cr).error_code(), StatusCode::FAILED_PRECONDITION);

  v1::QueueRequest q;
  q.set_queue("adm");
  v1::PauseResponse pr;
  ASSERT_TRUE(stub_->Pause(Ctx().get(), q, &pr).ok());
  Push("adm", "b");
  EXPECT_EQ(Fetch("adm", 1).deliveries_size(), 0);
  v1::ResumeResponse rr;
  ASSERT_TRUE(stub_->Resume(Ctx().get(), q, &rr).ok());
  EXPECT_EQ(Fetch("adm", 1).deliveries_size(), 1);

  v1::ListQueuesResponse lq;
  ASSERT_TRUE(stub_->ListQueues(Ctx().get(), v1::ListQueuesRequest(), &lq).ok());
  ASSERT_EQ(lq.queues_size(), 1);
  EXPECT_EQ(lq.queues(0).queue(), "adm");
  EXPECT_EQ(lq.queues(0).active(), 1u);
  EXPECT_EQ(lq.queues(0).cancelled(), 1u);
}

// A subscriber gets no more than its credits; each ack returns one; results
// answer each ack; deliveries span queues on both shards.
TEST_F(GrpcApiTest, SubscribeCreditsBoundDeliveries) {
  // Find two queue names on different shards (FNV-1a % 2).
  std::vector<std::string> queues = {"sa", "sb", "sc", "sd"};
  for (const auto& q : queues) {
    for (int i = 0; i < 5; ++i) Push(q, q + std::to_string(i));
  }
  auto ctx = Ctx(20s);
  auto stream = stub_->Subscribe(ctx.get());
  v1::SubscribeRequest open;
  for (const auto& q : queues) open.mutable_open()->add_queues(q);
  open.mutable_open()->set_credits(3);
  ASSERT_TRUE(stream->Write(open));

  std::map<uint64_t, uint64_t> held;  // id -> token
  std::set<std::string> seen;
  v1::SubscribeResponse resp;
  while (held.size() < 3 && stream->Read(&resp)) {
    for (const auto& d : resp.deliveries()) {
      held[d.job().id()] = d.lease_token();
      seen.insert(d.job().payload());
    }
  }
  ASSERT_EQ(held.size(), 3u);
  // No more arrive while credits are used up.
  std::this_thread::sleep_for(300ms);
  v1::StatsResponse s;
  ASSERT_TRUE(stub_->Stats(Ctx().get(), v1::StatsRequest(), &s).ok());
  EXPECT_EQ(s.totals().active(), 3u);
  EXPECT_EQ(s.totals().waiting(), 17u);

  // Ack everything as it comes until all 20 are done.
  int acked = 0, results = 0;
  auto ack_all = [&] {
    v1::SubscribeRequest req;
    for (const auto& [id, token] : held) {
      auto* a = req.add_acks();
      a->set_id(id);
      a->set_lease_token(token);
    }
    acked += held.size();
    held.clear();
    ASSERT_TRUE(stream->Write(req));
  };
  ack_all();
  while (results < 20 && stream->Read(&resp)) {
    for (const auto& r : resp.results()) {
      EXPECT_FALSE(r.has_error()) << r.error().message();
      EXPECT_EQ(r.op(), v1::SETTLE_OP_ACK);
      ++results;
    }
    for (const auto& d : resp.deliveries()) {
      held[d.job().id()] = d.lease_token();
      seen.insert(d.job().payload());
    }
    EXPECT_LE(held.size(), 3u);
    if (!held.empty()) ack_all();
  }
  EXPECT_EQ(results, 20);
  EXPECT_EQ(seen.size(), 20u);
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_TRUE(stub_->Stats(Ctx().get(), v1::StatsRequest(), &s).ok());
  EXPECT_EQ(s.totals().completed_total(), 20u);
  EXPECT_EQ(s.totals().waiting() + s.totals().active(), 0u);
}

// Zero credits, a missing open and a second open end the stream with
// INVALID_ARGUMENT.
TEST_F(GrpcApiTest, SubscribeBadOpen) {
  auto expect_invalid = [&](const v1::SubscribeRequest& first, bool send_second_open) {
    auto ctx = Ctx();
    auto stream = stub_->Subscribe(ctx.get());
    stream->Write(first);
    if (send_second_open) stream->Write(first);
    v1::SubscribeResponse resp;
    while (stream->Read(&resp)) {
    }
    auto st = stream->Finish();
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  };
  v1::SubscribeRequest zero;
  zero.mutable_open()->add_queues("q");
  zero.mutable_open()->set_credits(0);
  expect_invalid(zero, false);
  v1::SubscribeRequest no_open;
  no_open.set_credits(5);
  expect_invalid(no_open, false);
  v1::SubscribeRequest good;
  good.mutable_open()->add_queues("q");
  good.mutable_open()->set_credits(1);
  expect_invalid(good, true);
}

// A worker that disconnects with a job un-acked gives it back at once: the
// next worker gets it without waiting for the lease to run out.
TEST_F(GrpcApiTest, DisconnectReleasesLeasedJobs) {
  v1::PushRequest req;
  req.mutable_job()->set_queue("rel");
  req.mutable_job()->set_payload("z");
  req.mutable_job()->set_lease_ms(60'000);
  v1::PushResponse pr;
  ASSERT_TRUE(stub_->Push(Ctx().get(), req, &pr).ok());
  {
    auto ctx = Ctx();
    auto stream = stub_->Subscribe(ctx.get());
    v1::SubscribeRequest open;
    open.mutable_open()->add_queues("rel");
    open.mutable_open()->set_credits(1);
    ASSERT_TRUE(stream->Write(open));
    v1::SubscribeResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    ASSERT_EQ(resp.deliveries_size(), 1);
    ctx->TryCancel();
    stream->Finish();
  }
  auto got = Fetch("rel", 1, 3000);
  ASSERT_EQ(got.deliveries_size(), 1);
  EXPECT_EQ(got.deliveries(0).job().id(), pr.id());
  EXPECT_EQ(got.deliveries(0).job().attempts(), 2u);  // the lost delivery counted
}

// The standard health service answers SERVING (checked with a raw call so
// the test needs no generated health stubs: field 1 = 1 is SERVING).
TEST_F(GrpcApiTest, HealthServing) {
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  // HealthCheckRequest{service: "ringq.v1.Queue"} encoded by hand.
  const std::string req_bytes = std::string("\x0a\x0e", 2) + "ringq.v1.Queue";
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      std::lock_guard lock(mu);
                      status = s;
                      done = true;
                      cv.notify_one();
                    });
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 6s, [&] { return done; }));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

}  // namespace
}  // namespace ringq
