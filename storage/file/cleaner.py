"""Log compaction (``cleanup.policy=compact``): Kafka's log cleaner for the file engine, one log at a time.

`FileLog.clean(now_ms)` runs one cleaning round, following Kafka's ``LogCleanerManager`` (which logs
are due) and ``Cleaner`` (how a log is cleaned):

* **Which part.** The *clean* part ends at the offset in ``cleaner-offset-checkpoint`` (the log start
  offset when there is none, or when it is below the log start or past the log end). The *dirty*
  part runs from there to the first uncleanable offset: the active segment's base offset, or earlier
  the base offset of the first dirty segment whose largest timestamp is within
  ``min.compaction.lag.ms`` of now, or of the segment holding the first offset of the earliest ongoing
  transaction (Kafka never cleans past the last stable offset: that transaction may still abort).
  Whole segments only; the active segment is never cleaned.
* **When.** The dirty ratio, dirty bytes / (clean + dirty bytes), must exceed
  ``min.cleanable.dirty.ratio``; or, with some dirty bytes, the earliest first-batch timestamp of the
  dirty segments must be more than ``max.compaction.lag.ms`` old (a forced clean).
* **The offset map.** The dirty segments are read, and each key maps to its last offset there (keys
  exactly, not hashed as Kafka does); markers and the data of aborted transactions stay out, so an
  aborted value never hides an older committed one. When the keys pass ``MAP_MEMORY_BYTES`` (Kafka's
  dedupe buffer size) the map stops at the next segment boundary (Kafka may stop inside a segment)
  and the rest waits for the next round. The round's end offset is the base offset of the first
  segment not mapped; it becomes the new checkpoint.
* **Which records stay.** Every segment below the end offset, clean ones included, is filtered: a
  record stays if its offset is at least its key's offset in the map (so the latest value of each
  key), unless it is a tombstone (null value) in a batch whose delete horizon has passed. KIP-534:
  the first round that keeps a tombstone marks its batch with a delete horizon, ``now +
  delete.retention.ms`` (attribute bit 6, the horizon in the base timestamp field), so a tombstone
  stays readable at least delete.retention.ms after the round that cleaned it and goes in the first
  round after that (a round needs dirty data or max.compaction.lag.ms, as in Kafka). Keyless
  records are kept (Kafka drops them as invalid; the broker rejects them for compacted topics, so
  they only come from before a policy change).
* **Transactions** (Kafka's ``CleanedTransactionMetadata``). The round reads the ``.txnindex``
  entries of every segment (an aborted transaction's data lies in [first offset, marker offset] of
  its producer; its entry lives with its ABORT marker, possibly after the round's end). A
  transactional data batch of an aborted transaction loses every record, whatever its keys;
  committed transactional data is compacted like any other. A COMMIT or ABORT marker may go only
  when its transaction is empty: the round, reading every batch below its end offset in order, read
  no transactional batch of its producer since that producer's previous marker (so a round that
  removed a transaction's last batches keeps its marker). The first round that finds it so gives the
  marker a delete horizon as for tombstones, and the first round at or after the horizon drops it;
  an ABORT marker's ``.txnindex`` entry goes with it (the entries of a group move to the segment
  that replaces it unless their marker went; a recovery that rebuilds an index from a replay drops
  an entry whose data is gone sooner, which no reader can tell). Other control records stay.
* **Producer state** (Kafka's ``isBatchLastRecordOfProducer``). For each producer the log's state
  knows, the batch holding its last data offset stays, emptied if it loses every record, and so does
  any marker of its current epoch after that batch, whole: Kafka keeps such a marker when the
  producer has no data batch since its epoch changed; keeping it otherwise too keeps the coordinator
  epoch and timestamp of its last marker. A replay of the compacted log (recovery without a
  snapshot) then rebuilds the same producer entries.
* **Offsets.** Records keep their offsets; a batch keeps its base offset and its last offset delta
  whatever it loses (Kafka's v2 rule, which also keeps producer sequence ranges). A batch that loses
  every record goes, except a producer's last one (above) and the last batch of each rewritten
  segment, kept empty (a marker there stays whole): Kafka keeps the round's last batch "so that last
  offset information is not lost"; keeping it per rewritten segment also makes a ``.swap`` file say
  exactly which segments it replaces. Batches that lose nothing and need no horizon are copied byte
  for byte; others are re-encoded and recompressed with their codec.
  Producer id, epoch, base sequence, leader epoch and timestamp type are kept.
* **Grouping.** Adjacent segments are rewritten into one while their sizes add up to at most
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

import asyncio
import bisect
import functools
import os
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from protocol.primitives import INT32_MAX, INT64_MAX
from protocol.records import Compression, Record, RecordBatch, RecordBatchError, compress, iter_records
from protocol.records.batch import (
    COMPRESSION_MASK,
    DELETE_HORIZON_FLAG,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    TimestampType,
    compute_crc,
    write_crc,
)
from protocol.records.control import ControlType, control_type
from protocol.records.errors import CorruptRecordError
from protocol.records.record import encode_record
from storage.aborted_txns import AbortedTxnList
from storage.file.config import LogConfig
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
from storage.interface import AbortedTxn, ProducerSnapshotEntry

if TYPE_CHECKING:
    from storage.file.log import FileLog

T = TypeVar("T")

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

# Kafka's topic defaults for the settings the file engine's LogConfig does not default itself.
CLEANER_DEFAULTS: dict[str, Any] = {
    "min.cleanable.dirty.ratio": 0.5,
    "min.compaction.lag.ms": 0,
    "max.compaction.lag.ms": INT64_MAX,
    "delete.retention.ms": 86_400_000,  # 1 day
}

STEP_BYTES = 1 << 20  # input read per I/O-thread job
MAP_MEMORY_BYTES = 128 << 20  # Kafka's log.cleaner.dedupe.buffer.size default
MAP_ENTRY_OVERHEAD = 100  # estimated bytes of a dict entry besides the key's bytes


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one cleaning round did."""

    first_dirty_offset: int  # where the dirty part began (the checkpoint before)
    end_offset: int  # the checkpoint after: everything below is clean (unchanged when aborted)
    cleanable_ratio: float  # dirty bytes / (clean + dirty bytes) when the round began
    forced: bool  # due to max.compaction.lag.ms rather than the ratio
    segments_replaced: int  # old segments swapped out
    segments_written: int  # rewritten segments swapped in
    bytes_before: int  # size of the replaced segments
    bytes_after: int  # size of the rewritten segments
    records_read: int
    records_removed: int  # superseded records, expired tombstones and records of aborted transactions
    tombstones_removed: int
    keyless_records: int  # kept as they are
    aborted: bool = False  # retention, truncation or close changed the log under the round
    aborted_records_removed: int = 0  # data records of aborted transactions
    markers_removed: int = 0  # COMMIT and ABORT markers (control batches) whose delete horizon passed


