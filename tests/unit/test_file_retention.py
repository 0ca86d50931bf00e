"""Retention by time and size, and DeleteRecords, in the file engine (Kafka's deleteOldSegments rules)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from storage.file import FileEngine, FileSystem
from storage.file.checkpoint import LOG_START_OFFSET_CHECKPOINT
from storage.file.retention import SegmentInfo, select_deletable
from storage.interface import OffsetOutOfRange
from tests.unit.test_file_engine import Clock, batch, offsets_of, reopen, run, segment_files
from tests.waiting import wait_until_async

SIZE = len(batch(2))
ONE_DAY = 86_400_000


def infos(*stamps: int, size: int = 100) -> list[SegmentInfo]:
    return [SegmentInfo(10 * i, 10 * (i + 1), size, ts) for i, ts in enumerate(stamps)]


def test_select_deletable_applies_kafkas_rules_in_order() -> None:
    segments = infos(100, 200, 900, 300)  # the last one is the active segment
    common = {"total_size": 400, "now_ms": 1000, "log_start_offset": 0}
    # retention.ms: a prefix older than the limit (the old segment behind a newer one stays)
    assert select_deletable(segments, retention_ms=750, retention_bytes=-1, **common) == ["retention.ms"] * 2
    assert select_deletable(segments, retention_ms=-1, retention_bytes=-1, **common) == []
    # retention.bytes: drop while what remains (active segment included) stays >= the limit
    assert select_deletable(segments, retention_ms=-1, retention_bytes=250, **common) == ["retention.bytes"]
    assert select_deletable(segments, retention_ms=-1, retention_bytes=200, **common) == ["retention.bytes"] * 2
    assert select_deletable(segments, retention_ms=-1, retention_bytes=600, **common) == []
    # then whatever closed segment lies wholly below the log start offset
    assert select_deletable(segments, retention_ms=850, retention_bytes=-1, total_size=400, now_ms=1000,
                            log_start_offset=25) == ["retention.ms", "log_start_offset"]
    assert select_deletable(segments, retention_ms=750, retention_bytes=100, **common) == [
        "retention.ms", "retention.ms", "retention.bytes"]


def test_select_deletable_takes_the_active_segment_when_it_holds_data() -> None:
    """Kafka's deletableSegments: time and size may take the active segment (the log then rolls first);
    an empty active segment never goes, and the log start offset rule needs a next segment."""
    segments = infos(100, 200, 900, 300)
    common = {"total_size": 400, "now_ms": 1000}
    assert select_deletable(segments, retention_ms=0, retention_bytes=-1, log_start_offset=0,
                            **common) == ["retention.ms"] * 4
    assert select_deletable(segments, retention_ms=-1, retention_bytes=0, log_start_offset=0,
                            **common) == ["retention.bytes"] * 4
    assert select_deletable(segments, retention_ms=-1, retention_bytes=-1, log_start_offset=40,
                            **common) == ["log_start_offset"] * 3
    empty_active = [*segments[:3], SegmentInfo(30, 30, 0, -1)]
    assert select_deletable(empty_active, retention_ms=0, retention_bytes=0, log_start_offset=0,
                            **common) == ["retention.ms"] * 3


def test_retention_ms_deletes_closed_segments_by_their_largest_timestamp(tmp_path: Path) -> None:
    clock = Clock(10 * ONE_DAY)
    config = {"segment.bytes": 2 * SIZE, "retention.ms": ONE_DAY}

    async def go() -> None:
        engine = FileEngine(tmp_path, clock=clock)
        log = await engine.open_log("t", 0, config)
        for day in (1, 1, 2, 2, 8, 8, 9, 9, 9):  # segments of two batches: [1,1] [2,2] [8,8] [9,9] [9]
            await log.append(batch(2, ts=day * ONE_DAY))
        assert [s.base_offset for s in log.segments] == [0, 4, 8, 12, 16]
        result = await log.apply_retention()  # now = day 10: day 1 and 2 are past one day... and day 8
        assert [(d.base_offset, d.reason) for d in result.deleted] == [
            (0, "retention.ms"), (4, "retention.ms"), (8, "retention.ms")]
        assert result.log_start_offset == log.log_start_offset == 12
        assert result.bytes_deleted == 6 * SIZE and log.size_bytes == 3 * SIZE
        assert segment_files(tmp_path / "t-0") == ["00000000000000000012.log", "00000000000000000016.log"]
        with pytest.raises(OffsetOutOfRange):
            await log.read(11, 1000)
        assert offsets_of((await log.read(12, 1 << 20)).chunks) == list(range(12, 18))
        # the active segment goes too once it is past retention: the log rolls an empty one first
        late = await log.apply_retention(now_ms=100 * ONE_DAY)
        assert [d.base_offset for d in late.deleted] == [12, 16] and [s.base_offset for s in log.segments] == [18]
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (18, 18, 0)
        engine.simulate_crash()
        engine, log = await reopen(tmp_path, config=config)
        assert (log.log_start_offset, log.log_end_offset) == (18, 18)
        assert (await log.append(batch(1))).base_offset == 18
        await engine.close()
    run(go())


def test_segments_without_timestamps_age_by_their_file_time(tmp_path: Path) -> None:
    clock = Clock(10 * ONE_DAY)
    config = {"segment.bytes": 2 * SIZE, "retention.ms": ONE_DAY}

    async def go() -> None:
        engine = FileEngine(tmp_path, clock=clock)
        log = await engine.open_log("t", 0, config)
        for _ in range(3):
            await log.append(batch(2, ts=-1))
        first = log.segments[0].log_path
        os.utime(first, (ONE_DAY / 1000, ONE_DAY / 1000))
        result = await log.apply_retention()
        assert [d.base_offset for d in result.deleted] == [0] and log.log_start_offset == 4
        await engine.close()
    run(go())


def test_retention_bytes_keeps_the_log_at_or_above_the_limit(tmp_path: Path) -> None:
    config = {"segment.bytes": 2 * SIZE, "retention.bytes": 3 * SIZE, "retention.ms": -1}

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, config)
        for _ in range(7):
            await log.append(batch(2))
        assert [s.size for s in log.segments] == [2 * SIZE] * 3 + [SIZE]
        result = await log.apply_retention()
        assert [(d.base_offset, d.reason) for d in result.deleted] == [(0, "retention.bytes"), (4, "retention.bytes")]
        assert log.size_bytes == 3 * SIZE and log.log_start_offset == 8
        assert (await log.apply_retention()).deleted == ()
        await engine.close()
    run(go())


def test_compacted_topics_are_not_deleted_by_time_or_size(tmp_path: Path) -> None:
    config = {"segment.bytes": 2 * SIZE, "retention.bytes": 0, "retention.ms": 0, "cleanup.policy": "compact"}

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, config)
        for _ in range(5):
            await log.append(batch(2, ts=1))
        assert (await log.apply_retention()).deleted == ()
        log.config = type(log.config)({**config, "cleanup.policy": "compact,delete"})
        assert len((await log.apply_retention()).deleted) == 3  # the active segment too
        assert log.log_start_offset == log.log_end_offset == 10
        await engine.close()
    run(go())


def test_delete_records_is_persisted_before_it_returns(tmp_path: Path) -> None:
    """The new log start offset survives a crash right after DeleteRecords returns; segments wholly
    below it are deleted at once, the one holding it stays (reads start at its batch)."""
    config = {"segment.bytes": 2 * SIZE}

    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, config)
        for _ in range(5):
            await log.append(batch(2))
        assert await log.delete_records_before(5) == 5
        assert [s.base_offset for s in log.segments] == [4, 8]
        assert log.size_bytes == 3 * SIZE  # from the batch holding offset 5 (4-5)
        engine.simulate_crash()
        engine, log = await reopen(tmp_path, config=config)
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (5, 10, 3 * SIZE)
        with pytest.raises(OffsetOutOfRange):
            await log.read(4, 1000)
        assert offsets_of((await log.read(5, 1 << 20)).chunks) == [4, 5, 6, 7, 8, 9]
        found = await log.offset_for_timestamp(0)
        assert found.offset == 5
        assert await log.delete_records_before(10) == 10
        assert log.size_bytes == 0 and [s.base_offset for s in log.segments] == [8]
        assert (await log.append(batch(1))).base_offset == 10
        await engine.close()
    run(go())
    assert segment_files(tmp_path / "t-0") == ["00000000000000000008.log"]


class HeldStartCheckpoint(FileSystem):
    """Holds the first log-start-offset checkpoint write just before its rename until ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def replace(self, src: str, dst: str) -> None:
        if dst.endswith(LOG_START_OFFSET_CHECKPOINT) and not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        super().replace(src, dst)


