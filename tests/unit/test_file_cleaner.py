"""Log compaction in the file engine (`FileLog.clean`, storage.file.cleaner), through the engine.

Kafka's rules checked here: the latest record per key survives with its offset, batches keep their
offset range, reads of removed offsets get the next batch, tombstones last delete.retention.ms after
the round that cleaned them (KIP-534), min/max.compaction.lag.ms and min.cleanable.dirty.ratio decide
what and when, codecs are kept, the active segment is never touched. Crash safety: a crash injected
at every file system step of a round, then recovery, leaves every rewritten group exactly as it was
before or after the round, and the next round finishes the job.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.records import Compression, Record, RecordBatch, TimestampType, build_batch, iter_batches
from storage.compaction import CleanResult
from storage.file import FileEngine, FileLog, FileSystem, StorageError, cleaner
from storage.file.checkpoint import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_CHECKPOINT, parse_checkpoint
from storage.file.cleaner import CLEANER_OFFSET_CHECKPOINT
from tests.unit.test_file_engine import expected_indexes, file_batches, records_of, run, segment_files
from tests.waiting import wait_until_async

NOW = 1_700_000_000_000
DAY = 86_400_000
COMPACT = {"cleanup.policy": "compact", "segment.bytes": 400, "index.interval.bytes": 100}

Rec = tuple[bytes | None, bytes | None]  # (key, value)


def keyed_batch(items: Iterable[Rec], ts: int = 1000, compression: int = Compression.NONE,
                timestamp_type: int = TimestampType.CREATE_TIME) -> bytearray:
    return build_batch([Record(i, ts + i, k, v) for i, (k, v) in enumerate(items)], compression=compression,
                       timestamp_type=timestamp_type, producer_id=7, producer_epoch=1, base_sequence=0)


async def open_log(path: Path, config: dict[str, Any] | None = None, fs: Any = None,
                   clock: Callable[[], int] | None = None) -> tuple[FileEngine, FileLog]:
    engine = FileEngine(path, fs=fs, clock=clock or (lambda: NOW))
    return engine, await engine.open_log("t", 0, dict(COMPACT if config is None else config))


async def fill(log: FileLog, batches: Iterable[list[Rec]], ts: int = 1000, **kwargs: Any) -> None:
    for i, items in enumerate(batches):
        await log.append(keyed_batch(items, ts + 10 * i, **kwargs))


async def read_all(log: FileLog, start: int | None = None) -> list[Record]:
    offset = log.log_start_offset if start is None else start
    return records_of((await log.read(offset, 1 << 24)).chunks)


async def read_batches(log: FileLog) -> list[RecordBatch]:
    data = b"".join(bytes(c) for c in (await log.read(log.log_start_offset, 1 << 24)).chunks)
    return [b for _, b in iter_batches(memoryview(data))]


def views(records: Iterable[Record]) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for r in records]


def latest_per_key(records: list[Record], end_offset: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """Kafka's outcome of a first round cleaning below `end_offset` (no tombstone expired yet)."""
    last: dict[bytes, int] = {}
    for r in records:
        if r.offset < end_offset and r.key is not None:
            last[r.key] = r.offset
    return views(r for r in records if r.offset >= end_offset or r.key is None or last[r.key] == r.offset)


def workload(batches: int = 24, per_batch: int = 3, keys: int = 5) -> list[list[Rec]]:
    out, n = [], 0
    for _ in range(batches):
        items = []
        for _ in range(per_batch):
            items.append((b"key-%d" % (n * 7 % keys), b"value-%d" % n))
            n += 1
        out.append(items)
    return out


# --- what is kept --------------------------------------------------------------------------------------


