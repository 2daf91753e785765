// Unit tests of the scheduler's state machine (scheduler.h), driven by a
// FakeClock and a MemoryJournal: every transition of a job, every refusal
// with its Code, and the request validation of job.h. No sleeping, no
// threads. Each test ends with CheckInvariants(), which aborts on a broken
// invariant.
#include "service/engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/consumer.h"
#include "service/engine/job.h"
#include "service/engine/journal.h"
#include "service/engine/status.h"

namespace ringq::engine {

// gtest prints states and codes by name.
inline void PrintTo(JobState s, std::ostream* os) { *os << JobStateName(s); }
inline void PrintTo(Code c, std::ostream* os) { *os << "Code(" << static_cast<int>(c) << ")"; }

namespace {

// Passes when `haystack` contains `needle`; prints both otherwise. (No gmock.)
::testing::AssertionResult Contains(const char* haystack_expr, const char* needle_expr,
                                    const std::string& haystack, const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << haystack_expr << " = \"" << haystack << "\" does not contain " << needle_expr << " = \""
         << needle << "\"";
}

// A consumer whose credits the test sets by hand; it records every call.
class FakeConsumer final : public Consumer {
 public:
  explicit FakeConsumer(uint32_t credits) : credits(credits) {}

  uint32_t Acquire(uint32_t want) override {
    ++acquire_calls;
    const uint32_t granted = std::min(want, credits);
    credits -= granted;
    acquired += granted;
    return granted;
  }
  void Release(uint32_t n) override {
    credits += n;
    released += n;
  }
  void Deliver(std::vector<Delivery>&& batch) override {
    ++batches;
    for (Delivery& d : batch) got.push_back(std::move(d));
  }
  void Starved(uint32_t) override { ++starved; }
  bool Closed() const override { return closed; }

  uint32_t credits = 0;
  bool closed = false;
  uint64_t acquire_calls = 0, acquired = 0, released = 0, batches = 0, starved = 0;
  std::vector<Delivery> got;
};

// What a waiting Fetch's callback saw.
struct FetchProbe {
  int calls = 0;
  std::vector<Delivery> got;
  FetchCallback Callback() {
    return [this](std::vector<Delivery> d) {
      ++calls;
      got = std::move(d);
    };
  }
};

JobSpec Spec(int32_t priority = 0, std::string queue = "q") {
  JobSpec spec;
  spec.queue = std::move(queue);
  spec.payload = "p";
  spec.priority = priority;
  return spec;
}

// `spec` after ValidateSpec, which Scheduler::Push requires.
JobSpec Valid(JobSpec spec, const Limits& limits) {
  const Status v = ValidateSpec(spec, limits);
  EXPECT_TRUE(v.ok()) << v.message();
  return spec;
}

// Validates `spec` against `limits`, pushes it, and makes the push durable.
// Returns the id (0 and a recorded failure when refused).
uint64_t PushTo(Scheduler& s, const Journal& journal, const Limits& limits, JobSpec spec,
                bool* duplicate = nullptr) {
  const Status v = ValidateSpec(spec, limits);
  EXPECT_TRUE(v.ok()) << v.message();
  if (!v.ok()) return 0;
  auto r = s.Push(spec);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return 0;
  s.OnDurable(journal.durable_lsn());
  if (duplicate != nullptr) *duplicate = r->duplicate;
  return r->id;
}

std::vector<Delivery> FetchFrom(Scheduler& s, const std::string& queue, uint32_t max) {
  auto r = s.Fetch(queue, max, 0, nullptr);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return {};
  return std::move(r.value());
}

std::vector<uint64_t> Ids(const std::vector<Delivery>& ds) {
  std::vector<uint64_t> ids;
  for (const Delivery& d : ds) ids.push_back(d.job.id);
  return ids;
}

QueueCounts CountsOf(const Scheduler& s, const std::string& queue) {
  const std::vector<QueueCounts> all = s.Stats(queue);
  EXPECT_EQ(all.size(), 1u) << "queue " << queue;
  return all.empty() ? QueueCounts{} : all.front();
}

class SchedulerTest : public ::testing::Test {
 protected:
  uint64_t Push(JobSpec spec, bool* duplicate = nullptr) {
    return PushTo(s, journal, limits, std::move(spec), duplicate);
  }
  std::vector<Delivery> Fetch(uint32_t max = 1, const std::string& queue = "q") {
    return FetchFrom(s, queue, max);
  }
  // Fetches exactly one job and checks it is `id`.
  Delivery FetchExpect(uint64_t id, const std::string& queue = "q") {
    std::vector<Delivery> got = Fetch(1, queue);
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) return {};
    EXPECT_EQ(got[0].job.id, id);
    return got[0];
  }
  Job Get(uint64_t id) {
    auto r = s.Get(id);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? r.value() : Job{};
  }
  JobState StateOf(uint64_t id) { return Get(id).state; }
  void Advance(uint64_t ms) {
    clock.AdvanceMs(ms);
    s.Tick();
  }

  FakeClock clock;
  MemoryJournal journal;
  Limits limits;
  Scheduler s{0, limits, clock, journal};
};

// A scheduler with its own limits, for the tests of bounds and retention.
struct Bounded {
  explicit Bounded(const Limits& l) : limits(l), s(0, limits, clock, journal) {}
  uint64_t Push(JobSpec spec, bool* duplicate = nullptr) {
    return PushTo(s, journal, limits, std::move(spec), duplicate);
  }
  FakeClock clock;
  MemoryJournal journal;
  Limits limits;
  Scheduler s;
};

// ------------------------------------------------------------ durability gate

TEST_F(SchedulerTest, PushIsInvisibleUntilItsRecordIsDurable) {
  // A pushed job is not delivered before OnDurable reaches its LSN, and only
  // the jobs up to that LSN become visible.
  JobSpec a = Spec(), b = Spec();
  ASSERT_TRUE(ValidateSpec(a, limits).ok());
  ASSERT_TRUE(ValidateSpec(b, limits).ok());
  auto ra = s.Push(a);
  ASSERT_TRUE(ra.ok());
  const uint64_t lsn_a = journal.last_lsn();
  auto rb = s.Push(b);
  ASSERT_TRUE(rb.ok());
  EXPECT_NE(ra->id, rb->id);
  EXPECT_FALSE(ra->duplicate);

  EXPECT_TRUE(Fetch().empty());
  s.Dispatch();
  EXPECT_TRUE(Fetch().empty());

  s.OnDurable(lsn_a);
  EXPECT_EQ(Ids(Fetch(10)), std::vector<uint64_t>{ra->id});
  s.OnDurable(journal.durable_lsn());
  EXPECT_EQ(Ids(Fetch(10)), std::vector<uint64_t>{rb->id});
  s.CheckInvariants();
}

TEST_F(SchedulerTest, JobIdsCarryTheShard) {
  // Ids are unique and route back to their shard.
  Scheduler s7{7, limits, clock, journal};
  const uint64_t a = PushTo(s7, journal, limits, Spec());
  const uint64_t b = PushTo(s7, journal, limits, Spec());
  EXPECT_NE(a, b);
  EXPECT_EQ(ShardOfJob(a), 7u);
  EXPECT_EQ(ShardOfJob(b), 7u);
  EXPECT_EQ(s7.shard_index(), 7u);
  s7.CheckInvariants();
}

TEST_F(SchedulerTest, PushRecordsTheJobAsSpecified) {
  // Get returns what was pushed, with defaults filled in and times from the clock.
  JobSpec spec = Spec(5);
  spec.payload = "hello";
  spec.headers = {{"k", "v"}};
  spec.group = "g";
  const uint64_t id = Push(spec);
  const Job job = Get(id);
  EXPECT_EQ(job.id, id);
  EXPECT_EQ(job.queue, "q");
  ASSERT_NE(job.payload, nullptr);
  EXPECT_EQ(*job.payload, "hello");
  EXPECT_EQ(job.priority, 5);
  EXPECT_EQ(job.state, JobState::kWaiting);
  EXPECT_EQ(job.attempts, 0u);
  EXPECT_EQ(job.max_attempts, limits.default_max_attempts);
  EXPECT_EQ(job.lease_ms, limits.default_lease_ms);
  EXPECT_EQ(job.created_at_ms, clock.NowMs());
  EXPECT_EQ(job.run_at_ms, clock.NowMs());
  EXPECT_EQ(job.lease_token, 0u);
  EXPECT_EQ(job.headers, (Headers{{"k", "v"}}));
  EXPECT_EQ(job.group, "g");
  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.waiting, 1u);
  EXPECT_EQ(c.pushed_total, 1u);
  s.CheckInvariants();
}

// ------------------------------------------------------------ priorities

TEST_F(SchedulerTest, HigherPriorityIsDeliveredFirst) {
  // Ready jobs leave in descending priority, whatever their push order.
  const uint64_t low = Push(Spec(-5));
  const uint64_t mid = Push(Spec(0));
  const uint64_t high = Push(Spec(7));
  const uint64_t top = Push(Spec(Limits::kPriorityAbsMax));
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{top, high, mid, low}));
  s.CheckInvariants();
}

TEST_F(SchedulerTest, SamePriorityIsFifo) {
  // Within one priority, jobs leave in push order, across several fetches.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Push(Spec(3)));
  const uint64_t other = Push(Spec(1));
  std::vector<uint64_t> got = Ids(Fetch(2));
  for (uint64_t id : Ids(Fetch(10))) got.push_back(id);
  ids.push_back(other);
  EXPECT_EQ(got, ids);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, RetriedJobReentersAtTheBackOfItsPriority) {
  // A job failed with an immediate retry queues behind the jobs already ready.
  const uint64_t a = Push(Spec());
  const uint64_t b = Push(Spec());
  const Delivery d = FetchExpect(a);
  const uint64_t c = Push(Spec());
  // retry_delay_ms is the override; 0 means backoff, so make the backoff wait
  // elapse before comparing.
  auto f = s.Fail(a, d.lease_token, "boom", false, 1);
  ASSERT_TRUE(f.ok()) << f.status().message();
  Advance(1);
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{b, c, a}));
  s.CheckInvariants();
}

// ------------------------------------------------------------ delays