def test_a_checkpoint_taken_while_delete_records_persists_keeps_the_new_start(tmp_path: Path) -> None:
    async def go() -> None:
        fs = HeldStartCheckpoint()
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        for _ in range(3):
            await log.append(batch(2))
        deleting = asyncio.create_task(log.delete_records_before(4))
        await wait_until_async(fs.entered.is_set, 10, "the DeleteRecords checkpoint write under way")
        # A second writer snapshots the start offsets while that write is held (its first step, which
        # runs before the release scheduled after it).
        checkpointing = asyncio.create_task(engine.checkpoint())
        asyncio.get_running_loop().call_soon(fs.release.set)
        await checkpointing
        assert await deleting == 4
        engine.simulate_crash()
        engine, log = await reopen(tmp_path)
        assert log.log_start_offset == 4
        await engine.close()
    run(go())


def test_retention_ms_empties_a_log_whose_active_segment_is_past_it(tmp_path: Path) -> None:
    """Kafka rolls the active segment when it is wholly past retention and deletes it: a topic with
    retention.ms=1000 empties within one check (log start offset = log end offset)."""
    clock = Clock(10 * ONE_DAY)
    config = {"retention.ms": 1000}

    async def go() -> None:
        engine = FileEngine(tmp_path, clock=clock)
        log = await engine.open_log("t", 0, config)
        for _ in range(3):
            await log.append(batch(2, ts=clock.now))
        assert [s.base_offset for s in log.segments] == [0]
        assert (await log.apply_retention()).deleted == ()  # not past retention yet
        clock.now += 2000
        result = await log.apply_retention()
        assert [(d.base_offset, d.reason) for d in result.deleted] == [(0, "retention.ms")]
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (6, 6, 0)
        assert segment_files(tmp_path / "t-0") == ["00000000000000000006.log"]
        assert (await log.read(6, 1000)).chunks == []
        assert (await log.apply_retention()).deleted == ()  # the empty active segment stays
        await engine.close()
        engine, log = await reopen(tmp_path, clock=clock, config=config)
        assert (log.log_start_offset, log.log_end_offset) == (6, 6)
        assert (await log.append(batch(1, ts=clock.now))).base_offset == 6
        await engine.close()
    run(go())


def test_appends_racing_retention_of_the_active_segment_are_all_kept(tmp_path: Path) -> None:
    """Appends and retention share the log's mutex: each append lands before the roll (and is deleted
    with the old data only if its own timestamp is past retention: these are fresh, so never) or after
    it in the new segment. Every fresh append stays readable at the offset it was given."""
    clock = Clock(10 * ONE_DAY)
    config = {"retention.ms": 1000}

    async def go() -> None:
        engine = FileEngine(tmp_path, clock=clock)
        log = await engine.open_log("t", 0, config)
        for _ in range(3):
            await log.append(batch(2, ts=clock.now - 5000))  # already past retention
        for round_ in range(5):
            appends = [asyncio.ensure_future(log.append(batch(1, ts=clock.now))) for _ in range(4)]
            retention = asyncio.ensure_future(log.apply_retention())
            appends += [asyncio.ensure_future(log.append(batch(1, ts=clock.now))) for _ in range(4)]
            results = await asyncio.gather(*appends)
            await retention
            for result in results:
                assert log.log_start_offset <= result.base_offset, round_
                assert offsets_of((await log.read(result.base_offset, 1)).chunks)[0] == result.base_offset
        assert log.log_end_offset == 6 + 5 * 8
        await engine.close()
    run(go())
