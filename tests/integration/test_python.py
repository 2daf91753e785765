#!/usr/bin/python3
"""Integration test of ringqd through the Python gRPC client.

Goal: check the gRPC API's promises end to end against a real server: what is
pushed is delivered exactly as pushed, credits bound a subscription, fails
retry and then dead-letter, RetryDead revives, stale lease tokens and bad input
are refused with the documented status codes.

Method: generate the Python stubs with client/python/ringq_gen.sh into a
temporary directory, start ringqd on 127.0.0.1 with --grpc-port=0 and a
temporary --data-dir, read the port from its `gRPC listening on HOST:PORT`
log line, then run each test on its own queue (so tests cannot see each
other's jobs). Every wait has a deadline; the server is stopped at the end
even when a test fails, and dies with this process (PR_SET_PDEATHSIG) if this
process is killed.

Run with Debian's interpreter (it sees python3-grpcio and python3-protobuf):
    /usr/bin/python3 tests/integration/test_python.py --ringqd build/release/service/ringqd
Exits non-zero when a test fails; the last line is `python: N passed, M failed`.
"""

import argparse
import ctypes
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"gRPC listening on [^:]+:(\d+)")
STARTUP_TIMEOUT_S = 15
RPC_TIMEOUT_S = 5  # deadline of every unary call
WAIT_TIMEOUT_S = 5  # how long a test waits for a delivery or result it expects
STREAM_TIMEOUT_S = 30  # deadline of every Subscribe stream
QUIET_S = 0.4  # how long "nothing more arrives" is watched for
STOP_TIMEOUT_S = 10  # SIGTERM to SIGKILL; ringqd's --shutdown-grace-ms defaults to 5000

grpc = None  # imported in main() once the interpreter is known to be right
pb = None  # ringq.v1.queue_pb2
pb_grpc = None  # ringq.v1.queue_pb2_grpc


class TestFailure(AssertionError):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def check_eq(got, expected, what):
    if got != expected:
        raise TestFailure(f"{what}: expected {expected!r}, got {got!r}")


def expect_status(code, call, what):
    """Runs call(), which must fail with gRPC status `code`; returns the RpcError."""
    try:
        reply = call()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: expected {code.name}, got {e.code().name}: {e.details()}")
        return e
    raise TestFailure(f"{what}: expected {code.name}, got OK: {reply!r}")