TEST_F(SchedulerTest, DelayedJobIsNeverDeliveredEarly) {
  // A delayed job stays DELAYED until run_at, then becomes WAITING and is delivered.
  JobSpec spec = Spec();
  spec.delay_ms = 1000;
  const uint64_t id = Push(spec);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kDelayed);
  EXPECT_EQ(job.run_at_ms, clock.NowMs() + 1000);
  EXPECT_EQ(CountsOf(s, "q").delayed, 1u);

  EXPECT_TRUE(Fetch().empty());
  Advance(999);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_EQ(StateOf(id), JobState::kDelayed);
  Advance(1);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  const Delivery d = FetchExpect(id);
  EXPECT_GE(clock.NowMs(), d.job.run_at_ms);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, OneMillisecondDelayIsStillADelay) {
  // The smallest delay (and the smallest retry delay) is not rounded away.
  JobSpec spec = Spec();
  spec.delay_ms = 1;
  const uint64_t id = Push(spec);
  EXPECT_EQ(StateOf(id), JobState::kDelayed);
  EXPECT_TRUE(Fetch().empty());
  Advance(1);
  const Delivery d = FetchExpect(id);
  auto f = s.Fail(id, d.lease_token, "again", false, 1);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, JobState::kDelayed);
  EXPECT_EQ(f->run_at_ms, clock.NowMs() + 1);
  EXPECT_TRUE(Fetch().empty());
  Advance(1);
  FetchExpect(id);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, RunAtAbsoluteTimeIsHonoured) {
  // run_at_ms in the future delays the job; in the past it is ready at once.
  JobSpec future = Spec();
  future.run_at_ms = clock.NowMs() + 500;
  JobSpec past = Spec();
  past.run_at_ms = clock.NowMs() - 500;
  const uint64_t f = Push(future);
  const uint64_t p = Push(past);
  EXPECT_EQ(StateOf(f), JobState::kDelayed);
  EXPECT_EQ(StateOf(p), JobState::kWaiting);
  EXPECT_EQ(Ids(Fetch(10)), std::vector<uint64_t>{p});
  Advance(500);
  EXPECT_EQ(Ids(Fetch(10)), std::vector<uint64_t>{f});
  s.CheckInvariants();
}

TEST_F(SchedulerTest, DelayedHighPriorityJobDoesNotBlockReadyOnes) {
  // A delayed job of higher priority leaves the ready lower-priority jobs deliverable.
  JobSpec high = Spec(100);
  high.delay_ms = 10'000;
  const uint64_t h = Push(high);
  const uint64_t l1 = Push(Spec(-1));
  const uint64_t l2 = Push(Spec(-1));
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{l1, l2}));
  Advance(10'000);
  const uint64_t l3 = Push(Spec(-1));
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{h, l3}));
  s.CheckInvariants();
}

TEST_F(SchedulerTest, DelayedJobsBecomeReadyInRunAtOrder) {
  // Delayed jobs promoted in one Tick queue in run_at order, not push order.
  JobSpec a = Spec(), b = Spec(), c = Spec();
  a.delay_ms = 300;
  b.delay_ms = 200;
  c.delay_ms = 100;
  const uint64_t ia = Push(a), ib = Push(b), ic = Push(c);
  Advance(300);
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{ic, ib, ia}));
  s.CheckInvariants();
}

TEST_F(SchedulerTest, DelayedJobsWithTheSameRunAtStayFifo) {
  // Jobs of one priority pushed with the same delay are delivered in push
  // order: timers due at the same millisecond must fire in the order they were set.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 16; ++i) {
    JobSpec spec = Spec();
    spec.delay_ms = 1000;
    ids.push_back(Push(spec));
  }
  Advance(1000);
  EXPECT_EQ(Ids(Fetch(100)), ids);
  s.CheckInvariants();
}

// ------------------------------------------------------------ leases

TEST_F(SchedulerTest, FetchLeasesTheJob) {
  // A fetched job is ACTIVE with one attempt, a fresh token and an expiry of now + lease_ms.
  JobSpec spec = Spec();
  spec.lease_ms = 2000;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  EXPECT_NE(d.lease_token, 0u);
  EXPECT_EQ(d.lease_expires_at_ms, clock.NowMs() + 2000);
  EXPECT_EQ(d.job.attempts, 1u);
  EXPECT_EQ(d.job.state, JobState::kActive);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kActive);
  EXPECT_EQ(job.lease_token, d.lease_token);
  EXPECT_EQ(job.lease_expires_at_ms, d.lease_expires_at_ms);
  EXPECT_EQ(CountsOf(s, "q").active, 1u);
  EXPECT_TRUE(Fetch().empty()) << "an active job is not delivered twice";
  s.CheckInvariants();
}

TEST_F(SchedulerTest, LeaseHoldsUntilItsExpiry) {
  // Before the expiry the lease stands: the job is not redelivered and the ack works.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  Advance(999);
  EXPECT_EQ(StateOf(id), JobState::kActive);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_TRUE(s.Ack(id, d.lease_token, "ok").ok());
  EXPECT_EQ(StateOf(id), JobState::kCompleted);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ExpiredLeaseIsAnAttemptRetriedWithBackoff) {
  // A lease that runs out counts as a failed attempt: the job is delayed by
  // the backoff, records the error, and the next delivery is attempt 2.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  spec.backoff = {BackoffKind::kFixed, 500, 0, 0};
  const uint64_t id = Push(spec);
  const Delivery d1 = FetchExpect(id);
  Advance(1000);
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kDelayed);
  EXPECT_EQ(job.attempts, 1u);
  EXPECT_EQ(job.lease_token, 0u);
  EXPECT_EQ(job.run_at_ms, clock.NowMs() + 500);
  EXPECT_PRED_FORMAT2(Contains, job.last_error, "lease expired");
  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.failed_total, 1u);
  EXPECT_EQ(c.retried_total, 1u);

  Advance(499);
  EXPECT_TRUE(Fetch().empty());
  Advance(1);
  const Delivery d2 = FetchExpect(id);
  EXPECT_EQ(d2.job.attempts, 2u);
  EXPECT_NE(d2.lease_token, d1.lease_token);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ExpiredLeasesDeadLetterAfterMaxAttempts) {
  // When the last allowed attempt's lease runs out, the job is DEAD with the reason recorded.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  spec.max_attempts = 2;
  spec.backoff = {BackoffKind::kFixed, 100, 0, 0};
  const uint64_t id = Push(spec);
  FetchExpect(id);
  Advance(1000);
  Advance(100);
  FetchExpect(id);
  Advance(1000);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kDead);
  EXPECT_EQ(job.attempts, 2u);
  EXPECT_EQ(job.finished_at_ms, clock.NowMs());
  EXPECT_PRED_FORMAT2(Contains, job.reason, "max attempts (2)");
  EXPECT_PRED_FORMAT2(Contains, job.reason, "lease expired");
  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.dead, 1u);
  EXPECT_EQ(c.dead_total, 1u);
  EXPECT_EQ(c.active + c.waiting + c.delayed, 0u);
  Advance(100'000);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_EQ(StateOf(id), JobState::kDead);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, AckCompletesTheJob) {
  // Ack with the live token makes the job COMPLETED with its result; a second ack is refused.
  const uint64_t id = Push(Spec());
  const Delivery d = FetchExpect(id);
  clock.AdvanceMs(7);
  ASSERT_TRUE(s.Ack(id, d.lease_token, "result").ok());
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kCompleted);
  EXPECT_EQ(job.result, "result");
  EXPECT_EQ(job.finished_at_ms, clock.NowMs());
  EXPECT_EQ(job.lease_token, 0u);
  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.completed, 1u);
  EXPECT_EQ(c.completed_total, 1u);
  EXPECT_EQ(c.active, 0u);
  EXPECT_EQ(s.Ack(id, d.lease_token, "").code(), Code::kFailedPrecondition);
  // The lease timer of the completed job fires harmlessly.
  Advance(limits.default_lease_ms);
  EXPECT_EQ(StateOf(id), JobState::kCompleted);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, AckResultOverTheLimitIsRefused) {
  // A result above result_bytes_max is RESOURCE_EXHAUSTED and leaves the lease alone.
  Limits l;
  l.result_bytes_max = 4;
  Bounded b(l);
  const uint64_t id = b.Push(Spec());
  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  const Status st = b.s.Ack(id, d.lease_token, "12345");
  EXPECT_EQ(st.code(), Code::kResourceExhausted);
  EXPECT_PRED_FORMAT2(Contains, st.message(), "result");
  EXPECT_EQ(b.s.Get(id)->state, JobState::kActive);
  EXPECT_TRUE(b.s.Ack(id, d.lease_token, "1234").ok());
  b.s.CheckInvariants();
}

// ------------------------------------------------------------ stale tokens, unknown ids

TEST_F(SchedulerTest, StaleTokenIsRefusedAndChangesNothing) {
  // After a lease expired and the job was redelivered, the first token is
  // FAILED_PRECONDITION for ack, fail and extend, and the new lease is untouched.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  spec.backoff = {BackoffKind::kFixed, 1, 0, 0};
  const uint64_t id = Push(spec);
  const Delivery old = FetchExpect(id);
  Advance(1000);
  Advance(1);
  const Delivery now = FetchExpect(id);
  ASSERT_NE(old.lease_token, now.lease_token);
  const Job before = Get(id);

  const Status ack = s.Ack(id, old.lease_token, "");
  EXPECT_EQ(ack.code(), Code::kFailedPrecondition);
  EXPECT_PRED_FORMAT2(Contains, ack.message(), "stale");
  EXPECT_EQ(s.Fail(id, old.lease_token, "e", false, 0).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.Fail(id, old.lease_token, "e", true, 0).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.Extend(id, old.lease_token, 5000).status().code(), Code::kFailedPrecondition);

  const Job after = Get(id);
  EXPECT_EQ(after.state, JobState::kActive);
  EXPECT_EQ(after.lease_token, before.lease_token);
  EXPECT_EQ(after.lease_expires_at_ms, before.lease_expires_at_ms);
  EXPECT_EQ(after.attempts, before.attempts);
  EXPECT_EQ(after.last_error, before.last_error);
  EXPECT_EQ(CountsOf(s, "q").failed_total, 1u);
  EXPECT_TRUE(s.Ack(id, now.lease_token, "").ok());
  s.CheckInvariants();
}

