"""Transactions in the file engine: Kafka's ``.txnindex`` and ``.snapshot`` files, their life with
their segments (roll, retention, truncation, compaction), and crash recovery: whatever survives a
crash, the reopened log's transaction state is the one a tracker fed the surviving batches gets."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import crc32c
import pytest

from protocol.records import iter_batches
from storage.file import FileEngine, FileLog, StorageError
from storage.file.checkpoint import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_CHECKPOINT
from storage.file.producer_snapshot import (
    SNAPSHOT_SUFFIX,
    decode_snapshot,
    encode_snapshot,
    stray_snapshots,
)
from storage.interface import AbortedTxn, ProducerSnapshotEntry
from tests.unit.test_file_cleaner import COMPACT, CrashingFileSystem, keyed_batch, settle
from tests.unit.test_file_engine import reopen, run, segment_files
from tests.unit.test_txn_tracker import Feeder, data, marker

CONFIG = {"segment.bytes": 400, "index.interval.bytes": 100}


def names(directory: Path, suffix: str) -> list[str]:
    return segment_files(directory, suffix)


async def reference(log: FileLog) -> Feeder:
    """A fresh tracker fed every batch the log holds, from offset 0 (at their offsets: compaction
    leaves gaps)."""
    feed = Feeder()
    buf = b"".join(bytes(c) for c in (await log.read(0, 1 << 26)).chunks)
    for _, batch in iter_batches(memoryview(buf)):
        assert batch.base_offset >= feed.next
        feed.next = batch.base_offset
        feed(bytearray(batch.raw))
    return feed


async def assert_matches_reference(log: FileLog, where: str, *, aborted: bool = True) -> None:
    """`aborted`: compare the aborted transactions too (not after compaction: a replay lists none for
    a transaction whose data the cleaner removed, while the log keeps its entry with its marker)."""
    feed = await reference(log)
    end = log.log_end_offset
    assert feed.next == end, where
    assert log.producer_entries() == feed.tracker.entries(), f"{where}: producer entries"
    assert log.ongoing_transactions() == feed.tracker.ongoing(), f"{where}: ongoing transactions"
    assert log.last_stable_offset == feed.tracker.last_stable_offset(0, end), f"{where}: LSO"
    if aborted:
        expected = sorted(feed.aborted, key=lambda t: (t.first_offset, t.last_offset))
        assert await log.aborted_transactions(0, end + 1) == expected, f"{where}: aborted transactions"


def workload(seed: int, count: int) -> list[bytearray]:
    """Interleaved transactions of five producers (commits, aborts, epoch bumps, markers without data),
    idempotent producers and plain batches."""
    rng = random.Random(seed)
    seqs: dict[int, int] = {}
    epochs = dict.fromkeys(range(1, 8), 0)
    out = []
    for _ in range(count):
        roll = rng.random()
        pid = rng.randint(1, 7)
        if roll < 0.55:
            n = rng.randint(1, 4)
            seq = seqs.get(pid, 0)
            seqs[pid] = seq + n
            out.append(data(pid, epochs[pid], seq, n, transactional=pid <= 5, ts=1000 + len(out)))
        elif roll < 0.85:
            if rng.random() < 0.15:
                epochs[pid] += 1  # the coordinator fenced the producer: it aborts with the new epoch
                seqs[pid] = 0
            out.append(marker(pid, epochs[pid], commit=rng.random() < 0.5, coordinator_epoch=rng.randint(0, 3),
                              ts=1000 + len(out)))
        else:
            out.append(data(-1, transactional=False, n=rng.randint(1, 3)))
    return out


# --- the file formats ----------------------------------------------------------------------------------


def test_an_abort_writes_kafkas_txnindex_entry_in_the_markers_segment(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await reopen(tmp_path, config=CONFIG)
        await log.append(data(0x0102030405060708, n=3))  # 0-2
        await log.append(data(9))  # 3-4
        await log.append(marker(0x0102030405060708, commit=False))  # 5: 9 ongoing -> LSO 3
        await engine.close()
    run(go())
    (name,) = names(tmp_path / "t-0", ".txnindex")
    assert name == "00000000000000000000.txnindex"
    golden = bytes.fromhex("0000" "0102030405060708" "0000000000000000" "0000000000000005" "0000000000000003")
    assert (tmp_path / "t-0" / name).read_bytes() == golden


def test_the_snapshot_is_kafkas_version_1_layout_with_a_crc32c() -> None:
    entry = ProducerSnapshotEntry(0x0102030405060708, 3, 41, 1000, 4, 1_700_000_000_000, 9, 990)
    encoded = encode_snapshot([entry])
    assert encoded.hex() == (
        "0001" "f40349ea" "00000001"
        "0102030405060708" "0003" "00000029" "00000000000003e8" "00000004" "0000018bcfe56800" "00000009"
        "00000000000003de")
    assert struct.unpack(">I", encoded[2:6])[0] == crc32c.crc32c(encoded[6:])
    assert decode_snapshot(encoded) == [entry]
    damaged = bytearray(encoded)
    damaged[20] ^= 1
    with pytest.raises(Exception, match="CRC"):
        decode_snapshot(bytes(damaged))
    with pytest.raises(Exception, match="declares"):
        decode_snapshot(encoded[:2] + struct.pack(">I", crc32c.crc32c(encoded[6:-1])) + encoded[6:-1])


def test_kafkas_rule_for_which_snapshots_stay() -> None:
    bases = [100, 200, 300]
    assert stray_snapshots([50, 100, 150, 200, 250, 300, 350, 360], bases) == [50, 150, 250, 350]
    assert stray_snapshots([100, 250, 300], bases) == [250], "a stray below the last segment goes"


def test_snapshots_are_written_at_roll_and_close_and_go_with_their_segments(tmp_path: Path) -> None:
    part = tmp_path / "t-0"

    async def go() -> None:
        engine, log = await reopen(tmp_path, config=CONFIG)
        for i in range(12):
            await log.append(data(1, seq=2 * i))  # one long transaction
        bases = [s.base_offset for s in log.segments]
        assert len(bases) >= 3
        assert [int(n[:20]) for n in names(part, SNAPSHOT_SUFFIX)] == bases[1:]
        snap = decode_snapshot((part / f"{bases[1]:020d}{SNAPSHOT_SUFFIX}").read_bytes())
        assert snap == [ProducerSnapshotEntry(1, 0, bases[1] - 1, bases[1] - 1, 1, snap[0].timestamp, -1, 0)]
        end = log.log_end_offset
        await engine.close()
        assert [int(n[:20]) for n in names(part, SNAPSHOT_SUFFIX)] == [*bases[1:], end]

        engine, log = await reopen(tmp_path, config=CONFIG)
        assert log.ongoing_transactions() == {1: (0, 0)}
        await log.delete_records_before(bases[2])
        assert [int(n[:20]) for n in names(part, SNAPSHOT_SUFFIX)] == [*bases[2:], end]
        await log.append(data(1, seq=100))  # the close snapshot is a stray once a segment rolls past it
        await log.truncate_to(bases[-1])
        assert [int(n[:20]) for n in names(part, SNAPSHOT_SUFFIX)] == bases[2:]
        assert log.ongoing_transactions() == {1: (0, 0)}, "restored from the snapshot at the segment base"
        await engine.close()
    run(go())


def test_a_log_without_producers_writes_no_snapshot_at_close(tmp_path: Path) -> None:
    async def go() -> None:
        engine, log = await reopen(tmp_path)
        await log.append(data(-1, transactional=False))
        await engine.close()
    run(go())
    assert names(tmp_path / "t-0", SNAPSHOT_SUFFIX) == []


def test_txnindex_files_go_with_retention_and_truncation(tmp_path: Path) -> None:
    part = tmp_path / "t-0"

    async def go() -> None:
        engine, log = await reopen(tmp_path, config={"segment.bytes": 100, "retention.ms": -1})  # a batch per segment
        await log.append(data(1))  # 0-1
        await log.append(marker(1, commit=False))  # 2
        await log.append(data(2))  # 3-4
        await log.append(marker(2, commit=False))  # 5
        await log.append(data(-1, transactional=False))  # 6-7
        assert names(part, ".txnindex") == ["00000000000000000002.txnindex", "00000000000000000005.txnindex"]
        await log.truncate_to(5)
        assert names(part, ".txnindex") == ["00000000000000000002.txnindex"]
        assert log.ongoing_transactions() == {2: (0, 3)}
        await log.append(marker(2, commit=False))  # 5 again
        await log.delete_records_before(3)
        await log.apply_retention()
        assert names(part, ".txnindex") == ["00000000000000000005.txnindex"]
        assert await log.aborted_transactions(0, 6) == [AbortedTxn(2, 3, 5, 6)]
        await engine.close()
    run(go())


# --- crashes -------------------------------------------------------------------------------------------


def damage(work: Path, how: str, rng: random.Random) -> None:
    """What a crash (or an operator) can leave: see the cases below."""
    part = work / "t-0"
    (work / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
    snapshots = names(part, SNAPSHOT_SUFFIX)
    if how == "cut-last-segment":
        last = part / names(part, ".log")[-1]
        os.truncate(last, rng.randint(0, last.stat().st_size))
    elif how == "cut-any-segment":  # nothing fsynced: recovery scans everything
        (work / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)
        victim = part / rng.choice(names(part, ".log"))
        os.truncate(victim, rng.randint(0, victim.stat().st_size))
    elif how == "no-newest-snapshot" and snapshots:
        (part / snapshots[-1]).unlink()
    elif how == "bad-snapshot-crc" and snapshots:
        path = part / rng.choice(snapshots)
        raw = bytearray(path.read_bytes())
        raw[3] ^= 0x40
        path.write_bytes(raw)
    elif how == "no-snapshots":
        for name in snapshots:
            (part / name).unlink()
    elif how == "torn-txnindex":  # entries lost with the page cache: nothing was fsynced
        (work / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)
        for name in names(part, ".txnindex"):
            path = part / name
            os.truncate(path, rng.randint(0, path.stat().st_size))


CASES = ["as-copied", "cut-last-segment", "cut-any-segment", "no-newest-snapshot", "bad-snapshot-crc",
         "no-snapshots", "torn-txnindex"]


def test_after_any_crash_the_state_is_the_one_the_surviving_batches_give(tmp_path: Path) -> None:
    """The data directory is copied while the engine runs (what a kill -9 leaves, the page cache
    included), at many points of a long interleaved workload, then damaged as a crash or power loss
    can: the reopened log (and the same log after a clean restart) must hold exactly the transaction
    state of a fresh tracker fed the batches that survived, aborted transactions included."""
    live = tmp_path / "live"
    copies: list[Path] = []

    async def build() -> None:
        engine, log = await reopen(live, config=CONFIG)
        for i, buf in enumerate(workload(seed=7, count=160)):
            await log.append(buf)
            if i % 23 == 5:
                await log.flush()
                await engine.checkpoint()  # the recovery point moves on
            if i % 9 == 4:
                copy = tmp_path / f"copy-{i}"
                shutil.copytree(live, copy)
                copies.append(copy)
        await engine.close()
    run(build())
    assert len(names(live / "t-0", ".log")) > 10 and names(live / "t-0", ".txnindex")

    rng = random.Random(11)
    for copy in copies:
        for how in CASES:
            work = tmp_path / "work"
            shutil.copytree(copy, work)
            damage(work, how, rng)
            where = f"{copy.name}, {how}"

            async def check(work: Path, where: str) -> None:
                engine, log = await reopen(work, config=CONFIG)
                await assert_matches_reference(log, where)
                await engine.close()
                engine, log = await reopen(work, config=CONFIG)
                assert engine.clean_shutdown
                await assert_matches_reference(log, f"{where}, after a clean restart")
                await engine.close()
            run(check(work, where))
            shutil.rmtree(work)


def test_a_torn_txnindex_entry_is_ignored_and_cut(tmp_path: Path) -> None:
    part = tmp_path / "t-0"

    async def go() -> None:
        engine, log = await reopen(tmp_path)
        await log.append(data(1))
        await log.append(marker(1, commit=False))
        await engine.close()
        index = part / "00000000000000000000.txnindex"
        index.write_bytes(index.read_bytes() + b"\x00\x00\x01")
        engine, log = await reopen(tmp_path)  # a clean restart: nothing recovered
        assert await log.aborted_transactions(0, 4) == [AbortedTxn(1, 0, 2, 3)]
        assert index.stat().st_size == 34
        await log.append(data(1, seq=2))
        await log.append(marker(1, commit=False))
        assert await log.aborted_transactions(0, 6) == [AbortedTxn(1, 0, 2, 3), AbortedTxn(1, 3, 5, 6)]
        await engine.close()
    run(go())


# --- compaction -------------------------------------------------------------------------------------------


TXN_COMPACT = {**COMPACT, "segment.bytes": 500, "min.cleanable.dirty.ratio": 0.01}
MERGING = {**TXN_COMPACT, "segment.bytes": 5000}  # the cleaner merges the small segments written before
NOW = 10_000_000


def build_compacted(path: Path) -> None:
    """A compacted topic with superseded keys and aborted transactions in several closed segments."""
    async def go() -> None:
        engine = FileEngine(path, clock=lambda: NOW)
        log = await engine.open_log("t", 0, TXN_COMPACT)
        for i in range(30):
            await log.append(keyed_batch([(b"key-%d" % (i % 3), b"v%d" % i)], ts=1000 + i))
            if i % 3 == 0:
                await log.append(data(40, seq=i, n=1))
            if i % 3 == 2:
                await log.append(marker(40, commit=i % 9 == 2))
            if i in (1, 20):  # a long transaction across segments, aborted
                await log.append(data(41, seq=i, n=1) if i == 1 else marker(41, commit=False))
        await engine.close()
    run(go())


async def aborted_of(path: Path, fs: Any = None, *, cleaned: bool = False) -> tuple[list[AbortedTxn], int]:
    engine = FileEngine(path, fs=fs, clock=lambda: NOW)
    log = await engine.open_log("t", 0, TXN_COMPACT)
    await settle(engine)
    found = await log.aborted_transactions(0, log.log_end_offset)
    await assert_matches_reference(log, str(path), aborted=not cleaned)
    count = len(log.segments)
    await engine.close()
    return found, count


def test_the_cleaner_moves_txnindex_entries_to_the_replacement_segment(tmp_path: Path) -> None:
    """The round removes the aborted data but keeps the markers (and their entries) of the
    transactions it emptied: the entries move to the merged segment, each once."""
    build_compacted(tmp_path)
    part = tmp_path / "t-0"
    before, segments_before = run(aborted_of(tmp_path))
    assert len(before) >= 3 and len(names(part, ".txnindex")) >= 2

    async def clean() -> None:
        engine = FileEngine(tmp_path, clock=lambda: NOW)
        log = await engine.open_log("t", 0, MERGING)
        result = await log.clean(NOW)
        assert result is not None and result.segments_replaced > result.segments_written
        assert await log.aborted_transactions(0, log.log_end_offset) == before
        await engine.close()
    run(clean())
    after, segments_after = run(aborted_of(tmp_path, cleaned=True))
    assert after == before and segments_after < segments_before
    entries = sum((part / n).stat().st_size for n in names(part, ".txnindex")) // 34
    assert entries == len(before), "each entry once, in the segment holding its marker"
    (tmp_path / CLEAN_SHUTDOWN_FILE).unlink()
    (tmp_path / RECOVERY_POINT_CHECKPOINT).unlink()
    rebuilt = run(aborted_of(tmp_path, cleaned=True))[0]
    assert set(rebuilt) <= set(before), "a full recovery rebuilds the entries of transactions with data left"


def test_a_crash_at_every_step_of_a_clean_keeps_each_aborted_transaction_once(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    build_compacted(pristine)
    before, _ = run(aborted_of(pristine))

    def clean_with(path: Path, fs: CrashingFileSystem) -> None:
        async def go() -> None:
            engine = FileEngine(path, fs=fs, clock=lambda: NOW)
            log = await engine.open_log("t", 0, MERGING)
            await settle(engine)
            fs.armed = True
            with contextlib.suppress(StorageError):  # the injected crash
                await log.clean(NOW)
            if fs.dead:
                engine.simulate_crash()
            else:
                await engine.close()
        run(go())

    counter = CrashingFileSystem()
    reference_dir = tmp_path / "reference"
    shutil.copytree(pristine, reference_dir)
    clean_with(reference_dir, counter)
    steps = [name for _, name in counter.steps]
    assert any(".txnindex.swap" in name for name in steps), steps
    for crash_at in range(1, len(steps) + 1):
        work = tmp_path / f"crash-{crash_at}"
        shutil.copytree(pristine, work)
        clean_with(work, CrashingFileSystem(crash_at))
        (work / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
        found, _ = run(aborted_of(work, cleaned=True))
        assert found == before, f"crash at step {crash_at}: {counter.steps[crash_at - 1]}"
        assert not [n for n in os.listdir(work / "t-0") if n.endswith((".swap", ".cleaned"))]
        shutil.rmtree(work)