# --- the server -------------------------------------------------------------------------------


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it when the test process dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Server:
    """One ringqd process on 127.0.0.1 with an ephemeral port and its own data dir."""

    def __init__(self, binary, data_dir, log_path):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = None
        self.proc = None
        self._listening = threading.Event()
        self._log_thread = None

    def start(self):
        argv = [self.binary, "--host", "127.0.0.1", "--grpc-port", "0", "--rqp-port", "0",
                "--data-dir", self.data_dir, "--shards", "2"]
        argv += self._optional_flags()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self._log_thread = threading.Thread(target=self._read_log, daemon=True)
        self._log_thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise TestFailure(f"ringqd exited with {self.proc.returncode} before listening:\n"
                                  + self.log_tail())
            if time.monotonic() > deadline:
                raise TestFailure(f"ringqd printed no 'gRPC listening on' line within "
                                  f"{STARTUP_TIMEOUT_S}s:\n" + self.log_tail())
        return f"127.0.0.1:{self.port}"

    def _optional_flags(self):
        """Flags that keep parallel test runs apart, passed only if this ringqd has them."""
        try:
            usage = subprocess.run([self.binary, "--help"], capture_output=True, text=True,
                                   timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return []
        text = usage.stdout + usage.stderr
        flags = []
        if "--http-port" in text:
            flags += ["--http-port", "0"]  # metrics/health listener: any free port
        return flags

    def _read_log(self):
        with open(self.log_path, "wb") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if not self._listening.is_set():
                    match = LISTEN_RE.search(line.decode(errors="replace"))
                    if match:
                        self.port = int(match.group(1))
                        self._listening.set()

    def log_tail(self, lines=40):
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("  | " + l for l in text.splitlines()[-lines:])

    def stop(self):
        """SIGTERM, then SIGKILL if it is still running after 10 s. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"ringqd did not exit within {STOP_TIMEOUT_S} s of SIGTERM; killing it",
                      file=sys.stderr)
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log_thread is not None:
            self._log_thread.join(timeout=2)
        return self.proc.returncode


# --- client helpers ---------------------------------------------------------------------------


class Outbox:
    """The request side of a stream: gRPC pulls from this iterator in its own thread."""

    def __init__(self):
        self._queue = queue.Queue()

    def send(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(None)

    def __iter__(self):
        while True:
            request = self._queue.get()
            if request is None:
                return
            yield request


class Subscription:
    """A Subscribe stream whose responses are read by a thread, so every wait has a deadline."""

    _END = object()

    def __init__(self, stub, queues, credits):
        self.outbox = Outbox()
        self.outbox.send(pb.SubscribeRequest(open=pb.SubscribeOpen(queues=queues, credits=credits)))
        self.call = stub.Subscribe(iter(self.outbox), timeout=STREAM_TIMEOUT_S)
        self._inbox = queue.Queue()
        self._deliveries = []
        self._results = []
        self._ended = None  # the RpcError (or "EOF") that ended the stream
        self._closing = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for response in self.call:
                self._inbox.put(response)
            self._inbox.put(self._END)
        except grpc.RpcError as e:
            self._inbox.put(e)

    def _pump(self, timeout):
        """Moves what arrived within `timeout` s into the buffers. False when nothing came."""
        try:
            item = self._inbox.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if item is self._END or isinstance(item, grpc.RpcError):
            self._ended = item
            self._inbox.put(item)  # keep reporting the end to later waits
            if not self._closing:
                what = "EOF" if item is self._END else f"{item.code().name}: {item.details()}"
                raise TestFailure(f"Subscribe stream ended unexpectedly: {what}")
            return False
        self._deliveries.extend(item.deliveries)
        self._results.extend(item.results)
        return True

    def _take(self, buffer, count, what, timeout):
        deadline = time.monotonic() + timeout
        while len(buffer) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure(f"got {len(buffer)} of {count} {what} within {timeout}s")
            self._pump(left)
        taken = buffer[:count]
        del buffer[:count]
        return taken

    def deliveries(self, count, timeout=WAIT_TIMEOUT_S):
        """Waits for exactly `count` more deliveries and returns them in arrival order."""
        return self._take(self._deliveries, count, "deliveries", timeout)

    def drain(self):
        """Returns every delivery that has already arrived, without waiting."""
        while self._pump(0):
            pass
        taken, self._deliveries = self._deliveries, []
        return taken

    def results(self, count, timeout=WAIT_TIMEOUT_S):
        return self._take(self._results, count, "settle results", timeout)

    def expect_quiet(self, seconds=QUIET_S):
        """Fails if any delivery arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        check(not self._deliveries,
              f"expected no delivery, got {len(self._deliveries)}: "
              f"{[d.job.id for d in self._deliveries]}")

    def ack(self, deliveries, result=b""):
        self.outbox.send(pb.SubscribeRequest(acks=[
            pb.AckRequest(id=d.job.id, lease_token=d.lease_token, result=result)
            for d in deliveries]))

    def fail(self, delivery, error, **kwargs):
        self.outbox.send(pb.SubscribeRequest(fails=[
            pb.FailRequest(id=delivery.job.id, lease_token=delivery.lease_token, error=error,
                           **kwargs)]))

    def credits(self, count):
        self.outbox.send(pb.SubscribeRequest(credits=count))

    def close(self):
        self._closing = True
        self.outbox.close()
        self.call.cancel()
        self._reader.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Context:
    """What a test gets: the stub, the server and a unique queue name maker."""

    def __init__(self, stub, channel, server, addr, stubs_dir):
        self.stub = stub
        self.channel = channel
        self.server = server
        self.addr = addr
        self.stubs_dir = stubs_dir
        self.test_name = ""

    def queue(self, suffix=""):
        name = f"py.{self.test_name}{('.' + suffix) if suffix else ''}"
        return name[:128]

    def push(self, queue_name, payload, **spec):
        reply = self.stub.Push(pb.PushRequest(job=pb.JobSpec(queue=queue_name, payload=payload,
                                                             **spec)), timeout=RPC_TIMEOUT_S)
        check(reply.id != 0, f"Push returned id 0 for {payload!r}")
        check(not reply.duplicate, f"Push of {payload!r} reported duplicate")
        return reply.id

    def stats(self, queue_name):
        reply = self.stub.Stats(pb.StatsRequest(queue=queue_name), timeout=RPC_TIMEOUT_S)
        matching = [q for q in reply.queues if q.queue == queue_name]
        check(len(matching) == 1, f"Stats(queue={queue_name!r}) has {len(matching)} entries "
              f"for it: {[q.queue for q in reply.queues]}")
        return matching[0]

    def fetch(self, queue_name, count, wait_ms):
        """Fetches until `count` deliveries arrived (bounded by WAIT_TIMEOUT_S)."""
        deliveries = []
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while len(deliveries) < count:
            check(time.monotonic() < deadline,
                  f"Fetch got {len(deliveries)} of {count} jobs within {WAIT_TIMEOUT_S}s")
            reply = self.stub.Fetch(pb.FetchRequest(queue=queue_name, max=count - len(deliveries),
                                                    wait_ms=wait_ms), timeout=RPC_TIMEOUT_S)
            deliveries.extend(reply.deliveries)
        check_eq(len(deliveries), count, "Fetch deliveries")
        return deliveries


def check_results_ok(results, op, ids, what):
    check_eq(sorted(r.id for r in results), sorted(ids), f"{what}: settled ids")
    for r in results:
        check(not r.HasField("error"),
              f"{what}: job {r.id} settle error {r.error.code}: {r.error.message}")
        check_eq(pb.SettleOp.Name(r.op), pb.SettleOp.Name(op), f"{what}: op of job {r.id}")


def state_name(state):
    return pb.JobState.Name(state)


# --- the tests --------------------------------------------------------------------------------


def test_health(ctx):
    """The standard gRPC health service answers SERVING for the whole server."""
    check_fn = ctx.channel.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
    reply = check_fn(b"", timeout=RPC_TIMEOUT_S)  # HealthCheckRequest{service: ""}
    check_eq(reply, b"\x08\x01", "HealthCheckResponse bytes (status = SERVING)")


def test_push_subscribe_ack(ctx):
    """Pushed jobs reach a Subscribe worker exactly once with their payloads; acks complete them."""
    q = ctx.queue()
    count = 20
    pushed = {}
    for i in range(count):
        payload = f"payload-{i}-\x00\xff".encode("latin-1")
        pushed[ctx.push(q, payload)] = payload
    check_eq(len(pushed), count, "distinct ids")
    received = {}
    results = []
    with Subscription(ctx.stub, [q], credits=4) as sub:
        while len(received) < count:
            # Take what has arrived (at least one), ack it all in one message.
            batch = sub.deliveries(1) + sub.drain()
            for d in batch:
                check(d.job.id not in received, f"job {d.job.id} delivered twice")
                check_eq(d.job.queue, q, f"queue of job {d.job.id}")
                check_eq(state_name(d.job.state), "JOB_STATE_ACTIVE", f"state of job {d.job.id}")
                check_eq(d.job.attempts, 1, f"attempts of job {d.job.id}")
                check(d.lease_token != 0, f"job {d.job.id} has lease token 0")
                received[d.job.id] = d.job.payload
            sub.ack(batch, result=b"done")
        check_eq(received, pushed, "delivered {id: payload}")
        results = sub.results(count)
        check_results_ok(results, pb.SETTLE_OP_ACK, pushed.keys(), "acks")
        sub.expect_quiet()
    stats = ctx.stats(q)
    check_eq(stats.pushed_total, count, "Stats.pushed_total")
    check_eq(stats.completed_total, count, "Stats.completed_total")
    check_eq(stats.completed, count, "Stats.completed (retained)")
    check_eq((stats.waiting, stats.delayed, stats.active, stats.dead), (0, 0, 0, 0),
             "Stats (waiting, delayed, active, dead)")
    job = ctx.stub.GetJob(pb.GetJobRequest(id=next(iter(pushed))), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(job.state), "JOB_STATE_COMPLETED", "GetJob state after ack")
    check_eq(job.result, b"done", "GetJob result after ack")


def test_credits_bound_deliveries(ctx):
    """With credits=2 the server pushes 2 of 5 jobs, one more per ack, more on new credits."""
    q = ctx.queue()
    with Subscription(ctx.stub, [q], credits=2) as sub:
        ids = [ctx.push(q, f"c{i}".encode()) for i in range(5)]
        first = sub.deliveries(2)
        sub.expect_quiet()
        sub.ack(first[:1])
        second = sub.deliveries(1)
        sub.expect_quiet()
        sub.credits(2)
        third = sub.deliveries(2)
        sub.expect_quiet()
        delivered = first + second + third
        # FIFO within one priority.
        check_eq([d.job.id for d in delivered], ids, "delivery order (FIFO)")
        sub.ack(delivered[1:])
        check_results_ok(sub.results(5), pb.SETTLE_OP_ACK, ids, "acks")
        sub.expect_quiet()
    check_eq(ctx.stats(q).completed_total, 5, "Stats.completed_total")


def test_priority_order(ctx):
    """Higher priority runs first; FIFO within one priority."""
    q = ctx.queue()
    low = ctx.push(q, b"low", priority=-5)
    mid_a = ctx.push(q, b"mid-a")
    high = ctx.push(q, b"high", priority=7)
    mid_b = ctx.push(q, b"mid-b")
    deliveries = ctx.fetch(q, 4, wait_ms=0)
    check_eq([d.job.id for d in deliveries], [high, mid_a, mid_b, low], "Fetch order")
    for d in deliveries:
        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)


