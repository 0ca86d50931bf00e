"""Crash recovery of the file engine, as Kafka's LogLoader does it.

A "crash" is `FileEngine.simulate_crash()` (files closed, nothing flushed or written: the page cache
keeps what was written, as after a killed process) followed by damage a power loss can do: the last
batch cut at every byte boundary, bytes flipped, index files garbled or missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from protocol.records import RecordBatch
from storage.file import FaultInjectingFileSystem, FileEngine
from storage.file.checkpoint import CLEAN_SHUTDOWN_FILE
from tests.unit.test_file_engine import (
    batch,
    expected_indexes,
    file_batches,
    offsets_of,
    reopen,
    run,
    segment_files,
)

INTERVAL = 150
CONFIG = {"index.interval.bytes": INTERVAL, "segment.bytes": 1000}


def build_log(path: Path, batches: list[bytearray], config: dict[str, Any] = CONFIG, *, clean: bool = True) -> None:
    async def go() -> None:
        engine, log = await reopen(path, config=config)
        for b in batches:
            await log.append(b)
        if clean:
            await engine.close()
        else:
            engine.simulate_crash()
    run(go())


def recover(path: Path, config: dict[str, Any] = CONFIG, fs: Any = None) -> tuple[int, list[int], list[RecordBatch]]:
    """Open after a crash (no marker), close cleanly; (log end offset, offsets read, active batches).

    With a counting `fs`, its counters hold what opening the log did (they are reset afterwards)."""
    (path / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
    counting = FaultInjectingFileSystem() if fs is None else fs

    async def go() -> tuple[int, list[int]]:
        engine, log = await reopen(path, fs=counting, config=config)
        opened = dict(counting.bytes_by_path)
        end = log.log_end_offset
        offsets = offsets_of((await log.read(log.log_start_offset, 1 << 24)).chunks)
        await engine.close()
        counting.reset_counts()
        counting.bytes_by_path.update(opened)
        return end, offsets
    end, offsets = run(go())
    active = max((path / "t-0").glob("*.log"))
    return end, offsets, file_batches(active)


def test_a_cut_at_every_byte_of_the_last_batch_keeps_exactly_the_intact_prefix(tmp_path: Path) -> None:
    """For every length the last batch can be cut to, recovery keeps the batches before it, cuts the
    file there, and rebuilds both indexes to exactly what Kafka's rule gives for the kept batches
    (the index files are garbled first, so they must be rebuilt, not kept)."""
    pristine = tmp_path / "pristine"
    build_log(pristine, [batch(2, ts=1000 + 10 * i, value_size=30) for i in range(9)])
    name = segment_files(pristine / "t-0")[-1]
    base = int(name[:20])
    intact = file_batches(pristine / "t-0" / name)
    last = intact[-1]
    start, full = last.position, last.position + last.total_size
    assert len(segment_files(pristine / "t-0")) >= 2, "the test wants a closed segment before the active one"
    kept_indexes = expected_indexes(intact[:-1], base, INTERVAL)
    full_indexes = expected_indexes(intact, base, INTERVAL)
    for cut in range(start, full + 1):
        work = tmp_path / f"cut-{cut}"
        shutil.copytree(pristine, work)
        segment = work / "t-0" / name
        with open(segment, "r+b") as f:
            f.truncate(cut)
        (work / "t-0" / name.replace(".log", ".index")).write_bytes(b"\x00" * 24)
        (work / "t-0" / name.replace(".log", ".timeindex")).write_bytes(b"\xff" * 7)
        end, offsets, kept = recover(work)
        whole = cut == full
        assert end == (last.last_offset + 1 if whole else last.base_offset), f"cut at {cut}"
        assert offsets == list(range(end)), f"cut at {cut}"
        assert segment.stat().st_size == (full if whole else start), f"cut at {cut}"
        assert [b.base_offset for b in kept] == [b.base_offset for b in (intact if whole else intact[:-1])]
        indexes = (segment.with_suffix(".index").read_bytes(), segment.with_suffix(".timeindex").read_bytes())
        assert indexes == (full_indexes if whole else kept_indexes), f"indexes after a cut at {cut}"
        shutil.rmtree(work)


def test_a_flipped_byte_in_the_last_batch_drops_it_unless_the_crc_does_not_cover_it(tmp_path: Path) -> None:
    """Every byte the CRC covers, the base offset (checked against the previous batch), the length and
    the magic are verified; only the partition leader epoch (bytes 12-15) is outside every check."""
    pristine = tmp_path / "pristine"
    build_log(pristine, [batch(3, ts=2000 + i, value_size=10) for i in range(4)], {"index.interval.bytes": 0})
    segment_name = "t-0/00000000000000000000.log"
    intact = file_batches(pristine / segment_name)
    last = intact[-1]
    data = (pristine / segment_name).read_bytes()
    for i in range(last.total_size):
        work = tmp_path / f"flip-{i}"
        shutil.copytree(pristine, work)
        damaged = bytearray(data)
        damaged[last.position + i] ^= 0xFF
        (work / segment_name).write_bytes(damaged)
        end, offsets, kept = recover(work, {"index.interval.bytes": 0})
        survives = 12 <= i < 16
        assert end == (12 if survives else 9), f"flipped byte {i} of the last batch"
        assert offsets == list(range(end))
        assert len(kept) == (4 if survives else 3)
        shutil.rmtree(work)


def test_a_bad_batch_in_the_middle_drops_everything_after_it(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(2) for _ in range(6)], {}, clean=False)
    segment = tmp_path / "t-0" / "00000000000000000000.log"
    batches = file_batches(segment)
    damaged = bytearray(segment.read_bytes())
    damaged[batches[2].position + 40] ^= 0x01
    segment.write_bytes(damaged)
    end, offsets, kept = recover(tmp_path, {})
    assert (end, offsets, len(kept)) == (4, [0, 1, 2, 3], 2)


def test_a_cut_segment_deletes_the_segments_after_it(tmp_path: Path) -> None:
    """A segment recovery cuts makes every later (unflushed) segment meaningless: Kafka deletes them."""
    build_log(tmp_path, [batch(2, value_size=100) for _ in range(12)], clean=False)
    names = segment_files(tmp_path / "t-0")
    assert len(names) >= 3
    second = tmp_path / "t-0" / names[1]
    keep = file_batches(second)[0]
    with open(second, "r+b") as f:
        f.truncate(keep.total_size + 5)
    end, offsets, _ = recover(tmp_path)
    assert end == keep.last_offset + 1 and offsets == list(range(end))
    assert segment_files(tmp_path / "t-0") == names[:2]
    assert segment_files(tmp_path / "t-0", ".index") == [n.replace(".log", ".index") for n in names[:2]]


def test_a_clean_restart_scans_nothing(tmp_path: Path) -> None:
    """After a clean close only the active segment's tail (from its last offset index entry) and its
    first batch header are read from .log files; the closed segments are not touched."""
    config = {"index.interval.bytes": 200, "segment.bytes": 10_000}
    batches = [batch(2, value_size=60) for _ in range(140)]
    build_log(tmp_path, batches, config)
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine, log = await reopen(tmp_path, fs=fs, config=config)
        assert engine.clean_shutdown and log.log_end_offset == 280
        await engine.close()
    run(go())
    names = segment_files(tmp_path / "t-0")
    active = str(tmp_path / "t-0" / names[-1])
    assert len(names) >= 3 and os.path.getsize(active) > 5 * 200
    assert fs.calls["fdatasync"] == 0
    read = fs.bytes("pread", ".log")
    assert read <= 200 + 2 * len(batches[0]) + 61, f"a clean restart read {read} bytes of segments"
    assert all(path == active for (op, path), n in fs.bytes_by_path.items() if op == "pread" and path.endswith(".log"))


def test_an_unclean_restart_scans_only_from_the_recovery_point(tmp_path: Path) -> None:
    config = {"index.interval.bytes": 200, "segment.bytes": 5_000}

    async def go() -> None:
        engine, log = await reopen(tmp_path, config=config)
        for _ in range(100):
            await log.append(batch(2, value_size=60))
        await log.flush()
        await engine.checkpoint()  # the periodic recovery point checkpoint
        for _ in range(5):
            await log.append(batch(2, value_size=60))
        engine.simulate_crash()
    run(go())
    names = segment_files(tmp_path / "t-0")
    fs = FaultInjectingFileSystem()
    end, offsets, _ = recover(tmp_path, config, fs=fs)
    assert end == 210 and offsets == list(range(210))
    scanned = {path for (op, path), n in fs.bytes_by_path.items() if op == "pread" and path.endswith(".log")}
    assert scanned == {str(tmp_path / "t-0" / names[-1])}, "only the segment holding the recovery point"

    # Without a recovery point checkpoint, every segment is scanned.
    (tmp_path / "recovery-point-offset-checkpoint").unlink()
    fs = FaultInjectingFileSystem()
    end, _, _ = recover(tmp_path, config, fs=fs)
    assert end == 210
    scanned = {path for (op, path), n in fs.bytes_by_path.items() if op == "pread" and path.endswith(".log")}
    assert len(scanned) == len(names)


def test_missing_or_corrupt_indexes_of_closed_segments_are_rebuilt(tmp_path: Path) -> None:
    config = {"index.interval.bytes": 100, "segment.bytes": 2_000}
    build_log(tmp_path, [batch(2, ts=1000 + i, value_size=40) for i in range(40)], config)
    part = tmp_path / "t-0"
    names = segment_files(part)
    originals = {p.name: p.read_bytes() for p in part.iterdir() if p.suffix in (".index", ".timeindex")}
    first, second, third = (part / n for n in names[:3])
    first.with_suffix(".index").unlink()
    second.with_suffix(".timeindex").write_bytes(b"garbage!" * 3)
    # entries that are in order but point into the middle of a batch: caught against the log
    good = second.with_suffix(".index").read_bytes()
    third.with_suffix(".index").write_bytes(good[:4] + (int.from_bytes(good[4:8], "big") + 3).to_bytes(4, "big"))

    async def go() -> None:
        engine, log = await reopen(tmp_path, config=config)
        assert engine.clean_shutdown
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == list(range(80))
        found = await log.offset_for_timestamp(1030)
        assert (found.offset, found.timestamp) == (59, 1030)  # batch 29 holds 1029, 1030
        await engine.close()
    run(go())
    rebuilt = {p.name: p.read_bytes() for p in part.iterdir() if p.suffix in (".index", ".timeindex")}
    assert rebuilt == originals


def test_a_log_start_offset_past_the_recovered_end_restarts_the_log_there(tmp_path: Path) -> None:
    """DeleteRecords persisted the log start offset, then the unflushed batches were lost: the log
    starts over, empty, at the log start offset (offsets below it were promised gone)."""
    async def go() -> None:
        engine, log = await reopen(tmp_path)
        for _ in range(4):
            await log.append(batch(2))
        assert await log.delete_records_before(6) == 6
        engine.simulate_crash()
        segment = tmp_path / "t-0" / "00000000000000000000.log"
        os.truncate(segment, len(batch(2)) + 10)  # the page cache never reached the disk
        engine, log = await reopen(tmp_path)
        assert (log.log_start_offset, log.log_end_offset) == (6, 6)
        assert (await log.append(batch(1))).base_offset == 6
        await engine.close()
    run(go())
    assert segment_files(tmp_path / "t-0") == ["00000000000000000006.log"]


def test_an_empty_leftover_of_a_failed_roll_is_removed(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(2) for _ in range(3)], {})
    (tmp_path / "t-0" / "00000000000000000002.log").write_bytes(b"")  # below the real end (6)

    async def go() -> None:
        engine, log = await reopen(tmp_path)
        assert log.log_end_offset == 6 and len(log.segments) == 1
        assert (await log.append(batch(1))).base_offset == 6
        await engine.close()
    run(go())
    assert segment_files(tmp_path / "t-0") == ["00000000000000000000.log"]


def test_leftover_files_are_cleaned_up(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1)], {})
    part = tmp_path / "t-0"
    (part / "00000000000000000000.log.deleted").write_bytes(b"x")
    (part / "00000000000000000042.index").write_bytes(b"")  # an index without its log
    (tmp_path / "gone-0.0123abc-delete").mkdir()
    (tmp_path / "gone-0.0123abc-delete" / "00000000000000000000.log").write_bytes(b"x")

    async def go() -> None:
        engine, log = await reopen(tmp_path)
        assert log.log_end_offset == 1
        await engine.close()
    run(go())
    assert sorted(p.name for p in part.iterdir()) == [
        "00000000000000000000.index", "00000000000000000000.log", "00000000000000000000.timeindex"]
    assert not (tmp_path / "gone-0.0123abc-delete").exists()


def test_no_clean_marker_while_a_partition_was_never_recovered(tmp_path: Path) -> None:
    """After an unclean start, a partition the run never opened was never recovered: closing cleanly
    must not write the marker, or the next start would trust its torn tail."""
    async def go() -> None:
        engine = FileEngine(tmp_path)
        for topic in ("a", "b"):
            await (await engine.open_log(topic, 0)).append(batch(2))
        engine.simulate_crash()
        segment = tmp_path / "b-0" / "00000000000000000000.log"
        os.truncate(segment, len(batch(2)) - 7)  # b's batch is torn
        engine = FileEngine(tmp_path)
        assert not engine.clean_shutdown
        await engine.open_log("a", 0)
        await engine.close()
        assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
        engine = FileEngine(tmp_path)
        assert (await engine.open_log("b", 0)).log_end_offset == 0
        await engine.open_log("a", 0)
        await engine.close()
        assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    run(go())
