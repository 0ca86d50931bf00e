"""FileLog: one partition's log as a directory of segments (`PartitionLog` of the file engine).

Appends are checked and their base offsets patched on the event loop (per batch, never per record),
then written with one pwrite at the end of the active segment on the log's write thread (its lane of
`storage.file.io_lanes`: one partition's large write does not delay the others);
index entries are added in memory and written in bulk. Reads snapshot the segment list and the
active segment's size on the event loop, then find the start through the offset index (binary
search, then a short scan of batch headers) and pread whole batches on a reader thread.

Mutations (append, truncation, DeleteRecords, retention, close) are serialised by one asyncio lock
per log; reads and flushes do not take it. Durability is in `storage.file.flusher`. Compaction
(`clean`, in `storage.file.cleaner`) rewrites closed segments without that lock and takes it only to
swap the rewritten segments in (`replace_segments`); a read whose segments were swapped out under it
starts again.

Transactions: every appended batch feeds the log's `TransactionTracker` (`storage.transactions`); an
ABORT marker's entry goes to the active segment's ``.txnindex`` (`storage.file.txn_index`), written
before the append's offsets become visible, and fsynced by the flusher with the log. A producer
snapshot (`storage.file.producer_snapshot`) is written at each roll and at a clean close; truncation
and opening rebuild the state from the newest one (`storage.file.producer_state`).

Collaborators use public names only: the flusher its `Flushable` protocol (`sync_plan`,
`sync_blocking`, `sync_done`, `flush_outcome`), the cleaner `segments`, `truncations`, `run_io`,
`ensure_loaded` and `replace_segments`, the engine `abandon` and `release_files`.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT32_MAX, INT64_MAX
from protocol.records import (
    RecordBatch,
    RecordBatchError,
    TruncatedBatchError,
    iter_batches,
    set_base_offset,
    set_log_append_time,
)
from storage.aborted_txns import in_fetch_order
from storage.compaction import CleanResult
from storage.file.cleaner import clean_log
from storage.file.config import LogConfig
from storage.file.fs import FileSystem, StorageError, fsync_path, read_at, storage_error, write_all
from storage.file.producer_snapshot import delete_snapshots, encode_snapshot, stray_snapshots, write_snapshot
from storage.file.producer_state import ProducerState, truncated_state
from storage.file.retention import (
    LOG_START_OFFSET,
    DeletedSegment,
    RetentionResult,
    SegmentInfo,
    select_deletable,
)
from storage.file.segment import SEEK_CHUNK, LogSegment, SegmentGone, batches_in_buffer, scan_batches
from storage.interface import (
    AbortedTxn,
    AppendResult,
    OffsetOutOfRange,
    PartitionLog,
    ProducerSnapshotEntry,
    ReadResult,
    TimestampOffset,
)
from storage.record_lookup import first_at_or_after, offset_of_timestamp
from storage.transactions import TransactionTracker

if TYPE_CHECKING:
    from storage.file.engine import FileEngine

# Write the in-memory index entries to the files once this many are pending (about 2 MiB of log at
# the default index.interval.bytes); rolls and close write the rest.
INDEX_WRITE_BATCH = 512


class _Offline(Exception):
    """An append failed and could not be undone: the log must stop taking writes."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class SyncPlan:
    """What one flush pass syncs for one log, snapshotted on the event loop."""

    target: int
    segments: list[LogSegment]
    closed: list[LogSegment]
    dir_generation: int | None
    truncations: int