def test_the_latest_value_of_each_key_survives_with_its_original_offset(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        before = await read_all(log)
        original = {(b.base_offset, b.last_offset) for b in await read_batches(log)}
        active_base = log.segments[-1].base_offset
        assert len(log.segments) >= 4
        result = await log.clean()
        assert isinstance(result, CleanResult) and not result.aborted
        assert result.first_dirty_offset == 0 and result.end_offset == active_base
        assert result.records_removed > 0 and result.bytes_after < result.bytes_before
        after = await read_all(log)
        assert views(after) == latest_per_key(before, active_base)
        assert result.records_removed == len(before) - len(after)
        # Batches keep their base offset and offset range (Kafka's v2 rule), whatever they lost.
        for b in await read_batches(log):
            assert (b.base_offset, b.last_offset) in original
            assert (b.producer_id, b.producer_epoch, b.base_sequence) == (7, 1, 0)
            assert b.validate_crc()
        assert log.log_end_offset == 72 and log.log_start_offset == 0
        await engine.close()
        # A restart (clean shutdown) serves the same records; the checkpoint is Kafka's file.
        engine, log = await open_log(tmp_path)
        assert views(await read_all(log)) == views(after)
        assert parse_checkpoint((tmp_path / CLEANER_OFFSET_CHECKPOINT).read_bytes()) == {("t", 0): active_base}
        assert await log.clean() is None  # nothing dirty since
        await engine.close()
    run(go())


def test_the_active_segment_is_never_cleaned(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "segment.bytes": 10_000})
        await fill(log, [[(b"k", b"v%d" % i)] for i in range(20)])
        assert len(log.segments) == 1
        assert await log.clean() is None
        assert len(await read_all(log)) == 20
        await engine.close()
    run(go())


def test_a_log_without_compact_in_its_policy_is_not_cleaned(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "cleanup.policy": "delete"})
        await fill(log, workload())
        assert await log.clean() is None
        assert len(await read_all(log)) == 72
        assert not (tmp_path / CLEANER_OFFSET_CHECKPOINT).exists()
        await engine.close()
    run(go())


def test_compact_and_delete_cleans_and_still_applies_retention(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "cleanup.policy": "compact,delete", "retention.ms": DAY})
        await fill(log, workload(), ts=NOW - 2 * DAY)
        await fill(log, workload(6), ts=NOW)
        result = await log.clean()
        assert result is not None and result.records_removed > 0
        kept = await read_all(log)
        retention = await log.apply_retention()
        assert retention.deleted and retention.log_start_offset > 0
        assert views(await read_all(log)) == [v for v in views(kept) if v[0] >= retention.log_start_offset]
        await engine.close()
    run(go())


def test_reads_of_removed_offsets_return_the_next_batch(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        await log.clean()
        batches = await read_batches(log)
        kept = {r.offset for r in await read_all(log)}
        assert len(kept) < log.log_end_offset
        for offset in range(log.log_end_offset):
            got = await log.read(offset, 1)  # min_one_batch: the first batch holding `offset` or later
            first = next(b for _, b in iter_batches(memoryview(bytes(got.chunks[0]))))
            expected = next(b for b in batches if b.last_offset >= offset)
            assert (first.base_offset, first.last_offset) == (expected.base_offset, expected.last_offset)
            # The batch may start before `offset` (clients skip those records), never after the next kept one.
            got_offsets = [r.offset for r in await read_all(log, offset) if r.offset >= offset]
            assert got_offsets[:1] == [min(o for o in kept if o >= offset)]
        await engine.close()
    run(go())


def test_keyless_records_do_not_stop_the_cleaner_and_are_kept(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        items = [[(b"k%d" % (i % 2), b"v%d" % i), (None, b"loose-%d" % i), (None, None)] for i in range(24)]
        await fill(log, items)
        before = await read_all(log)
        result = await log.clean()
        assert result is not None and result.keyless_records > 0
        after = await read_all(log)
        assert views(after) == latest_per_key(before, result.end_offset)
        assert sum(1 for r in after if r.key is None) == sum(1 for r in before if r.key is None)
        await engine.close()
    run(go())


@pytest.mark.parametrize("codec", list(Compression))
def test_rewritten_batches_keep_their_codec(tmp_path: Path, codec: Compression) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "segment.bytes": 600})
        await fill(log, workload(30, 4, 6), compression=codec)
        before = await read_all(log)
        result = await log.clean()
        assert result is not None and result.records_removed > 0
        after = await read_all(log)
        assert views(after) == latest_per_key(before, result.end_offset)
        batches = await read_batches(log)
        assert all(b.compression == (codec if b.record_count else Compression.NONE) for b in batches)
        # Timestamps and headers of the kept records come back as written.
        by_offset = {r.offset: r for r in before}
        assert all(by_offset[r.offset] == r for r in after)
        await engine.close()
    run(go())


