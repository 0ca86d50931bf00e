"""Compaction of transactional logs in the file engine: Kafka's LogCleaner rules for transactions.

Checked here (LogCleaner, CleanedTransactionMetadata, ``shouldDiscardBatch``,
``isBatchLastRecordOfProducer``, KIP-534): the data of aborted transactions goes in one round and never
enters the offset map (an aborted value never hides an older committed one); committed transactional
data is compacted by key; a COMMIT or ABORT marker stays while its transaction has a batch left, gets
a delete horizon in the first round that finds its transaction empty, and goes (with its ``.txnindex``
entry) in the first round after the horizon; the last batch of each producer stays, possibly empty,
so its state survives a replay; read_committed and read_uncommitted readers see what Kafka's would
after every round and after a crash at any step of one.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from protocol.records import Record, RecordBatch, build_batch, iter_batches, iter_records
from protocol.records.control import ControlType, control_type
from storage.file import FileEngine, FileLog, StorageError
from storage.file.checkpoint import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_CHECKPOINT
from storage.file.cleaner import CLEANER_OFFSET_CHECKPOINT
from storage.file.producer_snapshot import SNAPSHOT_SUFFIX
from storage.interface import AbortedTxn, ProducerSnapshotEntry
from tests.unit.test_file_cleaner import COMPACT, NOW, CrashingFileSystem, open_log, settle
from tests.unit.test_file_engine import run, segment_files
from tests.unit.test_txn_tracker import marker

RETENTION = 50_000
CONFIG = {**COMPACT, "segment.bytes": 2000, "delete.retention.ms": RETENTION,
          "min.cleanable.dirty.ratio": 0.01}

Item = tuple[bytes | None, bytes | None]  # (key, value)
View = list[tuple[int, bytes | None, bytes | None]]  # (offset, key, value) of the data records a reader gets


def txn(pid: int, seq: int, items: Iterable[Item], epoch: int = 0, ts: int = 1000) -> bytearray:
    """A transactional data batch of producer `pid`."""
    records = [Record(i, ts + i, k, v) for i, (k, v) in enumerate(items)]
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True)


def idempotent(pid: int, seq: int, items: Iterable[Item], ts: int = 1000) -> bytearray:
    records = [Record(i, ts + i, k, v) for i, (k, v) in enumerate(items)]
    return build_batch(records, producer_id=pid, producer_epoch=0, base_sequence=seq)


def plain(items: Iterable[Item], ts: int = 1000) -> bytearray:
    return build_batch([Record(i, ts + i, k, v) for i, (k, v) in enumerate(items)])


# --- what readers see ----------------------------------------------------------------------------------


async def batches_of(log: FileLog, start: int | None = None, limit: int | None = None) -> list[RecordBatch]:
    offset = log.log_start_offset if start is None else start
    data = b"".join(bytes(c) for c in (await log.read(offset, 1 << 26, max_offset=limit)).chunks)
    out = [b for _, b in iter_batches(memoryview(data))]
    assert all(b.validate_crc() for b in out), "a batch read back with a bad CRC"
    return out


async def committed_view(log: FileLog, start: int | None = None) -> View:
    """What a read_committed consumer fetching from `start` gets: batches below the last stable offset,
    filtered with the aborted transactions of the fetch as Kafka's client does (an aborted
    transaction's producer is skipped from its first offset until its ABORT marker)."""
    start = log.log_start_offset if start is None else start
    lso = log.last_stable_offset
    if start >= lso:
        return []
    pending = deque(await log.aborted_transactions(start, lso))
    aborting: set[int] = set()
    out: View = []
    for batch in await batches_of(log, start, lso):
        if batch.producer_id >= 0:
            while pending and pending[0].first_offset <= batch.last_offset:
                aborting.add(pending.popleft().producer_id)
            if batch.is_control and control_type(batch) == ControlType.ABORT:
                aborting.discard(batch.producer_id)
            elif batch.is_transactional and batch.producer_id in aborting:
                continue
        if not batch.is_control:
            out += [(r.offset, r.key, r.value) for r in iter_records(batch) if start <= r.offset < lso]
    return out


async def uncommitted_view(log: FileLog) -> View:
    batches = [b for b in await batches_of(log) if not b.is_control]
    return [(r.offset, r.key, r.value) for b in batches for r in iter_records(b)]


