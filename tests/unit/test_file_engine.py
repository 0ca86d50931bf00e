"""The file engine (``file:///path``): Kafka's on-disk layout, segment rolling, index lookups, group commit.

The shared storage contract runs in test_storage_contract.py; these tests check what only a durable
engine has. Recovery, faults and retention have their own files; the helpers here serve all four.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode, KafkaError
from protocol.records import Record, RecordBatch, build_batch, iter_batches, iter_records
from storage.file import FaultInjectingFileSystem, FileEngine, FileLog
from storage.file.checkpoint import parse_checkpoint
from storage.file.fs import StorageError
from storage.file.index import CorruptIndexError, OffsetIndex, TimeIndex, needs_entry
from storage.file.io_lanes import IoLanes
from storage.interface import OffsetOutOfRange, open_engine
from storage.memory import MemoryEngine
from tests.unit.virtual_clock import run_virtual
from tests.waiting import wait_until_async

# --- helpers shared by the test_file_* modules -------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def batch(n: int, ts: int | Iterable[int] = 1000, value_size: int = 20) -> bytearray:
    """A producer-style batch of n records (base offset 0); `ts` is the first timestamp or one per record."""
    stamps = list(ts) if not isinstance(ts, int) else [ts + i if ts >= 0 else -1 for i in range(n)]
    return build_batch([Record(i, stamps[i], b"k%d" % i, bytes([65 + i % 26]) * value_size) for i in range(n)])


def offsets_of(chunks: list[Any]) -> list[int]:
    return [record.offset for record in records_of(chunks)]


def records_of(chunks: list[Any]) -> list[Record]:
    out = []
    for _, b in iter_batches(memoryview(b"".join(bytes(c) for c in chunks))):
        assert b.validate_crc(), f"batch at {b.base_offset} read back with a bad CRC"
        out += list(iter_records(b))
    return out


def file_batches(path: Path) -> list[RecordBatch]:
    """Every batch of a segment file, parsed straight from the bytes."""
    data = path.read_bytes()
    return [b for _, b in iter_batches(memoryview(data))]


def segment_files(directory: Path, suffix: str = ".log") -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == suffix)


class Clock:
    """An injected engine clock (milliseconds)."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def reopen(path: Path, fs: Any = None, clock: Callable[[], int] | None = None,
                 config: dict[str, Any] | None = None, topic: str = "t",
                 partition: int = 0) -> tuple[FileEngine, FileLog]:
    engine = FileEngine(path, fs=fs, clock=clock)
    return engine, await engine.open_log(topic, partition, config)


def expected_indexes(batches: list[RecordBatch], base: int, interval: int, *, seal: bool = True) -> tuple[bytes, bytes]:
    """The .index and .timeindex bytes Kafka's rule gives for these batches (brute force, for checks)."""
    offsets, times = OffsetIndex(base), TimeIndex(base)
    position = last_entry = 0
    max_ts, max_at = -1, base
    for b in batches:
        if b.max_timestamp > max_ts:
            max_ts, max_at = b.max_timestamp, b.last_offset
        if position - last_entry > interval:
            offsets.append(b.last_offset, position)
            times.maybe_append(max_ts, max_at)
            last_entry = position
        position += b.total_size
    if seal and max_ts >= 0:
        times.maybe_append(max_ts, max_at)
    return offsets.encode(), times.encode()


# --- layout ---------------------------------------------------------------------------------------


def test_open_engine_gives_a_file_engine_for_file_urls(tmp_path: Path) -> None:
    engine = open_engine((tmp_path / "data").as_uri() + "?log.flush.offset.checkpoint.interval.ms=5")
    assert isinstance(engine, FileEngine)
    assert engine.path == str(tmp_path / "data") and engine.checkpoint_interval_ms == 5
    engine.simulate_crash()
    with pytest.raises(ValueError, match="unknown option 'nope'"):
        open_engine((tmp_path / "x").as_uri() + "?nope=1")
    with pytest.raises(ValueError, match="ABSOLUTE"):
        open_engine("file://host/path")


