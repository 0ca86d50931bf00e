#!/usr/bin/env python3
"""Codec benchmark: medians of several runs for the messages on Moldau's hot paths.

    python scripts/bench_codec.py [--runs 7]

Prints microseconds per operation and, where record bytes move, MB/s. Reference: a plain
``bytes`` copy of the same payload (memcpy speed), so "x memcpy" above 1 means no copy was made.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import codec
from protocol import messages as m

MIB = 1024 * 1024


def measure(fn: Callable[[], Any], runs: int, inner: int) -> float:
    """Median seconds per call over `runs` runs of `inner` calls each."""
    fn()  # warm up: builds and caches the codec
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def produce_frame() -> bytes:
    batch = bytes(MIB)
    req = m.ProduceRequest(acks=-1, timeout_ms=30000, topic_data=[m.ProduceRequest.TopicProduceData(
        name="bench", partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=batch)])])
    return b"".join(bytes(x) for x in codec.encode_request(0, 9, 1, "bench", req))[4:]


def fetch_response() -> Any:
    chunk = bytes(MIB)
    parts = [m.FetchResponse.PartitionData(partition_index=i, high_watermark=1000, last_stable_offset=1000,
                                           log_start_offset=0, records=chunk) for i in range(100)]
    return m.FetchResponse(responses=[m.FetchResponse.FetchableTopicResponse(topic="bench", partitions=parts)])


def metadata_response() -> Any:
    P, T = m.MetadataResponse.MetadataResponsePartition, m.MetadataResponse.MetadataResponseTopic
    topics = [T(name=f"topic-{t}", partitions=[P(partition_index=p, leader_id=1, leader_epoch=0,
                                                 replica_nodes=[1], isr_nodes=[1]) for p in range(10)])
              for t in range(1000)]
    return m.MetadataResponse(brokers=[m.MetadataResponse.MetadataResponseBroker(node_id=1, host="localhost",
                                                                                 port=9092)],
                              cluster_id="bench", controller_id=1, topics=topics)


def join_group_frame() -> bytes:
    meta = bytes(64)
    req = m.JoinGroupRequest(group_id="bench-group", session_timeout_ms=45000, rebalance_timeout_ms=300000,
                             member_id="", protocol_type="consumer", protocols=[
                                 m.JoinGroupRequest.JoinGroupRequestProtocol(name=n, metadata=meta)
                                 for n in ("range", "roundrobin")])
    return b"".join(bytes(x) for x in codec.encode_request(11, 5, 1, "bench", req))[4:]


def report(name: str, seconds: float, nbytes: int | None = None, reference: float | None = None) -> None:
    line = f"{name:<62} {seconds * 1e6:>12.1f} µs/op"
    if nbytes:
        line += f" {nbytes / seconds / 1e6:>12.0f} MB/s"
        if reference:
            line += f"   ({reference / seconds:.1f} x memcpy)"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = args.runs

    frame = produce_frame()
    copy_1mib = measure(lambda: bytearray(frame), runs, 200)
    report("memcpy of 1 MiB (reference)", copy_1mib, MIB)
    report("decode Produce v9 with one 1 MiB batch", measure(lambda: codec.decode_request(frame), runs, 2000),
           MIB, copy_1mib)

    fetch = fetch_response()
    big = bytes(100 * MIB)
    copy_100 = measure(lambda: bytearray(big), runs, 3)
    report("memcpy of 100 MiB (reference)", copy_100, 100 * MIB)
    report("encode Fetch v12 response, 100 x 1 MiB", measure(lambda: codec.encode_response(1, 12, 1, fetch),
                                                              runs, 200), 100 * MIB, copy_100)

    meta = metadata_response()
    for v in (1, 9, 12):
        report(f"encode Metadata v{v} response, 1,000 topics x 10 partitions",
               measure(lambda v=v: codec.encode_response(3, v, 1, meta), runs, 5))

    jg = join_group_frame()
    report("decode JoinGroup v5 request", measure(lambda: codec.decode_request(jg), runs, 20000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