def test_fail_until_dead_then_retry(ctx):
    """max_attempts=2: two fails dead-letter the job; ListDead shows it; RetryDead revives it."""
    q = ctx.queue()
    backoff = pb.Backoff(kind=pb.BACKOFF_KIND_FIXED, base_ms=10)
    job_id = ctx.push(q, b"doomed", max_attempts=2, backoff=backoff)
    with Subscription(ctx.stub, [q], credits=1) as sub:
        (d1,) = sub.deliveries(1)
        check_eq((d1.job.id, d1.job.attempts, d1.job.max_attempts), (job_id, 1, 2),
                 "first delivery (id, attempts, max_attempts)")
        sub.fail(d1, "boom 1")
        (r1,) = sub.results(1)
        check_results_ok([r1], pb.SETTLE_OP_FAIL, [job_id], "first fail")
        check(state_name(r1.state) in ("JOB_STATE_DELAYED", "JOB_STATE_WAITING"),
              f"state after first fail: expected DELAYED or WAITING, got {state_name(r1.state)}")

        (d2,) = sub.deliveries(1)
        check_eq((d2.job.id, d2.job.attempts), (job_id, 2), "second delivery (id, attempts)")
        check(d2.lease_token != d1.lease_token, "second delivery reused the first lease token")
        sub.fail(d2, "boom 2")
        (r2,) = sub.results(1)
        check_results_ok([r2], pb.SETTLE_OP_FAIL, [job_id], "second fail")
        check_eq(state_name(r2.state), "JOB_STATE_DEAD", "state after the last attempt failed")
        sub.expect_quiet()

        dead = ctx.stub.ListDead(pb.ListDeadRequest(queue=q), timeout=RPC_TIMEOUT_S)
        check_eq([j.id for j in dead.jobs], [job_id], "ListDead ids")
        check_eq(dead.next_after_id, 0, "ListDead next_after_id (one page)")
        job = dead.jobs[0]
        check_eq(state_name(job.state), "JOB_STATE_DEAD", "dead job state")
        check_eq(job.payload, b"doomed", "dead job payload")
        check_eq(job.attempts, 2, "dead job attempts")
        check_eq(job.last_error, "boom 2", "dead job last_error")
        stats = ctx.stats(q)
        check_eq((stats.dead, stats.dead_total, stats.waiting, stats.active), (1, 1, 0, 0),
                 "Stats (dead, dead_total, waiting, active)")

        retried = ctx.stub.RetryDead(pb.DeadSelector(queue=q, ids=[job_id]),
                                     timeout=RPC_TIMEOUT_S)
        check_eq(retried.count, 1, "RetryDead count")
        (d3,) = sub.deliveries(1)
        check_eq((d3.job.id, d3.job.payload, d3.job.attempts), (job_id, b"doomed", 1),
                 "delivery after RetryDead (id, payload, attempts reset)")
        sub.ack([d3])
        check_results_ok(sub.results(1), pb.SETTLE_OP_ACK, [job_id], "ack after RetryDead")
    dead = ctx.stub.ListDead(pb.ListDeadRequest(queue=q), timeout=RPC_TIMEOUT_S)
    check_eq(list(dead.jobs), [], "ListDead after RetryDead and ack")
    job = ctx.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(job.state), "JOB_STATE_COMPLETED", "state after RetryDead and ack")