def test_on_disk_layout_is_kafkas(tmp_path: Path) -> None:
    """Directory per partition, 20-digit segment names, Kafka's checkpoint files and shutdown marker."""
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("orders.v1-x", 3, {"segment.bytes": 3 * len(batch(2)), "index.interval.bytes": 0})
        for _ in range(5):
            await log.append(batch(2))
        assert not (tmp_path / ".kafka_cleanshutdown").exists()  # only after a clean close
        await log.delete_records_before(1)
        await engine.close()
    run(go())
    part = tmp_path / "orders.v1-x-3"
    assert segment_files(part) == ["00000000000000000000.log", "00000000000000000006.log"]
    assert segment_files(part, ".index") == ["00000000000000000000.index", "00000000000000000006.index"]
    assert segment_files(part, ".timeindex") == ["00000000000000000000.timeindex", "00000000000000000006.timeindex"]
    first = file_batches(part / "00000000000000000000.log")
    assert [b.base_offset for b in first] == [0, 2, 4]
    # interval 0: an entry for every batch but the first, (last offset, position) big-endian int32s
    size = len(batch(2))
    assert (part / "00000000000000000000.index").read_bytes() == struct.pack(">iiii", 3, size, 5, 2 * size)
    assert len((part / "00000000000000000000.timeindex").read_bytes()) % 12 == 0
    assert (tmp_path / ".kafka_cleanshutdown").exists()
    points = parse_checkpoint((tmp_path / "recovery-point-offset-checkpoint").read_bytes())
    starts = parse_checkpoint((tmp_path / "log-start-offset-checkpoint").read_bytes())
    assert points == {("orders.v1-x", 3): 10} and starts == {("orders.v1-x", 3): 1}
    assert (tmp_path / "log-start-offset-checkpoint").read_text() == "0\n1\norders.v1-x 3 1\n"


def test_logs_store_the_batches_exactly_as_served(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0)
        sent = [batch(3), batch(1, ts=5000), batch(4, value_size=300)]
        for b in sent:
            await log.append(b)  # patched in place with the assigned base offset
        served = (await log.read(0, 1 << 20)).chunks
        await engine.close()
        assert [bytes(c) for c in served] == [bytes(b) for b in sent]
        assert (tmp_path / "t-0" / "00000000000000000000.log").read_bytes() == b"".join(bytes(b) for b in sent)
    run(go())


def test_partitions_lists_the_directories_found_at_start(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        for topic, partition in (("a-b", 0), ("a-b", 12), ("c", 1)):
            await (await engine.open_log(topic, partition)).append(batch(1))
        await engine.close()
        (tmp_path / "not-a-partition-x").mkdir()
        (tmp_path / "stray-7").write_text("a file, not a partition")
        engine = FileEngine(tmp_path)
        assert engine.partitions() == [("a-b", 0), ("a-b", 12), ("c", 1)]
        await engine.delete_log("a-b", 12)
        assert engine.partitions() == [("a-b", 0), ("c", 1)]
        assert not (tmp_path / "a-b-12").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith("-delete")]
        log = await engine.open_log("c", 1)
        assert log.log_end_offset == 1
        await engine.close()
        points = parse_checkpoint((tmp_path / "recovery-point-offset-checkpoint").read_bytes())
        assert points == {("a-b", 0): 1, ("c", 1): 1}  # unopened logs keep their entries, deleted ones go
    run(go())


def test_a_deleted_and_recreated_log_starts_empty(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0)
        for _ in range(3):
            await log.append(batch(2))
        await log.delete_records_before(4)
        await engine.delete_log("t", 0)
        fresh = await engine.open_log("t", 0)
        assert (fresh.log_start_offset, fresh.log_end_offset) == (0, 0)
        assert (await fresh.append(batch(1))).base_offset == 0
        await engine.close()
    run(go())


