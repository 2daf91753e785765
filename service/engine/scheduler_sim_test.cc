// Seeded simulator of the scheduler (TigerBeetle's VOPR, in small).
//
// Method: one PRNG seed drives a random sequence of pushes (random priority,
// some delayed, some with a unique key, a TTL or few attempts, some left
// pending until durable), fetches (some waiting), acks, fails, extends,
// cancels, clock advances, ticks, dispatches to two fake consumers with
// credits, pause/resume and purges. Every step is mirrored in a small
// reference model written from the contract in scheduler.h, not from
// scheduler.cc, and the two are compared after every step:
//   - no job is lost: each pushed job is in exactly the model's state (or was
//     forgotten by retention or purge, and only when the rules allowed it);
//   - no job is leased twice while its lease is valid;
//   - each delivered job is the best ready job in the model at that moment:
//     highest priority, then FIFO by the moment it became ready (a retried or
//     promoted job re-enters at the back; timers due at the same millisecond
//     fire in the order they were set);
//   - no delayed job is delivered before run_at, no job before its push is
//     durable, none past its TTL;
//   - attempts never exceed max_attempts; backoff waits stay within bounds;
//   - after a dispatch, no ready job is left while a waiting fetch or a
//     consumer with credits could take it; credits balance.
// At the end the run drains: every live job must reach a terminal state.
//
// Seeds: RINGQ_SIM_SEED=<n> runs that seed only; otherwise seeds 1..50
// (RINGQ_SIM_SEEDS=<count> for more). RINGQ_SIM_STEPS=<n> steps per seed
// (default 2000). A failure prints the seed, the step and the last operations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/consumer.h"
#include "service/engine/job.h"
#include "service/engine/journal.h"
#include "service/engine/scheduler.h"
#include "service/engine/status.h"

namespace ringq::engine {
namespace {

constexpr uint64_t kDefaultSeeds = 50;
constexpr uint64_t kDefaultSteps = 2000;
constexpr size_t kTraceOpsMax = 40;
constexpr int kConsumers = 2;
constexpr uint64_t kDrainRoundsMax = 400;
const std::string kQueue = "q";

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

Limits SimLimits() {
  Limits l;
  l.queue_jobs_max = 64;
  l.completed_retention_count = 16;
  l.completed_retention_ms = 4000;
  return l;
}

// Where a batch of deliveries came from, in the order the scheduler handed it out.
struct Event {
  enum Kind { kFetch, kConsumer, kWaiter } kind;
  uint64_t source;  // consumer index or waiter id
  std::vector<Delivery> batch;
};

class SimConsumer final : public Consumer {
 public:
  SimConsumer(std::vector<Event>* log, uint64_t index, uint32_t credits)
      : log_(log), index_(index), credits(credits) {}
  uint32_t Acquire(uint32_t want) override {
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
    delivered += batch.size();
    log_->push_back(Event{Event::kConsumer, index_, std::move(batch)});
  }
  void Starved(uint32_t) override {}
  bool Closed() const override { return closed; }

 private:
  std::vector<Event>* log_;
  uint64_t index_;

