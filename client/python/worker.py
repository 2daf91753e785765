#!/usr/bin/python3
"""A ringq worker: subscribes to queues with credits, prints each job and acks it.

Generate the stubs first (see README.md), then:

    /usr/bin/python3 client/python/worker.py --addr 127.0.0.1:7420 --queue emails --credits 8

How the stream works: the first SubscribeRequest carries `open` (queues and
initial credits). The server then pushes at most `credits` un-settled jobs;
each ack or fail we send gives one credit back, so a slow worker is never
flooded. Acks and fails travel in later SubscribeRequests (several per message)
and each one is answered by a SettleResult whose `error` is unset on success.

With --fail the worker fails every job instead: the server retries it after
its backoff until max_attempts, then dead-letters it (see ListDead/RetryDead).
"""

import argparse
import os
import queue
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("RINGQ_PB", os.path.join(HERE, "ringq_pb")))

import grpc  # noqa: E402
from ringq.v1 import queue_pb2, queue_pb2_grpc  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7420", help="host:port of ringqd's gRPC listener")
    p.add_argument("--queue", action="append",
                   help="queue to take jobs from (repeatable; default demo)")
    p.add_argument("--credits", type=int, default=8,
                   help="un-settled jobs the server may push at once")
    p.add_argument("--fail", action="store_true", help="fail every job instead of acking it")
    p.add_argument("--no-retry", action="store_true", help="with --fail: dead-letter at once")
    p.add_argument("--max-jobs", type=int, default=0,
                   help="exit after this many jobs were settled (0 = run until Ctrl-C)")
    p.add_argument("--deadline", type=float, default=0,
                   help="end the stream after this many seconds (0 = never)")
    return p.parse_args()


class Outbox:
    """The request side of the stream: gRPC pulls from this iterator in its own thread."""

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


def settle(delivery, args):
    """Handles one job; returns the SubscribeRequest field name and the message settling it."""
    job = delivery.job
    print(f"job id={job.id} queue={job.queue} attempt={job.attempts}/{job.max_attempts} "
          f"payload={job.payload!r}", flush=True)
    if args.fail:
        return "fails", queue_pb2.FailRequest(
            id=job.id, lease_token=delivery.lease_token, error="worker.py --fail",
            no_retry=args.no_retry)
    return "acks", queue_pb2.AckRequest(id=job.id, lease_token=delivery.lease_token, result=b"ok")


def run(stub, args):
    outbox = Outbox()
    outbox.send(queue_pb2.SubscribeRequest(
        open=queue_pb2.SubscribeOpen(queues=args.queue, credits=args.credits)))
    responses = stub.Subscribe(iter(outbox), timeout=args.deadline or None)
    settled = 0
    try:
        for response in responses:
            # Settle everything this message delivered in one request.
            settlements = {"acks": [], "fails": []}
            for delivery in response.deliveries:
                field, message = settle(delivery, args)
                settlements[field].append(message)
            if settlements["acks"] or settlements["fails"]:
                outbox.send(queue_pb2.SubscribeRequest(**settlements))
            for result in response.results:
                op = queue_pb2.SettleOp.Name(result.op)
                if result.HasField("error"):
                    err = result.error
                    print(f"  {op} id={result.id} error {err.code}: {err.message}", flush=True)
                elif result.op == queue_pb2.SETTLE_OP_FAIL:
                    print(f"  {op} id={result.id} -> {queue_pb2.JobState.Name(result.state)}",
                          flush=True)
                settled += 1
            if args.max_jobs and settled >= args.max_jobs:
                print(f"settled {settled} jobs, exiting", flush=True)
                return 0
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            print(f"deadline reached after {settled} settled jobs", flush=True)
            return 0
        print(f"stream failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        outbox.close()
        responses.cancel()
    print("server ended the stream", file=sys.stderr)
    return 1


def main():
    args = parse_args()
    args.queue = args.queue or ["demo"]
    with grpc.insecure_channel(args.addr) as channel:
        try:
            return run(queue_pb2_grpc.QueueStub(channel), args)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