def test_open_log_takes_a_config_mapping_or_a_live_callable(tmp_path: Path) -> None:
    """A callable is looked up on every append: a topic config change applies without reopening."""
    settings_now = {"segment.bytes": "1000000"}

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, settings_now.get)
        size = len(batch(2))
        for _ in range(4):
            await log.append(batch(2))
        assert len(log.segments) == 1
        settings_now["segment.bytes"] = str(2 * size)
        await log.append(batch(2))
        assert len(log.segments) == 2
        same = await engine.open_log("t", 0, {"segment.bytes": 10 * size})
        assert same is log and log.config.segment_bytes == 10 * size
        await engine.close()
    run(go())


def test_an_open_shared_by_several_callers_survives_the_first_one_going_away(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent opens of one log share one load; the caller that started it being cancelled (its
    request's client went away) neither cuts the load short nor hands the others its cancellation."""
    import storage.file.engine as engine_module

    loading, release = threading.Event(), threading.Event()
    real = engine_module.load_log

    def held(*args: Any, **kwargs: Any) -> Any:
        loading.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "load_log", held)

    async def go() -> None:
        engine = FileEngine(tmp_path)
        first = asyncio.create_task(engine.open_log("t", 0))
        await wait_until_async(loading.is_set, 10, "the load on its I/O thread")
        second = asyncio.create_task(engine.open_log("t", 0))
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        log = await asyncio.wait_for(second, 10)
        assert first.cancelled() and log is await engine.open_log("t", 0)
        await log.append(batch(2))
        await engine.close()
    run(go())


def test_a_second_engine_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = FileEngine(tmp_path)
    with pytest.raises(KafkaError, match="in use") as info:
        FileEngine(tmp_path)
    assert info.value.code is ErrorCode.KAFKA_STORAGE_ERROR
    first.simulate_crash()
    FileEngine(tmp_path).simulate_crash()


# --- rolling ----------------------------------------------------------------------------------------


def test_segments_roll_on_segment_bytes(tmp_path: Path) -> None:
    size = len(batch(2))

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, {"segment.bytes": 3 * size + 10})
        for _ in range(10):
            await log.append(batch(2))
        assert [s.base_offset for s in log.segments] == [0, 6, 12, 18]
        assert all(s.size <= 3 * size + 10 for s in log.segments)
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == list(range(20))
        with pytest.raises(KafkaError) as info:
            await log.append(batch(2) + batch(2) + batch(2) + batch(2))
        assert info.value.code is ErrorCode.RECORD_LIST_TOO_LARGE
        assert log.log_end_offset == 20
        await engine.close()
    run(go())


def test_segments_roll_when_an_index_is_full(tmp_path: Path) -> None:
    """segment.index.bytes 24: the time index holds 2 entries; with index.interval.bytes 0 every batch
    after the first adds one (timestamps rise), so each segment takes 3 batches."""
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, {"segment.index.bytes": 24, "index.interval.bytes": 0})
        for i in range(7):
            await log.append(batch(1, ts=1000 + i))
        assert [s.base_offset for s in log.segments] == [0, 3, 6]
        await engine.close()
    run(go())


def test_segments_roll_on_segment_ms_from_the_first_batch_timestamp(tmp_path: Path) -> None:
    """Kafka measures segment.ms from the first batch's timestamp to the new batch's timestamp."""
    async def go() -> None:
        engine = FileEngine(tmp_path, clock=Clock())
        log = await engine.open_log("t", 0, {"segment.ms": 1000})
        for ts in (10_000, 10_500, 11_000):
            await log.append(batch(1, ts=ts))
        assert len(log.segments) == 1  # 11000 - 10000 is not more than 1000
        await log.append(batch(1, ts=11_001))
        assert [s.base_offset for s in log.segments] == [0, 3]
        await engine.close()
    run(go())


def test_segments_roll_on_segment_ms_by_the_clock_without_timestamps(tmp_path: Path) -> None:
    """Batches without timestamps (-1): the segment's creation time and the injected clock decide."""
    clock = Clock(50_000)

    async def go() -> None:
        engine = FileEngine(tmp_path, clock=clock)
        log = await engine.open_log("t", 0, {"segment.ms": 1000})
        await log.append(batch(1, ts=-1))
        clock.now += 1000
        await log.append(batch(1, ts=-1))
        assert len(log.segments) == 1
        clock.now += 1
        await log.append(batch(1, ts=-1))
        assert [s.base_offset for s in log.segments] == [0, 2]
        await engine.close()
    run(go())


