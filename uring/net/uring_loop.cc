// net::Loop on the shard's shared io_uring (loop.h, ring.h).
//
// Operations per connection: at most one recv (single shot, a buffer picked
// by the kernel from the loop's provided buffer ring when data arrives, so an
// idle connection holds no receive buffer) and at most one send. The send
// reads `inflight`, a string the handler cannot reach: Flush swaps the queued
// output into it, so the handler keeps appending to Output() while the kernel
// reads memory that is never reallocated under it. A completed send erases
// nothing: it advances inflight_off; a short send continues from there.
//
// Closing: the slot is freed (and OnClose called, from Wait) only once
// neither operation is in flight; shutdown(SHUT_RDWR) makes an armed recv
// complete (EOF) and a blocked send fail (EPIPE). The fd is then closed with
// close(2).
//
// errno per operation (STYLE.md): EINTR/EAGAIN re-arm; ENOBUFS (buffer ring
// empty) re-arms after the dispatch returned buffers (in Wait's deferred
// work, at most recv_buffers per round), never at once;
// EMFILE/ENFILE on accept re-arm 100 ms later; peer errors (ECONNRESET,
// EPIPE, ETIMEDOUT...) close the connection with that errno; EBADF, EFAULT,
// EINVAL, ENOTSOCK are bugs (fail-stop).
#include <liburing.h>
#include <sys/mman.h>

#include <atomic>
#include <deque>
#include <span>

#include "uring/net/loop_internal.h"
#include "uring/ring.h"

namespace ringq::uring::net {

namespace {

using internal::ConnState;
using internal::IsBugErrno;
using internal::MonoMs;

constexpr uint32_t kRecvBuffersMax = 32768;  // IORING buffer ring entries limit
constexpr uint64_t kRecvBufferBytesMax = 16u << 20;
constexpr uint64_t kRecvPoolBytesMax = 1ull << 30;  // recv_buffers x recv_buffer_bytes
constexpr int kBufferGroupTries = 64;               // group ids tried on EEXIST
constexpr uint64_t kStopWaitStepMs = 10;

// Buffer group ids are per ring; loops on one ring need different ones.
std::atomic<uint16_t> next_buffer_group{1};

class UringLoop;
struct Slot;

// A Completion that forwards its CQEs to the loop, tagged by operation.
class Op final : public Ring::Completion {
 public:
  enum class Kind : uint8_t { kAccept, kRecv, kSend, kCancel };
  Op() = default;
  ~Op() = default;
  void Bind(UringLoop* loop, Slot* slot, Kind kind) {
    loop_ = loop;
    slot_ = slot;
    kind_ = kind;
  }
  void OnComplete(int res, uint32_t flags) override;

 private:
  UringLoop* loop_ = nullptr;
  Slot* slot_ = nullptr;
  Kind kind_ = Kind::kCancel;
};

struct Slot : internal::SlotBase {
  std::string inflight;  // what the send in flight reads; never touched while it flies
  size_t inflight_off = 0;
  bool recv_armed = false;
  bool send_armed = false;
  bool rearm_listed = false;  // in rearm_: recv to arm after the dispatch
  Op recv_op;                 // bound once, when the slot is first used; the address never changes
  Op send_op;

  void Reset() {
    static_cast<internal::SlotBase&>(*this) = internal::SlotBase{};
    std::string().swap(inflight);
    inflight_off = 0;
    recv_armed = false;
    send_armed = false;
    rearm_listed = false;
  }
};

class UringLoop final : public internal::LoopCore<UringLoop, Slot> {
 public:
  UringLoop(Ring* ring, Handler* handler, const LoopOptions& options)
      : LoopCore(handler, options), ring_(ring) {
    accept_op_.Bind(this, nullptr, Op::Kind::kAccept);
    cancel_op_.Bind(this, nullptr, Op::Kind::kCancel);
  }

  ~UringLoop() override {
    Stop();
    if (leaked_) return;  // the kernel may still write into slots and buffers
    if (group_registered_) io_uring_unregister_buf_ring(ring_->raw(), group_);
    if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
    if (pool_ != nullptr) munmap(pool_, pool_bytes_);
  }

