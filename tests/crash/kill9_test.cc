// kill -9 harness: tries to lose acknowledged data.
//
// Producers push jobs over gRPC whose payloads carry their own checksum and
// log every acknowledged push; Subscribe workers verify each payload, ack it,
// and log every acknowledged completion. The server is SIGKILLed at random
// moments and restarted on the same data directory, many cycles. After each
// restart, and at the end, a checker proves:
//   - every acknowledged push is present (pending, active, completed or dead)
//     with the payload that was pushed;
//   - no acknowledged completion is delivered again, and it is COMPLETED;
//   - jobs leased but not acked come back: at the end every acknowledged push
//     gets completed by draining workers;
//   - after a clean stop, RocksDB equals a pure replay of the whole WAL
//     (kept with --wal-archive), checked by ringq-walcheck.
// Cycles: RINGQ_CRASH_CYCLES (default 20); seed: RINGQ_CRASH_SEED.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "ringq/v1/queue.grpc.pb.h"
#include "tests/support/payload.h"
#include "tests/support/server_process.h"

namespace ringq {
namespace {

using namespace std::chrono_literals;

using testing::MakePayload;
using testing::PayloadOk;

struct Ledger {
  std::mutex mu;
  std::unordered_map<uint64_t, std::string> pushed;  // acknowledged pushes: id -> payload
  std::unordered_set<uint64_t> completed;            // acknowledged completions
  std::vector<std::string> violations;
  uint64_t deliveries = 0;

  void Violation(std::string v) {
    std::lock_guard lock(mu);
    if (violations.size() < 20) violations.push_back(std::move(v));
  }
};

const char* kQueues[] = {"crash-a", "crash-b", "crash-c"};

class Kill9Test : public ::testing::Test {
 protected:
  std::vector<std::string> Flags() {
    return {"--shards=2", "--checkpoint-interval-ms=150", "--wal-segment-bytes=2097152",
            "--payload-bytes-max=65536", "--result-bytes-max=65536",
            "--completed-retention-count=100000000", "--completed-retention-ms=1000000000",
            "--default-lease-ms=2000", "--default-backoff-base-ms=10",
            "--default-max-attempts=1000", "--wal-archive"};
  }

  std::unique_ptr<v1::Queue::Stub> Connect(testing::ServerProcess& s) {
    auto ch = grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials());
    return v1::Queue::NewStub(ch);
  }

  // Pushes until `stop`; logs what was acknowledged.
  void Producer(v1::Queue::Stub* stub, uint64_t seed, std::atomic<bool>* stop, Ledger* ledger) {
    std::mt19937_64 rng(seed);
    uint64_t tag = seed << 32;
    while (!stop->load()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 2s);
      if (rng() % 4 == 0) {
        v1::PushBatchRequest req;
        std::vector<std::string> payloads;
        for (int i = 0; i < 20; ++i) {
          auto* j = req.add_jobs();
          j->set_queue(kQueues[rng() % 3]);
          payloads.push_back(MakePayload(rng, ++tag, 48 + rng() % 600));
          j->set_payload(payloads.back());
        }
        v1::PushBatchResponse resp;
        if (!stub->PushBatch(&ctx, req, &resp).ok()) {
          std::this_thread::sleep_for(5ms);
          continue;
        }
        std::lock_guard lock(ledger->mu);
        for (int i = 0; i < resp.results_size(); ++i) {
          if (!resp.results(i).has_error()) ledger->pushed[resp.results(i).id()] = payloads[i];
        }
      } else {
        v1::PushRequest req;
        req.mutable_job()->set_queue(kQueues[rng() % 3]);
        std::string payload = MakePayload(rng, ++tag, 48 + rng() % 600);
        req.mutable_job()->set_payload(payload);
        v1::PushResponse resp;
        if (!stub->Push(&ctx, req, &resp).ok()) {
          std::this_thread::sleep_for(5ms);
          continue;
        }
        std::lock_guard lock(ledger->mu);
        ledger->pushed[resp.id()] = payload;
      }
    }
  }

