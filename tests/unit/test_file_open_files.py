"""The cap on open segment descriptors (`storage.file.open_files`, issue 12 item 7).

Before it, every segment a read touched kept its ``.log`` descriptor open until the segment was
deleted or its log closed: reading a long log end to end held one descriptor per segment.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from storage.file import FileEngine, FileSystem
from storage.file.open_files import OpenFiles
from storage.file.segment import LogSegment
from storage.interface import open_engine
from tests.unit.test_file_cleaner import COMPACT, fill, latest_per_key, read_all, views, workload
from tests.unit.test_file_engine import batch, offsets_of, records_of, run

SIZE = len(batch(2))
CONFIG = {"segment.bytes": 2 * SIZE}  # two batches (four offsets) per segment
SEGMENTS = 40
CAP = 5

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")


def open_log_files(directory: Path) -> int:
    """Descriptors of this process open on ``.log`` files under `directory`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith(".log"):
            count += 1
    return count


async def filled(path: Path, cap: int, segments: int = SEGMENTS) -> tuple[FileEngine, list[bytes]]:
    """An engine over a log of `segments` full segments (the last one active), reopened so that
    no descriptor is left from writing it; returns the batches as written."""
    engine = FileEngine(path, max_open_segment_files=cap)
    log = await engine.open_log("t", 0, CONFIG)
    written = []
    for i in range(2 * segments):
        data = batch(2, ts=1000 + 2 * i)  # record n has timestamp 1000 + n
        await log.append(data)
        written.append(bytes(data))
    await engine.close()
    return FileEngine(path, max_open_segment_files=cap), written


def test_reading_every_segment_keeps_the_log_descriptors_under_the_cap(tmp_path: Path) -> None:
    async def go() -> None:
        engine, written = await filled(tmp_path, CAP)
        log = await engine.open_log("t", 0, CONFIG)
        assert len(log.segments) == SEGMENTS  # the last one active
        directory = tmp_path / "t-0"
        for i, expected in enumerate(written):  # one batch at a time, each segment in turn
            result = await log.read(2 * i, 1)
            assert bytes(result.chunks[0]) == expected, f"batch {i}"
            assert open_log_files(directory) <= CAP + 1, f"after reading batch {i}"  # + the active segment
            assert len(engine.open_files) <= CAP
        whole = await log.read(0, 1 << 20)  # one read across every segment
        assert [bytes(c) for c in whole.chunks] == written
        assert open_log_files(directory) <= CAP + 1 and engine.open_files.evictions > 0
        for _ in range(30):  # timestamp lookups and the active segment's appends work on reopened files
            target = random.randrange(2 * SEGMENTS)
            found = await log.offset_for_timestamp(1000 + 2 * target)
            assert found is not None and found.offset == 2 * target
        assert (await log.append(batch(1))).base_offset == 4 * SEGMENTS
        assert open_log_files(directory) <= CAP + 1
        await engine.close()
        assert open_log_files(directory) == 0
    run(go())


def test_concurrent_reads_with_a_cap_of_one_all_return_their_data(tmp_path: Path) -> None:
    """Four reader threads share one slot: a descriptor in use by a read is never closed under it."""
    async def go() -> None:
        engine, written = await filled(tmp_path, 1, segments=20)
        log = await engine.open_log("t", 0, CONFIG)
        rng = random.Random(12)
        for _ in range(5):
            picks = [rng.randrange(len(written)) for _ in range(40)]
            results = await asyncio.gather(*(log.read(2 * i, 3 * SIZE) for i in picks))
            for i, result in zip(picks, results):
                assert bytes(result.chunks[0]) == written[i], f"batch {i}"
                assert offsets_of(result.chunks)[0] == 2 * i
        assert open_log_files(tmp_path / "t-0") <= 2
        await engine.close()
    run(go())


def test_recovery_and_truncation_work_under_a_small_cap(tmp_path: Path) -> None:
    async def go() -> None:
        engine, written = await filled(tmp_path, 2, segments=12)
        log = await engine.open_log("t", 0, CONFIG)
        engine.simulate_crash()  # no clean shutdown marker: the next open recovers every segment
        engine = FileEngine(tmp_path, max_open_segment_files=2)
        log = await engine.open_log("t", 0, CONFIG)
        assert log.log_end_offset == 48 and open_log_files(tmp_path / "t-0") <= 3
        assert [bytes(c) for c in (await log.read(0, 1 << 20)).chunks] == written
        await log.truncate_to(22)  # into an old segment, which becomes the active one again
        assert offsets_of((await log.read(16, 1 << 20)).chunks) == list(range(16, 22))
        assert (await log.append(batch(2))).base_offset == 22
        assert records_of((await log.read(22, 1 << 20)).chunks)[0].offset == 22
        await engine.close()
    run(go())


