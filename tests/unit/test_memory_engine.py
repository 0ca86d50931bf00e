"""The memory engine frees what is deleted, honours retention and DeleteRecords, and keeps to memory.max.bytes.

Memory is measured with tracemalloc on the engine's own allocations (bytes objects cannot be weakly
referenced), never with the process RSS; `tests/compat/test_memory_engine.py` checks the RSS of a real
broker.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from protocol.errors import ErrorCode, KafkaError
from protocol.records import Record, build_batch
from storage.interface import MEMORY_MAX_BYTES_SETTING, OffsetOutOfRange, open_engine
from storage.memory import MemoryEngine, MemoryLimitExceeded

MIB = 1 << 20


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def batch(n: int = 1, ts: int = 1000, value_size: int = 10) -> bytearray:
    return build_batch([Record(i, ts + i, b"k", bytes(value_size)) for i in range(n)])


def big_batch(size: int = 256 * 1024) -> bytearray:
    return batch(1, value_size=size)


@pytest.fixture
def traced() -> Iterator[None]:
    """Trace allocations with the cyclic GC off, as between two of its rare full collections: memory
    freed here is freed by reference counting, at once."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


def traced_bytes() -> int:
    return tracemalloc.get_traced_memory()[0]


class Holder:
    """A reference cycle holding a log, as the cluster's Topic and Partition objects form one."""

    def __init__(self, plog: Any) -> None:
        self.log = plog
        self.me = self


def test_deleting_a_log_frees_its_batches_even_while_a_cycle_still_holds_the_log(traced: None) -> None:
    async def go() -> None:
        engine = MemoryEngine()
        before = traced_bytes()
        plog = await engine.open_log("t", 0)
        for _ in range(40):
            await plog.append(big_batch())
        held = traced_bytes() - before
        assert held >= 10 * MIB, f"40 batches of 256 KiB should be traced, got {held} bytes"
        holder = Holder(plog)  # what kept every deleted topic's data alive before the fix
        del plog
        await engine.delete_log("t", 0)
        left = traced_bytes() - before
        assert left < MIB, f"{left} bytes still held after delete_log (of {held})"
        assert engine.held_bytes == 0 and holder.log.size_bytes == 0
        assert engine.partitions() == []
    run(go())


def test_a_deleted_log_refuses_appends_and_reads_nothing() -> None:
    async def go() -> None:
        engine = MemoryEngine()
        plog = await engine.open_log("t", 0)
        await plog.append(batch(3))
        await engine.delete_log("t", 0)
        with pytest.raises(KafkaError) as info:
            await plog.append(batch(1))
        assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert (await plog.read(0, MIB)).chunks == []
        assert engine.held_bytes == 0
        fresh = await engine.open_log("t", 0)  # the same name again starts empty
        assert fresh is not plog and fresh.log_end_offset == 0
    run(go())


def test_closing_the_engine_frees_every_log(traced: None) -> None:
    async def go() -> None:
        engine = MemoryEngine()
        before = traced_bytes()
        logs = [await engine.open_log("t", p) for p in range(3)]
        for plog in logs:
            for _ in range(8):
                await plog.append(big_batch())
        await engine.close()
        assert traced_bytes() - before < MIB
        assert engine.held_bytes == 0
    run(go())


def test_appended_batches_are_copies_not_views_of_the_request_frame(traced: None) -> None:
    """A stored view into a 1 MiB request frame would keep the whole frame alive."""
    async def go() -> None:
        engine = MemoryEngine()
        plog = await engine.open_log("t", 0)
        small = batch(1)
        frame = bytearray(MIB) + small  # the batch at the end of a big request frame
        before = traced_bytes()
        await plog.append(memoryview(frame)[MIB:])
        del frame
        assert traced_bytes() - before < 64 * 1024
        assert (await plog.read(0, MIB)).size == len(small)
    run(go())