TEST_F(SchedulerTest, WrongTokenOnAWaitingJobIsRefused) {
  // A job that is not active has no lease: any token is FAILED_PRECONDITION.
  const uint64_t id = Push(Spec());
  EXPECT_EQ(s.Ack(id, 12345, "").code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.Fail(id, 12345, "", false, 0).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.Extend(id, 12345, 1000).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  FetchExpect(id);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, UnknownIdIsNotFound) {
  // Every call naming a job that never existed answers NOT_FOUND.
  const uint64_t known = Push(Spec());
  const uint64_t unknown = known + (1u << kShardBits) * 1000;
  EXPECT_EQ(s.Get(unknown).status().code(), Code::kNotFound);
  EXPECT_EQ(s.Ack(unknown, 1, "").code(), Code::kNotFound);
  EXPECT_EQ(s.Fail(unknown, 1, "", false, 0).status().code(), Code::kNotFound);
  EXPECT_EQ(s.Extend(unknown, 1, 1000).status().code(), Code::kNotFound);
  const auto c = s.Cancel(unknown, "");
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_PRED_FORMAT2(Contains, c.status().message(), std::to_string(unknown));
  EXPECT_EQ(s.RetryDead("q", {unknown}), 0u);
  EXPECT_EQ(s.PurgeDead("q", {unknown}), 0u);
  EXPECT_EQ(s.job_count(), 1u);
  s.CheckInvariants();
}

// ------------------------------------------------------------ backoff

// Fails the active job `id` (fetching it first) and returns run_at - now.
class BackoffTest : public SchedulerTest {
 protected:
  uint64_t FailOnce(uint64_t id, JobState expect = JobState::kDelayed) {
    const Delivery d = FetchExpect(id);
    auto f = s.Fail(id, d.lease_token, "boom", false, 0);
    EXPECT_TRUE(f.ok()) << f.status().message();
    if (!f.ok()) return 0;
    EXPECT_EQ(f->state, expect);
    EXPECT_EQ(f->run_at_ms, Get(id).run_at_ms);
    const uint64_t wait = f->run_at_ms - clock.NowMs();
    clock.SetMs(f->run_at_ms);
    s.Tick();
    return wait;
  }
};

TEST_F(BackoffTest, FixedBackoffWaitsTheBaseEveryTime) {
  // Fixed backoff delays every retry by base_ms.
  JobSpec spec = Spec();
  spec.max_attempts = 6;
  spec.backoff = {BackoffKind::kFixed, 250, 0, 0};
  const uint64_t id = Push(spec);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(FailOnce(id), 250u) << "retry " << i;
  s.CheckInvariants();
}

TEST_F(BackoffTest, FixedBackoffWithCapEqualToBase) {
  // Fixed backoff at its edge (ValidateSpec forbids cap < base): cap == base waits base.
  JobSpec spec = Spec();
  spec.backoff = {BackoffKind::kFixed, 300, 300, 0};
  const uint64_t id = Push(spec);
  EXPECT_EQ(FailOnce(id), 300u);
  EXPECT_EQ(FailOnce(id), 300u);
  s.CheckInvariants();
}

TEST_F(BackoffTest, ExponentialBackoffDoublesUpToTheCap) {
  // Exponential backoff waits base * 2^(attempts-1), never more than cap_ms.
  JobSpec spec = Spec();
  spec.max_attempts = 8;
  spec.backoff = {BackoffKind::kExponential, 100, 500, 0};
  const uint64_t id = Push(spec);
  const std::vector<uint64_t> want = {100, 200, 400, 500, 500, 500, 500};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(FailOnce(id), want[i]) << "retry " << i;
  const Delivery d = FetchExpect(id);
  auto f = s.Fail(id, d.lease_token, "last", false, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, JobState::kDead);
  EXPECT_EQ(f->run_at_ms, 0u);
  s.CheckInvariants();
}

TEST_F(BackoffTest, DefaultBackoffIsTheLimitsDefault) {
  // A spec without backoff waits default_backoff_base_ms, then doubles.
  JobSpec spec = Spec();
  spec.max_attempts = 3;
  const uint64_t id = Push(spec);
  EXPECT_EQ(FailOnce(id), limits.default_backoff_base_ms);
  EXPECT_EQ(FailOnce(id), 2ull * limits.default_backoff_base_ms);
  s.CheckInvariants();
}

TEST_F(BackoffTest, JitterStaysWithinItsBounds) {
  // With jitter_pct p the wait is in [wait * (1 - p/100), wait] and does vary.
  JobSpec spec = Spec();
  spec.max_attempts = 60;
  spec.backoff = {BackoffKind::kFixed, 1000, 0, 50};
  const uint64_t id = Push(spec);
  std::set<uint64_t> seen;
  for (int i = 0; i < 50; ++i) {
    const uint64_t wait = FailOnce(id);
    EXPECT_GE(wait, 500u);
    EXPECT_LE(wait, 1000u);
    seen.insert(wait);
  }
  EXPECT_GT(seen.size(), 5u) << "jitter never moved the wait";
  s.CheckInvariants();
}

TEST_F(BackoffTest, JitterAppliesAfterTheCap) {
  // Exponential growth is capped first, then jitter subtracts at most p% of the cap.
  JobSpec spec = Spec();
  spec.max_attempts = 40;
  spec.backoff = {BackoffKind::kExponential, 100, 400, 25};
  const uint64_t id = Push(spec);
  for (int i = 0; i < 30; ++i) {
    const uint64_t full = std::min<uint64_t>(100ull << std::min(i, 20), 400);
    const uint64_t wait = FailOnce(id);
    EXPECT_GE(wait, full - full / 4) << "retry " << i;
    EXPECT_LE(wait, full) << "retry " << i;
  }
  s.CheckInvariants();
}

TEST_F(BackoffTest, ExponentialBackoffWithALargeBaseDoesNotOverflow) {
  // base_ms * 2^(attempts-1) must saturate at cap_ms even when the product
  // exceeds 64 bits: 2^24 ms << 40 wraps to 0 in uint64_t arithmetic.
  JobSpec spec = Spec();
  spec.max_attempts = 50;
  spec.backoff = {BackoffKind::kExponential, 1u << 24, Limits::kBackoffCapMsMax, 0};
  const uint64_t id = Push(spec);
  // 40 attempts with an explicit 1 ms retry delay, to reach a large shift quickly.
  for (int i = 0; i < 40; ++i) {
    const Delivery d = FetchExpect(id);
    auto f = s.Fail(id, d.lease_token, "boom", false, 1);
    ASSERT_TRUE(f.ok());
    Advance(1);
  }
  ASSERT_EQ(Get(id).attempts, 40u);
  // Attempt 41 fails with the backoff: shift = min(41 - 1, 40) = 40.
  const uint64_t wait = FailOnce(id);
  EXPECT_EQ(wait, uint64_t{Limits::kBackoffCapMsMax});
  s.CheckInvariants();
}

// ------------------------------------------------------------ fail

TEST_F(SchedulerTest, FailWithNoRetryDeadLettersAtOnce) {
  // no_retry buries the job on its first attempt with the error as reason.
  JobSpec spec = Spec();
  spec.max_attempts = 10;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  auto f = s.Fail(id, d.lease_token, "bad input", true, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, JobState::kDead);
  EXPECT_EQ(f->run_at_ms, 0u);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kDead);
  EXPECT_EQ(job.last_error, "bad input");
  EXPECT_PRED_FORMAT2(Contains, job.reason, "no_retry");
  EXPECT_PRED_FORMAT2(Contains, job.reason, "bad input");
  EXPECT_EQ(CountsOf(s, "q").dead, 1u);
  EXPECT_EQ(s.Ack(id, d.lease_token, "").code(), Code::kFailedPrecondition);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, FailWithRetryDelayOverridesTheBackoff) {
  // retry_delay_ms sets the next run_at exactly; the job is DELAYED until then.
  JobSpec spec = Spec();
  spec.backoff = {BackoffKind::kFixed, 10, 0, 0};
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  auto f = s.Fail(id, d.lease_token, "later", false, 5000);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, JobState::kDelayed);
  EXPECT_EQ(f->run_at_ms, clock.NowMs() + 5000);
  EXPECT_EQ(Get(id).last_error, "later");
  Advance(4999);
  EXPECT_TRUE(Fetch().empty());
  Advance(1);
  EXPECT_EQ(FetchExpect(id).job.attempts, 2u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, FailOnTheLastAttemptDeadLetters) {
  // With max_attempts = 1 a failure is final even when a retry delay is given.
  JobSpec spec = Spec();
  spec.max_attempts = 1;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  auto f = s.Fail(id, d.lease_token, "once", false, 100);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, JobState::kDead);
  EXPECT_PRED_FORMAT2(Contains, Get(id).reason, "max attempts (1)");
  s.CheckInvariants();
}

TEST_F(SchedulerTest, FailRequestOverLimitsIsInvalid) {
  // An error above 4096 bytes or a retry delay above 365 days is INVALID_ARGUMENT, and
  // the lease is untouched.
  const uint64_t id = Push(Spec());
  const Delivery d = FetchExpect(id);
  auto e = s.Fail(id, d.lease_token, std::string(Limits::kErrorBytesMax + 1, 'x'), false, 0);
  EXPECT_EQ(e.status().code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, e.status().message(), "error");
  auto r = s.Fail(id, d.lease_token, "x", false, Limits::kDelayMsMax + 1);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, r.status().message(), "retry_delay_ms");
  EXPECT_EQ(StateOf(id), JobState::kActive);
  EXPECT_TRUE(s.Ack(id, d.lease_token, "").ok());
  s.CheckInvariants();
}

// ------------------------------------------------------------ extend