def test_a_rolled_segment_gets_its_final_time_index_entry(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, {"segment.bytes": 2 * len(batch(1)), "index.interval.bytes": 1 << 20})
        for ts in (5000, 7000, 6000):
            await log.append(batch(1, ts=ts))
        await engine.close()
    run(go())
    # no regular entries (huge interval), only the final one: largest timestamp 7000 at offset 1
    data = (tmp_path / "t-0" / "00000000000000000000.timeindex").read_bytes()
    assert data == (7000).to_bytes(8, "big") + (1).to_bytes(4, "big")


# --- index structures -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 500)), max_size=40), st.integers(-5, 2500))
def test_offset_index_lookup_matches_a_scan(steps: list[tuple[int, int]], target: int) -> None:
    index = OffsetIndex(100)
    offset, position, entries = 100, 0, []
    for d_offset, d_position in steps:
        offset += d_offset
        position += d_position
        index.append(offset, position)
        entries.append((offset, position))
    expected = max((e for e in entries if e[0] <= 100 + target), default=(100, 0))
    assert index.lookup(100 + target) == expected
    again = OffsetIndex.decode(100, index.encode())
    assert again.lookup(100 + target) == expected and len(again) == len(entries)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 50), st.integers(0, 5)), max_size=40), st.integers(-10, 1500))
def test_time_index_lookup_matches_a_scan(steps: list[tuple[int, int]], target: int) -> None:
    index = TimeIndex(7)
    ts, offset, kept = 0, 7, []
    for d_ts, d_offset in steps:
        ts += d_ts
        offset += d_offset
        if index.maybe_append(ts, offset):
            kept.append((ts, offset))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(kept))
    below = [o for t, o in kept if t < target]
    assert index.offset_before(target) == (below[-1] if below else None)
    assert TimeIndex.decode(7, index.encode()).offset_before(target) == index.offset_before(target)


def test_index_files_that_cannot_be_trusted_are_rejected() -> None:
    good = OffsetIndex(0)
    good.append(5, 100)
    good.append(9, 300)
    with pytest.raises(CorruptIndexError):
        OffsetIndex.decode(0, good.encode()[:-3])
    with pytest.raises(CorruptIndexError):
        OffsetIndex.decode(0, good.encode()[8:] + good.encode()[:8])  # out of order
    with pytest.raises(CorruptIndexError):
        OffsetIndex.decode(0, bytes(16))  # zero-filled (a preallocated or torn file)
    times = TimeIndex(0)
    times.maybe_append(10, 1)
    times.maybe_append(20, 3)
    with pytest.raises(CorruptIndexError):
        TimeIndex.decode(0, times.encode()[12:] + times.encode()[:12])
    assert needs_entry(4097, 0, 4096) and not needs_entry(4096, 0, 4096)


# --- reads and lookups against the memory engine (hypothesis) ----------------------------------------

batch_specs = st.lists(
    st.tuples(st.integers(1, 5), st.lists(st.integers(0, 3000), min_size=5, max_size=5), st.integers(0, 200)),
    min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=batch_specs, interval=st.sampled_from([0, 50, 300, 4096]), segment_batches=st.integers(1, 8),
       truncate_after=st.integers(0, 30), delete_before=st.integers(0, 200),
       restart=st.sampled_from(["none", "clean", "crash"]),
       targets=st.lists(st.integers(-1, 3100), min_size=1, max_size=8))
