"""Records inside a v2 batch: the `Record` type, decoding them from a batch, encoding one record.

Record layout: varint length, int8 attributes (unused), varlong timestamp delta, varint offset delta,
nullable key, nullable value, varint header count, headers (string key, nullable value). Only features
that need records come here (compaction, timestamp lookups, internal topics, and Produce for compressed
batches and record-level topic rules); uncompressed Produce batches are checked from their header.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from protocol.records.batch import RecordBatch, TimestampType
from protocol.records.compression import DEFAULT_MAX_DECOMPRESSED_SIZE, decompress, decompress_transient
from protocol.records.errors import CorruptRecordError, InvalidRecordError
from protocol.records.varint import (
    INT64_MIN,
    Buffer,
    read_nullable_bytes,
    read_varint,
    read_varlong,
    write_nullable_bytes,
    write_varint,
    write_varlong,
)

Header = tuple[str, bytes | None]


class Record(NamedTuple):
    """One record with absolute offset and timestamp; decoded headers come back as a tuple."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] = ()


# The smallest record Kafka's format allows: length, attributes, timestamp delta, offset delta, key length
# (-1, null), value length (-1, null) and header count, one byte each. A payload of N bytes therefore
# holds at most N // MIN_RECORD_SIZE records, whatever the header's record count claims.
MIN_RECORD_SIZE = 7
PREMATURE_EOF = "Incorrect declared batch size, premature EOF reached"
RECORDS_REMAINING = "Incorrect declared batch size, records still remaining in file"


def check_record_count(count: int, payload_size: int) -> None:
    """Refuse a record count the payload cannot hold, before reading any record (work bounded by bytes)."""
    if count < 0:
        raise InvalidRecordError(f"Found invalid record count {count} in magic v2 batch")
    if count * MIN_RECORD_SIZE > payload_size:
        raise InvalidRecordError(
            f"{PREMATURE_EOF} (the batch declares {count} records, but its {payload_size} bytes of records "
            f"hold at most {payload_size // MIN_RECORD_SIZE})")