 public:
  uint32_t credits;
  bool closed = false;
  uint64_t acquired = 0, released = 0, delivered = 0;
};

// The reference model's view of one job.
struct MJob {
  uint64_t id = 0;
  int32_t priority = 0;
  JobState state = JobState::kWaiting;  // while pending: what Get reports
  bool pending = false;                 // pushed, not yet durable
  uint32_t attempts = 0, max_attempts = 0;
  Backoff backoff;
  uint32_t lease_ms = 0;
  uint64_t ttl_ms = 0;
  std::string unique_key;
  uint64_t created_at_ms = 0, run_at_ms = 0, finished_at_ms = 0;
  uint64_t token = 0, lease_expires_at_ms = 0;
  uint64_t ready_seq = 0;  // FIFO position among ready jobs
  const char* ready_why = "";
  uint64_t ready_at_ms = 0;
  uint64_t timer_seq = 0;  // when its promote or lease timer was set
  std::vector<uint64_t> old_tokens;
};

struct MWaiter {
  uint32_t max;
  uint64_t deadline_ms;
};

#define SIM_REQUIRE(cond, msg)         \
  do {                                 \
    if (!(cond)) {                     \
      std::ostringstream sim_os_;      \
      sim_os_ << msg;                  \
      Violation(#cond, sim_os_.str()); \
      return;                          \
    }                                  \
  } while (0)

class Sim {
 public:
  explicit Sim(uint64_t seed)
      : seed_(seed), rng_(seed), limits_(SimLimits()), s_(0, limits_, clock_, journal_, seed) {
    for (int i = 0; i < kConsumers; ++i) AddConsumer(static_cast<uint32_t>(R(4)));
  }

  void Run(uint64_t steps) {
    steps_ = steps;
    for (step_ = 0; step_ < steps && !failed_; ++step_) {
      Step();
      if (failed_) return;
      AfterStep(step_ % 8 == 0);
    }
    if (!failed_) Drain();
  }

  bool failed() const { return failed_; }
  const std::map<std::string, uint64_t>& seen() const { return seen_; }

 private:
  // ------------------------------------------------------------ driver

  uint64_t R(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  uint64_t Now() const { return clock_.NowMs(); }
  void Seen(const char* what) { ++seen_[what]; }

  void Trace(std::string op) {
    std::ostringstream os;
    os << "#" << step_ << " t=" << (Now() - kStartMs) << " " << op;
    trace_.push_back(os.str());
    if (trace_.size() > kTraceOpsMax) trace_.pop_front();
  }

  void Violation(const char* cond, const std::string& msg) {
    if (failed_) return;
    failed_ = true;
    std::ostringstream os;
    for (const std::string& t : trace_) os << "  " << t << "\n";
    const std::string at =
        step_ == kDrainStep ? "the final drain" : "step " + std::to_string(step_);
    ADD_FAILURE() << "scheduler sim: seed " << seed_ << " at " << at << ": " << msg
                  << "\n  (check: " << cond << ")\n  reproduce: RINGQ_SIM_SEED=" << seed_
                  << " RINGQ_SIM_STEPS=" << steps_ << "\n  last operations:\n"
                  << os.str();
  }

  void Step() {
    const uint64_t r = R(100);
    if (r < 20) return DoPush();
    if (r < 32) return DoFetch();
    if (r < 44) return DoAck();
    if (r < 52) return DoFail();
    if (r < 56) return DoExtend();
    if (r < 60) return DoCancel();
    if (r < 75) return DoAdvance();
    if (r < 79) return DoTick();
    if (r < 85) return DoDispatch();
    if (r < 93) return DoCredits();
    if (r < 97) return DoDurable();
    if (r < 98) return DoPauseResume();
    if (r < 99) return DoPurge();
    return DoReplaceConsumer();
  }

  // ------------------------------------------------------------ operations

  JobSpec RandomSpec() {
    JobSpec spec;
    spec.queue = kQueue;
    spec.payload = "p";
    spec.priority = static_cast<int32_t>(R(5)) - 2;
    const uint64_t d = R(100);
    if (d < 25) {
      spec.delay_ms = 1 + R(3000);
    } else if (d < 30) {
      spec.run_at_ms = Now() - 500 + R(1500);
    }
    if (R(5) == 0) spec.unique_key = "k" + std::to_string(R(5));
    if (R(2) == 0) spec.max_attempts = static_cast<uint32_t>(1 + R(4));
    spec.lease_ms = static_cast<uint32_t>(100 + R(3000));
    if (R(7) == 0) spec.ttl_ms = 100 + R(5000);
    spec.backoff.kind = R(2) == 0 ? BackoffKind::kFixed : BackoffKind::kExponential;
    if (R(3) != 0) spec.backoff.base_ms = static_cast<uint32_t>(1 + R(1000));
    if (R(2) == 0) {
      const uint32_t base =
          spec.backoff.base_ms != 0 ? spec.backoff.base_ms : limits_.default_backoff_base_ms;
      spec.backoff.cap_ms = std::max<uint32_t>(base, static_cast<uint32_t>(1 + R(5000)));
    }
    if (R(5) < 2) spec.backoff.jitter_pct = static_cast<uint32_t>(1 + R(100));
    return spec;
  }

  void DoPush() {
    JobSpec spec = RandomSpec();
    const Status v = ValidateSpec(spec, limits_);
    SIM_REQUIRE(v.ok(), "the simulator made an invalid spec: " << v.message());
    uint64_t holder = 0;
    if (!spec.unique_key.empty()) {
      if (auto it = unique_.find(spec.unique_key); it != unique_.end()) holder = it->second;
    }
    const uint64_t live = LiveCount();
    auto r = s_.Push(spec);
    std::ostringstream op;
    op << "push prio=" << spec.priority << " delay=" << spec.delay_ms
       << " run_at=" << (spec.run_at_ms ? int64_t(spec.run_at_ms - kStartMs) : 0)
       << " key=" << spec.unique_key << " max_attempts=" << spec.max_attempts
       << " lease=" << spec.lease_ms << " ttl=" << spec.ttl_ms << " -> "
       << (r.ok() ? std::to_string(r->id) + (r->duplicate ? " dup" : "") : r.status().message());
    Trace(op.str());
    if (holder != 0) {
      Seen("push duplicate");
      SIM_REQUIRE(r.ok() && r->duplicate && r->id == holder,
                  "push with the key of live job " << holder << " was not answered as its "
                                                   << "duplicate");
      return;
    }
    if (live >= limits_.queue_jobs_max) {
      Seen("push refused (full)");
      SIM_REQUIRE(r.status().code() == Code::kResourceExhausted,
                  "push into a queue with " << live << " live jobs was not refused");
      return;
    }
    SIM_REQUIRE(r.ok(), "push refused: " << r.status().message());
    SIM_REQUIRE(!r->duplicate, "fresh push answered as a duplicate of " << r->id);
    SIM_REQUIRE(jobs_.count(r->id) == 0 && gone_.count(r->id) == 0, "push reused id " << r->id);
    MJob j;
    j.id = r->id;
    j.priority = spec.priority;
    j.pending = true;
    j.max_attempts = spec.max_attempts;
    j.backoff = spec.backoff;
    j.lease_ms = spec.lease_ms;
    j.ttl_ms = spec.ttl_ms;
    j.unique_key = spec.unique_key;
    j.created_at_ms = Now();
    j.run_at_ms = spec.run_at_ms != 0 ? spec.run_at_ms : Now() + spec.delay_ms;
    j.state = j.run_at_ms > Now() ? JobState::kDelayed : JobState::kWaiting;
    if (!j.unique_key.empty()) unique_[j.unique_key] = j.id;
    jobs_.emplace(j.id, j);
    ids_.push_back(j.id);
    pending_.push_back(j.id);
    ++pushed_total_;
    Seen("push");
    if (R(2) == 0) DoDurable();
  }

  void DoDurable() {
    Trace("durable");
    s_.OnDurable(journal_.durable_lsn());
    for (uint64_t id : pending_) {
      MJob& j = jobs_.at(id);
      j.pending = false;
      Schedule(j, j.run_at_ms, "durable");
    }
    pending_.clear();
  }

  void DoFetch() {
    const uint32_t max = static_cast<uint32_t>(1 + R(3));
    const uint32_t wait = R(10) < 3 ? static_cast<uint32_t>(100 + R(2000)) : 0;
    const uint64_t wid = next_waiter_id_++;
    auto r = s_.Fetch(kQueue, max, wait, [this, wid](std::vector<Delivery> d) {
      log_.push_back(Event{Event::kWaiter, wid, std::move(d)});
    });
    std::ostringstream op;
    op << "fetch max=" << max << " wait=" << wait << " -> ";
    if (r.ok()) {
      for (const Delivery& d : r.value()) op << d.job.id << " ";
      if (r->empty() && wait > 0) op << "waiter " << wid;
    } else {
      op << r.status().message();
    }
    Trace(op.str());
    SIM_REQUIRE(r.ok(), "fetch refused: " << r.status().message());
    SIM_REQUIRE(log_.empty(), "fetch called a waiting fetch's callback");
    SIM_REQUIRE(r->size() <= max, "fetch returned " << r->size() << " jobs for max " << max);
    const size_t got = r->size();
    if (paused_) SIM_REQUIRE(got == 0, "fetch on a paused queue returned jobs");
    if (got > 0) log_.push_back(Event{Event::kFetch, 0, std::move(r.value())});
    if (got == 0 && wait > 0) waiters_[wid] = MWaiter{max, Now() + wait};
    ProcessLog();
    if (failed_) return;
    SyncTtl(/*all_popped=*/got < max && !paused_);
    if (failed_) return;
    if (got < max && !paused_) {
      const MJob* left = Best();
      SIM_REQUIRE(left == nullptr, "fetch returned " << got << " of max " << max << " while job "
                                                     << left->id << " was ready");
    }
  }

  // A lease to act on: mostly a live one, sometimes stale, wrong or unknown.
  std::pair<uint64_t, uint64_t> PickLease() {
    std::vector<const MJob*> active;
    for (const auto& [id, j] : jobs_) {
      if (j.state == JobState::kActive) active.push_back(&j);
    }
    if (!active.empty() && R(10) < 8) {
      const MJob* j = active[R(active.size())];
      return {j->id, j->token};
    }
    switch (R(4)) {
      case 0:
        for (int i = 0; i < 8 && !ids_.empty(); ++i) {
          auto it = jobs_.find(ids_[R(ids_.size())]);
          if (it == jobs_.end() || it->second.old_tokens.empty()) continue;
          const MJob& j = it->second;
          return {j.id, j.old_tokens[R(j.old_tokens.size())]};
        }
        [[fallthrough]];
      case 1:
        if (!ids_.empty()) return {ids_[R(ids_.size())], 1 + R(1000)};
        [[fallthrough]];
      case 2:
        return {(uint64_t{1} << 40) + (R(1000) << kShardBits), 1};
      default:
        if (!active.empty()) {
          const MJob* j = active[R(active.size())];
          return {j->id, j->token + 1};
        }
        return {(uint64_t{1} << 40), 1};
    }
  }

  // What the contract says Ack/Fail/Extend answer for this (id, token).
  Code ExpectLease(uint64_t id, uint64_t token) const {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return Code::kNotFound;
    const MJob& j = it->second;
    if (j.state != JobState::kActive || j.pending) return Code::kFailedPrecondition;
    if (token != j.token) return Code::kFailedPrecondition;
    return Code::kOk;
  }

  void DoAck() {
    const auto [id, token] = PickLease();
    const Code want = ExpectLease(id, token);
    const Status st = s_.Ack(id, token, "r");
    Trace("ack " + std::to_string(id) + " -> " + (st.ok() ? "ok" : st.message()));
    SIM_REQUIRE(st.code() == want, "ack of job " << id << " answered code " << int(st.code())
                                                 << " (" << st.message() << "), the model says "
                                                 << int(want));
    Seen(st.ok() ? "ack" : "ack refused");
    if (!st.ok()) return;
    MJob& j = jobs_.at(id);
    ++completed_total_;
    Finish(j, JobState::kCompleted);
  }

  void DoFail() {
    const auto [id, token] = PickLease();
    const bool no_retry = R(7) == 0;
    const uint64_t delay = R(3) == 0 ? 1 + R(3000) : 0;
    const Code want = ExpectLease(id, token);
    auto r = s_.Fail(id, token, "err", no_retry, delay);
    std::ostringstream op;
    op << "fail " << id << " no_retry=" << no_retry << " delay=" << delay << " -> ";
    if (r.ok()) {
      op << JobStateName(r->state) << " run_at=" << (r->run_at_ms ? r->run_at_ms - kStartMs : 0);
    } else {
      op << r.status().message();
    }
    Trace(op.str());
    SIM_REQUIRE(r.status().code() == want,
                "fail of job " << id << " answered code " << int(r.status().code()) << " ("
                               << r.status().message() << "), the model says " << int(want));
    Seen(r.ok() ? "fail" : "fail refused");
    if (!r.ok()) return;
    MJob& j = jobs_.at(id);
    ++failed_total_;
    if (no_retry || j.attempts >= j.max_attempts) {
      SIM_REQUIRE(r->state == JobState::kDead && r->run_at_ms == 0,
                  "job " << id << " (attempt " << j.attempts << " of " << j.max_attempts
                         << ", no_retry " << no_retry << ") was not dead-lettered");
      Finish(j, JobState::kDead);
      return;
    }
    ++retried_total_;
    const auto [lo, hi] = delay != 0 ? std::pair{delay, delay} : BackoffBounds(j);
    SIM_REQUIRE(r->run_at_ms >= Now() + lo && r->run_at_ms <= Now() + hi,
                "job " << id << " retries after " << (r->run_at_ms - Now()) << " ms, outside ["
                       << lo << ", " << hi << "]");
    j.old_tokens.push_back(j.token);
    Schedule(j, r->run_at_ms, "failed");
    SIM_REQUIRE(r->state == j.state, "fail answered " << JobStateName(r->state)
                                                      << ", the model says "
                                                      << JobStateName(j.state));
  }

  void DoExtend() {
    const auto [id, token] = PickLease();
    const uint32_t lease = R(10) == 0 ? 50 : static_cast<uint32_t>(100 + R(3000));
    const Code want = lease < Limits::kLeaseMsMin ? Code::kInvalidArgument : ExpectLease(id, token);
    auto r = s_.Extend(id, token, lease);
    Trace("extend " + std::to_string(id) + " lease=" + std::to_string(lease) + " -> " +
          (r.ok() ? "ok" : r.status().message()));
    SIM_REQUIRE(r.status().code() == want,
                "extend of job " << id << " answered code " << int(r.status().code()) << " ("
                                 << r.status().message() << "), the model says " << int(want));
    Seen(r.ok() ? "extend" : "extend refused");
    if (!r.ok()) return;
    MJob& j = jobs_.at(id);
    SIM_REQUIRE(r.value() == Now() + lease, "extend set the expiry to " << r.value());
    j.lease_expires_at_ms = Now() + lease;
    j.timer_seq = ++timer_counter_;
  }

  void DoCancel() {
    uint64_t id = (uint64_t{1} << 40) + (R(1000) << kShardBits);
    if (!ids_.empty() && R(10) != 0) id = ids_[R(ids_.size())];
    auto r = s_.Cancel(id, R(2) == 0 ? "" : "why");
    Trace("cancel " + std::to_string(id) + " -> " +
          (r.ok() ? std::string("was ") + JobStateName(r.value()) : r.status().message()));
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      SIM_REQUIRE(r.status().code() == Code::kNotFound,
                  "cancel of unknown or forgotten job " << id << ": " << r.status().message());
      return;
    }
    MJob& j = it->second;
    if (!IsLive(j.state)) {
      SIM_REQUIRE(r.status().code() == Code::kFailedPrecondition,
                  "cancel of " << JobStateName(j.state) << " job " << id
                               << " was not refused: " << r.status().message());
      return;
    }
    Seen("cancel");
    SIM_REQUIRE(r.ok(), "cancel of live job " << id << " refused: " << r.status().message());
    SIM_REQUIRE(r.value() == j.state, "cancel says the job was " << JobStateName(r.value())
                                                                 << ", the model says "
                                                                 << JobStateName(j.state));
    if (j.pending) {
      pending_.erase(std::find(pending_.begin(), pending_.end(), id));
      j.pending = false;
    }
    if (j.state == JobState::kActive) j.old_tokens.push_back(j.token);
    Finish(j, JobState::kCancelled);
  }

  void DoAdvance() {
    const uint64_t ms = R(10) < 8 ? R(200) : R(4000);
    clock_.AdvanceMs(ms);
    Trace("advance " + std::to_string(ms));
    if (R(5) != 0) DoTick();
  }

  void DoTick() {
    Trace("tick");
    s_.Tick();
    ApplyTimers();
    if (failed_) return;
    ProcessLog();
    if (failed_) return;
    for (const auto& [wid, w] : waiters_) {
      SIM_REQUIRE(w.deadline_ms > Now(), "waiting fetch " << wid << " outlived its deadline");
    }
    SyncTtl(false);
    if (failed_) return;
    CheckAfterDispatch();
    if (failed_) return;
    SyncRetention();
    if (failed_) return;
    // Tick trims retention: nothing too old or too many remains.
    SIM_REQUIRE(retained_.size() <= limits_.completed_retention_count,
                retained_.size() << " terminal jobs kept after a tick, more than "
                                 << limits_.completed_retention_count);
    for (uint64_t id : retained_) {
      const MJob& j = jobs_.at(id);
      SIM_REQUIRE(Now() < j.finished_at_ms + limits_.completed_retention_ms,
                  "job " << id << " kept after its completed retention");
    }
  }

  void DoDispatch() {
    Trace("dispatch");
    s_.Dispatch();
    ProcessLog();
    if (failed_) return;
    SyncTtl(false);
    if (failed_) return;
    CheckAfterDispatch();
  }

  void DoCredits() {
    const uint64_t i = R(consumers_.size());
    if (consumers_[i]->closed) return;
    const uint32_t n = static_cast<uint32_t>(1 + R(3));
    consumers_[i]->credits += n;
    Trace("credits consumer " + std::to_string(i) + " +" + std::to_string(n) + ", kick");
    s_.Kick(kQueue);
  }

  void DoPauseResume() {
    if (paused_) {
      Trace("resume");
      const Status st = s_.Resume(kQueue);
      SIM_REQUIRE(st.ok(), "resume: " << st.message());
    } else {
      Trace("pause");
      const Status st = s_.Pause(kQueue);
      SIM_REQUIRE(st.ok(), "pause: " << st.message());
    }
    paused_ = !paused_;
  }

  void DoPurge() {
    std::vector<uint64_t> dead_ids;
    for (auto& [id, j] : jobs_) {
      if (j.state == JobState::kDead) dead_ids.push_back(id);
    }
    const uint64_t dead = dead_ids.size();
    const uint64_t n = s_.PurgeDead(kQueue, {});
    Trace("purge dead -> " + std::to_string(n));
    SIM_REQUIRE(n == dead, "purge removed " << n << " dead jobs, the model has " << dead);
    for (uint64_t id : dead_ids) Forget(id);
    Seen("purged");
  }

  void DoReplaceConsumer() {
    const uint64_t i = R(consumers_.size());
    if (consumers_[i]->closed) return;
    consumers_[i]->closed = true;
    Trace("close consumer " + std::to_string(i) + ", add consumer " +
          std::to_string(consumers_.size()));
    AddConsumer(static_cast<uint32_t>(R(4)));
  }

  void AddConsumer(uint32_t credits) {
    auto c = std::make_shared<SimConsumer>(&log_, consumers_.size(), credits);
    consumers_.push_back(c);
    const Status st = s_.AddConsumer(kQueue, c);
    SIM_REQUIRE(st.ok(), "add consumer: " << st.message());
  }

  // ------------------------------------------------------------ model

  // Retention or purge dropped the job: from now on it is NOT_FOUND.
  void Forget(uint64_t id) {
    jobs_.erase(id);
    gone_.insert(id);
  }

  uint64_t LiveCount() const {
    uint64_t n = 0;
    for (const auto& [id, j] : jobs_) n += IsLive(j.state);
    return n;
  }

  bool TtlPassed(const MJob& j) const {
    return j.ttl_ms != 0 && j.attempts == 0 && Now() >= j.created_at_ms + j.ttl_ms;
  }

  bool Deliverable(const MJob& j) const {
    return !j.pending && j.state == JobState::kWaiting && !TtlPassed(j);
  }

  std::string ReadyInfo(const MJob& j) const {
    std::ostringstream os;
    os << "(prio " << j.priority << ", ready #" << j.ready_seq << ": " << j.ready_why
       << " at t=" << (j.ready_at_ms - kStartMs) << ", run_at t=" << (j.run_at_ms - kStartMs)
       << ")";
    return os.str();
  }

  // Highest priority, then earliest to become ready.
  static bool Before(const MJob& a, const MJob& b) {
    return std::tuple(-int64_t{a.priority}, a.ready_seq) <
           std::tuple(-int64_t{b.priority}, b.ready_seq);
  }

  const MJob* Best() const {
    const MJob* best = nullptr;
    for (const auto& [id, j] : jobs_) {
      if (Deliverable(j) && (best == nullptr || Before(j, *best))) best = &j;
    }
    return best;
  }

  void MakeReady(MJob& j, const char* why) {
    j.state = JobState::kWaiting;
    j.token = 0;
    j.ready_seq = ++ready_counter_;
    j.ready_why = why;
    j.ready_at_ms = Now();
  }

  void Schedule(MJob& j, uint64_t run_at_ms, const char* why) {
    j.token = 0;
    if (run_at_ms > Now()) {
      j.state = JobState::kDelayed;
      j.run_at_ms = run_at_ms;
      j.timer_seq = ++timer_counter_;
    } else {
      j.run_at_ms = std::max(run_at_ms, j.created_at_ms);
      MakeReady(j, why);
    }
  }

  void Finish(MJob& j, JobState terminal) {
    j.state = terminal;
    j.token = 0;
    j.finished_at_ms = Now();
    if (!j.unique_key.empty()) {
      auto it = unique_.find(j.unique_key);
      if (it != unique_.end() && it->second == j.id) unique_.erase(it);
    }
    if (terminal == JobState::kDead) {
      ++dead_total_;
    } else {
      finished_at_.push_back(j.finished_at_ms);
      retained_.insert(j.id);
    }
  }

  // [lo, hi] of the backoff wait after the job's current attempt, from the
  // contract: base * 2^(attempts-1) (exponential) or base (fixed), at most
  // cap, minus up to jitter_pct percent.
  std::pair<uint64_t, uint64_t> BackoffBounds(const MJob& j) const {
    const Backoff& b = j.backoff;
    uint64_t full = b.base_ms;
    if (b.kind == BackoffKind::kExponential && j.attempts > 1) {
      const uint32_t shift = std::min<uint32_t>(j.attempts - 1, 63);
      full = (uint64_t{b.base_ms} > (uint64_t{b.cap_ms} >> shift)) ? b.cap_ms
                                                                   : uint64_t{b.base_ms} << shift;
    }
    full = std::min<uint64_t>(full, b.cap_ms);
    return {full - full * b.jitter_pct / 100, full};
  }

  // Timers due at a Tick: TTLs, then promotions and lease expiries in
  // (due, order set) order, as the contract asks.
  void ApplyTimers() {
    for (auto& [id, j] : jobs_) {
      if (j.pending) continue;
      if ((j.state == JobState::kWaiting || j.state == JobState::kDelayed) && TtlPassed(j)) {
        Finish(j, JobState::kExpired);
        Seen("ttl expired at tick");
      }
    }
    struct Due {
      uint64_t due_ms, seq, id;
      bool lease;
      bool operator<(const Due& o) const {
        return std::tie(due_ms, seq) < std::tie(o.due_ms, o.seq);
      }
    };
    std::vector<Due> due;
    for (auto& [id, j] : jobs_) {
      if (j.pending) continue;
      if (j.state == JobState::kDelayed && j.run_at_ms <= Now()) {
        due.push_back({j.run_at_ms, j.timer_seq, id, false});
      }
      if (j.state == JobState::kActive && j.lease_expires_at_ms <= Now()) {
        due.push_back({j.lease_expires_at_ms, j.timer_seq, id, true});
      }
    }
    std::sort(due.begin(), due.end());
    for (const Due& d : due) {
      MJob& j = jobs_.at(d.id);
      if (!d.lease) {
        MakeReady(j, "promoted");
        continue;
      }
      ++failed_total_;
      Seen("lease expired");
      j.old_tokens.push_back(j.token);
      if (j.attempts >= j.max_attempts) {
        Finish(j, JobState::kDead);
        continue;
      }
      ++retried_total_;
      auto got = s_.Get(j.id);
      SIM_REQUIRE(got.ok(), "job " << j.id << " vanished at its lease expiry");
      const auto [lo, hi] = BackoffBounds(j);
      const uint64_t run_at = got->run_at_ms;
      SIM_REQUIRE(run_at >= Now() + lo && run_at <= Now() + hi,
                  "job " << j.id << " retries " << (run_at - Now()) << " ms after its lease "
                         << "expired, outside [" << lo << ", " << hi << "]");
      Schedule(j, run_at, "lease expired");
    }
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->second.deadline_ms <= Now()) expiring_waiters_.insert(it->first);
    }
  }

