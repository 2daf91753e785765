// Internal to net/: what the io_uring and epoll loops share, so that it is
// written once: the listening socket, the connection table with generations,
// the close state machine's states, the backpressure rule and the output
// buffer trimming. Not a public header: include only from net/*.cc.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "uring/net/loop.h"

namespace ringq::uring::net::internal {

// CloseAfterFlush gives up on a peer that does not read (or never closes)
// after this long (loop.h).
constexpr uint64_t kCloseAfterFlushMs = 5000;
// Stop waits this long for the kernel to finish the loop's operations.
constexpr uint64_t kStopWaitMs = 2000;
// An accept that failed for lack of descriptors or memory is retried this
// much later, not at once (it would fail again and spin).
constexpr uint64_t kAcceptRetryMs = 100;
// While a timer (accept retry, close deadline) runs, Wait sleeps at most this.
constexpr uint64_t kTimerWaitMsMax = 100;
// While receives wait to be re-armed (io_uring: the buffer ring ran empty),
// Wait sleeps at most this.
constexpr uint64_t kRearmWaitMs = 1;
// An output buffer that drained keeps at most this capacity: a burst's memory
// goes back once sent, so an idle connection costs little.
constexpr size_t kOutputKeepBytesMax = 64u << 10;
// One send operation (or send call) carries at most this many bytes.
constexpr size_t kSendBytesMax = 4u << 20;
// Connections per loop; past it new ones are accepted and closed at once.
constexpr uint32_t kConnectionsMax = 1u << 20;

inline uint64_t MonoMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

[[noreturn]] inline void Bug(const char* what, int err) {
  std::fprintf(stderr, "ringqd: FATAL (bug): net loop %s: %s\n", what, std::strerror(err));
  std::abort();
}

// errno values of a socket operation that only a bug produces (a closed or
// wrong fd, a bad address or flag): fail-stop rather than guess.
inline bool IsBugErrno(int err) {
  return err == EBADF || err == EFAULT || err == EINVAL || err == ENOTSOCK || err == EOPNOTSUPP;
}

// Lifecycle of one connection. kOpen -> (Close, peer EOF, error) kClosing;
// kOpen -> (CloseAfterFlush) kFlushing -> (output sent; SHUT_WR) kLingering
// -> (peer EOF or deadline) kClosing -> (no operation in flight) freed, and
// OnClose. Input is handed to the handler only in kOpen; in kFlushing and
// kLingering it is read and dropped, so that the final close does not reset
// a connection whose last bytes the peer has not read yet.
enum class ConnState : uint8_t { kOpen, kFlushing, kLingering, kClosing };

// Backpressure with hysteresis (loop.h): reading stops above `max` unsent
// bytes and resumes below max / 2. Returns whether reading may go on, and
// counts each stop.
inline bool ReadAllowed(bool* paused, size_t unsent, size_t max, uint64_t* pauses) {
  if (*paused) {
    if (unsent >= max / 2) return false;
    *paused = false;
    return true;
  }
  if (unsent > max) {
    *paused = true;
    ++*pauses;
    return false;
  }
  return true;
}

// Gives a drained buffer's memory back after a big burst.
inline void TrimIfDrained(std::string* s) {
  if (s->empty() && s->capacity() > kOutputKeepBytesMax) std::string().swap(*s);
}

// Slots with generations: ConnId = generation << 32 | (index + 1). A slot
// never moves while its connection lives (its Completions' addresses are in
// flight); it is deleted when freed (freeing happens only once no operation
// is in flight), so that a server that once held many connections returns
// to its baseline memory. Free indexes are reused newest first.
template <typename Slot>
class ConnTable {
 public:
  struct Entry {
    ConnId id = 0;  // 0: free
    uint32_t generation = 1;
    std::unique_ptr<Slot> slot;
  };

  // A free slot and its new id, or nullptr when kConnectionsMax are open.
  Slot* Add(ConnId* id) {
    uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    } else {
      if (entries_.size() >= kConnectionsMax) return nullptr;
      index = static_cast<uint32_t>(entries_.size());
      entries_.push_back(Entry{});
    }
    Entry& e = entries_[index];
    if (!e.slot) e.slot = std::make_unique<Slot>();
    e.id = (uint64_t{e.generation} << 32) | (uint64_t{index} + 1);
    *id = e.id;
    ++live_;
    return e.slot.get();
  }

