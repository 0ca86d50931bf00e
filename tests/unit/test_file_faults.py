"""Disk faults injected through the file system seam: the engine reports KAFKA_STORAGE_ERROR, keeps
every log consistent (a failed append leaves no trace, or the log goes offline for writes while its
data stays readable), and the broker process goes on."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from protocol.errors import ErrorCode
from storage.file import FaultInjectingFileSystem, FileEngine, StorageError
from storage.file.checkpoint import CLEAN_SHUTDOWN_FILE
from tests.unit.test_file_engine import batch, offsets_of, reopen, run, segment_files


def test_a_full_disk_during_an_append_leaves_no_trace(tmp_path: Path) -> None:
    """ENOSPC after part of the batch was written: the partial bytes are cut away, the append raises
    KAFKA_STORAGE_ERROR, the log stays writable, and a restart finds exactly the acknowledged data."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        await log.append(batch(2))
        fault = fs.inject("pwrite", errno.ENOSPC, path_contains=".log", partial_bytes=30)
        with pytest.raises(StorageError) as info:
            await log.append(batch(3))
        assert fault.fired == 1
        assert info.value.code is ErrorCode.KAFKA_STORAGE_ERROR and info.value.errno == errno.ENOSPC
        assert "00000000000000000000.log" in info.value.message
        assert log.log_end_offset == 2 and log.offline is None
        assert (tmp_path / "t-0" / "00000000000000000000.log").stat().st_size == len(batch(2))
        assert (await log.append(batch(1))).base_offset == 2
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2]
        engine.simulate_crash()
        engine, log = await reopen(tmp_path)
        assert log.log_end_offset == 3
        await engine.close()
    run(go())


