// net::Loop: the TCP transport of a shard thread. It accepts connections on
// its own listening socket (SO_REUSEPORT: every shard binds the same port and
// the kernel spreads connections across them), receives bytes, and sends what
// the protocol layer queued. It knows nothing of frames or jobs: the
// protocol layer (service/rqp) is the Handler.
//
// Two backends behind this interface:
//   * io_uring (MakeUringLoop): multishot accept; recv with buffer select
//     from a provided buffer ring (liburing 2.3 has no io_uring_setup_buf_ring:
//     mmap + io_uring_buf_ring_init + io_uring_register_buf_ring); one send
//     SQE per connection with queued bytes, all prepared by Flush() and
//     submitted by the next Wait() in the same io_uring_enter as the WAL's
//     write+fdatasync, on the shard's shared Ring (uring/ring.h).
//   * epoll (MakeEpollLoop): nonblocking sockets, epoll_wait, recv/send
//     syscalls. Chosen when io_uring cannot be set up, or by RINGQ_IO=epoll.
//
// Bounds: per connection at most one receive buffer of data is handed to the
// handler per event; a connection whose unsent output exceeds
// send_queue_bytes_max stops being read (no recv armed, or EPOLLIN off) until
// its output drains below half of it (backpressure for slow readers).
//
// Thread: everything on the owning shard thread, including Handler calls
// (made from inside Wait() only). Handler callbacks may call Send/Output/
// Close/CloseAfterFlush for any connection, the one being dispatched
// included; OnClose for a connection closed that way comes later, never
// re-entrantly.
//
// As built (net/uring_loop.cc, net/epoll_loop.cc, net/loop_internal.h):
//   * Handler calls come from inside Wait() and Stop(). io_uring: OnOpen and
//     OnData run inside the Ring's dispatch, so any Ring::SubmitAndWait on
//     that ring makes them (the loop's Wait, and ~Wal with a shared ring,
//     which is why the loop is stopped first). A handler must not call
//     Wait, Stop or Ring::SubmitAndWait (asserted on the Ring).
//   * OnClose is always deferred: made at the end of a Wait (or in Stop),
//     after every OnData of that connection, once the kernel holds no
//     operation of it; the id is dead (Send false, Output null) during the
//     call. `error`: 0 for a peer's EOF, Close, CloseAfterFlush and Stop;
//     the errno of a failed recv/send (ECONNRESET, EPIPE...); ETIMEDOUT
//     when CloseAfterFlush's output did not drain within 5 s.
//   * A peer's EOF closes the connection at once (queued output dropped): a
//     client must not half-close before it has read its replies.
//   * CloseAfterFlush: input is no longer handed to the handler but still
//     read and dropped; after the output is sent, SHUT_WR, then the loop
//     waits for the peer's EOF (within the same 5 s) before close(2), so
//     that unread input cannot turn the close into a reset that destroys the
//     reply. Send/Output still work until SHUT_WR.
//   * Wait(): io_uring: one Ring::SubmitAndWait, then deferred work: recvs
//     re-armed after ENOBUFS (at most recv_buffers per round), accept re-armed
//     100 ms after EMFILE/ENFILE, close deadlines, frees and OnClose calls.
//     The timeout shrinks to 0 when an OnClose is ready, 1 ms while recvs
//     wait for buffers, 100 ms while a timer runs.
//   * io_uring sends: Flush() prepares one send per connection with output
//     and none in flight; a completion continues at once with the rest and
//     with what was queued meanwhile (prepared during Wait, submitted by the
//     next one).
//   * Destroy the loop before its Ring, on the shard thread (or after it
//     joined); the destructor calls Stop() (so OnClose) if not yet done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace ringq::uring {
class Ring;
}

namespace ringq::uring::net {

// Names one connection of one loop: slot index in the low 32 bits, a
// generation in the high 32, so a stale id never reaches a new connection in
// the same slot. 0 is never a valid id.
using ConnId = uint64_t;

struct LoopOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: the kernel picks (read it back with port())
  bool reuseport = true;
  int backlog = 4096;
  // Per connection: unsent output above which reading stops (resumes below half).
  size_t send_queue_bytes_max = 8u << 20;
  // Provided buffer ring (io_uring) / recv buffer (epoll).
  uint32_t recv_buffer_bytes = 64u << 10;
  uint32_t recv_buffers = 256;  // power of two
};