  Slot* Get(ConnId id) const {
    const uint64_t low = id & 0xffffffffu;
    if (low == 0 || low > entries_.size()) return nullptr;
    const Entry& e = entries_[low - 1];
    return e.id == id ? e.slot.get() : nullptr;
  }

  // The id dies at once; the slot is reset by the caller before its reuse.
  void Free(ConnId id) {
    const uint64_t low = id & 0xffffffffu;
    if (low == 0 || low > entries_.size() || entries_[low - 1].id != id) {
      Bug("free of a dead connection id", EINVAL);
    }
    Entry& e = entries_[low - 1];
    e.id = 0;
    e.slot.reset();
    e.generation = e.generation == UINT32_MAX ? 1 : e.generation + 1;
    free_.push_back(static_cast<uint32_t>(low - 1));
    --live_;
  }

  template <typename F>
  void ForEachLive(F&& f) {
    for (Entry& e : entries_) {
      if (e.id != 0) f(e.id, e.slot.get());
    }
  }

  // Gives up ownership of every slot (the kernel may still write into them).
  void Leak() {
    for (Entry& e : entries_) static_cast<void>(e.slot.release());
  }

  size_t live() const { return live_; }

 private:
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
  size_t live_ = 0;
};

// Creates the listening socket of `options` (loop.h); -1 and `why` on error.
inline int ListenSocket(const LoopOptions& options, uint16_t* port, std::string* why) {
  auto fail = [&](const std::string& what, int err) {
    if (why != nullptr) {
      *why = what + " " + options.host + ":" + std::to_string(options.port) + ": " +
             std::strerror(err);
    }
    return -1;
  };
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options.port);
  const std::string host = options.host == "localhost" ? "127.0.0.1" : options.host;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return fail("host must be an IPv4 dotted quad or localhost:", EINVAL);
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket for", errno);
  const int one = 1;
  auto close_fail = [&](const char* what) {
    const int err = errno;
    close(fd);
    return fail(what, err);
  };
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return close_fail("SO_REUSEADDR on");
  }
  if (options.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return close_fail("SO_REUSEPORT on");
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return close_fail("bind");
  }
  if (listen(fd, options.backlog) != 0) return close_fail("listen on");
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return close_fail("getsockname of");
  }
  *port = ntohs(bound.sin_port);
  return fd;
}

// The common part of Loop::Listen: opens *listen_fd (counting its system
// calls in stats) unless the loop already listens or is stopping.
inline bool OpenListener(const LoopOptions& options, bool stopping, int* listen_fd, uint16_t* port,
                         LoopStats* stats, std::string* why) {
  if (*listen_fd >= 0 || stopping) {
    *why = "already listening, or stopped";
    return false;
  }
  *listen_fd = ListenSocket(options, port, why);
  if (*listen_fd < 0) return false;
  // socket, setsockopt(s), bind, listen, getsockname
  stats->syscalls += options.reuseport ? 6 : 5;
  return true;
}

// Per accepted socket (already nonblocking and close-on-exec from accept4 /
// the accept SQE's flags): no Nagle delay for small replies. False on error.
inline bool ConfigureAccepted(int fd) {
  const int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
}

// What every connection slot holds, whatever the backend.
struct SlotBase {
  ConnId id = 0;
  int fd = -1;
  ConnState state = ConnState::kOpen;
  bool paused = false;       // backpressure: not reading (ReadAllowed)
  bool dirty = false;        // listed for the next Flush
  bool peer_eof = false;     // the peer shut down its sending side
  int error = 0;             // for OnClose
  uint64_t deadline_ms = 0;  // kFlushing / kLingering: closed at this time at the latest
  std::string out;           // queued by the handler, not yet handed to the kernel
};