def test_compaction_under_a_cap_of_one(tmp_path: Path) -> None:
    """A rewritten segment is read through its temporary file until the swap names it: held open."""
    async def go() -> None:
        engine = FileEngine(tmp_path, max_open_segment_files=1, clock=lambda: 10**12)
        log = await engine.open_log("t", 0, dict(COMPACT))
        await fill(log, workload())
        before = await read_all(log)
        end = log.segments[-1].base_offset
        assert len(log.segments) >= 4
        # Reads meanwhile, so that descriptors come and go while the rewritten segment is swapped in.
        reads = [asyncio.ensure_future(read_all(log)) for _ in range(8)]
        result = await log.clean()
        for read in await asyncio.gather(*reads):
            assert views(read) in (views(before), latest_per_key(before, end))
        assert result is not None and result.segments_written
        assert views(await read_all(log)) == latest_per_key(before, end)
        assert open_log_files(tmp_path / "t-0") <= 2
        await engine.close()
        engine = FileEngine(tmp_path, max_open_segment_files=1)
        log = await engine.open_log("t", 0, dict(COMPACT))
        assert views(await read_all(log)) == latest_per_key(before, end)
        await engine.close()
    run(go())


def test_a_pinned_segment_is_skipped_and_a_held_one_not_counted(tmp_path: Path) -> None:
    files = OpenFiles(1)
    fs = FileSystem()
    segments = [LogSegment(fs, str(tmp_path), base, files=files) for base in (0, 10, 20)]
    for segment in segments:
        segment.create_files()
    assert len(files) == 1 and [s.is_open for s in segments] == [False, False, True]
    with segments[0].opened():  # reopened and in use: the others go, it stays
        assert [s.is_open for s in segments] == [True, False, False]
        with segments[1].opened():  # both pinned: the cap is exceeded for as long as both are in use
            assert len(files) == 2 and segments[0].is_open
        # Released: the cap holds again at once, the segment still in use keeping its descriptor.
        assert len(files) == 1 and segments[0].is_open and not segments[1].is_open
    segments[2].hold_open(True)  # held (as a cleaner's rewrite is): open, outside the cap
    with segments[2].opened():
        pass
    assert segments[2].is_open and len(files) == 1
    with segments[1].opened():
        pass
    assert segments[2].is_open and not segments[0].is_open and len(files) == 1
    # A segment the cleaner rewrote serves reads through its temporary file: held until named.
    rewritten = LogSegment(fs, str(tmp_path), 30, files=files)
    rewritten.attach(os.open(tmp_path / "rewritten.cleaned", os.O_RDWR | os.O_CREAT))
    with segments[0].opened():
        pass
    assert rewritten.is_open and rewritten.held_open
    rewritten.hold_open(False)  # the swap gave it its name: it counts again, least recently used first
    with segments[1].opened():
        pass
    assert not rewritten.is_open and segments[1].is_open
    for segment in [*segments, rewritten]:
        segment.retire()
    assert len(files) == 0 and not any(s.is_open for s in segments)
    with pytest.raises(ValueError, match="at least 1"):
        OpenFiles(0)


def test_many_partitions_being_written_stay_under_the_cap(tmp_path: Path) -> None:
    """Active segments count against the cap too (a fuzz campaign creating thousands of partitions ran
    a broker out of descriptors: EMFILE, partitions taken offline). Appends to an active segment whose
    descriptor was closed go on where it was, and every partition reads back whole after a restart."""
    partitions = 4 * CAP

    async def go() -> None:
        engine = FileEngine(tmp_path, max_open_segment_files=CAP)
        logs = [await engine.open_log("many", p, {}) for p in range(partitions)]
        for round_ in range(3):
            for log in logs:
                await log.append(batch(2, ts=1000 + round_))
                await log.flush()
                assert open_log_files(tmp_path) <= CAP
        assert engine.open_files.evictions > 0
        await engine.close()
        engine = FileEngine(tmp_path, max_open_segment_files=CAP)
        try:
            for p in range(partitions):
                log = await engine.open_log("many", p, {})
                assert log.log_end_offset == 6
                assert offsets_of((await log.read(0, 1 << 20)).chunks) == list(range(6))
        finally:
            await engine.close()

    run(go())


def test_the_cap_is_a_storage_url_option(tmp_path: Path) -> None:
    engine = open_engine((tmp_path / "d").as_uri() + "?log.max.open.segment.files=7")
    assert isinstance(engine, FileEngine) and engine.open_files.cap == 7
    engine.simulate_crash()


def test_the_broker_setting_reaches_the_file_engine(tmp_path: Path) -> None:
    from broker.config import BrokerConfig
    from broker.server import Broker

    async def go() -> None:
        broker = Broker(BrokerConfig.from_settings({"log.dirs": str(tmp_path), "listeners": "127.0.0.1:0",
                                                    "log.max.open.segment.files": 3}))
        await broker.start()
        try:
            assert broker.engine.open_files.cap == 3
        finally:
            await broker.stop()
    run(go())