  // The provided buffer ring: false and `why` when the kernel has none.
  bool Init(std::string* why) {
    const uint32_t n = options_.recv_buffers;
    if (n == 0 || n > kRecvBuffersMax || (n & (n - 1)) != 0) {
      *why = "recv_buffers must be a power of two in 1.." + std::to_string(kRecvBuffersMax);
      return false;
    }
    if (options_.recv_buffer_bytes > kRecvBufferBytesMax ||
        uint64_t{n} * options_.recv_buffer_bytes > kRecvPoolBytesMax) {
      *why = "recv_buffers x recv_buffer_bytes exceeds " + std::to_string(kRecvPoolBytesMax);
      return false;
    }
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    buf_ring_bytes_ = (sizeof(io_uring_buf) * n + page - 1) / page * page;
    void* ring_mem =
        mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring_mem == MAP_FAILED) {
      *why = std::string("mmap of the buffer ring: ") + std::strerror(errno);
      return false;
    }
    buf_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
    pool_bytes_ = size_t{n} * options_.recv_buffer_bytes;
    void* pool = mmap(nullptr, pool_bytes_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pool == MAP_FAILED) {
      *why = std::string("mmap of the receive buffers: ") + std::strerror(errno);
      return false;
    }
    pool_ = static_cast<uint8_t*>(pool);
    io_uring_buf_ring_init(buf_ring_);
    int rc = -EEXIST;
    for (int i = 0; i < kBufferGroupTries && rc == -EEXIST; ++i) {
      group_ = next_buffer_group.fetch_add(1, std::memory_order_relaxed);
      io_uring_buf_reg reg{};
      reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
      reg.ring_entries = n;
      reg.bgid = group_;
      rc = io_uring_register_buf_ring(ring_->raw(), &reg, 0);
    }
    if (rc != 0) {
      *why = std::string("io_uring_register_buf_ring: ") + std::strerror(-rc) +
             " (provided buffer rings and multishot accept need Linux 5.19+)";
      return false;
    }
    group_registered_ = true;
    const int mask = io_uring_buf_ring_mask(n);
    for (uint32_t bid = 0; bid < n; ++bid) {
      io_uring_buf_ring_add(buf_ring_, Buffer(static_cast<uint16_t>(bid)),
                            options_.recv_buffer_bytes, static_cast<uint16_t>(bid), mask,
                            static_cast<int>(bid));
    }
    io_uring_buf_ring_advance(buf_ring_, static_cast<int>(n));
    return true;
  }

  bool Listen(std::string* why) override {
    if (!internal::OpenListener(options_, stopping_, &listen_fd_, &port_, &stats_, why)) {
      return false;
    }
    ArmAccept();
    return true;
  }

  void Flush() override {
    for (Slot* s : TakeDirty()) {
      if (!s->send_armed && (s->state == ConnState::kOpen || s->state == ConnState::kFlushing)) {
        SendMore(s);
      }
    }
  }

  void Wait(uint64_t timeout_ms) override {
    ring_->SubmitAndWait(WaitMs(timeout_ms));
    RunDeferred();
  }

  void WatchFd(int fd) override { ring_->WatchFd(fd); }

  void Stop() override {
    if (stopped_) return;
    if (accept_armed_) {
      io_uring_prep_cancel(ring_->Prep(&cancel_op_), &accept_op_, 0);
      ++ops_;
    }
    BeginStop();
    const uint64_t give_up = MonoMs() + internal::kStopWaitMs;
    RunDeferred();
    while ((ops_ > 0 || !closing_.empty()) && MonoMs() < give_up) {
      ring_->SubmitAndWait(kStopWaitStepMs);
      RunDeferred();
    }
    if (ops_ > 0 || !closing_.empty()) {
      std::fprintf(stderr,
                   "ringqd: net loop stop: %llu io_uring operations still in flight after %llu "
                   "ms; leaking their memory\n",
                   static_cast<unsigned long long>(ops_),
                   static_cast<unsigned long long>(internal::kStopWaitMs));
      leaked_ = true;
      conns_.Leak();
      // Every opened connection still gets its OnClose (loop.h).
      for (ConnId id : closing_) handler_->OnClose(id, ETIMEDOUT);
      closing_.clear();
    }
    if (listen_fd_ >= 0) CloseFd(listen_fd_);
    listen_fd_ = -1;
    stopped_ = true;
  }

  const char* name() const override { return "io_uring"; }

