// Ring: see ring.h. Enter accounting mirrors liburing 2.3's own decisions
// (src/queue.c): a submit enters unless nothing is prepared or SQPOLL's
// thread is awake; a wait enters unless a CQE is already there; a CQ
// overflow flag makes liburing enter to flush. Predicting them here keeps
// enters() honest without wrapping the syscall ourselves.
#include "uring/ring.h"

#include <poll.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringq::uring {

namespace {

constexpr unsigned kEntriesMax = 32768;    // IORING_MAX_ENTRIES
constexpr unsigned kDispatchBatch = 64;    // CQEs copied out per CQ pass
constexpr unsigned kSqpollWaitsMax = 100;  // io_uring_sqring_wait calls per Reserve

[[noreturn]] void Fatal(const char* what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): io_uring %s: %s; restart recovers\n", what,
               std::strerror(err));
  std::abort();
}

bool Transient(int rc) { return rc == -EINTR || rc == -EAGAIN || rc == -EBUSY; }

}  // namespace

// A multishot POLL_ADD(POLLIN) on a foreign fd, re-armed whenever the kernel
// ends it (no IORING_CQE_F_MORE). Its CQEs only end the wait.
class Ring::Watch final : public Ring::Completion {
 public:
  Watch(Ring* ring, int fd) : ring_(ring), fd_(fd) {}
  ~Watch() = default;

  void Arm() {
    io_uring_sqe* sqe = ring_->Prep(this);
    io_uring_prep_poll_multishot(sqe, fd_, POLLIN);
  }

  void OnComplete(int res, uint32_t flags) override {
    if ((flags & IORING_CQE_F_MORE) != 0) return;
    // EBADF/EINVAL: the owner closed the fd or it cannot be polled; a bug of
    // the owner, but the shard can still run on its timeouts: say so, stop.
    if (res < 0 && res != -ECANCELED && res != -EINTR && res != -EAGAIN && res != -ENOMEM) {
      std::fprintf(stderr, "ringqd: io_uring poll of fd %d ended: %s; no longer watched\n", fd_,
                   std::strerror(-res));
      return;
    }
    Arm();
  }

 private:
  Ring* const ring_;
  const int fd_;
};

std::unique_ptr<Ring> Ring::Create(const RingOptions& options, std::string* why) {
  auto fail = [&](const std::string& text) -> std::unique_ptr<Ring> {
    if (why != nullptr) *why = text;
    return nullptr;
  };
  if (options.entries == 0 || options.entries > kEntriesMax) {
    return fail("ring entries must be 1.." + std::to_string(kEntriesMax));
  }
  std::unique_ptr<Ring> r(new Ring());
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = options.entries * kCqPerSqEntries;
  if (options.sqpoll) {
    p.flags |= IORING_SETUP_SQPOLL;
    p.sq_thread_idle = options.sqpoll_idle_ms;
  }
  const int rc = io_uring_queue_init_params(options.entries, &r->ring_, &p);
  if (rc < 0) {
    if (options.sqpoll) {
      return fail(std::string("io_uring_setup with IORING_SETUP_SQPOLL failed: ") +
                  std::strerror(-rc) +
                  " (needs CAP_SYS_NICE before Linux 5.11); run without SQPOLL");
    }
    return fail(std::string("io_uring_setup failed: ") + std::strerror(-rc) +
                " (old kernel, kernel.io_uring_disabled, or a seccomp profile)");
  }
  r->initialized_ = true;
  r->sqpoll_ = options.sqpoll;
  r->sq_entries_ = p.sq_entries;
  if ((p.features & IORING_FEAT_NODROP) == 0) {
    return fail("kernel lacks IORING_FEAT_NODROP (CQEs could be lost on overflow); needs 5.5+");
  }
  if ((p.features & IORING_FEAT_EXT_ARG) == 0) {
    return fail("kernel lacks IORING_FEAT_EXT_ARG (timed waits); needs 5.11+");
  }
  return r;
}

Ring::~Ring() {
  // Tears down every operation still in flight; their Completions are not
  // called again. Users with kernel-visible memory stopped before (ring.h).
  if (initialized_) io_uring_queue_exit(&ring_);
}

unsigned Ring::SqFlags() const { return io_uring_smp_load_acquire(ring_.sq.kflags); }

