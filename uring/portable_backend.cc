// SyncBackend without io_uring: pwrite + fdatasync on one I/O thread, with the
// same contract and the same fail-stop rules. Completion signals an eventfd.
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "uring/wal.h"

namespace ringq::uring {

namespace {

[[noreturn]] void Fatal(const char* what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (fail-stop): WAL %s: %s; restart recovers\n", what,
               std::strerror(err));
  std::abort();
}

class PortableBackend final : public SyncBackend {
 public:
  PortableBackend() {
    efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0) Fatal("eventfd", errno);
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "wal-sync");  // top -H, gdb
      Run();
    });
  }

  ~PortableBackend() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
    close(efd_);
  }

  void Start(int fd, uint64_t offset, const char* data, size_t len, bool sync) override {
    {
      std::lock_guard lock(mu_);
      job_ = Job{fd, offset, data, len, sync};
      has_job_ = true;
      done_.store(false, std::memory_order_release);
    }
    cv_.notify_one();
  }

  bool Poll() override {
    uint64_t counter;
    if (read(efd_, &counter, sizeof counter) < 0 && errno != EAGAIN) Fatal("eventfd read", errno);
    return done_.load(std::memory_order_acquire);
  }

  int event_fd() const override { return efd_; }

 private:
  struct Job {
    int fd;
    uint64_t offset;
    const char* data;
    size_t len;
    bool sync;
  };

  void Run() {
    while (true) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || has_job_; });
        if (stop_ && !has_job_) return;
        job = job_;
        has_job_ = false;
      }
      size_t done = 0;
      while (done < job.len) {
        ssize_t n = pwrite(job.fd, job.data + done, job.len - done,
                           static_cast<off_t>(job.offset + done));
        if (n < 0) {
          if (errno == EINTR || errno == EAGAIN) continue;
          Fatal("pwrite", errno);
        }
        done += static_cast<size_t>(n);  // a short write continues with the rest
      }
      if (job.sync && fdatasync(job.fd) != 0) Fatal("fdatasync", errno);  // never retried
      done_.store(true, std::memory_order_release);
      const uint64_t one = 1;
      if (write(efd_, &one, sizeof one) < 0 && errno != EAGAIN) Fatal("eventfd write", errno);
    }
  }

  int efd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  Job job_{};
  bool has_job_ = false;
  bool stop_ = false;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<SyncBackend> MakePortableBackend() { return std::make_unique<PortableBackend>(); }

}  // namespace ringq::uring
