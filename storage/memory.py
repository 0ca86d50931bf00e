"""The in-memory storage engine (``memory://``): batches kept as bytes in lists, nothing on disk.

Meant for tests and CI: fast, and gone when the process ends. Each stored batch is one ``bytes``
object of its own (a single copy out of the request frame, never a view into it, which would keep the
whole frame alive), found by binary search over base offsets. The exception is a large batch that is
nearly all of its frame (`keeps_frame`): it is kept as a view of the frame, since copying 16 MiB
would hold the event loop for milliseconds and keeping the frame wastes next to nothing.

What is dropped is freed at once, so a broker that creates and deletes topics all day stays the size
of what it currently holds:

- deleting a partition (`MemoryEngine.delete_log`) or closing the engine drops the log's batches, even
  while something (a Fetch in flight, a topic object) still refers to the log; appends to a deleted log
  answer UNKNOWN_TOPIC_OR_PARTITION;
- retention (`MemoryLog.apply_retention`, called every ``log.retention.check.interval.ms``) applies the
  file engine's rules (`storage.file.retention`) with every batch in the role of a Kafka segment:
  ``retention.ms`` by the batch's largest timestamp (its append time when it carries none, as Kafka
  falls back to the segment file's mtime), then ``retention.bytes``, when ``cleanup.policy`` includes
  delete; the log start offset moves to the first batch kept (to the log end when none is);
- DeleteRecords drops the batches wholly below the new log start offset (one straddling it stays, as
  Kafka keeps its segment); truncation drops the tail.

Transactions: every appended batch feeds the log's `TransactionTracker` (`storage.transactions`),
and the aborted transactions it reports are kept in one `AbortedTxnList` (those whose marker falls
below the log start go when it moves). Batches dropped from the head are fed to a second tracker,
the state at the first batch kept, so that a truncation rebuilds the state exactly as it was after
the last batch it keeps (Kafka's snapshot-and-replay, with the dropped prefix as the snapshot).

Compaction (`MemoryLog.clean`, called with retention for topics whose ``cleanup.policy`` includes
compact) applies Kafka's rules (`storage.compaction`) as the file engine does, so a compacted topic
reads the same on both engines. For it alone the log draws segments as Kafka rolls them (a new one when
the active one would pass ``segment.bytes`` or span ``segment.ms``), when a round or a removal needs
them rather than on the append path. The active segment is never cleaned, and each cleaned segment
keeps its last batch, emptied when nothing in it stays. Batches are rewritten in place of the old
ones; the round yields to the event loop every ``CLEAN_STEP_BYTES``.

``memory.max.bytes`` bounds the batch bytes of every log together (``__consumer_offsets`` included,
whose writers answer COORDINATOR_NOT_AVAILABLE when refused): an append that would pass it raises
`MemoryLimitExceeded`, KAFKA_STORAGE_ERROR for that partition, which Kafka clients retry, instead of
growing until the process is killed. Default -1: unbounded.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from typing import Any, overload

import structlog

from protocol.errors import ErrorCode, KafkaError
from protocol.records import RecordBatch, iter_batches, set_base_offset, set_log_append_time
from storage.aborted_txns import AbortedTxnList
from storage.compaction import (
    MAP_MEMORY_BYTES,
    CleanedTransactions,
    CleanerSettings,
    CleanPlan,
    CleanResult,
    CleanStats,
    SegmentSummary,
    add_keys,
    filter_stored_batch,
    plan_cleaning,
)
from storage.file.config import LogConfig
from storage.interface import (
    MEMORY_MAX_BYTES_SETTING,
    UNBOUNDED,
    AppendResult,
    OffsetOutOfRange,
    PartitionLog,
    ReadResult,
    StorageEngine,
    TimestampOffset,
    TopicConfigSource,
    wall_clock_ms,
)
from storage.log_transactions import TransactionState
from storage.record_lookup import first_at_or_after, offset_of_timestamp
from storage.transactions import TransactionTracker

log = structlog.get_logger()

# A compaction round gives the event loop back after reading about this many batch bytes.
CLEAN_STEP_BYTES = 64 * 1024
# A stored batch of at least this size that is nearly its whole frame is kept as a view of the frame.
VIEW_MIN_BYTES = 256 * 1024
VIEW_MAX_WASTE_FRACTION = 16  # the frame's other bytes may be up to 1/16 of the batch


def keeps_frame(buf: memoryview, size: int) -> bool:
    """Whether a batch of `size` bytes in `buf` is stored as a view of the buffer underneath."""
    if size < VIEW_MIN_BYTES:
        return False
    whole = buf.obj
    total = whole.nbytes if isinstance(whole, memoryview) else len(whole)
    return total - size <= size // VIEW_MAX_WASTE_FRACTION


class MemoryLimitExceeded(KafkaError):
    """An append refused because the memory engine would hold more than ``memory.max.bytes``."""

    def __init__(self, topic: str, partition: int, size: int, held: int, max_bytes: int) -> None:
        super().__init__(
            ErrorCode.KAFKA_STORAGE_ERROR,
            f"In-memory storage is full: appending {size} bytes to {topic}-{partition} would exceed "
            f"{MEMORY_MAX_BYTES_SETTING}={max_bytes} (the memory engine holds {held} bytes of record "
            f"batches); delete topics or records, lower retention.ms / retention.bytes, or raise "
            f"{MEMORY_MAX_BYTES_SETTING}")
        self.size = size


class MemoryBudget:
    """The batch bytes held by every log of one engine, checked against ``memory.max.bytes``."""

    __slots__ = ("held", "max_bytes")

    def __init__(self, max_bytes: int = UNBOUNDED) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def reserve(self, topic: str, partition: int, size: int) -> None:
        """Count ``size`` more bytes, or raise `MemoryLimitExceeded` (counting nothing)."""
        if 0 <= self.max_bytes < self.held + size:
            raise MemoryLimitExceeded(topic, partition, size, self.held, self.max_bytes)
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


class MemoryLog(TransactionState, PartitionLog):
    def __init__(self, topic: str, partition: int, config: TopicConfigSource = None,
                 budget: MemoryBudget | None = None, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.topic = topic
        self.partition = partition
        self._config = config
        self._settings = LogConfig(config)  # a live view: topic config changes apply on the next read
        self._budget = budget if budget is not None else MemoryBudget()
        self._clock = clock
        # One entry per stored batch in each column, ascending by offset.
        self._bases: list[int] = []
        self._lasts: list[int] = []
        self._max_ts: list[int] = []
        self._retention_ts: list[int] = []  # what retention.ms compares: max timestamp, else append time
        self._data: list[bytes | memoryview] = []
        self._start = 0
        self._end = 0
        self._size = 0
        self._closed = False
        self._txns = TransactionTracker()
        self._txns_before = TransactionTracker()  # fed the batches dropped from the head
        self._aborted = AbortedTxnList()
        # Segments, as Kafka rolls them (segment.bytes, segment.ms), only for compaction: the base offset
        # each began at (the last one active).
        self._segment_bases: list[int] = []
        self._segmented_to = 0  # the batches from this offset on are in no segment yet (`_segment`)
        self._cleaner_offset: int | None = None
        self._cleaning = False
        self._changes = 0  # head drops, truncations and close: a compaction round under way stops

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._end

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def batch_count(self) -> int:
        return len(self._data)

    def batch_info(self, index: int) -> tuple[int, int, int, int]:
        """(base offset, next offset, size, retention timestamp) of the index-th stored batch."""
        return self._bases[index], self._lasts[index] + 1, len(self._data[index]), self._retention_ts[index]

    async def append(self, records: bytearray | memoryview, log_append_time: int | None = None) -> AppendResult:
        if self._closed:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"Partition {self.topic}-{self.partition} was deleted")
        buf = records if isinstance(records, memoryview) else memoryview(records)
        first = self._end
        next_offset = first
        framed = []
        for pos, batch in iter_batches(buf):
            set_base_offset(buf, pos, next_offset)
            if log_append_time is not None:
                set_log_append_time(buf, pos, log_append_time)
            last = next_offset + batch.last_offset_delta
            max_ts = log_append_time if log_append_time is not None else batch.max_timestamp
            framed.append((pos, batch.total_size, next_offset, last, max_ts, batch))
            next_offset = last + 1
        # Commit only after every batch was framed correctly and the bound takes them all, so a bad
        # batch or a full engine appends nothing; the copies are made only then.
        self._budget.reserve(self.topic, self.partition, sum(f[1] for f in framed))
        now: int | None = None
        txns, aborted = self._txns, self._aborted
        for pos, size, base, last, max_ts, batch in framed:
            ended = txns.append(batch, base, max_ts)
            if ended is not None:
                aborted.append(ended)
            if max_ts < 0 and now is None:
                now = self._clock()
            self._bases.append(base)
            self._lasts.append(last)
            self._max_ts.append(max_ts)
            self._retention_ts.append(max_ts if max_ts >= 0 else now)  # type: ignore[arg-type]
            view = buf[pos:pos + size]
            self._data.append(view if keeps_frame(buf, size) else bytes(view))
            self._size += size
        self._end = next_offset
        return AppendResult(first, next_offset - 1, -1 if log_append_time is None else log_append_time)

    def _segment(self) -> None:
        """Put the batches appended since the last call into segments, as Kafka rolls them when appending:
        a new one when the active one would pass segment.bytes, or when its first batch's timestamp (its
        append time when it carries none) is more than segment.ms before the new batch's. Done here, when
        segments are needed, rather than on the append path: the same outcome, one batch at a time."""
        first = bisect.bisect_left(self._bases, self._segmented_to)
        if first == len(self._bases):
            return
        segment_bytes, segment_ms = self._settings.segment_bytes, self._settings.segment_ms
        bases, data, max_ts, appended = self._bases, self._data, self._max_ts, self._retention_ts
        # The active segment as the batches now stand (retention, truncation or a round may have changed it):
        # its bytes so far, and its first batch's timestamp and append time.
        start = bisect.bisect_left(bases, self._segment_bases[-1]) if self._segment_bases else first
        active = sum(len(d) for d in data[start:first])
        for i in range(first, len(bases)):
            size, timestamp = len(data[i]), max_ts[i]
            if not self._segment_bases:
                rolls = True
            elif not active:
                rolls = False
            elif active > segment_bytes - size:
                rolls = True
            else:
                since = max_ts[start]
                rolls = (timestamp - since if since >= 0 else appended[i] - appended[start]) > segment_ms
            if rolls:
                self._segment_bases.append(bases[i])
                start, active = i, 0
            active += size
        self._segmented_to = self._end

    def _index_of(self, offset: int) -> int:
        """Index of the first batch whose last offset is >= offset."""
        return bisect.bisect_left(self._lasts, offset)

    def _drop_head(self, count: int) -> int:
        """Drop the first ``count`` batches, feeding them to the state before the log (see the module
        docstring), and the aborted transactions whose marker is now below the log start."""
        self._segment()
        before = self._txns_before
        for i in range(count):
            batch = RecordBatch(self._data[i])
            before.append(batch, batch.base_offset, self._max_ts[i])
        self._aborted = self._aborted.without_markers_below(self._start)
        freed = self._drop(slice(0, count))
        if self._data:
            del self._segment_bases[:max(bisect.bisect_right(self._segment_bases, self._bases[0]) - 1, 0)]
        self._drop_empty_tail_segments()
        return freed

    def _drop(self, section: slice) -> int:
        """Drop the batches in ``section`` of every column and release their bytes; returns them."""
        self._changes += 1
        freed = sum(len(d) for d in self._data[section])
        for column in (self._bases, self._lasts, self._max_ts, self._retention_ts, self._data):
            del column[section]
        self._size -= freed
        self._budget.release(freed)
        return freed

    def _drop_empty_tail_segments(self) -> None:
        """Forget the last segments once batches left them empty (retention, truncation, close)."""
        if not self._data:
            self._segment_bases.clear()
            return
        while bisect.bisect_left(self._bases, self._segment_bases[-1]) == len(self._bases):
            self._segment_bases.pop()  # left empty (by a truncation after a compaction)

    @property
    def segment_bases(self) -> tuple[int, ...]:
        """The base offset of each segment, the last one active (compaction cleans the others)."""
        self._segment()
        return tuple(self._segment_bases)

    def _segment_ranges(self) -> list[tuple[int, int]]:
        """[first, end) batch indexes of each segment holding batches; segments left empty (by truncation
        after a compaction) are forgotten."""
        bases, ranges, kept = self._bases, [], []
        starts = [bisect.bisect_left(bases, base) for base in self._segment_bases]
        for k, first in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(bases)
            if end > first:
                ranges.append((first, end))
                kept.append(self._segment_bases[k])
        self._segment_bases = kept
        return ranges

    async def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
                   max_offset: int | None = None) -> ReadResult:
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        limit = self.high_watermark if max_offset is None else max_offset
        result = ReadResult(high_watermark=self.high_watermark, log_start_offset=self._start)
        i = self._index_of(offset)
        while i < len(self._data) and self._bases[i] < limit:
            data = self._data[i]
            if result.size + len(data) > max_bytes and (result.chunks or not min_one_batch):
                break
            result.chunks.append(data)
            result.size += len(data)
            i += 1
        return result

    async def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        for i in range(self._index_of(self._start), len(self._data)):
            if self._max_ts[i] >= timestamp:
                found = first_at_or_after(RecordBatch(self._data[i]), self._start, timestamp, self._where)
                if found is not None:
                    return found
        return None

    async def max_timestamp(self) -> TimestampOffset | None:
        first = self._index_of(self._start)
        if first >= len(self._data):
            return None
        best = max(range(first, len(self._data)), key=lambda i: (self._max_ts[i], -i))
        return offset_of_timestamp(RecordBatch(self._data[best]), self._start, self._max_ts[best], self._where)

    @property
    def _where(self) -> str:
        return f"{self.topic}-{self.partition}"

    async def truncate_to(self, offset: int) -> None:
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        i = bisect.bisect_left(self._bases, offset)
        if i > 0 and self._lasts[i - 1] >= offset:
            raise ValueError(f"truncation offset {offset} falls inside the batch at {self._bases[i - 1]}")
        self._segment()
        self._drop(slice(i, None))
        self._end = self._segmented_to = offset
        del self._segment_bases[bisect.bisect_left(self._segment_bases, offset):]
        self._drop_empty_tail_segments()
        if self._cleaner_offset is not None and self._cleaner_offset > offset:
            self._cleaner_offset = offset
        # Rare: rebuild the state as it was after the last batch kept.
        txns = self._txns_before.copy()
        for data, max_ts in zip(self._data, self._max_ts):
            batch = RecordBatch(data)
            txns.append(batch, batch.base_offset, max_ts)
        self._txns = txns
        self._aborted = self._aborted.truncated(offset)

    async def delete_records_before(self, offset: int) -> int:
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRange(offset, self._start, self.high_watermark)
        if offset > self._start:
            self._start = offset
            # Whole batches below the new start go; one straddling it stays (Kafka keeps its segment).
            self._drop_head(self._index_of(offset))
        return self._start

    async def apply_retention(self, now_ms: int | None = None) -> Any:
        """Drop the oldest batches that ``retention.ms`` / ``retention.bytes`` no longer keep (see the
        module docstring); returns a `storage.file.retention.RetentionResult`."""
        # Imported here: the file engine's package is slow to import, and a memory broker needs it only
        # from its first retention check on.
        from storage.file.retention import DeletedSegment, RetentionResult, SegmentInfo, select_deletable

        config = self._settings
        if self._closed or not self._data or not config.delete_enabled:
            return RetentionResult((), self._start)
        now = self._clock() if now_ms is None else now_ms
        reasons = select_deletable(_BatchInfos(self, SegmentInfo), total_size=self._size, now_ms=now,
                                   retention_ms=config.retention_ms, retention_bytes=config.retention_bytes,
                                   log_start_offset=self._start)
        if not reasons:
            return RetentionResult((), self._start)
        count = len(reasons)
        deleted = tuple(DeletedSegment(*self.batch_info(i)[:3], reason) for i, reason in enumerate(reasons))
        self._start = max(self._start, self._bases[count] if count < len(self._bases) else self._end)
        freed = self._drop_head(count)
        log.info("storage.memory.retention", topic=self.topic, partition=self.partition, batches=count,
                 bytes=freed, reasons=sorted(set(reasons)), log_start_offset=self._start)
        return RetentionResult(deleted, self._start)

    async def clean(self, now_ms: int | None = None) -> CleanResult | None:
        """Compact the closed segments when cleanup.policy includes compact: Kafka's rules
        (`storage.compaction`), each segment keeping its last batch. The broker's retention loop calls
        this for compacted topics; None when the log is not due. The round gives the event loop back
        every ``CLEAN_STEP_BYTES`` read, and stops without a change (``aborted``) if retention,
        DeleteRecords or truncation dropped batches meanwhile; appends carry on."""
        settings = CleanerSettings.of(self._settings)
        if not settings.compact or self._closed or self._cleaning:
            return None
        self._segment()
        ranges = self._segment_ranges()
        if len(ranges) < 2:
            return None
        now = self._clock() if now_ms is None else now_ms
        data, max_ts = self._data, self._max_ts
        summaries = [SegmentSummary(self._segment_bases[k], sum(len(d) for d in data[a:b]), max(max_ts[a:b]),
                                    max_ts[a]) for k, (a, b) in enumerate(ranges)]
        checkpoint = self._cleaner_offset
        first_dirty = checkpoint if checkpoint is not None and self._start <= checkpoint <= self._end else self._start
        stable = min([self.high_watermark, *(first for _, first in self.ongoing_transactions().values())])
        plan = plan_cleaning(summaries, first_dirty, settings, now, stable,
                             lambda k: summaries[k].first_batch_timestamp)
        if not plan.due:
            return None
        self._cleaning = True
        try:
            return await self._clean_round(ranges, summaries, plan, first_dirty, settings, now)
        finally:
            self._cleaning = False

    async def _clean_round(self, ranges: list[tuple[int, int]], summaries: list[SegmentSummary], plan: CleanPlan,
                           first_dirty: int, settings: CleanerSettings, now: int) -> CleanResult:
        changes = self._changes
        stats = CleanStats()
        txns = CleanedTransactions(list(self._aborted), self.producer_entries())
        budget = CLEAN_STEP_BYTES

        async def step(size: int) -> bool:
            """Count `size` bytes read; give the loop back when a step's worth is done. False: stop."""
            nonlocal budget
            budget -= size
            if budget > 0:
                return True
            budget = CLEAN_STEP_BYTES
            await asyncio.sleep(0)
            return self._changes == changes

        key_map: dict[bytes, int] = {}
        used = 0
        end_segment = plan.dirty_from
        for k in range(plan.dirty_from, plan.uncleanable):
            if k > plan.dirty_from and used > MAP_MEMORY_BYTES:
                break
            for i in range(*ranges[k]):
                used += add_keys(RecordBatch(self._data[i]), first_dirty, txns, key_map)
                if not await step(len(self._data[i])):
                    return self._clean_aborted(first_dirty, plan)
            end_segment = k + 1
        end_offset = summaries[end_segment].base_offset

        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        dropped_markers: set[int] = set()
        for k in range(end_segment):
            first, end = ranges[k]
            before = sum(len(d) for d in self._data[first:end])
            after, changed = 0, False
            for i in range(first, end):
                original = self._data[i]
                batch = RecordBatch(original)
                last = i == end - 1
                kept = filter_stored_batch(batch, key_map, txns, now, settings.delete_retention_ms, last, stats)
                if kept is None:
                    changed = True
                    if batch.is_control:
                        dropped_markers.add(batch.base_offset)
                else:
                    rewritten, largest = kept
                    if rewritten is not None:
                        changed = True
                    stored = original if rewritten is None else bytes(rewritten)
                    for column, value in zip(columns, (self._bases[i], self._lasts[i], largest,
                                                       largest if largest >= 0 else self._retention_ts[i], stored)):
                        column.append(value)
                    after += len(stored)
                if not await step(len(original)):
                    return self._clean_aborted(first_dirty, plan)
            if changed:
                stats.rewrote(before, after)
        if self._changes != changes or self._closed:
            return self._clean_aborted(first_dirty, plan)
        # No await from here on: the batches below the end offset are swapped in one go.
        end_index = ranges[end_segment][0]
        old = sum(len(d) for d in self._data[:end_index])
        new = sum(len(d) for d in columns[4])
        for column, values in zip((self._bases, self._lasts, self._max_ts, self._retention_ts, self._data), columns):
            column[:end_index] = values
        self._size += new - old
        self._budget.release(old - new)
        if dropped_markers:
            self._aborted = self._aborted.without_markers_at(dropped_markers)
        self._cleaner_offset = end_offset
        result = stats.result(first_dirty, end_offset, plan)
        log.info("storage.memory.cleaned", topic=self.topic, partition=self.partition, first_dirty_offset=first_dirty,
                 end_offset=end_offset, dirty_ratio=round(plan.ratio, 3), forced=plan.forced,
                 segments_rewritten=result.segments_written, bytes_before=result.bytes_before,
                 bytes_after=result.bytes_after, records_removed=result.records_removed,
                 tombstones_removed=result.tombstones_removed,
                 aborted_records_removed=result.aborted_records_removed, markers_removed=result.markers_removed)
        return result

    def _clean_aborted(self, first_dirty: int, plan: CleanPlan) -> CleanResult:
        log.info("storage.memory.clean_aborted", topic=self.topic, partition=self.partition,
                 reason="batches were dropped during the round (retention, DeleteRecords, truncation or delete)")
        return CleanStats().result(first_dirty, first_dirty, plan, aborted=True)

    async def close(self) -> None:
        """Drop every batch and refuse further appends (the partition was deleted or the engine closed)."""
        self._closed = True
        self._drop(slice(None))
        self._drop_empty_tail_segments()
        self._reset_transactions()


