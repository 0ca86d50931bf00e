"""Building complete v2 record batches from `Record`s: for tests, control batches and internal topics.

Clients build their own batches; the broker builds few (transaction markers, its internal topics,
compaction output), so this favours clarity over speed.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.records.batch import (
    CONTROL_FLAG,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    NO_TIMESTAMP,
    TIMESTAMP_TYPE_FLAG,
    TRANSACTIONAL_FLAG,
    TimestampType,
    write_crc,
)
from protocol.records.compression import Compression, compress
from protocol.records.record import Record, encode_record


def build_batch(
    records: Sequence[Record],
    base_offset: int = 0,
    compression: int = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    timestamp_type: int = TimestampType.CREATE_TIME,
    partition_leader_epoch: int = -1,
    *,
    compression_level: int | None = None,
    last_offset_delta: int | None = None,
) -> bytearray:
    """Encode `records` (absolute, strictly increasing offsets >= `base_offset`) as one batch.

    The base timestamp is the first record's, as Java clients write it; an empty batch gets
    NO_TIMESTAMP (-1). `last_offset_delta` defaults to the last record's delta; pass it to keep the
    offset range of a batch whose tail records were removed (compaction keeps such batches).
    """
    base_timestamp = records[0].timestamp if records else NO_TIMESTAMP
    max_timestamp = max(r.timestamp for r in records) if records else NO_TIMESTAMP
    body = _encode_records(records, base_offset, base_timestamp)
    if last_offset_delta is None:
        last_offset_delta = records[-1].offset - base_offset if records else 0
    payload = compress(compression, body, compression_level) if compression else body
    out = bytearray(HEADER_SIZE)
    out += payload
    attributes = (
        compression
        | (TIMESTAMP_TYPE_FLAG if timestamp_type == TimestampType.LOG_APPEND_TIME else 0)
        | (TRANSACTIONAL_FLAG if transactional else 0)
        | (CONTROL_FLAG if control else 0)
    )
    HEADER.pack_into(
        out, 0,
        base_offset, len(out) - LOG_OVERHEAD, partition_leader_epoch, MAGIC, 0, attributes,
        last_offset_delta, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
        len(records),
    )
    write_crc(out, 0)
    return out


def _encode_records(records: Sequence[Record], base_offset: int, base_timestamp: int) -> bytearray:
    body = bytearray()
    previous = base_offset - 1
    for record in records:
        if record.offset <= previous:
            raise ValueError(f"record offset {record.offset} does not follow {previous} in the batch")
        previous = record.offset
        encode_record(
            body, record.offset - base_offset, record.timestamp - base_timestamp,
            record.key, record.value, record.headers,
        )
    return body