def test_a_large_batch_that_is_nearly_its_whole_frame_is_kept_without_a_copy(traced: None) -> None:
    """Copying a 16 MiB batch would hold the event loop for milliseconds; keeping its frame wastes only
    the request's few other bytes."""
    async def go() -> None:
        engine = MemoryEngine()
        plog = await engine.open_log("t", 0)
        big = big_batch(4 * MIB)
        frame = bytearray(100) + big  # a Produce request: a short header, then the batch
        before = traced_bytes()
        await plog.append(memoryview(frame)[100:])
        assert traced_bytes() - before < 64 * 1024  # no copy made
        frame[100 + 20] ^= 0xFF  # (a test's peek: the stored batch is the frame's bytes)
        stored = (await plog.read(0, 8 * MIB)).chunks[0]
        assert len(stored) == len(big) and stored[20] == frame[120]
        assert engine.held_bytes == len(big)
    run(go())


def test_delete_records_frees_whole_batches_below_the_new_start(traced: None) -> None:
    async def go() -> None:
        engine = MemoryEngine()
        plog = await engine.open_log("t", 0)
        for _ in range(20):
            await plog.append(big_batch())
        await plog.append(batch(4))  # offsets 20-23
        base = traced_bytes()
        assert await plog.delete_records_before(22) == 22
        assert base - traced_bytes() >= 20 * 256 * 1024, "the 20 big batches below offset 22 were not freed"
        # The batch straddling the new start stays whole, as Kafka keeps its segment.
        assert plog.size_bytes == len(batch(4)) == engine.held_bytes
        read = await plog.read(22, MIB)
        assert read.size == len(batch(4)) and read.log_start_offset == 22
        with pytest.raises(OffsetOutOfRange):
            await plog.read(21, MIB)
    run(go())


def test_truncation_releases_the_tail() -> None:
    async def go() -> None:
        engine = MemoryEngine()
        plog = await engine.open_log("t", 0)
        for _ in range(3):
            await plog.append(batch(2))
        await plog.truncate_to(2)
        assert plog.size_bytes == engine.held_bytes == len(batch(2))
    run(go())


def retention_log(config: dict[str, Any], clock: Any = None) -> tuple[MemoryEngine, Any]:
    engine = MemoryEngine(clock=clock)
    return engine, run(engine.open_log("t", 0, config))


def test_retention_ms_drops_batches_by_their_largest_timestamp() -> None:
    engine, plog = retention_log({"retention.ms": 1000})

    async def go() -> None:
        for ts in (1000, 2000, 3000):
            await plog.append(batch(2, ts=ts))  # max timestamps 1001, 2001, 3001
        assert (await plog.apply_retention(now_ms=2001)).deleted == ()  # 1000 ms old: not yet more than
        result = await plog.apply_retention(now_ms=3002)  # 2001 and 1001 are now older than 1000 ms
        assert [(d.base_offset, d.next_offset, d.reason) for d in result.deleted] == [
            (0, 2, "retention.ms"), (2, 4, "retention.ms")]
        assert result.log_start_offset == plog.log_start_offset == 4
        assert plog.size_bytes == engine.held_bytes == len(batch(2))
        with pytest.raises(OffsetOutOfRange):
            await plog.read(3, MIB)
    run(go())


def test_retention_ms_can_empty_the_log_and_offsets_continue() -> None:
    """Kafka rolls and deletes the active segment too once it has expired: the log start becomes the end."""
    engine, plog = retention_log({"retention.ms": 10})

    async def go() -> None:
        await plog.append(batch(3, ts=1000))
        await plog.apply_retention(now_ms=5000)
        assert (plog.log_start_offset, plog.log_end_offset, plog.size_bytes, engine.held_bytes) == (3, 3, 0, 0)
        assert (await plog.read(3, MIB)).chunks == []
        assert (await plog.append(batch(1))).base_offset == 3
    run(go())


