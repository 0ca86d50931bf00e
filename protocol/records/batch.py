"""The 61-byte v2 RecordBatch header: a zero-copy view, CRC-32C, in-place patching, and walking batches.

This is the broker's hot produce path: one `struct.unpack_from` per batch, a CRC over a memoryview,
and patches written in place. Nothing here looks at the records inside a batch.

Layout (big-endian), with the offset of each field:
  0 base offset int64 | 8 batch length int32 (bytes after this field) | 12 partition leader epoch int32
  16 magic int8 | 17 CRC uint32 (CRC-32C of bytes 21..end) | 21 attributes int16 | 23 last offset delta int32
  27 base timestamp int64 | 35 max timestamp int64 | 43 producer id int64 | 51 producer epoch int16
  53 base sequence int32 | 57 record count int32 | 61 records
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum

from protocol.primitives import INT32_MAX
from protocol.records.checksum import crc32c
from protocol.records.errors import CorruptRecordError, TruncatedBatchError, UnsupportedMagicError
from protocol.records.varint import Buffer

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size
# Base offset and batch length: the part of the header that the batch length does not count.
LOG_OVERHEAD = 12
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
MAGIC = 2

LENGTH_OFFSET = 8
PARTITION_LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_FLAG = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40

NO_TIMESTAMP = -1
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")


class TimestampType(IntEnum):
    """Bit 3 of the attributes: who set the timestamps of the batch."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class RecordBatch:
    """A read-only view of one v2 batch inside `buffer` at `position`; the bytes are not copied.

    Construction checks the framing (magic, length, that the whole batch is in the buffer) but not
    the CRC. The header fields are read once: after patching the buffer behind the view's back, make
    a new view, or patch through the view's own `set_*` methods, which keep it current.
    """

    __slots__ = ("_header", "buffer", "position")

    def __init__(self, buffer: Buffer, position: int = 0, end: int | None = None) -> None:
        limit = len(buffer) if end is None else end
        self._header = _read_header(buffer, position, limit)
        self.buffer = buffer
        self.position = position

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset}, last_offset={self.last_offset}, "
            f"records={self.record_count}, size={self.total_size}, attributes={self.attributes:#x}, "
            f"producer_id={self.producer_id}, producer_epoch={self.producer_epoch}, "
            f"base_sequence={self.base_sequence}, position={self.position})"
        )

    # --- header fields ---------------------------------------------------------------------------------

    @property
    def base_offset(self) -> int:
        return self._header[0]

    @property
    def batch_length(self) -> int:
        return self._header[1]

    @property
    def partition_leader_epoch(self) -> int:
        return self._header[2]

    @property
    def magic(self) -> int:
        return self._header[3]

    @property
    def crc(self) -> int:
        return self._header[4]

    @property
    def attributes(self) -> int:
        return self._header[5]

    @property
    def last_offset_delta(self) -> int:
        return self._header[6]

    @property
    def base_timestamp(self) -> int:
        return self._header[7]

    @property
    def max_timestamp(self) -> int:
        return self._header[8]

    @property
    def producer_id(self) -> int:
        return self._header[9]

    @property
    def producer_epoch(self) -> int:
        return self._header[10]

    @property
    def base_sequence(self) -> int:
        return self._header[11]

    @property
    def record_count(self) -> int:
        return self._header[12]

    # --- derived ---------------------------------------------------------------------------------------

    @property
    def total_size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return LOG_OVERHEAD + self._header[1]

    @property
    def last_offset(self) -> int:
        return self._header[0] + self._header[6]

    @property
    def next_offset(self) -> int:
        return self._header[0] + self._header[6] + 1

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record; sequences wrap from INT32_MAX to 0, as in Kafka."""
        base = self._header[11]
        if base == NO_SEQUENCE:
            return NO_SEQUENCE
        return (base + self._header[6]) % (INT32_MAX + 1)

    @property
    def compression(self) -> int:
        """Codec id (see `Compression`); 5-7 are not defined by Kafka and fail on decompression."""
        return self._header[5] & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> TimestampType:
        if self._header[5] & TIMESTAMP_TYPE_FLAG:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self._header[5] & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self._header[5] & CONTROL_FLAG)

    @property
    def delete_horizon_ms(self) -> int | None:
        """Set by compaction once tombstones may go (KIP-534); the base timestamp then holds it."""
        return self._header[7] if self._header[5] & DELETE_HORIZON_FLAG else None

    @property
    def raw(self) -> memoryview:
        """The whole batch, header included, without copying."""
        return memoryview(self.buffer)[self.position : self.position + self.total_size]

    @property
    def records_payload(self) -> memoryview:
        """The bytes after the header: the records, compressed if `compression` says so."""
        return memoryview(self.buffer)[self.position + HEADER_SIZE : self.position + self.total_size]

    # --- CRC and patching ------------------------------------------------------------------------------

    def compute_crc(self) -> int:
        return _crc_of(self.buffer, self.position, self.total_size)

    def validate_crc(self) -> bool:
        return self.compute_crc() == self._header[4]

    # The patching methods need a writable buffer (bytearray or writable memoryview).

    def set_base_offset(self, offset: int) -> None:
        set_base_offset(self.buffer, self.position, offset)
        self._refresh()

    def set_partition_leader_epoch(self, epoch: int) -> None:
        set_partition_leader_epoch(self.buffer, self.position, epoch)
        self._refresh()

    def set_log_append_time(self, timestamp: int) -> None:
        set_log_append_time(self.buffer, self.position, timestamp)
        self._refresh()

    def _refresh(self) -> None:
        self._header = HEADER.unpack_from(self.buffer, self.position)


def _read_header(buffer: Buffer, position: int, limit: int) -> tuple[int, ...]:
    available = limit - position
    if available < HEADER_SIZE:
        _raise_short_header(buffer, position, available)
    header = HEADER.unpack_from(buffer, position)
    if header[3] != MAGIC:
        _raise_bad_magic(header[3], position)
    if header[1] < MIN_BATCH_LENGTH:
        raise CorruptRecordError(
            f"record batch at position {position} has length {header[1]}, below the minimum {MIN_BATCH_LENGTH}"
        )
    if LOG_OVERHEAD + header[1] > available:
        raise TruncatedBatchError(position, LOG_OVERHEAD + header[1], available)
    return header


def _raise_short_header(buffer: Buffer, position: int, available: int) -> None:
    # Fewer bytes than a v2 header: a legacy message, a corrupt length, or a torn tail, in that order.
    if available > MAGIC_OFFSET:
        magic = _signed_byte(buffer[position + MAGIC_OFFSET])
        if magic != MAGIC:
            _raise_bad_magic(magic, position)
    if available >= LOG_OVERHEAD:
        (length,) = _INT32.unpack_from(buffer, position + LENGTH_OFFSET)
        if length < MIN_BATCH_LENGTH:
            raise CorruptRecordError(
                f"record batch at position {position} has length {length}, below the minimum {MIN_BATCH_LENGTH}"
            )
    raise TruncatedBatchError(position, HEADER_SIZE, available)


def _raise_bad_magic(magic: int, position: int) -> None:
    if magic in (0, 1):
        raise UnsupportedMagicError(magic, position)
    raise CorruptRecordError(f"record batch at position {position} has unknown magic {magic}")


def _signed_byte(value: int) -> int:
    return value - 256 if value > 127 else value


def _crc_of(buffer: Buffer, position: int, total_size: int) -> int:
    return crc32c(memoryview(buffer)[position + ATTRIBUTES_OFFSET : position + total_size])


def iter_batches(buffer: Buffer, position: int = 0, end: int | None = None) -> Iterator[tuple[int, RecordBatch]]:
    """Yield (position, view) for each consecutive batch in `buffer[position:end]`.

    Raises `TruncatedBatchError` when the data ends inside a batch (a torn tail: its `position` is
    where the complete prefix ends), `UnsupportedMagicError` for a legacy MessageSet, and
    `CorruptRecordError` for framing that cannot be a batch. CRCs are not checked here.
    """
    limit = len(buffer) if end is None else end
    while position < limit:
        batch = RecordBatch(buffer, position, limit)
        yield position, batch
        position += batch.total_size


def compute_crc(buffer: Buffer, position: int = 0) -> int:
    """CRC-32C of the batch at `position`, from its attributes to its end (length read from the header)."""
    (length,) = _INT32.unpack_from(buffer, position + LENGTH_OFFSET)
    return _crc_of(buffer, position, LOG_OVERHEAD + length)


def write_crc(buffer: bytearray | memoryview, position: int = 0) -> int:
    """Recompute the CRC of the batch at `position`, store it in the header, and return it."""
    crc = compute_crc(buffer, position)
    _UINT32.pack_into(buffer, position + CRC_OFFSET, crc)
    return crc


def set_base_offset(buffer: bytearray | memoryview, position: int, offset: int) -> None:
    """Assign the batch's base offset; the field is outside the CRC, so the CRC stays valid."""
    _INT64.pack_into(buffer, position, offset)


def set_partition_leader_epoch(buffer: bytearray | memoryview, position: int, epoch: int) -> None:
    """Stamp the leader epoch; outside the CRC, like the base offset."""
    _INT32.pack_into(buffer, position + PARTITION_LEADER_EPOCH_OFFSET, epoch)


def set_log_append_time(buffer: bytearray | memoryview, position: int, timestamp: int) -> None:
    """Apply LogAppendTime: max timestamp := `timestamp`, timestamp-type bit set, CRC recomputed.

    Readers then report `timestamp` for every record of the batch, as Kafka does.
    """
    (attributes,) = _INT16.unpack_from(buffer, position + ATTRIBUTES_OFFSET)
    _INT16.pack_into(buffer, position + ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_FLAG)
    _INT64.pack_into(buffer, position + MAX_TIMESTAMP_OFFSET, timestamp)
    write_crc(buffer, position)