def test_fail_no_retry(ctx):
    """Fail with no_retry dead-letters at once, attempts left or not."""
    q = ctx.queue()
    job_id = ctx.push(q, b"poison", max_attempts=5)
    (d,) = ctx.fetch(q, 1, wait_ms=1000)
    reply = ctx.stub.Fail(pb.FailRequest(id=job_id, lease_token=d.lease_token, error="bad input",
                                         no_retry=True), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(reply.state), "JOB_STATE_DEAD", "Fail(no_retry) state")
    dead = ctx.stub.ListDead(pb.ListDeadRequest(queue=q), timeout=RPC_TIMEOUT_S)
    check_eq([j.id for j in dead.jobs], [job_id], "ListDead ids")
    purged = ctx.stub.PurgeDead(pb.DeadSelector(queue=q), timeout=RPC_TIMEOUT_S)
    check_eq(purged.count, 1, "PurgeDead count")
    dead = ctx.stub.ListDead(pb.ListDeadRequest(queue=q), timeout=RPC_TIMEOUT_S)
    check_eq(list(dead.jobs), [], "ListDead after PurgeDead")


def test_stale_token_after_redelivery(ctx):
    """After a fail and a new delivery, the first lease token gets FAILED_PRECONDITION."""
    q = ctx.queue()
    job_id = ctx.push(q, b"twice", max_attempts=5)
    (d1,) = ctx.fetch(q, 1, wait_ms=1000)
    check_eq(d1.job.id, job_id, "first Fetch id")
    reply = ctx.stub.Fail(pb.FailRequest(id=job_id, lease_token=d1.lease_token, error="again",
                                         retry_delay_ms=1), timeout=RPC_TIMEOUT_S)
    check(state_name(reply.state) in ("JOB_STATE_DELAYED", "JOB_STATE_WAITING"),
          f"Fail state: expected DELAYED or WAITING, got {state_name(reply.state)}")
    (d2,) = ctx.fetch(q, 1, wait_ms=2000)
    check_eq((d2.job.id, d2.job.attempts), (job_id, 2), "second Fetch (id, attempts)")
    check(d2.lease_token != d1.lease_token, "second delivery reused the first lease token")
    stale = pb.AckRequest(id=job_id, lease_token=d1.lease_token)
    expect_status(grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: ctx.stub.Ack(stale, timeout=RPC_TIMEOUT_S), "Ack with a stale token")
    expect_status(grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: ctx.stub.Extend(pb.ExtendRequest(id=job_id, lease_token=d1.lease_token,
                                                           lease_ms=1000), timeout=RPC_TIMEOUT_S),
                  "Extend with a stale token")
    expect_status(grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: ctx.stub.Fail(pb.FailRequest(id=job_id, lease_token=d1.lease_token),
                                        timeout=RPC_TIMEOUT_S), "Fail with a stale token")
    ctx.stub.Ack(pb.AckRequest(id=job_id, lease_token=d2.lease_token), timeout=RPC_TIMEOUT_S)
    job = ctx.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(job.state), "JOB_STATE_COMPLETED", "state after ack with current token")


def test_stale_token_after_lease_expiry(ctx):
    """A lease that expires re-queues the job; acking with its token on the stream gets error 9."""
    q = ctx.queue()
    backoff = pb.Backoff(kind=pb.BACKOFF_KIND_FIXED, base_ms=10)
    job_id = ctx.push(q, b"slow", lease_ms=200, max_attempts=3, backoff=backoff)
    with Subscription(ctx.stub, [q], credits=2) as sub:
        (d1,) = sub.deliveries(1)
        check_eq((d1.job.id, d1.job.attempts), (job_id, 1), "first delivery (id, attempts)")
        check(d1.lease_expires_at_ms > 0, "delivery has no lease_expires_at_ms")
        # Not acked: the lease runs out after 200 ms and the job comes back.
        (d2,) = sub.deliveries(1)
        check_eq((d2.job.id, d2.job.attempts), (job_id, 2), "delivery after expiry (id, attempts)")
        check(d2.lease_token != d1.lease_token, "redelivery reused the expired lease token")
        sub.ack([d1])
        (stale,) = sub.results(1)
        check_eq(stale.id, job_id, "stale ack result id")
        check(stale.HasField("error"), "ack with an expired lease token succeeded")
        check_eq(stale.error.code, grpc.StatusCode.FAILED_PRECONDITION.value[0],
                 f"stale ack error code ({stale.error.message})")
        sub.ack([d2])
        check_results_ok(sub.results(1), pb.SETTLE_OP_ACK, [job_id], "ack with current token")


def test_extend_keeps_lease(ctx):
    """Extend on the stream moves the lease out, so the job is not redelivered meanwhile."""
    q = ctx.queue()
    job_id = ctx.push(q, b"long", lease_ms=300)
    with Subscription(ctx.stub, [q], credits=2) as sub:
        (d,) = sub.deliveries(1)
        sub.outbox.send(pb.SubscribeRequest(extends=[
            pb.ExtendRequest(id=job_id, lease_token=d.lease_token, lease_ms=5000)]))
        (r,) = sub.results(1)
        check_results_ok([r], pb.SETTLE_OP_EXTEND, [job_id], "extend")
        check(r.lease_expires_at_ms >= d.lease_expires_at_ms + 4000,
              f"extend moved the lease from {d.lease_expires_at_ms} only to "
              f"{r.lease_expires_at_ms}")
        sub.expect_quiet(0.6)  # past the original 300 ms lease
        sub.ack([d])
        check_results_ok(sub.results(1), pb.SETTLE_OP_ACK, [job_id], "ack after extend")


