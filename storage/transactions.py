"""The transaction state of one log, from batch headers: Kafka's ProducerStateManager, pure.

`TransactionTracker` is fed every batch appended to a log, in offset order, after its offset is
assigned. From the header alone (only a control batch's one record is read) it keeps:

- per producer id (>= 0), the fields of Kafka's producer-state snapshot entry: epoch, last sequence,
  last offset, offset delta and timestamp of its last batch, the coordinator epoch of its last
  marker, and the first offset of its ongoing transaction;
- the ongoing transactions: a transactional data batch starts its producer's transaction at its
  base offset when the producer has none; a COMMIT or ABORT marker (a control batch) ends it. A
  marker for a producer with no ongoing transaction here is allowed (the coordinator writes markers
  to every partition of a transaction, some got no data) and only updates the producer's entry.
- for each ABORT marker that ends a transaction, an `AbortedTxn` (returned to the caller, which keeps
  it: `storage.aborted_txns`), whose last stable offset is Kafka's: the first offset of the earliest
  transaction still ongoing, else the offset after the marker.

Kafka's rules on a marker: the producer's epoch becomes the marker's, and when that changes the
epoch the producer's last-batch fields are cleared (`ProducerStateEntry.maybeUpdateProducerEpoch`);
the marker's timestamp becomes the producer's timestamp. Producer entries are never dropped when the
log start moves (Kafka 2.8+ keeps them); they go by producer id expiration (`expire`, Kafka's
``producer.id.expiration.ms`` rule) or when the broker's bound on producer state evicts them (`forget`);
neither touches a producer with an ongoing transaction.

Cost: O(1) per batch. Ongoing transactions are kept in an `OrderedDict` in the order they started,
which is the order of their first offsets (a transaction starts at the log end), so the first
unstable offset is its first value. Engines feed batches once they are in the log (an append that
fails changes nothing here).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from protocol.records import RecordBatch
from protocol.records.control import ControlType, control_type, marker_coordinator_epoch
from storage.interface import AbortedTxn, ProducerSnapshotEntry

NONE = -1  # Kafka's "none" for sequences, offsets, timestamps and epochs in the snapshot fields


class _Producer:
    """The mutable state behind one `ProducerSnapshotEntry`."""

    __slots__ = ("coordinator_epoch", "epoch", "last_offset", "last_sequence", "offset_delta", "timestamp",
                 "txn_first_offset")

    def __init__(self, epoch: int = NONE, last_sequence: int = NONE, last_offset: int = NONE,
                 offset_delta: int = 0, timestamp: int = NONE, coordinator_epoch: int = NONE,
                 txn_first_offset: int = NONE) -> None:
        self.epoch = epoch
        self.last_sequence = last_sequence
        self.last_offset = last_offset
        self.offset_delta = offset_delta
        self.timestamp = timestamp
        self.coordinator_epoch = coordinator_epoch
        self.txn_first_offset = txn_first_offset

    def copy(self) -> _Producer:
        return _Producer(self.epoch, self.last_sequence, self.last_offset, self.offset_delta, self.timestamp,
                         self.coordinator_epoch, self.txn_first_offset)

    def entry(self, producer_id: int) -> ProducerSnapshotEntry:
        return ProducerSnapshotEntry(producer_id, self.epoch, self.last_sequence, self.last_offset,
                                     self.offset_delta, self.timestamp, self.coordinator_epoch,
                                     self.txn_first_offset)


class TransactionTracker:
    """Producer entries and ongoing transactions of one log (see the module docstring)."""

    __slots__ = ("_ongoing", "_producers")

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}
        self._ongoing: OrderedDict[int, int] = OrderedDict()  # producer id -> first offset, oldest first

    @classmethod
    def from_entries(cls, entries: Iterable[ProducerSnapshotEntry]) -> TransactionTracker:
        """A tracker holding the given entries (a snapshot), their ongoing transactions included."""
        tracker = cls()
        ongoing = []
        for e in entries:
            tracker._producers[e.producer_id] = _Producer(
                e.producer_epoch, e.last_sequence, e.last_offset, e.offset_delta, e.timestamp, e.coordinator_epoch,
                e.current_txn_first_offset)
            if e.current_txn_first_offset >= 0:
                ongoing.append((e.current_txn_first_offset, e.producer_id))
        for first, producer_id in sorted(ongoing):
            tracker._ongoing[producer_id] = first
        return tracker

    def copy(self) -> TransactionTracker:
        tracker = TransactionTracker()
        tracker._producers = {pid: p.copy() for pid, p in self._producers.items()}
        tracker._ongoing = OrderedDict(self._ongoing)
        return tracker

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransactionTracker):
            return NotImplemented
        return self.entries() == other.entries() and list(self._ongoing.items()) == list(other._ongoing.items())

    def __repr__(self) -> str:
        return f"TransactionTracker(producers={len(self._producers)}, ongoing={dict(self._ongoing)})"

    # --- reading ---------------------------------------------------------------------------------------

    @property
    def first_unstable_offset(self) -> int | None:
        """First offset of the earliest ongoing transaction, or None."""
        for first in self._ongoing.values():
            return first
        return None

    def last_stable_offset(self, log_start_offset: int, high_watermark: int) -> int:
        """Kafka's LSO: max(log start, first unstable offset) while a transaction is ongoing, never past
        the high watermark; the high watermark otherwise."""
        first = self.first_unstable_offset
        if first is None:
            return high_watermark
        return min(max(first, log_start_offset), high_watermark)

    def ongoing(self) -> dict[int, tuple[int, int]]:
        """producer id -> (epoch, first offset) of each ongoing transaction."""
        return {pid: (self._producers[pid].epoch, first) for pid, first in self._ongoing.items()}

    def entries(self) -> list[ProducerSnapshotEntry]:
        """Every producer's entry, by producer id."""
        return [self._producers[pid].entry(pid) for pid in sorted(self._producers)]

    def __len__(self) -> int:
        """How many producer ids the tracker holds."""
        return len(self._producers)

    # --- feeding ---------------------------------------------------------------------------------------

    def append(self, batch: RecordBatch, base_offset: int, max_timestamp: int) -> AbortedTxn | None:
        """Feed one appended batch; `base_offset` and `max_timestamp` are what the log assigned (the
        view may predate the patch). Returns the aborted transaction an ABORT marker ended, if any."""
        producer_id = batch.producer_id
        if producer_id < 0:
            return None
        if batch.is_control:
            kind = control_type(batch)
            if kind != ControlType.ABORT and kind != ControlType.COMMIT:
                return None  # not a transaction marker (KRaft control records and the like)
            coordinator_epoch = marker_coordinator_epoch(batch)
            return self.end_transaction(producer_id, batch.producer_epoch, base_offset, kind == ControlType.COMMIT,
                                        NONE if coordinator_epoch is None else coordinator_epoch, max_timestamp)
        self.add_data(producer_id, batch.producer_epoch, base_offset, base_offset + batch.last_offset_delta,
                      batch.last_sequence, max_timestamp, batch.is_transactional)
        return None

    def add_data(self, producer_id: int, epoch: int, base_offset: int, last_offset: int, last_sequence: int,
                 timestamp: int, transactional: bool) -> None:
        """A data (non-control) batch of producer `producer_id`."""
        producer = self._touch(producer_id)
        producer.epoch = epoch
        producer.last_sequence = last_sequence
        producer.last_offset = last_offset
        producer.offset_delta = last_offset - base_offset
        producer.timestamp = timestamp
        if transactional and producer.txn_first_offset < 0:
            producer.txn_first_offset = base_offset
            self._ongoing[producer_id] = base_offset

    def end_transaction(self, producer_id: int, epoch: int, offset: int, commit: bool, coordinator_epoch: int,
                        timestamp: int) -> AbortedTxn | None:
        """A COMMIT or ABORT marker of `producer_id` at `offset`."""
        producer = self._touch(producer_id)
        if producer.epoch != epoch:
            producer.epoch = epoch
            producer.last_sequence = producer.last_offset = NONE
            producer.offset_delta = 0
        producer.coordinator_epoch = coordinator_epoch
        producer.timestamp = timestamp
        first = producer.txn_first_offset
        if first < 0:
            return None
        producer.txn_first_offset = NONE
        del self._ongoing[producer_id]
        if commit:
            return None
        lso = self.first_unstable_offset
        return AbortedTxn(producer_id, first, offset, offset + 1 if lso is None else lso)

    # --- forgetting --------------------------------------------------------------------------------

    def forget(self, producer_id: int) -> bool:
        """Drop a producer's entry unless it has an ongoing transaction (the last stable offset needs
        it); returns whether it was dropped."""
        if producer_id in self._ongoing or producer_id not in self._producers:
            return False
        del self._producers[producer_id]
        return True

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Kafka's ``removeExpiredProducers``: drop producers with no ongoing transaction whose last
        timestamp is ``expiration_ms`` or more before ``now_ms``; returns how many."""
        expired = [pid for pid, p in self._producers.items()
                   if pid not in self._ongoing and now_ms - p.timestamp >= expiration_ms]
        for pid in expired:
            del self._producers[pid]
        return len(expired)

    def _touch(self, producer_id: int) -> _Producer:
        producer = self._producers.get(producer_id)
        if producer is None:
            producer = self._producers[producer_id] = _Producer()
        return producer