def test_reads_and_lookups_match_the_memory_engine(specs: list[tuple[int, list[int], int]], interval: int,
                                                   segment_batches: int, truncate_after: int, delete_before: int,
                                                   restart: str, targets: list[int]) -> None:
    """Random logs with random index density and segment sizes, truncated and cut by DeleteRecords at
    random places; every read, offset lookup and timestamp lookup agrees with the in-memory reference
    engine, before and after a restart, and appends go on at the right offsets."""
    batches = [batch(n, ts=stamps[:n], value_size=size) for n, stamps, size in specs]
    config = {"index.interval.bytes": interval, "segment.bytes": max(len(b) for b in batches) * segment_batches}

    async def compare(log: Any, ref: Any) -> None:
        assert (log.log_start_offset, log.log_end_offset) == (ref.log_start_offset, ref.log_end_offset)
        assert log.size_bytes == ref.size_bytes
        for offset in range(ref.log_start_offset, ref.log_end_offset + 1):
            for max_bytes in (1, 700):
                got, want = await log.read(offset, max_bytes), await ref.read(offset, max_bytes)
                assert [bytes(c) for c in got.chunks] == [bytes(c) for c in want.chunks], (offset, max_bytes)
        for target in targets:
            assert await log.offset_for_timestamp(target) == await ref.offset_for_timestamp(target), target
        assert await log.max_timestamp() == await ref.max_timestamp()

    async def go(path: Path) -> None:
        engine, log = await reopen(path, config=config)
        ref = await MemoryEngine().open_log("t", 0)
        for b in batches:
            await log.append(bytearray(b))
            await ref.append(bytearray(b))
        if truncate_after < len(batches):
            boundary = sum(n for n, _, _ in specs[:truncate_after])
            await log.truncate_to(boundary)
            await ref.truncate_to(boundary)
            await compare(log, ref)
            await log.append(bytearray(batches[0]))
            await ref.append(bytearray(batches[0]))
        cut = min(delete_before, ref.log_end_offset)
        await log.delete_records_before(cut)
        await ref.delete_records_before(cut)
        await compare(log, ref)
        if restart == "clean":
            await engine.close()
        elif restart == "crash":
            engine.simulate_crash()
        if restart != "none":
            engine, log = await reopen(path, config=config)
            await compare(log, ref)
        await engine.close()

    with tempfile.TemporaryDirectory() as tmp:
        run(go(Path(tmp)))


def test_reads_cross_segments_and_respect_max_offset(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, {"segment.bytes": 2 * len(batch(3))})
        for _ in range(6):
            await log.append(batch(3))
        assert len(log.segments) == 3
        assert offsets_of((await log.read(4, 1 << 20)).chunks) == list(range(3, 18))
        assert offsets_of((await log.read(4, 1 << 20, max_offset=9)).chunks) == list(range(3, 9))
        assert offsets_of((await log.read(7, 2 * len(batch(3)))).chunks) == list(range(6, 12))
        with pytest.raises(OffsetOutOfRange):
            await log.read(19, 100)
        await engine.close()
    run(go())


def test_truncate_across_segments_survives_a_restart(tmp_path: Path) -> None:
    config = {"segment.bytes": 2 * len(batch(3)), "index.interval.bytes": 0}

    async def go() -> None:
        engine, log = await reopen(tmp_path, config=config)
        for _ in range(6):
            await log.append(batch(3))
        await log.truncate_to(6)  # a segment boundary: the segment at 6 and later go
        assert [s.base_offset for s in log.segments] == [0]
        assert (log.log_end_offset, log.recovery_point) == (6, 0)
        assert (await log.append(batch(2))).base_offset == 6  # the old segment is active again
        await log.truncate_to(3)
        assert log.log_end_offset == 3
        with pytest.raises(ValueError):
            await log.truncate_to(1)
        engine.simulate_crash()
        engine, log = await reopen(tmp_path, config=config)
        assert log.log_end_offset == 3
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2]
        await engine.close()
    run(go())
    assert segment_files(tmp_path / "t-0") == ["00000000000000000000.log"]


# --- durability and group commit ---------------------------------------------------------------------


class SyncRecorder(FaultInjectingFileSystem):
    """Remembers how large each file was when it was last fdatasynced, and makes fsyncs slow."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.synced: dict[str, int] = {}
        if delay:
            self.delays["fdatasync"] = delay

    def fdatasync(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        super().fdatasync(fd)
        path = self.path_of(fd)
        self.synced[path] = max(self.synced.get(path, 0), size)


def test_concurrent_flushes_share_one_fsync_pass(tmp_path: Path) -> None:
    """100 flushes issued together over 5 logs: one pass, one fdatasync per log."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        logs = [await engine.open_log(f"t{i}", 0) for i in range(5)]
        for log in logs:
            await log.append(batch(1))
        await asyncio.gather(*(log.flush() for log in logs for _ in range(20)))
        assert fs.count("fdatasync") == 5 and engine.flusher.passes == 1
        assert all(log.recovery_point == 1 for log in logs)
        await engine.close()
    run(go())