  // LoopCore's hooks.
  size_t Unsent(const Slot& s) const { return s.out.size() + s.inflight.size() - s.inflight_off; }
  bool Sending(const Slot& s) const { return s.send_armed; }
  bool InFlight(const Slot& s) const { return s.recv_armed || s.send_armed; }
  bool RearmPending() const { return !rearm_.empty(); }
  void CloseBegun(Slot* s) {
    if (InFlight(*s)) Shutdown(s->fd, SHUT_RDWR);
  }
  void UpdateReading(Slot* s) {
    if (!s->recv_armed && WantRead(s)) ArmRecv(s);
  }
  void Opened(Slot* s) {
    s->recv_op.Bind(this, s, Op::Kind::kRecv);
    s->send_op.Bind(this, s, Op::Kind::kSend);
  }

  // Completions, from Op::OnComplete (inside the ring's dispatch).
  void OnAccept(int res, uint32_t flags);
  void OnRecv(Slot* s, int res, uint32_t flags);
  void OnSend(Slot* s, int res);
  void OnCancel() { --ops_; }

 private:
  uint8_t* Buffer(uint16_t bid) const { return pool_ + size_t{bid} * options_.recv_buffer_bytes; }

  void ReturnBuffer(uint16_t bid) {
    io_uring_buf_ring_add(buf_ring_, Buffer(bid), options_.recv_buffer_bytes, bid,
                          io_uring_buf_ring_mask(options_.recv_buffers), 0);
    io_uring_buf_ring_advance(buf_ring_, 1);
  }

  void ArmAccept() {
    io_uring_prep_multishot_accept(ring_->Prep(&accept_op_), listen_fd_, nullptr, nullptr,
                                   SOCK_NONBLOCK | SOCK_CLOEXEC);
    accept_armed_ = true;
    ++ops_;
  }

  void ArmRecv(Slot* s) {
    io_uring_sqe* sqe = ring_->Prep(&s->recv_op);
    io_uring_prep_recv(sqe, s->fd, nullptr, options_.recv_buffer_bytes, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group_;
    s->recv_armed = true;
    ++ops_;
  }

  // One send of what is unsent (at most kSendBytesMax), if anything is.
  void SendMore(Slot* s) {
    if (s->inflight_off == s->inflight.size()) {
      if (s->out.empty()) return;
      s->inflight.clear();
      s->inflight_off = 0;
      s->inflight.swap(s->out);  // the handler appends to the other buffer from now on
      internal::TrimIfDrained(&s->out);
    }
    const size_t len = std::min(internal::kSendBytesMax, s->inflight.size() - s->inflight_off);
    io_uring_prep_send(ring_->Prep(&s->send_op), s->fd, s->inflight.data() + s->inflight_off, len,
                       MSG_NOSIGNAL);
    s->send_armed = true;
    ++ops_;
  }

  void ListRearm(Slot* s) {
    if (s->rearm_listed) return;
    s->rearm_listed = true;
    rearm_.push_back(s->id);
  }

  // Receives that ended without data (ENOBUFS, EINTR): armed again now that
  // the dispatch gave every buffer back, oldest first, at most one per
  // buffer in the ring per round: more would only come back ENOBUFS.
  void RearmRecvs() {
    for (uint32_t armed = 0; armed < options_.recv_buffers && !rearm_.empty();) {
      const ConnId id = rearm_.front();
      rearm_.pop_front();
      Slot* s = conns_.Get(id);
      if (s == nullptr || !s->rearm_listed) continue;
      s->rearm_listed = false;
      if (s->recv_armed) continue;
      UpdateReading(s);
      armed += s->recv_armed ? 1 : 0;
    }
  }

  void RunDeferred() {
    if (!stopping_ && listen_fd_ >= 0 && !accept_armed_ && accept_retry_ms_ != 0 &&
        MonoMs() >= accept_retry_ms_) {
      accept_retry_ms_ = 0;
      ArmAccept();
    }
    RearmRecvs();
    RunCloses();
  }

  Ring* const ring_;
  Op accept_op_;
  Op cancel_op_;
  bool accept_armed_ = false;
  uint64_t ops_ = 0;  // operations of this loop the kernel holds
  bool leaked_ = false;
  std::deque<ConnId> rearm_;  // receives to arm again, oldest first

  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  uint8_t* pool_ = nullptr;
  size_t pool_bytes_ = 0;
  uint16_t group_ = 0;
  bool group_registered_ = false;
};

void Op::OnComplete(int res, uint32_t flags) {
  switch (kind_) {
    case Kind::kAccept:
      loop_->OnAccept(res, flags);
      return;
    case Kind::kRecv:
      loop_->OnRecv(slot_, res, flags);
      return;
    case Kind::kSend:
      loop_->OnSend(slot_, res);
      return;
    case Kind::kCancel:
      loop_->OnCancel();
      return;
  }
}

void UringLoop::OnAccept(int res, uint32_t flags) {
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) {
    accept_armed_ = false;
    --ops_;
  }
  if (res >= 0) {
    Accepted(res);
  } else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
    // Out of descriptors or memory: retrying now would fail again.
    ++stats_.accept_errors;
    if (!more) accept_retry_ms_ = MonoMs() + internal::kAcceptRetryMs;
    return;
  } else if (res == -ECANCELED && stopping_) {
    return;
  } else if (IsBugErrno(-res)) {
    internal::Bug("multishot accept", -res);
  } else {
    ++stats_.accept_errors;  // ECONNABORTED, EPERM, EPROTO: the next one may work
  }
  if (!more && !stopping_ && listen_fd_ >= 0) ArmAccept();
}

