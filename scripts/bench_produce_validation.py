#!/usr/bin/env python3
"""Micro-benchmark of the Produce hot path's batch checks (no sockets, no storage).

    python scripts/bench_produce_validation.py [--repeat 5]

For each batch shape (uncompressed and compressed, small and ~1 MiB), times `frame_batch` plus every
check `validate_batch` runs (the record walk included) for a CreateTime topic with default settings, and prints
the best-of-``repeat`` CPU microseconds per batch (process time: steadier than wall time on a busy machine). Use it before and after touching
`broker.produce_validation` or `protocol.records`: the uncompressed path should stay O(1) in records.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import broker.produce_validation as pv
from protocol.records import Compression, Record, build_batch

NOW = int(time.time() * 1000)


def _batch(records: int, value_size: int, compression: int) -> bytes:
    value = (b"moldau-bench-" * (value_size // 13 + 1))[:value_size]
    return bytes(build_batch([Record(i, NOW + i, b"key-%d" % i, value, ()) for i in range(records)],
                             compression=compression))


def _check(data: bytes) -> None:
    pv.validate_batch(pv.frame_batch(data, 9), pv.TopicRules(), NOW, "bench-0")


def _time(data: bytes, repeat: int) -> float:
    loops = max(1, 2_000_000 // max(len(data), 1))
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(loops):
            _check(data)
        best = min(best, (time.process_time() - start) / loops)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shapes: list[tuple[str, Any]] = [
        ("none   100 x 100 B", (100, 100, Compression.NONE)),
        ("none  1000 x 1 KiB", (1000, 1000, Compression.NONE)),
        ("lz4    100 x 100 B", (100, 100, Compression.LZ4)),
        ("lz4   1000 x 1 KiB", (1000, 1000, Compression.LZ4)),
        ("zstd  1000 x 1 KiB", (1000, 1000, Compression.ZSTD)),
        ("gzip  1000 x 1 KiB", (1000, 1000, Compression.GZIP)),
    ]
    for name, shape in shapes:
        data = _batch(*shape)
        print(f"{name}: {len(data):>8} B  {_time(data, args.repeat):10.1f} us/batch")


if __name__ == "__main__":
    main()