class FileLog(PartitionLog):
    def __init__(self, engine: FileEngine, topic: str, partition: int, directory: str, config: LogConfig,
                 segments: list[LogSegment], log_start_offset: int, log_end_offset: int,
                 recovery_point: int, start_position: int = 0, io_lane: int = 0, created: bool = False,
                 producer_state: ProducerState | None = None) -> None:
        self.topic = topic
        self.io_lane = io_lane  # the engine's write thread for this log's file changes (storage.file.io_lanes)
        self.partition = partition
        self.directory = directory
        self.config = config
        self._engine = engine
        self._fs = engine.fs
        self._segments = segments  # replaced, never mutated: threads hold snapshots
        self._bases = [s.base_offset for s in segments]
        self._start = log_start_offset
        self._start_position = start_position  # where the batch holding the log start offset begins
        self._end = log_end_offset
        self._durable = recovery_point  # everything below is fsynced: Kafka's recovery point
        self._offline: StorageError | None = None
        self._closed = False
        self._deleted = False  # closed by `abandon`: its partition was deleted
        self._mutex = asyncio.Lock()
        self._clean_lock = asyncio.Lock()  # one compaction at a time (storage.file.cleaner)
        self._flush_timer: asyncio.TimerHandle | None = None
        # Bumped when a segment file is created; the flusher fsyncs the directory. A log just created
        # starts at 1: its first segment's entries are fsynced by the first flush.
        self._dir_generation = 1 if created else 0
        self._dir_synced = 0
        self._truncations = 0
        self._log = structlog.get_logger().bind(topic=topic, partition=partition)
        state = producer_state if producer_state is not None else ProducerState(TransactionTracker(), [])
        self._txns = state.tracker
        self._snapshots = state.snapshots  # offsets of the producer snapshot files, ascending

    def __repr__(self) -> str:
        return (f"FileLog({self.topic}-{self.partition}, start={self._start}, end={self._end}, "
                f"segments={len(self._segments)})")

    # --- offsets ----------------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._end

    @property
    def size_bytes(self) -> int:
        """Bytes of the batches from the one holding the log start offset to the end."""
        return sum(segment.size for segment in self._segments) - self._start_position

    @property
    def last_stable_offset(self) -> int:
        return self._txns.last_stable_offset(self._start, self.high_watermark)

    def ongoing_transactions(self) -> dict[int, tuple[int, int]]:
        return self._txns.ongoing()

    def producer_entries(self) -> list[ProducerSnapshotEntry]:
        return self._txns.entries()

    def forget_producer(self, producer_id: int) -> bool:
        return self._txns.forget(producer_id)

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        return self._txns.expire(now_ms, expiration_ms)

    @property
    def snapshot_offsets(self) -> list[int]:
        """Offsets of the producer snapshot files kept (a copy)."""
        return list(self._snapshots)

    async def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """Kafka's collectAbortedTransactions: the ``.txnindex`` of the segment holding the start and
        of later ones (an entry lives with its marker, possibly after the range), until an entry says
        no later one can match (`AbortedTxnList.collect`). Indexes not loaded yet load on a reader
        thread; segments known to have none cost nothing."""
        self._check_open()
        start = max(start_offset, self._start)
        if start >= end_offset:
            return []
        segments = self._segments[max(bisect.bisect_right(self._bases, start) - 1, 0):]
        if all(segment.txn_index.loaded for segment in segments):
            return self._aborted_blocking(segments, start, end_offset)
        return await self._engine.run_read(self._aborted_blocking, segments, start, end_offset)

    def _aborted_blocking(self, segments: list[LogSegment], start: int, end: int) -> list[AbortedTxn]:
        found: list[AbortedTxn] = []
        try:
            for segment in segments:
                if segment.txn_index.collect(start, end, found, self._log):
                    break
        except OSError as exc:
            raise storage_error("cannot read the transaction index of", self.directory, exc) from None
        return in_fetch_order(found)

    @property
    def recovery_point(self) -> int:
        """Offset below which every batch is fsynced."""
        return self._durable

    @property
    def offline(self) -> StorageError | None:
        """The error that took the log offline for writes, or None."""
        return self._offline

    @property
    def segments(self) -> list[LogSegment]:
        """The current segments, oldest first (a snapshot: do not mutate)."""
        return self._segments

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def truncations(self) -> int:
        """How many times the log was truncated: work planned on a snapshot of the segments compares it
        before it changes them (`replace_segments`)."""
        return self._truncations

    @property
    def fs(self) -> FileSystem:
        """The file system the log's files live on (the engine's, a fault seam in tests)."""
        return self._engine.fs

    @property
    def cleaner_offset(self) -> int | None:
        """Where the log's cleaned part ends (Kafka's cleaner-offset-checkpoint entry), if known."""
        return self._engine.cleaner_offset(self)

    async def persist_cleaner_offset(self, offset: int) -> None:
        """Record, in the engine's cleaner-offset checkpoint, that the log is clean below `offset`."""
        await self._engine.persist_cleaner_offset(self, offset)

    @property
    def logger(self) -> Any:
        """The log's structlog logger, bound to its topic and partition."""
        return self._log

    # --- append -----------------------------------------------------------------------------------

    async def append(self, records: bytearray | memoryview, log_append_time: int | None = None) -> AppendResult:
        buf = records if isinstance(records, memoryview) else memoryview(records)
        async with self._mutex:
            self._check_writable()
            first = next_offset = self._end
            staged: list[tuple[int, int, int, int, RecordBatch, int]] = []
            max_timestamp = -1
            for pos, batch in iter_batches(buf):
                set_base_offset(buf, pos, next_offset)
                if log_append_time is not None:
                    set_log_append_time(buf, pos, log_append_time)
                    timestamp = log_append_time
                else:
                    timestamp = batch.max_timestamp
                last = next_offset + batch.last_offset_delta
                staged.append((pos, batch.total_size, last, timestamp, batch, next_offset))
                max_timestamp = max(max_timestamp, timestamp)
                next_offset = last + 1
            append_time = -1 if log_append_time is None else log_append_time
            if not staged:
                return AppendResult(first, first - 1, append_time)
            config = self.config
            total = buf.nbytes
            if total > config.segment_bytes:
                raise KafkaError(ErrorCode.RECORD_LIST_TOO_LARGE,
                                 f"{total} bytes of batches exceed segment.bytes ({config.segment_bytes}) of "
                                 f"{self.topic}-{self.partition}")
            active = self._segments[-1]
            reason = self._roll_reason(active, total, max_timestamp, next_offset - 1, config)
            if reason is not None:
                active = await self._roll(config, reason)
            position = active.size
            write_index = active.pending_index_entries() >= INDEX_WRITE_BATCH
            done, interrupted = await self._io_to_the_end(self._append_blocking, active, buf, position, write_index)
            try:
                done.result()
            except _Offline as exc:
                self._go_offline(exc.error)
                raise exc.error from None
            interval = config.index_interval_bytes
            txns = self._txns
            aborted: list[AbortedTxn] = []
            for pos, size, last, timestamp, batch, base in staged:
                active.account_batch(position + pos, size, last, timestamp, interval)
                ended = txns.append(batch, base, timestamp)
                if ended is not None:
                    aborted.append(ended)
            active.size = position + total
            if aborted:
                # Before the log end moves: a flush covering the marker must find its entry written.
                interrupted = await self._write_txn_index(active, aborted) or interrupted
            self._end = next_offset
            if interrupted:
                raise asyncio.CancelledError
        self._after_append(config)
        if self._end - self._durable >= config.flush_messages:
            await self.flush()
        return AppendResult(first, next_offset - 1, append_time)

    async def _write_txn_index(self, segment: LogSegment, aborted: list[AbortedTxn]) -> bool:
        """Add the entries of ABORT markers just written to `segment` and write them to its ``.txnindex``;
        returns whether the caller was cancelled meanwhile. A failure takes the log offline (the
        marker is in the log without its entry: a restart recovers from the recovery point, which
        has not passed the marker, and rebuilds the entry) and is raised."""
        data = segment.txn_index.add(aborted)
        done, interrupted = await self._io_to_the_end(segment.txn_index.write_blocking, data)
        try:
            created = done.result()
        except OSError as exc:
            error = storage_error("cannot append to", segment.txn_index_path, exc)
            self._go_offline(error)
            raise error from None
        if created:
            self._dir_generation += 1
        return interrupted

    def _deleted_error(self) -> KafkaError:
        # As the memory engine answers: the partition is gone, not the disk.
        return KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Partition {self.topic}-{self.partition} was deleted")

    def _check_open(self) -> None:
        """Raise if the log was deleted or closed (reads too: its segments are retired); an offline log
        still serves reads."""
        if self._closed:
            self._check_writable()

    def _check_writable(self) -> None:
        if self._deleted:
            raise self._deleted_error()
        if self._closed:
            raise StorageError(f"log {self.topic}-{self.partition} is closed", path=self.directory)
        if self._offline is not None:
            raise StorageError(f"log {self.topic}-{self.partition} is offline after a disk error: "
                               f"{self._offline.message}", path=self._offline.path, errno=self._offline.errno)

    def _roll_reason(self, active: LogSegment, total: int, max_timestamp: int, last_offset: int,
                     config: LogConfig) -> str | None:
        """Kafka's `LogSegment.shouldRoll`: why the append must go to a new segment, or None."""
        if active.size == 0:
            return None
        if active.size > config.segment_bytes - total:
            return "segment.bytes"
        first = active.first_batch_timestamp
        if first is not None and first >= 0:
            waited = max_timestamp - first
        else:
            waited = self._engine.clock() - active.created_ms
        if waited > config.segment_ms - active.roll_jitter_ms:
            return "segment.ms"
        index_bytes = config.segment_index_bytes
        assert active.offset_index is not None and active.time_index is not None
        if active.offset_index.is_full(index_bytes) or active.time_index.is_full(index_bytes):
            return "segment.index.bytes"
        if last_offset - active.base_offset > INT32_MAX:
            return "relative offset overflow"
        return None

    async def _roll(self, config: LogConfig, reason: str) -> LogSegment:
        old = self._segments[-1]
        old.seal()
        now = self._engine.clock()
        jitter_limit = min(config.segment_jitter_ms, config.segment_ms)
        jitter = random.randrange(jitter_limit) if jitter_limit > 0 else 0
        new = LogSegment(self._fs, self.directory, self._end, created_ms=now, modified_ms=now,
                         roll_jitter_ms=jitter, files=old.files)
        # Kafka's snapshot at the roll: the producer state at the new segment's base offset.
        snapshot = encode_snapshot(self._txns.entries())
        snapshots = sorted({*self._snapshots, new.base_offset})
        stray = stray_snapshots(snapshots, [*self._bases, new.base_offset])
        done, interrupted = await self._io_to_the_end(self._roll_blocking, old, new, snapshot, stray)
        written = done.result()
        self._snapshots = [o for o in snapshots if o not in stray and (written or o != new.base_offset)]
        old.modified_ms = now
        self._segments = [*self._segments, new]
        self._bases = [*self._bases, new.base_offset]
        self._dir_generation += 1
        self._log.debug("storage.segment.rolled", segment=new.name, reason=reason, previous_size=old.size)
        if interrupted:
            raise asyncio.CancelledError
        return new

    def submit_io(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run blocking `fn` on this log's write thread, after the log's earlier file changes."""
        return self._engine.submit_io(fn, *args, lane=self.io_lane)

    async def run_io(self, fn: Any, *args: Any) -> Any:
        return await self.submit_io(fn, *args)

    async def _io_to_the_end(self, fn: Any, *args: Any) -> tuple[asyncio.Future[Any], bool]:
        """Run `fn` on the log's write thread and wait for it to end even if the caller is cancelled meanwhile,
        so that the caller records what the I/O did (the file changed) before it re-raises the
        cancellation: the in-memory state never disagrees with the files."""
        done = self.submit_io(fn, *args)
        interrupted = False
        while not done.done():
            try:
                await asyncio.wait((done,))
            except asyncio.CancelledError:
                interrupted = True
        return done, interrupted

    def _roll_blocking(self, old: LogSegment, new: LogSegment, snapshot: bytes, stray: list[int]) -> bool:
        """Write the old segment's indexes, create the new one's files and write the producer snapshot
        at its base; True when the snapshot was written."""
        try:
            old.write_pending_indexes()
        except OSError as exc:  # indexes may lag: loading extends them from the log
            self._log.warning("storage.index.write_failed", segment=old.name, error=str(exc))
        try:
            new.create_files()
        except OSError as exc:
            raise storage_error("cannot create segment", new.log_path, exc) from None
        return self._write_snapshot_blocking(new.base_offset, snapshot, stray)

    def _write_snapshot_blocking(self, offset: int, snapshot: bytes, stray: list[int]) -> bool:
        """Write a producer snapshot and delete those Kafka would not keep; a failure costs only a
        longer replay at the next open (from an older snapshot), so it is logged, not raised."""
        try:
            write_snapshot(self._fs, self.directory, offset, snapshot)
            delete_snapshots(self._fs, self.directory, stray)
        except OSError as exc:
            self._log.warning("storage.snapshot.write_failed", offset=offset, error=str(exc))
            return False
        return True

    def _append_blocking(self, segment: LogSegment, data: memoryview, position: int, write_index: bool) -> None:
        try:
            with segment.opened() as fd:
                write_all(self._fs, fd, data, position)
        except OSError as exc:
            error = storage_error(f"cannot append {data.nbytes} bytes at position {position} of", segment.log_path, exc)
            try:
                with segment.opened() as fd:
                    self._fs.ftruncate(fd, position)
            except OSError as undo:
                self._log.error("storage.append.undo_failed", segment=segment.name, position=position,
                                error=str(undo))
                raise _Offline(error) from None
            self._log.warning("storage.append.failed", segment=segment.name, position=position, error=error.message)
            raise error from None
        if write_index:
            try:
                segment.write_pending_indexes()
            except OSError as exc:
                self._log.warning("storage.index.write_failed", segment=segment.name, error=str(exc))

    def _after_append(self, config: LogConfig) -> None:
        flush_ms = config.flush_ms
        if flush_ms >= INT64_MAX or self._flush_timer is not None or self._end <= self._durable:
            return
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(flush_ms / 1000, self._flush_timer_fired)

    def _flush_timer_fired(self) -> None:
        self._flush_timer = None
        if not self._closed and self._offline is None and self._end > self._durable:
            self._engine.flusher.request(self)

    def _go_offline(self, error: StorageError) -> None:
        if self._offline is None:
            self._offline = error
            self._log.error("storage.log.offline", error=error.message, path=error.path)

    # --- flush ------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Return once every batch appended before the call is fsynced (group commit)."""
        if self._offline is not None:
            self._check_writable()
        if self._durable >= self._end:
            return
        await self._engine.flusher.flush(self)

    def sync_plan(self) -> SyncPlan | None:
        """Flusher, event loop: what a flush pass must fsync now, or None if nothing (or offline, closed)."""
        if self._offline is not None or self._closed:
            return None
        dir_pending = self._dir_generation > self._dir_synced
        if self._durable >= self._end and not dir_pending:
            return None
        segments = self._segments
        first = max(bisect.bisect_right(self._bases, self._durable) - 1, 0)
        chosen = segments[first:]
        return SyncPlan(self._end, chosen, chosen[:-1], self._dir_generation if dir_pending else None,
                        self._truncations)

    def sync_blocking(self, plan: SyncPlan) -> None:
        """Flusher thread: fdatasync the .log files, fsync closed segments' indexes and the directory."""
        fs = self._fs
        path = self.directory
        try:
            for segment in plan.segments:
                path = segment.log_path
                try:
                    with segment.opened() as fd:
                        fs.fdatasync(fd)
                except SegmentGone:
                    continue  # deleted meanwhile by retention or truncation: nothing left to keep
                path = segment.txn_index_path
                segment.txn_index.sync_blocking()
            for segment in plan.closed:
                for path in (segment.index_path, segment.time_index_path):
                    try:
                        fsync_path(fs, path)
                    except FileNotFoundError:
                        pass
            if plan.dir_generation is not None:
                path = self.directory
                fsync_path(fs, path)
        except OSError as exc:
            raise storage_error("cannot fsync", path, exc) from None

    def sync_done(self, plan: SyncPlan, error: StorageError | None) -> KafkaError | None:
        """Flusher, event loop: the pass ran `plan`; advance the recovery point, or go offline on `error`.
        Returns what the flush's waiters get."""
        if error is not None:
            if self._deleted:
                # Deleted during the pass (its directory renamed away under the fsync): not a disk failure.
                return self._deleted_error()
            self._go_offline(error)
            return error
        if plan.truncations == self._truncations:
            self._durable = max(self._durable, min(plan.target, self._end))
        if plan.dir_generation is not None:
            self._dir_synced = max(self._dir_synced, plan.dir_generation)
        return None

    def flush_outcome(self) -> KafkaError | None:
        """What a flush waiter gets when there is nothing to sync: the error that took the log offline,
        or that the partition was deleted."""
        return self._deleted_error() if self._deleted else self._offline

    # --- reads ------------------------------------------------------------------------------------

    def _read_plan(self, offset: int) -> list[tuple[LogSegment, int]]:
        """The segments from the one holding `offset`, each with the size a read may see."""
        segments = self._segments
        first = max(bisect.bisect_right(self._bases, offset) - 1, 0)
        plan = [(segment, segment.size) for segment in segments[first:]]
        return plan

    async def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
                   max_offset: int | None = None) -> ReadResult:
        self._check_open()
        start, end = self._start, self._end
        if offset < start or offset > end:
            raise OffsetOutOfRange(offset, start, end)
        result = ReadResult(high_watermark=end, log_start_offset=start)
        if offset == end:
            return result
        limit = end if max_offset is None else max_offset
        plan = self._read_plan(offset)
        try:
            chunks = await self._engine.run_read(self._read_blocking, plan, offset, max_bytes, min_one_batch, limit)
        except SegmentGone:
            # Retention or truncation removed the data (the checks on the way in say so), or compaction
            # swapped in rewritten segments, which serve the offset now.
            return await self.read(offset, max_bytes, min_one_batch=min_one_batch, max_offset=max_offset)
        result.chunks = chunks
        result.size = sum(len(chunk) for chunk in chunks)
        return result

    def ensure_loaded(self, segment: LogSegment) -> None:
        """Blocking: load the segment's indexes (rebuilding damaged ones) on first use."""
        if not segment.loaded:
            damage = segment.load(self.config.index_interval_bytes, self._log)
            if damage is not None:
                self._log.error("storage.segment.damaged", segment=segment.name, reason=damage)

    def _read_blocking(self, plan: list[tuple[LogSegment, int]], offset: int, max_bytes: int,
                       min_one_batch: bool, limit: int) -> list[Any]:
        chunks: list[Any] = []
        total = 0
        fs = self._fs
        try:
            for segment, seen_size in plan:
                with segment.opened() as fd:
                    self.ensure_loaded(segment)
                    end = min(seen_size, segment.size)
                    found = segment.find_batch(fd, offset, end)
                    if found is None:
                        continue
                    if found.base_offset >= limit:
                        break
                    want = min(max(max_bytes - total, 0), end - found.position)
                    if not chunks and min_one_batch:
                        want = max(want, found.size)
                    if want < found.size:
                        break
                    data = read_at(fs, fd, want, found.position)
                    view = memoryview(data)
                    stopped = False
                    # One chunk per batch, as the memory engine returns them: zero-copy slices of one read.
                    for at, base_offset, size in batches_in_buffer(data):
                        if base_offset >= limit:
                            stopped = True
                            break
                        chunks.append(view[at:at + size])
                        total += size
                    if stopped or found.position + want < end:
                        break
                offset = segment.next_offset
        except OSError as exc:
            raise storage_error("cannot read", self.directory, exc) from None
        except TruncatedBatchError:
            pass  # truncate_to cut the file under this read: serve what was read before the cut
        except RecordBatchError as exc:
            raise StorageError(f"corrupt data in {self.directory}: {exc}", path=self.directory) from None
        return chunks

    async def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        self._check_open()  # its segments are retired: a retry on SegmentGone would never end
        start = self._start
        if start >= self._end:
            return None
        plan = self._read_plan(start)
        try:
            return await self._engine.run_read(self._offset_for_timestamp_blocking, plan, timestamp, start)
        except SegmentGone:
            return await self.offset_for_timestamp(timestamp)

    def _offset_for_timestamp_blocking(self, plan: list[tuple[LogSegment, int]], target: int,
                                       start: int) -> TimestampOffset | None:
        try:
            for segment, seen_size in plan:
                with segment.opened() as fd:
                    self.ensure_loaded(segment)
                    if segment.max_timestamp < target:
                        continue
                    assert segment.time_index is not None and segment.offset_index is not None
                    before = segment.time_index.offset_before(target)
                    begin = max(start, segment.base_offset if before is None else before + 1)
                    _, position = segment.offset_index.lookup(begin)
                    end = min(seen_size, segment.size)
                    for header, buf, at in scan_batches(self._fs, fd, position, end, with_body=True,
                                                        chunk=4 * SEEK_CHUNK):
                        if header.last_offset < start or header.max_timestamp < target:
                            continue
                        found = first_at_or_after(RecordBatch(buf, at), start, target, self.directory)
                        if found is not None:
                            return found
        except OSError as exc:
            raise storage_error("cannot read", self.directory, exc) from None
        return None

    async def max_timestamp(self) -> TimestampOffset | None:
        self._check_open()
        start = self._start
        if start >= self._end:
            return None
        plan = self._read_plan(start)
        try:
            return await self._engine.run_read(self._max_timestamp_blocking, plan, start)
        except SegmentGone:
            return await self.max_timestamp()

    def _max_timestamp_blocking(self, plan: list[tuple[LogSegment, int]], start: int) -> TimestampOffset | None:
        best: tuple[int, LogSegment, int] | None = None
        try:
            for segment, seen_size in plan:
                end = min(seen_size, segment.size)
                if end == 0:
                    continue
                with segment.opened() as fd:
                    self.ensure_loaded(segment)
                    if start > segment.base_offset:
                        largest = None
                        found = segment.find_batch(fd, start, end)
                        if found is not None:
                            for header, _, _ in scan_batches(self._fs, fd, found.position, end):
                                largest = header.max_timestamp if largest is None else max(largest,
                                                                                            header.max_timestamp)
                        if largest is None:
                            continue
                    else:
                        largest = segment.max_timestamp
                if best is None or largest > best[0]:
                    best = (largest, segment, end)
            if best is None:
                return None
            target, segment, end = best
            with segment.opened() as fd:
                found = segment.find_batch(fd, start, end)
                position = 0 if found is None else found.position
                for header, buf, at in scan_batches(self._fs, fd, position, end, with_body=True):
                    if header.last_offset < start or header.max_timestamp != target:
                        continue
                    return offset_of_timestamp(RecordBatch(buf, at), start, target, self.directory)
        except OSError as exc:
            raise storage_error("cannot read", self.directory, exc) from None
        return None

    # --- truncation, DeleteRecords, retention ------------------------------------------------------

    async def truncate_to(self, offset: int) -> None:
        async with self._mutex:
            self._check_open()
            if offset < self._start or offset > self._end:
                raise OffsetOutOfRange(offset, self._start, self._end)
            if offset == self._end:
                return
            segments = self._segments
            index = max(bisect.bisect_right(self._bases, offset) - 1, 0)
            done, interrupted = await self._io_to_the_end(self._truncate_blocking, segments, index, offset,
                                                          self._engine.clock(), list(self._snapshots))
            keep, state = done.result()
            self._txns, self._snapshots = state.tracker, state.snapshots
            self._segments = segments[:keep]
            self._bases = self._bases[:keep]
            self._start_position = min(self._start_position, self._segments[0].size)
            self._end = offset
            self._durable = min(self._durable, offset)
            self._truncations += 1
            self._engine.lower_cleaner_offset(self, offset)
            self._log.info("storage.log.truncated", log_end_offset=offset, segments_deleted=len(segments) - keep)
            if interrupted:
                raise asyncio.CancelledError
        # Persist the lowered recovery point now: later appends below the old one must be rescanned
        # by recovery if the broker crashes before they are flushed.
        await self._engine.checkpoint_recovery_points()

    def _truncate_blocking(self, segments: list[LogSegment], index: int, offset: int, now_ms: int,
                           snapshots: list[int]) -> tuple[int, ProducerState]:
        segment = segments[index]
        interval = self.config.index_interval_bytes
        try:
            self.ensure_loaded(segment)
            position = segment.size
            if offset == segment.base_offset and index > 0:
                keep = index
            else:
                keep = index + 1
                with segment.opened() as fd:
                    found = segment.find_batch(fd, offset, segment.size)
                if found is not None:
                    if found.base_offset < offset:  # above it: the offset is in a gap compaction left
                        raise ValueError(f"truncation offset {offset} falls inside the batch at {found.base_offset}")
                    position = found.position
            for stale in reversed(segments[keep:]):
                stale.delete_files()
            if keep == index + 1:
                segment.truncate_to(offset, position, interval, now_ms, self._log)
            else:
                active = segments[keep - 1]
                self.ensure_loaded(active)
                active.load_first_batch_timestamp()
                active.txn_index.load(self._log)
            return keep, truncated_state(self._fs, self.directory, segments[:keep], snapshots, offset, self._log)
        except OSError as exc:
            raise storage_error("cannot truncate", self.directory, exc) from None

    async def delete_records_before(self, offset: int) -> int:
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRange(offset, self._start, self.high_watermark)
        async with self._mutex:
            self._check_open()  # deleted (or the engine closed) while this waited for the mutex
            if offset > self._start:
                await self._engine.persist_log_start_offset(self, offset)
                self._start = offset
                result = await self._delete_segments(self._engine.clock(), time_and_size=False)
                if not result.deleted:
                    await self._locate_start()
        return self._start

    async def _locate_start(self) -> None:
        first = self._segments[0]
        start = self._start
        if start <= first.base_offset:
            self._start_position = 0
        else:
            self._start_position = await self.run_io(self._start_position_blocking, first, start)

    def _start_position_blocking(self, segment: LogSegment, start: int) -> int:
        try:
            with segment.opened() as fd:
                self.ensure_loaded(segment)
                found = segment.find_batch(fd, start, segment.size)
        except OSError as exc:
            raise storage_error("cannot read", segment.log_path, exc) from None
        return segment.size if found is None else found.position

    async def apply_retention(self, now_ms: int | None = None) -> RetentionResult:
        """Delete segments past retention.ms / retention.bytes (the active one too, after rolling a new
        empty one, see `storage.file.retention`) or closed segments below the log start offset.

        The broker calls this every ``log.retention.check.interval.ms``; `now_ms` defaults to the
        engine clock. Returns the deleted segments with the rule that removed each, and the log start
        offset afterwards (persisted before any file goes).
        """
        async with self._mutex:
            if self._closed:
                return RetentionResult((), self._start)
            now = self._engine.clock() if now_ms is None else now_ms
            return await self._delete_segments(now, time_and_size=True)

    async def _delete_segments(self, now_ms: int, *, time_and_size: bool) -> RetentionResult:
        """Under the mutex (so no append runs meanwhile): delete the prefix retention selects."""
        segments = self._segments
        config = self.config
        if time_and_size and config.delete_enabled:
            infos = await self.run_io(self._segment_infos_blocking, segments)
            retention_ms, retention_bytes = config.retention_ms, config.retention_bytes
        else:
            infos = [SegmentInfo(s.base_offset, s.next_offset, s.size, 0) for s in segments]
            retention_ms = retention_bytes = -1
        reasons = select_deletable(infos, total_size=sum(s.size for s in segments), now_ms=now_ms,
                                   retention_ms=retention_ms, retention_bytes=retention_bytes,
                                   log_start_offset=self._start)
        if not reasons:
            return RetentionResult((), self._start)
        count = len(reasons)
        if count == len(segments) and self._offline is not None:
            count -= 1  # no new segment on a failed disk: the active one stays until a restart
            if not count:
                return RetentionResult((), self._start)
        if count == len(segments):
            # The active segment is past retention too: as Kafka does, roll an empty one at the log end
            # offset first, so the log keeps a segment and the log start offset moves to the log end.
            await self._roll(config, reasons[-1])
            segments = self._segments
        victims = segments[:count]
        new_start = max(self._start, segments[count].base_offset)
        if new_start > self._start:
            await self._engine.persist_log_start_offset(self, new_start)
            self._start = new_start
        self._segments = segments[count:]
        self._bases = self._bases[count:]
        self._start_position = 0
        if self._start > self._segments[0].base_offset:
            await self._locate_start()
        deleted = tuple(DeletedSegment(s.base_offset, s.next_offset, s.size, reason)
                        for s, reason in zip(victims, reasons))
        # Their producer snapshots go with them (Kafka deletes a segment's snapshot with the segment).
        stray = stray_snapshots(self._snapshots, self._bases)
        self._snapshots = [o for o in self._snapshots if o not in stray]
        try:
            await self.run_io(_delete_segment_files, victims, self._fs, self.directory, stray)
        except OSError as exc:
            # The log no longer refers to them; a leftover file only wastes space until the next start.
            self._log.warning("storage.segment.delete_failed", error=str(exc))
        event = self._log.debug if all(d.reason == LOG_START_OFFSET for d in deleted) else self._log.info
        event("storage.segments.deleted", segments=[f"{d.base_offset:020d}.log" for d in deleted],
              reasons=sorted({d.reason for d in deleted}), bytes=sum(d.size for d in deleted),
              log_start_offset=self._start)
        return RetentionResult(deleted, self._start)

    def _segment_infos_blocking(self, segments: list[LogSegment]) -> list[SegmentInfo]:
        infos = []
        try:
            for segment in segments:
                self.ensure_loaded(segment)
                largest = segment.max_timestamp
                if largest < 0:
                    largest = int(self._fs.stat(segment.log_path).st_mtime * 1000)
                infos.append(SegmentInfo(segment.base_offset, segment.next_offset, segment.size, largest))
        except OSError as exc:
            raise storage_error("cannot inspect segments of", self.directory, exc) from None
        return infos

    # --- compaction -------------------------------------------------------------------------------

    async def clean(self, now_ms: int | None = None) -> CleanResult | None:
        """Compact the closed segments when cleanup.policy includes compact (Kafka's log cleaner).

        The broker's retention loop calls this for compacted topics; `now_ms` defaults to the engine
        clock. Returns None when the log is not due (see `storage.file.cleaner` for the rules).
        """
        async with self._clean_lock:
            return await clean_log(self, self._engine.clock() if now_ms is None else now_ms)

    async def replace_segments(self, old: list[LogSegment], new: LogSegment, *, truncations: int,
                               commit: Callable[[], Any], finish: Callable[[], Any],
                               discard: Callable[[], Any]) -> bool:
        """Put `new` in the place of the adjacent closed segments `old` (the cleaner's swap; Kafka's
        ``replaceSegments``). Under the log's mutex: if the log is open and writable, was not truncated
        since `truncations` and still holds `old` as a run of closed segments, the blocking `commit`
        runs on the log's write thread (from its end a recovery completes the swap, so the log uses
        `new` from then on), `old` retire (readers using them finish first) and `finish` runs; True.
        Otherwise `discard` runs and nothing changes; False. A failure after `commit` takes the log
        offline (the files are recoverable) and is raised."""
        async with self._mutex:
            if (self._closed or self._offline is not None or self._truncations != truncations
                    or not _is_closed_run(self._segments, old)):
                try:
                    await self.run_io(discard)
                except StorageError:  # the engine stopped: close the descriptor; the files go at the next start
                    new.retire()
                return False
            done, interrupted = await self._io_to_the_end(commit)
            late = done.result()  # raises when nothing was committed (the log is as before)
            at = self._segments.index(old[0])
            self._segments = [*self._segments[:at], new, *self._segments[at + len(old):]]
            self._bases = [s.base_offset for s in self._segments]
            for segment in old:
                segment.retire()
            done, cut = await self._io_to_the_end(finish)
            interrupted = interrupted or cut
            error = late or done.exception()
            if isinstance(error, BaseException):
                if not isinstance(error, StorageError):
                    raise error
                self._go_offline(error)
                raise error
            if self._segments[0] is new:
                await self._locate_start()
            if interrupted:
                raise asyncio.CancelledError
            return True

    # --- close ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush, write the indexes (with the final time index entry) and close the files."""
        if self._closed:
            return
        async with self._mutex:
            self._cancel_timer()
            if self._offline is None:
                try:
                    await self.flush()
                except StorageError:
                    pass  # logged by _go_offline; the log is offline now
            self._closed = True
            snapshot = None
            if self._offline is None and (len(self._txns) or self._snapshots):
                # Kafka's snapshot at a clean close; a log that never saw a producer needs none
                # (opening after a clean shutdown with no snapshot replays nothing).
                snapshot = encode_snapshot(self._txns.entries())
            await self.run_io(self._close_blocking, True, snapshot)

    async def abandon(self) -> None:
        """Close the files without flushing (the log is being deleted)."""
        self._cancel_timer()
        async with self._mutex:
            self._closed = self._deleted = True
            await self.run_io(self._close_blocking, False, None)

    def _close_blocking(self, write_indexes: bool, snapshot: bytes | None) -> None:
        segments = self._segments
        if write_indexes and self._offline is None:
            segments[-1].seal()
            for segment in segments:
                try:
                    segment.write_pending_indexes()
                except OSError as exc:
                    self._log.warning("storage.index.write_failed", segment=segment.name, error=str(exc))
        if snapshot is not None:
            offsets = sorted({*self._snapshots, self._end})
            if self._write_snapshot_blocking(self._end, snapshot, stray_snapshots(offsets, self._bases)):
                self._snapshots = [o for o in offsets if o not in stray_snapshots(offsets, self._bases)]
        for segment in segments:
            segment.retire()

    def release_files(self) -> None:
        """Close every descriptor now, writing nothing (a simulated crash)."""
        self._cancel_timer()
        self._closed = True
        for segment in self._segments:
            segment.retire()

    def _cancel_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None


def _is_closed_run(segments: Sequence[LogSegment], group: list[LogSegment]) -> bool:
    """Whether `group` is still a run of closed segments of the log (same objects, same order)."""
    for at, segment in enumerate(segments):
        if segment is group[0]:
            run = segments[at:at + len(group)]
            return at + len(group) < len(segments) and all(a is b for a, b in zip(run, group, strict=True))
    return False


def _delete_segment_files(segments: list[LogSegment], fs: Any, directory: str, snapshots: list[int]) -> None:
    for segment in segments:
        segment.delete_files()
    delete_snapshots(fs, directory, snapshots)


def directory_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_directory_name(name: str) -> tuple[str, int] | None:
    topic, dash, number = name.rpartition("-")
    if not dash or not topic or not number.isdigit() or (len(number) > 1 and number[0] == "0"):
        return None
    return topic, int(number)