@dataclass(frozen=True, slots=True)
class CleanerSettings:
    compact: bool
    min_cleanable_ratio: float
    min_compaction_lag_ms: int
    max_compaction_lag_ms: int
    delete_retention_ms: int
    segment_bytes: int
    segment_index_bytes: int
    index_interval_bytes: int

    @classmethod
    def of(cls, config: LogConfig) -> CleanerSettings:
        def value(name: str) -> Any:
            try:
                return config.value(name)
            except KeyError:
                return CLEANER_DEFAULTS[name]

        policies = [p.strip() for p in str(config.value("cleanup.policy")).split(",")]
        return cls("compact" in policies, float(value("min.cleanable.dirty.ratio")),
                   max(int(value("min.compaction.lag.ms")), 0), max(int(value("max.compaction.lag.ms")), 0),
                   max(int(value("delete.retention.ms")), 0), config.segment_bytes, config.segment_index_bytes,
                   config.index_interval_bytes)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The cleanable range of a segment snapshot (indexes into it) and whether the log is due."""

    dirty_from: int  # first segment holding dirty data
    uncleanable: int  # first segment that may not be cleaned (at most the active one)
    ratio: float
    forced: bool
    due: bool


@dataclass(slots=True)
class _Stats:
    records_read: int = 0
    superseded: int = 0
    tombstones_removed: int = 0
    keyless: int = 0
    aborted_removed: int = 0
    markers_removed: int = 0
    segments_replaced: int = 0
    segments_written: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def add(self, other: _Stats) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def result(self, first_dirty: int, end_offset: int, plan: _Plan, aborted: bool = False) -> CleanResult:
        return CleanResult(first_dirty, end_offset, plan.ratio, plan.forced, self.segments_replaced,
                           self.segments_written, self.bytes_before, self.bytes_after, self.records_read,
                           self.superseded + self.tombstones_removed + self.aborted_removed,
                           self.tombstones_removed, self.keyless, aborted,
                           aborted_records_removed=self.aborted_removed, markers_removed=self.markers_removed)


class _Aborted(Exception):
    """The log changed under the round (segments gone, truncated, closed): stop without harm."""


class _Transactions:
    """What one round knows of the log's transactions (Kafka's ``CleanedTransactionMetadata``, and the
    producers' last batches of ``isBatchLastRecordOfProducer``).

    Aborted ranges come from the ``.txnindex`` entries of every segment of the round's snapshot: an
    aborted transaction's data lies in [first offset, marker offset] of its producer, and a producer's
    ranges never overlap, so whether a batch is aborted needs no state. Whether a marker's transaction
    is empty does: the round reads every batch below its end offset in offset order, so a marker of
    producer P may go only if no transactional data batch of P was read since P's previous marker (the
    batches of its transaction, removed or not by this round, all come before it)."""

    __slots__ = ("_firsts", "_lasts", "_open", "_producers")

    def __init__(self, aborted: Iterable[AbortedTxn], producers: Iterable[ProducerSnapshotEntry]) -> None:
        ranges: dict[int, list[tuple[int, int]]] = {}
        for txn in aborted:
            ranges.setdefault(txn.producer_id, []).append((txn.last_offset, txn.first_offset))
        self._lasts: dict[int, list[int]] = {}
        self._firsts: dict[int, list[int]] = {}
        for producer_id, found in ranges.items():
            found.sort()
            self._lasts[producer_id] = [last for last, _ in found]
            self._firsts[producer_id] = [first for _, first in found]
        self._producers = {e.producer_id: (e.last_offset, e.producer_epoch) for e in producers}
        self._open: set[int] = set()  # producers with a transactional batch read since their last marker

    def is_aborted(self, batch: RecordBatch) -> bool:
        """Whether a data batch belongs to an aborted transaction."""
        if not batch.is_transactional or batch.is_control:
            return False
        lasts = self._lasts.get(batch.producer_id)
        if lasts is None:
            return False
        at = bisect.bisect_left(lasts, batch.base_offset)
        return at < len(lasts) and self._firsts[batch.producer_id][at] <= batch.base_offset

    def read_data(self, batch: RecordBatch) -> bool:
        """A data batch read by the round, in offset order; whether it belongs to an aborted transaction."""
        if batch.is_transactional and batch.producer_id >= 0:
            self._open.add(batch.producer_id)
        return self.is_aborted(batch)

    def read_marker(self, batch: RecordBatch) -> bool:
        """A control batch read by the round, in offset order; whether its transaction is empty, so that
        it may go once its delete horizon passed. Control records other than COMMIT and ABORT stay."""
        if control_type(batch) not in (ControlType.ABORT, ControlType.COMMIT):
            return False
        producer_id = batch.producer_id
        if producer_id in self._open:
            self._open.discard(producer_id)
            return False
        return True

    def holds_producer_state(self, batch: RecordBatch) -> bool:
        """Whether the batch must stay, possibly emptied, for the producer's state to survive a replay:
        the last data batch of a producer the log knows (sequence, epoch, offsets), and any marker of
        its current epoch after that batch (Kafka keeps such a marker when the producer has no data
        batch since its epoch changed; keeping it otherwise too keeps the coordinator epoch and
        timestamp of the producer's last marker)."""
        entry = self._producers.get(batch.producer_id)
        if entry is None:
            return False
        last_offset, epoch = entry
        if batch.is_control:
            return batch.producer_epoch == epoch and batch.base_offset > last_offset
        return batch.last_offset == last_offset


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
    plan = _Plan(0, 0, 0.0, False, False)
    done = _Stats()  # what the groups swapped in (or found unchanged) did
    try:
        plan = await log.run_io(_plan_blocking, log, segments, first_dirty, settings, now, stable)
        if not plan.due:
            return None
        fs = log.fs
        txns = _Transactions(await log.run_io(_aborted_blocking, log, segments), producers)
        key_map, end_index = await _drive(log, _build_map(fs, segments, plan, first_dirty, txns))
        end_offset = segments[end_index].base_offset
        for group in group_segments(segments[:end_index], settings.segment_bytes, settings.segment_index_bytes,
                                    end_offset):
            stats = _Stats()
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
            log.submit_io(steps.close).add_done_callback(_consume)
        except StorageError:
            pass  # the engine is closed: leftover .cleaned files go at the next start
        raise


def _advance(steps: Generator[None, None, T]) -> tuple[bool, T | None]:
    try:
        next(steps)
    except StopIteration as stop:
        return True, stop.value
    return False, None


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


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
                   now: int, stable: int) -> _Plan:
    """LogCleanerManager's cleanableOffsets, dirty ratio and max compaction delay, for a snapshot;
    `stable`: the first offset of the earliest ongoing transaction (the high watermark when none)."""
    try:
        for segment in segments[:-1]:
            log.ensure_loaded(segment)
        bases = [s.base_offset for s in segments]
        active = len(segments) - 1
        dirty_from = min(max(bisect.bisect_right(bases, first_dirty) - 1, 0), active)
        # Kafka never cleans past the last stable offset: an ongoing transaction may still abort.
        uncleanable = min(active, max(bisect.bisect_right(bases, stable) - 1, 0))
        dirty_from = min(dirty_from, uncleanable)
        if settings.min_compaction_lag_ms > 0:
            for i in range(dirty_from, uncleanable):
                if segments[i].max_timestamp > now - settings.min_compaction_lag_ms:
                    uncleanable = i
                    break
        clean_bytes = sum(s.size for s in segments[:dirty_from])
        dirty_bytes = sum(s.size for s in segments[dirty_from:uncleanable])
        total = clean_bytes + dirty_bytes
        ratio = dirty_bytes / total if total else 0.0
        earliest = INT64_MAX
        for segment in segments[dirty_from:active]:
            segment.load_first_batch_timestamp()
            first = segment.first_batch_timestamp
            if first is not None and first > 0:
                earliest = min(earliest, first)
        forced = dirty_bytes > 0 and earliest < now - settings.max_compaction_lag_ms
    except OSError as exc:
        raise storage_error("cannot inspect segments of", log.directory, exc) from None
    return _Plan(dirty_from, uncleanable, ratio, forced, forced or ratio > settings.min_cleanable_ratio)


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


