#include "service/engine/shard.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <algorithm>

namespace ringq::engine {

namespace {
thread_local Shard* current_shard = nullptr;

void Die(const char* what) {
  std::fprintf(stderr, "ringq: fatal: %s: errno %d\n", what, errno);
  std::abort();
}
}  // namespace

Shard::Shard(uint32_t index, const Limits& limits, const Clock& clock,
             std::unique_ptr<Journal> journal, uint32_t inbox_max)
    : index_(index), inbox_max_(inbox_max), clock_(clock), journal_(std::move(journal)),
      scheduler_(index, limits, clock, *journal_) {
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) Die("eventfd");
  inbox_.reserve(1024);
}

Shard::~Shard() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

Shard* Shard::Current() { return current_shard; }

void Shard::Start() {
  thread_ = std::thread([this] {
    // "shard-N" in top -H, perf and gdb (15 characters at most).
    const std::string name = "shard-" + std::to_string(index_);
    pthread_setname_np(pthread_self(), name.c_str());
    Run();
  });
}

void Shard::Stop() {
  {
    std::lock_guard lock(mu_);
    accepting_ = false;
  }
  stop_.store(true, std::memory_order_release);
  Wake();
  if (thread_.joinable()) thread_.join();
}

bool Shard::Post(Task task) {
  bool was_empty;
  {
    std::lock_guard lock(mu_);
    if (!accepting_ || inbox_.size() >= inbox_max_) return false;
    was_empty = inbox_.empty();
    inbox_.push_back(std::move(task));
  }
  if (was_empty) Wake();
  return true;
}

void Shard::Wake() {
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the shard will wake anyway.
  if (write(event_fd_, &one, sizeof one) < 0 && errno != EAGAIN) Die("eventfd write");
}

void Shard::AfterCommit(std::function<void()> reply) {
  const uint64_t lsn = journal_->last_lsn();
  if (lsn <= journal_->durable_lsn() && replies_.empty()) {
    reply();
    return;
  }
  replies_.emplace_back(lsn, std::move(reply));
}

void Shard::Run() {
  current_shard = this;
  if (io_ != nullptr) io_->Watch(event_fd_, journal_->wake_fd());
  while (true) {
    const uint64_t now = clock_.NowMs();
    const uint64_t next = std::min(scheduler_.NextDeadlineMs(), journal_->NextWakeMs());
    const uint64_t wait_ms = next <= now ? 0 : std::min<uint64_t>(next - now, kIdleWakeMs);
    if (stop_.load(std::memory_order_acquire)) {
      // Drain: what was accepted is answered once durable.
      RunOnce(journal_->Idle() ? 0 : 1);
      std::lock_guard lock(mu_);
      if (inbox_.empty() && replies_.empty() && journal_->Idle()) break;
      continue;
    }
    RunOnce(wait_ms);
  }
}

void Shard::RunOnce(uint64_t wait_ms) {
  if (io_ != nullptr) {
    io_->Wait(wait_ms);
  } else {
    pollfd pfds[2] = {{event_fd_, POLLIN, 0}, {journal_->wake_fd(), POLLIN, 0}};
    const int nfds = pfds[1].fd >= 0 ? 2 : 1;
    const int rc = poll(pfds, nfds, static_cast<int>(wait_ms));
    if (rc < 0 && errno != EINTR) Die("poll");
  }
  uint64_t counter;
  if (read(event_fd_, &counter, sizeof counter) < 0 && errno != EAGAIN) Die("eventfd read");
  journal_->Reap();

  {
    std::lock_guard lock(mu_);
    running_.swap(inbox_);
  }
  for (Task& t : running_) t(*this);
  running_.clear();

  scheduler_.Tick();
  journal_->Submit();
  const uint64_t durable = journal_->durable_lsn();
  while (!replies_.empty() && replies_.front().first <= durable) {
    auto reply = std::move(replies_.front().second);
    replies_.pop_front();
    reply();
  }
  scheduler_.OnDurable(durable);
  scheduler_.Dispatch();
  if (io_ != nullptr) io_->Flush();
}

}  // namespace ringq::engine