def test_log_append_time_batches_keep_their_timestamps(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        for i, items in enumerate(workload()):
            await log.append(keyed_batch(items, timestamp_type=TimestampType.LOG_APPEND_TIME),
                             log_append_time=5000 + i)
        before = {r.offset: r for r in await read_all(log)}
        await log.clean()
        after = await read_all(log)
        assert all(before[r.offset] == r for r in after)
        assert all(b.timestamp_type == TimestampType.LOG_APPEND_TIME for b in await read_batches(log))
        await engine.close()
    run(go())


# --- tombstones (KIP-534) --------------------------------------------------------------------------------


def test_tombstones_stay_delete_retention_ms_after_the_round_that_cleaned_them(tmp_path: Path) -> None:
    retention = 50_000
    clock = [NOW]
    config = {**COMPACT, "delete.retention.ms": retention, "min.cleanable.dirty.ratio": 0.01}

    async def more(log: FileLog, tag: int) -> None:  # new dirty data (other keys) so that a round is due
        await fill(log, [[(b"other-%d-%d" % (tag, i), b"x")] for i in range(8)])

    async def go() -> None:
        engine, log = await open_log(tmp_path, config, clock=lambda: clock[0])
        await fill(log, [[(b"gone", b"v1"), (b"stays", b"s1")], [(b"gone", None)]])
        await more(log, 0)
        tombstone_offset = 2
        await log.clean()
        tombstones = [r for r in await read_all(log) if r.key == b"gone"]
        assert views(tombstones) == [(tombstone_offset, b"gone", None)]  # the value went, the tombstone stays
        marked = [b for b in await read_batches(log) if b.base_offset <= tombstone_offset <= b.last_offset]
        assert marked[0].delete_horizon_ms == NOW + retention
        await engine.close()
        # The horizon is in the batch: it survives a restart.
        engine, log = await open_log(tmp_path, config, clock=lambda: clock[0])
        clock[0] = NOW + retention - 1
        await more(log, 1)
        assert (await log.clean()) is not None
        assert any(r.key == b"gone" for r in await read_all(log))
        clock[0] = NOW + retention
        await more(log, 2)
        result = await log.clean()
        assert result is not None and result.tombstones_removed == 1
        after = await read_all(log)
        assert not any(r.key == b"gone" for r in after)
        assert [r.value for r in after if r.key == b"stays"] == [b"s1"]
        await engine.close()
    run(go())


# --- when a log is due -----------------------------------------------------------------------------------


def test_the_dirty_ratio_decides_whether_a_log_is_cleaned(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "min.cleanable.dirty.ratio": 0.5})
        await fill(log, [[(b"k%d" % i, b"v" * 40)] for i in range(40)])  # unique keys: nothing to remove
        first = await log.clean()
        assert first is not None and first.cleanable_ratio == 1.0 and first.segments_written == 0
        clean_end = first.end_offset
        clean_bytes = sum(s.size for s in log.segments if s.base_offset < clean_end)
        below = 0
        while True:
            await fill(log, [[(b"k0", b"w" * 40)]])
            dirty = sum(s.size for s in log.segments[:-1] if s.base_offset >= clean_end)
            ratio = dirty / (clean_bytes + dirty)
            if ratio <= 0.5:
                below += dirty > 0
                assert await log.clean() is None, ratio
                continue
            result = await log.clean()
            assert result is not None and result.first_dirty_offset == clean_end
            assert result.cleanable_ratio == pytest.approx(ratio)
            break
        assert below > 0
        values = [r.value for r in await read_all(log) if r.key == b"k0"]
        assert values[0] == b"w" * 40 and len(values) < 5
        await engine.close()
    run(go())


