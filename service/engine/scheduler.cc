#include "service/engine/scheduler.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <limits>
#include <string>

namespace ringq::engine {

namespace {

// Assertions stay on in release builds (STYLE.md).
#define RINGQ_CHECK(cond)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      __builtin_fprintf(stderr, "ringq: check failed: %s at %s:%d\n", #cond,   \
                        __FILE__, __LINE__);                                   \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

// Deliveries handed to one consumer per dispatch round: keeps one queue from
// holding the shard thread and batches a stream message.
constexpr uint32_t kDispatchBatchMax = 256;
// Timers fired per Tick; the rest wait for the next one (bounded loop).
constexpr uint32_t kTimersPerTickMax = 100'000;

std::string Id(uint64_t id) { return std::to_string(id); }

}  // namespace

Scheduler::Scheduler(uint32_t shard_index, const Limits& limits, const Clock& clock,
                     Journal& journal, uint64_t seed)
    : shard_index_(shard_index), limits_(limits), clock_(clock), journal_(journal),
      rng_(seed ^ shard_index) {
  RINGQ_CHECK(shard_index < kShardsMax);
}

// ---------------------------------------------------------------- helpers

uint64_t Scheduler::Log(RecordType type, uint64_t job_id, const Job* job,
                        std::string_view queue) {
  return journal_.Append(Record{type, job_id, job, queue});
}

void Scheduler::AddTimer(uint64_t due_ms, uint64_t id, uint64_t generation, TimerKind kind,
                         std::string queue) {
  timers_.push(Timer{due_ms, id, generation, kind, next_timer_seq_++, std::move(queue)});
}

uint64_t Scheduler::NewToken() {
  uint64_t t = 0;
  while (t == 0) t = rng_();
  return t;
}