  // Checks the deliveries the last call handed out, in order.
  void ProcessLog() {
    std::vector<Event> log;
    log.swap(log_);
    have_pop_key_ = false;
    for (Event& e : log) {
      if (e.kind == Event::kWaiter) {
        auto it = waiters_.find(e.source);
        SIM_REQUIRE(it != waiters_.end(),
                    "callback of fetch " << e.source << " called, but it was answered already");
        if (e.batch.empty()) {
          SIM_REQUIRE(expiring_waiters_.count(e.source) != 0,
                      "waiting fetch " << e.source << " answered empty before its deadline "
                                       << "(due at t=" << it->second.deadline_ms - kStartMs << ")");
        } else {
          SIM_REQUIRE(e.batch.size() <= it->second.max, "waiting fetch "
                                                            << e.source << " got " << e.batch.size()
                                                            << " for max " << it->second.max);
        }
        Seen(e.batch.empty() ? "fetch wait timed out" : "fetch wait served");
        waiters_.erase(it);
        expiring_waiters_.erase(e.source);
      }
      if (e.kind == Event::kConsumer) {
        SIM_REQUIRE(!consumers_[e.source]->closed, "closed consumer " << e.source << " got jobs");
        SIM_REQUIRE(!e.batch.empty(), "consumer " << e.source << " got an empty batch");
      }
      for (const Delivery& d : e.batch) {
        Delivered(d);
        if (failed_) return;
      }
    }
    SIM_REQUIRE(expiring_waiters_.empty(), "waiting fetch " << *expiring_waiters_.begin()
                                                            << " was not answered at its "
                                                            << "deadline");
  }