// The backend-independent half of a Loop: the public bookkeeping calls, the
// close state machine and the deferred OnClose calls. Derived provides:
//   size_t Unsent(const Slot&) const  - bytes queued or in flight, not yet sent
//   bool Sending(const Slot&) const   - a send is in flight (the kernel reads `out` memory)
//   bool InFlight(const Slot&) const  - any operation of the slot is in the kernel
//   void CloseBegun(Slot*)            - make in-flight operations finish (kClosing)
//   void UpdateReading(Slot*)         - arm or stop reading per WantRead()
//   void Opened(Slot*)                - backend setup of an accepted socket
//   bool RearmPending() const         - reads wait to be re-armed (Wait sleeps 1 ms at most)
template <typename Derived, typename Slot>
class LoopCore : public Loop {
 public:
  uint16_t port() const override { return port_; }

  bool Send(ConnId id, std::string_view bytes) override {
    std::string* out = Output(id);
    if (out == nullptr) return false;
    out->append(bytes);
    return true;
  }

  std::string* Output(ConnId id) override {
    Slot* s = conns_.Get(id);
    if (s == nullptr || (s->state != ConnState::kOpen && s->state != ConnState::kFlushing)) {
      return nullptr;
    }
    MarkDirty(s);
    return &s->out;
  }

  size_t OutputBytes(ConnId id) const override {
    const Slot* s = conns_.Get(id);
    return s == nullptr ? 0 : self().Unsent(*s);
  }

  void Close(ConnId id) override {
    if (Slot* s = conns_.Get(id)) BeginClose(s, 0);
  }

  void CloseAfterFlush(ConnId id) override {
    Slot* s = conns_.Get(id);
    if (s == nullptr || s->state != ConnState::kOpen) return;
    s->state = ConnState::kFlushing;
    s->paused = false;  // input is read and dropped from now on
    s->deadline_ms = MonoMs() + kCloseAfterFlushMs;
    lingering_.push_back(id);
    if (self().Unsent(*s) == 0 && !self().Sending(*s)) {
      FinishFlush(s);
    } else {
      MarkDirty(s);
      self().UpdateReading(s);
    }
  }

  size_t connections() const override { return conns_.live(); }
  LoopStats stats() const override { return stats_; }

 protected:
  LoopCore(Handler* handler, const LoopOptions& options) : handler_(handler), options_(options) {
    if (handler == nullptr) Bug("loop without a handler", EINVAL);
    if (options.send_queue_bytes_max == 0 || options.recv_buffer_bytes == 0) {
      Bug("send_queue_bytes_max and recv_buffer_bytes must be > 0", EINVAL);
    }
  }

  Derived& self() { return static_cast<Derived&>(*this); }
  const Derived& self() const { return static_cast<const Derived&>(*this); }

  void MarkDirty(Slot* s) {
    if (s->dirty) return;
    s->dirty = true;
    dirty_.push_back(s->id);
  }

  // The live slots listed since the last call, each once, flags cleared.
  std::vector<Slot*> TakeDirty() {
    std::vector<Slot*> slots;
    slots.reserve(dirty_.size());
    for (ConnId id : dirty_) {
      Slot* s = conns_.Get(id);
      if (s != nullptr && s->dirty) {
        s->dirty = false;
        slots.push_back(s);
      }
    }
    dirty_.clear();
    return slots;
  }

  // Whether the slot may be read now: in kOpen per the backpressure rule, in
  // kFlushing / kLingering until the peer's EOF (input dropped), never in kClosing.
  bool WantRead(Slot* s) {
    switch (s->state) {
      case ConnState::kOpen:
        if (s->peer_eof) return false;  // the handler keeps it open for writing
        return ReadAllowed(&s->paused, self().Unsent(*s), options_.send_queue_bytes_max,
                           &stats_.read_pauses);
      case ConnState::kFlushing:
      case ConnState::kLingering:
        return !s->peer_eof;
      case ConnState::kClosing:
        return false;
    }
    return false;
  }

  // An accepted socket: a slot, OnOpen, then reading. nullptr when refused.
  Slot* Accepted(int fd) {
    ConnId id = 0;
    Slot* s = stopping_ ? nullptr : conns_.Add(&id);
    if (s == nullptr) {
      if (!stopping_) ++stats_.refused;
      CloseFd(fd);
      return nullptr;
    }
    ++stats_.syscalls;
    if (!ConfigureAccepted(fd) && IsBugErrno(errno)) Bug("TCP_NODELAY", errno);
    s->id = id;
    s->fd = fd;
    s->state = ConnState::kOpen;
    ++stats_.accepted;
    self().Opened(s);
    handler_->OnOpen(id);
    if (s->state != ConnState::kClosing) self().UpdateReading(s);
    return s;
  }

