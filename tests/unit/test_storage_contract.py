"""The storage engine contract: every engine behind `storage.interface` must pass these tests.

Engines are listed in ENGINES, each as the URL of a fresh, empty store for one test (the PostgreSQL
engine's is a new database on the throwaway server of ``tests.postgres_server``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from protocol.records import (
    Compression,
    Record,
    RecordBatch,
    TruncatedBatchError,
    build_batch,
    iter_batches,
    iter_records,
)
from storage.interface import OffsetOutOfRange, StorageEngine, open_engine

ENGINES: dict[str, Callable[[pytest.FixtureRequest, Any], str]] = {
    "memory": lambda request, tmp: "memory://",
    "file": lambda request, tmp: (tmp / "data").as_uri(),
    "postgresql": lambda request, tmp: request.getfixturevalue("postgres_url"),
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> StorageEngine:
    return open_engine(ENGINES[request.param](request, tmp_path))


def batch(n: int, ts: int = 1000, compression: int = Compression.NONE, key: bytes | None = b"k") -> bytearray:
    """A client-style batch of n records (base offset 0, as producers send it)."""
    records = [Record(i, ts + i, key, f"value-{i}".encode(), (("h", b"v"),)) for i in range(n)]
    return build_batch(records, compression=compression)


def offsets_of(chunks: list) -> list[int]:
    out = []
    for chunk in chunks:
        for _, b in iter_batches(memoryview(bytes(chunk))):
            assert b.validate_crc()
            out += [r.offset for r in iter_records(b)]
    return out


def test_append_assigns_consecutive_offsets(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
        r1 = await log.append(batch(3))
        r2 = await log.append(batch(2, compression=Compression.ZSTD))
        assert (r1.base_offset, r1.last_offset, r2.base_offset, r2.last_offset) == (0, 2, 3, 4)
        assert log.log_end_offset == 5 and log.high_watermark == 5
        res = await log.read(0, 1 << 20)
        assert log.size_bytes == res.size
        assert offsets_of(res.chunks) == [0, 1, 2, 3, 4]
        assert res.size == sum(len(c) for c in res.chunks)
        assert (res.high_watermark, res.log_start_offset) == (5, 0)
    run(go())


def test_append_of_several_batches_in_one_buffer(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 1)
        buf = batch(2) + batch(3, compression=Compression.GZIP)
        r = await log.append(buf)
        assert (r.base_offset, r.last_offset) == (0, 4)
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2, 3, 4]
    run(go())


def test_patching_keeps_the_crc_valid_and_the_bytes_as_sent(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        await log.append(batch(1))
        original = batch(4, compression=Compression.LZ4)
        await log.append(bytearray(original))
        (chunk,) = (await log.read(1, 1 << 20)).chunks
        stored = RecordBatch(bytes(chunk))
        assert stored.base_offset == 1 and stored.validate_crc()
        assert bytes(chunk)[8:] == bytes(original)[8:]  # only the base offset changed
    run(go())


def test_read_from_the_middle_of_a_batch_returns_the_whole_batch(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        await log.append(batch(5))
        await log.append(batch(5))
        assert offsets_of((await log.read(7, 1 << 20)).chunks) == [5, 6, 7, 8, 9]
        assert (await log.read(10, 1 << 20)).chunks == []  # at the end: nothing, no error
    run(go())


def test_read_respects_max_bytes_but_returns_at_least_one_batch(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        for _ in range(4):
            await log.append(batch(10))
        one = len(batch(10))
        assert offsets_of((await log.read(0, 1)).chunks) == list(range(10))
        assert (await log.read(0, 1, min_one_batch=False)).chunks == []
        assert len((await log.read(0, 2 * one + 1)).chunks) == 2
        assert len((await log.read(0, 1 << 20, max_offset=20)).chunks) == 2
    run(go())


def test_out_of_range_reads(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        await log.append(batch(3))
        with pytest.raises(OffsetOutOfRange):
            await log.read(4, 100)
        with pytest.raises(OffsetOutOfRange):
            await log.read(-1, 100)
    run(go())


def test_timestamp_lookup(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        assert await log.offset_for_timestamp(0) is None
        assert await log.max_timestamp() is None
        await log.append(batch(3, ts=1000))  # offsets 0-2, ts 1000-1002
        await log.append(batch(3, ts=2000))  # offsets 3-5, ts 2000-2002
        await log.append(batch(2, ts=1500))  # offsets 6-7, ts 1500-1501
        found = await log.offset_for_timestamp(1001)
        assert (found.offset, found.timestamp) == (1, 1001)
        found = await log.offset_for_timestamp(1003)
        assert (found.offset, found.timestamp) == (3, 2000)
        assert await log.offset_for_timestamp(5000) is None
        top = await log.max_timestamp()
        assert (top.offset, top.timestamp) == (5, 2002)
    run(go())


def test_log_append_time_rewrites_timestamps(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        r = await log.append(batch(3, ts=1000), log_append_time=99_000)
        assert r.log_append_time == 99_000
        (chunk,) = (await log.read(0, 1 << 20)).chunks
        b = RecordBatch(bytes(chunk))
        assert b.validate_crc() and b.max_timestamp == 99_000
        assert [rec.timestamp for rec in iter_records(b)] == [99_000] * 3
        found = await log.offset_for_timestamp(50_000)
        assert (found.offset, found.timestamp) == (0, 99_000)
    run(go())


def test_truncate(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        await log.append(batch(2))
        await log.append(batch(2))
        with pytest.raises(ValueError):
            await log.truncate_to(3)
        await log.truncate_to(2)
        assert log.log_end_offset == 2
        assert log.size_bytes == len(batch(2))
        r = await log.append(batch(1))
        assert r.base_offset == 2
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2]
    run(go())


def test_delete_records_advances_the_log_start_offset(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        for _ in range(3):
            await log.append(batch(2))
        assert await log.delete_records_before(3) == 3
        assert log.log_start_offset == 3
        assert await log.delete_records_before(1) == 3  # never moves back
        with pytest.raises(OffsetOutOfRange):
            await log.read(2, 100)
        assert offsets_of((await log.read(3, 1 << 20)).chunks) == [2, 3, 4, 5]  # whole batch holding 3
        assert (await log.offset_for_timestamp(0)).offset == 3
        with pytest.raises(OffsetOutOfRange):
            await log.delete_records_before(7)
        assert await log.delete_records_before(6) == 6
        assert (await log.read(6, 100)).chunks == []
        assert log.size_bytes == 0
        assert (await log.append(batch(1))).base_offset == 6
    run(go())


def test_engine_manages_logs(engine: StorageEngine) -> None:
    async def go() -> None:
        a = await engine.open_log("a", 0)
        assert await engine.open_log("a", 0) is a
        await engine.open_log("b", 2)
        assert engine.partitions() == [("a", 0), ("b", 2)]
        await engine.delete_log("a", 0)
        await engine.delete_log("zzz", 9)
        assert engine.partitions() == [("b", 2)]
        fresh = await engine.open_log("a", 0)
        assert fresh.log_end_offset == 0
        await engine.close()
    run(go())


def test_a_bad_batch_appends_nothing(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        good = batch(2)
        with pytest.raises(TruncatedBatchError):
            await log.append(good + good[:20])
        assert log.log_end_offset == 0
    run(go())


def test_unknown_urls_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown storage URL"):
        open_engine("s3://bucket")


# Retention: each batch in its own file segment (segment.bytes below one batch), so both engines see the
# same units; the newest batch stays (the file engine never deletes its active segment).
ONE_BATCH_PER_SEGMENT = 100


def test_retention_ms_deletes_old_batches_and_moves_the_log_start(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT, "retention.ms": 1000})
        for ts in (1000, 2000, 3000):
            await log.append(batch(2, ts=ts))  # largest timestamps 1001, 2001, 3001
        await log.append(batch(2, ts=9000))
        size = log.size_bytes
        assert not (await log.apply_retention(now_ms=2001)).deleted
        result = await log.apply_retention(now_ms=3002)
        assert [d.reason for d in result.deleted] == ["retention.ms", "retention.ms"]
        assert result.log_start_offset == log.log_start_offset == 4
        assert log.size_bytes == size // 2
        with pytest.raises(OffsetOutOfRange):
            await log.read(3, 1 << 20)
        assert offsets_of((await log.read(4, 1 << 20)).chunks) == [4, 5, 6, 7]
    run(go())


def test_retention_bytes_keeps_at_least_that_many_bytes(engine: StorageEngine) -> None:
    async def go() -> None:
        one = len(batch(2))
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT, "retention.ms": -1,
                                             "retention.bytes": 2 * one})
        for _ in range(5):
            await log.append(batch(2))
        result = await log.apply_retention(now_ms=10_000)
        assert [d.reason for d in result.deleted] == ["retention.bytes"] * 3
        assert (log.log_start_offset, log.size_bytes) == (6, 2 * one)
        assert not (await log.apply_retention(now_ms=10_000)).deleted
    run(go())
