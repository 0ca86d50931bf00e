"""Log compaction in the memory engine (`MemoryLog.clean`): Kafka's rules, as the file engine applies them.

The file engine's cleaner is checked rule by rule in `test_file_cleaner.py` and `test_txn_cleaner.py`;
here the memory engine is held to it: the same appends and rounds, on both engines, leave the same
records at the same offsets and the same segments. Then what only the memory engine has: segments kept
for compaction alone, rounds that give the event loop back and stop when batches are dropped under them,
memory given back, and a truncation after a round.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.records import Compression, Record
from protocol.records.builder import build_batch
from protocol.records.control import build_marker
from storage.compaction import CleanResult
from storage.file import FileEngine
from storage.memory import CLEAN_STEP_BYTES, MemoryEngine, MemoryLog
from tests.unit.test_file_cleaner import DAY, NOW, Rec, fill, keyed_batch, read_all, views, workload
from tests.unit.test_file_engine import Clock, run

COMPACT = {"cleanup.policy": "compact", "segment.bytes": 400, "delete.retention.ms": DAY}



async def open_memory(config: dict[str, Any] | None = None, clock: Clock | None = None) -> MemoryLog:
    engine = MemoryEngine(clock=clock or Clock(NOW))
    log = await engine.open_log("t", 0, dict(COMPACT if config is None else config))
    assert isinstance(log, MemoryLog)
    return log




# --- the same outcome as the file engine ------------------------------------------------------------

record = st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", None]),
                   st.one_of(st.none(), st.binary(min_size=1, max_size=40)))
batches = st.lists(st.lists(record, min_size=1, max_size=6), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.sampled_from([Compression.NONE, Compression.GZIP]), st.sampled_from([250, 400, 1000]),
       st.sampled_from(["0.01", "0.5"]), st.integers(1, 3))
def test_the_memory_engine_compacts_exactly_as_the_file_engine(
        workload_: list[list[Rec]], codec: int, segment_bytes: int, ratio: str, rounds: int) -> None:
    """Same appends, same rounds (the last after delete.retention.ms, so tombstones go): the same records
    at the same offsets, the same log start and end, and the same segment base offsets before cleaning."""
    config = {"cleanup.policy": "compact", "segment.bytes": segment_bytes, "min.cleanable.dirty.ratio": ratio,
              "delete.retention.ms": DAY}

    async def go(directory: str) -> None:
        clock = Clock(NOW)
        file_engine = FileEngine(Path(directory), clock=clock)
        on_file = await file_engine.open_log("t", 0, dict(config))
        on_memory = await open_memory(config, clock)
        try:
            for log in (on_file, on_memory):
                await fill(log, workload_, compression=codec)
            assert on_memory.segment_bases == tuple(s.base_offset for s in on_file.segments)
            for round_ in range(rounds):
                clock.now = NOW + round_ * 2 * DAY  # past every horizon the previous round set
                results = [await log.clean() for log in (on_file, on_memory)]
                assert (results[0] is None) == (results[1] is None)
                if results[0] is not None:
                    assert results[0].end_offset == results[1].end_offset
                    assert results[0].records_removed == results[1].records_removed
                assert views(await read_all(on_memory)) == views(await read_all(on_file))
                for log in (on_file, on_memory):  # new dirty data, so the next round may run
                    await log.append(keyed_batch([(b"a", b"again-%d" % round_)], 5000 + round_))
            assert (on_memory.log_start_offset, on_memory.log_end_offset) == (
                on_file.log_start_offset, on_file.log_end_offset)
        finally:
            await file_engine.close()

    with tempfile.TemporaryDirectory() as directory:
        run(go(directory))


def test_transactions_compact_as_on_the_file_engine() -> None:
    """An aborted transaction's records go whatever their keys; its marker stays until the round after
    its delete horizon, then goes with its aborted-transaction entry; committed data compacts as any."""

    async def go(directory: str) -> None:
        clock = Clock(NOW)
        file_engine = FileEngine(Path(directory), clock=clock)
        logs = [await file_engine.open_log("t", 0, dict(COMPACT)), await open_memory(COMPACT, clock)]
        try:
            for log in logs:
                for pid, commit in ((11, False), (12, True)):
                    await log.append(_txn_batch(pid, [(b"x", b"txn-%d" % pid), (b"y", b"txn-%d" % pid)]))
                    await log.append(build_marker(pid, 0, commit, 0, 1100))
                await fill(log, [[(b"x", b"plain-%d" % i), (b"z", b"z" * 60)] for i in range(12)])
            for step in range(3):
                clock.now = NOW + step * 2 * DAY
                for log in logs:
                    await log.clean()
                    await log.append(keyed_batch([(b"z", b"more-%d" % step)], 9000 + step))
                assert views(await read_all(logs[1])) == views(await read_all(logs[0]))
                assert await logs[1].aborted_transactions(0, logs[1].log_end_offset) == \
                    await logs[0].aborted_transactions(0, logs[0].log_end_offset)
            assert all(r.value != b"txn-11" for r in await read_all(logs[1]))
        finally:
            await file_engine.close()

    with tempfile.TemporaryDirectory() as directory:
        run(go(directory))


def _txn_batch(producer_id: int, items: list[Rec]) -> bytearray:
    return build_batch([Record(i, 1000 + i, k, v) for i, (k, v) in enumerate(items)], producer_id=producer_id,
                       producer_epoch=0, base_sequence=0, transactional=True)


# --- what only the memory engine does ---------------------------------------------------------------


def test_segments_roll_on_segment_bytes_and_segment_ms() -> None:
    async def go() -> None:
        clock = Clock(NOW)
        log = await open_memory({"cleanup.policy": "compact", "segment.bytes": 400}, clock)
        await fill(log, workload(12))
        bases = log.segment_bases
        assert len(bases) >= 3 and bases[0] == 0
        # Retention / DeleteRecords dropping the head drops the segments it emptied.
        await log.delete_records_before(bases[1] + 1)
        assert log.segment_bases == bases[1:]

        # segment.ms counts from the active segment's first batch timestamp, as Kafka's shouldRoll does...
        timed = await open_memory({"cleanup.policy": "compact", "segment.ms": 60_000}, clock)
        for ts in (NOW, NOW + 60_000, NOW + 60_001):
            await timed.append(keyed_batch([(b"k", b"v")], ts=ts))
        assert timed.segment_bases == (0, 2)
        # ... or, when that batch carries no timestamp, from when the segment began.
        untimed = await open_memory({"cleanup.policy": "compact", "segment.ms": 60_000}, clock)
        await untimed.append(keyed_batch([(b"k", b"v")], ts=-1))
        clock.now += 60_000
        await untimed.append(keyed_batch([(b"k", b"v")], ts=-1))
        clock.now += 1
        await untimed.append(keyed_batch([(b"k", b"v")], ts=-1))
        assert untimed.segment_bases == (0, 2)

    run(go())


def test_a_round_keeps_the_latest_value_per_key_and_gives_the_memory_back() -> None:
    async def go() -> None:
        log = await open_memory()
        engine_budget = log._budget
        await fill(log, workload(40, keys=4))
        before, held = log.size_bytes, engine_budget.held
        active = log.segment_bases[-1]
        result = await log.clean()
        assert isinstance(result, CleanResult) and not result.aborted and result.end_offset == active
        assert result.records_removed > 0 and log.size_bytes < before
        assert engine_budget.held == held - (before - log.size_bytes)
        keys_below = [r.key for r in await read_all(log) if r.offset < active]
        assert len(keys_below) == len(set(keys_below))
        # The active segment is never cleaned, and a second round with nothing dirty does nothing.
        assert await log.clean() is None

    run(go())


def test_a_round_gives_the_loop_back_and_stops_when_batches_are_dropped_under_it() -> None:
    async def go() -> None:
        log = await open_memory({**COMPACT, "segment.bytes": 64 * 1024})
        big = [[(b"key-%d" % (i % 3), bytes(1000))] for i in range(3 * CLEAN_STEP_BYTES // 1000)]
        await fill(log, big)
        before = views(await read_all(log))
        steps = 0

        async def meanwhile() -> None:
            nonlocal steps
            while True:
                steps += 1
                if steps == 3:
                    await log.delete_records_before(10)
                await asyncio.sleep(0)

        other = asyncio.create_task(meanwhile())
        result = await log.clean()
        other.cancel()
        assert result is not None and result.aborted and steps >= 3
        assert views(await read_all(log)) == [v for v in before if v[0] >= 10]
        # The next round runs to the end, and appends in the meantime are kept.
        other = asyncio.create_task(log.append(keyed_batch([(b"late", b"v")])))
        result = await log.clean()
        await other
        assert result is not None and not result.aborted
        assert (await read_all(log))[-1].key == b"late"

    run(go())


def test_a_truncation_after_a_round_keeps_segments_and_checkpoint_consistent() -> None:
    async def go() -> None:
        log = await open_memory()
        await fill(log, workload(30))
        result = await log.clean()
        assert result is not None
        # Batches of 3 records keep their offsets, so multiples of 3 are batch boundaries: truncate into
        # the cleaned part, below the checkpoint.
        await log.truncate_to(result.end_offset // 3 * 3 - 9)
        assert log.segment_bases and log.segment_bases[-1] < log.log_end_offset
        await fill(log, workload(30), ts=50_000)
        again = await log.clean()
        assert again is not None and not again.aborted
        keys = [r.key for r in await read_all(log) if r.offset < again.end_offset]
        assert len(keys) == len(set(keys))

    run(go())