Scheduler::Queue* Scheduler::FindQueue(const std::string& name) {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

const Scheduler::Queue* Scheduler::FindQueue(const std::string& name) const {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

Result<Scheduler::Queue*> Scheduler::GetOrCreateQueue(const std::string& name) {
  if (Queue* q = FindQueue(name)) return q;
  if (queues_.size() >= limits_.queues_max) {
    return ResourceExhausted("shard " + std::to_string(shard_index_) + " has " +
                             std::to_string(queues_.size()) + " queues; at most " +
                             std::to_string(limits_.queues_max) + " (--queues-max)");
  }
  auto q = std::make_unique<Queue>();
  q->name = name;
  Queue* raw = q.get();
  queues_.emplace(name, std::move(q));
  return raw;
}

Job* Scheduler::FindJob(uint64_t id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void Scheduler::CountOut(Queue& q, JobState s) {
  switch (s) {
    case JobState::kWaiting: RINGQ_CHECK(q.waiting > 0); --q.waiting; break;
    case JobState::kDelayed: RINGQ_CHECK(q.delayed > 0); --q.delayed; break;
    case JobState::kActive: RINGQ_CHECK(q.active > 0); --q.active; break;
    default: break;
  }
}

void Scheduler::CountIn(Queue& q, JobState s) {
  switch (s) {
    case JobState::kWaiting: ++q.waiting; break;
    case JobState::kDelayed: ++q.delayed; break;
    case JobState::kActive: ++q.active; break;
    default: break;
  }
}

void Scheduler::SetState(Queue& q, Job& job, JobState s) {
  CountOut(q, job.state);
  job.state = s;
  ++job.generation;
  CountIn(q, s);
  if (s != JobState::kActive) {
    job.lease_token = 0;
    job.lease_expires_at_ms = 0;
  }
}

void Scheduler::MakeReady(Queue& q, Job& job) {
  SetState(q, job, JobState::kWaiting);
  q.ready[job.priority].push_back(ReadyEntry{job.id, job.generation});
  if (!q.dirty) {
    q.dirty = true;
    dirty_.push_back(&q);
  }
  if (job.ttl_ms != 0 && job.attempts == 0) {
    AddTimer(job.created_at_ms + job.ttl_ms, job.id, job.generation, TimerKind::kTtl);
  }
}

void Scheduler::MakeDelayed(Queue& q, Job& job, uint64_t run_at_ms) {
  SetState(q, job, JobState::kDelayed);
  job.run_at_ms = run_at_ms;
  AddTimer(run_at_ms, job.id, job.generation, TimerKind::kPromote);
  if (job.ttl_ms != 0 && job.attempts == 0) {
    AddTimer(job.created_at_ms + job.ttl_ms, job.id, job.generation, TimerKind::kTtl);
  }
}

// Delayed when run_at is in the future, ready otherwise.
void Scheduler::Schedule(Queue& q, Job& job, uint64_t run_at_ms) {
  const uint64_t now = clock_.NowMs();
  if (run_at_ms > now) {
    MakeDelayed(q, job, run_at_ms);
  } else {
    job.run_at_ms = std::max(run_at_ms, job.created_at_ms);
    MakeReady(q, job);
  }
}

void Scheduler::Finish(Queue& q, Job& job, JobState terminal, std::string reason) {
  RINGQ_CHECK(!IsLive(terminal));
  SetState(q, job, terminal);
  job.finished_at_ms = clock_.NowMs();
  job.reason = std::move(reason);
  probe_.Finished(Cells(q), job, terminal, job.finished_at_ms);
  if (!job.unique_key.empty()) {
    auto it = q.unique.find(job.unique_key);
    if (it != q.unique.end() && it->second == job.id) q.unique.erase(it);
  }
  if (terminal == JobState::kDead) {
    q.dead.insert(job.id);
    ++q.dead_total;
  } else {
    q.retained.emplace_back(job.id, job.finished_at_ms);
    ++q.kept[static_cast<size_t>(terminal)];
  }
  // Forgetting is deferred to the end of the round so that no caller holds a
  // reference to a job that retention erased.
  if (!q.trim_pending) {
    q.trim_pending = true;
    trim_.push_back(&q);
  }
}

void Scheduler::ForgetJob(Queue& q, uint64_t id) {
  Log(RecordType::kForget, id, &jobs_.at(id), q.name);
  jobs_.erase(id);
}

void Scheduler::TrimRetention(Queue& q) {
  const uint64_t now = clock_.NowMs();
  q.trim_pending = false;
  while (q.dead.size() > limits_.dead_max) {
    const uint64_t oldest = *q.dead.begin();
    q.dead.erase(q.dead.begin());
    ForgetJob(q, oldest);
  }
  while (!q.retained.empty()) {
    const auto [id, at] = q.retained.front();
    const bool too_many = q.retained.size() > limits_.completed_retention_count;
    const bool too_old = now >= at + limits_.completed_retention_ms;
    if (!too_many && !too_old) break;
    q.retained.pop_front();
    --q.kept[static_cast<size_t>(jobs_.at(id).state)];
    ForgetJob(q, id);
  }
}

uint64_t Scheduler::BackoffMs(const Job& job) {
  const Backoff& b = job.backoff;
  uint64_t wait = b.base_ms;
  if (b.kind == BackoffKind::kExponential && job.attempts > 1) {
    // base * 2^shift, saturating at cap without overflowing 64 bits.
    const uint32_t shift = job.attempts - 1;
    if (shift >= 63 || static_cast<uint64_t>(b.base_ms) > (uint64_t{b.cap_ms} >> shift)) {
      wait = b.cap_ms;
    } else {
      wait = static_cast<uint64_t>(b.base_ms) << shift;
    }
  }
  wait = std::min<uint64_t>(wait, b.cap_ms);
  if (b.jitter_pct > 0 && wait > 0) {
    const uint64_t span = wait * b.jitter_pct / 100;
    if (span > 0) wait -= rng_() % (span + 1);
  }
  return wait;
}

void Scheduler::RetryOrBury(Queue& q, Job& job, std::string error, bool no_retry,
                            uint64_t delay_ms) {
  job.last_error = std::move(error);
  ++q.failed_total;
  probe_.Failed(Cells(q));
  if (no_retry) {
    Finish(q, job, JobState::kDead, "failed with no_retry: " + job.last_error);
    return;
  }
  if (job.attempts >= job.max_attempts) {
    Finish(q, job, JobState::kDead,
           "max attempts (" + std::to_string(job.max_attempts) + ") reached: " + job.last_error);
    return;
  }
  ++q.retried_total;
  probe_.Retried(Cells(q));
  const uint64_t wait = delay_ms != 0 ? delay_ms : BackoffMs(job);
  Schedule(q, job, clock_.NowMs() + wait);
}

Status Scheduler::CheckLease(Job* job, uint64_t id, uint64_t token) const {
  if (job == nullptr) return NotFound("job " + Id(id) + " not found");
  if (job->state != JobState::kActive) {
    return FailedPrecondition("job " + Id(id) + " is " + JobStateName(job->state) +
                              ", not active; its lease is gone");
  }
  if (job->lease_token != token) {
    return FailedPrecondition("lease_token is stale for job " + Id(id) +
                              " (the lease expired and the job was delivered again)");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- recovery

void Scheduler::Restore(std::vector<Job> jobs, const std::vector<std::string>& paused_queues) {
  RINGQ_CHECK(jobs_.empty() && journal_.last_lsn() == journal_.durable_lsn());
  auto queue_of = [&](const std::string& name) -> Queue& {
    if (Queue* q = FindQueue(name)) return *q;
    auto q = std::make_unique<Queue>();  // recovery never refuses a queue it had
    q->name = name;
    Queue* raw = q.get();
    queues_.emplace(name, std::move(q));
    return *raw;
  };
  for (const auto& name : paused_queues) queue_of(name).paused = true;
  // Recovery hands jobs over in id order (push order); sort only if not.
  auto by_id = [](const Job& a, const Job& b) { return a.id < b.id; };
  if (!std::is_sorted(jobs.begin(), jobs.end(), by_id)) std::sort(jobs.begin(), jobs.end(), by_id);
  jobs_.reserve(jobs.size());
  for (Job& in : jobs) {
    RINGQ_CHECK(ShardOfJob(in.id) == shard_index_);
    next_seq_ = std::max(next_seq_, (in.id >> kShardBits) + 1);
    Queue& q = queue_of(in.queue);
    Job& job = jobs_[in.id];
    job = std::move(in);
    job.lease_token = 0;
    job.lease_expires_at_ms = 0;
    if (job.state == JobState::kActive) {
      // Its worker's stream died with the server: deliver it again, and do
      // not count the interrupted attempt.
      if (job.attempts > 0) --job.attempts;
      job.state = JobState::kWaiting;
    }
    switch (job.state) {
      case JobState::kWaiting:
        CountIn(q, JobState::kWaiting);
        q.ready[job.priority].push_back(ReadyEntry{job.id, job.generation});
        if (job.ttl_ms != 0 && job.attempts == 0) {
          AddTimer(job.created_at_ms + job.ttl_ms, job.id, job.generation, TimerKind::kTtl);
        }
        break;
      case JobState::kDelayed:
        CountIn(q, JobState::kDelayed);
        AddTimer(job.run_at_ms, job.id, job.generation, TimerKind::kPromote);
        if (job.ttl_ms != 0 && job.attempts == 0) {
          AddTimer(job.created_at_ms + job.ttl_ms, job.id, job.generation, TimerKind::kTtl);
        }
        break;
      case JobState::kDead:
        q.dead.insert(job.id);
        break;
      default:
        q.retained.emplace_back(job.id, job.finished_at_ms);
        ++q.kept[static_cast<size_t>(job.state)];
        break;
    }
    if (IsLive(job.state) && !job.unique_key.empty()) q.unique.emplace(job.unique_key, job.id);
  }
  for (auto& [name, q] : queues_) {
    std::stable_sort(q->retained.begin(), q->retained.end(),
                     [](const auto& a, const auto& b) { return a.second < b.second; });
    q->dirty = true;
    dirty_.push_back(q.get());
    q->trim_pending = true;
    trim_.push_back(q.get());
  }
}

// ---------------------------------------------------------------- producer

Result<PushResult> Scheduler::Push(JobSpec spec) {
  const uint64_t now = clock_.NowMs();
  if (spec.run_at_ms > now + Limits::kDelayMsMax) {
    return InvalidArgument("run_at_ms is more than 365 days ahead");
  }
  if (Status s = journal_.CheckPushSpace(); !s.ok()) return s;
  auto qr = GetOrCreateQueue(spec.queue);
  if (!qr.ok()) return qr.status();
  Queue& q = *qr.value();
  if (!spec.unique_key.empty()) {
    if (auto it = q.unique.find(spec.unique_key); it != q.unique.end()) {
      return PushResult{it->second, true};
    }
  }
  const uint64_t live = q.waiting + q.delayed + q.active;
  if (live >= limits_.queue_jobs_max) {
    return ResourceExhausted("queue " + q.name + " holds " + std::to_string(live) +
                             " live jobs; at most " + std::to_string(limits_.queue_jobs_max) +
                             " (--queue-jobs-max)");
  }
  const uint64_t id = (next_seq_++ << kShardBits) | shard_index_;
  Job& job = jobs_[id];
  job.id = id;
  job.queue = spec.queue;
  job.payload = std::make_shared<const std::string>(std::move(spec.payload));
  job.priority = spec.priority;
  job.max_attempts = spec.max_attempts;
  job.backoff = spec.backoff;
  job.lease_ms = spec.lease_ms;
  job.ttl_ms = spec.ttl_ms;
  job.unique_key = std::move(spec.unique_key);
  job.headers = std::move(spec.headers);
  job.group = std::move(spec.group);
  job.created_at_ms = now;
  job.run_at_ms = spec.run_at_ms != 0 ? spec.run_at_ms : now + spec.delay_ms;
  // Pending until durable: counted as delayed when run_at is ahead, else waiting.
  job.state = job.run_at_ms > now ? JobState::kDelayed : JobState::kWaiting;
  CountIn(q, job.state);
  if (!job.unique_key.empty()) q.unique.emplace(job.unique_key, id);
  ++q.pushed_total;
  probe_.Pushed(Cells(q));
  const uint64_t lsn = Log(RecordType::kPush, id, &job, q.name);
  pending_.push_back(Pending{lsn, id, job.generation});
  return PushResult{id, false};
}

void Scheduler::OnDurable(uint64_t lsn) {
  while (!pending_.empty() && pending_.front().lsn <= lsn) {
    const Pending p = pending_.front();
    pending_.pop_front();
    Job* job = FindJob(p.id);
    if (job == nullptr || job->generation != p.generation) continue;  // cancelled meanwhile
    Queue* q = FindQueue(job->queue);
    RINGQ_CHECK(q != nullptr);
    Schedule(*q, *job, job->run_at_ms);
  }
}

// ---------------------------------------------------------------- workers

bool Scheduler::HasReady(Queue& q) {
  while (!q.ready.empty()) {
    auto it = q.ready.begin();
    auto& fifo = it->second;
    while (!fifo.empty()) {
      const ReadyEntry e = fifo.front();
      const Job* job = FindJob(e.id);
      if (job != nullptr && job->generation == e.generation && job->state == JobState::kWaiting) {
        return true;
      }
      fifo.pop_front();
    }
    q.ready.erase(it);
  }
  return false;
}

bool Scheduler::PopReady(Queue& q, Job** out) {
  const uint64_t now = clock_.NowMs();
  while (!q.ready.empty()) {
    auto it = q.ready.begin();
    auto& fifo = it->second;
    while (!fifo.empty()) {
      const ReadyEntry e = fifo.front();
      fifo.pop_front();
      Job* job = FindJob(e.id);
      if (job == nullptr || job->generation != e.generation ||
          job->state != JobState::kWaiting) {
        continue;  // stale entry: cancelled, expired or moved since it was queued
      }
      if (job->ttl_ms != 0 && job->attempts == 0 && now >= job->created_at_ms + job->ttl_ms) {
        Finish(q, *job, JobState::kExpired, "ttl: not started within " +
                                               std::to_string(job->ttl_ms) + " ms");
        Log(RecordType::kExpire, job->id, job, q.name);
        continue;
      }
      if (fifo.empty()) q.ready.erase(it);
      *out = job;
      return true;
    }
    q.ready.erase(it);
  }
  return false;
}

Delivery Scheduler::Lease(Queue& q, Job& job, uint32_t lease_ms) {
  const uint64_t now = clock_.NowMs();
  SetState(q, job, JobState::kActive);
  ++job.attempts;
  job.leased_at_ms = now;
  probe_.Delivered(Cells(q), job, now);
  job.lease_token = NewToken();
  job.lease_expires_at_ms = now + lease_ms;
  AddTimer(job.lease_expires_at_ms, job.id, job.generation, TimerKind::kLease);
  Log(RecordType::kLease, job.id, &job, q.name);
  return Delivery{job, job.lease_token, job.lease_expires_at_ms};
}

std::vector<Delivery> Scheduler::LeaseUpTo(Queue& q, uint32_t max) {
  std::vector<Delivery> out;
  if (q.paused) return out;
  out.reserve(std::min<uint64_t>(max, q.waiting));
  Job* job = nullptr;
  while (out.size() < max && PopReady(q, &job)) out.push_back(Lease(q, *job, job->lease_ms));
  return out;
}

Result<std::vector<Delivery>> Scheduler::Fetch(const std::string& queue, uint32_t max,
                                               uint32_t wait_ms, FetchCallback done) {
  if (max == 0 || max > limits_.batch_max) {
    return InvalidArgument("max is " + std::to_string(max) + "; must be 1.." +
                           std::to_string(limits_.batch_max) + " (--batch-max)");
  }
  if (wait_ms > limits_.fetch_wait_ms_max) {
    return InvalidArgument("wait_ms is " + std::to_string(wait_ms) + "; at most " +
                           std::to_string(limits_.fetch_wait_ms_max) + " (--fetch-wait-ms-max)");
  }
  auto qr = GetOrCreateQueue(queue);
  if (!qr.ok()) return qr.status();
  Queue& q = *qr.value();
  std::vector<Delivery> got = LeaseUpTo(q, max);
  if (!got.empty() || wait_ms == 0 || draining_) probe_.FetchAnswered(0);
  if (!got.empty() || wait_ms == 0) return got;
  if (draining_) {
    done({});
    return got;
  }
  if (waiter_count_ >= limits_.fetch_waiters_max) {
    return ResourceExhausted("shard " + std::to_string(shard_index_) + " has " +
                             std::to_string(waiter_count_) + " waiting fetches; at most " +
                             std::to_string(limits_.fetch_waiters_max) +
                             " (--fetch-waiters-max)");
  }
  const uint64_t wid = next_waiter_id_++;
  const uint64_t now = clock_.NowMs();
  const uint64_t deadline = now + wait_ms;
  q.waiters.push_back(Waiter{wid, max, deadline, std::move(done), now});
  ++waiter_count_;
  AddTimer(deadline, wid, 0, TimerKind::kFetch, q.name);
  return got;
}

Status Scheduler::Ack(uint64_t id, uint64_t token, std::string result) {
  if (result.size() > limits_.result_bytes_max) {
    return ResourceExhausted("result is " + std::to_string(result.size()) + " bytes; at most " +
                             std::to_string(limits_.result_bytes_max) + " (--result-bytes-max)");
  }
  Job* job = FindJob(id);
  if (Status s = CheckLease(job, id, token); !s.ok()) return s;
  Queue& q = *FindQueue(job->queue);
  job->result = std::move(result);
  ++q.completed_total;
  // Logged after the change: a record carries the job's new state.
  Finish(q, *job, JobState::kCompleted, "");
  Log(RecordType::kAck, id, job, q.name);
  return Status::Ok();
}

Result<FailResult> Scheduler::Fail(uint64_t id, uint64_t token, std::string error, bool no_retry,
                                   uint64_t retry_delay_ms) {
  if (error.size() > Limits::kErrorBytesMax) {
    return InvalidArgument("error is " + std::to_string(error.size()) + " bytes; at most 4096");
  }
  if (retry_delay_ms > Limits::kDelayMsMax) {
    return InvalidArgument("retry_delay_ms is " + std::to_string(retry_delay_ms) +
                           "; at most 365 days");
  }
  Job* job = FindJob(id);
  if (Status s = CheckLease(job, id, token); !s.ok()) return s;
  Queue& q = *FindQueue(job->queue);
  RetryOrBury(q, *job, std::move(error), no_retry, retry_delay_ms);
  Log(RecordType::kFail, id, job, q.name);
  return FailResult{job->state, IsLive(job->state) ? job->run_at_ms : 0};
}

Result<uint64_t> Scheduler::Extend(uint64_t id, uint64_t token, uint32_t lease_ms) {
  if (Status s = ValidateLeaseMs(lease_ms, "lease_ms"); !s.ok()) return s;
  Job* job = FindJob(id);
  if (Status s = CheckLease(job, id, token); !s.ok()) return s;
  // A new generation makes the old expiry timer stale; the token stays.
  ++job->generation;
  job->lease_expires_at_ms = clock_.NowMs() + lease_ms;
  AddTimer(job->lease_expires_at_ms, id, job->generation, TimerKind::kLease);
  Log(RecordType::kExtend, id, job, job->queue);
  return job->lease_expires_at_ms;
}

void Scheduler::Release(uint64_t id, uint64_t token, bool attempted) {
  Job* job = FindJob(id);
  if (!CheckLease(job, id, token).ok()) return;
  Queue& q = *FindQueue(job->queue);
  if (!attempted) {
    --job->attempts;
    MakeReady(q, *job);
    Log(RecordType::kFail, id, job, q.name);
    return;
  }
  RetryOrBury(q, *job, "worker disconnected", false, 1);
  Log(RecordType::kFail, id, job, q.name);
}

Status Scheduler::AddConsumer(const std::string& queue, std::shared_ptr<Consumer> consumer) {
  auto qr = GetOrCreateQueue(queue);
  if (!qr.ok()) return qr.status();
  Queue& q = *qr.value();
  q.consumers.push_back(std::move(consumer));
  if (!q.dirty) {
    q.dirty = true;
    dirty_.push_back(&q);
  }
  return Status::Ok();
}

void Scheduler::RemoveConsumer(const std::string& queue, const Consumer* consumer) {
  Queue* q = FindQueue(queue);
  if (q == nullptr) return;
  std::erase_if(q->consumers, [&](const auto& c) { return c.get() == consumer; });
}

void Scheduler::Kick(const std::string& queue) {
  Queue* q = FindQueue(queue);
  if (q == nullptr || q->dirty) return;
  q->dirty = true;
  dirty_.push_back(q);
}

void Scheduler::DispatchQueue(Queue& q) {
  q.dirty = false;
  if (q.paused) return;
  // Waiting fetches first: they asked before any credit came back.
  while (!q.waiters.empty() && HasReady(q)) {
    std::vector<Delivery> got = LeaseUpTo(q, q.waiters.front().max);
    if (got.empty()) break;  // the ready ones had expired
    Waiter w = std::move(q.waiters.front());
    q.waiters.pop_front();
    --waiter_count_;
    probe_.FetchAnswered(clock_.NowMs() - std::min(clock_.NowMs(), w.started_ms));
    w.done(std::move(got));
  }
  std::erase_if(q.consumers, [](const auto& c) { return c->Closed(); });
  // Round robin over consumers, one batch each per pass, until no job or no credit.
  size_t idle_in_row = 0;
  while (!q.consumers.empty() && idle_in_row < q.consumers.size() && HasReady(q)) {
    q.next_consumer %= q.consumers.size();
    Consumer& c = *q.consumers[q.next_consumer++];
    const uint32_t want =
        static_cast<uint32_t>(std::clamp<uint64_t>(q.waiting, 1, kDispatchBatchMax));
    const uint32_t granted = c.Acquire(want);
    if (granted == 0) {
      c.Starved(shard_index_);
      ++idle_in_row;
      continue;
    }
    idle_in_row = 0;
    std::vector<Delivery> batch = LeaseUpTo(q, granted);
    if (batch.size() < granted) c.Release(granted - static_cast<uint32_t>(batch.size()));
    if (!batch.empty()) c.Deliver(std::move(batch));
  }
}

void Scheduler::Dispatch() {
  std::vector<Queue*> trims;
  trims.swap(trim_);
  for (Queue* q : trims) TrimRetention(*q);
  // Bounded: each queue at most once per call; re-dirtied queues wait.
  std::vector<Queue*> work;
  work.swap(dirty_);
  for (Queue* q : work) DispatchQueue(*q);
}

// ---------------------------------------------------------------- admin

Result<Job> Scheduler::Get(uint64_t id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return NotFound("job " + Id(id) + " not found");
  return it->second;
}

Result<JobState> Scheduler::Cancel(uint64_t id, std::string reason) {
  if (reason.size() > Limits::kErrorBytesMax) {
    return InvalidArgument("reason is " + std::to_string(reason.size()) + " bytes; at most 4096");
  }
  Job* job = FindJob(id);
  if (job == nullptr) return NotFound("job " + Id(id) + " not found");
  if (!IsLive(job->state)) {
    return FailedPrecondition("job " + Id(id) + " is " + JobStateName(job->state) +
                              "; only waiting, delayed or active jobs can be cancelled");
  }
  const JobState before = job->state;
  Queue& q = *FindQueue(job->queue);
  Finish(q, *job, JobState::kCancelled, reason.empty() ? "cancelled" : std::move(reason));
  Log(RecordType::kCancel, id, job, q.name);
  return before;
}

Status Scheduler::Pause(const std::string& queue) {
  auto qr = GetOrCreateQueue(queue);
  if (!qr.ok()) return qr.status();
  qr.value()->paused = true;
  Log(RecordType::kPause, 0, nullptr, queue);
  return Status::Ok();
}

Status Scheduler::Resume(const std::string& queue) {
  Queue* q = FindQueue(queue);
  if (q == nullptr) return NotFound("queue " + queue + " not found");
  q->paused = false;
  if (!q->dirty) {
    q->dirty = true;
    dirty_.push_back(q);
  }
  Log(RecordType::kResume, 0, nullptr, queue);
  return Status::Ok();
}

std::vector<QueueCounts> Scheduler::Stats(const std::string& queue) const {
  std::vector<QueueCounts> out;
  auto add = [&](const Queue& q) {
    QueueCounts c;
    c.queue = q.name;
    c.paused = q.paused;
    c.waiting = q.waiting;
    c.delayed = q.delayed;
    c.active = q.active;
    c.dead = q.dead.size();
    c.completed = q.kept[static_cast<size_t>(JobState::kCompleted)];
    c.cancelled = q.kept[static_cast<size_t>(JobState::kCancelled)];
    c.expired = q.kept[static_cast<size_t>(JobState::kExpired)];
    c.pushed_total = q.pushed_total;
    c.completed_total = q.completed_total;
    c.failed_total = q.failed_total;
    c.retried_total = q.retried_total;
    c.dead_total = q.dead_total;
    c.subscribers = q.consumers.size();
    out.push_back(std::move(c));
  };
  if (!queue.empty()) {
    if (const Queue* q = FindQueue(queue)) add(*q);
    return out;
  }
  for (const auto& [name, q] : queues_) add(*q);
  return out;
}

std::vector<Job> Scheduler::ListDead(const std::string& queue, uint32_t limit,
                                     uint64_t after_id) const {
  std::vector<Job> out;
  const Queue* q = FindQueue(queue);
  if (q == nullptr) return out;
  for (auto it = q->dead.upper_bound(after_id); it != q->dead.end() && out.size() < limit; ++it) {
    out.push_back(jobs_.at(*it));
  }
  return out;
}

uint64_t Scheduler::RetryDead(const std::string& queue, const std::vector<uint64_t>& ids) {
  Queue* q = FindQueue(queue);
  if (q == nullptr) return 0;
  std::vector<uint64_t> chosen = ids.empty() ? std::vector<uint64_t>(q->dead.begin(), q->dead.end())
                                             : ids;
  uint64_t n = 0;
  for (uint64_t id : chosen) {
    // A full queue keeps the rest dead: retrying never breaks queue_jobs_max.
    if (q->waiting + q->delayed + q->active >= limits_.queue_jobs_max) break;
    if (q->dead.count(id) == 0) continue;
    Job& job = jobs_.at(id);
    // Its key now belongs to a newer live job: retrying would make a duplicate.
    if (!job.unique_key.empty() && q->unique.count(job.unique_key) != 0) continue;
    q->dead.erase(id);
    job.attempts = 0;
    job.finished_at_ms = 0;
    job.reason.clear();
    if (!job.unique_key.empty()) q->unique.emplace(job.unique_key, id);
    job.created_at_ms = clock_.NowMs();  // a fresh TTL window
    job.run_at_ms = job.created_at_ms;
    MakeReady(*q, job);
    Log(RecordType::kRetryDead, id, &job, q->name);
    ++n;
  }
  return n;
}

uint64_t Scheduler::PurgeDead(const std::string& queue, const std::vector<uint64_t>& ids) {
  Queue* q = FindQueue(queue);
  if (q == nullptr) return 0;
  std::vector<uint64_t> chosen = ids.empty() ? std::vector<uint64_t>(q->dead.begin(), q->dead.end())
                                             : ids;
  uint64_t n = 0;
  for (uint64_t id : chosen) {
    if (q->dead.erase(id) == 0) continue;
    Log(RecordType::kPurgeDead, id, &jobs_.at(id), q->name);
    jobs_.erase(id);
    ++n;
  }
  return n;
}

// ---------------------------------------------------------------- time

void Scheduler::FireTimer(const Timer& t) {
  if (t.kind == TimerKind::kFetch) {
    Queue* q = FindQueue(t.queue);
    if (q == nullptr) return;
    auto it = std::find_if(q->waiters.begin(), q->waiters.end(),
                           [&](const Waiter& w) { return w.waiter_id == t.id; });
    if (it == q->waiters.end()) return;  // already served
    FetchCallback done = std::move(it->done);
    probe_.FetchAnswered(clock_.NowMs() - std::min(clock_.NowMs(), it->started_ms));
    q->waiters.erase(it);
    --waiter_count_;
    done({});
    return;
  }
  Job* job = FindJob(t.id);
  if (job == nullptr || job->generation != t.generation) return;
  Queue& q = *FindQueue(job->queue);
  switch (t.kind) {
    case TimerKind::kPromote:
      if (job->state != JobState::kDelayed) return;
      if (job->ttl_ms != 0 && job->attempts == 0 &&
          clock_.NowMs() >= job->created_at_ms + job->ttl_ms) {
        break;  // the TTL timer (same due time or earlier) takes it
      }
      MakeReady(q, *job);
      Log(RecordType::kPromote, job->id, job, q.name);
      return;
    case TimerKind::kLease:
      if (job->state != JobState::kActive) return;
      probe_.LeaseExpired(Cells(q));
      RetryOrBury(q, *job, "lease expired after " + std::to_string(job->lease_ms) + " ms", false,
                  0);
      Log(RecordType::kExpire, job->id, job, q.name);
      return;
    case TimerKind::kTtl:
      if (job->attempts != 0 || !(job->state == JobState::kWaiting ||
                                  job->state == JobState::kDelayed)) {
        return;
      }
      break;
    case TimerKind::kFetch: return;
  }
  // TTL ran out before any worker started the job.
  Finish(q, *job, JobState::kExpired,
         "ttl: not started within " + std::to_string(job->ttl_ms) + " ms");
  Log(RecordType::kExpire, job->id, job, q.name);
}

void Scheduler::Tick() {
  const uint64_t now = clock_.NowMs();
  for (uint32_t n = 0; n < kTimersPerTickMax && !timers_.empty() && timers_.top().due_ms <= now;
       ++n) {
    Timer t = timers_.top();
    timers_.pop();
    FireTimer(t);
  }
  for (auto& [name, q] : queues_) {
    if (!q->retained.empty() && now >= q->retained.front().second + limits_.completed_retention_ms &&
        !q->trim_pending) {
      q->trim_pending = true;
      trim_.push_back(q.get());
    }
  }
  Dispatch();
}

void Scheduler::DrainWaiters() {
  draining_ = true;
  for (auto& [name, q] : queues_) {
    while (!q->waiters.empty()) {
      FetchCallback done = std::move(q->waiters.front().done);
      probe_.FetchAnswered(clock_.NowMs() -
                           std::min(clock_.NowMs(), q->waiters.front().started_ms));
      q->waiters.pop_front();
      --waiter_count_;
      done({});
    }
  }
}

uint64_t Scheduler::NextDeadlineMs() const {
  uint64_t next = timers_.empty() ? std::numeric_limits<uint64_t>::max() : timers_.top().due_ms;
  return next;
}

// ---------------------------------------------------------------- metrics

QueueCells& Scheduler::Cells(Queue& q) {
  // Lazily: queues come from pushes, fetches, subscriptions and recovery.
  if (q.cells == nullptr) [[unlikely]] q.cells = probe_.QueueCreated(q.name);
  return *q.cells;
}

uint64_t Scheduler::OldestWaitingSinceMs(Queue& q) {
  // The head of each priority level is the longest waiting there (FIFO); the
  // oldest head is the queue's. Stale heads are dropped as PopReady would.
  uint64_t oldest = 0;
  for (auto it = q.ready.begin(); it != q.ready.end();) {
    auto& fifo = it->second;
    const Job* head = nullptr;
    while (!fifo.empty()) {
      const Job* job = FindJob(fifo.front().id);
      if (job != nullptr && job->generation == fifo.front().generation &&
          job->state == JobState::kWaiting) {
        head = job;
        break;
      }
      fifo.pop_front();
    }
    if (head == nullptr) {
      it = q.ready.erase(it);
      continue;
    }
    if (oldest == 0 || head->run_at_ms < oldest) oldest = std::max<uint64_t>(head->run_at_ms, 1);
    ++it;
  }
  return oldest;
}

void Scheduler::CollectGauges(std::vector<QueueGauges>* out) {
  const uint64_t now = clock_.NowMs();
  out->reserve(out->size() + queues_.size());
  for (auto& [name, qp] : queues_) {
    Queue& q = *qp;
    QueueGauges& g = out->emplace_back();
    g.label = Cells(q).label;
    g.waiting = q.waiting;
    g.delayed = q.delayed;
    g.active = q.active;
    g.completed = q.kept[static_cast<size_t>(JobState::kCompleted)];
    g.dead = q.dead.size();
    g.cancelled = q.kept[static_cast<size_t>(JobState::kCancelled)];
    g.expired = q.kept[static_cast<size_t>(JobState::kExpired)];
    g.subscribers = q.consumers.size();
    g.paused = q.paused ? 1 : 0;
    const uint64_t since = OldestWaitingSinceMs(q);
    g.oldest_waiting_age_ms = since != 0 && now > since ? now - since : 0;
  }
}

void Scheduler::CheckInvariants() const {
  for (const auto& [name, q] : queues_) {
    uint64_t w = 0, d = 0, a = 0;
    for (const auto& [id, job] : jobs_) {
      if (job.queue != name) continue;
      RINGQ_CHECK((job.state == JobState::kActive) == (job.lease_token != 0));
      if (job.state == JobState::kWaiting) ++w;
      if (job.state == JobState::kDelayed) ++d;
      if (job.state == JobState::kActive) ++a;
    }
    RINGQ_CHECK(w == q->waiting);
    RINGQ_CHECK(d == q->delayed);
    RINGQ_CHECK(a == q->active);
    RINGQ_CHECK(w + d + a <= limits_.queue_jobs_max);
    for (uint64_t id : q->dead) RINGQ_CHECK(jobs_.at(id).state == JobState::kDead);
    uint64_t kept = 0;
    for (const auto& [id, at] : q->retained) {
      RINGQ_CHECK(!IsLive(jobs_.at(id).state) && jobs_.at(id).state != JobState::kDead);
      ++kept;
    }
    RINGQ_CHECK(kept == q->kept[4] + q->kept[6] + q->kept[7]);
    for (const auto& [key, id] : q->unique) RINGQ_CHECK(IsLive(jobs_.at(id).state));
  }
}

}  // namespace ringq::engine
