// SyncBackend on io_uring: a write SQE linked to an fdatasync SQE (an fsync
// submitted beside a write does not cover it: io_uring_enter(2)), both in one
// io_uring_enter. Completions signal a registered eventfd that the shard
// waits on.
//
// errno handling, per STYLE.md: EINTR/EAGAIN resubmit; a short write
// resubmits the rest (its linked fsync comes back -ECANCELED); any other write
// error or any fsync error is fail-stop. EINVAL/EFAULT are bugs, also fatal.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "uring/wal.h"

namespace ringq::uring {

namespace {

constexpr unsigned kRingEntries = 8;  // one write + one fsync in flight, with room
constexpr uint64_t kTagWrite = 1;
constexpr uint64_t kTagSync = 2;

[[noreturn]] void Fatal(const char* what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): WAL io_uring %s: %s; restart recovers\n", what,
               std::strerror(err));
  std::abort();
}

class UringBackend final : public SyncBackend {
 public:
  bool Init() {
    io_uring_params p{};
    if (io_uring_queue_init_params(kRingEntries, &ring_, &p) != 0) return false;
    ok_ = true;
    efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0 || io_uring_register_eventfd(&ring_, efd_) != 0) return false;
    return true;
  }

  ~UringBackend() override {
    if (ok_) io_uring_queue_exit(&ring_);
    if (efd_ >= 0) close(efd_);
  }

  void Start(int fd, uint64_t offset, const char* data, size_t len, bool sync) override {
    fd_ = fd;
    offset_ = offset;
    data_ = data;
    len_ = len;
    done_ = 0;
    sync_ = sync;
    Submit();
  }

  bool Poll() override {
    uint64_t counter;
    if (read(efd_, &counter, sizeof counter) < 0 && errno != EAGAIN) Fatal("eventfd read", errno);
    io_uring_cqe* cqe = nullptr;
    while (outstanding_ > 0 && io_uring_peek_cqe(&ring_, &cqe) == 0) {
      const uint64_t tag = cqe->user_data;
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --outstanding_;
      if (tag == kTagWrite) {
        if (res < 0) {
          if (res != -EINTR && res != -EAGAIN) Fatal("write", -res);
          retry_ = true;
        } else {
          done_ += static_cast<size_t>(res);
          if (done_ < len_) retry_ = true;  // short write: the linked fsync is cancelled
        }
      } else if (tag == kTagSync) {
        if (res == -ECANCELED && retry_) continue;  // its write was short or interrupted
        if (res < 0) Fatal("fdatasync", -res);      // never retried (the fsync lesson)
      }
    }
    if (outstanding_ > 0) return false;
    if (retry_) {
      Submit();
      return false;
    }
    return true;
  }

  int event_fd() const override { return efd_; }

 private:
  void Submit() {
    retry_ = false;
    const size_t left = len_ - done_;
    if (left > 0) {
      io_uring_sqe* w = io_uring_get_sqe(&ring_);
      if (w == nullptr) Fatal("no SQE for write", EBUSY);
      io_uring_prep_write(w, fd_, data_ + done_, static_cast<unsigned>(left), offset_ + done_);
      w->user_data = kTagWrite;
      if (sync_) w->flags |= IOSQE_IO_LINK;
      ++outstanding_;
    }
    if (sync_) {
      io_uring_sqe* s = io_uring_get_sqe(&ring_);
      if (s == nullptr) Fatal("no SQE for fsync", EBUSY);
      io_uring_prep_fsync(s, fd_, IORING_FSYNC_DATASYNC);
      s->user_data = kTagSync;
      ++outstanding_;
    }
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN);
    if (rc < 0) Fatal("submit", -rc);
  }

  io_uring ring_{};
  bool ok_ = false;
  int efd_ = -1;
  int fd_ = -1;
  uint64_t offset_ = 0;
  const char* data_ = nullptr;
  size_t len_ = 0;
  size_t done_ = 0;
  bool sync_ = false;
  bool retry_ = false;
  int outstanding_ = 0;
};

}  // namespace

std::unique_ptr<SyncBackend> MakeUringBackend() {
  auto b = std::make_unique<UringBackend>();
  if (!b->Init()) return nullptr;
  return b;
}

}  // namespace ringq::uring