  void Delivered(const Delivery& d) {
    Seen("delivered");
    auto it = jobs_.find(d.job.id);
    SIM_REQUIRE(it != jobs_.end(), "delivered job " << d.job.id << " the model does not know");
    MJob& j = it->second;
    std::ostringstream who;
    who << "job " << j.id << " " << ReadyInfo(j);
    SIM_REQUIRE(!paused_, "delivered " << who.str() << " from a paused queue");
    SIM_REQUIRE(j.state != JobState::kActive,
                "leased " << who.str() << " twice while its lease was valid");
    SIM_REQUIRE(!j.pending, "delivered " << who.str() << " before its push was durable");
    SIM_REQUIRE(j.state == JobState::kWaiting,
                "delivered " << who.str() << " that is " << JobStateName(j.state));
    SIM_REQUIRE(Now() >= j.run_at_ms,
                "delivered " << who.str() << " " << (j.run_at_ms - Now()) << " ms early");
    SIM_REQUIRE(!TtlPassed(j), "delivered " << who.str() << " past its TTL");
    const MJob* best = Best();
    SIM_REQUIRE(best == &j, "delivered " << who.str() << " but job " << best->id << " "
                                         << ReadyInfo(*best) << " comes first");
    SIM_REQUIRE(d.job.attempts == j.attempts + 1,
                "delivery of " << who.str() << " says attempt " << d.job.attempts
                               << ", the model says " << j.attempts + 1);
    SIM_REQUIRE(d.job.attempts <= j.max_attempts, "delivered " << who.str() << " for attempt "
                                                               << d.job.attempts << " of "
                                                               << j.max_attempts);
    SIM_REQUIRE(d.job.state == JobState::kActive, "delivery snapshot is not active");
    SIM_REQUIRE(d.lease_token != 0, "delivery without a lease token");
    SIM_REQUIRE(
        std::find(j.old_tokens.begin(), j.old_tokens.end(), d.lease_token) == j.old_tokens.end(),
        "delivery reused an old lease token of " << who.str());
    SIM_REQUIRE(d.lease_expires_at_ms == Now() + j.lease_ms,
                "lease of " << who.str() << " expires at the wrong time");
    have_pop_key_ = true;
    last_pop_key_ = std::tuple(-int64_t{j.priority}, j.ready_seq);
    ++j.attempts;
    j.state = JobState::kActive;
    j.token = d.lease_token;
    j.lease_expires_at_ms = d.lease_expires_at_ms;
    j.timer_seq = ++timer_counter_;
  }

