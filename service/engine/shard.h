// Shard: one thread that owns one Scheduler and its Journal.
//
// Other threads talk to a shard only through Post(): a bounded inbox woken by
// an eventfd. Tasks run on the shard thread, in order. A task that mutated
// state defers its reply with AfterCommit(): the reply runs once the journal
// is durable up to the LSN current at that call (DESIGN.md, data flow).
//
// One loop iteration: run the inbox, fire timers, submit the journal, release
// replies up to the durable LSN, make durable pushes visible, dispatch.
//
// Lifecycle: Start() once; Stop() drains the inbox, releases every reply and
// joins. Post() after Stop() returns false.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/journal.h"
#include "service/engine/scheduler.h"

namespace ringq::engine {

// The shard loop's wait, when something else than poll(2) must run on the
// shard thread: the RQP network loop and the shared io_uring (service/rqp).
// All calls on the shard thread.
class ShardIo {
 public:
  virtual ~ShardIo() = default;
  // Once, before the first Wait: readability of these fds must end Wait
  // (journal_fd may be -1). The shard reads them itself.
  virtual void Watch(int inbox_fd, int journal_fd) = 0;
  // Waits at most wait_ms for a watched fd or I/O, then runs the I/O
  // handlers that are ready (they may run tasks of this shard inline).
  virtual void Wait(uint64_t wait_ms) = 0;
  // End of every loop iteration: start sending what the iteration produced.
  virtual void Flush() = 0;
};

class Shard {
 public:
  using Task = std::function<void(Shard&)>;

  // How long the loop sleeps at most when no timer is due: retention and
  // other housekeeping run at least this often.
  static constexpr uint64_t kIdleWakeMs = 100;

  Shard(uint32_t index, const Limits& limits, const Clock& clock,
        std::unique_ptr<Journal> journal, uint32_t inbox_max);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Before Start: the wait of the loop (nullptr: poll(2) on the inbox and
  // the journal). `io` outlives the shard's thread.
  void SetIo(ShardIo* io) { io_ = io; }

  void Start();
  void Stop();

  // Any thread. False when the inbox holds inbox_max tasks or the shard
  // stopped: the caller answers RESOURCE_EXHAUSTED / UNAVAILABLE.
  [[nodiscard]] bool Post(Task task);

  // The shard whose thread is calling, or nullptr on any other thread.
  static Shard* Current();

  // Shard thread only.
  void AfterCommit(std::function<void()> reply);
  Scheduler& scheduler() { return scheduler_; }
  uint32_t index() const { return index_; }
  uint32_t inbox_max() const { return inbox_max_; }

 private:
  void Run();
  void RunOnce(uint64_t wait_ms);
  void Wake();

  const uint32_t index_;
  const uint32_t inbox_max_;
  const Clock& clock_;
  std::unique_ptr<Journal> journal_;
  Scheduler scheduler_;
  ShardIo* io_ = nullptr;

  std::mutex mu_;
  std::vector<Task> inbox_;  // guarded by mu_
  bool accepting_ = true;    // guarded by mu_
  int event_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  std::vector<Task> running_;  // shard thread: the batch being run
  std::deque<std::pair<uint64_t, std::function<void()>>> replies_;  // (lsn, reply)
};

}  // namespace ringq::engine