TEST_F(SchedulerTest, ExtendReplacesTheExpiry) {
  // After Extend the old expiry no longer fires and the new one does.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  spec.backoff = {BackoffKind::kFixed, 100, 0, 0};
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  Advance(800);
  auto e = s.Extend(id, d.lease_token, 1000);
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e.value(), clock.NowMs() + 1000);
  EXPECT_EQ(Get(id).lease_expires_at_ms, e.value());
  EXPECT_EQ(Get(id).lease_token, d.lease_token);

  Advance(200);  // the first expiry
  EXPECT_EQ(StateOf(id), JobState::kActive);
  EXPECT_EQ(Get(id).attempts, 1u);
  Advance(799);
  EXPECT_EQ(StateOf(id), JobState::kActive);
  Advance(1);  // the extended expiry
  EXPECT_EQ(StateOf(id), JobState::kDelayed);
  EXPECT_EQ(s.Ack(id, d.lease_token, "").code(), Code::kFailedPrecondition);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ExtendCanShortenTheLease) {
  // Extend sets the expiry to now + lease_ms, even when that is earlier than before.
  JobSpec spec = Spec();
  spec.lease_ms = 10'000;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  auto e = s.Extend(id, d.lease_token, 100);
  ASSERT_TRUE(e.ok());
  Advance(100);
  EXPECT_EQ(StateOf(id), JobState::kDelayed);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ExtendWithABadLeaseIsInvalid) {
  // lease_ms outside 100..12h is INVALID_ARGUMENT naming lease_ms; the lease is unchanged.
  const uint64_t id = Push(Spec());
  const Delivery d = FetchExpect(id);
  for (uint32_t bad : {0u, 99u, Limits::kLeaseMsMax + 1}) {
    auto e = s.Extend(id, d.lease_token, bad);
    EXPECT_EQ(e.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_PRED_FORMAT2(Contains, e.status().message(), "lease_ms");
  }
  EXPECT_EQ(Get(id).lease_expires_at_ms, d.lease_expires_at_ms);
  s.CheckInvariants();
}

// ------------------------------------------------------------ unique keys

TEST_F(SchedulerTest, UniqueKeyDeduplicatesWhileTheJobIsLive) {
  // A push with the key of a waiting, delayed or active job returns that job's
  // id with duplicate = true and creates nothing.
  JobSpec spec = Spec();
  spec.unique_key = "k";
  spec.delay_ms = 100;
  bool dup = true;
  const uint64_t id = Push(spec, &dup);
  EXPECT_FALSE(dup);
  EXPECT_EQ(Push(spec, &dup), id);  // delayed
  EXPECT_TRUE(dup);
  Advance(100);
  spec.delay_ms = 0;
  EXPECT_EQ(Push(spec, &dup), id);  // waiting
  EXPECT_TRUE(dup);
  const Delivery d = FetchExpect(id);
  EXPECT_EQ(Push(spec, &dup), id);  // active
  EXPECT_TRUE(dup);
  EXPECT_EQ(s.job_count(), 1u);
  EXPECT_EQ(CountsOf(s, "q").pushed_total, 1u);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_TRUE(s.Ack(id, d.lease_token, "").ok());
  s.CheckInvariants();
}

TEST_F(SchedulerTest, UniqueKeyDeduplicatesBeforeTheFirstPushIsDurable) {
  // The key is taken at push time, not at durability.
  JobSpec spec = Spec();
  spec.unique_key = "k";
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  auto a = s.Push(spec);
  auto b = s.Push(spec);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->id, b->id);
  EXPECT_TRUE(b->duplicate);
  s.OnDurable(journal.durable_lsn());
  EXPECT_EQ(Fetch(10).size(), 1u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, UniqueKeyIsFreedWhenTheJobEnds) {
  // After completion, cancellation or dead-lettering, the key names a new job.
  JobSpec spec = Spec();
  spec.unique_key = "k";
  bool dup = true;
  const uint64_t a = Push(spec);
  ASSERT_TRUE(s.Ack(a, FetchExpect(a).lease_token, "").ok());
  const uint64_t b = Push(spec, &dup);
  EXPECT_FALSE(dup);
  EXPECT_NE(b, a);
  ASSERT_TRUE(s.Cancel(b, "").ok());
  const uint64_t c = Push(spec, &dup);
  EXPECT_FALSE(dup);
  EXPECT_NE(c, b);
  ASSERT_TRUE(s.Fail(c, FetchExpect(c).lease_token, "x", true, 0).ok());
  const uint64_t d = Push(spec, &dup);
  EXPECT_FALSE(dup);
  EXPECT_NE(d, c);
  EXPECT_EQ(StateOf(a), JobState::kCompleted);
  EXPECT_EQ(StateOf(d), JobState::kWaiting);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, UniqueKeyIsPerQueue) {
  // The same key in two queues names two jobs.
  JobSpec a = Spec(0, "a"), b = Spec(0, "b");
  a.unique_key = b.unique_key = "k";
  bool dup = true;
  const uint64_t ia = Push(a);
  const uint64_t ib = Push(b, &dup);
  EXPECT_FALSE(dup);
  EXPECT_NE(ia, ib);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, UniqueKeyStaysTakenAcrossRetries) {
  // A failed job waiting for its retry still holds its key.
  JobSpec spec = Spec();
  spec.unique_key = "k";
  const uint64_t id = Push(spec);
  ASSERT_TRUE(s.Fail(id, FetchExpect(id).lease_token, "x", false, 0).ok());
  bool dup = false;
  EXPECT_EQ(Push(spec, &dup), id);
  EXPECT_TRUE(dup);
  s.CheckInvariants();
}

// ------------------------------------------------------------ pause / resume

TEST_F(SchedulerTest, PausedQueueDeliversNothingUntilResumed) {
  // A paused queue serves neither fetches nor consumers; Resume delivers.
  const uint64_t id = Push(Spec());
  ASSERT_TRUE(s.Pause("q").ok());
  EXPECT_TRUE(CountsOf(s, "q").paused);
  auto consumer = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", consumer).ok());
  s.Dispatch();
  Advance(1000);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_TRUE(consumer->got.empty());
  EXPECT_EQ(StateOf(id), JobState::kWaiting);

  ASSERT_TRUE(s.Resume("q").ok());
  EXPECT_FALSE(CountsOf(s, "q").paused);
  s.Dispatch();
  ASSERT_EQ(consumer->got.size(), 1u);
  EXPECT_EQ(consumer->got[0].job.id, id);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, PausedQueueKeepsAWaitingFetchUntilResume) {
  // A waiting fetch on a paused queue is served when the queue resumes.
  const uint64_t id = Push(Spec());
  ASSERT_TRUE(s.Pause("q").ok());
  FetchProbe probe;
  auto r = s.Fetch("q", 1, 5000, probe.Callback());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  Advance(100);
  EXPECT_EQ(probe.calls, 0);
  ASSERT_TRUE(s.Resume("q").ok());
  s.Dispatch();
  ASSERT_EQ(probe.calls, 1);
  EXPECT_EQ(Ids(probe.got), std::vector<uint64_t>{id});
  s.CheckInvariants();
}

TEST_F(SchedulerTest, PauseCreatesTheQueueAndResumeOfAnUnknownQueueIsNotFound) {
  // Pause may precede any push; Resume of a queue never seen is NOT_FOUND.
  ASSERT_TRUE(s.Pause("fresh").ok());
  const uint64_t id = Push(Spec(0, "fresh"));
  EXPECT_TRUE(Fetch(1, "fresh").empty());
  EXPECT_EQ(s.Resume("nope").code(), Code::kNotFound);
  ASSERT_TRUE(s.Resume("fresh").ok());
  FetchExpect(id, "fresh");
  s.CheckInvariants();
}

TEST_F(SchedulerTest, PausedQueueStillExpiresLeases) {
  // Pausing stops deliveries, not time: an active job's lease still expires.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  const uint64_t id = Push(spec);
  FetchExpect(id);
  ASSERT_TRUE(s.Pause("q").ok());
  Advance(1000);
  EXPECT_EQ(StateOf(id), JobState::kDelayed);
  s.CheckInvariants();
}

// ------------------------------------------------------------ TTL

TEST_F(SchedulerTest, TtlExpiresAJobNeverStarted) {
  // A waiting job not started within ttl_ms becomes EXPIRED with a reason.
  JobSpec spec = Spec();
  spec.ttl_ms = 1000;
  const uint64_t id = Push(spec);
  Advance(999);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  Advance(1);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kExpired);
  EXPECT_PRED_FORMAT2(Contains, job.reason, "ttl");
  EXPECT_EQ(job.finished_at_ms, clock.NowMs());
  EXPECT_TRUE(Fetch().empty());
  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.expired, 1u);
  EXPECT_EQ(c.waiting, 0u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, TtlIsCheckedAtFetchEvenBeforeATick) {
  // A job past its TTL is not delivered even if no Tick has run since.
  JobSpec spec = Spec();
  spec.ttl_ms = 1000;
  const uint64_t id = Push(spec);
  const uint64_t other = Push(Spec());
  clock.AdvanceMs(1000);
  EXPECT_EQ(Ids(Fetch(10)), std::vector<uint64_t>{other});
  EXPECT_EQ(StateOf(id), JobState::kExpired);
  EXPECT_PRED_FORMAT2(Contains, Get(id).reason, "ttl");
  s.CheckInvariants();
}

