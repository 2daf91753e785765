// The protocol seam of ringq-bench: everything a scenario needs from a
// server, behind one small interface, so that a second protocol (RQP) plugs
// in as one more Driver without touching the scenarios.
//
// Threads: every method may be called from any thread, including from inside
// a callback. A job's bytes (JobSeed) are copied before the call returns.
// Callbacks (sinks) run on the driver's own threads and must not block; they
// may start new operations.
//
// Lifetime: a Connection outlives the pipes and subscriptions opened on it;
// sinks outlive the operations that report to them. Every asynchronous
// operation ends in exactly one callback (success or error), also when the
// server goes away, so a scenario can always count its operations home.
//
// "Done" means what the server said: a push outcome is the server's answer
// (for ringq: sent once the job is as durable as its --durability mode makes
// it); a delivery is a job leased to this subscription; acks are sent
// batched, one request per received message (or fewer while a write is in
// flight).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringq::bench {

struct JobSeed {
  std::string_view queue;
  std::string_view payload;
};

struct PushOutcome {
  bool ok = false;
  uint64_t id = 0;
  std::string error;  // set when !ok: status code and message
};

class PushSink {
 public:
  virtual ~PushSink() = default;
  virtual void OnPushed(uint64_t tag, const PushOutcome& outcome) = 0;
};

class BatchSink {
 public:
  virtual ~BatchSink() = default;
  // outcomes[i] answers jobs[i] of the batch; all failed with one error when the call failed.
  virtual void OnBatchPushed(uint64_t tag, std::span<const PushOutcome> outcomes) = 0;
};

struct DeliveredJob {
  uint64_t id = 0;
  std::string_view queue;
  std::string_view payload;
};

class DeliverySink {
 public:
  virtual ~DeliverySink() = default;
  // All the deliveries of one received message, stamped with the receive time
  // (CLOCK_MONOTONIC ns). Their acks are queued before this is called and
  // sent once it returns, so a Close() after the sink saw a job sends its ack.
  virtual void OnDeliveries(std::span<const DeliveredJob> jobs, int64_t received_ns) = 0;
};

// Many pushes in flight on one connection (gRPC: a PushStream, answered in
// order; RQP: pipelined PUSH frames, answered in any order). Answers are
// matched by tag either way.
class PushPipe {
 public:
  virtual ~PushPipe() = default;
  // Sends one push; its answer goes to the sink given at open, with `tag`.
  // The caller bounds how many are unanswered.
  virtual void Push(const JobSeed& job, uint64_t tag) = 0;
  // Half-closes after the pushes sent so far and waits (at most timeout_ms) for
  // their answers and the end of the stream. False (with *error) if it failed.
  virtual bool Close(int timeout_ms, std::string* error) = 0;
};

// A credit-based worker stream over 1..16 queues.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // Half-closes (the server releases what was leased and not acked) and waits
  // at most timeout_ms for the end. Returns the errors seen: settle errors,
  // plus one if the stream did not end with OK (server error, or timeout).
  virtual uint64_t Close(int timeout_ms) = 0;
  virtual uint64_t acks_sent() const = 0;
  // The first error seen, or empty.
  virtual std::string error() const = 0;
};

// One transport connection (its own TCP connection).
class Connection {
 public:
  virtual ~Connection() = default;
  // One push, one request; several may be in flight.
  virtual void Push(const JobSeed& job, uint64_t tag, PushSink* sink) = 0;
  // Several jobs in one request.
  virtual void PushBatch(std::span<const JobSeed> jobs, uint64_t tag, BatchSink* sink) = 0;
  virtual std::unique_ptr<PushPipe> OpenPushPipe(PushSink* sink) = 0;
  virtual std::unique_ptr<Subscription> Subscribe(const std::vector<std::string>& queues,
                                                  uint32_t credits, DeliverySink* sink) = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string name() const = 0;  // "grpc", "rqp"
  // Connects (waits at most timeout_ms). Null with *error when it cannot.
  virtual std::unique_ptr<Connection> Connect(int timeout_ms, std::string* error) = 0;
};

// Factories, one per protocol. `target` is HOST:PORT (the server's gRPC port,
// resp. its RQP port).
std::unique_ptr<Driver> NewGrpcDriver(const std::string& target);
std::unique_ptr<Driver> NewRqpDriver(const std::string& target);  // rqp_driver.cc

}  // namespace ringq::bench
