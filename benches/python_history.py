#!/usr/bin/env python3
"""How fast a stock Python grpcio client drains History.

Starts nothing itself: point it at a running `echolog serve` on 127.0.0.1. It appends N events
of one entity (JSON payloads of about 165 bytes, batches of 1000), then reads that entity's
whole history R times and prints events/s per read and the median.

  python3 -m venv venv && venv/bin/pip install grpcio grpcio-tools
  venv/bin/python benches/python_history.py --server 127.0.0.1:50051 --events 200000

--proto DIR takes the .proto files from another checkout (to measure an older server whose
History streamed one Event per message).
"""
import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def stubs(proto_root):
    out = tempfile.mkdtemp(prefix="echolog-py-")
    rel = os.path.join("echolog", "v1", "echolog.proto")
    ok = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}", rel])
    if ok != 0:
        sys.exit(f"protoc failed on {proto_root}/{rel}")
    sys.path.insert(0, out)
    pb = importlib.import_module("echolog.v1.echolog_pb2")
    grpc_pb = importlib.import_module("echolog.v1.echolog_pb2_grpc")
    return pb, grpc_pb


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reads", type=int, default=5)
    ap.add_argument("--entity", default="product:hot")
    ap.add_argument("--proto", default=os.path.join(here, "..", "server", "proto"))
    a = ap.parse_args()
    if not a.server.startswith(("127.", "localhost", "[::1]")):
        sys.exit("this benchmark talks to loopback only")
    pb, grpc_pb = stubs(a.proto)
    ch = grpc.insecure_channel(a.server, options=[("grpc.max_receive_message_length", 64 << 20)])
    c = grpc_pb.EventStoreStub(ch)
    payload = b'{"old":12900,"new":11900,"currency":"EUR","source":"feed-7","line":' + b"%d" + b',"pad":"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij"}'
    for start in range(0, a.events, 1000):
        evs = [pb.Event(entity=a.entity, kind="price_changed", ts=1_700_000_000_000 + i,
                        tags=["tenant:t42"], payload=payload % i)
               for i in range(start, min(start + 1000, a.events))]
        c.Append(pb.AppendRequest(events=evs))
    batched = hasattr(pb, "EventBatch")
    rates = []
    for _ in range(a.reads):
        t = time.perf_counter()
        n = 0
        for msg in c.History(pb.HistoryRequest(entity=a.entity)):
            n += len(msg.events) if batched else 1
        dt = time.perf_counter() - t
        rates.append(n / dt)
        print(f"read {n} events in {dt:.3f} s: {n / dt:,.0f} events/s")
    print(f"median {statistics.median(rates):,.0f} events/s ({'EventBatch' if batched else 'one Event per message'})")


if __name__ == "__main__":
    main()