def iter_records(batch: RecordBatch, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> Iterator[Record]:
    """Decode the records of `batch`, decompressing first (output capped at `max_size` bytes).

    The records must be exactly the declared count, as Kafka's record iterator requires: fewer or more
    raise `InvalidRecordError`. Under LogAppendTime every record carries the batch's max timestamp, as
    Kafka reports it.
    """
    count = batch.record_count
    if count <= 0:
        check_record_count(count, 0)  # raises for a negative count
        return
    payload = batch.records_payload
    if batch.compression:
        payload = memoryview(decompress(batch.compression, payload, max_size))
    check_record_count(count, len(payload))
    base_offset = batch.base_offset
    base_timestamp = batch.base_timestamp
    log_append_time = batch.max_timestamp if batch.timestamp_type == TimestampType.LOG_APPEND_TIME else None
    pos = 0
    end = len(payload)
    for _ in range(count):
        if pos >= end:
            raise InvalidRecordError(PREMATURE_EOF)
        record, pos = decode_record(payload, pos, base_offset, base_timestamp, log_append_time)
        yield record
    if pos != end:
        raise InvalidRecordError(f"{RECORDS_REMAINING} ({end - pos} bytes follow the {count} declared records)")


def check_record_framing(batch: RecordBatch, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> int:
    """Decompress `batch` (output capped at `max_size` bytes), check that its records payload is exactly
    the declared count of length-prefixed records without decoding them, and return the largest record
    timestamp (create time; -1 for no records).

    The cheap half of `iter_records` for batches whose keys and values the broker does not need: two
    varints per record instead of a decoded record, so a compressed batch still proves that it
    decompresses, that every consumer can find each record's bounds, and whether its header's max
    timestamp tells the truth.
    """
    count = batch.record_count
    if count <= 0:
        check_record_count(count, 0)  # raises for a negative count
        return -1
    data = batch.records_payload
    if batch.compression:
        # Read here and dropped on return: a large output may live in this thread's reused buffer.
        data = decompress_transient(batch.compression, data, max_size)
    end = len(data)
    check_record_count(count, end)
    pos = 0
    max_delta = INT64_MIN
    # The one-byte varints of small records are decoded inline: this loop is the whole cost of checking
    # a compressed batch.
    for _ in range(count):
        if pos >= end:
            raise InvalidRecordError(PREMATURE_EOF)
        b = data[pos]
        if b < 0x80:
            length, body = (b >> 1) ^ -(b & 1), pos + 1
        else:
            length, body = read_varint(data, pos)
        pos = body + length
        if length < MIN_RECORD_SIZE - 1 or pos > end:  # the length prefix is not part of the length
            raise CorruptRecordError(f"record length {length} at position {body} is invalid for the batch")
        # Byte 0 holds the unused record attributes. (A malformed delta reading into the next record
        # only skews this maximum.)
        b = data[body + 1]
        if b < 0x80:
            delta = (b >> 1) ^ -(b & 1)
        else:
            delta, _ = read_varlong(data, body + 1)
        if delta > max_delta:  # noqa: PLR1730 - a comparison is cheaper than a max() call per record
            max_delta = delta
    if pos != end:
        raise InvalidRecordError(f"{RECORDS_REMAINING} ({end - pos} bytes follow the {count} declared records)")
    return batch.base_timestamp + max_delta


def decode_record(
    payload: memoryview, pos: int, base_offset: int, base_timestamp: int, log_append_time: int | None
) -> tuple[Record, int]:
    """Decode the record at `pos` in an uncompressed records payload; return it and the next position."""
    length, pos = read_varint(payload, pos)
    end = pos + length
    if length < 1 or end > len(payload):
        raise CorruptRecordError(f"record length {length} at position {pos} is invalid for the batch")
    # Reads within the slice fail at its end, so a record cannot borrow bytes from the next one.
    body = payload[pos:end]
    timestamp_delta, p = read_varlong(body, 1)  # byte 0 holds the unused record attributes
    offset_delta, p = read_varint(body, p)
    key, p = read_nullable_bytes(body, p)
    value, p = read_nullable_bytes(body, p)
    headers, p = _decode_headers(body, p)
    if p != length:
        raise CorruptRecordError(f"record at position {pos} declares {length} bytes but holds {p}")
    timestamp = base_timestamp + timestamp_delta if log_append_time is None else log_append_time
    return Record(base_offset + offset_delta, timestamp, key, value, headers), end


def _decode_headers(body: memoryview, p: int) -> tuple[tuple[Header, ...], int]:
    count, p = read_varint(body, p)
    if count < 0:
        raise CorruptRecordError(f"invalid negative header count {count}")
    headers = []
    for _ in range(count):  # no preallocation: a lying count runs out of bytes instead
        key, p = read_nullable_bytes(body, p)
        if key is None:
            raise CorruptRecordError("record header key is null")
        value, p = read_nullable_bytes(body, p)
        headers.append((_utf8(key), value))
    return tuple(headers), p


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(f"record header key is not valid UTF-8: {exc}") from None


def encode_record(
    out: bytearray,
    offset_delta: int,
    timestamp_delta: int,
    key: Buffer | None,
    value: Buffer | None,
    headers: Sequence[Header] = (),
) -> None:
    """Append one record, length-prefixed, to `out`."""
    body = bytearray(b"\x00")  # attributes: no record-level attribute is defined
    write_varlong(body, timestamp_delta)
    write_varint(body, offset_delta)
    write_nullable_bytes(body, key)
    write_nullable_bytes(body, value)
    write_varint(body, len(headers))
    for header_key, header_value in headers:
        write_nullable_bytes(body, header_key.encode("utf-8"))
        write_nullable_bytes(body, header_value)
    write_varint(out, len(body))
    out += body
