"""Log compaction (``cleanup.policy=compact``): Kafka's log cleaner for the file engine, one log at a time.

`FileLog.clean(now_ms)` runs one cleaning round, following Kafka's ``LogCleanerManager`` (which logs
are due) and ``Cleaner`` (how a log is cleaned).

What a round keeps and removes, and when a log is due, are Kafka's rules, shared with the other
engines in `storage.compaction`. Here the *segments* are the log's segment files, and the last batch of
each rewritten segment is kept (emptied when nothing in it stays), which also makes a ``.swap`` file say
exactly which segments it replaces. The aborted transactions come from the ``.txnindex`` entries of every
segment of the round's snapshot; the entries of a group move to the segment that replaces it unless
their ABORT marker went (a recovery that rebuilds an index from a replay drops an entry whose data is
gone sooner, which no reader can tell). Batches that lose nothing and need no horizon are copied byte
for byte.

Grouping. Adjacent segments are rewritten into one while their sizes add up to at most
``segment.bytes``, their indexes to ``segment.index.bytes``, and their offsets span at most 2^31-1
(Kafka's ``groupSegmentsBySize``). A group that would come out unchanged is not rewritten.

Crash safety (Kafka's ``replaceSegments`` protocol). A group is written as ``<base>.log.cleaned``,
``.index.cleaned`` and ``.timeindex.cleaned`` (and ``.txnindex.cleaned`` when ABORT markers with
entries remain in it, renamed ``.swap`` just before the commit) and fsynced, then renamed ``.log.swap``
-- the commit point -- then the indexes likewise, and the directory is fsynced. The old segments'
files are then deleted and the ``.swap`` files renamed to their final names, and the directory
fsynced. Recovery (`storage.file.recovery`) deletes ``.cleaned`` files and completes a ``.swap``: it
deletes the segment files whose base offset is in [swap base, swap next offset) and renames the
``.swap`` files. A crash anywhere therefore leaves each group either as before or as after the round.
The checkpoint is written (atomically replaced) only after every group of the round is in place.

Concurrency. Records are decoded only here, never on the produce path. The reading, filtering and
writing run on the log's write thread in steps of about ``STEP_BYTES`` of input, so appends queued
behind a step wait for one step, not for the whole round; the log's mutex is not held meanwhile
(appends only touch the active segment). The mutex is taken only to swap a group in: if retention,
DeleteRecords or truncation changed the group's segments meanwhile, the rewritten files are dropped
and the round stops (``aborted``). Swapping retires the old segment objects: reads that already hold
their descriptors finish on the old (unlinked) files, later reads get `SegmentGone` and start again
on the new segment list. The new segment serves reads through the descriptor opened on its
``.cleaned`` file, which the renames leave valid.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from protocol.primitives import INT32_MAX
from protocol.records import RecordBatch, RecordBatchError
from protocol.records.batch import compute_crc
from protocol.records.errors import CorruptRecordError
from storage.aborted_txns import AbortedTxnList
from storage.compaction import (
    MAP_MEMORY_BYTES,
    CleanedTransactions,
    CleanerSettings,
    CleanPlan,
    CleanResult,
    CleanStats,
    add_keys,
    filter_stored_batch,
    plan_cleaning,
)
from storage.file.fs import (
    READ_WRITE,
    FileSystem,
    StorageError,
    fsync_path,
    storage_error,
    unlink_if_exists,
    write_all,
    write_file,
)
from storage.file.index import OffsetIndex, TimeIndex
from storage.file.segment import LogSegment, SegmentGone, scan_batches
from storage.interface import AbortedTxn
from storage.tasks import retrieve_outcome

if TYPE_CHECKING:
    from storage.file.log import FileLog

T = TypeVar("T")

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

STEP_BYTES = 1 << 20  # input read per I/O-thread job


class _Aborted(Exception):
    """The log changed under the round (segments gone, truncated, closed): stop without harm."""


# --- the round (event loop) ------------------------------------------------------------------------


async def clean_log(log: FileLog, now: int) -> CleanResult | None:
    """One cleaning round of `log` at time `now`; None when the log is not due (see module doc)."""
    settings = CleanerSettings.of(log.config)
    if not settings.compact or log.closed or log.offline is not None:
        return None
    segments = log.segments
    if len(segments) < 2:
        return None
    checkpoint = log.cleaner_offset
    start, end = log.log_start_offset, log.log_end_offset
    first_dirty = checkpoint if checkpoint is not None and start <= checkpoint <= end else start
    truncations = log.truncations
    # Taken with the segments: every transaction with data below `stable` has its marker in them.
    stable = min([log.high_watermark, *(first for _, first in log.ongoing_transactions().values())])
    producers = log.producer_entries()
    plan = CleanPlan(0, 0, 0.0, False, False)
    done = CleanStats()  # what the groups swapped in (or found unchanged) did
    try:
        plan = await log.run_io(_plan_blocking, log, segments, first_dirty, settings, now, stable)
        if not plan.due:
            return None
        fs = log.fs
        txns = CleanedTransactions(await log.run_io(_aborted_blocking, log, segments), producers)
        key_map, end_index = await _drive(log, _build_map(fs, segments, plan, first_dirty, txns))
        end_offset = segments[end_index].base_offset
        for group in group_segments(segments[:end_index], settings.segment_bytes, settings.segment_index_bytes,
                                    end_offset):
            stats = CleanStats()
            new = await _drive(log, _clean_group(fs, log.directory, group, key_map, txns, now, settings,
                                                 stats, log.logger))
            if new is not None:
                await _swap_in(log, group, new, truncations)
                stats.segments_replaced, stats.segments_written = len(group), 1
                stats.bytes_before, stats.bytes_after = sum(s.size for s in group), new.size
            done.add(stats)
    except (_Aborted, SegmentGone):
        log.logger.info("storage.log.clean_aborted", reason="the log changed during the round",
                      segments_replaced=done.segments_replaced)
        return done.result(first_dirty, first_dirty, plan, aborted=True)
    except RecordBatchError as exc:
        raise StorageError(f"cannot compact {log.directory}: corrupt data: {exc}", path=log.directory) from None
    except OSError as exc:
        raise storage_error("cannot compact", log.directory, exc) from None
    await log.persist_cleaner_offset(end_offset)
    result = done.result(first_dirty, end_offset, plan)
    log.logger.info("storage.log.cleaned", first_dirty_offset=first_dirty, end_offset=end_offset,
                  dirty_ratio=round(plan.ratio, 3), forced=plan.forced, segments_replaced=result.segments_replaced,
                  segments_written=result.segments_written, bytes_before=result.bytes_before,
                  bytes_after=result.bytes_after, records_removed=result.records_removed,
                  tombstones_removed=result.tombstones_removed,
                  aborted_records_removed=result.aborted_records_removed,
                  markers_removed=result.markers_removed)
    return result


async def _drive(log: FileLog, steps: Generator[None, None, T]) -> T:
    """Run a step generator on the log's write thread, one job per step; closed there if we stop early."""
    try:
        while True:
            finished, value = await log.run_io(_advance, steps)
            if finished:
                return value  # type: ignore[no-any-return]
    except BaseException:
        try:
            log.submit_io(steps.close).add_done_callback(retrieve_outcome)
        except StorageError:
            pass  # the engine is closed: leftover .cleaned files go at the next start
        raise


