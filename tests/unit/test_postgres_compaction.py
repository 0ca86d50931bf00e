"""Log compaction of PostgreSQL logs (`PostgresLog.clean`, storage.postgres.compaction) on a real server.

Kafka's rules are the shared ones (`storage.compaction`, checked rule by rule on the file engine); here
what the PostgreSQL engine adds: the newest ``segment.bytes`` (and what is younger than ``segment.ms``)
play the active segment, the checkpoint lives in the database and comes down on truncation, what a round
did is what every broker on the database reads, appends by another broker carry on through a round, and a
page whose rows changed under the round stops it without harm.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.records import Record
from protocol.records.builder import build_batch
from protocol.records.control import build_marker
from storage.compaction import CleanResult
from storage.interface import open_engine
from storage.postgres import compaction as pg_compaction
from tests.unit.test_file_cleaner import DAY, NOW, Rec, fill, keyed_batch, latest_per_key, read_all, views
from tests.unit.test_file_engine import Clock, run

COMPACT = {"cleanup.policy": "compact", "segment.bytes": 600, "min.cleanable.dirty.ratio": 0.01,
           "delete.retention.ms": DAY}



def engine_at(url: str, clock: Clock) -> Any:
    engine = open_engine(url)
    engine.clock = clock
    return engine




def workload(batches: int = 30, keys: int = 4) -> list[list[Rec]]:
    return [[(b"key-%d" % ((3 * i + j) % keys), b"value-%d-%d" % (i, j)) for j in range(3)] for i in range(batches)]


def test_a_round_keeps_the_latest_value_per_key_below_the_active_part(postgres_url: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine = engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        await fill(log, workload())
        before = await read_all(log)
        size = log.size_bytes
        result = await log.clean()
        assert isinstance(result, CleanResult) and not result.aborted and result.records_removed > 0
        # The newest batches within segment.bytes are the active part: the round ends where it begins.
        active = [r for r in before if r.offset >= result.end_offset]
        assert 0 < sum(len(r.value or b"") for r in active) < COMPACT["segment.bytes"]
        after = await read_all(log)
        assert views(after) == latest_per_key(before, result.end_offset)
        assert log.size_bytes == size - (result.bytes_before - result.bytes_after) < size
        assert await log.clean() is None  # nothing dirty until more is written
        await engine.close()

        # Another broker (engine) on the database reads the compacted log, size and checkpoint included.
        other = engine_at(postgres_url, clock)
        again = await other.open_log("t", 0, dict(COMPACT))
        assert views(await read_all(again)) == views(after) and again.size_bytes == log.size_bytes
        assert await again.clean() is None
        await other.close()

    run(go())


def test_a_small_log_or_a_young_one_is_all_active_and_not_cleaned(postgres_url: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine = engine_at(postgres_url, clock)
        small = await engine.open_log("small", 0, {**COMPACT, "segment.bytes": 1 << 30})
        await fill(small, workload())
        assert await small.clean() is None
        # Younger than segment.ms: still the active segment. Once older, all but the last batch may go.
        young = await engine.open_log("young", 0, {**COMPACT, "segment.bytes": 1 << 30, "segment.ms": 60_000})
        await fill(young, workload(), ts=NOW)
        assert await young.clean() is None
        clock.now += 61_000
        await young.append(keyed_batch([(b"key-0", b"late")], ts=clock.now))
        result = await young.clean()
        assert result is not None and result.end_offset == young.log_end_offset - 1
        await engine.close()

    run(go())


def test_tombstones_stay_delete_retention_ms_then_go(postgres_url: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine = engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        await fill(log, [[(b"gone", b"v")], [(b"gone", None)]] + workload())
        await log.clean()
        assert [r.value for r in await read_all(log) if r.key == b"gone"] == [None]
        await fill(log, workload(10), ts=5000)
        clock.now += DAY + 1
        await log.clean()
        assert all(r.key != b"gone" for r in await read_all(log))
        await engine.close()

    run(go())


def test_aborted_transactions_go_and_their_markers_after_the_horizon(postgres_url: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine = engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        await log.append(build_batch([Record(0, 1000, b"x", b"aborted")], producer_id=11, producer_epoch=0,
                                     base_sequence=0, transactional=True))
        await log.append(build_marker(11, 0, False, 0, 1100))
        await fill(log, workload())
        # The producer's later, committed transaction holds its state, so the ABORT marker may go.
        await log.append(build_batch([Record(0, 2000, b"x", b"committed")], producer_id=11, producer_epoch=0,
                                     base_sequence=1, transactional=True))
        await log.append(build_marker(11, 0, True, 0, 2100))
        assert len(await log.aborted_transactions(0, log.log_end_offset)) == 1
        await log.clean()
        assert all(r.value != b"aborted" for r in await read_all(log))
        # The next round finds the transaction empty and gives its marker a delete horizon (as Kafka does,
        # the round that removed its data still read it); the first round past the horizon removes it.
        await fill(log, workload(10), ts=5000)
        assert (await log.clean()).markers_removed == 0
        await fill(log, workload(10), ts=6000)
        clock.now += DAY + 1
        result = await log.clean()
        assert result is not None and result.markers_removed == 1
        assert await log.aborted_transactions(0, log.log_end_offset) == []
        await engine.close()

    run(go())


def test_truncation_brings_the_checkpoint_down(postgres_url: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine = engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        await fill(log, workload())
        result = await log.clean()
        assert result is not None
        truncate_at = result.end_offset // 3 * 3 - 6  # batches of 3 records keep their offsets
        await log.truncate_to(truncate_at)
        async with engine.connection() as conn:
            checkpoint = await conn.fetchval("SELECT cleaner_offset FROM moldau_logs WHERE log_id = $1", log.log_id)
        assert checkpoint == truncate_at
        await engine.close()

    run(go())


def test_appends_by_another_broker_carry_on_through_a_round(postgres_url: str, monkeypatch: Any) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine, other = engine_at(postgres_url, clock), engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        elsewhere = await other.open_log("t", 0, dict(COMPACT))
        await fill(log, workload())
        real = pg_compaction._write_page

        async def racing(plog: Any, rows: list[Any], *args: Any) -> None:
            await elsewhere.append(keyed_batch([(b"other", b"broker")]))
            await real(plog, rows, *args)

        monkeypatch.setattr(pg_compaction, "_write_page", racing)
        result = await log.clean()
        assert result is not None and not result.aborted
        await log.refresh()
        got = await read_all(log)
        assert [r.key for r in got].count(b"other") >= 1 and got[-1].key == b"other"
        assert log.log_end_offset == elsewhere.log_end_offset
        await engine.close()
        await other.close()

    run(go())


@pytest.mark.parametrize("change", ["delete_records", "truncate"])
def test_a_page_whose_rows_changed_under_the_round_stops_it(postgres_url: str, monkeypatch: Any,
                                                           change: str) -> None:
    async def go() -> None:
        clock = Clock(NOW)
        engine, other = engine_at(postgres_url, clock), engine_at(postgres_url, clock)
        log = await engine.open_log("t", 0, dict(COMPACT))
        elsewhere = await other.open_log("t", 0, dict(COMPACT))
        await fill(log, workload(40))
        await elsewhere.refresh()
        monkeypatch.setattr(pg_compaction, "PAGE_BATCHES", 4)
        real, pages = pg_compaction._write_page, 0

        async def racing(plog: Any, rows: list[Any], *args: Any) -> None:
            nonlocal pages
            pages += 1
            if pages == 2:  # the second page written: its rows change first, from another broker
                if change == "delete_records":
                    await elsewhere.delete_records_before(rows[-1]["base_offset"] + 1)
                else:
                    await elsewhere.truncate_to(rows[1]["base_offset"])
            await real(plog, rows, *args)

        monkeypatch.setattr(pg_compaction, "_write_page", racing)
        result = await log.clean()
        assert result is not None and result.aborted and pages == 2
        await log.refresh()
        got = await read_all(log)
        offsets = [r.offset for r in got]
        assert offsets == sorted(set(offsets)) and offsets[-1] == log.log_end_offset - 1
        # The next round finishes the job.
        monkeypatch.setattr(pg_compaction, "_write_page", real)
        await fill(log, workload(10), ts=9000)
        assert (again := await log.clean()) is not None and not again.aborted
        await engine.close()
        await other.close()

    run(go())