TEST_F(SchedulerTest, TtlExpiresADelayedJob) {
  // A job delayed beyond its TTL expires at the TTL without ever running.
  JobSpec spec = Spec();
  spec.delay_ms = 5000;
  spec.ttl_ms = 1000;
  const uint64_t id = Push(spec);
  Advance(1000);
  EXPECT_EQ(StateOf(id), JobState::kExpired);
  Advance(4000);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_EQ(StateOf(id), JobState::kExpired);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, TtlDoesNotApplyOnceStarted) {
  // After the first delivery the TTL no longer applies: retries outlive it.
  JobSpec spec = Spec();
  spec.ttl_ms = 1000;
  spec.lease_ms = 5000;
  spec.backoff = {BackoffKind::kFixed, 2000, 0, 0};
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  Advance(3000);
  EXPECT_EQ(StateOf(id), JobState::kActive);
  ASSERT_TRUE(s.Fail(id, d.lease_token, "x", false, 0).ok());
  Advance(2000);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  clock.AdvanceMs(10'000);
  EXPECT_EQ(FetchExpect(id).job.attempts, 2u);
  s.CheckInvariants();
}

// ------------------------------------------------------------ retention

TEST(SchedulerRetention, CompletedJobsAreForgottenByCount) {
  // Past completed_retention_count terminal jobs per queue, the oldest is forgotten.
  Limits l;
  l.completed_retention_count = 2;
  Bounded b(l);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(b.Push(Spec()));
  for (uint64_t id : ids) {
    const Delivery d = FetchFrom(b.s, "q", 1).at(0);
    ASSERT_EQ(d.job.id, id);
    ASSERT_TRUE(b.s.Ack(id, d.lease_token, "").ok());
  }
  b.s.Dispatch();
  const auto gone = b.s.Get(ids[0]);
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  EXPECT_EQ(b.s.Get(ids[1])->state, JobState::kCompleted);
  EXPECT_EQ(b.s.Get(ids[2])->state, JobState::kCompleted);
  EXPECT_EQ(CountsOf(b.s, "q").completed, 2u);
  EXPECT_EQ(CountsOf(b.s, "q").completed_total, 3u);
  EXPECT_EQ(b.s.job_count(), 2u);
  b.s.CheckInvariants();
}

TEST(SchedulerRetention, CompletedJobsAreForgottenByAge) {
  // A terminal job older than completed_retention_ms is forgotten at a Tick.
  Limits l;
  l.completed_retention_ms = 1000;
  Bounded b(l);
  const uint64_t id = b.Push(Spec());
  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  ASSERT_TRUE(b.s.Ack(id, d.lease_token, "").ok());
  b.clock.AdvanceMs(999);
  b.s.Tick();
  EXPECT_EQ(b.s.Get(id)->state, JobState::kCompleted);
  b.clock.AdvanceMs(1);
  b.s.Tick();
  EXPECT_EQ(b.s.Get(id).status().code(), Code::kNotFound);
  EXPECT_EQ(CountsOf(b.s, "q").completed, 0u);
  EXPECT_EQ(b.s.job_count(), 0u);
  b.s.CheckInvariants();
}

TEST(SchedulerRetention, CancelledAndExpiredJobsAreRetainedLikeCompleted) {
  // Cancelled and expired jobs share the completed retention; dead jobs do not.
  Limits l;
  l.completed_retention_ms = 1000;
  Bounded b(l);
  const uint64_t cancelled = b.Push(Spec());
  JobSpec ttl = Spec();
  ttl.ttl_ms = 100;
  const uint64_t expired = b.Push(ttl);
  const uint64_t dead = b.Push(Spec());
  ASSERT_TRUE(b.s.Cancel(cancelled, "").ok());
  b.clock.AdvanceMs(100);
  b.s.Tick();
  EXPECT_EQ(b.s.Get(expired)->state, JobState::kExpired);
  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  ASSERT_EQ(d.job.id, dead);
  ASSERT_TRUE(b.s.Fail(dead, d.lease_token, "x", true, 0).ok());
  const QueueCounts c = CountsOf(b.s, "q");
  EXPECT_EQ(c.cancelled, 1u);
  EXPECT_EQ(c.expired, 1u);
  EXPECT_EQ(c.dead, 1u);
  b.clock.AdvanceMs(1000);
  b.s.Tick();
  EXPECT_EQ(b.s.Get(cancelled).status().code(), Code::kNotFound);
  EXPECT_EQ(b.s.Get(expired).status().code(), Code::kNotFound);
  EXPECT_EQ(b.s.Get(dead)->state, JobState::kDead);
  b.s.CheckInvariants();
}

TEST(SchedulerRetention, DeadLettersAreBoundedByDeadMax) {
  // Past dead_max dead jobs in a queue, the oldest dead job is forgotten.
  Limits l;
  l.dead_max = 2;
  Bounded b(l);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(b.Push(Spec()));
  for (uint64_t id : ids) {
    const Delivery d = FetchFrom(b.s, "q", 1).at(0);
    ASSERT_TRUE(b.s.Fail(id, d.lease_token, "x", true, 0).ok());
  }
  b.s.Dispatch();
  EXPECT_EQ(b.s.Get(ids[0]).status().code(), Code::kNotFound);
  EXPECT_EQ(CountsOf(b.s, "q").dead, 2u);
  EXPECT_EQ(b.s.ListDead("q", 10, 0).size(), 2u);
  b.s.CheckInvariants();
}

TEST(SchedulerRetention, ForgottenJobAnswersNotFoundEverywhere) {
  // Once forgotten, the job is NOT_FOUND for get, ack and cancel.
  Limits l;
  l.completed_retention_count = 0;
  Bounded b(l);
  const uint64_t id = b.Push(Spec());
  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  ASSERT_TRUE(b.s.Ack(id, d.lease_token, "").ok());
  b.s.Dispatch();
  EXPECT_EQ(b.s.Get(id).status().code(), Code::kNotFound);
  EXPECT_EQ(b.s.Ack(id, d.lease_token, "").code(), Code::kNotFound);
  EXPECT_EQ(b.s.Cancel(id, "").status().code(), Code::kNotFound);
  b.s.CheckInvariants();
}

// ------------------------------------------------------------ dead letters

class DeadLetterTest : public SchedulerTest {
 protected:
  // Pushes `n` jobs to `queue` and buries each with no_retry; returns their ids.
  std::vector<uint64_t> Bury(int n, const std::string& queue = "q") {
    std::vector<uint64_t> ids;
    for (int i = 0; i < n; ++i) {
      const uint64_t id = Push(Spec(0, queue));
      const Delivery d = FetchExpect(id, queue);
      auto f = s.Fail(id, d.lease_token, "e" + std::to_string(i), true, 0);
      EXPECT_TRUE(f.ok());
      ids.push_back(id);
    }
    return ids;
  }
};

TEST_F(DeadLetterTest, ListDeadPagesInIdOrder) {
  // ListDead returns dead jobs with id > after_id, ascending, at most limit per page.
  const std::vector<uint64_t> ids = Bury(5);
  Push(Spec());  // a live job is never listed
  std::vector<uint64_t> seen;
  uint64_t after = 0;
  for (int page = 0; page < 10; ++page) {
    const std::vector<Job> jobs = s.ListDead("q", 2, after);
    if (jobs.empty()) break;
    EXPECT_LE(jobs.size(), 2u);
    for (const Job& j : jobs) {
      EXPECT_EQ(j.state, JobState::kDead);
      seen.push_back(j.id);
    }
    after = jobs.back().id;
  }
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(s.ListDead("q", 10, ids[2]).size(), 2u);
  EXPECT_TRUE(s.ListDead("q", 10, ids.back()).empty());
  EXPECT_TRUE(s.ListDead("other", 10, 0).empty());
  s.CheckInvariants();
}

TEST_F(DeadLetterTest, RetryDeadMakesJobsWaitingWithFreshAttempts) {
  // RetryDead moves chosen dead jobs back to WAITING with attempts = 0, skipping ids that
  // are not dead in this queue.
  const std::vector<uint64_t> ids = Bury(3);
  const uint64_t live = Push(Spec());
  const std::vector<uint64_t> other = Bury(1, "other");
  EXPECT_EQ(s.RetryDead("q", {ids[1], live, other[0], 999'999'999}), 1u);
  Job job = Get(ids[1]);
  EXPECT_EQ(job.state, JobState::kWaiting);
  EXPECT_EQ(job.attempts, 0u);
  EXPECT_TRUE(job.reason.empty());
  EXPECT_EQ(StateOf(other[0]), JobState::kDead);
  EXPECT_EQ(StateOf(ids[0]), JobState::kDead);
  EXPECT_EQ(CountsOf(s, "q").dead, 2u);
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{live, ids[1]}));
  EXPECT_EQ(Get(ids[1]).attempts, 1u);

  EXPECT_EQ(s.RetryDead("q", {}), 2u);  // all
  EXPECT_EQ(CountsOf(s, "q").dead, 0u);
  EXPECT_EQ(Ids(Fetch(10)), (std::vector<uint64_t>{ids[0], ids[2]}));
  EXPECT_EQ(s.RetryDead("nope", {}), 0u);
  s.CheckInvariants();
}

TEST_F(DeadLetterTest, PurgeDeadForgetsJobs) {
  // PurgeDead forgets the chosen dead jobs (or all), leaving live ones alone.
  const std::vector<uint64_t> ids = Bury(3);
  const uint64_t live = Push(Spec());
  EXPECT_EQ(s.PurgeDead("q", {ids[0], live}), 1u);
  EXPECT_EQ(s.Get(ids[0]).status().code(), Code::kNotFound);
  EXPECT_EQ(StateOf(live), JobState::kWaiting);
  EXPECT_EQ(s.PurgeDead("q", {}), 2u);
  EXPECT_EQ(s.Get(ids[2]).status().code(), Code::kNotFound);
  EXPECT_TRUE(s.ListDead("q", 10, 0).empty());
  EXPECT_EQ(CountsOf(s, "q").dead, 0u);
  EXPECT_EQ(s.job_count(), 1u);
  s.CheckInvariants();
}

TEST(SchedulerDeadLetters, RetryDeadRespectsQueueJobsMax) {
  // Retrying dead jobs into a full queue must not raise its live jobs above
  // queue_jobs_max (the invariant CheckInvariants aborts on).
  Limits l;
  l.queue_jobs_max = 2;
  Bounded b(l);
  const uint64_t id = b.Push(Spec());
  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  ASSERT_TRUE(b.s.Fail(id, d.lease_token, "x", true, 0).ok());
  b.Push(Spec());
  b.Push(Spec());
  (void)b.s.RetryDead("q", {});
  const QueueCounts c = CountsOf(b.s, "q");
  // ASSERT rather than EXPECT: on failure CheckInvariants below would abort.
  ASSERT_LE(c.waiting + c.delayed + c.active, l.queue_jobs_max);
  EXPECT_EQ(b.s.Get(id)->state, JobState::kDead);
  b.s.CheckInvariants();
}

// ------------------------------------------------------------ cancel