class Handler {
 public:
  virtual ~Handler() = default;
  // A connection was accepted. The handler may refuse it by queuing an error
  // and calling CloseAfterFlush (or Close).
  virtual void OnOpen(ConnId id) = 0;
  // Bytes received on `id`, in stream order. `data` is valid during the call only.
  virtual void OnData(ConnId id, std::span<const uint8_t> data) = 0;
  // The peer shut down its sending side (EOF) while the connection is open.
  // Return true to close at once (queued output is dropped), or false to
  // keep the connection for writing: the loop reads it no more, and the
  // handler ends it later with CloseAfterFlush (a client that half-closes
  // to collect the answers in flight, PROTOCOL.md section 9).
  virtual bool OnPeerEof(ConnId id) { return true; }
  // The connection is gone: the peer closed (error 0), a socket error
  // (error = errno), or Close/CloseAfterFlush finished. Called exactly once
  // per opened connection; the id is dead once it returns.
  virtual void OnClose(ConnId id, int error) = 0;
};

struct LoopStats {
  uint64_t accepted = 0;
  uint64_t closed = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t recvs = 0;  // completed receive operations / recv calls with data
  uint64_t sends = 0;  // send operations / send calls
  // epoll: every syscall (epoll_wait, epoll_ctl, recv, send, accept4, setsockopt,
  // shutdown, close). io_uring: the loop's own direct syscalls (setsockopt,
  // shutdown, close); io_uring_enter is counted by Ring::enters, shared with the WAL.
  uint64_t syscalls = 0;
  uint64_t read_pauses = 0;    // times a connection stopped being read for backpressure
  uint64_t no_buffers = 0;     // io_uring: recv completions with ENOBUFS (buffer ring empty)
  uint64_t accept_errors = 0;  // failed accepts (EMFILE/ENFILE: retried 100 ms later)
  uint64_t refused = 0;        // accepted past the connection limit and closed at once
};

class Loop {
 public:
  virtual ~Loop() = default;

  // Binds and listens on options.host:options.port. False (and `why`) when
  // the socket cannot be set up. port() tells the bound port.
  [[nodiscard]] virtual bool Listen(std::string* why) = 0;
  virtual uint16_t port() const = 0;

  // Appends bytes to the connection's output. False when the id is dead.
  virtual bool Send(ConnId id, std::string_view bytes) = 0;
  // The connection's output buffer, to append to in place (zero-copy
  // encoding); nullptr when the id is dead. Append only; never shrink.
  virtual std::string* Output(ConnId id) = 0;
  // Unsent output bytes of `id` (0 when dead).
  virtual size_t OutputBytes(ConnId id) const = 0;
  // Stops reading `id`, sends its queued output, shuts down writing, then
  // closes (OnClose follows). Bounded: gives up after 5 s of a non-reading peer.
  virtual void CloseAfterFlush(ConnId id) = 0;
  // Closes at once; queued output is dropped. OnClose follows.
  virtual void Close(ConnId id) = 0;

  // Starts sends for every connection with queued output (io_uring: SQEs
  // prepared now, submitted by the next Wait; epoll: send() now).
  virtual void Flush() = 0;
  // Waits up to timeout_ms for network events or a watched fd turning
  // readable, then makes every Handler call they lead to. io_uring: one
  // Ring::SubmitAndWait, which also submits the WAL's SQEs.
  virtual void Wait(uint64_t timeout_ms) = 0;
  // An fd whose readability must end Wait (the shard inbox's eventfd, the
  // journal's). The loop never reads it; the owner does after Wait.
  virtual void WatchFd(int fd) = 0;

  // Stops accepting, closes every connection (OnClose for each) and waits
  // (bounded) until the kernel holds no operation of this loop, so that the
  // Ring may go on serving the WAL alone. io_uring: drives
  // Ring::SubmitAndWait itself (so it also dispatches the WAL's completions);
  // after 2 s it logs and leaks the memory the kernel may still use.
  // Idempotent; the loop cannot listen again afterwards.
  virtual void Stop() = 0;

  virtual size_t connections() const = 0;
  virtual LoopStats stats() const = 0;
  virtual const char* name() const = 0;  // "io_uring" or "epoll"
};

// nullptr (and `why`) when the ring cannot serve networking (no provided
// buffer rings or multishot accept on this kernel).
std::unique_ptr<Loop> MakeUringLoop(Ring* ring, Handler* handler, const LoopOptions& options,
                                    std::string* why);
std::unique_ptr<Loop> MakeEpollLoop(Handler* handler, const LoopOptions& options);

}  // namespace ringq::uring::net