def _build_map(fs: FileSystem, segments: list[LogSegment], plan: _Plan, first_dirty: int,
               txns: _Transactions) -> Generator[None, None, tuple[dict[bytes, int], int]]:
    """Key -> last offset over the dirty segments; returns it and the index of the first unmapped one.
    Markers and aborted data stay out (an aborted record must not hide an older committed value)."""
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
                batch = _checked_batch(buf, at, header.crc, segment, header.position)
                if header.last_offset >= first_dirty and not batch.is_control and not txns.is_aborted(batch):
                    for record in iter_records(batch):
                        key = record.key
                        if key is not None and record.offset >= first_dirty:
                            if key not in key_map:
                                used += len(key) + MAP_ENTRY_OVERHEAD
                            key_map[key] = record.offset
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
                 txns: _Transactions, now: int, settings: CleanerSettings, stats: _Stats,
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
                    if batch.is_control:
                        kept = _filter_marker(batch, txns, now, settings.delete_retention_ms, last, stats)
                    else:
                        kept = _filter_batch(batch, key_map, txns, now, settings.delete_retention_ms, last,
                                             stats)
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
            for txn in segment.txn_index.load(log):
                if txn.last_offset not in dropped_markers:
                    aborted.append(txn)
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


def _filter_marker(batch: RecordBatch, txns: _Transactions, now: int, delete_retention_ms: int, last: bool,
                   stats: _Stats) -> tuple[bytearray | None, int] | None:
    """A control batch: as `_filter_batch` answers. A marker whose transaction is empty gets a delete
    horizon in the first round that finds it so (KIP-534, as tombstones), and goes in the first round
    after the horizon, unless it holds its producer's state or ends the group (kept whole then)."""
    if not txns.read_marker(batch):
        return None, batch.max_timestamp
    horizon = batch.delete_horizon_ms
    if horizon is None:
        return _encode(batch, list(iter_records(batch)), min(now + delete_retention_ms, INT64_MAX))
    if now < horizon or last or txns.holds_producer_state(batch):
        return None, batch.max_timestamp
    stats.markers_removed += 1
    return None