def test_min_compaction_lag_keeps_young_segments_uncleaned(tmp_path: Path) -> None:
    lag = 60_000

    async def go() -> None:
        engine, log = await open_log(tmp_path, {**COMPACT, "min.compaction.lag.ms": lag})
        old = [[(b"k%d" % (i % 2), b"old-%d" % i)] for i in range(12)]
        young = [[(b"k%d" % (i % 2), b"young-%d" % i)] for i in range(12)]
        await fill(log, old, ts=NOW - 2 * lag)
        await fill(log, young, ts=NOW - lag // 2)
        before = await read_all(log)
        first_young = next(r.offset for r in before if r.value.startswith(b"young"))
        result = await log.clean()
        assert result is not None
        # Cleaning stops at the first segment holding a record younger than the lag.
        assert 0 < result.end_offset <= first_young
        after = await read_all(log)
        assert [v for v in views(after) if v[0] >= result.end_offset] == \
            [v for v in views(before) if v[0] >= result.end_offset]
        assert views(after) == latest_per_key(before, result.end_offset)
        # Once old enough, the rest is cleaned too (a later round, as time passes).
        assert await log.clean(NOW + lag) is not None
        assert sum(1 for r in await read_all(log) if r.value.startswith(b"young")) < len(young)
        await engine.close()
    run(go())


def test_max_compaction_lag_forces_a_clean_below_the_ratio(tmp_path: Path) -> None:
    async def go() -> None:
        config = {**COMPACT, "min.cleanable.dirty.ratio": 0.99, "max.compaction.lag.ms": 1000}
        engine, log = await open_log(tmp_path, config)
        await fill(log, [[(b"k%d" % i, b"v" * 40)] for i in range(30)], ts=NOW - 800)
        assert (await log.clean()) is not None  # everything dirty: ratio 1.0
        await fill(log, [[(b"k1", b"new" * 20)] for _ in range(8)], ts=NOW - 500)
        assert await log.clean() is None  # small dirty part, young: neither rule
        forced = await log.clean(NOW + 2000)  # the dirty part's first batch is now older than the lag
        assert forced is not None and forced.forced and forced.cleanable_ratio < 0.99
        assert [r.value for r in await read_all(log) if r.key == b"k1"][:1] == [b"new" * 20]
        await engine.close()
    run(go())


# --- files: indexes, grouping, checkpoint -------------------------------------------------------------


def test_indexes_of_rewritten_segments_follow_kafkas_rule(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload(40))
        before = await read_all(log)
        await log.clean()
        await fill(log, workload(10))
        await log.clean()  # second round: small rewritten segments are grouped together
        after = await read_all(log)
        await engine.close()
        directory = tmp_path / "t-0"
        for name in segment_files(directory)[:-1]:
            batches = file_batches(directory / name)
            base = int(name[:20])
            index, time_index = expected_indexes(batches, base, COMPACT["index.interval.bytes"])
            assert (directory / (name[:20] + ".index")).read_bytes() == index, name
            assert (directory / (name[:20] + ".timeindex")).read_bytes() == time_index, name
        assert not [n for n in os.listdir(directory) if n.endswith((".cleaned", ".swap", ".deleted"))]
        # Lookups through the indexes agree with a scan, after a restart too.
        engine, log = await open_log(tmp_path)
        assert views(await read_all(log)) == views(after)
        for ts in sorted({r.timestamp for r in before}):
            found = await log.offset_for_timestamp(ts)
            candidates = [r for r in after if r.timestamp >= ts]
            expected = min(candidates, key=lambda r: r.offset) if candidates else None
            assert (found and (found.offset, found.timestamp)) == \
                (expected and (expected.offset, expected.timestamp)), ts
        await engine.close()
    run(go())


def test_small_segments_are_grouped_up_to_segment_bytes(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, [[(b"same", b"v%d" % i)] for i in range(60)])
        first = await log.clean()
        assert first is not None and first.segments_written == first.segments_replaced  # one group each
        counts = len(log.segments)
        await fill(log, [[(b"same", b"w%d" % i)] for i in range(12)])
        second = await log.clean()
        assert second is not None and second.segments_written < second.segments_replaced
        assert len(log.segments) < counts + 2
        closed = log.segments[:-1]
        assert all(s.size <= COMPACT["segment.bytes"] for s in closed)
        values = [r.value for r in await read_all(log)]
        assert values[-1] == b"w11"
        await engine.close()
    run(go())


def test_groups_that_would_not_change_are_not_rewritten(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, [[(b"k%d" % i, b"v" * 30)] for i in range(30)])
        inodes = {n: os.stat(tmp_path / "t-0" / n).st_ino for n in segment_files(tmp_path / "t-0")}
        result = await log.clean()
        assert result is not None and result.segments_written == 0 and result.end_offset > 0
        assert {n: os.stat(tmp_path / "t-0" / n).st_ino for n in segment_files(tmp_path / "t-0")} == inodes
        await engine.close()
    run(go())


def test_a_full_offset_map_ends_the_round_early_and_the_next_round_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleaner, "MAP_MEMORY_BYTES", 1)  # full after the first dirty segment

    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        before = await read_all(log)
        bases = [s.base_offset for s in log.segments]
        first = await log.clean()
        assert first is not None and first.end_offset == bases[1]
        assert views(await read_all(log)) == latest_per_key(before, bases[1])
        second = await log.clean()
        assert second is not None and second.first_dirty_offset == bases[1] and second.end_offset == bases[2]
        await engine.close()
    run(go())


