// SyncBackend on io_uring: a write SQE linked to an fdatasync SQE (an fsync
// submitted beside a write does not cover it: io_uring_enter(2)), both in one
// io_uring_enter. Two flavours share the operation and its errno rules
// (WriteSyncOp):
//   * own ring (MakeUringBackend()): a small private ring; Start submits,
//     completions signal a registered eventfd that the shard waits on, and
//     Poll reaps the CQEs.
//   * shared ring (MakeUringBackend(Ring*)): the shard's Ring (ring.h). Start
//     only prepares the SQEs; the shard loop's SubmitAndWait submits them with
//     the network's and its dispatch records the results in two Completions.
//     Poll never enters the kernel: it reads those results, and prepares the
//     rest of a short write itself.
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

#include "uring/ring.h"
#include "uring/wal.h"

namespace ringq::uring {

namespace {

constexpr unsigned kRingEntries = 8;  // one write + one fsync in flight, with room
constexpr unsigned kChainSqes = 2;    // write -> fdatasync
constexpr uint64_t kTagWrite = 1;
constexpr uint64_t kTagSync = 2;

[[noreturn]] void Fatal(const char* what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): WAL io_uring %s: %s; restart recovers\n", what,
               std::strerror(err));
  std::abort();
}

// One write(+fdatasync) and its progress: which SQEs to prepare next, and
// what each CQE means. Knows nothing of which ring carries the SQEs.
class WriteSyncOp {
 public:
  void Begin(int fd, uint64_t offset, const char* data, size_t len, bool sync) {
    if (outstanding_ != 0) Fatal("Start with an operation in flight", EBUSY);
    fd_ = fd;
    offset_ = offset;
    data_ = data;
    len_ = len;
    done_ = 0;
    sync_ = sync;
  }

  // Prepares the SQEs for what is left: the rest of the write, linked to the
  // fdatasync when syncing. sqe_for(tag) returns an SQE whose CQE comes back
  // to OnWrite (kTagWrite) or OnSync (kTagSync).
  template <typename SqeFor>
  void Prepare(SqeFor&& sqe_for) {
    retry_ = false;
    const size_t left = len_ - done_;
    if (left > 0) {
      io_uring_sqe* w = sqe_for(kTagWrite);
      io_uring_prep_write(w, fd_, data_ + done_, static_cast<unsigned>(left), offset_ + done_);
      if (sync_) w->flags |= IOSQE_IO_LINK;
      ++outstanding_;
    }
    if (sync_) {
      io_uring_sqe* s = sqe_for(kTagSync);
      io_uring_prep_fsync(s, fd_, IORING_FSYNC_DATASYNC);
      ++outstanding_;
    }
  }

  void OnWrite(int res) {
    --outstanding_;
    if (res < 0) {
      if (res != -EINTR && res != -EAGAIN) Fatal("write", -res);
      retry_ = true;
    } else {
      done_ += static_cast<size_t>(res);
      if (done_ < len_) retry_ = true;  // short write: the linked fsync is cancelled
    }
  }

  void OnSync(int res) {
    --outstanding_;
    if (res == -ECANCELED && retry_) return;  // its write was short or interrupted
    if (res < 0) Fatal("fdatasync", -res);    // never retried (the fsync lesson)
  }

  int outstanding() const { return outstanding_; }
  bool retry() const { return retry_; }

 private:
  int fd_ = -1;
  uint64_t offset_ = 0;
  const char* data_ = nullptr;
  size_t len_ = 0;
  size_t done_ = 0;
  bool sync_ = false;
  bool retry_ = false;
  int outstanding_ = 0;
};

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
    op_.Begin(fd, offset, data, len, sync);
    Submit();
  }

  bool Poll() override {
    uint64_t counter;
    if (read(efd_, &counter, sizeof counter) < 0 && errno != EAGAIN) Fatal("eventfd read", errno);
    io_uring_cqe* cqe = nullptr;
    while (op_.outstanding() > 0 && io_uring_peek_cqe(&ring_, &cqe) == 0) {
      const uint64_t tag = cqe->user_data;
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (tag == kTagWrite) {
        op_.OnWrite(res);
      } else if (tag == kTagSync) {
        op_.OnSync(res);
      } else {
        Fatal("CQE with an unknown tag", EINVAL);
      }
    }
    if (op_.outstanding() > 0) return false;
    if (op_.retry()) {
      Submit();
      return false;
    }
    return true;
  }

  int event_fd() const override { return efd_; }

 private:
  void Submit() {
    op_.Prepare([&](uint64_t tag) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) Fatal(tag == kTagWrite ? "no SQE for write" : "no SQE for fsync", EBUSY);
      sqe->user_data = tag;
      return sqe;
    });
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN);
    if (rc < 0) Fatal("submit", -rc);
  }

  io_uring ring_{};
  bool ok_ = false;
  int efd_ = -1;
  WriteSyncOp op_;
};

class SharedRingBackend final : public SyncBackend {
 public:
  explicit SharedRingBackend(Ring* ring) : ring_(ring), write_(this), sync_(this) {}

  ~SharedRingBackend() override {
    // The ring would call into freed Completions (Wal::~Wal drains first).
    if (op_.outstanding() != 0) Fatal("backend destroyed with SQEs in flight", EBUSY);
  }

  void Start(int fd, uint64_t offset, const char* data, size_t len, bool sync) override {
    op_.Begin(fd, offset, data, len, sync);
    Prepare();
  }

  bool Poll() override {
    if (op_.outstanding() > 0) return false;
    if (op_.retry()) {
      Prepare();
      return false;
    }
    return true;
  }

  int event_fd() const override { return -1; }

 private:
  class Cqe final : public Ring::Completion {
   public:
    Cqe(SharedRingBackend* owner) : owner_(owner) {}
    ~Cqe() = default;
    void OnComplete(int res, uint32_t flags) override {
      if (this == &owner_->write_) {
        owner_->op_.OnWrite(res);
      } else {
        owner_->op_.OnSync(res);
      }
    }

   private:
    SharedRingBackend* const owner_;
  };

  void Prepare() {
    // Both SQEs in one submission, or the link would be cut (ring.h Reserve).
    ring_->Reserve(kChainSqes);
    op_.Prepare([&](uint64_t tag) { return ring_->Prep(tag == kTagWrite ? &write_ : &sync_); });
  }

  Ring* const ring_;
  WriteSyncOp op_;
  Cqe write_;
  Cqe sync_;
};

}  // namespace

std::unique_ptr<SyncBackend> MakeUringBackend() {
  auto b = std::make_unique<UringBackend>();
  if (!b->Init()) return nullptr;
  return b;
}

std::unique_ptr<SyncBackend> MakeUringBackend(Ring* shared) {
  if (shared == nullptr) return MakeUringBackend();
  return std::make_unique<SharedRingBackend>(shared);
}

}  // namespace ringq::uring
