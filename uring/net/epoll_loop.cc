// net::Loop on epoll (loop.h): the fallback where io_uring cannot serve the
// network. Level-triggered; nonblocking sockets; one recv per readable event
// into one loop-owned buffer of recv_buffer_bytes; send() until EAGAIN, then
// EPOLLOUT until the output drains. Backpressure takes EPOLLIN away. Every
// syscall is counted in stats().syscalls.
//
// errno per call: EINTR retries, EAGAIN waits for the next event; EMFILE/
// ENFILE on accept stop accepting for 100 ms; peer errors close the
// connection with that errno; EBADF, EFAULT, EINVAL, ENOTSOCK are bugs.
#include <sys/epoll.h>

#include <span>

#include "uring/net/loop_internal.h"

namespace ringq::uring::net {

namespace {

using internal::ConnState;
using internal::IsBugErrno;
using internal::MonoMs;

// epoll data of the non-connection fds; connection ids are >= 1 << 32.
constexpr uint64_t kTagListen = 0;
constexpr uint64_t kTagWatch = 1;
constexpr int kEventsMax = 256;         // per epoll_wait
constexpr int kAcceptsPerWakeMax = 64;  // accept4 calls per readable listener
constexpr int kSendsPerFlushMax = 16;   // send calls per connection per Flush / EPOLLOUT
constexpr int kEintrRetriesMax = 8;

struct Slot : internal::SlotBase {
  size_t out_off = 0;     // out[0, out_off) is sent
  uint32_t events = 0;    // what epoll watches now
  bool want_out = false;  // a send hit EAGAIN: EPOLLOUT until the output drains

  void Reset() {
    static_cast<internal::SlotBase&>(*this) = internal::SlotBase{};
    out_off = 0;
    events = 0;
    want_out = false;
  }
};

class EpollLoop final : public internal::LoopCore<EpollLoop, Slot> {
 public:
  EpollLoop(Handler* handler, const LoopOptions& options)
      : LoopCore(handler, options), buffer_(options.recv_buffer_bytes) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) internal::Bug("epoll_create1", errno);
  }

  ~EpollLoop() override {
    Stop();
    close(epfd_);
  }

  bool Listen(std::string* why) override {
    if (!internal::OpenListener(options_, stopping_, &listen_fd_, &port_, &stats_, why)) {
      return false;
    }
    Ctl(EPOLL_CTL_ADD, listen_fd_, EPOLLIN, kTagListen);
    return true;
  }

  void Flush() override {
    for (Slot* s : TakeDirty()) {
      if (s->state == ConnState::kOpen || s->state == ConnState::kFlushing) SendSome(s);
    }
  }