def test_invalid_push(ctx):
    """Bad input gets INVALID_ARGUMENT with a message and pushes nothing."""
    q = ctx.queue()
    bad_specs = {
        "empty queue name": pb.JobSpec(queue="", payload=b"x"),
        "space in queue name": pb.JobSpec(queue="bad queue", payload=b"x"),
        "slash in queue name": pb.JobSpec(queue="a/b", payload=b"x"),
        "129-char queue name": pb.JobSpec(queue="q" * 129, payload=b"x"),
        "non-ASCII queue name": pb.JobSpec(queue="caf\u00e9", payload=b"x"),
        "priority out of range": pb.JobSpec(queue=q, payload=b"x", priority=1_000_001),
        "max_attempts > 1000": pb.JobSpec(queue=q, payload=b"x", max_attempts=1001),
        "lease_ms < 100": pb.JobSpec(queue=q, payload=b"x", lease_ms=99),
        "delay_ms and run_at_ms": pb.JobSpec(queue=q, payload=b"x", delay_ms=10,
                                             run_at_ms=int(time.time() * 1000) + 10),
        "jitter_pct > 100": pb.JobSpec(queue=q, payload=b"x", backoff=pb.Backoff(jitter_pct=101)),
    }
    for what, spec in bad_specs.items():
        err = expect_status(grpc.StatusCode.INVALID_ARGUMENT,
                            lambda: ctx.stub.Push(pb.PushRequest(job=spec), timeout=RPC_TIMEOUT_S),
                            f"Push with {what}")
        check(err.details(), f"Push with {what}: INVALID_ARGUMENT without a message")
    reply = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=10, wait_ms=0), timeout=RPC_TIMEOUT_S)
    check_eq(len(reply.deliveries), 0, "jobs pushed by invalid requests")
    # 128 characters of every allowed kind is a valid name.
    name = ("Az09._:-" * 16)[:128]
    job_id = ctx.push(name, b"edge")
    (d,) = ctx.fetch(name, 1, wait_ms=1000)
    check_eq(d.job.id, job_id, "job in the 128-character queue")
    ctx.stub.Ack(pb.AckRequest(id=job_id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)


def test_invalid_subscribe(ctx):
    """A Subscribe whose first message is not a valid open ends with INVALID_ARGUMENT."""
    q = ctx.queue()
    cases = {
        "credits = 0": pb.SubscribeRequest(open=pb.SubscribeOpen(queues=[q], credits=0)),
        "no queues": pb.SubscribeRequest(open=pb.SubscribeOpen(queues=[], credits=1)),
        "bad queue name": pb.SubscribeRequest(open=pb.SubscribeOpen(queues=["no spaces"],
                                                                    credits=1)),
        "17 queues": pb.SubscribeRequest(open=pb.SubscribeOpen(
            queues=[f"{q}.{i}" for i in range(17)], credits=1)),
        "no open": pb.SubscribeRequest(credits=5),
    }
    for what, first in cases.items():
        outbox = Outbox()
        outbox.send(first)
        call = ctx.stub.Subscribe(iter(outbox), timeout=WAIT_TIMEOUT_S)
        try:
            expect_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: list(call),
                          f"Subscribe with {what}")
        finally:
            outbox.close()
            call.cancel()


def test_push_batch_partial(ctx):
    """Non-atomic PushBatch pushes the valid items and reports the invalid one at its index."""
    q = ctx.queue()
    jobs = [pb.JobSpec(queue=q, payload=b"b0"),
            pb.JobSpec(queue="not valid!", payload=b"b1"),
            pb.JobSpec(queue=q, payload=b"b2"),
            pb.JobSpec(queue=q, payload=b"b3", max_attempts=5000),
            pb.JobSpec(queue=q, payload=b"b4")]
    reply = ctx.stub.PushBatch(pb.PushBatchRequest(jobs=jobs, atomic=False),
                               timeout=RPC_TIMEOUT_S)
    check_eq(len(reply.results), len(jobs), "PushBatch result count")
    for i in (1, 3):
        r = reply.results[i]
        check(r.HasField("error"), f"results[{i}] (invalid) has no error")
        check_eq(r.error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0], f"results[{i}] code")
        check(r.error.message, f"results[{i}] error has no message")
        check_eq(r.id, 0, f"results[{i}].id")
    ok = {}
    for i in (0, 2, 4):
        r = reply.results[i]
        check(not r.HasField("error"), f"results[{i}] (valid) error: {r.error.message}")
        check(r.id != 0, f"results[{i}].id is 0")
        ok[r.id] = jobs[i].payload
    check_eq(len(ok), 3, "distinct ids of the pushed items")
    deliveries = ctx.fetch(q, 3, wait_ms=1000)
    check_eq({d.job.id: d.job.payload for d in deliveries}, ok, "fetched {id: payload}")
    for d in deliveries:
        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)
    check_eq(ctx.stats(q).pushed_total, 3, "Stats.pushed_total")