  // A waiting job past its TTL expires lazily when a fetch or dispatch pops
  // it. Those the last call popped (ordered before its last delivery, or all
  // when it ran out of jobs) must be EXPIRED; the rest may be either.
  void SyncTtl(bool all_popped) {
    for (auto& [id, j] : jobs_) {
      if (j.pending || j.state != JobState::kWaiting || !TtlPassed(j)) continue;
      auto got = s_.Get(id);
      SIM_REQUIRE(got.ok(), "job " << id << " vanished while waiting");
      const bool popped = all_popped || (have_pop_key_ && std::tuple(-int64_t{j.priority},
                                                                     j.ready_seq) < last_pop_key_);
      if (got->state == JobState::kWaiting) {
        SIM_REQUIRE(!popped, "job " << id << " past its TTL was passed over but not expired");
        continue;
      }
      SIM_REQUIRE(got->state == JobState::kExpired,
                  "job " << id << " past its TTL is " << JobStateName(got->state));
      SIM_REQUIRE(got->finished_at_ms == Now(), "job " << id << " expired at the wrong time");
      Finish(j, JobState::kExpired);
      Seen("ttl expired at pop");
    }
  }

  // After a dispatch: no ready job while someone could take it; credits balance.
  void CheckAfterDispatch() {
    for (size_t i = 0; i < consumers_.size(); ++i) {
      const SimConsumer& c = *consumers_[i];
      SIM_REQUIRE(c.acquired == c.released + c.delivered,
                  "consumer " << i << " acquired " << c.acquired << " credits, released "
                              << c.released << ", got " << c.delivered << " jobs");
    }
    if (paused_) return;
    const MJob* ready = Best();
    if (ready == nullptr) return;
    SIM_REQUIRE(waiters_.empty(), "job " << ready->id << " stays ready while fetch "
                                         << waiters_.begin()->first << " waits");
    for (size_t i = 0; i < consumers_.size(); ++i) {
      const SimConsumer& c = *consumers_[i];
      SIM_REQUIRE(c.closed || c.credits == 0, "job " << ready->id << " stays ready while "
                                                     << "consumer " << i << " has " << c.credits
                                                     << " credits");
    }
  }

