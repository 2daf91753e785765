// Goal: every scheduler event lands in the right ShardProbe cell exactly once,
// the latency histograms observe the right durations, queue labels stop at the
// budget (the rest fold into "_other"), and the scrape-time gauges (depth by
// state, oldest waiting age) match the scheduler's state. Method: drive a
// Scheduler with a FakeClock and a MemoryJournal, then read the probe's cells
// and CollectGauges(); the engine-level collector is checked on a real Engine
// by scraping its text.
#include "service/engine/probe.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
#include <string>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/engine.h"
#include "service/engine/engine_metrics.h"
#include "service/engine/journal.h"
#include "service/engine/journal_probe.h"
#include "service/engine/scheduler.h"
#include "service/metrics/registry.h"

namespace ringq::engine {
namespace {

struct Counts {
  uint64_t pushed = 0, delivered = 0, completed = 0, failed = 0, retried = 0, dead = 0, expired = 0,
           cancelled = 0, leases_expired = 0;
};

std::map<std::string, Counts> Read(const ShardProbe& p) {
  std::map<std::string, Counts> out;
  p.ForEachQueue([&](const QueueCells& c) {
    Counts& k = out[c.label];
    k.pushed += c.pushed.Get();
    k.delivered += c.delivered.Get();
    k.completed += c.completed.Get();
    k.failed += c.failed.Get();
    k.retried += c.retried.Get();
    k.dead += c.dead_lettered.Get();
    k.expired += c.expired.Get();
    k.cancelled += c.cancelled.Get();
    k.leases_expired += c.leases_expired.Get();
  });
  return out;
}

uint64_t Count(const metrics::Histogram& h) {
  metrics::HistogramData d;
  h.MergeInto(d);
  return d.Count();
}

metrics::HistogramData Data(const metrics::Histogram& h) {
  metrics::HistogramData d;
  h.MergeInto(d);
  return d;
}

class ProbeTest : public ::testing::Test {
 protected:
  uint64_t Push(std::string queue = "q", uint32_t max_attempts = 0, uint64_t ttl_ms = 0,
                uint64_t delay_ms = 0) {
    JobSpec spec;
    spec.queue = std::move(queue);
    spec.payload = "p";
    spec.max_attempts = max_attempts;
    spec.ttl_ms = ttl_ms;
    spec.delay_ms = delay_ms;
    EXPECT_TRUE(ValidateSpec(spec, limits).ok());
    auto r = s.Push(spec);
    EXPECT_TRUE(r.ok());
    s.OnDurable(journal.durable_lsn());
    return r.ok() ? r->id : 0;
  }
  Delivery FetchOne(const std::string& queue = "q") {
    auto r = s.Fetch(queue, 1, 0, nullptr);
    EXPECT_TRUE(r.ok() && r->size() == 1);
    return r.ok() && !r->empty() ? r->front() : Delivery{};
  }
  void Advance(uint64_t ms) {
    clock.AdvanceMs(ms);
    s.Tick();
  }

