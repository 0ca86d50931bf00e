"""Kafka's sparse segment indexes, `OffsetIndex` (.index) and `TimeIndex` (.timeindex).

File formats (big-endian, as Kafka writes them):

* ``.index``: 8-byte entries, ``relative offset int32 | position int32``. The relative offset is a
  batch's *last* offset minus the segment's base offset, the position is where that batch starts in
  the ``.log`` file. Both strictly increase. A lookup finds the last entry at or below the target
  offset; the batch holding the target starts at or after that entry's position.
* ``.timeindex``: 12-byte entries, ``timestamp int64 | relative offset int32``: the largest batch
  timestamp seen so far in the segment, and the last offset of the batch that first reached it.
  Timestamps strictly increase, offsets never decrease. Every record before the entry's offset has a
  timestamp <= the entry's, so a search for timestamp T may start after the last entry below T.

An entry is added for the batch at position P when ``P - position of the previous entry >
index.interval.bytes`` (the first batch of a segment never gets one), the rule Kafka's segment append
and recovery share; the time index gets an entry at the same moments when the maximum grew, plus a
final one when the segment is rolled or closed. Applying one rule on append and on rebuild makes a
rebuilt index identical to the original.

Entries live in `array`s (compact, and `bisect` works on them). Readers on other threads look up
while the event loop appends, so appends write the array that is not searched first, and truncation
builds new objects instead of cutting arrays in place. The files are written in bulk (`written`
counts the entries already in the file): they may lag, because recovery rebuilds the indexes of every
segment it scans and loading checks the rest.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array
from itertools import islice

from protocol.primitives import INT32_MAX

_LITTLE = sys.byteorder == "little"
_TIME_ENTRY = struct.Struct(">qi")


class CorruptIndexError(Exception):
    """An index file that cannot be trusted; the caller rebuilds it from the log."""


def needs_entry(position: int, last_entry_position: int, interval_bytes: int) -> bool:
    """Whether the batch starting at `position` gets an index entry (Kafka's rule)."""
    return position - last_entry_position > interval_bytes


def _increasing(values: array, strict: bool) -> bool:
    pairs = zip(values, islice(values, 1, None))
    return all(a < b for a, b in pairs) if strict else all(a <= b for a, b in pairs)


class OffsetIndex:
    """Batch last offset -> file position, sparse."""

    ENTRY_SIZE = 8
    __slots__ = ("base_offset", "positions", "relative", "written")

    def __init__(self, base_offset: int, relative: array | None = None, positions: array | None = None,
                 written: int = 0) -> None:
        self.base_offset = base_offset
        self.relative = relative if relative is not None else array("i")
        self.positions = positions if positions is not None else array("i")
        self.written = written

    def __len__(self) -> int:
        return len(self.relative)

    def __repr__(self) -> str:
        return f"OffsetIndex(base={self.base_offset}, entries={len(self)}, written={self.written})"

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        if not 0 <= relative <= INT32_MAX or not 0 <= position <= INT32_MAX:
            raise ValueError(f"index entry {offset} -> {position} is out of range for base {self.base_offset}")
        if self.relative and (relative <= self.relative[-1] or position <= self.positions[-1]):
            raise ValueError(f"index entry {offset} -> {position} does not follow {self.last_entry}")
        self.positions.append(position)  # positions first: readers bisect `relative`
        self.relative.append(relative)

    @property
    def last_entry(self) -> tuple[int, int]:
        """(offset, position) of the last entry; (base offset, 0) when empty."""
        if not self.relative:
            return self.base_offset, 0
        return self.base_offset + self.relative[-1], self.positions[-1]

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry whose offset is <= `offset`; (base, 0) if none."""
        i = bisect.bisect_right(self.relative, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative[i], self.positions[i]

    def is_full(self, max_index_bytes: int) -> bool:
        return len(self) >= max_index_bytes // self.ENTRY_SIZE

    def truncated(self, offset: int) -> OffsetIndex:
        """A copy without the entries for batches ending at or after `offset`."""
        keep = bisect.bisect_left(self.relative, offset - self.base_offset)
        return OffsetIndex(self.base_offset, self.relative[:keep], self.positions[:keep], min(self.written, keep))

    def encode(self, start: int = 0, end: int | None = None) -> bytes:
        stop = len(self) if end is None else end
        count = max(0, stop - start)
        out = array("i", bytes(8 * count))
        out[0::2] = self.relative[start:stop]
        out[1::2] = self.positions[start:stop]
        if _LITTLE:
            out.byteswap()
        return out.tobytes()

    @classmethod
    def decode(cls, base_offset: int, data: bytes) -> OffsetIndex:
        """Parse and check an index file's content; raises CorruptIndexError."""
        if len(data) % cls.ENTRY_SIZE:
            raise CorruptIndexError(f"offset index size {len(data)} is not a multiple of {cls.ENTRY_SIZE}")
        raw = array("i")
        raw.frombytes(data)
        if _LITTLE:
            raw.byteswap()
        relative, positions = raw[0::2], raw[1::2]
        if relative and (relative[0] <= 0 or positions[0] <= 0):
            raise CorruptIndexError(f"offset index starts with a non-positive entry {relative[0]} -> {positions[0]}")
        if not (_increasing(relative, True) and _increasing(positions, True)):
            raise CorruptIndexError("offset index entries do not strictly increase")
        return cls(base_offset, relative, positions, len(relative))


class TimeIndex:
    """Largest timestamp so far -> last offset of the batch that reached it, sparse."""

    ENTRY_SIZE = 12
    __slots__ = ("base_offset", "relative", "timestamps", "written")

    def __init__(self, base_offset: int, timestamps: array | None = None, relative: array | None = None,
                 written: int = 0) -> None:
        self.base_offset = base_offset
        self.timestamps = timestamps if timestamps is not None else array("q")
        self.relative = relative if relative is not None else array("i")
        self.written = written

    def __len__(self) -> int:
        return len(self.timestamps)

    def __repr__(self) -> str:
        return f"TimeIndex(base={self.base_offset}, entries={len(self)}, written={self.written})"

    def maybe_append(self, timestamp: int, offset: int) -> bool:
        """Append (timestamp, offset) if the timestamp is larger than the last entry's."""
        if self.timestamps and timestamp <= self.timestamps[-1]:
            return False
        relative = offset - self.base_offset
        if not 0 <= relative <= INT32_MAX or (self.relative and relative < self.relative[-1]):
            raise ValueError(f"time index entry {timestamp} -> {offset} does not fit after {self.last_entry}")
        self.relative.append(relative)  # offsets first: readers bisect `timestamps`
        self.timestamps.append(timestamp)
        return True

    @property
    def last_entry(self) -> tuple[int, int]:
        """(timestamp, offset) of the last entry; (-1, base offset) when empty."""
        if not self.timestamps:
            return -1, self.base_offset
        return self.timestamps[-1], self.base_offset + self.relative[-1]

    def offset_before(self, timestamp: int) -> int | None:
        """Offset of the last entry with a timestamp < `timestamp`: every record up to it is older."""
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        if i < 0:
            return None
        return self.base_offset + self.relative[i]

    def is_full(self, max_index_bytes: int) -> bool:
        return len(self) >= max_index_bytes // self.ENTRY_SIZE

    def truncated(self, offset: int) -> TimeIndex:
        """A copy without the entries pointing at `offset` or later."""
        keep = bisect.bisect_left(self.relative, offset - self.base_offset)
        return TimeIndex(self.base_offset, self.timestamps[:keep], self.relative[:keep], min(self.written, keep))

    def encode(self, start: int = 0, end: int | None = None) -> bytes:
        stop = len(self) if end is None else end
        if stop <= start:
            return b""
        values: list[int] = []
        for ts, rel in zip(self.timestamps[start:stop], self.relative[start:stop]):
            values += (ts, rel)
        return struct.pack(">" + "qi" * (stop - start), *values)

    @classmethod
    def decode(cls, base_offset: int, data: bytes) -> TimeIndex:
        """Parse and check a time index file's content; raises CorruptIndexError."""
        if len(data) % cls.ENTRY_SIZE:
            raise CorruptIndexError(f"time index size {len(data)} is not a multiple of {cls.ENTRY_SIZE}")
        timestamps, relative = array("q"), array("i")
        for ts, rel in _TIME_ENTRY.iter_unpack(data):
            timestamps.append(ts)
            relative.append(rel)
        if relative and relative[0] < 0:
            raise CorruptIndexError(f"time index has a negative relative offset {relative[0]}")
        if not (_increasing(timestamps, True) and _increasing(relative, False)):
            raise CorruptIndexError("time index entries are not in order")
        return cls(base_offset, timestamps, relative, len(timestamps))
