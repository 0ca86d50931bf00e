"""Idempotent producers: producer id allocation and per-partition sequence tracking. Pure logic, no I/O.

Follows Kafka's ``ProducerStateManager`` / ``ProducerAppendInfo`` / ``ProducerStateEntry``
(storage/internals/log), for client appends:

- Each partition keeps, per producer id, the current epoch and the metadata (first/last sequence,
  first/last offset) of the last 5 batches (``NUM_BATCHES_TO_RETAIN``).
- A batch whose epoch and sequence range equal one of those is a retried duplicate: it is not appended
  and the client is told success with the ORIGINAL offsets (modern Kafka answers NONE, not
  DUPLICATE_SEQUENCE_NUMBER).
- An epoch older than the partition's -> INVALID_PRODUCER_EPOCH (Kafka 2.7+, ``InvalidProducerEpochException``).
- A newer epoch must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER; it replaces the old epoch.
- Same epoch: the first sequence must follow the last one (sequences wrap from INT32_MAX to 0), else
  OUT_OF_ORDER_SEQUENCE_NUMBER.
- A producer id the partition has no state for is accepted at any sequence: Kafka 4 no longer answers
  UNKNOWN_PRODUCER_ID, because state legitimately disappears (retention, DeleteRecords, expiry).
- Producer state unused for ``producer.id.expiration.ms`` (Kafka's default, one day) is dropped,
  checked at most every ``producer.id.expiration.check.interval.ms`` (ten minutes) per partition.
  Moldau ages entries by broker time of the last append, where Kafka uses the batch's max timestamp.
- Kafka accepts idempotent batches from producer ids InitProducerId never handed out, so a client can
  make the broker keep state for as many ids as it likes for a day. Moldau bounds the total: at most
  ``producer.state.max.entries`` (partition, producer) entries over the whole broker; past that the
  least recently appended one is dropped (`ProducerLru`). An evicted producer is then unknown, exactly
  like an expired one in Kafka: its next batch is accepted at any sequence (Kafka 2.5+ answers neither
  UNKNOWN_PRODUCER_ID nor OUT_OF_ORDER_SEQUENCE_NUMBER for a producer it has no state for), and only a
  retry of a batch appended before the eviction is no longer recognised as a duplicate.

Producer ids come from `ProducerIdAllocator`: a counter starting at 1000 that hands ids out of blocks
whose end is persisted before use (as Kafka's controller does), so no id is ever given out twice.
After a restart a partition's state is rebuilt on first use: every producer the log's producer-state
snapshot remembers gets its last batch (`seed_from`; the storage engine keeps Kafka's ``.snapshot``
files), and the batch headers at the tail of the log give recent producers up to 5 (`rebuild_from`), so a
producer retrying across a restart is still deduplicated however long ago it last wrote.

`ClusterState.producers` holds the broker's one `ProducerRegistry` (allocator and every partition's
state).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog

from broker.config import BrokerConfig
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT32_MAX
from protocol.records import iter_batches

NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NUM_BATCHES_TO_RETAIN = 5
PRODUCER_ID_EXPIRATION_MS = 86_400_000
PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS = 600_000
FIRST_PRODUCER_ID = 1000
DEFAULT_MAX_PRODUCER_ENTRIES = BrokerConfig.producer_state_max_entries  # see `ProducerLru`
# Log the eviction count at most once per this many evictions, so a hostile client cannot flood the log.
EVICTION_LOG_EVERY = 10_000

log = structlog.get_logger()


def next_sequence(sequence: int, increment: int = 1) -> int:
    """``sequence + increment`` with Kafka's wrap from INT32_MAX to 0."""
    return (sequence + increment) % (INT32_MAX + 1)


def in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """What a retried batch is recognised by, and the offsets its first append got."""

    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int = -1


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int = NO_PRODUCER_EPOCH
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    last_append_ms: int = 0

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for meta in self.batches:
            if meta.first_seq == first_seq and meta.last_seq == last_seq:
                return meta
        return None


