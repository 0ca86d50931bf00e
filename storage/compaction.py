"""Kafka's compaction rules, whatever holds the log: which part of a log is cleanable and when a log is due,
the offset map, and which records of each batch stay. The file engine's cleaner (`storage.file.cleaner`)
adds segment files, crash-safe swaps and steps on the log's write thread; the memory engine
(`storage.memory`) rewrites its list of batches in place. Both follow Kafka's ``LogCleanerManager``
and ``Cleaner``:

* **Which part.** The *clean* part ends at the cleaner checkpoint (the log start offset when there is
  none, or when it is below the log start or past the log end). The *dirty* part runs from there to
  the first uncleanable offset: the active segment's base offset, or earlier the base offset of the
  first dirty segment whose largest timestamp is within ``min.compaction.lag.ms`` of now, or of the
  segment holding the first offset of the earliest ongoing transaction (Kafka never cleans past the
  last stable offset: that transaction may still abort). Whole segments only; the active segment is
  never cleaned (`plan_cleaning`).
* **When.** The dirty ratio, dirty bytes / (clean + dirty bytes), must exceed
  ``min.cleanable.dirty.ratio``; or, with some dirty bytes, the earliest first-batch timestamp of the
  dirty segments must be more than ``max.compaction.lag.ms`` old (a forced clean).
* **The offset map** (`add_keys`). The dirty segments are read, and each key maps to its last offset
  there (keys exactly, not hashed as Kafka does); markers and the data of aborted transactions stay
  out, so an aborted value never hides an older committed one. When the keys pass
  ``MAP_MEMORY_BYTES`` (Kafka's dedupe buffer size) the map stops at the next segment boundary (Kafka
  may stop inside a segment) and the rest waits for the next round. The round's end offset is the
  base offset of the first segment not mapped; it becomes the new checkpoint.
* **Which records stay** (`filter_batch`). Every batch below the end offset, clean ones included, is
  filtered, in offset order: a record stays if its offset is at least its key's offset in the map (so
  the latest value of each key), unless it is a tombstone (null value) in a batch whose delete horizon
  has passed. KIP-534: the first round that keeps a tombstone marks its batch with a delete horizon,
  ``now + delete.retention.ms`` (attribute bit 6, the horizon in the base timestamp field), so a
  tombstone stays readable at least delete.retention.ms after the round that cleaned it and goes in
  the first round after that (a round needs dirty data or max.compaction.lag.ms, as in Kafka).
  Keyless records are kept (Kafka drops them as invalid; the broker rejects them for compacted topics,
  so they only come from before a policy change).
* **Transactions** (`CleanedTransactions`, Kafka's ``CleanedTransactionMetadata``). An aborted
  transaction's data lies in [first offset, marker offset] of its producer. A transactional data batch
  of an aborted transaction loses every record, whatever its keys; committed transactional data is
  compacted like any other. A COMMIT or ABORT marker may go only when its transaction is empty: the
  round, reading every batch below its end offset in order, read no transactional batch of its
  producer since that producer's previous marker (so a round that removed a transaction's last batches
  keeps its marker). The first round that finds it so gives the marker a delete horizon as for
  tombstones, and the first round at or after the horizon drops it (`filter_marker`), and with it its
  aborted-transaction entry. Other control records stay.
* **Producer state** (Kafka's ``isBatchLastRecordOfProducer``). For each producer the log's state
  knows, the batch holding its last data offset stays, emptied if it loses every record, and so does
  any marker of its current epoch after that batch, whole: Kafka keeps such a marker when the
  producer has no data batch since its epoch changed; keeping it otherwise too keeps the coordinator
  epoch and timestamp of its last marker. A replay of the compacted log then rebuilds the same
  producer entries.
* **Offsets.** Records keep their offsets; a batch keeps its base offset and its last offset delta
  whatever it loses (Kafka's v2 rule, which also keeps producer sequence ranges). A batch that loses
  every record goes, except a producer's last one (above) and the last batch of a segment, kept empty
  (a marker there stays whole): Kafka keeps the round's last batch "so that last offset information
  is not lost". Batches that lose nothing and need no horizon are kept byte for byte; others are
  re-encoded and recompressed with their codec (`rewrite_batch`). Producer id, epoch, base sequence,
  leader epoch and timestamp type are kept.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from protocol.primitives import INT64_MAX
from protocol.records import Compression, Record, RecordBatch, compress, iter_records
from protocol.records.batch import (
    COMPRESSION_MASK,
    DELETE_HORIZON_FLAG,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    TimestampType,
    write_crc,
)
from protocol.records.control import ControlType, control_type
from protocol.records.record import encode_record
from storage.interface import AbortedTxn, ProducerSnapshotEntry

if TYPE_CHECKING:
    from storage.file.config import LogConfig

# Kafka's topic defaults for the settings the file engine's LogConfig does not default itself.
CLEANER_DEFAULTS: dict[str, Any] = {
    "min.cleanable.dirty.ratio": 0.5,
    "min.compaction.lag.ms": 0,
    "max.compaction.lag.ms": INT64_MAX,
    "delete.retention.ms": 86_400_000,  # 1 day
}

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
class CleanPlan:
    """The cleanable range of a segment snapshot (indexes into it) and whether the log is due."""

    dirty_from: int  # first segment holding dirty data
    uncleanable: int  # first segment that may not be cleaned (at most the active one)
    ratio: float
    forced: bool
    due: bool


@dataclass(slots=True)
class CleanStats:
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

    def rewrote(self, bytes_before: int, bytes_after: int) -> None:
        """One part of the log (a segment, or a page of rows) came out changed."""
        self.segments_replaced += 1
        self.segments_written += 1
        self.bytes_before += bytes_before
        self.bytes_after += bytes_after

    def add(self, other: CleanStats) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def result(self, first_dirty: int, end_offset: int, plan: CleanPlan, aborted: bool = False) -> CleanResult:
        return CleanResult(first_dirty, end_offset, plan.ratio, plan.forced, self.segments_replaced,
                           self.segments_written, self.bytes_before, self.bytes_after, self.records_read,
                           self.superseded + self.tombstones_removed + self.aborted_removed,
                           self.tombstones_removed, self.keyless, aborted,
                           aborted_records_removed=self.aborted_removed, markers_removed=self.markers_removed)


class CleanedTransactions:
    """What one round knows of the log's transactions (Kafka's ``CleanedTransactionMetadata``, and the
    producers' last batches of ``isBatchLastRecordOfProducer``).

    Aborted ranges are every aborted transaction the log holds (the file engine: the ``.txnindex``
    entries of every segment of the round's snapshot): an aborted transaction's data lies in [first
    offset, marker offset] of its producer, and a producer's ranges never overlap, so whether a batch is
    aborted needs no state. Whether a marker's transaction is empty does: the round reads every batch
    below its end offset in offset order, so a marker of producer P may go only if no transactional data
    batch of P was read since P's previous marker (the batches of its transaction, removed or not by this
    round, all come before it)."""

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


class CleanableSegment(Protocol):
    """What planning reads of a segment (the memory engine's `SegmentSummary` stands for a run of batches)."""

    @property
    def base_offset(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def max_timestamp(self) -> int: ...  # the largest timestamp of its batches, -1 when none has one


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    base_offset: int
    size: int
    max_timestamp: int
    first_batch_timestamp: int | None  # the first batch's largest timestamp


def plan_cleaning(segments: Sequence[CleanableSegment], first_dirty: int, settings: CleanerSettings, now: int,
                  stable: int, first_batch_timestamp: Callable[[int], int | None]) -> CleanPlan:
    """LogCleanerManager's cleanableOffsets, dirty ratio and max compaction delay, for the log's segments
    (the last one active); `stable`: the first offset of the earliest ongoing transaction (the high
    watermark when none); `first_batch_timestamp(i)`: the largest timestamp of segment i's first batch
    (asked only of the dirty segments)."""
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
    for i in range(dirty_from, active):
        first = first_batch_timestamp(i)
        if first is not None and first > 0:
            earliest = min(earliest, first)
    forced = dirty_bytes > 0 and earliest < now - settings.max_compaction_lag_ms
    return CleanPlan(dirty_from, uncleanable, ratio, forced, forced or ratio > settings.min_cleanable_ratio)


def add_keys(batch: RecordBatch, first_dirty: int, txns: CleanedTransactions, key_map: dict[bytes, int]) -> int:
    """Map each key of the batch's records from `first_dirty` on to its offset (later ones win); returns
    the estimated bytes the map grew by. Markers and aborted data stay out: an aborted record must not
    hide an older committed value."""
    if batch.last_offset < first_dirty or batch.is_control or txns.is_aborted(batch):
        return 0
    grown = 0
    for record in iter_records(batch):
        key = record.key
        if key is not None and record.offset >= first_dirty:
            if key not in key_map:
                grown += len(key) + MAP_ENTRY_OVERHEAD
            key_map[key] = record.offset
    return grown


def filter_stored_batch(batch: RecordBatch, key_map: dict[bytes, int], txns: CleanedTransactions, now: int,
                        delete_retention_ms: int, last: bool, stats: CleanStats) -> tuple[bytearray | None, int] | None:
    """`filter_marker` for a control batch, `filter_batch` for any other: what a round keeps of it."""
    if batch.is_control:
        return filter_marker(batch, txns, now, delete_retention_ms, last, stats)
    return filter_batch(batch, key_map, txns, now, delete_retention_ms, last, stats)


def filter_marker(batch: RecordBatch, txns: CleanedTransactions, now: int, delete_retention_ms: int, last: bool,
                   stats: CleanStats) -> tuple[bytearray | None, int] | None:
    """A control batch: as `filter_batch` answers. A marker whose transaction is empty gets a delete
    horizon in the first round that finds it so (KIP-534, as tombstones), and goes in the first round
    after the horizon, unless it holds its producer's state or ends the group (kept whole then)."""
    if not txns.read_marker(batch):
        return None, batch.max_timestamp
    horizon = batch.delete_horizon_ms
    if horizon is None:
        return rewrite_batch(batch, list(iter_records(batch)), min(now + delete_retention_ms, INT64_MAX))
    if now < horizon or last or txns.holds_producer_state(batch):
        return None, batch.max_timestamp
    stats.markers_removed += 1
    return None


def filter_batch(batch: RecordBatch, key_map: dict[bytes, int], txns: CleanedTransactions, now: int,
                  delete_retention_ms: int, last: bool, stats: CleanStats) -> tuple[bytearray | None, int] | None:
    """None to drop the batch; (None, max timestamp) to copy it as it is; (new bytes, max timestamp).

    A batch that loses every record stays, empty, when it ends the group or holds its producer's state."""
    keep_empty = last or txns.holds_producer_state(batch)
    if txns.read_data(batch):  # aborted: every record goes, whatever its key
        count = batch.record_count
        stats.records_read += count
        stats.aborted_removed += count
        if not keep_empty:
            return None
        return (None, batch.max_timestamp) if count == 0 else rewrite_batch(batch, [], None)
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
        return rewrite_batch(batch, [], None)  # kept empty: its header holds the segment end or producer state
    if len(kept) == len(records) and not set_horizon:
        return None, batch.max_timestamp
    if set_horizon:
        horizon = min(now + delete_retention_ms, INT64_MAX)
    return rewrite_batch(batch, kept, horizon)


def rewrite_batch(batch: RecordBatch, records: list[Record], horizon: int | None) -> tuple[bytearray, int]:
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