async def batch_view(log: FileLog) -> list[tuple[Any, ...]]:
    """Every batch as read_uncommitted gets it, markers included: offsets, attributes (the delete
    horizon flag), base timestamp (the horizon) and records."""
    return [(b.base_offset, b.last_offset, b.attributes, b.base_timestamp,
             tuple((r.offset, r.key, r.value) for r in iter_records(b))) for b in await batches_of(log)]


def table(view: View) -> dict[bytes | None, tuple[int, bytes | None]]:
    """The latest record of each key: what compaction must never change (no tombstones here)."""
    return {key: (offset, value) for offset, key, value in view}


async def check_readers(log: FileLog, expected_table: dict[Any, Any], where: str) -> View:
    """The read_committed view gives `expected_table`, from the log start and from every later offset
    (each fetch gets the aborted transactions of its own range); returns the view."""
    view = await committed_view(log)
    assert table(view) == expected_table, f"{where}: read_committed table"
    for offset in range(log.log_start_offset, log.log_end_offset):
        assert await committed_view(log, offset) == [v for v in view if v[0] >= offset], \
            f"{where}: read_committed from {offset}"
    return view


async def markers_of(log: FileLog, pid: int) -> list[RecordBatch]:
    return [b for b in await batches_of(log) if b.is_control and b.producer_id == pid]


# --- the scenario --------------------------------------------------------------------------------------

ABORTING, REWRITING, KEEPING, ENDING_ABORTED, FENCED, IDEMPOTENT, LATE_MARKER = 11, 12, 13, 14, 15, 16, 17


async def fill_scenario(log: FileLog) -> dict[str, int]:
    """Every case at once, in the first segment, which ends with never-superseded batches (so that no
    batch of interest is the kept-empty last batch of a group). Returns the offsets of interest."""
    at: dict[str, int] = {}

    async def put(name: str | None, buf: bytearray) -> None:
        result = await log.append(buf)
        if name is not None:
            at[name] = result.base_offset

    await put("a-committed", plain([(b"a", b"a1")]))
    await put("aborted-data", txn(ABORTING, 0, [(b"a", b"a-aborted"), (b"b", b"b-aborted")]))
    await put(None, plain([(b"x", b"x1")]))
    await put("abort", marker(ABORTING, commit=False, coordinator_epoch=3))
    await put("c1", txn(REWRITING, 0, [(b"c", b"c1")]))
    await put("commit-c1", marker(REWRITING, commit=True, coordinator_epoch=3))
    await put("d1", txn(KEEPING, 0, [(b"d", b"d1")]))  # never superseded: its COMMIT stays
    await put("commit-d1", marker(KEEPING, commit=True, coordinator_epoch=3))
    await put("c2", txn(REWRITING, 1, [(b"c", b"c2")]))  # REWRITING's last data batch
    await put("commit-c2", marker(REWRITING, commit=True, coordinator_epoch=4))
    await put("e1", txn(ABORTING, 2, [(b"e", b"e1")]))  # ABORTING's last data batch, committed
    await put("commit-e1", marker(ABORTING, commit=True, coordinator_epoch=4))
    await put("d2", txn(KEEPING, 1, [(b"d2", b"v")]))
    await put("commit-d2", marker(KEEPING, commit=True, coordinator_epoch=4))
    # Its last data batch is aborted: kept empty, with its ABORT marker and entry.
    await put("ending-aborted", txn(ENDING_ABORTED, 0, [(b"f", b"f-aborted")]))
    await put("ending-abort", marker(ENDING_ABORTED, commit=False))
    # Fenced: the coordinator aborted with a bumped epoch, no data batch since (Kafka keeps the marker).
    await put("fenced-data", txn(FENCED, 0, [(b"g", b"g-aborted")]))
    await put("fenced-abort", marker(FENCED, epoch=1, commit=False))
    await put("idempotent", idempotent(IDEMPOTENT, 0, [(b"h", b"h1")]))  # superseded below: kept empty
    # A marker with no data here after the producer's last batch: its coordinator epoch and timestamp
    # are the producer's, so it stays though its transaction is empty.
    await put(None, txn(LATE_MARKER, 0, [(b"h", b"h-late")]))
    await put(None, marker(LATE_MARKER, commit=True, coordinator_epoch=1, ts=4000))
    await put("late-marker", marker(LATE_MARKER, commit=True, coordinator_epoch=2, ts=6000))
    await put(None, plain([(b"h", b"h2")]))
    for i in range(3):
        await put(None, plain([(b"y%d" % i, b"y")]))
    return at


