#!/usr/bin/python3
"""Pushes N jobs to a ringq queue and prints their ids.

Generate the stubs first (see README.md), then:

    /usr/bin/python3 client/python/push.py --addr 127.0.0.1:7420 --queue emails --count 10

Each job's payload is "<prefix>-<i>" (UTF-8). With --batch the jobs go in one
PushBatch call instead of one Push each.
"""

import argparse
import os
import sys

# The stubs live in client/python/ringq_pb unless RINGQ_PB says otherwise.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("RINGQ_PB", os.path.join(HERE, "ringq_pb")))

import grpc  # noqa: E402
from ringq.v1 import queue_pb2, queue_pb2_grpc  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7420", help="host:port of ringqd's gRPC listener")
    p.add_argument("--queue", default="demo", help="queue name: 1..128 of [A-Za-z0-9._:-]")
    p.add_argument("--count", type=int, default=10, help="how many jobs to push")
    p.add_argument("--prefix", default="job", help="payload prefix")
    p.add_argument("--max-attempts", type=int, default=0,
                   help="deliveries before dead-lettering (0 = server default)")
    p.add_argument("--batch", action="store_true", help="push all jobs with one PushBatch call")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, in seconds")
    return p.parse_args()


def main():
    args = parse_args()
    specs = [
        queue_pb2.JobSpec(
            queue=args.queue,
            payload=f"{args.prefix}-{i}".encode(),
            max_attempts=args.max_attempts,
        )
        for i in range(args.count)
    ]
    with grpc.insecure_channel(args.addr) as channel:
        stub = queue_pb2_grpc.QueueStub(channel)
        try:
            if args.batch:
                # atomic=False: valid jobs are pushed, each invalid one reports its own error.
                request = queue_pb2.PushBatchRequest(jobs=specs, atomic=False)
                reply = stub.PushBatch(request, timeout=args.timeout)
                failed = 0
                for spec, result in zip(specs, reply.results):
                    if result.HasField("error"):
                        failed += 1
                        err = result.error
                        print(f"{spec.payload.decode()}: error {err.code}: {err.message}")
                    else:
                        print(f"pushed id={result.id} payload={spec.payload.decode()}")
                return 1 if failed else 0
            for spec in specs:
                reply = stub.Push(queue_pb2.PushRequest(job=spec), timeout=args.timeout)
                note = " (duplicate)" if reply.duplicate else ""
                print(f"pushed id={reply.id} payload={spec.payload.decode()}{note}")
        except grpc.RpcError as e:
            print(f"push failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
