// Scheduler: the job state machine of one shard. Pure logic over commands and
// the injected clock: no threads, no I/O, no locks.
//
// Thread: owned by one shard thread; every call on that thread.
//
// Lifecycle of a job:
//   Push -> (pending until durable) -> WAITING or DELAYED
//   DELAYED --run_at reached--> WAITING
//   WAITING --dispatch/fetch--> ACTIVE (attempts += 1, new lease token)
//   ACTIVE --ack--> COMPLETED            --fail/lease expiry--> DELAYED|WAITING|DEAD
//   WAITING|DELAYED|ACTIVE --cancel--> CANCELLED
//   WAITING|DELAYED (never started) --ttl--> EXPIRED
//   DEAD --RetryDead--> WAITING (attempts = 0)
// Terminal jobs (COMPLETED, CANCELLED, EXPIRED) are kept for the completed
// retention (count and age per queue) and then forgotten; DEAD jobs stay until
// retried or purged, at most Limits::dead_max per queue.
//
// Invariants (checked by CheckInvariants in tests):
//   waiting + delayed + active of a queue == its live jobs, <= queue_jobs_max
//   a job is ACTIVE  <=>  lease_token != 0
//   no job is delivered before its push record is durable
//   no delayed job is delivered before run_at_ms
//
// Every mutation appends a Record to the Journal. Methods that answer a
// client return a Result; the shard releases that answer once the journal is
// durable up to the LSN current after the call.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/consumer.h"
#include "service/engine/job.h"
#include "service/engine/journal.h"
#include "service/engine/probe.h"

namespace ringq::engine {

// Job ids carry their shard in the low bits so any thread can route them.
inline constexpr uint32_t kShardBits = 8;
inline constexpr uint32_t kShardsMax = 1u << kShardBits;
inline uint32_t ShardOfJob(uint64_t id) { return static_cast<uint32_t>(id & (kShardsMax - 1)); }

struct PushResult {
  uint64_t id = 0;
  bool duplicate = false;
};

struct FailResult {
  JobState state = JobState::kWaiting;
  uint64_t run_at_ms = 0;
};

struct QueueCounts {
  std::string queue;
  bool paused = false;
  uint64_t waiting = 0, delayed = 0, active = 0;
  uint64_t completed = 0, dead = 0, cancelled = 0, expired = 0;
  uint64_t pushed_total = 0, completed_total = 0, failed_total = 0, retried_total = 0,
           dead_total = 0;
  uint64_t subscribers = 0;
};

// Completion of a waiting Fetch: its deliveries (empty on timeout).
using FetchCallback = std::function<void(std::vector<Delivery>)>;

class Scheduler {
 public:
  Scheduler(uint32_t shard_index, const Limits& limits, const Clock& clock, Journal& journal,
            uint64_t seed = 0x9e3779b97f4a7c15ull);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // --- recovery ---
  // Rebuilds the state from recovered jobs, before the shard starts and with
  // nothing logged. Active jobs come back waiting, their interrupted attempt
  // not counted (its worker's stream ended with the server).
  void Restore(std::vector<Job> jobs, const std::vector<std::string>& paused_queues);

  // --- producer ---
  // `spec` must have passed ValidateSpec. The job becomes deliverable once its
  // record is durable (OnDurable).
  Result<PushResult> Push(JobSpec spec);

  // --- workers ---
  // Leases up to `max` ready jobs of `queue` now. If none is ready and
  // wait_ms > 0, registers a waiter: `done` is called (on this thread) with
  // the deliveries when jobs arrive, or empty when the wait runs out (or at
  // once when draining for shutdown); the Result is then empty. In short:
  // an empty Result with wait_ms > 0 means done is (or was) called exactly
  // once; otherwise done is never called.
  Result<std::vector<Delivery>> Fetch(const std::string& queue, uint32_t max, uint32_t wait_ms,
                                      FetchCallback done);
  Status Ack(uint64_t id, uint64_t token, std::string result);
  Result<FailResult> Fail(uint64_t id, uint64_t token, std::string error, bool no_retry,
                          uint64_t retry_delay_ms);
  Result<uint64_t> Extend(uint64_t id, uint64_t token, uint32_t lease_ms);
  // Gives a leased job back because its worker went away (stream closed).
  // If the worker never received it (`attempted` false) the attempt is not
  // counted; otherwise it counts like a failure, but retries without backoff.
  // A stale token or a job no longer active is ignored.
  void Release(uint64_t id, uint64_t token, bool attempted);

  // Registers a consumer for a queue (creating the queue). It is dropped when
  // it reports Closed(), or by RemoveConsumer.
  Status AddConsumer(const std::string& queue, std::shared_ptr<Consumer> consumer);
  void RemoveConsumer(const std::string& queue, const Consumer* consumer);
  // Asks for a dispatch of `queue` (a consumer of it got credits back).
  void Kick(const std::string& queue);

  // --- admin ---
  Result<Job> Get(uint64_t id) const;
  Result<JobState> Cancel(uint64_t id, std::string reason);
  Status Pause(const std::string& queue);
  Status Resume(const std::string& queue);
  std::vector<QueueCounts> Stats(const std::string& queue) const;  // empty name: all
  // Dead jobs of `queue` with id > after_id, ascending, at most `limit`.
  std::vector<Job> ListDead(const std::string& queue, uint32_t limit, uint64_t after_id) const;
  // ids empty: all dead jobs of the queue. Unknown or non-dead ids are skipped.
  uint64_t RetryDead(const std::string& queue, const std::vector<uint64_t>& ids);
  uint64_t PurgeDead(const std::string& queue, const std::vector<uint64_t>& ids);