async def roll_more(log: FileLog, tag: int) -> None:
    """New data under new keys until a segment is closed with it: the next round is due."""
    count = len(log.segments)
    i = 0
    while len(log.segments) == count:
        await log.append(plain([(b"more-%d-%d" % (tag, i), b"m")]))
        i += 1


async def build(path: Path, clock: list[int]) -> tuple[FileEngine, FileLog, dict[str, int]]:
    engine, log = await open_log(path, CONFIG, clock=lambda: clock[0])
    at = await fill_scenario(log)
    await roll_more(log, 0)
    assert log.segments[0].next_offset > at["idempotent"], "the scenario fits the first segment"
    return engine, log, at


# --- aborted data ---------------------------------------------------------------------------------------


def test_aborted_data_goes_in_one_round_and_never_hides_an_older_committed_value(tmp_path: Path) -> None:
    clock = [NOW]

    async def go() -> None:
        engine, log, at = await build(tmp_path, clock)
        before = await check_readers(log, table(await committed_view(log)), "before")
        aborted_offsets = {at["aborted-data"], at["aborted-data"] + 1, at["ending-aborted"],
                           at["fenced-data"]}
        assert aborted_offsets <= {v[0] for v in await uncommitted_view(log)}
        assert (at["a-committed"], b"a", b"a1") in before and not aborted_offsets & {v[0] for v in before}

        result = await log.clean()
        assert result is not None and result.aborted_records_removed == 4, result
        uncommitted = await uncommitted_view(log)
        assert not aborted_offsets & {v[0] for v in uncommitted}, "aborted records go, whatever their keys"
        # The aborted newer value of `a` was not in the offset map: the committed a1 survives.
        assert (at["a-committed"], b"a", b"a1") in uncommitted
        # Committed transactional data is compacted like any other: c1 gave way to c2.
        assert [v for v in uncommitted if v[1] == b"c"] == [(at["c2"], b"c", b"c2")]
        assert uncommitted == [v for v in await check_readers(log, table(before), "after the round")]
        # The ABORT marker and its entry stay in the round that removed the data.
        assert [b.base_offset for b in await markers_of(log, ABORTING)] == [at["abort"], at["commit-e1"]]
        listed = await log.aborted_transactions(0, log.log_end_offset)
        assert AbortedTxn(ABORTING, at["aborted-data"], at["abort"], at["abort"] + 1) in listed
        await engine.close()
    run(go())


# --- markers ---------------------------------------------------------------------------------------------


def test_markers_get_a_horizon_once_their_transaction_is_empty_and_go_after_it(tmp_path: Path) -> None:
    """ABORT: kept (entry too) by the round that removed its data, stamped by the next round, gone (entry
    too) in the first round at or after now + delete.retention.ms. COMMIT likewise once the round that
    compacted its records away has passed."""
    clock = [NOW]
    part = tmp_path / "t-0"

    async def go() -> None:
        engine, log, at = await build(tmp_path, clock)

        async def marker_at(offset: int) -> RecordBatch | None:
            found = [b for b in await batches_of(log) if b.is_control and b.base_offset == offset]
            return found[0] if found else None

        async def round_at(now: int, tag: int) -> Any:
            clock[0] = now
            expected = table(await committed_view(log))
            result = await log.clean()
            assert result is not None and not result.aborted
            await check_readers(log, expected, f"round {tag}")
            await roll_more(log, tag)
            return result

        abort_entry = AbortedTxn(ABORTING, at["aborted-data"], at["abort"], at["abort"] + 1)
        await round_at(NOW, 1)  # removes the aborted data and c1
        for name in ("abort", "commit-c1"):
            kept = await marker_at(at[name])
            assert kept is not None and kept.delete_horizon_ms is None, f"{name}: kept as it was by round 1"
        assert abort_entry in await log.aborted_transactions(0, log.log_end_offset)

        stamped_at = NOW + 1000
        await round_at(stamped_at, 2)
        for name in ("abort", "commit-c1"):
            kept = await marker_at(at[name])
            assert kept is not None and kept.delete_horizon_ms == stamped_at + RETENTION, name
            assert len(list(iter_records(kept))) == 1, f"{name}: the marker keeps its control record"
        assert abort_entry in await log.aborted_transactions(0, log.log_end_offset)

        await round_at(stamped_at + RETENTION - 1, 3)
        assert await marker_at(at["abort"]) is not None and await marker_at(at["commit-c1"]) is not None
        assert abort_entry in await log.aborted_transactions(0, log.log_end_offset)

        result = await round_at(stamped_at + RETENTION, 4)
        assert result.markers_removed == 2, result
        assert await marker_at(at["abort"]) is None and await marker_at(at["commit-c1"]) is None
        listed = await log.aborted_transactions(0, log.log_end_offset)
        assert abort_entry not in listed, "the entry went with its marker"
        on_disk = b"".join((part / name).read_bytes() for name in segment_files(part, ".txnindex"))
        assert len(on_disk) // 34 == len(listed)
        # Markers of transactions with data left, and those holding a producer's state, stay whole.
        for name in ("commit-d1", "commit-c2", "commit-e1", "commit-d2", "ending-abort", "fenced-abort",
                     "late-marker"):
            assert await marker_at(at[name]) is not None, name
        expected = table(await committed_view(log))
        await engine.close()
        # A restart serves the same.
        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])
        await check_readers(log, expected, "after a restart")
        assert await log.aborted_transactions(0, log.log_end_offset) == listed
        await engine.close()
    run(go())