def _advance(steps: Generator[None, None, T]) -> tuple[bool, T | None]:
    try:
        next(steps)
    except StopIteration as stop:
        return True, stop.value
    return False, None


async def _swap_in(log: FileLog, group: list[LogSegment], new: LogSegment, truncations: int) -> None:
    """Commit the rewritten group and put it in place through the log's segment-replacement API."""
    fs, directory = log.fs, log.directory
    swapped = await log.replace_segments(
        group, new, truncations=truncations, commit=functools.partial(_commit_blocking, fs, directory, new),
        finish=functools.partial(_finish_swap_blocking, fs, directory, group, new),
        discard=functools.partial(_discard_blocking, fs, new))
    if not swapped:
        raise _Aborted


# --- planning and the offset map (the log's write thread) ------------------------------------------


def _plan_blocking(log: FileLog, segments: list[LogSegment], first_dirty: int, settings: CleanerSettings,
                   now: int, stable: int) -> CleanPlan:
    """`plan_cleaning` for a snapshot of the log's segments, loading what it reads of them."""

    def first_batch_timestamp(index: int) -> int | None:
        segment = segments[index]
        segment.load_first_batch_timestamp()
        return segment.first_batch_timestamp

    try:
        for segment in segments[:-1]:
            log.ensure_loaded(segment)
        return plan_cleaning(segments, first_dirty, settings, now, stable, first_batch_timestamp)
    except OSError as exc:
        raise storage_error("cannot inspect segments of", log.directory, exc) from None