TEST_F(SchedulerTest, CancelWaitingJob) {
  // A waiting job cancelled is never delivered and keeps its reason.
  const uint64_t id = Push(Spec());
  auto c = s.Cancel(id, "not needed");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value(), JobState::kWaiting);
  const Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_EQ(job.reason, "not needed");
  EXPECT_TRUE(Fetch().empty());
  const QueueCounts q = CountsOf(s, "q");
  EXPECT_EQ(q.cancelled, 1u);
  EXPECT_EQ(q.waiting, 0u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, CancelDelayedJob) {
  // A cancelled delayed job is not promoted when its run_at comes.
  JobSpec spec = Spec();
  spec.delay_ms = 100;
  const uint64_t id = Push(spec);
  auto c = s.Cancel(id, "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value(), JobState::kDelayed);
  EXPECT_EQ(Get(id).reason, "cancelled");
  Advance(100);
  EXPECT_EQ(StateOf(id), JobState::kCancelled);
  EXPECT_TRUE(Fetch().empty());
  EXPECT_EQ(CountsOf(s, "q").delayed, 0u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, CancelActiveJob) {
  // A cancelled active job loses its lease: ack is refused and the expiry does nothing.
  JobSpec spec = Spec();
  spec.lease_ms = 1000;
  const uint64_t id = Push(spec);
  const Delivery d = FetchExpect(id);
  auto c = s.Cancel(id, "stop");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value(), JobState::kActive);
  EXPECT_EQ(Get(id).lease_token, 0u);
  const Status ack = s.Ack(id, d.lease_token, "");
  EXPECT_EQ(ack.code(), Code::kFailedPrecondition);
  EXPECT_PRED_FORMAT2(Contains, ack.message(), "cancelled");
  EXPECT_EQ(s.Fail(id, d.lease_token, "", false, 0).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.Extend(id, d.lease_token, 1000).status().code(), Code::kFailedPrecondition);
  Advance(1000);
  EXPECT_EQ(StateOf(id), JobState::kCancelled);
  EXPECT_EQ(CountsOf(s, "q").active, 0u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, CancelBeforeThePushIsDurable) {
  // A job cancelled while its push is pending never becomes visible.
  JobSpec spec = Spec();
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  auto r = s.Push(spec);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(s.Cancel(r->id, "").ok());
  s.OnDurable(journal.durable_lsn());
  s.Dispatch();
  EXPECT_TRUE(Fetch().empty());
  EXPECT_EQ(StateOf(r->id), JobState::kCancelled);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, CancelOfATerminalJobIsRefused) {
  // Completed, cancelled, expired and dead jobs cannot be cancelled; their state stays.
  const uint64_t done = Push(Spec());
  ASSERT_TRUE(s.Ack(done, FetchExpect(done).lease_token, "").ok());
  const uint64_t cancelled = Push(Spec());
  ASSERT_TRUE(s.Cancel(cancelled, "").ok());
  JobSpec ttl = Spec();
  ttl.ttl_ms = 100;
  const uint64_t expired = Push(ttl);
  Advance(100);
  const uint64_t dead = Push(Spec());
  ASSERT_TRUE(s.Fail(dead, FetchExpect(dead).lease_token, "", true, 0).ok());

  for (auto [id, state] :
       std::vector<std::pair<uint64_t, JobState>>{{done, JobState::kCompleted},
                                                  {cancelled, JobState::kCancelled},
                                                  {expired, JobState::kExpired},
                                                  {dead, JobState::kDead}}) {
    auto c = s.Cancel(id, "again");
    EXPECT_EQ(c.status().code(), Code::kFailedPrecondition) << JobStateName(state);
    EXPECT_PRED_FORMAT2(Contains, c.status().message(), JobStateName(state));
    EXPECT_EQ(StateOf(id), state);
  }
  EXPECT_EQ(s.Cancel(done, std::string(Limits::kErrorBytesMax + 1, 'r')).status().code(),
            Code::kInvalidArgument);
  s.CheckInvariants();
}

// ------------------------------------------------------------ fetch with wait

TEST_F(SchedulerTest, WaitingFetchIsServedWhenAPushBecomesDurable) {
  // A fetch with wait on an empty queue gets the job once it is pushed and durable.
  FetchProbe probe;
  auto r = s.Fetch("q", 2, 5000, probe.Callback());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(probe.calls, 0);

  JobSpec spec = Spec();
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  auto pushed = s.Push(spec);
  ASSERT_TRUE(pushed.ok());
  s.Dispatch();
  EXPECT_EQ(probe.calls, 0) << "delivered before durable";
  s.OnDurable(journal.durable_lsn());
  s.Dispatch();
  ASSERT_EQ(probe.calls, 1);
  ASSERT_EQ(probe.got.size(), 1u);
  EXPECT_EQ(probe.got[0].job.id, pushed->id);
  EXPECT_EQ(StateOf(pushed->id), JobState::kActive);
  EXPECT_EQ(Get(pushed->id).lease_token, probe.got[0].lease_token);
  // The wait's timer later finds it served and does nothing.
  Advance(5000);
  EXPECT_EQ(probe.calls, 1);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, WaitingFetchTimesOutEmpty) {
  // At its deadline a waiting fetch is answered empty, once, and takes nothing later.
  FetchProbe probe;
  auto r = s.Fetch("q", 1, 1000, probe.Callback());
  ASSERT_TRUE(r.ok());
  Advance(999);
  EXPECT_EQ(probe.calls, 0);
  Advance(1);
  EXPECT_EQ(probe.calls, 1);
  EXPECT_TRUE(probe.got.empty());
  const uint64_t id = Push(Spec());
  s.Dispatch();
  Advance(1000);
  EXPECT_EQ(probe.calls, 1);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, FetchWithWaitAnswersAtOnceWhenJobsAreReady) {
  // When jobs are ready, a fetch with wait returns them and never calls its callback.
  const uint64_t id = Push(Spec());
  FetchProbe probe;
  auto r = s.Fetch("q", 1, 1000, probe.Callback());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Ids(r.value()), std::vector<uint64_t>{id});
  Advance(2000);
  EXPECT_EQ(probe.calls, 0);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, WaitingFetchesAreServedInArrivalOrder) {
  // Two waiting fetches are served first come, first served, each up to its max.
  FetchProbe first, second;
  ASSERT_TRUE(s.Fetch("q", 2, 5000, first.Callback()).ok());
  ASSERT_TRUE(s.Fetch("q", 2, 5000, second.Callback()).ok());
  const uint64_t a = Push(Spec()), b = Push(Spec()), c = Push(Spec());
  s.Dispatch();
  ASSERT_EQ(first.calls, 1);
  ASSERT_EQ(second.calls, 1);
  EXPECT_EQ(Ids(first.got), (std::vector<uint64_t>{a, b}));
  EXPECT_EQ(Ids(second.got), std::vector<uint64_t>{c});
  s.CheckInvariants();
}

TEST_F(SchedulerTest, DrainWaitersAnswersEveryWaitingFetchOnce) {
  // For shutdown, DrainWaiters answers each waiting fetch empty at once, later
  // fetches with wait do not wait, and the drained waits' timers do nothing.
  FetchProbe a, b, later;
  ASSERT_TRUE(s.Fetch("q", 1, 5000, a.Callback()).ok());
  ASSERT_TRUE(s.Fetch("r", 1, 5000, b.Callback()).ok());
  s.DrainWaiters();
  EXPECT_EQ(a.calls, 1);
  EXPECT_TRUE(a.got.empty());
  EXPECT_EQ(b.calls, 1);
  EXPECT_TRUE(b.got.empty());
  auto r = s.Fetch("q", 1, 5000, later.Callback());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(later.calls, 1);
  EXPECT_TRUE(later.got.empty());

  const uint64_t id = Push(Spec());
  s.Dispatch();
  Advance(5000);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(later.calls, 1);
  EXPECT_EQ(StateOf(id), JobState::kWaiting);
  FetchProbe ready;
  auto got = s.Fetch("q", 1, 5000, ready.Callback());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(Ids(got.value()), std::vector<uint64_t>{id});
  EXPECT_EQ(ready.calls, 0);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, FetchArgumentsAreChecked) {
  // max must be 1..batch_max and wait_ms at most fetch_wait_ms_max.
  auto zero = s.Fetch("q", 0, 0, nullptr);
  EXPECT_EQ(zero.status().code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, zero.status().message(), "max");
  auto big = s.Fetch("q", limits.batch_max + 1, 0, nullptr);
  EXPECT_EQ(big.status().code(), Code::kInvalidArgument);
  auto wait = s.Fetch("q", 1, limits.fetch_wait_ms_max + 1, nullptr);
  EXPECT_EQ(wait.status().code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, wait.status().message(), "wait_ms");
  s.CheckInvariants();
}

TEST(SchedulerFetch, WaitingFetchesAreBounded) {
  // Past fetch_waiters_max waiting fetches on a shard, a new one is RESOURCE_EXHAUSTED.
  Limits l;
  l.fetch_waiters_max = 2;
  Bounded b(l);
  FetchProbe p1, p2, p3;
  ASSERT_TRUE(b.s.Fetch("q", 1, 1000, p1.Callback()).ok());
  ASSERT_TRUE(b.s.Fetch("r", 1, 1000, p2.Callback()).ok());
  auto r = b.s.Fetch("q", 1, 1000, p3.Callback());
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_EQ(p3.calls, 0);
  b.clock.AdvanceMs(1000);
  b.s.Tick();
  EXPECT_EQ(p1.calls, 1);
  EXPECT_EQ(p2.calls, 1);
  EXPECT_TRUE(b.s.Fetch("q", 1, 1000, p3.Callback()).ok());
  b.s.CheckInvariants();
}

// ------------------------------------------------------------ bounds

TEST(SchedulerBounds, QueueJobsMaxRefusesPushes) {
  // A queue holding queue_jobs_max live jobs refuses a push with RESOURCE_EXHAUSTED,
  // still answers duplicates, and accepts again once a job ends.
  Limits l;
  l.queue_jobs_max = 2;
  Bounded b(l);
  JobSpec keyed = Spec();
  keyed.unique_key = "k";
  const uint64_t a = b.Push(keyed);
  JobSpec delayed = Spec();
  delayed.delay_ms = 1000;
  b.Push(delayed);
  JobSpec spec = Spec();
  ASSERT_TRUE(ValidateSpec(spec, l).ok());
  auto r = b.s.Push(spec);
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_PRED_FORMAT2(Contains, r.status().message(), "queue-jobs-max");
  ASSERT_TRUE(ValidateSpec(keyed, l).ok());
  auto dup = b.s.Push(keyed);
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate);
  EXPECT_EQ(dup->id, a);
  EXPECT_TRUE(b.s.Push(Valid(Spec(0, "other"), l)).ok()) << "the bound is per queue";

  const Delivery d = FetchFrom(b.s, "q", 1).at(0);
  EXPECT_EQ(b.s.Push(spec).status().code(), Code::kResourceExhausted) << "active counts";
  ASSERT_TRUE(b.s.Ack(d.job.id, d.lease_token, "").ok());
  EXPECT_TRUE(b.s.Push(spec).ok());
  b.s.CheckInvariants();
}