def _filter_batch(batch: RecordBatch, key_map: dict[bytes, int], txns: _Transactions, now: int,
                  delete_retention_ms: int, last: bool, stats: _Stats) -> tuple[bytearray | None, int] | None:
    """None to drop the batch; (None, max timestamp) to copy it as it is; (new bytes, max timestamp).

    A batch that loses every record stays, empty, when it ends the group or holds its producer's state."""
    keep_empty = last or txns.holds_producer_state(batch)
    if txns.read_data(batch):  # aborted: every record goes, whatever its key
        count = batch.record_count
        stats.records_read += count
        stats.aborted_removed += count
        if not keep_empty:
            return None
        return (None, batch.max_timestamp) if count == 0 else _encode(batch, [], None)
    records = list(iter_records(batch))
    stats.records_read += len(records)
    horizon = batch.delete_horizon_ms
    kept: list[Record] = []
    tombstone = False
    for record in records:
        if record.key is None:
            stats.keyless += 1
        elif record.offset < key_map.get(record.key, -1):
            stats.superseded += 1
            continue
        elif record.value is None:
            if horizon is not None and now >= horizon:
                stats.tombstones_removed += 1
                continue
            tombstone = True
        kept.append(record)
    set_horizon = tombstone and horizon is None
    if not kept:
        if not keep_empty:
            return None
        if not records:
            return None, batch.max_timestamp
        return _encode(batch, [], None)  # kept empty: its header holds the segment end or producer state
    if len(kept) == len(records) and not set_horizon:
        return None, batch.max_timestamp
    if set_horizon:
        horizon = min(now + delete_retention_ms, INT64_MAX)
    return _encode(batch, kept, horizon)