  // Terminal jobs the scheduler forgot: only when retention allowed it, oldest first.
  void SyncRetention() {
    for (auto it = retained_.begin(); it != retained_.end();) {
      MJob& j = jobs_.at(*it);
      auto got = s_.Get(j.id);
      if (got.ok()) {
        ++it;
        continue;
      }
      SIM_REQUIRE(got.status().code() == Code::kNotFound, got.status().message());
      const bool too_old = Now() >= j.finished_at_ms + limits_.completed_retention_ms;
      const uint64_t newer = static_cast<uint64_t>(
          finished_at_.end() -
          std::lower_bound(finished_at_.begin(), finished_at_.end(), j.finished_at_ms));
      SIM_REQUIRE(too_old || newer > limits_.completed_retention_count,
                  JobStateName(j.state)
                      << " job " << j.id << " forgotten " << (Now() - j.finished_at_ms)
                      << " ms after it ended with " << newer << " terminal jobs at or after it");
      max_forgotten_finished_ms_ = std::max(max_forgotten_finished_ms_, j.finished_at_ms);
      const uint64_t id = j.id;
      it = retained_.erase(it);
      Forget(id);
      Seen("forgotten by retention");
    }
    for (uint64_t id : retained_) {
      SIM_REQUIRE(jobs_.at(id).finished_at_ms >= max_forgotten_finished_ms_,
                  "job " << id << " kept while a job that ended later was forgotten");
    }
  }