  void BeginClose(Slot* s, int error) {
    if (s->state == ConnState::kClosing) return;
    s->state = ConnState::kClosing;
    s->error = error;
    s->out.clear();
    TrimIfDrained(&s->out);
    closing_.push_back(s->id);
    self().CloseBegun(s);
  }

  // CloseAfterFlush's output is all sent: FIN, then wait for the peer's.
  void FinishFlush(Slot* s) {
    Shutdown(s->fd, SHUT_WR);
    s->state = ConnState::kLingering;
    if (s->peer_eof) {
      BeginClose(s, 0);
    } else {
      self().UpdateReading(s);
    }
  }

  // Errors (ENOTCONN: the peer already reset) change nothing: what follows
  // is a close either way.
  void Shutdown(int fd, int how) {
    ++stats_.syscalls;
    shutdown(fd, how);
  }

  void CloseFd(int fd) {
    ++stats_.syscalls;
    if (close(fd) != 0 && errno == EBADF) Bug("close", EBADF);
  }

  // After each dispatch: close deadlines, then the closes whose I/O drained
  // (fd closed, slot freed: the id is dead), then their OnClose calls, made
  // last so that the handler sees a consistent loop.
  void RunCloses() {
    const uint64_t now = MonoMs();
    size_t keep = 0;
    for (ConnId id : lingering_) {
      Slot* s = conns_.Get(id);
      if (s == nullptr || (s->state != ConnState::kFlushing && s->state != ConnState::kLingering)) {
        continue;
      }
      if (now >= s->deadline_ms) {
        // kFlushing: the peer did not read what was queued (ETIMEDOUT).
        // kLingering: every byte went out with our FIN; the peer just has
        // not closed its side: a normal end (0).
        BeginClose(s, s->state == ConnState::kFlushing ? ETIMEDOUT : 0);
        continue;
      }
      lingering_[keep++] = id;
    }
    lingering_.resize(keep);

    std::vector<std::pair<ConnId, int>> calls;
    keep = 0;
    for (ConnId id : closing_) {
      Slot* s = conns_.Get(id);
      if (s == nullptr) Bug("closing slot is gone", EINVAL);
      if (self().InFlight(*s)) {
        closing_[keep++] = id;
        continue;
      }
      CloseFd(s->fd);
      ++stats_.closed;
      calls.emplace_back(id, s->error);
      s->Reset();
      conns_.Free(id);
    }
    closing_.resize(keep);
    for (const auto& [id, error] : calls) handler_->OnClose(id, error);
  }

  // How long Wait may sleep: not at all when a close is ready to finish,
  // 1 ms while reads wait to be re-armed, briefly while a timer (accept
  // retry, close deadline) runs.
  uint64_t WaitMs(uint64_t timeout_ms) const {
    for (ConnId id : closing_) {
      const Slot* s = conns_.Get(id);
      if (s != nullptr && !self().InFlight(*s)) return 0;
    }
    if (self().RearmPending()) return std::min<uint64_t>(timeout_ms, kRearmWaitMs);
    if (accept_retry_ms_ != 0 || !lingering_.empty()) {
      return std::min<uint64_t>(timeout_ms, kTimerWaitMsMax);
    }
    return timeout_ms;
  }

  // Stop's first half: no more accepts, every connection closing.
  void BeginStop() {
    stopping_ = true;
    accept_retry_ms_ = 0;
    conns_.ForEachLive([&](ConnId, Slot* s) { BeginClose(s, 0); });
  }

  Handler* const handler_;
  const LoopOptions options_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  uint64_t accept_retry_ms_ = 0;  // 0: no retry pending
  bool stopping_ = false;
  bool stopped_ = false;
  ConnTable<Slot> conns_;
  std::vector<ConnId> dirty_;      // output queued since the last Flush
  std::vector<ConnId> closing_;    // kClosing, waiting for their I/O to drain
  std::vector<ConnId> lingering_;  // kFlushing / kLingering, with deadlines
  LoopStats stats_;
};

}  // namespace ringq::uring::net::internal