def _encode(batch: RecordBatch, records: list[Record], horizon: int | None) -> tuple[bytearray, int]:
    """`batch` re-encoded with only `records`: same base offset, last offset delta, producer fields and
    codec; the base timestamp holds the delete horizon when there is one (KIP-534)."""
    log_append_time = batch.timestamp_type == TimestampType.LOG_APPEND_TIME
    if records and not log_append_time:
        max_timestamp = max(record.timestamp for record in records)
    else:
        max_timestamp = batch.max_timestamp
    codec = batch.compression if records else Compression.NONE
    if horizon is not None:
        base_timestamp = horizon
    else:
        base_timestamp = records[0].timestamp if records else max_timestamp
    body = bytearray()
    base_offset = batch.base_offset
    for record in records:
        encode_record(body, record.offset - base_offset, record.timestamp - base_timestamp, record.key, record.value,
                      record.headers)
    out = bytearray(HEADER_SIZE)
    out += compress(codec, body) if codec else body
    attributes = (batch.attributes & ~(COMPRESSION_MASK | DELETE_HORIZON_FLAG)) | codec
    if horizon is not None:
        attributes |= DELETE_HORIZON_FLAG
    HEADER.pack_into(out, 0, base_offset, len(out) - LOG_OVERHEAD, batch.partition_leader_epoch, MAGIC, 0,
                     attributes, batch.last_offset_delta, base_timestamp, max_timestamp, batch.producer_id,
                     batch.producer_epoch, batch.base_sequence, len(records))
    write_crc(out, 0)
    return out, max_timestamp


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