def test_interleaved_appends_and_flushes_share_fsyncs(tmp_path: Path) -> None:
    """100 producers on 5 partitions each append then flush while passes run (slow fsyncs): a flush
    returns only once its bytes were fsynced, and it costs far fewer fdatasync calls than flushes."""
    fs = SyncRecorder(delay=0.05)

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        logs = [await engine.open_log(f"t{i}", 0) for i in range(5)]

        async def produce(log: FileLog) -> None:
            await log.append(batch(1))
            active = log.segments[-1]
            size_before_flush = active.size
            await log.flush()
            assert fs.synced[active.log_path] >= size_before_flush
            assert log.recovery_point >= 1

        await asyncio.gather(*(produce(log) for log in logs for _ in range(20)))
        assert all(log.recovery_point == log.log_end_offset == 20 for log in logs)
        syncs = fs.count("fdatasync")
        assert syncs < 50, f"100 flushes over 5 logs cost {syncs} fdatasync calls"
        before = fs.count("fdatasync")
        await logs[0].flush()  # nothing new: no fsync at all
        assert fs.count("fdatasync") == before
        await engine.close()
    run(go())


def test_nothing_is_fsynced_by_default_until_a_flush(tmp_path: Path) -> None:
    """flush.ms and flush.messages default to Long.MAX: a day after the appends (on a virtual clock),
    nothing has been fsynced; a flush does it."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        for _ in range(5):
            await log.append(batch(1))
        await asyncio.sleep(86_400)
        assert fs.count("fdatasync") == 0 and log.recovery_point == 0
        await log.flush()
        assert fs.count("fdatasync") == 1 and log.recovery_point == 5
        assert fs.count("fsync", "") >= 1  # the new partition directory's entries
        await engine.close()
    run_virtual(go())


def test_flush_messages_makes_appends_wait_for_the_fsync(tmp_path: Path) -> None:
    fs = SyncRecorder()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0, {"flush.messages": 3})
        await log.append(batch(2))
        assert log.recovery_point == 0 and fs.count("fdatasync") == 0
        await log.append(batch(1))  # 3 unflushed messages: this append returns fsynced
        assert log.recovery_point == 3 and fs.count("fdatasync") == 1
        every = await engine.open_log("u", 0, {"flush.messages": 1})
        for i in range(3):
            await every.append(batch(1))
            assert every.recovery_point == i + 1
            assert fs.synced[every.segments[-1].log_path] == every.segments[-1].size
        await engine.close()
    run(go())


def test_flush_ms_flushes_in_the_background(tmp_path: Path) -> None:
    """flush.ms: the first append after a flush arms a timer (on the loop's clock, virtual here); when
    it fires, one background pass fsyncs everything appended meanwhile."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0, {"flush.ms": 200})
        armed = asyncio.get_running_loop().time()
        await log.append(batch(1))
        await log.append(batch(1))  # file I/O takes no virtual time
        await asyncio.sleep(0.199)
        assert log.recovery_point == 0 and fs.count("fdatasync") == 0, "flushed before flush.ms"
        await wait_until_async(lambda: log.recovery_point == 2, 0.1, "the flush.ms pass",
                               lambda: f"recovery point {log.recovery_point}")
        assert asyncio.get_running_loop().time() - armed == pytest.approx(0.2, abs=0.02)
        assert fs.count("fdatasync") == 1  # one timer, one pass for both appends
        await engine.close()
    run_virtual(go())


class BlockingWrites(FaultInjectingFileSystem):
    """Holds every pwrite to a path containing `blocked` until `release` is set."""

    def __init__(self, blocked: str) -> None:
        super().__init__()
        self.blocked = blocked
        self.held = threading.Event()
        self.release = threading.Event()

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self.blocked in self.path_of(fd):
            self.held.set()
            if not self.release.wait(30):
                raise OSError(errno.EIO, "test: the blocked write was never released")
        return super().pwrite(fd, data, offset)


def test_a_stuck_write_to_one_log_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """Each log writes on its own lane: while one partition's write is stuck (a 16 MiB batch, a slow
    disk), appends, rolls and deletions of other partitions go on, and the stuck log's next append
    waits for its first, in order."""
    fs = BlockingWrites(blocked="slow-0")

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs, write_threads=2)
        slow = await engine.open_log("slow", 0)
        fast = await engine.open_log("fast", 0, {"segment.bytes": "200"})
        assert slow.io_lane != fast.io_lane
        first = asyncio.create_task(slow.append(batch(2)))
        second = asyncio.create_task(slow.append(batch(1)))
        await asyncio.to_thread(fs.held.wait, 10)
        for _ in range(5):  # each append rolls a segment of 200 bytes
            await asyncio.wait_for(fast.append(batch(3)), 10)
        await asyncio.wait_for(engine.delete_log("fast", 0), 10)
        assert not first.done() and not second.done()
        fs.release.set()
        assert [(await first).base_offset, (await second).base_offset] == [0, 2]
        assert offsets_of((await slow.read(0, 1 << 20)).chunks) == [0, 1, 2]
        await engine.close()
    run(go())