class ProducerLru:
    """The broker-wide bound on producer entries: every (partition state, producer id) in order of last
    append; recording one past ``max_entries`` evicts the least recently appended."""

    def __init__(self, max_entries: int = DEFAULT_MAX_PRODUCER_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"producer.state.max.entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.evicted = 0
        self._order: OrderedDict[tuple[PartitionProducerState, int], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def touch(self, state: PartitionProducerState, producer_id: int) -> None:
        key = (state, producer_id)
        if key in self._order:
            self._order.move_to_end(key)
            return
        self._order[key] = None
        while len(self._order) > self.max_entries:
            (old_state, old_id), _ = self._order.popitem(last=False)
            old_state.evict(old_id)
            self.evicted += 1
            if self.evicted % EVICTION_LOG_EVERY == 1:
                log.warning("producer_state.evicted", evicted_total=self.evicted, max_entries=self.max_entries,
                            topic_partition=old_state.topic_partition, producer_id=old_id,
                            hint="more idempotent producers than producer.state.max.entries; the least "
                                 "recently used lose duplicate detection for earlier batches; raise the "
                                 "setting if these producers are legitimate")

    def discard(self, state: PartitionProducerState, producer_id: int) -> None:
        self._order.pop((state, producer_id), None)


class PartitionProducerState:
    """The idempotent producers of one partition: check a batch, then record it once appended."""

    def __init__(self, topic_partition: str = "", lru: ProducerLru | None = None,
                 on_forget: Callable[[int], object] | None = None) -> None:
        self.topic_partition = topic_partition
        self._producers: dict[int, ProducerEntry] = {}
        # Called with each producer id evicted or expired here, so the log forgets it too (its
        # producer-state snapshot would otherwise keep every id it ever saw).
        self._on_forget = on_forget
        self._last_expiry_check_ms = 0
        # Shared with every partition of the broker; a state made on its own gets a private bound.
        self._lru = lru if lru is not None else ProducerLru()

    def __len__(self) -> int:
        return len(self._producers)

    def entry(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int, next_offset: int,
              now_ms: int = 0) -> BatchMetadata | None:
        """Validate a batch about to be appended at ``next_offset``.

        Returns the metadata of the batch it duplicates (do not append; answer with its offsets), or
        None (append, then call `record`). Raises `KafkaError` with INVALID_PRODUCER_EPOCH or
        OUT_OF_ORDER_SEQUENCE_NUMBER.
        """
        self.maybe_expire(now_ms)
        entry = self._producers.get(producer_id)
        if entry is None:
            return None  # unknown producer: any sequence is accepted
        duplicate = entry.find_duplicate(epoch, first_seq, last_seq)
        if duplicate is not None:
            return duplicate
        where = f"producer {producer_id} at offset {next_offset} in partition {self.topic_partition}"
        if epoch < entry.epoch:
            raise KafkaError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"Epoch of {where} is {epoch}, which is smaller than the last seen epoch {entry.epoch}")
        if epoch != entry.epoch:
            if first_seq != 0 and entry.epoch != NO_PRODUCER_EPOCH:
                raise KafkaError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"Invalid sequence number for new epoch of {where}: {epoch} (request epoch), {first_seq} "
                    f"(seq. number), {entry.epoch} (current producer epoch); a new epoch must start at 0")
        elif entry.epoch != NO_PRODUCER_EPOCH and not in_sequence(entry.last_seq, first_seq):
            raise KafkaError(
                ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"Out of order sequence number for {where}: {first_seq} (incoming seq. number), "
                f"{entry.last_seq} (current end sequence number)")
        return None

    def record(self, producer_id: int, epoch: int, first_seq: int, last_seq: int, first_offset: int,
               last_offset: int, timestamp: int = -1, now_ms: int = 0) -> None:
        """Remember a batch that was appended at ``first_offset..last_offset``."""
        entry = self._producers.get(producer_id)
        if entry is None:
            entry = self._producers[producer_id] = ProducerEntry(producer_id)
        if epoch != entry.epoch:
            # A new epoch starts afresh: the old epoch's batches can no longer be retried.
            entry.epoch = epoch
            entry.batches.clear()
        entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, last_offset, timestamp))
        entry.last_append_ms = now_ms
        self._lru.touch(self, producer_id)

    def evict(self, producer_id: int) -> None:
        """Forget one producer (called by the `ProducerLru` when the broker-wide bound is reached)."""
        self._producers.pop(producer_id, None)
        if self._on_forget is not None:
            self._on_forget(producer_id)

    def clear(self) -> None:
        """Forget every producer of this partition (the partition is deleted)."""
        for producer_id in self._producers:
            self._lru.discard(self, producer_id)
        self._producers.clear()

    def seed_from(self, entries: list[Any], now_ms: int | None = None) -> int:
        """Remember the last batch of each producer a log's snapshot keeps (``ProducerSnapshotEntry``s)
        that this state does not know yet (call it after `rebuild_from`, whose tail replay gives recent
        producers more batches); returns how many. Entries without a batch of their current epoch (a
        marker bumped it) are left out: such a producer is accepted at any sequence, as unknown."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        count = 0
        for e in entries:
            if e.producer_id < 0 or e.last_sequence < 0 or e.last_offset < 0 or e.producer_id in self._producers:
                continue
            first_seq = next_sequence(e.last_sequence, -e.offset_delta)
            self.record(e.producer_id, e.producer_epoch, first_seq, e.last_sequence, e.last_offset - e.offset_delta,
                        e.last_offset, e.timestamp, now)
            count += 1
        return count

    def rebuild_from(self, chunks: list[Any], now_ms: int | None = None) -> int:
        """Replay the headers of stored batches (oldest first) into this state; returns how many
        producers it now knows. Used after a restart, before the first idempotent append."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        for chunk in chunks:
            for _, batch in iter_batches(chunk):
                if batch.producer_id >= 0 and not batch.is_control:
                    self.record(batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.last_sequence,
                                batch.base_offset, batch.last_offset, batch.max_timestamp, now)
        return len(self._producers)

    def maybe_expire(self, now_ms: int, expiration_ms: int = PRODUCER_ID_EXPIRATION_MS,
                     check_interval_ms: int = PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS) -> int:
        """Drop producers idle for ``expiration_ms`` (at most once per check interval); returns how many."""
        if now_ms - self._last_expiry_check_ms < check_interval_ms:
            return 0
        self._last_expiry_check_ms = now_ms
        expired = [pid for pid, e in self._producers.items() if now_ms - e.last_append_ms >= expiration_ms]
        for pid in expired:
            del self._producers[pid]
            if self._on_forget is not None:
                self._on_forget(pid)
            self._lru.discard(self, pid)
        return len(expired)