def test_an_invalid_checkpoint_resets_to_the_log_start(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        await engine.close()
        (tmp_path / CLEANER_OFFSET_CHECKPOINT).write_text("0\n1\nt 0 999\n")  # past the log end
        engine, log = await open_log(tmp_path)
        result = await log.clean()
        assert result is not None and result.first_dirty_offset == 0
        await engine.close()
    run(go())


# --- concurrency -------------------------------------------------------------------------------------------


def test_reads_holding_an_old_segment_finish_on_its_files(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        old = log.segments[0]
        with old.opened() as fd:  # as a read in flight holds it
            original = os.pread(fd, old.size, 0)
            await log.clean()
            assert old not in log.segments
            assert os.pread(fd, old.size, 0) == original  # unlinked, still readable
        assert [b.base_offset for _, b in iter_batches(memoryview(original))]
        await engine.close()
    run(go())


def test_reads_during_a_clean_see_the_log_before_or_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleaner, "STEP_BYTES", 64)  # many small steps: reads and appends interleave

    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload(40))
        before = {r.offset: r for r in await read_all(log)}
        task = asyncio.create_task(log.clean())
        seen = 0
        while not task.done():
            records = await read_all(log)
            assert records and all(before[r.offset] == r for r in records if r.key != b"late")
            await log.append(keyed_batch([(b"late", b"x")]))
            seen += 1
        result = task.result()
        assert result is not None and not result.aborted and seen > 1
        late = [v[0] for v in views(await read_all(log)) if v[1] == b"late"]
        assert late == list(range(max(before) + 1, log.log_end_offset)) and len(late) == seen
        await engine.close()
    run(go())


def test_replace_segments_refuses_a_stale_swap_and_discards_it(tmp_path: Path) -> None:
    """The segment-replacement API changes nothing for a group planned before a truncation, or one that
    is no longer a run of closed segments: it runs `discard` and answers False."""
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        segments = list(log.segments)
        assert len(segments) >= 4
        before = views(await read_all(log))
        ran: list[str] = []

        def step(name: str) -> Callable[[], None]:
            return lambda: ran.append(name)

        async def attempt(group: list[Any], truncations: int) -> bool:
            return await log.replace_segments(group, object(), truncations=truncations,  # type: ignore[arg-type]
                                              commit=step("commit"), finish=step("finish"), discard=step("discard"))

        assert not await attempt(segments[:2], log.truncations + 1)  # a truncation happened since the plan
        assert not await attempt(segments[-2:], log.truncations)  # the active segment is not closed
        assert not await attempt([segments[0], segments[2]], log.truncations)  # not adjacent
        assert ran == ["discard"] * 3 and log.segments == segments
        assert views(await read_all(log)) == before
        await engine.close()
    run(go())


