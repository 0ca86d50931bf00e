#!/usr/bin/env python3
"""Storage benchmark: the file engine next to the raw disk, same bytes, same directory, same run.

    python scripts/bench_storage.py [--runs 5] [--dir PATH] [--only a,b,c,d] [sizes, see --help]

Each figure is the median of ``--runs`` runs, printed next to its physical reference measured in the
same run on the same filesystem (a temporary directory under ``--dir``, default the system temp
directory), with the ratio and the target:

a. append of 1 MiB batches, one ``flush()`` (group commit, fdatasync) per append, vs ``write`` +
   ``fdatasync`` of the same bytes to a plain file. Target: >= 0.8 of raw.
b. ``--producers`` concurrent acks=all-style producers (asyncio tasks), each appending a 1 KiB batch to
   one of ``--partitions`` logs then awaiting ``flush()``: appends per second, vs one thread doing
   4 KiB ``write`` + ``fdatasync`` per second. Group commit must put this far above raw.
c. sequential read of ``--read-mib`` MiB from offset 0 through ``log.read`` in ``--fetch-bytes``
   chunks, vs ``read`` of the same segment files in the same chunk size. Both are measured with a
   cold page cache (the files' pages evicted with ``posix_fadvise(DONTNEED)`` after they were
   fsynced; nothing else on the machine is dropped) and warm (read again right after). Target:
   >= 0.8 of raw. The log is written once and read ``--runs`` times.
d. time to open (recover) a log of ``--segments`` segments (``--segment-kib`` KiB each): after a
   clean close; after a crash (``FileEngine.simulate_crash()``) with the recovery point checkpointed
   at the end (only the active segment is scanned); after a crash with no recovery-point checkpoint
   (every segment is scanned, CRCs checked, indexes rebuilt and fsynced). References: ``stat`` of
   every file, plus ``read`` of the active segment / of every segment after a crash. Warm = the
   files' pages in the page cache (as after a process crash), cold = evicted (as after a reboot).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.log import configure_logging
from protocol.records import Record, build_batch, iter_batches
from storage.file.checkpoint import RECOVERY_POINT_CHECKPOINT
from storage.interface import PartitionLog, StorageEngine, open_engine

KIB = 1024
MIB = 1024 * KIB
TOPIC = "bench"


def make_batch(size: int, records: int = 1) -> bytes:
    """A v2 batch of ``records`` records whose total size is about ``size`` bytes."""
    overhead = len(build_batch([Record(i, 0, None, b"") for i in range(records)]))
    value = max(0, (size - overhead) // records - 4)  # a few bytes of varint length per record
    return bytes(build_batch([Record(i, 1_700_000_000_000, None, b"v" * value) for i in range(records)]))


def median(samples: list[float]) -> float:
    return statistics.median(samples)


class Results:
    """Samples per (scenario, metric) and the lines that print them."""

    def __init__(self, verbose: bool = False) -> None:
        self.samples: dict[str, list[float]] = {}
        self.verbose = verbose

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def line(self, label: str, engine: str, reference: str, unit: str, target: str = "",
             higher_is_better: bool = True) -> str:
        """One figure next to its reference; the ratio is engine/raw for rates, raw/engine for times."""
        e, r = median(self.samples[engine]), median(self.samples[reference])
        ratio = e / r if higher_is_better else r / e
        text = f"  {label:<34} engine {e:>9.1f} {unit:<6} raw {r:>9.1f} {unit:<6} ratio {ratio:>6.2f}  {target}"
        if self.verbose:
            text += "".join(f"\n  {'':<34} {side} samples: " + " ".join(f"{v:.1f}" for v in self.samples[key])
                            for side, key in (("engine", engine), ("raw", reference)))
        return text


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (posix_fadvise DONTNEED; no root needed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def log_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{TOPIC}-0/*.log"))


async def open_log(directory: Path, config: dict[str, Any] | None = None,
                   partition: int = 0) -> tuple[StorageEngine, PartitionLog]:
    engine = open_engine(directory.as_uri())
    return engine, await engine.open_log(TOPIC, partition, config or {})


def fresh(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --- a. 1 MiB appends with a flush each -------------------------------------------------------------

async def engine_appends(directory: Path, batch: bytes, count: int) -> float:
    engine, log = await open_log(directory)
    # The engine patches offsets in place, so each append needs its own writable buffer, as the
    # broker's receive buffers are; the copies are made before the clock starts.
    buffers = [bytearray(batch) for _ in range(count)]
    start = time.perf_counter()
    for buffer in buffers:
        await log.append(buffer)
        await log.flush()
    elapsed = time.perf_counter() - start
    await engine.close()
    return count * len(batch) / elapsed / MIB


def raw_appends(directory: Path, batch: bytes, count: int) -> float:
    fd = os.open(directory / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, batch)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return count * len(batch) / elapsed / MIB


def bench_append(args: argparse.Namespace, base: Path, results: Results, run: int) -> None:
    batch = make_batch(MIB, 16)
    count = args.append_mib
    for side in (("engine", "raw") if run % 2 == 0 else ("raw", "engine")):
        directory = fresh(base, f"a-{side}")
        if side == "engine":
            results.add("a.engine", asyncio.run(engine_appends(directory, batch, count)))
        else:
            results.add("a.raw", raw_appends(directory, batch, count))
        shutil.rmtree(directory)


# --- b. many concurrent acks=all producers ----------------------------------------------------------

async def engine_producers(directory: Path, batch: bytes, producers: int, partitions: int,
                           duration: float) -> tuple[float, float, float]:
    """Appends per second, fdatasyncs per second and the median append+flush latency (ms)."""
    engine = open_engine(directory.as_uri())
    logs = [await engine.open_log(TOPIC, p, {}) for p in range(partitions)]
    syncs = 0
    fs: Any = engine.fs  # type: ignore[attr-defined]  # the file engine's filesystem seam
    real_fdatasync = fs.fdatasync

    def counting_fdatasync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real_fdatasync(fd)

    fs.fdatasync = counting_fdatasync
    done = 0
    latencies: list[float] = []
    stopping = False

    async def producer(i: int) -> None:
        nonlocal done
        log = logs[i % partitions]
        while not stopping:
            t = time.perf_counter()
            await log.append(bytearray(batch))
            await log.flush()
            latencies.append(time.perf_counter() - t)
            done += 1

    tasks = [asyncio.create_task(producer(i)) for i in range(producers)]
    await asyncio.sleep(0.5)  # let every producer get going before counting
    done0, syncs0, lat0 = done, syncs, len(latencies)
    start = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - start
    appended, synced, window = done - done0, syncs - syncs0, latencies[lat0:]
    stopping = True
    await asyncio.gather(*tasks)
    await engine.close()
    return appended / elapsed, synced / elapsed, median(window) * 1000


def raw_small_syncs(directory: Path, duration: float) -> float:
    block = b"r" * (4 * KIB)
    fd = os.open(directory / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            os.write(fd, block)
            os.fdatasync(fd)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return count / elapsed


def bench_producers(args: argparse.Namespace, base: Path, results: Results, run: int) -> None:
    batch = make_batch(KIB)
    for side in (("engine", "raw") if run % 2 == 0 else ("raw", "engine")):
        directory = fresh(base, f"b-{side}")
        if side == "engine":
            rate, syncs, latency = asyncio.run(engine_producers(directory, batch, args.producers, args.partitions,
                                                                args.duration))
            results.add("b.engine", rate)
            results.add("b.syncs", syncs)
            results.add("b.latency", latency)
        else:
            results.add("b.raw", raw_small_syncs(directory, args.duration))
        shutil.rmtree(directory)


# --- c. sequential read -----------------------------------------------------------------------------

async def write_log(directory: Path, total: int, batch: bytes, config: dict[str, Any] | None = None) -> int:
    """Append ``total`` bytes of ``batch`` copies, flush once and close cleanly; returns the batch count."""
    engine, log = await open_log(directory, config)
    count = max(1, total // len(batch))
    for i in range(count):
        await log.append(bytearray(batch))
        if i % 4096 == 4095:
            await log.flush()  # keep the dirty page cache small
    await log.flush()
    await engine.close()
    return count


def next_offset(chunk: Any) -> int:
    *_, (_, batch) = iter_batches(chunk)
    return batch.base_offset + batch.last_offset_delta + 1


async def engine_read(directory: Path, fetch_bytes: int) -> float:
    engine, log = await open_log(directory)
    offset, total, end = 0, 0, log.log_end_offset
    start = time.perf_counter()
    while offset < end:
        result = await log.read(offset, fetch_bytes)
        total += result.size
        offset = next_offset(result.chunks[-1])
    elapsed = time.perf_counter() - start
    await engine.close()
    return total / elapsed / MIB


def raw_read(files: list[Path], fetch_bytes: int) -> float:
    total = 0
    start = time.perf_counter()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            while data := os.read(fd, fetch_bytes):
                total += len(data)
        finally:
            os.close(fd)
    return total / (time.perf_counter() - start) / MIB


def bench_read(args: argparse.Namespace, base: Path, results: Results, run: int) -> None:
    directory = base / "c-log"
    files = log_files(directory)
    for cache in ("cold", "warm"):
        for side in (("engine", "raw") if run % 2 == 0 else ("raw", "engine")):
            if cache == "cold":
                evict(files)
            if side == "engine":
                results.add(f"c.engine.{cache}", asyncio.run(engine_read(directory, args.fetch_bytes)))
            else:
                results.add(f"c.raw.{cache}", raw_read(files, args.fetch_bytes))


# --- d. recovery ------------------------------------------------------------------------------------

async def timed_open(directory: Path, config: dict[str, Any]) -> float:
    start = time.perf_counter()
    engine, log = await open_log(directory, config)
    elapsed = time.perf_counter() - start
    assert log.log_end_offset > 0
    await engine.close()
    return elapsed * 1000


async def crash(directory: Path, config: dict[str, Any], keep_recovery_point: bool) -> None:
    """Leave the directory as a killed process would: no clean-shutdown marker; the recovery point
    checkpointed at the end, or no recovery-point checkpoint at all."""
    engine, _ = await open_log(directory, config)
    await engine.checkpoint()  # type: ignore[attr-defined]
    engine.simulate_crash()  # type: ignore[attr-defined]
    if not keep_recovery_point:
        (directory / RECOVERY_POINT_CHECKPOINT).unlink()


def stat_all(directory: Path) -> float:
    start = time.perf_counter()
    for path in (directory / f"{TOPIC}-0").iterdir():
        path.stat()
    return (time.perf_counter() - start) * 1000


def bench_recovery(args: argparse.Namespace, base: Path, results: Results, run: int) -> None:
    directory = base / "d-log"
    config = {"segment.bytes": args.segment_kib * KIB}
    files = log_files(directory)
    all_files = sorted((directory / f"{TOPIC}-0").iterdir())
    for cache in ("warm", "cold"):
        def prepare(paths: list[Path] = all_files, cache: str = cache) -> None:
            if cache == "cold":
                evict(paths)

        prepare()
        results.add(f"d.clean.{cache}.engine", asyncio.run(timed_open(directory, config)))
        prepare()
        results.add(f"d.clean.{cache}.raw", stat_all(directory))
        for name, keep in (("crash-end", True), ("crash-full", False)):
            asyncio.run(crash(directory, config, keep))
            prepare()
            results.add(f"d.{name}.{cache}.engine", asyncio.run(timed_open(directory, config)))
            prepare()
            scanned = files[-1:] if keep else files
            results.add(f"d.{name}.{cache}.raw", stat_all(directory) + _timed_ms(raw_read, scanned, MIB))


def _timed_ms(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


# --- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="a directory on the filesystem to measure (a temporary directory is made in it)")
    parser.add_argument("--only", default="a,b,c,d", help="scenarios to run, e.g. a,c")
    parser.add_argument("--verbose", action="store_true", help="print every run's figures, not only medians")
    parser.add_argument("--append-mib", type=int, default=256, help="(a) MiB appended per run, in 1 MiB batches")
    parser.add_argument("--producers", type=int, default=1000, help="(b) concurrent producers")
    parser.add_argument("--partitions", type=int, default=4, help="(b) logs the producers share")
    parser.add_argument("--duration", type=float, default=3.0, help="(b) seconds measured per run")
    parser.add_argument("--read-mib", type=int, default=1024, help="(c) size of the log read, MiB")
    parser.add_argument("--read-batch-kib", type=int, default=16, help="(c) batch size the log is written in")
    parser.add_argument("--fetch-bytes", type=int, default=MIB, help="(c) max_bytes per read")
    parser.add_argument("--segments", type=int, default=1000, help="(d) segments in the recovered log")
    parser.add_argument("--segment-kib", type=int, default=64, help="(d) segment.bytes, KiB")
    args = parser.parse_args(argv)
    configure_logging("warning")  # recovery and rolls log at info/debug on every open
    only = set(args.only.split(","))
    base = Path(tempfile.mkdtemp(prefix="moldau-bench-", dir=args.dir))
    results = Results(args.verbose)
    try:
        print(f"moldau storage benchmark: {args.runs} runs in {base} (medians)")
        if "c" in only:
            t = time.perf_counter()
            asyncio.run(write_log(fresh(base, "c-log"), args.read_mib * MIB, make_batch(args.read_batch_kib * KIB, 16)))
            print(f"  (c) wrote a {args.read_mib} MiB log of {args.read_batch_kib} KiB batches "
                  f"in {time.perf_counter() - t:.1f} s")
        if "d" in only:
            t = time.perf_counter()
            segment = args.segment_kib * KIB
            batch = make_batch(segment // 4, 16)  # four batches per segment
            asyncio.run(write_log(fresh(base, "d-log"), args.segments * 4 * len(batch), batch,
                                  {"segment.bytes": segment}))
            made = len(log_files(base / "d-log"))
            print(f"  (d) wrote a log of {made} segments of {args.segment_kib} KiB in {time.perf_counter() - t:.1f} s")
        steps: list[tuple[str, Callable[..., None]]] = [
            ("a", bench_append), ("b", bench_producers), ("c", bench_read), ("d", bench_recovery)]
        for run in range(args.runs):
            for name, step in steps:
                if name in only:
                    step(args, base, results, run)
        report(args, only, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def report(args: argparse.Namespace, only: set[str], results: Results) -> None:
    if "a" in only:
        print(f"a. append 1 MiB batches, flush (fdatasync) after each, {args.append_mib} MiB per run")
        print(results.line("append + flush", "a.engine", "a.raw", "MiB/s", "target >= 0.80"))
    if "b" in only:
        print(f"b. {args.producers} producers, 1 KiB batch + flush each, {args.partitions} logs, "
              f"{args.duration:g} s per run (raw: one thread, 4 KiB write + fdatasync)")
        print(results.line("appends per second", "b.engine", "b.raw", "ops/s", "target: far above 1"))
        print(f"  {'':<34} engine fdatasyncs/s {median(results.samples['b.syncs']):.0f}, "
              f"median append+flush latency {median(results.samples['b.latency']):.1f} ms")
    if "c" in only:
        print(f"c. sequential read of {args.read_mib} MiB from offset 0, {args.fetch_bytes // KIB} KiB per read "
              f"(log written in {args.read_batch_kib} KiB batches)")
        for cache in ("cold", "warm"):
            print(results.line(f"read, page cache {cache}", f"c.engine.{cache}", f"c.raw.{cache}", "MiB/s",
                               "target >= 0.80"))
    if "d" in only:
        print(f"d. open (recover) a log of {args.segments} segments of {args.segment_kib} KiB "
              f"(lower is better; ratio = raw / engine)")
        for name, what, reference in (("clean", "clean close", "raw = stat every file"),
                                      ("crash-end", "crash, recovery point at end", "raw = stat all, read active"),
                                      ("crash-full", "crash, no recovery point", "raw = stat all, read all")):
            for cache in ("warm", "cold"):
                print(results.line(f"{what}, {cache}", f"d.{name}.{cache}.engine", f"d.{name}.{cache}.raw",
                                   "ms", reference, higher_is_better=False))

if __name__ == "__main__":
    sys.exit(main())