TEST(SchedulerBounds, QueuesMaxRefusesNewQueues) {
  // A shard holding queues_max queues refuses to create another.
  Limits l;
  l.queues_max = 1;
  Bounded b(l);
  b.Push(Spec(0, "a"));
  JobSpec spec = Spec(0, "b");
  ASSERT_TRUE(ValidateSpec(spec, l).ok());
  auto r = b.s.Push(spec);
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_PRED_FORMAT2(Contains, r.status().message(), "queues-max");
  EXPECT_TRUE(b.s.Push(Valid(Spec(0, "a"), l)).ok());
  b.s.CheckInvariants();
}

TEST_F(SchedulerTest, RunAtTooFarAheadIsInvalid) {
  // run_at_ms beyond 365 days from now is INVALID_ARGUMENT naming run_at_ms.
  JobSpec spec = Spec();
  spec.run_at_ms = clock.NowMs() + Limits::kDelayMsMax + 1;
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  auto r = s.Push(spec);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, r.status().message(), "run_at_ms");
  EXPECT_EQ(s.job_count(), 0u);
  s.CheckInvariants();
}

// ------------------------------------------------------------ consumers and credits

TEST_F(SchedulerTest, ConsumerGetsNoMoreThanItsCredits) {
  // A consumer with 2 credits gets exactly 2 of 5 ready jobs, is told it starved,
  // and gets more after credits come back and the queue is kicked.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Push(Spec()));
  auto c = std::make_shared<FakeConsumer>(2);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  s.Dispatch();
  EXPECT_EQ(Ids(c->got), (std::vector<uint64_t>{ids[0], ids[1]}));
  EXPECT_EQ(c->credits, 0u);
  EXPECT_GE(c->starved, 1u);
  EXPECT_EQ(c->acquired - c->released, c->got.size());
  QueueCounts q = CountsOf(s, "q");
  EXPECT_EQ(q.waiting, 3u);
  EXPECT_EQ(q.active, 2u);
  EXPECT_EQ(q.subscribers, 1u);

  c->credits = 2;
  s.Kick("q");
  s.Dispatch();
  EXPECT_EQ(Ids(c->got), (std::vector<uint64_t>{ids[0], ids[1], ids[2], ids[3]}));
  EXPECT_EQ(c->acquired - c->released, c->got.size());
  for (const Delivery& d : c->got) EXPECT_EQ(StateOf(d.job.id), JobState::kActive);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ConsumerWithSpareCreditsReleasesThem) {
  // Credits acquired beyond the ready jobs are released; pushes later use them.
  auto c = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  const uint64_t a = Push(Spec());
  s.Dispatch();
  EXPECT_EQ(Ids(c->got), std::vector<uint64_t>{a});
  EXPECT_EQ(c->credits, 9u);
  const uint64_t b = Push(Spec());
  const uint64_t d = Push(Spec());
  s.Dispatch();
  EXPECT_EQ(Ids(c->got), (std::vector<uint64_t>{a, b, d}));
  EXPECT_EQ(c->credits, 7u);
  EXPECT_EQ(c->acquired - c->released, c->got.size());
  EXPECT_EQ(c->starved, 0u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, CreditsForJobsNotYetDurableAreReleased) {
  // A consumer granted credits for more jobs than could be leased (one push is
  // still pending) gets the rest back through Release.
  const uint64_t a = Push(Spec());
  JobSpec pending = Spec();
  ASSERT_TRUE(ValidateSpec(pending, limits).ok());
  ASSERT_TRUE(s.Push(pending).ok());
  auto c = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  s.Dispatch();
  EXPECT_EQ(Ids(c->got), std::vector<uint64_t>{a});
  EXPECT_EQ(c->acquired - c->released, c->got.size());
  EXPECT_EQ(c->credits, 9u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ConsumersAreServedRoundRobin) {
  // Dispatch rounds rotate between consumers; each is bounded by its own credits.
  auto a = std::make_shared<FakeConsumer>(100);
  auto b = std::make_shared<FakeConsumer>(100);
  ASSERT_TRUE(s.AddConsumer("q", a).ok());
  ASSERT_TRUE(s.AddConsumer("q", b).ok());
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(Push(Spec()));
    s.Dispatch();
  }
  EXPECT_EQ(Ids(a->got), (std::vector<uint64_t>{ids[0], ids[2]}));
  EXPECT_EQ(Ids(b->got), (std::vector<uint64_t>{ids[1], ids[3]}));

  // With 2 credits each, 5 jobs split 2 + 2 and one stays waiting.
  a->credits = b->credits = 2;
  for (int i = 0; i < 5; ++i) Push(Spec());
  s.Dispatch();
  EXPECT_EQ(a->got.size(), 4u);
  EXPECT_EQ(b->got.size(), 4u);
  EXPECT_EQ(CountsOf(s, "q").waiting, 1u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, ClosedConsumerGetsNothing) {
  // A closed consumer is never asked for credits and is dropped; an open one is served.
  auto closed = std::make_shared<FakeConsumer>(10);
  closed->closed = true;
  auto open = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", closed).ok());
  ASSERT_TRUE(s.AddConsumer("q", open).ok());
  const uint64_t a = Push(Spec());
  const uint64_t b = Push(Spec());
  s.Dispatch();
  EXPECT_TRUE(closed->got.empty());
  EXPECT_EQ(closed->acquire_calls, 0u);
  EXPECT_EQ(Ids(open->got), (std::vector<uint64_t>{a, b}));
  EXPECT_EQ(CountsOf(s, "q").subscribers, 1u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, RemovedConsumerGetsNothing) {
  // After RemoveConsumer the consumer is not offered jobs.
  auto c = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  s.RemoveConsumer("q", c.get());
  Push(Spec());
  s.Dispatch();
  EXPECT_TRUE(c->got.empty());
  EXPECT_EQ(CountsOf(s, "q").waiting, 1u);
  s.CheckInvariants();
}

TEST_F(SchedulerTest, WaitingFetchGoesBeforeConsumers) {
  // A fetch that waited is served before a consumer that has credits.
  FetchProbe probe;
  ASSERT_TRUE(s.Fetch("q", 1, 5000, probe.Callback()).ok());
  auto c = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  const uint64_t a = Push(Spec());
  const uint64_t b = Push(Spec());
  s.Dispatch();
  EXPECT_EQ(Ids(probe.got), std::vector<uint64_t>{a});
  EXPECT_EQ(Ids(c->got), std::vector<uint64_t>{b});
  s.CheckInvariants();
}

TEST_F(SchedulerTest, DeliveriesFromTickHonourDelays) {
  // A consumer with credits receives a delayed job at its run_at via Tick, not before.
  auto c = std::make_shared<FakeConsumer>(10);
  ASSERT_TRUE(s.AddConsumer("q", c).ok());
  JobSpec spec = Spec();
  spec.delay_ms = 500;
  const uint64_t id = Push(spec);
  s.Dispatch();
  Advance(499);
  EXPECT_TRUE(c->got.empty());
  EXPECT_EQ(s.NextDeadlineMs(), clock.NowMs() + 1);
  Advance(1);
  EXPECT_EQ(Ids(c->got), std::vector<uint64_t>{id});
  s.CheckInvariants();
}

// ------------------------------------------------------------ stats

TEST_F(SchedulerTest, StatsCountEveryState) {
  // Stats reports each state's count and the running totals per queue.
  const uint64_t w = Push(Spec(10));
  (void)w;
  JobSpec delayed = Spec();
  delayed.delay_ms = 1000;
  Push(delayed);
  const uint64_t a = Push(Spec(9));
  const uint64_t done = Push(Spec(8));
  const uint64_t x = Push(Spec());
  ASSERT_TRUE(s.Cancel(x, "").ok());
  std::vector<Delivery> ds = Fetch(3);
  ASSERT_EQ(ds.size(), 3u);
  ASSERT_EQ(ds[2].job.id, done);
  ASSERT_TRUE(s.Ack(done, ds[2].lease_token, "").ok());
  ASSERT_TRUE(s.Fail(a, ds[1].lease_token, "", true, 0).ok());
  Push(Spec(0, "other"));

  const QueueCounts c = CountsOf(s, "q");
  EXPECT_EQ(c.queue, "q");
  EXPECT_EQ(c.waiting, 0u);
  EXPECT_EQ(c.delayed, 1u);
  EXPECT_EQ(c.active, 1u);
  EXPECT_EQ(c.completed, 1u);
  EXPECT_EQ(c.dead, 1u);
  EXPECT_EQ(c.cancelled, 1u);
  EXPECT_EQ(c.pushed_total, 5u);
  EXPECT_EQ(c.completed_total, 1u);
  EXPECT_EQ(c.failed_total, 1u);
  EXPECT_EQ(c.dead_total, 1u);
  EXPECT_EQ(s.Stats("").size(), 2u);
  EXPECT_TRUE(s.Stats("missing").empty());
  s.CheckInvariants();
}

// ------------------------------------------------------------ validation

TEST(ValidateQueueName, RefusesEachBadName) {
  // Empty, too long and bad-character names are INVALID_ARGUMENT naming the field.
  EXPECT_TRUE(ValidateQueueName("a").ok());
  EXPECT_TRUE(ValidateQueueName("Az09._:-").ok());
  EXPECT_TRUE(ValidateQueueName(std::string(Limits::kQueueNameBytesMax, 'a')).ok());
  for (const std::string& bad :
       {std::string(), std::string(Limits::kQueueNameBytesMax + 1, 'a'), std::string("a b"),
        std::string("a/b"), std::string("é"), std::string("a\0b", 3)}) {
    const Status s = ValidateQueueName(bad);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << "name '" << bad << "'";
    EXPECT_PRED_FORMAT2(Contains, s.message(), "queue") << "name '" << bad << "'";
    const Status named = ValidateQueueName(bad, "queues[2]");
    EXPECT_PRED_FORMAT2(Contains, named.message(), "queues[2]");
  }
}

struct BadSpecCase {
  const char* what;
  std::function<void(JobSpec&)> mutate;
  Code code;
  const char* field;  // the message must name it
};

class ValidateSpecTest : public ::testing::TestWithParam<BadSpecCase> {};

TEST_P(ValidateSpecTest, RefusesTheField) {
  // Each bad field gives its Code and a message naming the field.
  Limits limits;
  limits.payload_bytes_max = 16;
  JobSpec spec = Spec();
  GetParam().mutate(spec);
  const Status s = ValidateSpec(spec, limits);
  EXPECT_EQ(s.code(), GetParam().code) << s.message();
  EXPECT_PRED_FORMAT2(Contains, s.message(), GetParam().field);
}

const std::string kLong300(300, 'x');

INSTANTIATE_TEST_SUITE_P(
    EachField, ValidateSpecTest,
    ::testing::Values(
        BadSpecCase{"queue_empty", [](JobSpec& s) { s.queue.clear(); }, Code::kInvalidArgument,
                    "queue"},
        BadSpecCase{"queue_char", [](JobSpec& s) { s.queue = "a b"; }, Code::kInvalidArgument,
                    "queue"},
        BadSpecCase{"payload", [](JobSpec& s) { s.payload = std::string(17, 'p'); },
                    Code::kResourceExhausted, "payload"},
        BadSpecCase{"priority_high", [](JobSpec& s) { s.priority = Limits::kPriorityAbsMax + 1; },
                    Code::kInvalidArgument, "priority"},
        BadSpecCase{"priority_low", [](JobSpec& s) { s.priority = -Limits::kPriorityAbsMax - 1; },
                    Code::kInvalidArgument, "priority"},
        BadSpecCase{"delay_and_run_at",
                    [](JobSpec& s) {
                      s.delay_ms = 1;
                      s.run_at_ms = 1;
                    },
                    Code::kInvalidArgument, "run_at_ms"},
        BadSpecCase{"delay", [](JobSpec& s) { s.delay_ms = Limits::kDelayMsMax + 1; },
                    Code::kInvalidArgument, "delay_ms"},
        BadSpecCase{"ttl", [](JobSpec& s) { s.ttl_ms = Limits::kDelayMsMax + 1; },
                    Code::kInvalidArgument, "ttl_ms"},
        BadSpecCase{"max_attempts",
                    [](JobSpec& s) { s.max_attempts = Limits::kMaxAttemptsMax + 1; },
                    Code::kInvalidArgument, "max_attempts"},
        BadSpecCase{"lease_low", [](JobSpec& s) { s.lease_ms = Limits::kLeaseMsMin - 1; },
                    Code::kInvalidArgument, "lease_ms"},
        BadSpecCase{"lease_high", [](JobSpec& s) { s.lease_ms = Limits::kLeaseMsMax + 1; },
                    Code::kInvalidArgument, "lease_ms"},
        BadSpecCase{"backoff_base",
                    [](JobSpec& s) {
                      s.backoff.base_ms = Limits::kBackoffBaseMsMax + 1;
                      s.backoff.cap_ms = Limits::kBackoffCapMsMax;
                    },
                    Code::kInvalidArgument, "backoff.base_ms"},
        BadSpecCase{"backoff_cap",
                    [](JobSpec& s) { s.backoff.cap_ms = Limits::kBackoffCapMsMax + 1; },
                    Code::kInvalidArgument, "backoff.cap_ms"},
        BadSpecCase{"backoff_cap_below_base",
                    [](JobSpec& s) {
                      s.backoff.base_ms = 500;
                      s.backoff.cap_ms = 499;
                    },
                    Code::kInvalidArgument, "backoff.cap_ms"},
        BadSpecCase{"jitter", [](JobSpec& s) { s.backoff.jitter_pct = 101; },
                    Code::kInvalidArgument, "backoff.jitter_pct"},
        BadSpecCase{
            "unique_key",
            [](JobSpec& s) { s.unique_key = std::string(Limits::kUniqueKeyBytesMax + 1, 'k'); },
            Code::kInvalidArgument, "unique_key"},
        BadSpecCase{"group",
                    [](JobSpec& s) { s.group = std::string(Limits::kGroupBytesMax + 1, 'g'); },
                    Code::kInvalidArgument, "group"},
        BadSpecCase{"headers_count",
                    [](JobSpec& s) {
                      for (uint32_t i = 0; i <= Limits::kHeadersMax; ++i) {
                        s.headers.emplace_back("h" + std::to_string(i), "v");
                      }
                    },
                    Code::kInvalidArgument, "headers"},
        BadSpecCase{"header_key_empty",
                    [](JobSpec& s) {
                      s.headers = {{"", "v"}};
                    },
                    Code::kInvalidArgument, "headers"},
        BadSpecCase{"header_key_long",
                    [](JobSpec& s) {
                      s.headers = {{std::string(Limits::kHeaderKeyBytesMax + 1, 'k'), "v"}};
                    },
                    Code::kInvalidArgument, "headers"},
        BadSpecCase{"header_value_long",
                    [](JobSpec& s) {
                      s.headers = {{"k", std::string(Limits::kHeaderValueBytesMax + 1, 'v')}};
                    },
                    Code::kInvalidArgument, "headers[k]"}),
    [](const ::testing::TestParamInfo<BadSpecCase>& info) { return info.param.what; });

TEST(ValidateSpec, FillsDefaultsAndAcceptsTheEdges) {
  // Zero fields take the limits' defaults; every value at its limit is accepted.
  Limits limits;
  JobSpec spec = Spec();
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  EXPECT_EQ(spec.max_attempts, limits.default_max_attempts);
  EXPECT_EQ(spec.lease_ms, limits.default_lease_ms);
  EXPECT_EQ(spec.backoff.base_ms, limits.default_backoff_base_ms);
  EXPECT_EQ(spec.backoff.cap_ms, limits.default_backoff_cap_ms);

  JobSpec edge = Spec(Limits::kPriorityAbsMax);
  edge.payload = std::string(limits.payload_bytes_max, 'p');
  edge.delay_ms = Limits::kDelayMsMax;
  edge.ttl_ms = Limits::kDelayMsMax;
  edge.max_attempts = Limits::kMaxAttemptsMax;
  edge.lease_ms = Limits::kLeaseMsMin;
  edge.backoff = {BackoffKind::kFixed, Limits::kBackoffBaseMsMax, Limits::kBackoffCapMsMax, 100};
  edge.unique_key = std::string(Limits::kUniqueKeyBytesMax, 'k');
  edge.group = std::string(Limits::kGroupBytesMax, 'g');
  for (uint32_t i = 0; i < Limits::kHeadersMax; ++i) {
    edge.headers.emplace_back(
        std::string(Limits::kHeaderKeyBytesMax - 3, 'k') + std::to_string(100 + i),
        std::string(Limits::kHeaderValueBytesMax, 'v'));
  }
  const Status st = ValidateSpec(edge, limits);
  EXPECT_TRUE(st.ok()) << st.message();
  JobSpec low = Spec(-Limits::kPriorityAbsMax);
  low.lease_ms = Limits::kLeaseMsMax;
  EXPECT_TRUE(ValidateSpec(low, limits).ok());

  // A base above the default cap raises the default cap to the base.
  JobSpec big = Spec();
  big.backoff.base_ms = limits.default_backoff_cap_ms + 1;
  ASSERT_TRUE(ValidateSpec(big, limits).ok());
  EXPECT_EQ(big.backoff.cap_ms, big.backoff.base_ms);
}

TEST(ValidateLeaseMs, NamesTheField) {
  // ValidateLeaseMs accepts 100..12h and names the given field otherwise.
  EXPECT_TRUE(ValidateLeaseMs(Limits::kLeaseMsMin, "lease_ms").ok());
  EXPECT_TRUE(ValidateLeaseMs(Limits::kLeaseMsMax, "lease_ms").ok());
  const Status s = ValidateLeaseMs(Limits::kLeaseMsMax + 1ull, "extend.lease_ms");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_PRED_FORMAT2(Contains, s.message(), "extend.lease_ms");
}

}  // namespace
}  // namespace ringq::engine

namespace ringq::engine {
namespace {

TEST(SchedulerDeadLetters, RetryDeadSkipsAJobWhoseKeyIsTakenAgain) {
  // A dead job whose unique_key now belongs to a newer live job stays dead:
  // retrying it would put two live jobs under one key.
  FakeClock clock;
  MemoryJournal journal;
  Limits limits;
  Scheduler s(0, limits, clock, journal);
  JobSpec spec;
  spec.queue = "q";
  spec.unique_key = "k";
  ASSERT_TRUE(ValidateSpec(spec, limits).ok());
  auto first = s.Push(spec);
  s.OnDurable(journal.durable_lsn());
  auto got = s.Fetch("q", 1, 0, nullptr);
  ASSERT_EQ(got->size(), 1u);
  ASSERT_TRUE(s.Fail(first->id, got->at(0).lease_token, "x", true, 0).ok());
  auto second = s.Push(spec);
  ASSERT_FALSE(second->duplicate);
  s.OnDurable(journal.durable_lsn());
  EXPECT_EQ(s.RetryDead("q", {}), 0u);
  EXPECT_EQ(s.Get(first->id)->state, JobState::kDead);
  auto third = s.Push(spec);
  EXPECT_TRUE(third->duplicate);
  EXPECT_EQ(third->id, second->id);
  s.CheckInvariants();
}

}  // namespace
}  // namespace ringq::engine