  FakeClock clock;
  MemoryJournal journal;
  Limits limits;
  Scheduler s{0, limits, clock, journal};
};

TEST_F(ProbeTest, EachEventCountsOnceInItsQueue) {
  // push 4 jobs; ack one, fail one (retried), let one's lease expire into
  // the dead list (max_attempts 1), cancel the last.
  const uint64_t a = Push();
  Push();
  Push("q", 1);
  const uint64_t d = Push();

  Delivery da = FetchOne();
  ASSERT_EQ(da.job.id, a);
  clock.AdvanceMs(40);
  ASSERT_TRUE(s.Ack(da.job.id, da.lease_token, "").ok());

  Delivery db = FetchOne();
  ASSERT_TRUE(s.Fail(db.job.id, db.lease_token, "boom", false, 0).ok());

  Delivery dc = FetchOne();
  Advance(dc.job.lease_ms + 1);  // lease expires; max_attempts 1: dead

  ASSERT_TRUE(s.Cancel(d, "").ok());

  const auto got = Read(s.probe());
  ASSERT_EQ(got.count("q"), 1u);
  const Counts& q = got.at("q");
  EXPECT_EQ(q.pushed, 4u);
  EXPECT_EQ(q.delivered, 3u);
  EXPECT_EQ(q.completed, 1u);
  EXPECT_EQ(q.failed, 2u);  // the fail and the lease expiry
  EXPECT_EQ(q.retried, 1u);
  EXPECT_EQ(q.dead, 1u);
  EXPECT_EQ(q.leases_expired, 1u);
  EXPECT_EQ(q.cancelled, 1u);
  EXPECT_EQ(q.expired, 0u);
  EXPECT_EQ(got.at("_other").pushed, 0u);

  // Processing time of the ack: 40 ms, in the le=0.05 bucket (index 4).
  const metrics::HistogramData proc = Data(s.probe().processing_ms());
  EXPECT_EQ(proc.Count(), 1u);
  EXPECT_EQ(proc.counts[4], 1u);
  EXPECT_EQ(proc.sum_raw, 40u);
  // First deliveries only: a, b and c each once (the retry of b not delivered yet).
  EXPECT_EQ(Count(s.probe().end_to_end_ms()), 3u);
  s.CheckInvariants();
}

TEST_F(ProbeTest, TtlExpiryAndDelayedEndToEndLatency) {
  Push("q", 0, /*ttl_ms=*/500);
  Advance(600);
  EXPECT_EQ(Read(s.probe()).at("q").expired, 1u);

  // A delayed job's end-to-end latency starts at its run_at, not its push.
  Push("q", 0, 0, /*delay_ms=*/10'000);
  Advance(10'000);
  Advance(30);
  FetchOne();
  const metrics::HistogramData e2e = Data(s.probe().end_to_end_ms());
  EXPECT_EQ(e2e.Count(), 1u);
  EXPECT_EQ(e2e.sum_raw, 30u);
}

TEST_F(ProbeTest, FetchWaitIsObservedForEveryAnsweredFetch) {
  int answered = 0;
  auto r = s.Fetch("q", 1, 1000, [&](std::vector<Delivery>) { ++answered; });
  ASSERT_TRUE(r.ok());
  clock.AdvanceMs(250);
  Push();
  s.Dispatch();
  EXPECT_EQ(answered, 1);
  (void)s.Fetch("q", 1, 0, nullptr);  // immediate: 0 ms
  const metrics::HistogramData w = Data(s.probe().fetch_wait_ms());
  EXPECT_EQ(w.Count(), 2u);
  EXPECT_EQ(w.sum_raw, 250u);
}

TEST_F(ProbeTest, GaugesReportDepthAndOldestWaitingAge) {
  Push("a");
  clock.AdvanceMs(1000);
  Push("a");
  Push("b", 0, 0, 5000);  // delayed
  clock.AdvanceMs(500);
  std::vector<QueueGauges> g;
  s.CollectGauges(&g);
  std::map<std::string, QueueGauges> by;
  for (auto& x : g) by[x.label] = x;
  EXPECT_EQ(by["a"].waiting, 2u);
  EXPECT_EQ(by["a"].oldest_waiting_age_ms, 1500u);
  EXPECT_EQ(by["b"].delayed, 1u);
  EXPECT_EQ(by["b"].oldest_waiting_age_ms, 0u);

  // Leasing the head makes the second job the oldest.
  FetchOne("a");
  g.clear();
  s.CollectGauges(&g);
  for (auto& x : g) by[x.label] = x;
  EXPECT_EQ(by["a"].active, 1u);
  EXPECT_EQ(by["a"].oldest_waiting_age_ms, 500u);
}

TEST_F(ProbeTest, LabelsBeyondTheBudgetFoldIntoOther) {
  metrics::LabelBudget budget(2);
  s.probe().Configure(&budget, true);
  Push("q1");
  Push("q2");
  Push("q3");
  Push("q4");
  Push("_other");  // always folded
  const auto got = Read(s.probe());
  EXPECT_EQ(got.size(), 3u);  // q1, q2, _other
  EXPECT_EQ(got.at("q1").pushed, 1u);
  EXPECT_EQ(got.at("q2").pushed, 1u);
  EXPECT_EQ(got.at("_other").pushed, 3u);
  std::vector<QueueGauges> g;
  s.CollectGauges(&g);
  uint64_t other_waiting = 0;
  for (auto& x : g) {
    if (x.label == "_other") other_waiting += x.waiting;
  }
  EXPECT_EQ(other_waiting, 3u);
}

TEST_F(ProbeTest, DisabledProbeCountsNothing) {
  s.probe().Configure(nullptr, false);
  Push();
  FetchOne();
  const auto got = Read(s.probe());
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(got.at("_other").pushed, 0u);
  EXPECT_EQ(Count(s.probe().end_to_end_ms()), 0u);
}

TEST(EngineMetricsTest, ScrapeSumsShardsAndGathersGauges) {
  SystemClock clock;
  EngineOptions eo;
  eo.shards = 2;
  Engine engine(eo, clock);
  EngineMetrics em(engine, EngineMetricsOptions{});
  JournalProbes wal(2);
  wal.shard(1).Synced(200'000, 3, 4096);
  metrics::Registry registry;
  registry.Add(&em);
  registry.Add(&wal);
  engine.Start();
  // Queues "a".."f" spread over both shards; two jobs each.
  for (const char* q : {"a", "b", "c", "d", "e", "f"}) {
    for (int i = 0; i < 2; ++i) {
      JobSpec spec;
      spec.queue = q;
      spec.payload = "x";
      ASSERT_TRUE(ValidateSpec(spec, engine.limits()).ok());
      std::promise<void> done;
      ASSERT_TRUE(engine.Post(engine.ShardForQueue(q), [&](Shard& sh) {
        ASSERT_TRUE(sh.scheduler().Push(spec).ok());
        done.set_value();
      }));
      done.get_future().wait();
    }
  }
  const std::string text = registry.Scrape();
  engine.Stop();
  for (const char* q : {"a", "b", "c", "d", "e", "f"}) {
    const std::string qs(q);
    EXPECT_NE(text.find("ringq_jobs_pushed_total{queue=\"" + qs + "\"} 2\n"), std::string::npos)
        << text;
    EXPECT_NE(text.find("ringq_jobs{queue=\"" + qs + "\",state=\"waiting\"} 2\n"),
              std::string::npos);
  }
  EXPECT_NE(text.find("ringq_jobs_pushed_total{queue=\"_other\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("ringq_queues 6\n"), std::string::npos);
  EXPECT_NE(text.find("ringq_metrics_queue_labels 6\n"), std::string::npos);
  EXPECT_NE(text.find("ringq_wal_records_per_sync_bucket{le=\"4\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("ringq_wal_written_bytes_total 4096\n"), std::string::npos);
  EXPECT_NE(text.find("ringq_shard_loop_lag_seconds{shard=\"1\"} "), std::string::npos);
  EXPECT_NE(text.find("ringq_metrics_gather_timeouts_total 0\n"), std::string::npos);
}

}  // namespace
}  // namespace ringq::engine