def test_retention_during_a_round_aborts_it_without_harm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original_drive = cleaner._drive
    fired = []

    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())

        async def drive(engine_: Any, steps: Any) -> Any:
            value = await original_drive(engine_, steps)
            if steps.gi_code.co_name == "_clean_group" and not fired:
                fired.append(True)  # the group is written; DeleteRecords removes its segment meanwhile
                await log.delete_records_before(log.segments[1].base_offset)
            return value
        monkeypatch.setattr(cleaner, "_drive", drive)
        before = await read_all(log)
        result = await log.clean()
        assert result is not None and result.aborted and fired
        assert views(await read_all(log)) == [v for v in views(before) if v[0] >= log.log_start_offset]
        assert not [n for n in os.listdir(tmp_path / "t-0") if n.endswith((".cleaned", ".swap"))]
        assert not (tmp_path / CLEANER_OFFSET_CHECKPOINT).exists()
        monkeypatch.setattr(cleaner, "_drive", original_drive)
        again = await log.clean()
        assert again is not None and not again.aborted
        await engine.close()
    run(go())


@pytest.mark.parametrize("pauses", [1, 4, 12, 40])
def test_closing_the_engine_during_a_round_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        pauses: int) -> None:
    monkeypatch.setattr(cleaner, "STEP_BYTES", 64)

    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload(40))
        before = views(await read_all(log))
        task = asyncio.create_task(log.clean())
        for _ in range(pauses):
            await asyncio.sleep(0)
        await engine.close()
        try:
            await task
        except StorageError:
            pass  # the engine's threads stopped under the round
        engine, log = await open_log(tmp_path)
        records = views(await read_all(log))
        assert set(records) <= set(before)
        assert {k: (o, v) for o, k, v in records} == {k: (o, v) for o, k, v in before}
        assert not [n for n in os.listdir(tmp_path / "t-0") if n.endswith((".cleaned", ".swap"))]
        assert await log.clean() is not None
        await engine.close()
    run(go())