def test_a_marker_whose_transaction_still_has_data_is_never_removed(tmp_path: Path) -> None:
    clock = [NOW]

    async def go() -> None:
        engine, log, at = await build(tmp_path, clock)
        for tag, now in enumerate([NOW, NOW, NOW + 10 * RETENTION, NOW + 20 * RETENTION]):
            clock[0] = now
            assert await log.clean() is not None
            await roll_more(log, tag + 1)
        batches = {b.base_offset: b for b in await batches_of(log)}
        # d1 is never superseded: its COMMIT is never even stamped.
        assert batches[at["commit-d1"]].delete_horizon_ms is None
        assert list(iter_records(batches[at["d1"]]))
        # An aborted transaction whose batch holds its producer's state keeps its marker and entry.
        assert batches[at["ending-aborted"]].record_count == 0
        assert batches[at["ending-abort"]].delete_horizon_ms is None
        entry = AbortedTxn(ENDING_ABORTED, at["ending-aborted"], at["ending-abort"], at["ending-abort"] + 1)
        assert entry in await log.aborted_transactions(0, log.log_end_offset)
        await engine.close()
    run(go())


def test_an_ongoing_transaction_bounds_the_round(tmp_path: Path) -> None:
    """Kafka never cleans past the last stable offset: data of a transaction still ongoing may yet be
    aborted, so it may not shadow older committed values."""
    clock = [NOW]

    async def go() -> None:
        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])
        await log.append(plain([(b"k", b"committed")]))
        first = (await log.append(txn(21, 0, [(b"k", b"maybe")]))).base_offset
        await roll_more(log, 0)
        await roll_more(log, 1)
        assert log.last_stable_offset == first and log.segments[0].next_offset > first
        assert await log.clean() is None, "nothing below the segment holding the last stable offset"
        assert [v[2] for v in await uncommitted_view(log) if v[1] == b"k"] == [b"committed", b"maybe"]
        await log.append(marker(21, commit=False))
        await roll_more(log, 2)
        result = await log.clean()
        assert result is not None and result.aborted_records_removed == 1
        assert [v[2] for v in await uncommitted_view(log) if v[1] == b"k"] == [b"committed"]
        await engine.close()
    run(go())


# --- producer state --------------------------------------------------------------------------------------