void UringLoop::OnRecv(Slot* s, int res, uint32_t flags) {
  s->recv_armed = false;
  --ops_;
  const bool has_buffer = (flags & IORING_CQE_F_BUFFER) != 0;
  const auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
  if (res > 0) {
    if (!has_buffer) internal::Bug("recv data without a provided buffer", EINVAL);
    ++stats_.recvs;
    stats_.bytes_in += static_cast<uint64_t>(res);
    if (s->state == ConnState::kOpen) {
      handler_->OnData(s->id, std::span<const uint8_t>(Buffer(bid), static_cast<size_t>(res)));
    }
    ReturnBuffer(bid);
    UpdateReading(s);
    return;
  }
  if (has_buffer) ReturnBuffer(bid);
  if (res == 0) {
    s->peer_eof = true;
    // kFlushing: the peer may only have shut down its side; keep sending.
    // kOpen: the handler says whether it still has answers to send.
    if (s->state == ConnState::kOpen) {
      if (handler_->OnPeerEof(s->id) && s->state == ConnState::kOpen) BeginClose(s, 0);
    } else if (s->state == ConnState::kLingering) {
      BeginClose(s, 0);
    }
  } else if (res == -ENOBUFS) {
    ++stats_.no_buffers;
    ListRearm(s);
  } else if (res == -EINTR || res == -EAGAIN) {
    ListRearm(s);
  } else if (s->state != ConnState::kClosing) {
    if (IsBugErrno(-res)) internal::Bug("recv", -res);
    BeginClose(s, -res);
  }
}

void UringLoop::OnSend(Slot* s, int res) {
  s->send_armed = false;
  --ops_;
  if (res > 0) {
    ++stats_.sends;
    stats_.bytes_out += static_cast<uint64_t>(res);
    s->inflight_off += static_cast<size_t>(res);
    if (s->inflight_off == s->inflight.size()) {
      s->inflight.clear();
      s->inflight_off = 0;
      internal::TrimIfDrained(&s->inflight);
    }
  } else if (res < 0 && res != -EINTR && res != -EAGAIN) {
    if (s->state == ConnState::kClosing) return;  // the shutdown of a close
    if (IsBugErrno(-res)) internal::Bug("send", -res);
    BeginClose(s, -res);  // EPIPE, ECONNRESET, ETIMEDOUT...
    return;
  }
  if (s->state == ConnState::kClosing) {
    std::string().swap(s->inflight);  // the kernel no longer reads it
    s->inflight_off = 0;
    return;
  }
  // A short send continues, and what was queued meanwhile follows at once.
  SendMore(s);
  if (s->state == ConnState::kFlushing && !s->send_armed) {
    FinishFlush(s);
  } else if (s->state == ConnState::kOpen && s->paused) {
    UpdateReading(s);
  }
}

}  // namespace

std::unique_ptr<Loop> MakeUringLoop(Ring* ring, Handler* handler, const LoopOptions& options,
                                    std::string* why) {
  std::string ignored;
  if (why == nullptr) why = &ignored;
  if (ring == nullptr) {
    *why = "no io_uring Ring";
    return nullptr;
  }
  auto loop = std::make_unique<UringLoop>(ring, handler, options);
  if (!loop->Init(why)) return nullptr;
  return loop;
}

}  // namespace ringq::uring::net
