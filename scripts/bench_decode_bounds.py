#!/usr/bin/env python3
"""Decode cost of hostile-but-legal requests: seconds and peak memory per MB of frame.

    python scripts/bench_decode_bounds.py [--mb 4] [--runs 3]

The worst case the codec must keep bounded: a frame made of the smallest possible array elements, here
a Metadata v1 request of empty topic names (2 bytes each) and a Metadata v12 request of empty compact
names (18 bytes each: uuid, name, tags). Prints, per MB of frame, the decode CPU time (median of runs:
what the event loop would spend, less sensitive to other load than wall time) and
the peak memory tracemalloc sees while decoding, as a multiple of the frame size; or, for a frame over
the codec's element bound (``protocol.primitives.MAX_ELEMENTS``), how long refusing it takes.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import codec

MIB = 1024 * 1024


def metadata_v1_empty_names(size: int) -> bytes:
    count = (size - 64) // 2
    header = struct.pack(">hhih", 3, 1, 1, 5) + b"bench"
    return header + struct.pack(">i", count) + b"\x00\x00" * count


def metadata_v12_empty_names(size: int) -> bytes:
    count = (size - 64) // 18
    header = struct.pack(">hhih", 3, 12, 1, 5) + b"bench" + b"\x00"
    n = count + 1
    uvarint = bytearray()
    while n >= 0x80:
        uvarint.append((n & 0x7F) | 0x80)
        n >>= 7
    uvarint.append(n)
    entry = bytes(16) + b"\x01" + b"\x00"  # zero uuid, empty compact name, no tags
    return header + bytes(uvarint) + entry * count + b"\x01\x00\x00"  # allow_auto, include_ops, tags


def measure(frame: bytes, runs: int) -> tuple[float, float]:
    mv = memoryview(frame)
    codec.decode_request(mv)  # warm up the codec cache
    times = []
    for _ in range(runs):
        start = time.process_time()
        codec.decode_request(mv)
        times.append(time.process_time() - start)
    tracemalloc.start()
    codec.decode_request(mv)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.mb * MIB
    for label, build in (("Metadata v1, empty names", metadata_v1_empty_names),
                         ("Metadata v12, empty names", metadata_v12_empty_names)):
        frame = build(size)
        mb = len(frame) / MIB
        try:
            seconds, peak = measure(frame, args.runs)
        except codec.DecodeError as exc:
            start = time.process_time()
            try:
                codec.decode_request(memoryview(frame))
            except codec.DecodeError:
                pass
            took = time.process_time() - start
            print(f"{label:28s} refused in {took * 1e6:.0f} us ({mb:.0f} MB frame): {exc.args[0]}")
            continue
        print(f"{label:28s} {seconds / mb * 1000:8.1f} ms/MB  peak memory {peak / len(frame):6.1f}x frame")


if __name__ == "__main__":
    main()