  // ------------------------------------------------------------ comparison

  void AfterStep(bool sweep) {
    s_.CheckInvariants();
    SyncRetention();
    if (failed_) return;
    CheckCounts();
    if (failed_) return;
    if (sweep) Sweep();
  }

  void CheckCounts() {
    QueueCounts m;
    uint64_t present = 0;
    for (const auto& [id, j] : jobs_) {
      ++present;
      switch (j.state) {
        case JobState::kWaiting:
          ++m.waiting;
          break;
        case JobState::kDelayed:
          ++m.delayed;
          break;
        case JobState::kActive:
          ++m.active;
          break;
        case JobState::kCompleted:
          ++m.completed;
          break;
        case JobState::kDead:
          ++m.dead;
          break;
        case JobState::kCancelled:
          ++m.cancelled;
          break;
        case JobState::kExpired:
          ++m.expired;
          break;
      }
    }
    const std::vector<QueueCounts> all = s_.Stats(kQueue);
    SIM_REQUIRE(all.size() == 1, "Stats has no queue " << kQueue);
    const QueueCounts& c = all[0];
    auto show = [](const QueueCounts& q) {
      std::ostringstream os;
      os << "waiting " << q.waiting << " delayed " << q.delayed << " active " << q.active
         << " completed " << q.completed << " dead " << q.dead << " cancelled " << q.cancelled
         << " expired " << q.expired << " pushed " << q.pushed_total << " completed_total "
         << q.completed_total << " failed " << q.failed_total << " retried " << q.retried_total
         << " dead_total " << q.dead_total << " paused " << q.paused;
      return os.str();
    };
    m.pushed_total = pushed_total_;
    m.completed_total = completed_total_;
    m.failed_total = failed_total_;
    m.retried_total = retried_total_;
    m.dead_total = dead_total_;
    m.paused = paused_;
    SIM_REQUIRE(show(c) == show(m),
                "stats differ:\n    scheduler: " << show(c) << "\n    model:     " << show(m));
    SIM_REQUIRE(s_.job_count() == present,
                "scheduler holds " << s_.job_count() << " jobs, the model " << present);
  }