def _aborted_blocking(log: FileLog, segments: list[LogSegment]) -> list[AbortedTxn]:
    """The aborted transactions of every segment (below the log start too: the round rewrites those
    batches, and a replay of the producer state reads them)."""
    found: list[AbortedTxn] = []
    try:
        for segment in segments:
            found.extend(segment.txn_index.load(log.logger))
    except OSError as exc:
        raise storage_error("cannot read the transaction index of", log.directory, exc) from None
    return found


def _build_map(fs: FileSystem, segments: list[LogSegment], plan: CleanPlan, first_dirty: int,
               txns: CleanedTransactions) -> Generator[None, None, tuple[dict[bytes, int], int]]:
    """Key -> last offset over the dirty segments (`add_keys`); returns it and the index of the first
    unmapped one."""
    key_map: dict[bytes, int] = {}
    used = 0
    budget = STEP_BYTES
    end_index = plan.dirty_from
    for i in range(plan.dirty_from, plan.uncleanable):
        if i > plan.dirty_from and used > MAP_MEMORY_BYTES:
            break
        segment = segments[i]
        with segment.opened() as fd:
            position = 0
            if first_dirty > segment.base_offset:
                assert segment.offset_index is not None
                position = segment.offset_index.lookup(first_dirty)[1]
            for header, buf, at in scan_batches(fs, fd, position, segment.size, with_body=True):
                used += add_keys(_checked_batch(buf, at, header.crc, segment, header.position), first_dirty, txns,
                                 key_map)
                budget -= header.size
                if budget <= 0:
                    budget = STEP_BYTES
                    yield
        end_index = i + 1
    return key_map, end_index


def group_segments(segments: Sequence[LogSegment], max_bytes: int, max_index_bytes: int,
                   end_offset: int) -> list[list[LogSegment]]:
    """Kafka's groupSegmentsBySize: adjacent segments whose sizes, index sizes and offset span fit one."""
    groups: list[list[LogSegment]] = []
    i = 0
    while i < len(segments):
        first = segments[i]
        group = [first]
        size, index_bytes, time_bytes = first.size, _index_bytes(first), _time_index_bytes(first)
        i += 1
        while i < len(segments):
            candidate = segments[i]
            last = segments[i + 1].base_offset - 1 if i + 1 < len(segments) else end_offset - 1
            if (size + candidate.size > max_bytes
                    or index_bytes + _index_bytes(candidate) > max_index_bytes
                    or time_bytes + _time_index_bytes(candidate) > max_index_bytes
                    or (candidate.size > 0 and last - first.base_offset > INT32_MAX)):
                break
            group.append(candidate)
            size += candidate.size
            index_bytes += _index_bytes(candidate)
            time_bytes += _time_index_bytes(candidate)
            i += 1
        groups.append(group)
    return groups


