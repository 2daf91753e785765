// Ring: the one io_uring of a shard thread, shared by everything that thread
// does: the WAL's linked write+fdatasync (uring_backend.cc) and the RQP
// network I/O (net/uring_loop.cc). The shard's loop submits everything that
// was prepared during one iteration and waits for completions in a single
// io_uring_enter (SubmitAndWait), so a busy shard makes one syscall per loop
// iteration for its disk and its sockets together.
//
// Completions are routed by user_data: every SQE is prepared through Prep()
// with the Completion object that wants its CQE; Dispatch() calls
// OnComplete(res, flags) for each CQE, in completion order.
//
// Thread: created anywhere, then used by one thread only (the shard's).
// Prefer creating (and destroying) it on that thread: the kernel queues
// task_work with a signal-like notification (TWA_SIGNAL) to threads that
// set up or used a ring (e.g. during an SQPOLL ring's asynchronous
// teardown), and on such a thread a blocking socket call with
// SO_RCVTIMEO/SO_SNDTIMEO returns EINTR instead of restarting.
// Re-entrancy: OnComplete may Prep() new SQEs (they go out with the next
// submit) but must not call SubmitAndWait or Dispatch (asserted).
//
// Lifetime: every Completion with an operation in flight must outlive its
// final CQE (for a multishot operation: the CQE without IORING_CQE_F_MORE).
// Users that own kernel-visible memory (the network loop's buffer ring and
// send buffers) are stopped and destroyed before the Ring.
//
// Errors: -ETIME and -EINTR from a wait mean "nothing happened"; -EAGAIN and
// -EBUSY (kernel short of memory, CQ overflow not yet flushed) leave the
// prepared SQEs for the next submit; anything else from io_uring_enter is a
// bug or a broken kernel and is fail-stop (log, abort).
//
// CQ: sized kCqPerSqEntries x entries for multishot bursts; the kernel must
// have IORING_FEAT_NODROP (an overflowing CQ keeps CQEs in the kernel, never
// drops them; Dispatch flushes them) and IORING_FEAT_EXT_ARG (a wait with a
// timeout needs no timeout SQE). Both are in every kernel since 5.11.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ringq::uring {

struct RingOptions {
  unsigned entries = 1024;  // SQ size; the CQ is sized for multishot bursts
  // Kernel-side submission polling (IORING_SETUP_SQPOLL): the kernel thread
  // picks SQEs up without io_uring_enter. Off by default (it spins a core).
  bool sqpoll = false;
  unsigned sqpoll_idle_ms = 50;
};

class Ring {
 public:
  class Completion {
   public:
    // `res` and `flags` are the CQE's (flags: IORING_CQE_F_MORE, _F_BUFFER...).
    virtual void OnComplete(int res, uint32_t flags) = 0;

   protected:
    ~Completion() = default;
  };

  // nullptr when io_uring cannot be set up here (old kernel, seccomp,
  // kernel.io_uring_disabled); `why` then says why.
  static std::unique_ptr<Ring> Create(const RingOptions& options, std::string* why = nullptr);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  io_uring* raw() { return &ring_; }

  // An SQE whose CQE goes to `c` (user_data = c; nullptr: the CQE is
  // dropped, for fire-and-forget operations such as a cancel). When the SQ is
  // full the prepared SQEs are submitted first. Never null (fail-stop
  // otherwise). The io_uring_prep_* helpers leave user_data alone; do not
  // set it again.
  io_uring_sqe* Prep(Completion* c);
  // Makes room for `n` SQEs that must go to the kernel in one submission (a
  // linked chain: a chain never spans two submissions, io_uring_enter(2)),
  // submitting what is prepared if the SQ has less room. n <= entries.
  void Reserve(unsigned n);
  // SQEs prepared and not yet submitted.
  unsigned pending() const;

  // Submits whatever is prepared (no syscall when nothing is, or with SQPOLL
  // running), without waiting.
  void Submit();
  // Submits whatever is prepared and waits up to `timeout_ms` (0: no wait)
  // for at least one completion, in one io_uring_enter; then dispatches
  // every ready completion. Returns the number dispatched.
  size_t SubmitAndWait(uint64_t timeout_ms);
  // Dispatches the completions ready now, without entering the kernel
  // (except once to flush CQEs that overflowed the CQ). At most
  // kDispatchCqesMaxPerSqEntry x entries per call.
  size_t Dispatch();

  // Makes `fd` turning readable end SubmitAndWait (a multishot POLL_ADD,
  // re-armed when the kernel ends it). For the shard inbox's eventfd: the
  // ring never reads the fd; its owner does.
  void WatchFd(int fd);

  // For syscall accounting (bench, metrics): io_uring_enter calls made
  // (counted where liburing enters: a submit with SQPOLL running, a wait
  // that finds a CQE ready, need none).
  uint64_t enters() const { return enters_; }
  bool sqpoll() const { return sqpoll_; }

  static constexpr unsigned kCqPerSqEntries = 4;
  // At most this many CQEs per Dispatch; the rest wait for the next call
  // (a SubmitAndWait with CQEs ready does not block).
  static constexpr unsigned kDispatchCqesMaxPerSqEntry = 4;

 private:
  class Watch;

  Ring() = default;
  unsigned SqFlags() const;
  bool SubmitEnters() const;
  void CheckNotDispatching(const char* what) const;

  io_uring ring_{};
  bool initialized_ = false;
  bool sqpoll_ = false;
  bool dispatching_ = false;
  unsigned sq_entries_ = 0;
  uint64_t enters_ = 0;
  std::vector<std::unique_ptr<Watch>> watches_;
};

}  // namespace ringq::uring