  void Wait(uint64_t timeout_ms) override {
    const uint64_t ms = std::min<uint64_t>(WaitMs(timeout_ms), INT32_MAX);
    ++stats_.syscalls;
    const int n = epoll_wait(epfd_, events_, kEventsMax, static_cast<int>(ms));
    if (n < 0 && errno != EINTR) internal::Bug("epoll_wait", errno);
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events_[i].data.u64;
      if (tag == kTagListen) {
        AcceptSome();
      } else if (tag != kTagWatch) {
        OnEvents(tag, events_[i].events);
      }
    }
    if (accept_retry_ms_ != 0 && !stopping_ && MonoMs() >= accept_retry_ms_) {
      accept_retry_ms_ = 0;
      Ctl(EPOLL_CTL_MOD, listen_fd_, EPOLLIN, kTagListen);
    }
    RunCloses();
  }

  void WatchFd(int fd) override { Ctl(EPOLL_CTL_ADD, fd, EPOLLIN, kTagWatch); }

  void Stop() override {
    if (stopped_) return;
    BeginStop();
    RunCloses();  // nothing is ever in flight here: every close finishes now
    if (listen_fd_ >= 0) CloseFd(listen_fd_);
    listen_fd_ = -1;
    stopped_ = true;
  }

  const char* name() const override { return "epoll"; }

  // LoopCore's hooks.
  size_t Unsent(const Slot& s) const { return s.out.size() - s.out_off; }
  bool Sending(const Slot&) const { return false; }
  bool InFlight(const Slot&) const { return false; }
  bool RearmPending() const { return false; }
  void CloseBegun(Slot* s) { s->out_off = 0; }
  void Opened(Slot* s) {
    s->events = EPOLLIN;
    Ctl(EPOLL_CTL_ADD, s->fd, s->events, s->id);
  }
  // EPOLLIN per WantRead, EPOLLOUT while a send waits for room.
  void UpdateReading(Slot* s) {
    if (s->state == ConnState::kClosing) return;  // its fd closes within this Wait
    uint32_t want = WantRead(s) ? uint32_t{EPOLLIN} : 0u;
    if (s->want_out && Unsent(*s) > 0) want |= EPOLLOUT;
    if (want == s->events) return;
    s->events = want;
    Ctl(EPOLL_CTL_MOD, s->fd, want, s->id);
  }

 private:
  void Ctl(int op, int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    ++stats_.syscalls;
    if (epoll_ctl(epfd_, op, fd, &ev) != 0) internal::Bug("epoll_ctl", errno);
  }

  void AcceptSome() {
    for (int i = 0; i < kAcceptsPerWakeMax && !stopping_; ++i) {
      ++stats_.syscalls;
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        Accepted(fd);
        continue;
      }
      const int err = errno;
      if (err == EAGAIN) return;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Out of descriptors or memory: stop watching the listener a while,
        // or level-triggered readiness would spin on the same failure.
        ++stats_.accept_errors;
        accept_retry_ms_ = MonoMs() + internal::kAcceptRetryMs;
        Ctl(EPOLL_CTL_MOD, listen_fd_, 0, kTagListen);
        return;
      }
      if (IsBugErrno(err)) internal::Bug("accept4", err);
      if (err != EINTR) ++stats_.accept_errors;  // ECONNABORTED, EPERM, EPROTO
    }
  }

  void OnEvents(ConnId id, uint32_t events) {
    Slot* s = conns_.Get(id);
    if (s == nullptr || s->state == ConnState::kClosing) return;  // closed earlier in this batch
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && (s->events & EPOLLIN) != 0) Read(s);
    if (s->state == ConnState::kClosing) return;
    if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0 && Unsent(*s) > 0) SendSome(s);
  }

  // One recv: at most one buffer per connection per event (loop.h).
  void Read(Slot* s) {
    ssize_t n;
    int tries = 0;
    do {
      ++stats_.syscalls;
      n = recv(s->fd, buffer_.data(), buffer_.size(), 0);
    } while (n < 0 && errno == EINTR && ++tries < kEintrRetriesMax);
    if (n > 0) {
      ++stats_.recvs;
      stats_.bytes_in += static_cast<uint64_t>(n);
      if (s->state == ConnState::kOpen) {
        handler_->OnData(s->id, std::span<const uint8_t>(buffer_.data(), static_cast<size_t>(n)));
      }
      UpdateReading(s);
      return;
    }
    if (n == 0) {
      s->peer_eof = true;
      if (s->state == ConnState::kFlushing) {
        UpdateReading(s);  // EOF stays readable: stop watching it
      } else if (s->state == ConnState::kOpen && !handler_->OnPeerEof(s->id)) {
        if (s->state == ConnState::kOpen) UpdateReading(s);  // kept for writing
      } else {
        BeginClose(s, 0);
      }
      return;
    }
    const int err = errno;
    if (err == EAGAIN || err == EINTR) return;
    if (IsBugErrno(err)) internal::Bug("recv", err);
    BeginClose(s, err);
  }

  // send() until the output is sent, EAGAIN, or kSendsPerFlushMax calls.
  void SendSome(Slot* s) {
    for (int i = 0; i < kSendsPerFlushMax && Unsent(*s) > 0; ++i) {
      const size_t len = std::min(internal::kSendBytesMax, Unsent(*s));
      ++stats_.syscalls;
      const ssize_t n = send(s->fd, s->out.data() + s->out_off, len, MSG_NOSIGNAL);
      if (n < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN) {
          s->want_out = true;
          break;
        }
        if (IsBugErrno(err)) internal::Bug("send", err);
        BeginClose(s, err);  // EPIPE, ECONNRESET...
        return;
      }
      ++stats_.sends;
      stats_.bytes_out += static_cast<uint64_t>(n);
      s->out_off += static_cast<size_t>(n);
    }
    if (s->out_off == s->out.size()) {
      s->out.clear();
      s->out_off = 0;
      s->want_out = false;
      internal::TrimIfDrained(&s->out);
    } else if (s->out_off > s->out.size() / 2) {
      s->out.erase(0, s->out_off);  // keeps the copy amortized: at most once per half
      s->out_off = 0;
    }
    if (s->state == ConnState::kFlushing && Unsent(*s) == 0) {
      FinishFlush(s);
    } else {
      UpdateReading(s);
    }
  }

  int epfd_ = -1;
  std::vector<uint8_t> buffer_;
  epoll_event events_[kEventsMax];
};

}  // namespace

std::unique_ptr<Loop> MakeEpollLoop(Handler* handler, const LoopOptions& options) {
  return std::make_unique<EpollLoop>(handler, options);
}

}  // namespace ringq::uring::net