def _index_bytes(segment: LogSegment) -> int:
    return 0 if segment.offset_index is None else len(segment.offset_index) * OffsetIndex.ENTRY_SIZE


def _time_index_bytes(segment: LogSegment) -> int:
    return 0 if segment.time_index is None else len(segment.time_index) * TimeIndex.ENTRY_SIZE


def _checked_batch(buf: bytes, at: int, crc: int, segment: LogSegment, position: int) -> RecordBatch:
    if compute_crc(buf, at) != crc:
        raise CorruptRecordError(f"batch at position {position} of {segment.name} fails its CRC check")
    return RecordBatch(buf, at)


# --- rewriting a group (the log's write thread) ----------------------------------------------------


def _clean_group(fs: FileSystem, directory: str, group: list[LogSegment], key_map: dict[bytes, int],
                 txns: CleanedTransactions, now: int, settings: CleanerSettings, stats: CleanStats,
                 log: Any) -> Generator[None, None, LogSegment | None]:
    """Write the group's retained batches as one ``.cleaned`` segment, fsynced, with its indexes.

    Returns the new segment (serving reads through the open ``.cleaned`` descriptor) or None when the
    group would come out unchanged (nothing removed, no horizon to set, a single segment).
    """
    nonempty = [i for i, segment in enumerate(group) if segment.size > 0]
    if not nonempty:
        return None
    last_index = nonempty[-1]
    first = group[0]
    new = LogSegment(fs, directory, first.base_offset, created_ms=first.created_ms,
                     roll_jitter_ms=first.roll_jitter_ms, modified_ms=group[-1].modified_ms, files=first.files)
    new.reset_state()
    interval = settings.index_interval_bytes
    fd = fs.open(new.log_path + CLEANED_SUFFIX, READ_WRITE | os.O_TRUNC)
    adopted = False
    try:
        changed = len(group) > 1
        dropped_markers: set[int] = set()
        pending = bytearray()
        written = position = 0
        budget = STEP_BYTES
        for i, segment in enumerate(group):
            with segment.opened() as source:
                for header, buf, at in scan_batches(fs, source, 0, segment.size, with_body=True):
                    last = i == last_index and header.position + header.size == segment.size
                    batch = _checked_batch(buf, at, header.crc, segment, header.position)
                    kept = filter_stored_batch(batch, key_map, txns, now, settings.delete_retention_ms, last, stats)
                    budget -= header.size
                    if kept is None:
                        changed = True
                        if batch.is_control:
                            dropped_markers.add(header.base_offset)
                    else:
                        data, max_timestamp = kept
                        if data is None:
                            data = memoryview(buf)[at:at + header.size]
                        else:
                            changed = True
                        pending += data
                        new.account_batch(position, len(data), header.last_offset, max_timestamp, interval)
                        position += len(data)
                        if len(pending) >= STEP_BYTES:
                            write_all(fs, fd, pending, written)
                            written += len(pending)
                            pending.clear()
                    if budget <= 0:
                        budget = STEP_BYTES
                        yield
        if not changed:
            return None
        if pending:
            write_all(fs, fd, pending, written)
        fs.fsync(fd)
        new.size = position
        new.seal()
        assert new.offset_index is not None and new.time_index is not None
        for index, path in ((new.offset_index, new.index_path), (new.time_index, new.time_index_path)):
            write_file(fs, path + CLEANED_SUFFIX, index.encode(), sync=True)
            index.written = len(index)
        # An entry lives with its ABORT marker: it moves to the new segment unless its marker went.
        aborted = AbortedTxnList()
        for segment in group:
            aborted.extend(segment.txn_index.load(log))
        aborted = aborted.without_markers_at(dropped_markers)
        new.txn_index.adopt(aborted, written=len(aborted) > 0)
        if len(aborted):
            new.txn_index.write_copy_blocking(new.txn_index_path + CLEANED_SUFFIX)
        new.attach(fd)
        adopted = True
        return new
    finally:
        if not adopted:
            _close_quietly(fs, fd)
            _unlink_quietly(fs, _cleaned_paths(new))