def test_push_batch_atomic(ctx):
    """Atomic PushBatch with one invalid item is refused whole, naming the index."""
    q = ctx.queue()
    jobs = [pb.JobSpec(queue=q, payload=b"a0"), pb.JobSpec(queue=q, payload=b"a1"),
            pb.JobSpec(queue=q, payload=b"a2", priority=-2_000_000)]
    err = expect_status(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: ctx.stub.PushBatch(pb.PushBatchRequest(jobs=jobs, atomic=True),
                                                   timeout=RPC_TIMEOUT_S),
                        "atomic PushBatch with an invalid item")
    check(re.search(r"\b2\b", err.details() or ""),
          f"atomic PushBatch error does not name index 2: {err.details()!r}")
    reply = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=10, wait_ms=0), timeout=RPC_TIMEOUT_S)
    check_eq(len(reply.deliveries), 0, "jobs pushed by a refused atomic batch")


def test_fetch_waits(ctx):
    """Fetch with wait_ms waits when the queue is empty and returns a job pushed meanwhile."""
    q = ctx.queue()
    start = time.monotonic()
    reply = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=1, wait_ms=300), timeout=RPC_TIMEOUT_S)
    waited = time.monotonic() - start
    check_eq(len(reply.deliveries), 0, "deliveries from an empty queue")
    check(0.25 <= waited < 3, f"empty Fetch(wait_ms=300) took {waited:.3f}s")

    start = time.monotonic()
    future = ctx.stub.Fetch.future(pb.FetchRequest(queue=q, max=1, wait_ms=8000),
                                   timeout=RPC_TIMEOUT_S * 2)
    try:
        time.sleep(0.5)
        check(not future.done(), "Fetch(wait_ms=8000) on an empty queue returned early")
        job_id = ctx.push(q, b"late")
        reply = future.result(timeout=WAIT_TIMEOUT_S)
    finally:
        future.cancel()
    waited = time.monotonic() - start
    check_eq([(d.job.id, d.job.payload) for d in reply.deliveries], [(job_id, b"late")],
             "Fetch result (id, payload)")
    check(waited < 4, f"Fetch returned {waited:.3f}s after it started, not soon after the push")
    d = reply.deliveries[0]
    ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)


def test_delayed_job(ctx):
    """A job pushed with delay_ms is DELAYED and not delivered before its time."""
    q = ctx.queue()
    pushed_at = time.monotonic()
    job_id = ctx.push(q, b"later", delay_ms=500)
    reply = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=1, wait_ms=0), timeout=RPC_TIMEOUT_S)
    check_eq(len(reply.deliveries), 0, "deliveries of a delayed job before its time")
    stats = ctx.stats(q)
    check_eq((stats.delayed, stats.waiting), (1, 0), "Stats (delayed, waiting)")
    job = ctx.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(job.state), "JOB_STATE_DELAYED", "GetJob state")
    (d,) = ctx.fetch(q, 1, wait_ms=3000)
    waited = time.monotonic() - pushed_at
    check_eq(d.job.id, job_id, "delayed job id")
    check(waited >= 0.45, f"delayed job (delay_ms=500) delivered after {waited:.3f}s")
    ctx.stub.Ack(pb.AckRequest(id=job_id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)


def test_unique_key(ctx):
    """A push whose unique_key belongs to a live job returns that job with duplicate = true."""
    q = ctx.queue()
    first = ctx.push(q, b"once", unique_key="order-42")
    reply = ctx.stub.Push(pb.PushRequest(job=pb.JobSpec(queue=q, payload=b"again",
                                                        unique_key="order-42")),
                          timeout=RPC_TIMEOUT_S)
    check_eq((reply.id, reply.duplicate), (first, True), "duplicate push (id, duplicate)")
    (d,) = ctx.fetch(q, 1, wait_ms=1000)
    check_eq(d.job.payload, b"once", "payload of the deduplicated job")
    ctx.stub.Ack(pb.AckRequest(id=first, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)
    # Completed is not live: the key is free again.
    second = ctx.push(q, b"next", unique_key="order-42")
    check(second != first, "push after the keyed job completed returned the old id")
    check_eq(ctx.stats(q).pushed_total, 2, "Stats.pushed_total")


def test_pause_resume(ctx):
    """A paused queue accepts pushes but delivers nothing until resumed."""
    q = ctx.queue()
    ctx.push(q, b"before")  # makes the queue exist
    (d,) = ctx.fetch(q, 1, wait_ms=1000)
    ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)
    ctx.stub.Pause(pb.QueueRequest(queue=q), timeout=RPC_TIMEOUT_S)
    check(ctx.stats(q).paused, "Stats.paused after Pause")
    with Subscription(ctx.stub, [q], credits=5) as sub:
        job_id = ctx.push(q, b"while paused")
        sub.expect_quiet()
        reply = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=1, wait_ms=0), timeout=RPC_TIMEOUT_S)
        check_eq(len(reply.deliveries), 0, "Fetch deliveries from a paused queue")
        ctx.stub.Resume(pb.QueueRequest(queue=q), timeout=RPC_TIMEOUT_S)
        check(not ctx.stats(q).paused, "Stats.paused after Resume")
        (d,) = sub.deliveries(1)
        check_eq(d.job.id, job_id, "job delivered after Resume")
        sub.ack([d])
        check_results_ok(sub.results(1), pb.SETTLE_OP_ACK, [job_id], "ack")


