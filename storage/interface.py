"""The partition storage interface: what the broker needs from any storage engine.

A `StorageEngine` owns many `PartitionLog`s, one per (topic, partition). A log is an ordered sequence of
v2 record batches kept as raw bytes exactly as they will be served to consumers: the engine assigns
offsets by patching each batch's base offset in place (outside the CRC) and never looks at records
unless a lookup needs them (timestamp search). Engines are chosen by URL: ``memory://``,
``file:///path`` and ``postgresql://...`` (`storage.postgres`, shared by several brokers).
Everything that may touch a disk or a network is async.

Offsets follow Kafka's names: the log start offset is the first offset still readable, the log end
offset is the offset the next append gets, and the high watermark is the end of what consumers may
read (on a single node, everything appended). Transactions (Kafka's ProducerStateManager and
TransactionIndex, tracked by `storage.transactions`) add the last stable offset, the end of what
read_committed consumers may read, the aborted transactions a read_committed fetch returns with its
data, and per-producer state for DescribeProducers.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ErrorCode, KafkaError

TopicConfigSource = Mapping[str, Any] | Callable[[str], Any] | None

# The broker setting that bounds the batch bytes the memory engine holds (all its logs together), and
# its default: -1, unbounded (as Kafka's retention.bytes uses -1).
MEMORY_MAX_BYTES_SETTING = "memory.max.bytes"
UNBOUNDED = -1
# The URL schemes of the PostgreSQL engine (`storage.postgres`), whose data no data directory holds.
POSTGRES_URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_URL_SCHEMES)


def redacted_url(url: str) -> str:
    """A storage URL without its password, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the clock engines use for retention when none is injected."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offsets given to the appended batches (first base offset, last offset of the last batch)."""

    base_offset: int
    last_offset: int
    log_append_time: int = -1  # the broker time written into the batches under LogAppendTime, else -1


@dataclass(slots=True)
class ReadResult:
    """Whole batches starting at or before the requested offset, as buffers for zero-copy writes."""

    chunks: list[Any] = field(default_factory=list)
    size: int = 0
    high_watermark: int = 0
    log_start_offset: int = 0


@dataclass(frozen=True, slots=True)
class TimestampOffset:
    """The answer to a lookup by timestamp: the first offset whose record timestamp is >= the target."""

    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction of a log, as Kafka's ``.txnindex`` entry holds it."""

    producer_id: int
    first_offset: int
    last_offset: int  # offset of the ABORT marker
    last_stable_offset: int  # the log's last stable offset right after the marker was appended


@dataclass(frozen=True, slots=True)
class ProducerSnapshotEntry:
    """What a log knows of one producer id: the fields of Kafka's producer-state snapshot entry."""

    producer_id: int
    producer_epoch: int
    last_sequence: int  # -1 when none (no data batch since the epoch was set)
    last_offset: int  # last offset of its last data batch, -1 when none
    offset_delta: int  # last offset - base offset of that batch, 0 when none
    timestamp: int  # max timestamp of its last batch (marker included), -1 when none
    coordinator_epoch: int  # from its last transaction marker, -1 when none
    current_txn_first_offset: int  # first offset of its ongoing transaction, -1 when none


class OffsetOutOfRange(KafkaError):
    """A read or truncation before the log start offset or past the log end offset."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(ErrorCode.OFFSET_OUT_OF_RANGE,
                         f"offset {offset} is outside the log's range [{log_start_offset}, {log_end_offset}]")
        self.offset = offset


class PartitionLog(abc.ABC):
    """One partition's log. Appends are serialised by the caller (one appender per partition at a time)."""

    topic: str
    partition: int

    @property
    @abc.abstractmethod
    def log_start_offset(self) -> int: ...

    @property
    @abc.abstractmethod
    def log_end_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int:
        return self.log_end_offset

    @property
    def size_bytes(self) -> int:
        """Bytes of batch data held from the log start (DescribeLogDirs, retention.bytes)."""
        raise NotImplementedError(f"{type(self).__name__} does not report its size")

    @property
    @abc.abstractmethod
    def last_stable_offset(self) -> int:
        """The end of what read_committed consumers may read: max(log start offset, first offset of
        the earliest ongoing transaction) while one is ongoing (never past the high watermark), else
        the high watermark."""

    @abc.abstractmethod
    async def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """Every aborted transaction with ``last_offset >= start_offset`` and ``first_offset <
        end_offset``, ordered by first offset (Kafka's ``collectAbortedTransactions``); those whose
        marker is below the log start offset are gone."""

    @abc.abstractmethod
    def ongoing_transactions(self) -> dict[int, tuple[int, int]]:
        """producer id -> (producer epoch, first offset) of every ongoing transaction."""

    @abc.abstractmethod
    def producer_entries(self) -> list[ProducerSnapshotEntry]:
        """The state kept for each producer id seen (DescribeProducers), by producer id."""

    @abc.abstractmethod
    def forget_producer(self, producer_id: int) -> bool:
        """Drop what the log keeps of a producer (the broker's bound on producer state evicted it), unless
        it has an ongoing transaction; returns whether it was dropped. Later snapshots leave it out."""

    @abc.abstractmethod
    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Drop the producers without an ongoing transaction whose last batch or marker timestamp is
        ``expiration_ms`` or more before ``now_ms`` (``producer.id.expiration.ms``); returns how many."""

    @abc.abstractmethod
    async def append(self, records: bytearray | memoryview, log_append_time: int | None = None) -> AppendResult:
        """Append one or more whole, already validated v2 batches held in a writable buffer.

        The engine patches base offsets in place, starting at the log end offset; with
        ``log_append_time`` it also stamps that time into each batch (recomputing its CRC).
        """

    @abc.abstractmethod
    async def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
                   max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one containing ``offset``, up to ``max_bytes`` in total.

        With ``min_one_batch`` the first batch is returned even if it alone exceeds ``max_bytes``
        (Kafka does this so that a consumer always makes progress). Batches at or past
        ``max_offset`` (default: the high watermark) are not returned. Raises `OffsetOutOfRange`.
        """

    @abc.abstractmethod
    async def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        """First record with timestamp >= ``timestamp``; None if there is none."""

    @abc.abstractmethod
    async def max_timestamp(self) -> TimestampOffset | None:
        """The record with the largest timestamp (the earliest such offset); None for an empty log."""

    @abc.abstractmethod
    async def truncate_to(self, offset: int) -> None:
        """Drop every batch at or after ``offset`` (which must be a batch boundary or the end)."""

    @abc.abstractmethod
    async def delete_records_before(self, offset: int) -> int:
        """Advance the log start offset to ``offset`` (DeleteRecords); returns the new log start offset."""

    async def flush(self) -> None:
        """Make every appended batch durable (no-op for engines without durability)."""

    async def refresh(self) -> None:
        """Catch up with what other brokers sharing the storage appended or removed (engines nobody
        shares: nothing to do)."""

    async def apply_retention(self, now_ms: int | None = None) -> Any:
        """Delete what ``retention.ms`` / ``retention.bytes`` no longer keep (engines without retention:
        nothing). The broker calls it every ``log.retention.check.interval.ms``."""
        return None

    async def clean(self, now_ms: int | None = None) -> Any:
        """One compaction round when ``cleanup.policy`` includes compact (`storage.compaction`'s rules);
        None when the log is not due. The broker calls it after retention, for compacted topics."""
        return None

    async def close(self) -> None:
        """Release resources; the log is not used afterwards."""