# --- the swap (the log's write thread) -------------------------------------------------------------


def _cleaned_paths(segment: LogSegment) -> list[str]:
    return [path + CLEANED_SUFFIX
            for path in (segment.log_path, segment.index_path, segment.time_index_path, segment.txn_index_path)]


def _commit_blocking(fs: FileSystem, directory: str, new: LogSegment) -> StorageError | None:
    """Rename the ``.cleaned`` files ``.swap`` (the log first: that rename commits) and fsync the
    directory. Raises when nothing was committed (the ``.cleaned`` files are gone then); after the
    commit, returns the error that must take the log offline, if any.

    The ``.txnindex`` goes to ``.swap`` before the commit: it cannot be rebuilt from the segment, and
    recovery tells a swap finished up to the ``.log`` from one never committed by whether the
    ``.log.cleaned`` is still there (`storage.file.recovery`)."""
    try:
        if new.txn_index.exists:
            fs.replace(new.txn_index_path + CLEANED_SUFFIX, new.txn_index_path + SWAP_SUFFIX)
        fs.replace(new.log_path + CLEANED_SUFFIX, new.log_path + SWAP_SUFFIX)
    except OSError as exc:
        _discard_blocking(fs, new)
        raise storage_error("cannot commit the cleaned segment", new.log_path + SWAP_SUFFIX, exc) from None
    for path in (new.index_path, new.time_index_path):
        try:
            fs.replace(path + CLEANED_SUFFIX, path + SWAP_SUFFIX)
        except OSError:
            new.index_dirty = True  # rewritten from memory under the final name at close
    try:
        fsync_path(fs, directory)
    except OSError as exc:
        return storage_error("cannot fsync", directory, exc)
    return None


def _finish_swap_blocking(fs: FileSystem, directory: str, group: list[LogSegment], new: LogSegment) -> None:
    """Delete the replaced segments' files, give the ``.swap`` files their final names, fsync the
    directory. The old files go first: until the ``.swap`` log is renamed, recovery redoes all this."""
    path = directory
    try:
        for old in group:
            for path in (old.log_path, old.index_path, old.time_index_path, old.txn_index_path):
                unlink_if_exists(fs, path)
        for path in (new.log_path, new.index_path, new.time_index_path):
            try:
                fs.replace(path + SWAP_SUFFIX, path)
            except FileNotFoundError:
                if path == new.log_path:
                    raise
                new.index_dirty = True
            unlink_if_exists(fs, path + CLEANED_SUFFIX)
        if new.txn_index.exists:
            path = new.txn_index_path
            fs.replace(path + SWAP_SUFFIX, path)
        new.hold_open(False)  # the .log has its final name: the descriptor may be closed and reopened
        path = directory
        fsync_path(fs, directory)
    except OSError as exc:
        raise storage_error("cannot swap in the cleaned segment", path, exc) from None


def _discard_blocking(fs: FileSystem, new: LogSegment) -> None:
    """Drop a rewritten segment that will not be swapped in (a ``.txnindex.swap`` before the
    ``.log.cleaned``: recovery reads a ``.txnindex.swap`` without the other as a finished swap)."""
    new.retire()
    _unlink_quietly(fs, [new.txn_index_path + SWAP_SUFFIX, *_cleaned_paths(new)])


def _close_quietly(fs: FileSystem, fd: int) -> None:
    try:
        fs.close(fd)
    except OSError:
        pass


def _unlink_quietly(fs: FileSystem, paths: list[str]) -> None:
    for path in paths:
        try:
            unlink_if_exists(fs, path)
        except OSError:
            pass