def strip_for_full_replay(path: Path) -> None:
    """What a crash with nothing fsynced and the snapshots lost leaves: recovery replays every batch."""
    part = path / "t-0"
    for name in segment_files(part, SNAPSHOT_SUFFIX):
        (part / name).unlink()
    (path / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
    (path / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)


def test_each_producers_last_batch_stays_and_its_state_survives_a_crash(tmp_path: Path) -> None:
    clock = [NOW]

    async def go() -> None:
        engine, log, at = await build(tmp_path, clock)
        entries = log.producer_entries()
        lso = log.last_stable_offset
        by_pid = {e.producer_id: e for e in entries}
        assert by_pid[FENCED] == ProducerSnapshotEntry(FENCED, 1, -1, -1, 0, 5000, 7, -1)
        for tag, now in enumerate([NOW, NOW, NOW + 2 * RETENTION, NOW + 4 * RETENTION]):
            clock[0] = now
            assert await log.clean() is not None
            await roll_more(log, tag + 1)
        expected = table(await committed_view(log))
        batches = {b.base_offset: b for b in await batches_of(log)}
        assert at["fenced-data"] not in batches
        for pid in (ABORTING, REWRITING, KEEPING, ENDING_ABORTED, IDEMPOTENT):
            last = by_pid[pid].last_offset
            kept = [b for b in batches.values() if b.last_offset == last and b.producer_id == pid]
            assert kept, f"the last batch of producer {pid} stays"
        assert batches[at["idempotent"]].record_count == 0 and batches[at["ending-aborted"]].record_count == 0
        assert batches[at["fenced-abort"]].producer_epoch == 1, "the marker of the fenced epoch stays"
        engine.simulate_crash()

        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])  # from the snapshots
        assert log.producer_entries() == entries
        await check_readers(log, expected, "after a crash")
        engine.simulate_crash()
        strip_for_full_replay(tmp_path)
        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])
        assert log.producer_entries() == entries, "a replay of the compacted log gives the same state"
        assert log.ongoing_transactions() == {} and log.last_stable_offset >= lso
        await check_readers(log, expected, "after a full replay")
        await engine.close()
    run(go())


# --- readers, across rounds and crashes ------------------------------------------------------------------


def test_both_readers_see_what_kafkas_would_after_every_round(tmp_path: Path) -> None:
    """Interleaved transactions of several producers over few keys: after every round (time passing
    beyond the horizons), read_committed keeps the same table and serves nothing aborted from any
    offset, read_uncommitted keeps the latest committed value of each key below the round's end and
    loses the aborted records there, and the producer state is unchanged, also after a full replay."""
    clock = [NOW]
    seq: dict[int, int] = {}
    aborted: set[int] = set()

    async def go() -> None:
        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])
        open_txns: dict[int, list[int]] = {}
        n = 0
        for step in range(70):
            pid = 31 + step % 4
            kind = (step * 7) % 5
            if kind < 3 or pid not in open_txns:
                s = seq.get(pid, 0)
                items = [(b"k%d" % ((step + i) % 6), b"v%d" % n) for i in range(1 + step % 2)]
                seq[pid] = s + len(items)
                result = await log.append(txn(pid, s, items))
                open_txns.setdefault(pid, []).extend(range(result.base_offset, result.last_offset + 1))
                n += 1
            else:
                commit = step % 3 != 0
                await log.append(marker(pid, commit=commit, coordinator_epoch=step))
                if not commit:
                    aborted.update(open_txns[pid])
                del open_txns[pid]
            if step % 9 == 4:
                await log.append(plain([(b"k%d" % (step % 6), b"plain-%d" % step)]))
        for pid in list(open_txns):
            await log.append(marker(pid, commit=True))
        await roll_more(log, 0)
        entries = log.producer_entries()
        assert aborted and not aborted & {v[0] for v in await committed_view(log)}
        for tag, now in enumerate([NOW, NOW, NOW + RETENTION, NOW + 3 * RETENTION]):
            clock[0] = now
            committed_before = await committed_view(log)
            expected = table(committed_before)
            result = await log.clean()
            assert result is not None and not result.aborted
            where = f"round {tag}"
            await check_readers(log, expected, where)
            uncommitted = await uncommitted_view(log)
            below = [v for v in uncommitted if v[0] < result.end_offset]
            assert not aborted & {v[0] for v in below}, f"{where}: aborted data left"
            latest = table([v for v in committed_before if v[0] < result.end_offset])
            assert sorted(below) == sorted((o, k, v) for k, (o, v) in latest.items()), where
            assert log.producer_entries() == entries
            await roll_more(log, tag + 1)
        expected = table(await committed_view(log))
        engine.simulate_crash()
        strip_for_full_replay(tmp_path)
        engine, log = await open_log(tmp_path, CONFIG, clock=lambda: clock[0])
        assert log.producer_entries() == entries
        await check_readers(log, expected, "after a full replay")
        await engine.close()
    run(go())