def test_cancel(ctx):
    """Cancel stops a waiting job and revokes an active job's lease."""
    q = ctx.queue()
    waiting = ctx.push(q, b"never")
    reply = ctx.stub.Cancel(pb.CancelRequest(id=waiting, reason="not needed"),
                            timeout=RPC_TIMEOUT_S)
    check_eq(state_name(reply.previous_state), "JOB_STATE_WAITING", "Cancel previous_state")
    job = ctx.stub.GetJob(pb.GetJobRequest(id=waiting), timeout=RPC_TIMEOUT_S)
    check_eq((state_name(job.state), job.reason), ("JOB_STATE_CANCELLED", "not needed"),
             "cancelled job (state, reason)")
    active = ctx.push(q, b"running")
    (d,) = ctx.fetch(q, 1, wait_ms=1000)
    check_eq(d.job.id, active, "fetched job (the cancelled one must not be delivered)")
    reply = ctx.stub.Cancel(pb.CancelRequest(id=active), timeout=RPC_TIMEOUT_S)
    check_eq(state_name(reply.previous_state), "JOB_STATE_ACTIVE", "Cancel previous_state")
    expect_status(grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: ctx.stub.Ack(pb.AckRequest(id=active, lease_token=d.lease_token),
                                       timeout=RPC_TIMEOUT_S),
                  "Ack of a cancelled job's revoked lease")
    stats = ctx.stats(q)
    check_eq((stats.cancelled, stats.waiting, stats.active), (2, 0, 0),
             "Stats (cancelled, waiting, active)")
    expect_status(grpc.StatusCode.NOT_FOUND,
                  lambda: ctx.stub.GetJob(pb.GetJobRequest(id=(1 << 63) + 12345),
                                          timeout=RPC_TIMEOUT_S),
                  "GetJob of an id never issued")


def test_subscribe_several_queues(ctx):
    """One Subscribe stream takes jobs from every queue it opened."""
    qa, qb = ctx.queue("a"), ctx.queue("b")
    with Subscription(ctx.stub, [qa, qb], credits=4) as sub:
        ids = {ctx.push(qa, b"from a"): qa, ctx.push(qb, b"from b"): qb}
        got = sub.deliveries(2)
        check_eq({d.job.id: d.job.queue for d in got}, ids, "delivered {id: queue}")
        sub.ack(got)
        check_results_ok(sub.results(2), pb.SETTLE_OP_ACK, ids.keys(), "acks")


def test_dead_letter_paging(ctx):
    """ListDead pages by after_id; PurgeDead and RetryDead act on ids or the whole queue."""
    q = ctx.queue()
    ids = [ctx.push(q, f"d{i}".encode(), max_attempts=1) for i in range(3)]
    for d in ctx.fetch(q, 3, wait_ms=1000):
        reply = ctx.stub.Fail(pb.FailRequest(id=d.job.id, lease_token=d.lease_token, error="x"),
                              timeout=RPC_TIMEOUT_S)
        check_eq(state_name(reply.state), "JOB_STATE_DEAD", f"Fail state of job {d.job.id}")
    page = ctx.stub.ListDead(pb.ListDeadRequest(queue=q, limit=2), timeout=RPC_TIMEOUT_S)
    check_eq([j.id for j in page.jobs], ids[:2], "ListDead first page")
    check_eq(page.next_after_id, ids[1], "ListDead next_after_id")
    page = ctx.stub.ListDead(pb.ListDeadRequest(queue=q, limit=2, after_id=page.next_after_id),
                             timeout=RPC_TIMEOUT_S)
    check_eq([j.id for j in page.jobs], ids[2:], "ListDead second page")
    check_eq(page.next_after_id, 0, "ListDead next_after_id on the last page")
    purged = ctx.stub.PurgeDead(pb.DeadSelector(queue=q, ids=[ids[0]]), timeout=RPC_TIMEOUT_S)
    check_eq(purged.count, 1, "PurgeDead count")
    retried = ctx.stub.RetryDead(pb.DeadSelector(queue=q), timeout=RPC_TIMEOUT_S)
    check_eq(retried.count, 2, "RetryDead (whole queue) count")
    deliveries = ctx.fetch(q, 2, wait_ms=1000)
    check_eq(sorted(d.job.id for d in deliveries), ids[1:], "jobs back after RetryDead")
    for d in deliveries:
        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)
    stats = ctx.stats(q)
    check_eq((stats.dead, stats.completed_total), (0, 2), "Stats (dead, completed_total)")


def test_push_stream(ctx):
    """PushStream answers each request in order; an invalid one gets its error, the rest go on."""
    q = ctx.queue()
    specs = [pb.JobSpec(queue=q, payload=b"s0"), pb.JobSpec(queue="bad name", payload=b"s1"),
             pb.JobSpec(queue=q, payload=b"s2")]
    replies = list(ctx.stub.PushStream(iter([pb.PushRequest(job=s) for s in specs]),
                                       timeout=RPC_TIMEOUT_S))
    check_eq(len(replies), 3, "PushStream replies")
    check_eq(replies[1].result.error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0],
             "replies[1] error code")
    ok = [replies[0].result.id, replies[2].result.id]
    check(all(ok) and not replies[0].result.HasField("error")
          and not replies[2].result.HasField("error"), f"valid PushStream items: {replies}")
    deliveries = ctx.fetch(q, 2, wait_ms=1000)
    check_eq([(d.job.id, d.job.payload) for d in deliveries], [(ok[0], b"s0"), (ok[1], b"s2")],
             "fetched (id, payload) in push order")
    for d in deliveries:
        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)