def test_truncation_into_a_compaction_gap_survives_a_restart(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await open_log(tmp_path)
        await fill(log, workload())
        await log.clean()
        covered = {o for b in await read_batches(log) for o in range(b.base_offset, b.last_offset + 1)}
        gap = next(o for o in range(4, log.log_end_offset) if o not in covered)  # a batch that went whole
        await log.truncate_to(gap)
        assert log.log_end_offset == gap
        await fill(log, [[(b"new", b"n")]])
        expected = views(await read_all(log))
        assert expected[-1] == (gap, b"new", b"n")
        engine.simulate_crash()
        (tmp_path / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
        (tmp_path / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)  # recover every segment
        engine, log = await open_log(tmp_path)
        assert views(await read_all(log)) == expected
        await engine.close()
    run(go())


# --- crash safety ------------------------------------------------------------------------------------------


class CrashingFileSystem(FileSystem):
    """Counts the steps (calls that open or change files) once armed; at step `crash_at` the process
    "dies": that call and every later one fails (closing descriptors aside), so the files stay exactly
    as they were at that step, page cache included."""

    STEPS = frozenset({"open", "pwrite", "fsync", "fdatasync", "ftruncate", "replace", "unlink", "mkdir", "rmdir"})

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.armed = False
        self.dead = False
        self.steps: list[tuple[str, str]] = []

    def _check(self, op: str, path: str = "") -> None:
        if self.dead:
            raise OSError(errno.EIO, "dead", path)
        if self.armed and op in self.STEPS:
            self.steps.append((op, os.path.basename(path)))
            if self.crash_at is not None and len(self.steps) >= self.crash_at:
                self.dead = True
                raise OSError(errno.EIO, "crash", path)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self._check("open", path)
        return super().open(path, flags, mode)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._check("pread")
        return super().pread(fd, size, offset)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self._check("pwrite")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._check("fsync")
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._check("fdatasync")
        super().fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self._check("ftruncate")
        super().ftruncate(fd, size)

    def fstat(self, fd: int) -> os.stat_result:
        self._check("fstat")
        return super().fstat(fd)

    def stat(self, path: str) -> os.stat_result:
        self._check("stat", path)
        return super().stat(path)

    def replace(self, src: str, dst: str) -> None:
        self._check("replace", dst)
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._check("unlink", path)
        super().unlink(path)

    def listdir(self, path: str) -> list[str]:
        self._check("listdir", path)
        return super().listdir(path)


async def settle(engine: FileEngine) -> None:
    """Wait until the tasks spawned by opening (checkpoint writes after a recovery) are done: the test's
    own task is the only one left, and the I/O queued before now has run."""
    this = asyncio.current_task()
    await wait_until_async(lambda: asyncio.all_tasks() == {this}, 10, "the engine's background tasks finishing",
                           lambda: f"tasks {asyncio.all_tasks() - {this}}", interval=0.001)
    await engine.run_io(lambda: None)


def crash_config() -> dict[str, Any]:
    return {**COMPACT, "segment.bytes": 700, "delete.retention.ms": 1000, "min.cleanable.dirty.ratio": 0.01}


def build_pristine(path: Path, *, merging: bool = False) -> None:
    """A compacted log ready for a round; `merging`: cleaned once already, so the round's groups
    merge several small segments."""
    async def go() -> None:
        engine, log = await open_log(path, crash_config(), clock=lambda: NOW)
        items = workload(30, 3, 6)
        items[5].append((b"key-1", None))  # a tombstone, marked with a horizon by the round
        await fill(log, items)
        if merging:
            await log.clean(NOW - 10_000)
            await fill(log, workload(12, 3, 6), ts=5000)
        await engine.close()
    run(go())


def clean_once(path: Path, fs: FileSystem | None = None) -> tuple[
        list[tuple[int, bytes | None, bytes | None]], list[int], CleanResult | None]:
    """Open (recovering), clean, read; (records, base offsets of the segments, result)."""
    async def go() -> Any:
        engine, log = await open_log(path, crash_config(), fs=fs)
        await settle(engine)
        if isinstance(fs, CrashingFileSystem):
            fs.armed = True
        try:
            result = await log.clean(NOW)
        except StorageError:
            result = None
        if isinstance(fs, CrashingFileSystem) and fs.dead:
            engine.simulate_crash()
            return None, None, result
        records = views(await read_all(log))
        bases = [s.base_offset for s in log.segments]
        await engine.close()
        return records, bases, result
    return run(go())


def reopen_records(path: Path, *, full_scan: bool) -> list[tuple[int, bytes | None, bytes | None]]:
    (path / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
    if full_scan:
        (path / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)

    async def go() -> Any:
        engine, log = await open_log(path, crash_config())
        records = views(await read_all(log))
        await engine.close()
        return records
    return run(go())


@pytest.mark.parametrize(("merging", "full_scan"), [(False, False), (False, True), (True, True)],
                         ids=["from-recovery-point", "every-segment", "merging-groups"])
def test_a_crash_at_every_step_of_a_round_loses_nothing(tmp_path: Path, merging: bool, full_scan: bool) -> None:
    pristine = tmp_path / "pristine"
    build_pristine(pristine, merging=merging)

    before_copy = tmp_path / "before"
    shutil.copytree(pristine, before_copy)
    before = reopen_records(before_copy, full_scan=False)

    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    counter = CrashingFileSystem()
    after, bases, result = clean_once(reference, counter)
    assert result is not None and result.segments_written >= 2
    assert result.records_removed > 0
    assert merging == (result.segments_replaced > result.segments_written)
    steps = len(counter.steps)
    assert after != before
    assert {op for op, _ in counter.steps} >= {"open", "pwrite", "fsync", "replace", "unlink"}
    assert any(name.endswith(".swap") for _, name in counter.steps)
    end = max(o for o, _, _ in before) + 1
    ranges = list(zip(bases, [*bases[1:], end], strict=True))

    for crash_at in range(1, steps + 1):
        work = tmp_path / f"crash-{crash_at}"
        shutil.copytree(pristine, work)
        clean_once(work, CrashingFileSystem(crash_at))
        recovered = reopen_records(work, full_scan=full_scan)
        where = f"crash at step {crash_at}: {counter.steps[crash_at - 1]}"
        for lo, hi in ranges:
            part = [v for v in recovered if lo <= v[0] < hi]
            assert part in ([v for v in before if lo <= v[0] < hi], [v for v in after if lo <= v[0] < hi]), \
                f"{where}: offsets [{lo}, {hi})"
        assert {v[0] for v in recovered} >= {v[0] for v in after}, where
        leftovers = [n for n in os.listdir(work / "t-0") if n.endswith((".cleaned", ".swap", ".deleted", ".tmp"))]
        assert not leftovers, f"{where}: {leftovers}"
        # The next round finishes the job.
        finished, _, _ = clean_once(work)
        assert finished == after, where
        shutil.rmtree(work)


def test_recovery_deletes_cleaned_files_and_completes_swaps(tmp_path: Path) -> None:
    build_pristine(tmp_path)
    directory = tmp_path / "t-0"
    names = segment_files(directory)
    first, second, third = names[0][:20], names[1][:20], names[2][:20]
    # A rewritten segment never committed: its .cleaned files go, the old segment stays.
    (directory / f"{first}.log.cleaned").write_bytes(b"garbage")
    (directory / f"{first}.index.cleaned").write_bytes(b"")
    before = reopen_records(tmp_path, full_scan=True)
    assert not [n for n in os.listdir(directory) if ".cleaned" in n]
    # A committed one: the .swap replaces the segments its offsets cover, and keeps its name.
    merged = b"".join((directory / f"{name}.log").read_bytes() for name in (first, second))
    (directory / f"{first}.log.swap").write_bytes(merged)
    (directory / f"{first}.timeindex.swap").write_bytes(b"")
    assert reopen_records(tmp_path, full_scan=False) == before
    assert segment_files(directory)[:2] == [f"{first}.log", f"{third}.log"]
    assert not [n for n in os.listdir(directory) if ".swap" in n]


# --- property: whatever the history, the table view survives ----------------------------------------------

_append = st.tuples(st.just("append"), st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=4),
                   st.sampled_from([Compression.NONE, Compression.GZIP, Compression.ZSTD]))
_op = st.one_of(_append, _append, _append, _append, st.tuples(st.just("clean"), st.integers(0, 3000)),
                st.tuples(st.just("restart"), st.booleans()))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=10, max_size=60))