def test_a_deleted_log_answers_unknown_partition_to_everyone_still_holding_it(tmp_path: Path) -> None:
    """A request that looked the partition up before a DeleteTopics (a Fetch, a ListOffsets by timestamp, a
    DeleteRecords) gets UNKNOWN_TOPIC_OR_PARTITION, as from the memory engine: not a storage error, and
    not an endless retry over segments that deletion retired."""
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0)
        for _ in range(3):
            await log.append(batch(2))
        pending = asyncio.create_task(log.delete_records_before(2))  # queued behind the deletion's mutex
        await engine.delete_log("t", 0)
        calls = [pending, log.read(0, 1 << 20), log.offset_for_timestamp(0), log.max_timestamp(),
                 log.delete_records_before(4), log.append(batch(1)), log.apply_retention()]
        for call in calls:
            try:
                outcome = await asyncio.wait_for(call, 10)
            except KafkaError as exc:
                assert exc.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, exc
            else:
                assert outcome is not None and not getattr(outcome, "deleted", ()), outcome
        await engine.close()
    run(go())


class HeldSyncs(FaultInjectingFileSystem):
    """Holds every fdatasync until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()
        self.release = threading.Event()

    def fdatasync(self, fd: int) -> None:
        self.held.set()
        if not self.release.wait(30):
            raise OSError(errno.EIO, "test: the held fdatasync was never released")
        super().fdatasync(fd)


def test_a_partition_deleted_during_its_flush_is_not_a_disk_failure(tmp_path: Path) -> None:
    """The fuzzer's DeleteTopics during an acks=all produce: the flush pass then finds the partition's
    directory gone. Its waiters learn the partition was deleted; the log does not go offline."""
    fs = HeldSyncs()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)  # new: its first flush fsyncs the directory too
        await log.append(batch(2))
        flushing = asyncio.create_task(log.flush())
        await asyncio.to_thread(fs.held.wait, 10)
        await asyncio.wait_for(engine.delete_log("t", 0), 10)
        fs.release.set()
        with pytest.raises(KafkaError) as failed:
            await asyncio.wait_for(flushing, 10)
        assert failed.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and log.offline is None
        with pytest.raises(KafkaError) as again:
            await log.flush()
        assert again.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await engine.close()
    run(go())


def test_io_lanes_deal_logs_round_robin_and_keep_each_lanes_order() -> None:
    lanes = IoLanes(3)
    try:
        assert [lanes.assign() for _ in range(5)] == [1, 2, 0, 1, 2]
        done: list[int] = []
        futures = [lanes.submit(1, done.append, i) for i in range(200)]
        for future in futures:
            future.result(10)
        assert done == list(range(200))
        with pytest.raises(ValueError, match="at least 1"):
            IoLanes(0)
    finally:
        lanes.shutdown(wait=True)


def test_write_threads_is_a_storage_url_option(tmp_path: Path) -> None:
    engine = open_engine((tmp_path / "data").as_uri() + "?write.threads=1")
    assert isinstance(engine, FileEngine) and engine.write_threads == 1
    engine.simulate_crash()


def test_a_cancelled_append_still_records_what_it_wrote(tmp_path: Path) -> None:
    """Cancelling an append while its write runs must not leave bytes in the file the log does not
    know about: the append completes its bookkeeping, then the cancellation propagates."""
    fs = FaultInjectingFileSystem()
    fs.delays["pwrite"] = 0.2

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        task = asyncio.create_task(log.append(batch(2)))
        await wait_until_async(lambda: fs.count("pwrite", ".log"), 5, "the write under way on the I/O thread",
                               interval=0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log.log_end_offset == 2 and log.segments[-1].size == len(batch(2))
        fs.delays.clear()
        assert (await log.append(batch(1))).base_offset == 2
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2]
        await engine.close()
    run(go())


def test_a_partition_of_the_longest_topic_name_is_deleted(tmp_path: Path) -> None:
    """A 249-character topic (the longest Kafka allows): its directory's doomed name is cut to the file
    system's 255-byte limit, so the rename that deletion starts with succeeds (found by the fuzzer: it
    failed with ENAMETOOLONG and left the data behind for the next topic of that name)."""
    name = "a" * 249

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log(name, 9999)
        await log.append(batch(3))
        await engine.delete_log(name, 9999)
        assert engine.partitions() == []
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("aaa")] == []
        fresh = await engine.open_log(name, 9999)
        assert fresh.log_end_offset == 0
        await engine.close()
    run(go())


def test_a_partition_whose_deletion_failed_stays_listed(tmp_path: Path) -> None:
    """The broker removes a listed log before it creates a partition of that name: one whose deletion
    failed must stay listed, or a new topic of the same name would open the deleted one's records."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        await log.append(batch(3))
        fs.inject("replace", path_contains="-delete")
        with pytest.raises(StorageError, match="cannot delete"):
            await engine.delete_log("t", 0)
        assert engine.partitions() == [("t", 0)]
        await engine.delete_log("t", 0)  # the fault was for one call: this time it goes
        assert engine.partitions() == []
        assert (await engine.open_log("t", 0)).log_end_offset == 0
        await engine.close()
    run(go())