// liburing's sq_ring_needs_enter() || cq_ring_needs_flush() for a submit.
bool Ring::SubmitEnters() const {
  const unsigned flags = SqFlags();
  if ((flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0) return true;
  if (pending() == 0) return false;
  return !sqpoll_ || (flags & IORING_SQ_NEED_WAKEUP) != 0;
}

void Ring::CheckNotDispatching(const char* what) const {
  if (dispatching_) {
    std::fprintf(stderr, "ringqd: BUG: Ring::%s called from a Completion\n", what);
    std::abort();
  }
}

io_uring_sqe* Ring::Prep(Completion* c) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    Reserve(1);
    sqe = io_uring_get_sqe(&ring_);
  }
  if (sqe == nullptr) Fatal("no SQE after submitting a full SQ", EBUSY);
  io_uring_sqe_set_data(sqe, c);
  return sqe;
}

void Ring::Reserve(unsigned n) {
  if (n == 0 || n > sq_entries_) Fatal("Reserve of more SQEs than the SQ holds", EINVAL);
  if (io_uring_sq_space_left(&ring_) >= n) return;
  Submit();
  // With SQPOLL the kernel thread frees SQ slots on its own time.
  for (unsigned i = 0; sqpoll_ && i < kSqpollWaitsMax && io_uring_sq_space_left(&ring_) < n; ++i) {
    ++enters_;
    const int rc = io_uring_sqring_wait(&ring_);
    if (rc < 0 && !Transient(rc)) Fatal("sqring wait", -rc);
  }
  if (io_uring_sq_space_left(&ring_) < n) Fatal("SQ still full after submitting", EBUSY);
}

unsigned Ring::pending() const { return io_uring_sq_ready(&ring_); }

void Ring::Submit() {
  if (pending() == 0 && (SqFlags() & IORING_SQ_CQ_OVERFLOW) == 0) return;
  if (SubmitEnters()) ++enters_;
  const int rc = io_uring_submit(&ring_);
  if (rc < 0 && !Transient(rc)) Fatal("submit", -rc);
}

size_t Ring::SubmitAndWait(uint64_t timeout_ms) {
  CheckNotDispatching("SubmitAndWait");
  if (timeout_ms == 0 || io_uring_cq_ready(&ring_) > 0) {
    Submit();
    return Dispatch();
  }
  __kernel_timespec ts{};
  ts.tv_sec = static_cast<int64_t>(timeout_ms / 1000);
  ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1'000'000;
  io_uring_cqe* cqe = nullptr;
  ++enters_;  // the CQ is empty and one CQE is wanted: liburing enters once
  const int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  if (rc < 0 && rc != -ETIME && !Transient(rc)) Fatal("submit and wait", -rc);
  return Dispatch();
}

size_t Ring::Dispatch() {
  CheckNotDispatching("Dispatch");
  struct Copied {
    uint64_t user_data;
    int res;
    uint32_t flags;
  };
  const size_t cqes_max = size_t{sq_entries_} * kDispatchCqesMaxPerSqEntry;
  size_t dispatched = 0;
  bool flushed = false;
  dispatching_ = true;
  while (dispatched < cqes_max) {
    // Copy out, then release the CQ slots before calling anyone: a
    // Completion never sees a CQE slot the kernel may reuse.
    Copied batch[kDispatchBatch];
    unsigned n = 0;
    unsigned head;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (n == kDispatchBatch) break;
      batch[n++] = Copied{cqe->user_data, cqe->res, cqe->flags};
    }
    io_uring_cq_advance(&ring_, n);
    if (n == 0) {
      // CQEs that overflowed wait in the kernel (IORING_FEAT_NODROP) until
      // an enter with GETEVENTS flushes them into the (now empty) CQ.
      if (flushed || (SqFlags() & IORING_SQ_CQ_OVERFLOW) == 0) break;
      flushed = true;
      ++enters_;
      const int rc = io_uring_get_events(&ring_);
      if (rc < 0 && !Transient(rc)) Fatal("flush of overflowed CQEs", -rc);
      continue;
    }
    flushed = false;
    for (unsigned i = 0; i < n; ++i) {
      if (batch[i].user_data == 0 || batch[i].user_data == LIBURING_UDATA_TIMEOUT) continue;
      reinterpret_cast<Completion*>(batch[i].user_data)->OnComplete(batch[i].res, batch[i].flags);
    }
    dispatched += n;
  }
  dispatching_ = false;
  return dispatched;
}

void Ring::WatchFd(int fd) {
  if (fd < 0) Fatal("WatchFd of a negative fd", EBADF);
  watches_.push_back(std::make_unique<Watch>(this, fd));
  watches_.back()->Arm();
}

}  // namespace ringq::uring