def test_an_append_that_cannot_be_undone_takes_the_log_offline_for_writes(tmp_path: Path) -> None:
    """EIO on the write and on the truncation that would undo it: the log refuses writes from then on
    but still serves what it holds; other logs of the engine are unaffected; the next start recovers
    (no clean-shutdown marker) and drops the partial batch."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        other = await engine.open_log("u", 0)
        await log.append(batch(2))
        fs.inject("pwrite", errno.EIO, path_contains="t-0", partial_bytes=25)
        fs.inject("ftruncate", errno.EIO, path_contains="t-0")
        with pytest.raises(StorageError):
            await log.append(batch(3))
        assert log.offline is not None
        with pytest.raises(StorageError, match="offline"):
            await log.append(batch(1))
        with pytest.raises(StorageError, match="offline"):
            await log.flush()
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1]
        assert (await other.append(batch(1))).base_offset == 0
        await other.flush()
        await engine.close()
        assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
        assert (tmp_path / "t-0" / "00000000000000000000.log").stat().st_size == len(batch(2)) + 25
        engine, log = await reopen(tmp_path)
        assert not engine.clean_shutdown and log.log_end_offset == 2
        assert (await log.append(batch(1))).base_offset == 2
        await engine.close()
    run(go())


def test_a_failed_fsync_fails_the_flush_and_takes_the_log_offline(tmp_path: Path) -> None:
    """After a failed fsync the kernel may have dropped the dirty pages: never report later flushes as
    good. Every waiter of the pass gets the error; other logs flush normally."""
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        other = await engine.open_log("u", 0)
        await log.append(batch(1))
        await other.append(batch(1))
        fs.inject("fdatasync", errno.EIO, path_contains="t-0")
        results = await asyncio.gather(log.flush(), log.flush(), other.flush(), return_exceptions=True)
        assert [type(r) for r in results] == [StorageError, StorageError, type(None)]
        assert results[0].code is ErrorCode.KAFKA_STORAGE_ERROR and "fsync" in results[0].message
        assert log.recovery_point == 0 and other.recovery_point == 1
        with pytest.raises(StorageError):
            await log.append(batch(1))
        assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0]
        await engine.close()
    run(go())


def test_a_failed_roll_leaves_the_active_segment_in_place(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem()
    config = {"segment.bytes": 2 * len(batch(1))}

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0, config)
        await log.append(batch(1))
        await log.append(batch(1))
        fs.inject("open", errno.ENOSPC, path_contains="00000000000000000002.index")
        with pytest.raises(StorageError, match="cannot create segment"):
            await log.append(batch(1))
        assert log.log_end_offset == 2 and len(log.segments) == 1
        assert segment_files(tmp_path / "t-0") == ["00000000000000000000.log"]  # no half-made segment
        assert (await log.append(batch(1))).base_offset == 2
        assert [s.base_offset for s in log.segments] == [0, 2]
        await engine.close()
    run(go())


def test_index_write_failures_do_not_fail_appends(tmp_path: Path) -> None:
    """Indexes may lag (they are checked and extended from the log when loaded): a failed bulk index
    write is logged, the append succeeds, and the next start has a complete index."""
    fs = FaultInjectingFileSystem()
    config = {"index.interval.bytes": 0}

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0, config)
        fs.inject("pwrite", errno.ENOSPC, path_contains=".index", times=None)
        for _ in range(600):
            await log.append(batch(1, value_size=1))
        fs.clear_faults()
        engine.simulate_crash()
        engine, log = await reopen(tmp_path, config=config)
        assert log.log_end_offset == 600
        assert len(log.segments[-1].offset_index) == 599
        assert offsets_of((await log.read(577, 1)).chunks) == [577]
        await engine.close()
    run(go())


def test_a_failed_checkpoint_leaves_the_log_start_offset_unchanged(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        for _ in range(3):
            await log.append(batch(2))
        fs.inject("replace", errno.EIO, path_contains="log-start-offset-checkpoint")
        with pytest.raises(StorageError, match="checkpoint"):
            await log.delete_records_before(4)
        assert log.log_start_offset == 0
        assert not list(tmp_path.glob("*.tmp"))
        assert await log.delete_records_before(4) == 4
        await engine.close()
    run(go())


def test_read_errors_are_storage_errors(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem()

    async def go() -> None:
        engine = FileEngine(tmp_path, fs=fs)
        log = await engine.open_log("t", 0)
        await log.append(batch(2))
        fs.inject("pread", errno.EIO, path_contains=".log")
        with pytest.raises(StorageError) as info:
            await log.read(0, 1000)
        assert info.value.code is ErrorCode.KAFKA_STORAGE_ERROR
        assert offsets_of((await log.read(0, 1000)).chunks) == [0, 1]
        assert (await log.append(batch(1))).base_offset == 2
        await engine.close()
    run(go())


def test_a_data_directory_that_is_a_file_is_a_clear_error_at_start(tmp_path: Path) -> None:
    occupied = tmp_path / "data"
    occupied.write_text("a regular file where the data directory must be")
    with pytest.raises(StorageError, match=f"data directory {occupied} cannot be created") as info:
        FileEngine(occupied)
    assert info.value.path == str(occupied)
    with pytest.raises(StorageError, match=f"data directory {occupied / 'deeper'} cannot be created"):
        FileEngine(occupied / "deeper")


def test_a_data_directory_that_cannot_be_written_is_a_clear_error_at_start(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem()
    fs.inject("open", errno.EROFS, path_contains=".moldau-probe")
    with pytest.raises(StorageError, match=f"data directory {tmp_path} is not writable: Read-only file system"):
        FileEngine(tmp_path, fs=fs)
    FileEngine(tmp_path).simulate_crash()  # nothing was left behind: not even the lock


def test_a_partition_directory_that_cannot_be_created_fails_only_that_open(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        (tmp_path / "t-0").write_text("in the way")
        with pytest.raises(StorageError, match="t-0"):
            await engine.open_log("t", 0)
        assert (await (await engine.open_log("t", 1)).append(batch(1))).base_offset == 0
        await engine.close()
    run(go())