  // Every job the model knows is in the scheduler, in the model's state.
  void Sweep() {
    for (const auto& [id, j] : jobs_) {
      auto got = s_.Get(id);
      SIM_REQUIRE(got.ok(), JobStateName(j.state)
                                << " job " << id << " is lost: " << got.status().message());
      const Job& g = got.value();
      SIM_REQUIRE(g.state == j.state, "job " << id << " is " << JobStateName(g.state)
                                             << ", the model says " << JobStateName(j.state)
                                             << (j.pending ? " (pending)" : ""));
      SIM_REQUIRE(g.attempts == j.attempts,
                  "job " << id << " has " << g.attempts << " attempts, the model " << j.attempts);
      SIM_REQUIRE(g.attempts <= g.max_attempts, "job " << id << " exceeded max_attempts");
      SIM_REQUIRE(g.priority == j.priority && g.max_attempts == j.max_attempts,
                  "job " << id << " changed its spec");
      if (j.state == JobState::kDelayed || j.state == JobState::kWaiting) {
        SIM_REQUIRE(g.run_at_ms == j.run_at_ms, "job " << id << " run_at differs");
      }
      if (j.state == JobState::kActive) {
        SIM_REQUIRE(g.lease_token == j.token && g.lease_expires_at_ms == j.lease_expires_at_ms,
                    "job " << id << " lease differs");
      }
      if (!IsLive(j.state)) {
        SIM_REQUIRE(g.finished_at_ms == j.finished_at_ms, "job " << id << " finished_at differs");
        SIM_REQUIRE(j.state == JobState::kCompleted || !g.reason.empty(),
                    JobStateName(j.state) << " job " << id << " has no reason");
      }
      if (j.state == JobState::kExpired) {
        SIM_REQUIRE(g.reason.find("ttl") != std::string::npos,
                    "expired job " << id << " reason: " << g.reason);
      }
    }
  }

  // Resumes, makes everything durable, gives credits and acks whatever
  // arrives until no job is live: a job stuck anywhere fails the run.
  void Drain() {
    step_ = kDrainStep;
    if (paused_) DoPauseResume();
    DoDurable();
    for (auto& c : consumers_) {
      if (!c->closed) c->credits += 1000;
    }
    s_.Kick(kQueue);
    for (uint64_t round = 0; round < kDrainRoundsMax && LiveCount() > 0 && !failed_; ++round) {
      DoDispatch();
      for (auto& [id, j] : jobs_) {
        if (failed_) return;
        if (j.state != JobState::kActive) continue;
        const Status st = s_.Ack(id, j.token, "");
        SIM_REQUIRE(st.ok(), "drain: ack of job " << id << ": " << st.message());
        ++completed_total_;
        Finish(j, JobState::kCompleted);
      }
      clock_.AdvanceMs(1000);
      DoTick();
      if (!failed_) AfterStep(true);
    }
    if (failed_) return;
    for (const auto& [id, j] : jobs_) {
      SIM_REQUIRE(!IsLive(j.state), JobStateName(j.state)
                                        << " job " << id << " never finished while draining");
    }
    SIM_REQUIRE(waiters_.empty(),
                "waiting fetch " << waiters_.begin()->first << " was never answered");
    for (uint64_t id : gone_) {
      SIM_REQUIRE(s_.Get(id).status().code() == Code::kNotFound,
                  "forgotten job " << id << " is back");
    }
  }

  static constexpr uint64_t kStartMs = 1'700'000'000'000ull;
  static constexpr uint64_t kDrainStep = ~uint64_t{0};

  const uint64_t seed_;
  std::mt19937_64 rng_;
  FakeClock clock_{kStartMs};
  MemoryJournal journal_;
  const Limits limits_;
  Scheduler s_;

  std::vector<Event> log_;
  std::vector<std::shared_ptr<SimConsumer>> consumers_;

  std::map<uint64_t, MJob> jobs_;      // every job the scheduler must still know
  std::unordered_set<uint64_t> gone_;  // forgotten by retention or purge
  std::vector<uint64_t> ids_;
  std::vector<uint64_t> pending_;
  std::unordered_map<std::string, uint64_t> unique_;
  std::map<uint64_t, MWaiter> waiters_;
  std::set<uint64_t> expiring_waiters_;
  std::set<uint64_t> retained_;        // terminal, not dead, not yet forgotten
  std::vector<uint64_t> finished_at_;  // of every such job ever, ascending
  uint64_t max_forgotten_finished_ms_ = 0;
  bool paused_ = false;
  uint64_t next_waiter_id_ = 1;
  uint64_t ready_counter_ = 0, timer_counter_ = 0;
  bool have_pop_key_ = false;
  std::tuple<int64_t, uint64_t> last_pop_key_;
  uint64_t pushed_total_ = 0, completed_total_ = 0, failed_total_ = 0, retried_total_ = 0,
           dead_total_ = 0;
  std::map<std::string, uint64_t> seen_;  // how often each path was taken

  uint64_t step_ = 0, steps_ = 0;
  bool failed_ = false;
  std::deque<std::string> trace_;
};

TEST(SchedulerSim, RandomSequencesMatchTheModel) {
  // Runs each seed's random operation sequence against the reference model
  // and stops at the first seed that breaks a property (printing it).
  const uint64_t steps = EnvU64("RINGQ_SIM_STEPS", kDefaultSteps);
  std::vector<uint64_t> seeds;
  if (std::getenv("RINGQ_SIM_SEED") != nullptr) {
    seeds.push_back(EnvU64("RINGQ_SIM_SEED", 1));
  } else {
    const uint64_t n = EnvU64("RINGQ_SIM_SEEDS", kDefaultSeeds);
    for (uint64_t seed = 1; seed <= n; ++seed) seeds.push_back(seed);
  }
  std::map<std::string, uint64_t> seen;
  uint64_t runs = 0;
  for (uint64_t seed : seeds) {
    ++runs;
    SCOPED_TRACE("RINGQ_SIM_SEED=" + std::to_string(seed));
    Sim sim(seed);
    sim.Run(steps);
    for (const auto& [what, n] : sim.seen()) seen[what] += n;
    if (sim.failed()) break;
  }
  std::printf("scheduler sim: %llu seeds x %llu steps; paths taken:\n",
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(steps));
  for (const auto& [what, n] : seen) {
    std::printf("  %-24s %llu\n", what.c_str(), static_cast<unsigned long long>(n));
  }
}

}  // namespace
}  // namespace ringq::engine