def test_retention_ms_of_a_batch_without_timestamps_counts_from_its_append() -> None:
    now = [50_000]
    _, plog = retention_log({"retention.ms": 1000}, clock=lambda: now[0])

    async def go() -> None:
        await plog.append(build_batch([Record(0, -1, b"k", b"v")]))  # max timestamp -1
        assert (await plog.apply_retention()).deleted == ()
        now[0] += 1001
        assert [d.reason for d in (await plog.apply_retention()).deleted] == ["retention.ms"]
    run(go())


def test_retention_bytes_keeps_at_least_that_many_bytes() -> None:
    size = len(batch(1))
    engine, plog = retention_log({"retention.bytes": 2 * size + 1})

    async def go() -> None:
        for _ in range(5):
            await plog.append(batch(1))
        result = await plog.apply_retention(now_ms=2000)
        # Dropping a third batch would leave 2 * size < retention.bytes, so three batches stay.
        assert [d.reason for d in result.deleted] == ["retention.bytes"] * 2
        assert (plog.log_start_offset, plog.size_bytes, engine.held_bytes) == (2, 3 * size, 3 * size)
    run(go())


def test_retention_follows_altered_configs_and_skips_compacted_topics() -> None:
    configs: dict[str, Any] = {"retention.ms": 10, "cleanup.policy": "compact"}
    plog = run(MemoryEngine().open_log("t", 0, configs.get))  # a callable, looked up on each check

    async def go() -> None:
        await plog.append(batch(1, ts=1000))
        assert (await plog.apply_retention(now_ms=99_999)).deleted == ()
        configs["cleanup.policy"] = "compact,delete"
        assert len((await plog.apply_retention(now_ms=99_999)).deleted) == 1
    run(go())


def test_default_retention_is_kafkas_seven_days() -> None:
    _, plog = retention_log({})
    day = 86_400_000

    async def go() -> None:
        await plog.append(batch(1, ts=0))
        assert (await plog.apply_retention(now_ms=7 * day)).deleted == ()
        assert len((await plog.apply_retention(now_ms=7 * day + 1)).deleted) == 1
    run(go())


def test_the_bound_refuses_an_append_with_a_retriable_storage_error_naming_the_setting() -> None:
    size = len(big_batch())
    engine = open_engine("memory://", memory_max_bytes=2 * size + 100)

    async def go() -> None:
        a = await engine.open_log("a", 0)
        b = await engine.open_log("b", 0)
        await a.append(big_batch())
        await b.append(big_batch())  # the bound counts every log together
        with pytest.raises(MemoryLimitExceeded) as info:
            await a.append(big_batch())
        assert info.value.code == ErrorCode.KAFKA_STORAGE_ERROR
        assert f"{MEMORY_MAX_BYTES_SETTING}={2 * size + 100}" in info.value.message
        assert "a-0" in info.value.message
        # Nothing of the refused append was kept, and freeing makes room again.
        assert (a.log_end_offset, a.size_bytes) == (1, size)
        await engine.delete_log("b", 0)
        assert (await a.append(big_batch())).base_offset == 1
        await a.delete_records_before(2)
        assert engine.held_bytes == 0  # type: ignore[attr-defined]
        await a.append(batch(1) + big_batch())  # several batches in one append fit together
    run(go())


def test_a_refused_append_of_several_batches_appends_none() -> None:
    size = len(batch(1))
    engine = MemoryEngine(max_bytes=size)

    async def go() -> None:
        plog = await engine.open_log("t", 0)
        with pytest.raises(MemoryLimitExceeded):
            await plog.append(batch(1) + batch(1))
        assert (plog.log_end_offset, plog.size_bytes, engine.held_bytes) == (0, 0, 0)
        await plog.append(batch(1))
        assert engine.held_bytes == size
    run(go())


def test_unbounded_by_default() -> None:
    assert MemoryEngine().budget.max_bytes == -1
    assert open_engine("memory://").budget.max_bytes == -1  # type: ignore[attr-defined]