def test_deleting_a_whole_topic_syncs_the_data_directory_and_writes_the_checkpoints_once(tmp_path: Path) -> None:
    """A topic's partitions go together: one rename each, then one sync and one checkpoint for all (each
    deletion rewrote both checkpoints of every partition: 10,000 partitions took about six minutes, and
    held every topic creation and deletion meanwhile)."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        for index in range(50):
            await (await engine.open_log("t", index)).append(batch(1))
        keep = await engine.open_log("kept", 0)
        await keep.append(batch(2))
        fs.reset_counts()
        await engine.delete_logs([("t", index) for index in range(50)])
        assert fs.count("replace") == 50 + 2  # the directories, then the two checkpoint files
        assert fs.count("fsync") <= 5
        assert engine.partitions() == [("kept", 0)]
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["kept-0"]
        await engine.close()
        points = parse_checkpoint((tmp_path / "recovery-point-offset-checkpoint").read_bytes())
        assert set(points) == {("kept", 0)}
    run(go())


def test_a_failed_rename_leaves_that_partition_and_the_later_ones_listed(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        for index in range(4):
            await (await engine.open_log("t", index)).append(batch(1))
        fs.inject("replace", path_contains="-delete", skip=2)  # the third rename fails
        with pytest.raises(StorageError, match="cannot delete .*t-2"):
            await engine.delete_logs([("t", index) for index in range(4)])
        assert engine.partitions() == [("t", 2), ("t", 3)]
        await engine.delete_logs([("t", 2), ("t", 3)])
        assert engine.partitions() == []
        await engine.close()
    run(go())