  // --- time and durability ---
  // Fires due timers: delayed promotions, lease expiries, TTLs, fetch
  // timeouts, retention. Then dispatches.
  void Tick();
  // The journal is durable up to `lsn`: pushed jobs up to it become visible.
  void OnDurable(uint64_t lsn);
  // Hands ready jobs to waiters and consumers of queues that changed.
  void Dispatch();
  // Answers every waiting Fetch now (empty), for shutdown. Later Fetch calls
  // do not wait.
  void DrainWaiters();
  // Epoch ms of the next timer, or UINT64_MAX when none.
  uint64_t NextDeadlineMs() const;

  // --- metrics ---
  ShardProbe& probe() { return probe_; }
  const ShardProbe& probe() const { return probe_; }
  // Appends one entry per queue for the scrape's gauges (shard thread). Drops
  // stale ready entries on the way, as dispatch does.
  void CollectGauges(std::vector<QueueGauges>* out);

  uint32_t shard_index() const { return shard_index_; }
  size_t job_count() const { return jobs_.size(); }
  // Aborts on a broken invariant; for tests and debug checks.
  void CheckInvariants() const;

 private:
  struct ReadyEntry {
    uint64_t id;
    uint64_t generation;
  };
  struct Waiter {
    uint64_t waiter_id;
    uint32_t max;
    uint64_t deadline_ms;
    FetchCallback done;
    uint64_t started_ms;  // for the fetch-wait metric
  };
  struct Queue {
    std::string name;
    bool paused = false;
    // priority (highest first) -> FIFO of entries; stale entries skipped on pop.
    std::map<int32_t, std::deque<ReadyEntry>, std::greater<>> ready;
    uint64_t waiting = 0, delayed = 0, active = 0;
    std::deque<std::pair<uint64_t, uint64_t>> retained;  // (id, finished_at_ms)
    uint64_t kept[8] = {};  // retained jobs by JobState value
    std::set<uint64_t> dead;
    std::unordered_map<std::string, uint64_t> unique;
    std::vector<std::shared_ptr<Consumer>> consumers;
    size_t next_consumer = 0;
    std::deque<Waiter> waiters;
    uint64_t pushed_total = 0, completed_total = 0, failed_total = 0, retried_total = 0,
             dead_total = 0;
    bool dirty = false;
    bool trim_pending = false;
    // Metrics: set on first use by Cells().
    QueueCells* cells = nullptr;
  };
  enum class TimerKind : uint8_t { kPromote, kLease, kTtl, kFetch };
  struct Timer {
    uint64_t due_ms;
    uint64_t id;          // job id, or waiter id for kFetch
    uint64_t generation;  // job generation when set; stale timers are skipped
    TimerKind kind;
    uint64_t seq;         // set order: timers due at the same ms fire in this order
    std::string queue;    // kFetch only
    bool operator>(const Timer& o) const {
      return due_ms != o.due_ms ? due_ms > o.due_ms : seq > o.seq;
    }
  };
  struct Pending {
    uint64_t lsn;
    uint64_t id;
    uint64_t generation;
  };

  Queue* FindQueue(const std::string& name);
  const Queue* FindQueue(const std::string& name) const;
  Result<Queue*> GetOrCreateQueue(const std::string& name);
  Job* FindJob(uint64_t id);
  Status CheckLease(Job* job, uint64_t id, uint64_t token) const;

  void CountOut(Queue& q, JobState s);
  void CountIn(Queue& q, JobState s);
  void SetState(Queue& q, Job& job, JobState s);
  void MakeReady(Queue& q, Job& job);
  void MakeDelayed(Queue& q, Job& job, uint64_t run_at_ms);
  void Schedule(Queue& q, Job& job, uint64_t run_at_ms);
  void Finish(Queue& q, Job& job, JobState terminal, std::string reason);
  void RetryOrBury(Queue& q, Job& job, std::string error, bool no_retry, uint64_t delay_ms);
  uint64_t BackoffMs(const Job& job);
  void TrimRetention(Queue& q);
  void ForgetJob(Queue& q, uint64_t id);

  bool HasReady(Queue& q);
  bool PopReady(Queue& q, Job** out);
  Delivery Lease(Queue& q, Job& job, uint32_t lease_ms);
  QueueCells& Cells(Queue& q);
  uint64_t OldestWaitingSinceMs(Queue& q);
  std::vector<Delivery> LeaseUpTo(Queue& q, uint32_t max);
  void DispatchQueue(Queue& q);
  void FireTimer(const Timer& t);

  uint64_t NewToken();
  uint64_t Log(RecordType type, uint64_t job_id, const Job* job, std::string_view queue);
  void AddTimer(uint64_t due_ms, uint64_t id, uint64_t generation, TimerKind kind,
                std::string queue = {});

  const uint32_t shard_index_;
  const Limits limits_;
  const Clock& clock_;
  Journal& journal_;
  ShardProbe probe_;
  std::mt19937_64 rng_;
  uint64_t next_seq_ = 1;
  uint64_t next_waiter_id_ = 1;
  uint64_t next_timer_seq_ = 0;
  uint64_t waiter_count_ = 0;
  bool draining_ = false;  // no more waiting fetches
  std::unordered_map<uint64_t, Job> jobs_;
  std::unordered_map<std::string, std::unique_ptr<Queue>> queues_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::deque<Pending> pending_;
  std::vector<Queue*> dirty_;
  std::vector<Queue*> trim_;  // queues whose retention or dead letters may be over
};

}  // namespace ringq::engine