PRODUCER_ID_BLOCK_SIZE = 1000  # Kafka's controller hands out ids in blocks of this size


class ProducerIdAllocator:
    """Hands out producer ids, monotonically, across restarts.

    Ids come from blocks: before the first id of a new block is given out, the end of that block is
    made durable through ``reserve`` (the cluster state saves it with its metadata), so a restarted
    broker starts after every id it may ever have handed out. Reusing an id would let a new producer's
    batches be taken for a retry of an old producer's and be acknowledged without being written.
    """

    def __init__(self, first: int = FIRST_PRODUCER_ID, block_size: int = PRODUCER_ID_BLOCK_SIZE) -> None:
        self._next = first
        self.reserved_until = first  # ids below this are covered by a durable reservation
        self.block_size = block_size

    def needs_block(self) -> bool:
        return self._next >= self.reserved_until

    def next_block_end(self) -> int:
        return self._next + self.block_size

    def reserved(self, block_end: int) -> None:
        """Record that ids below ``block_end`` are durably reserved."""
        self.reserved_until = max(self.reserved_until, block_end)

    def restore(self, reserved_until: int) -> None:
        """Continue after every id a previous run may have handed out."""
        self._next = max(self._next, reserved_until)
        self.reserved_until = max(self.reserved_until, reserved_until)

    def allocate(self) -> int:
        if self.needs_block():
            raise RuntimeError("producer id block not reserved: call ClusterState.allocate_producer_id")
        producer_id = self._next
        self._next += 1
        return producer_id


class ProducerRegistry:
    """A broker's producer id allocator and every partition's producer state, by partition key."""

    def __init__(self, first_producer_id: int = FIRST_PRODUCER_ID,
                 max_entries: int = DEFAULT_MAX_PRODUCER_ENTRIES) -> None:
        self.ids = ProducerIdAllocator(first_producer_id)
        self._partitions: dict[Hashable, PartitionProducerState] = {}
        self._lru = ProducerLru(max_entries)

    def __len__(self) -> int:
        """(partition, producer) entries held over every partition; at most ``max_entries``."""
        return len(self._lru)

    def known(self, key: Hashable) -> bool:
        return key in self._partitions

    def partition(self, key: Hashable, topic_partition: str = "",
                  on_forget: Callable[[int], object] | None = None) -> PartitionProducerState:
        """The state of one partition; ``key`` should survive renames and not outlive deletion (topic id).
        ``on_forget`` is told each producer id the state drops (see `PartitionProducerState`)."""
        state = self._partitions.get(key)
        if state is None:
            state = self._partitions[key] = PartitionProducerState(topic_partition, self._lru, on_forget)
        return state

    def forget(self, key: Hashable) -> None:
        """Drop a deleted partition's state."""
        state = self._partitions.pop(key, None)
        if state is not None:
            state.clear()