def test_any_history_keeps_the_latest_record_of_every_key(ops: list[Any]) -> None:
    """Appends (tombstones included), cleans as time passes, clean restarts and crashes in any order:
    the log serves a subset of what was appended, in offset order, and each key's last readable
    record is its last appended one -- or nothing at all, once a last tombstone has expired."""
    config = {**COMPACT, "segment.bytes": 250, "delete.retention.ms": 1000, "min.cleanable.dirty.ratio": 0.2}
    clock = [NOW]

    async def go(path: Path) -> None:
        engine, log = await open_log(path, config, clock=lambda: clock[0])
        appended: dict[int, tuple[bytes | None, bytes | None]] = {}
        last: dict[bytes, tuple[int, bytes | None]] = {}
        n = 0
        for op in ops:
            if op[0] == "append":
                items = [(b"k%d" % k, None if dead else b"v%d" % (n + i)) for i, (k, dead) in enumerate(op[1])]
                result = await log.append(keyed_batch(items, clock[0], compression=op[2]))
                for i, item in enumerate(items):
                    appended[result.base_offset + i] = item
                    last[item[0]] = (result.base_offset + i, item[1])  # type: ignore[index]
                n += len(items)
            elif op[0] == "clean":
                clock[0] += op[1]
                end = log.log_end_offset
                await log.clean()
                assert log.log_end_offset == end
            else:
                if op[1]:
                    await engine.close()
                else:
                    engine.simulate_crash()
                engine, log = await open_log(path, config, clock=lambda: clock[0])
            records = await read_all(log)
            offsets = [r.offset for r in records]
            assert offsets == sorted(set(offsets))
            assert all(appended[r.offset] == (r.key, r.value) for r in records)
            readable: dict[bytes, tuple[int, bytes | None]] = {}
            for r in records:
                readable[r.key] = (r.offset, r.value)  # type: ignore[index]
            for key, (offset, value) in last.items():
                if value is None and key not in readable:
                    continue  # an expired tombstone took the key with it
                assert readable[key] == (offset, value), key
            assert log.log_end_offset == n
        await engine.close()

    with tempfile.TemporaryDirectory() as directory:
        run(go(Path(directory)))