  // A Subscribe worker: verifies, acks, logs acknowledged completions. Ends
  // when the stream breaks (server killed), when `stop` is set, or, with
  // `until_idle_ms`, after that long without a delivery.
  void Worker(v1::Queue::Stub* stub, std::atomic<bool>* stop, Ledger* ledger,
              int until_idle_ms = 0) {
    grpc::ClientContext ctx;
    auto stream = stub->Subscribe(&ctx);
    v1::SubscribeRequest open;
    for (const char* q : kQueues) open.mutable_open()->add_queues(q);
    open.mutable_open()->set_credits(64);
    if (!stream->Write(open)) return;
    std::atomic<bool> done{false};
    std::atomic<int64_t> last_delivery_ms{NowMs()};
    std::thread watchdog([&] {
      while (!done.load()) {
        const bool idle = until_idle_ms > 0 && NowMs() - last_delivery_ms.load() > until_idle_ms;
        if (stop->load() || idle) {
          ctx.TryCancel();
          return;
        }
        std::this_thread::sleep_for(10ms);
      }
    });
    std::unordered_set<uint64_t> acked_pending;
    v1::SubscribeResponse resp;
    while (stream->Read(&resp)) {
      v1::SubscribeRequest acks;
      for (const auto& d : resp.deliveries()) {
        last_delivery_ms = NowMs();
        const uint64_t id = d.job().id();
        {
          std::lock_guard lock(ledger->mu);
          ++ledger->deliveries;
          if (ledger->completed.count(id)) {
            ledger->violations.push_back("job " + std::to_string(id) +
                                         " delivered again after its completion was acked");
          }
          auto it = ledger->pushed.find(id);
          if (it != ledger->pushed.end() && it->second != d.job().payload()) {
            ledger->violations.push_back("job " + std::to_string(id) + " payload changed");
          }
        }
        if (!PayloadOk(d.job().payload())) {
          ledger->Violation("job " + std::to_string(id) + " payload checksum mismatch");
        }
        auto* a = acks.add_acks();
        a->set_id(id);
        a->set_lease_token(d.lease_token());
        acked_pending.insert(id);
      }
      for (const auto& r : resp.results()) {
        if (r.op() != v1::SETTLE_OP_ACK) continue;
        acked_pending.erase(r.id());
        if (!r.has_error()) {
          std::lock_guard lock(ledger->mu);
          ledger->completed.insert(r.id());
        }
      }
      if (acks.acks_size() > 0 && !stream->Write(acks)) break;
    }
    done = true;
    watchdog.join();
    stream->Finish();
  }

  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // Every acknowledged push is there with its payload; every acknowledged
  // completion is COMPLETED.
  // `sample`: between cycles, checks at most kSampleMax random acknowledged
  // pushes (a long run would otherwise re-check everything every cycle);
  // the final checks take every one.
  void Check(v1::Queue::Stub* stub, Ledger& ledger, const std::string& when,
             bool sample = false) {
    constexpr size_t kSampleMax = 3000;
    std::unordered_map<uint64_t, std::string> pushed;
    std::unordered_set<uint64_t> completed;
    {
      std::lock_guard lock(ledger.mu);
      if (sample && ledger.pushed.size() > kSampleMax) {
        std::mt19937_64 rng(ledger.pushed.size());
        std::sample(ledger.pushed.begin(), ledger.pushed.end(),
                    std::inserter(pushed, pushed.end()), kSampleMax, rng);
      } else {
        pushed = ledger.pushed;
      }
      completed = ledger.completed;
    }
    size_t missing = 0;
    for (const auto& [id, payload] : pushed) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      v1::GetJobRequest req;
      req.set_id(id);
      v1::Job job;
      auto st = stub->GetJob(&ctx, req, &job);
      if (!st.ok()) {
        if (++missing <= 5) {
          ADD_FAILURE() << when << ": acknowledged job " << id << " lost: " << st.error_message();
        }
        continue;
      }
      EXPECT_EQ(job.payload(), payload) << when << ": job " << id;
      if (completed.count(id)) {
        EXPECT_EQ(job.state(), v1::JOB_STATE_COMPLETED) << when << ": job " << id;
      }
    }
    EXPECT_EQ(missing, 0u) << when << ": " << missing << " of " << pushed.size()
                           << " acknowledged pushes lost";
  }
};