def test_examples(ctx):
    """client/python/push.py and worker.py work as the README says."""
    q = ctx.queue()
    env = dict(os.environ, RINGQ_PB=ctx.stubs_dir)
    examples = REPO / "client" / "python"

    def run(*argv):
        proc = subprocess.run([sys.executable, *map(str, argv)], env=env, capture_output=True,
                              text=True, timeout=20)
        check(proc.returncode == 0, f"{argv[0].name} exited with {proc.returncode}:\n"
              f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    out = run(examples / "push.py", "--addr", ctx.addr, "--queue", q, "--count", "3",
              "--prefix", "ex")
    check_eq(len(re.findall(r"pushed id=\d+", out)), 3, "push.py lines")
    out = run(examples / "push.py", "--addr", ctx.addr, "--queue", q, "--count", "2",
              "--prefix", "bx", "--batch")
    check_eq(len(re.findall(r"pushed id=\d+", out)), 2, "push.py --batch lines")
    out = run(examples / "worker.py", "--addr", ctx.addr, "--queue", q, "--credits", "2",
              "--max-jobs", "5", "--deadline", "15")
    for payload in ("ex-0", "ex-1", "ex-2", "bx-0", "bx-1"):
        check(f"payload=b'{payload}'" in out, f"worker.py did not print {payload}:\n{out}")
    check_eq(ctx.stats(q).completed_total, 5, "Stats.completed_total after worker.py")


TESTS = [
    test_health,
    test_push_subscribe_ack,
    test_credits_bound_deliveries,
    test_priority_order,
    test_fail_until_dead_then_retry,
    test_fail_no_retry,
    test_stale_token_after_redelivery,
    test_stale_token_after_lease_expiry,
    test_extend_keeps_lease,
    test_invalid_push,
    test_invalid_subscribe,
    test_push_batch_partial,
    test_push_batch_atomic,
    test_fetch_waits,
    test_delayed_job,
    test_unique_key,
    test_pause_resume,
    test_cancel,
    test_subscribe_several_queues,
    test_dead_letter_paging,
    test_push_stream,
    test_examples,
]


# --- the runner -------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description="ringqd integration test (Python gRPC client)")
    p.add_argument("--ringqd", default=os.environ.get(
        "RINGQD", str(REPO / "build" / "release" / "service" / "ringqd")),
        help="path of the ringqd binary (env RINGQD)")
    p.add_argument("--proto-dir", default=str(REPO / "proto"), help="root of the .proto files")
    p.add_argument("-k", dest="only", default="", help="run only tests whose name contains this")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args()


def import_grpc(stubs_dir):
    global grpc, pb, pb_grpc
    try:
        import grpc as grpc_module
    except ImportError as e:
        sys.exit(f"cannot import grpc ({e}) with {sys.executable}: run with /usr/bin/python3 "
                 "and apt-get install python3-grpcio python3-protobuf")
    sys.path.insert(0, stubs_dir)
    from ringq.v1 import queue_pb2, queue_pb2_grpc
    grpc, pb, pb_grpc = grpc_module, queue_pb2, queue_pb2_grpc


def generate_stubs(proto_dir, out_dir):
    script = REPO / "client" / "python" / "ringq_gen.sh"
    proc = subprocess.run(["sh", str(script), out_dir, proto_dir], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        sys.exit(f"{script} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def run_tests(ctx, tests):
    passed, failed = 0, []
    for test in tests:
        ctx.test_name = test.__name__.removeprefix("test_")
        start = time.monotonic()
        try:
            test(ctx)
        except Exception as e:  # a failed check, an unexpected RpcError, anything
            failed.append(test.__name__)
            detail = (str(e) if isinstance(e, TestFailure)
                      else "".join(traceback.format_exception(e)).rstrip())
            print(f"FAIL {test.__name__} ({time.monotonic() - start:.2f}s): {detail}", flush=True)
        else:
            passed += 1
            print(f"ok   {test.__name__} ({time.monotonic() - start:.2f}s)", flush=True)
        if ctx.server.proc.poll() is not None:
            print(f"ringqd exited with {ctx.server.proc.returncode} during {test.__name__}:\n"
                  + ctx.server.log_tail(), flush=True)
            failed += [t.__name__ for t in tests[tests.index(test) + 1:]]
            break
    return passed, failed


def main():
    args = parse_args()
    # ctest's timeout sends SIGTERM: turn it into an exception so `finally` stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("killed by SIGTERM"))
    if not os.access(args.ringqd, os.X_OK):
        sys.exit(f"ringqd binary not found or not executable: {args.ringqd} (pass --ringqd PATH)")
    tests = [t for t in TESTS if args.only in t.__name__]
    if not tests:
        sys.exit(f"no test name contains {args.only!r}")
    tmp = tempfile.mkdtemp(prefix="ringq-it-py-")
    stubs_dir = os.path.join(tmp, "stubs")
    generate_stubs(args.proto_dir, stubs_dir)
    import_grpc(stubs_dir)
    server = Server(os.path.abspath(args.ringqd), os.path.join(tmp, "data"),
                    os.path.join(tmp, "ringqd.log"))
    passed, failed = 0, [t.__name__ for t in tests]
    started = time.monotonic()
    try:
        addr = server.start()
        print(f"ringqd listening on {addr} (log {server.log_path})", flush=True)
        with grpc.insecure_channel(addr) as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_TIMEOUT_S)
            ctx = Context(pb_grpc.QueueStub(channel), channel, server, addr, stubs_dir)
            passed, failed = run_tests(ctx, tests)
    except Exception as e:
        print(f"FAIL setup: {e}", flush=True)
    finally:
        code = server.stop()
        if code not in (0, None):
            print(f"ringqd exited with {code} on SIGTERM:\n{server.log_tail()}", flush=True)
            failed.append("clean shutdown")
    if failed:
        print("server log tail:\n" + server.log_tail(), flush=True)
        print(f"kept {tmp} for inspection")
    elif not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"took {time.monotonic() - started:.1f}s; failed: {', '.join(failed) or 'none'}")
    print(f"python: {passed} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