def test_a_crash_at_every_step_of_a_round_leaves_a_consistent_log(tmp_path: Path) -> None:
    """The round that removes aborted data, the one that stamps markers and the one that drops them,
    each crashed at every file system step, then recovered from the recovery point or by a full
    replay: read_committed and the producer state are unchanged, read_uncommitted is the log before or
    after the round, and the next round finishes the job."""
    clock = [NOW]
    stage = tmp_path / "stage-0"

    async def prepare() -> list[ProducerSnapshotEntry]:
        engine, log, _ = await build(stage, clock)
        entries = log.producer_entries()
        await engine.close()
        return entries
    entries = run(prepare())

    Batches = list[tuple[Any, ...]]

    def clean_once(path: Path, now: int, fs: CrashingFileSystem | None = None, *,
                   more: bool = False) -> tuple[Batches, list[int]] | None:
        """Open (recovering), clean at `now`; the batches and the segments' base offsets (None after the
        injected crash)."""
        async def go() -> tuple[Batches, list[int]] | None:
            engine, log = await open_log(path, CONFIG, fs=fs, clock=lambda: now)
            await settle(engine)
            if fs is not None:
                fs.armed = True
            try:
                result = await log.clean(now)
            except StorageError:
                result = None
            if fs is not None and fs.dead:
                engine.simulate_crash()
                return None
            assert result is None or not result.aborted
            if more:
                await roll_more(log, now)
            view = await batch_view(log), [segment.base_offset for segment in log.segments]
            await engine.close()
            return view
        return run(go())

    def recovered(path: Path, where: str, *, full: bool,
                  expected: dict[Any, Any] | None) -> tuple[Batches, Any]:
        """Reopen after a crash; check the readers and the producer state; (the batches, the table)."""
        if full:
            strip_for_full_replay(path)
        else:
            (path / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)

        async def go() -> tuple[Batches, Any]:
            engine, log = await open_log(path, CONFIG, clock=lambda: NOW)
            got = table(await committed_view(log))
            await check_readers(log, got if expected is None else expected, where)
            assert log.producer_entries() == entries, f"{where}: producer state"
            assert log.ongoing_transactions() == {}, where
            view = await batch_view(log)
            await engine.close()
            return view, got
        return run(go())

    for name, now in (("A", NOW), ("B", NOW), ("C", NOW + RETENTION)):
        copy = tmp_path / f"before-{name}"
        shutil.copytree(stage, copy)
        before, expected = recovered(copy, f"round {name}, before", full=False, expected=None)
        counter = CrashingFileSystem()
        reference = tmp_path / f"reference-{name}"
        shutil.copytree(stage, reference)
        out = clean_once(reference, now, counter)
        assert out is not None
        after, bases = out
        assert after != before, f"round {name} changes the log"
        ranges = list(zip(bases, [*bases[1:], 1 << 62], strict=True))
        steps = len(counter.steps)
        # A crash after a group's swap but before the checkpoint leaves the round due again: the next
        # round then goes one step further (a marker whose transaction it emptied gets its horizon).
        again = tmp_path / f"again-{name}"
        shutil.copytree(reference, again)
        (again / CLEANER_OFFSET_CHECKPOINT).unlink()
        out = clean_once(again, now)
        assert out is not None
        after_again = out[0]
        assert any(n.endswith(".swap") for _, n in counter.steps), name
        for crash_at in range(1, steps + 1):
            for full in (False, True):
                work = tmp_path / f"crash-{name}-{crash_at}-{full}"
                shutil.copytree(stage, work)
                clean_once(work, now, CrashingFileSystem(crash_at))
                where = f"round {name}, crash at step {crash_at} ({counter.steps[crash_at - 1]}), full={full}"
                view, _ = recovered(work, where, full=full, expected=expected)
                for lo, hi in ranges:  # each rewritten group as it was before the round or after it
                    part = [b for b in view if lo <= b[0] < hi]
                    was, now_is = ([b for b in batches if lo <= b[0] < hi] for batches in (before, after))
                    assert part in (was, now_is), f"{where}: offsets [{lo}, {hi})"
                leftovers = [n for n in os.listdir(work / "t-0") if n.endswith((".cleaned", ".swap"))]
                assert not leftovers, f"{where}: {leftovers}"
                finished = clean_once(work, now)
                assert finished is not None and finished[0] in (after, after_again), \
                    f"{where}: the next round finishes the job"
                shutil.rmtree(work)
        # The next stage: this round done, and new dirty data so that the next round is due.
        next_stage = tmp_path / f"stage-{name}"
        shutil.copytree(stage, next_stage)
        clean_once(next_stage, now, more=True)
        stage = next_stage