TEST_F(Kill9Test, NothingAcknowledgedIsLost) {
  const char* cycles_env = std::getenv("RINGQ_CRASH_CYCLES");
  const int cycles = cycles_env ? std::atoi(cycles_env) : 20;
  const char* seed_env = std::getenv("RINGQ_CRASH_SEED");
  const uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  SCOPED_TRACE("RINGQ_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);

  char tmpl[] = "/tmp/ringq-crash-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  Ledger ledger;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    testing::ServerProcess server(RINGQD_PATH, Flags(), dir);
    ASSERT_TRUE(server.Start(30'000)) << server.Log();
    auto stub = Connect(server);
    Check(stub.get(), ledger, "after restart " + std::to_string(cycle), /*sample=*/true);
    if (HasFailure()) {
      std::fprintf(stderr, "%s\n", server.Log().c_str());
      break;
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int p = 0; p < 2; ++p) {
      threads.emplace_back(
          [&, p] { Producer(stub.get(), seed * 131 + cycle * 7 + p, &stop, &ledger); });
    }
    threads.emplace_back([&] { Worker(stub.get(), &stop, &ledger); });
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 500));
    server.Kill();  // SIGKILL mid-load
    stop = true;
    for (auto& t : threads) t.join();
  }
  // Drain: every acknowledged push gets completed (leased-not-acked come back).
  testing::ServerProcess server(RINGQD_PATH, Flags(), dir);
  ASSERT_TRUE(server.Start(30'000)) << server.Log();
  auto stub = Connect(server);
  Check(stub.get(), ledger, "final restart");
  std::atomic<bool> never{false};
  Worker(stub.get(), &never, &ledger, /*until_idle_ms=*/1500);
  {
    std::lock_guard lock(ledger.mu);
    // Every acknowledged push ends COMPLETED: an ack whose answer was lost in a
    // crash may have completed it without the ledger knowing, so ask the server.
    size_t not_completed = 0;
    for (const auto& [id, p] : ledger.pushed) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      v1::GetJobRequest req;
      req.set_id(id);
      v1::Job job;
      auto st = stub->GetJob(&ctx, req, &job);
      if (st.ok() && job.state() == v1::JOB_STATE_COMPLETED) continue;
      if (++not_completed <= 5) {
        job.clear_payload();
        ADD_FAILURE() << "acknowledged push not completed after draining: "
                      << job.ShortDebugString() << " " << st.error_message();
      }
    }
    EXPECT_EQ(not_completed, 0u);
    for (const auto& v : ledger.violations) ADD_FAILURE() << v;
    std::fprintf(stderr,
                 "kill -9 harness: %d cycles, %zu acknowledged pushes, %zu acknowledged "
                 "completions, %llu deliveries, seed %llu\n",
                 cycles, ledger.pushed.size(), ledger.completed.size(),
                 static_cast<unsigned long long>(ledger.deliveries),
                 static_cast<unsigned long long>(seed));
  }
  Check(stub.get(), ledger, "after drain");
  // WAL -> RocksDB consistency: after all those crashes and a clean stop, the
  // state RocksDB holds equals a pure replay of the whole log.
  EXPECT_EQ(server.Stop(), 0);
  const std::string cmd = std::string(WALCHECK_PATH) + " " + dir + " 2";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace ringq