class StorageEngine(abc.ABC):
    """Creates, opens and deletes partition logs."""

    url: str
    # Whether other brokers may share this storage (their changes then come through `refresh`,
    # `forget_log` and reloads of the metadata blob under `metadata_lock`).
    shared: bool = False

    @abc.abstractmethod
    async def open_log(self, topic: str, partition: int, config: TopicConfigSource = None) -> PartitionLog:
        """Open (creating if needed) the log of one partition; the same object for repeated calls.

        ``config`` gives the topic's effective settings by Kafka name (``segment.bytes``,
        ``retention.ms``, ``flush.messages``...): a mapping, or a callable looked up on every use so
        that altered configs apply at once. Engines ignore what they do not use."""

    @abc.abstractmethod
    async def delete_log(self, topic: str, partition: int) -> None:
        """Delete a partition's log and its data; unknown partitions are ignored."""

    async def delete_logs(self, partitions: list[tuple[str, int]]) -> None:
        """Delete several partitions' logs (a whole topic): engines with per-deletion bookkeeping do it
        once for all of them. On an error, the partitions not yet deleted stay listed."""
        for topic, partition in partitions:
            await self.delete_log(topic, partition)

    @abc.abstractmethod
    def partitions(self) -> list[tuple[str, int]]:
        """Every (topic, partition) the engine holds a log for."""

    async def load_metadata(self) -> bytes | None:
        """The cluster metadata blob saved last (topics, ids, configs), or None if none was saved."""
        return None

    async def save_metadata(self, data: bytes) -> None:
        """Replace the cluster metadata blob atomically (a crash leaves the old or the new one)."""

    async def forget_log(self, topic: str, partition: int) -> None:
        """Close a partition's log here without deleting its data: another broker sharing the storage
        deleted it. Only shared engines are asked."""
        raise NotImplementedError(f"{type(self).__name__} is not shared by other brokers")

    def metadata_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while the cluster metadata blob is read, changed and saved: across every broker sharing
        the storage (for the others, this broker's own lock is enough: a no-op)."""
        return contextlib.nullcontext()

    async def claim_cluster_id(self, candidate: str) -> str:
        """The cluster id kept with the data, ``candidate`` when none was kept yet (engines other brokers
        share hold one for all of them; the others keep none, their data directory's meta.properties does)."""
        return candidate

    async def close(self) -> None:
        """Close every log."""


def open_engine(url: str, *, memory_max_bytes: int = UNBOUNDED, **file_options: Any) -> StorageEngine:
    """The engine for a storage URL: ``memory://``, ``file:///path[?options]`` or
    ``postgresql://user:password@host:port/database[?options]``.

    ``memory_max_bytes`` bounds what the memory engine holds (``memory.max.bytes``); ``file_options``
    are defaults for the file engine's options (the URL's own options win). Each engine ignores the
    other's."""
    if url == "memory://" or url.startswith("memory:"):
        from storage.memory import MemoryEngine

        return MemoryEngine(max_bytes=memory_max_bytes)
    if url.startswith("file://"):
        from storage.file import FileEngine

        return FileEngine.from_url(url, **file_options)
    if is_postgres_url(url):
        from storage.postgres import PostgresEngine

        return PostgresEngine.from_url(url)
    raise ValueError(f"unknown storage URL {url!r}: expected memory://, file:///path or "
                     f"postgresql://user:password@host:port/database")
