"""A list of aborted transactions in Kafka's ``.txnindex`` layout, and the fetch-time search over it.

Each entry is 34 bytes, big-endian, exactly as Kafka's ``TransactionIndex`` file holds it::

    version int16 (0) | producer_id int64 | first_offset int64 | last_offset int64 | last_stable_offset int64

The memory engine keeps one `AbortedTxnList` per log; the file engine one per segment, mirrored in the
segment's ``.txnindex`` file (`storage.file.txn_index`). Entries are appended in the order of their
ABORT markers, so ``last_offset`` increases along the list, which is what makes the search cheap: a
binary search finds the first entry ending at or after the fetch offset, and the walk stops at the
first entry whose last stable offset reaches the upper bound. Every transaction aborted after that
one started at or after that last stable offset, so none of them can start below the bound
(Kafka's ``TxnIndexSearchResult.isComplete``).

Storage is one bytearray that only grows at its end; truncation builds a new list, so a reader on
another thread never sees entries move under it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from storage.interface import AbortedTxn

ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = ENTRY.size  # 34
ENTRY_VERSION = 0
_LAST_OFFSET = struct.Struct(">q")
_LAST_OFFSET_AT = 2 + 8 + 8  # where last_offset sits in an entry


def encode_entry(txn: AbortedTxn) -> bytes:
    return ENTRY.pack(ENTRY_VERSION, txn.producer_id, txn.first_offset, txn.last_offset, txn.last_stable_offset)


class AbortedTxnList:
    """Aborted transactions in marker order, held as their 34-byte encodings."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes | bytearray = b"") -> None:
        self._data = bytearray(data)

    @classmethod
    def decode(cls, data: bytes) -> tuple[AbortedTxnList, str | None]:
        """The sound prefix of a ``.txnindex`` file's bytes, and what was wrong after it (None when
        nothing): a torn trailing entry, an unknown version, or entries out of marker order."""
        whole = len(data) - len(data) % ENTRY_SIZE
        problem = None if whole == len(data) else f"a torn entry of {len(data) - whole} bytes at the end"
        previous = -1
        for at in range(0, whole, ENTRY_SIZE):
            version, _, first, last, _ = ENTRY.unpack_from(data, at)
            if version != ENTRY_VERSION:
                return cls(data[:at]), f"entry {at // ENTRY_SIZE} has unknown version {version}"
            if last < previous or first > last:
                return cls(data[:at]), f"entry {at // ENTRY_SIZE} is out of order"
            previous = last
        return cls(data[:whole]), problem

    def __len__(self) -> int:
        return len(self._data) // ENTRY_SIZE

    def __iter__(self) -> Iterator[AbortedTxn]:
        data = bytes(self._data)
        for _, producer_id, first, last, lso in ENTRY.iter_unpack(data):
            yield AbortedTxn(producer_id, first, last, lso)

    def encoded(self) -> bytes:
        return bytes(self._data)

    def append(self, txn: AbortedTxn) -> None:
        self._data += encode_entry(txn)

    def extend(self, other: AbortedTxnList) -> None:
        self._data += other._data

    def _last_offset(self, index: int) -> int:
        return _LAST_OFFSET.unpack_from(self._data, index * ENTRY_SIZE + _LAST_OFFSET_AT)[0]

    def _first_ending_at_or_after(self, offset: int) -> int:
        """Index of the first entry whose last offset is >= `offset` (binary search)."""
        low, high = 0, len(self)
        while low < high:
            mid = (low + high) // 2
            if self._last_offset(mid) < offset:
                low = mid + 1
            else:
                high = mid
        return low

    def truncated(self, offset: int) -> AbortedTxnList:
        """A copy without the entries whose marker is at or after `offset` (log truncation)."""
        return AbortedTxnList(self._data[: self._first_ending_at_or_after(offset) * ENTRY_SIZE])

    def without_markers_below(self, offset: int) -> AbortedTxnList:
        """A copy without the entries whose marker is below `offset` (the log start moved)."""
        return AbortedTxnList(self._data[self._first_ending_at_or_after(offset) * ENTRY_SIZE:])

    def without_markers_at(self, offsets: set[int]) -> AbortedTxnList:
        """A copy without the entries whose marker offset is in `offsets` (markers compaction removed)."""
        data = self._data
        kept = bytearray()
        for at in range(0, len(data), ENTRY_SIZE):
            if _LAST_OFFSET.unpack_from(data, at + _LAST_OFFSET_AT)[0] not in offsets:
                kept += data[at:at + ENTRY_SIZE]
        return AbortedTxnList(kept)

    def collect(self, start_offset: int, end_offset: int, into: list[AbortedTxn]) -> bool:
        """Add to `into` the entries with last_offset >= start_offset and first_offset < end_offset;
        True when the search is complete (no later entry, here or in a later list, can match)."""
        data = self._data
        count = len(data) // ENTRY_SIZE
        for index in range(self._first_ending_at_or_after(start_offset), count):
            _, producer_id, first, last, lso = ENTRY.unpack_from(data, index * ENTRY_SIZE)
            if first < end_offset:
                into.append(AbortedTxn(producer_id, first, last, lso))
            if lso >= end_offset:
                return True
        return False


def in_fetch_order(found: list[AbortedTxn]) -> list[AbortedTxn]:
    """Aborted transactions ordered by first offset, as `PartitionLog.aborted_transactions` returns them."""
    found.sort(key=lambda txn: (txn.first_offset, txn.last_offset))
    return found