class _BatchInfos(Sequence[Any]):
    """A log's batches as retention's segment infos, built only for the prefix the rules look at."""

    def __init__(self, log: MemoryLog, info: Callable[..., Any]) -> None:
        self._log = log
        self._info = info

    def __len__(self) -> int:
        return self._log.batch_count

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._info(*self._log.batch_info(index))


class MemoryEngine(StorageEngine):
    url = "memory://"

    def __init__(self, max_bytes: int = UNBOUNDED, clock: Callable[[], int] | None = None) -> None:
        self.budget = MemoryBudget(max_bytes)
        self.clock = clock or wall_clock_ms
        self._logs: dict[tuple[str, int], MemoryLog] = {}
        self._metadata: bytes | None = None

    @property
    def held_bytes(self) -> int:
        """Batch bytes held by every log (what ``memory.max.bytes`` bounds)."""
        return self.budget.held

    async def open_log(self, topic: str, partition: int, config: TopicConfigSource = None) -> PartitionLog:
        key = (topic, partition)
        plog = self._logs.get(key)
        if plog is None:
            plog = self._logs[key] = MemoryLog(topic, partition, config, self.budget, self.clock)
        return plog

    async def delete_log(self, topic: str, partition: int) -> None:
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            await plog.close()

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._logs)

    async def load_metadata(self) -> bytes | None:
        return self._metadata

    async def save_metadata(self, data: bytes) -> None:
        self._metadata = bytes(data)

    async def close(self) -> None:
        for plog in self._logs.values():
            await plog.close()
        self._logs.clear()

    def __repr__(self) -> str:
        return f"MemoryEngine({len(self._logs)} logs, {self.budget.held} bytes)"
