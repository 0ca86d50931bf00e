"""Checks a Produce partition's records must pass before they are appended: pure functions, no I/O.

Each check follows the Kafka code that makes it, in Kafka's order, and fails with Kafka's error code
and (nearly) Kafka's message, raised as `BatchRejected`:

1. Framing, as ``ProduceRequest.validateRecords`` and ``ByteBufferLogInputStream`` do it (`frame_batch`):
   no complete batch -> INVALID_RECORD ("must have at least one record batch per partition"); a batch
   length below the 14-byte legacy minimum or a magic outside 0..2 -> CORRUPT_MESSAGE; magic 0/1 ->
   INVALID_RECORD; a codec id Kafka does not define (5-7) or zstd before Produce v7 ->
   UNSUPPORTED_COMPRESSION_TYPE; a second complete batch -> INVALID_RECORD ("exactly one record batch
   per partition").
   Deviation: Kafka silently drops trailing bytes too short to be a batch; Moldau rejects them with
   CORRUPT_MESSAGE, since a client that sends them is broken and the bytes would otherwise vanish.
2. ``UnifiedLog.analyzeAndValidateRecords``: base offset must be 0 (INVALID_RECORD); the batch size,
   log overhead included, must not exceed the topic's ``max.message.bytes`` (MESSAGE_TOO_LARGE); the
   CRC-32C must match (CORRUPT_MESSAGE).
3. ``LogValidator.validateBatch`` (client origin): a positive offset range, a positive record count equal
   to it, no control batch, a base sequence for idempotent batches (all INVALID_RECORD).
4. ``LogValidator``'s record iteration (`validate_records`): the records must be exactly the declared
   count ("Incorrect declared batch size, premature EOF reached" / "records still remaining") and parse
   (INVALID_RECORD, Kafka's InvalidRecordException); on compacted topics every record needs a key
   (INVALID_RECORD); on CreateTime topics every record timestamp must lie within
   ``message.timestamp.before.max.ms`` in the past and ``message.timestamp.after.max.ms`` in the future,
   and a client may not set LogAppendTime on a LogAppendTime topic (INVALID_TIMESTAMP). Per-record
   failures carry ``record_errors`` (Produce v8+).
5. ``UnifiedLog.append``: a batch larger than ``segment.bytes`` -> RECORD_LIST_TOO_LARGE (checked with the
   header, before the record walk: only a batch failing both sees a different code than in Kafka).

Work is bounded by the bytes received: a record is at least ``MIN_RECORD_SIZE`` (7) bytes, so a record
count the payload cannot hold is refused from the header before any loop over records.

Compressed batches are decompressed and their records walked, as Kafka does, with the output capped
at the broker's ``message.max.decompressed.bytes``: past it -> MESSAGE_TOO_LARGE (the Java producer
splits the batch). The walk decodes records only where a check needs them (as for uncompressed
batches below); otherwise it follows the records' length prefixes and timestamp deltas, proving the
declared count, every record's bounds, and that no record is later than the header's max timestamp. A payload its codec cannot decompress -> CORRUPT_MESSAGE (Kafka answers
UNKNOWN_SERVER_ERROR there, from an unmapped "Failed to decompress record stream" KafkaException).

Where Moldau does less than Kafka, on purpose (uncompressed records are opaque bytes on the hot path):
- Uncompressed records are decoded only where a check needs them: compacted topics, and timestamps
  when the header cannot settle the question. With the default ``message.timestamp.before.max.ms``
  (unbounded) the header's max timestamp (covered by the CRC) decides the "too far in the future"
  check; only when it is out of range are records decoded, to name each failing record as Kafka does.
  A finite "before" bound needs every record (the header holds no minimum), so records are decoded
  then. Kafka walks every uncompressed batch too; Moldau checks only that the count fits the bytes.
- Kafka rewrites a batch's max timestamp from its records and rebuilds compressed batches whose inner
  offsets are not 0..n-1; Moldau trusts the CRC-protected header and stores batches as sent.
- The topic's ``compression.type`` is not applied (no recompression).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from broker.config import MESSAGE_MAX_BYTES, BrokerConfig
from broker.topic_config import BY_NAME
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT64_MAX
from protocol.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    Compression,
    DecompressionError,
    RecordBatch,
    RecordBatchError,
    TimestampType,
    UnsupportedCompressionError,
    check_record_framing,
    iter_records,
)
from protocol.records.batch import MAGIC, MAGIC_OFFSET
from protocol.records.record import check_record_count
from storage.file.config import DEFAULTS as LOG_DEFAULTS

# Kafka's smallest legal batch length field: a v0 message (LegacyRecord.RECORD_OVERHEAD_V0).
LEGACY_MIN_LENGTH = 14
# Bytes needed to read a batch's magic: base offset, length, leader epoch, magic.
HEADER_SIZE_UP_TO_MAGIC = MAGIC_OFFSET + 1
ZSTD_MIN_PRODUCE_VERSION = 7
LAST_CODEC = max(Compression)  # codec ids above it (5-7) are not Kafka's
DEFAULT_MAX_DECOMPRESSED_BYTES = BrokerConfig.message_max_decompressed_bytes

_INT32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class RecordError:
    """One rejected record: its index in the batch and why (Produce v8+ ``record_errors``)."""

    batch_index: int
    message: str

    def __str__(self) -> str:
        # Kafka's RecordError.toString, which its summary messages embed.
        return f"RecordError(batchIndex={self.batch_index}, message='{self.message}')"


class BatchRejected(KafkaError):
    """A produce batch failed a check; ``record_errors`` names the records at fault, if any."""

    def __init__(self, code: ErrorCode, message: str, record_errors: tuple[RecordError, ...] = ()) -> None:
        super().__init__(code, message)
        self.record_errors = record_errors


@dataclass(frozen=True, slots=True)
class TopicRules:
    """The effective topic configs the checks depend on."""

    max_message_bytes: int = MESSAGE_MAX_BYTES
    segment_bytes: int = LOG_DEFAULTS["segment.bytes"]
    log_append_time: bool = False
    timestamp_before_max_ms: int = INT64_MAX
    timestamp_after_max_ms: int = BY_NAME["message.timestamp.after.max.ms"].default
    compacted: bool = False


@dataclass(slots=True)
class _Errors:
    errors: list[RecordError] = field(default_factory=list)
    timestamp: bool = False


def frame_batch(records: bytes | bytearray | memoryview | None, api_version: int) -> RecordBatch:
    """The one v2 batch of a Produce (v3+) partition; raises `BatchRejected` as Kafka frames it."""
    data = records if records is not None else b""
    size = len(data)
    first = _next_batch_size(data, 0, api_version)
    if first is None:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"Produce requests with version {api_version} must have at least one record batch per partition"
            + _short_reason(data, size))
    magic = _signed(data[MAGIC_OFFSET])
    if magic != MAGIC:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"Produce requests with version {api_version} are only allowed to contain record batches with "
            f"magic version 2 (got magic {magic}: a pre-0.11 message format; upgrade the client or enable its "
            f"v2 record format)")
    try:
        batch = RecordBatch(data, 0, first)
    except RecordBatchError as exc:
        # A v2 batch shorter than its own header: Kafka fails its size check in isValid().
        raise BatchRejected(ErrorCode.CORRUPT_MESSAGE, f"Record batch is corrupt: {exc}") from None
    if batch.compression > LAST_CODEC:
        raise BatchRejected(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            f"Unknown compression type id: {batch.compression} (Kafka defines 0 none, 1 gzip, 2 snappy, 3 lz4 "
            f"and 4 zstd)")
    if batch.compression == Compression.ZSTD and api_version < ZSTD_MIN_PRODUCE_VERSION:
        raise BatchRejected(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            f"Produce requests with version {api_version} are not allowed to use ZStandard compression "
            f"(zstd needs Produce v{ZSTD_MIN_PRODUCE_VERSION} or later)")
    if first < size:
        second = _next_batch_size(data, first, api_version)
        if second is not None:
            raise BatchRejected(
                ErrorCode.INVALID_RECORD,
                f"Produce requests with version {api_version} are only allowed to contain exactly one record "
                f"batch per partition")
        raise BatchRejected(
            ErrorCode.CORRUPT_MESSAGE,
            f"{size - first} bytes follow the record batch and do not form a complete batch: the records "
            f"field must hold exactly one whole batch")
    return batch


def _next_batch_size(data: bytes | bytearray | memoryview, pos: int, api_version: int) -> int | None:
    """ByteBufferLogInputStream.nextBatchSize: the batch end at ``pos``, or None if none is complete."""
    remaining = len(data) - pos
    if remaining < LOG_OVERHEAD:
        return None
    (length,) = _INT32.unpack_from(data, pos + 8)
    if length < LEGACY_MIN_LENGTH:
        raise BatchRejected(
            ErrorCode.CORRUPT_MESSAGE,
            f"Record size {length} is less than the minimum record overhead ({LEGACY_MIN_LENGTH})")
    if remaining < HEADER_SIZE_UP_TO_MAGIC:
        return None
    magic = _signed(data[pos + MAGIC_OFFSET])
    if not 0 <= magic <= MAGIC:
        raise BatchRejected(ErrorCode.CORRUPT_MESSAGE, f"Invalid magic found in record: {magic}")
    if remaining < LOG_OVERHEAD + length:
        return None
    return pos + LOG_OVERHEAD + length


def _short_reason(data: bytes | bytearray | memoryview, size: int) -> str:
    if size == 0:
        return " (the records field is empty)"
    if size >= LOG_OVERHEAD:
        (length,) = _INT32.unpack_from(data, 8)
        return (f" (the {size}-byte records field ends inside a batch that declares "
                f"{LOG_OVERHEAD + length} bytes)")
    return f" (the {size}-byte records field is shorter than a batch header)"


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def validate_batch(batch: RecordBatch, rules: TopicRules, now_ms: int, topic_partition: str,
                   max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> None:
    """Every append-time check of one client batch (steps 2-5 of the module docstring), in one call."""
    validate_header(batch, rules, now_ms, topic_partition)
    if needs_record_walk(batch, rules, now_ms):
        validate_records(batch, rules, now_ms, topic_partition, max_decompressed_bytes)


def validate_header(batch: RecordBatch, rules: TopicRules, now_ms: int, topic_partition: str) -> None:
    """The checks the batch header settles, O(1) in the records apart from the CRC; the Produce hot path.

    Runs everything but the record walk (`needs_record_walk` / `validate_records`), which the handler may
    run on a worker thread for large batches.
    """
    tp = topic_partition
    if batch.base_offset != 0:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"The baseOffset of the record batch in the append to {tp} should be 0, but it is {batch.base_offset}")
    size = batch.total_size
    if size > rules.max_message_bytes:
        raise BatchRejected(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"The record batch size in the append to {tp} is {size} bytes which exceeds the maximum configured "
            f"value of {rules.max_message_bytes} (max.message.bytes); send smaller batches (the producer's "
            f"batch.size / max.request.size) or raise the topic's max.message.bytes")
    if not batch.validate_crc():
        raise BatchRejected(
            ErrorCode.CORRUPT_MESSAGE,
            f"Record is corrupt (stored crc = {batch.crc}, computed crc = {batch.compute_crc()}) "
            f"in topic partition {tp}.")
    _validate_batch_header(batch, tp)
    if not batch.compression:
        # Kafka's record iterator would run out of bytes before reaching the declared count; the header
        # alone shows it, and every later loop over the records is then bounded by the bytes received.
        try:
            check_record_count(batch.record_count, size - HEADER_SIZE)
        except RecordBatchError as exc:
            raise BatchRejected(ErrorCode.INVALID_RECORD, f"{exc} in topic partition {tp}") from None
    if not needs_record_walk(batch, rules, now_ms) and batch.timestamp_type == TimestampType.LOG_APPEND_TIME:
        _check_header_log_append_time(batch, rules, now_ms)
    # Kafka checks this at append, after LogValidator; it needs only the header, so it runs before the
    # record walk (a batch failing both gets RECORD_LIST_TOO_LARGE instead of the record's error).
    if size > rules.segment_bytes:
        raise BatchRejected(
            ErrorCode.RECORD_LIST_TOO_LARGE,
            f"Message batch size is {size} bytes in append to partition {tp} which exceeds the maximum "
            f"configured segment size of {rules.segment_bytes}.")


def needs_record_walk(batch: RecordBatch, rules: TopicRules, now_ms: int) -> bool:
    """Whether the records must be decoded: every compressed batch (Kafka decompresses them all to check
    the records against the header), compacted topics (keys), and CreateTime timestamps the header's max
    timestamp cannot settle."""
    if batch.compression or rules.compacted:
        return True
    return not _header_settles_timestamps(batch, rules, now_ms)


def _header_settles_timestamps(batch: RecordBatch, rules: TopicRules, now_ms: int) -> bool:
    """Whether the header alone proves every record's timestamp acceptable: LogAppendTime (the header's
    check covers all records), or no lower bound and a max timestamp within the upper one."""
    if rules.log_append_time or batch.timestamp_type == TimestampType.LOG_APPEND_TIME:
        return True
    return rules.timestamp_before_max_ms >= INT64_MAX and batch.max_timestamp <= now_ms + rules.timestamp_after_max_ms


def _validate_batch_header(batch: RecordBatch, tp: str) -> None:
    # The base offset is 0 here, so the offset range is [0, last offset delta].
    count_from_offsets = batch.last_offset_delta + 1
    if count_from_offsets <= 0:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"Batch has an invalid offset range: [0, {batch.last_offset_delta}] in topic partition {tp}")
    count = batch.record_count
    if count <= 0:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD, f"Invalid reported count for record batch: {count} in topic partition {tp}")
    if count != count_from_offsets:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"Inconsistent batch offset range [0, {batch.last_offset_delta}] and count of records {count} "
            f"in topic partition {tp}")
    if batch.is_control:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD, f"Clients are not allowed to write control records in topic partition {tp}")
    if batch.producer_id >= 0 and batch.base_sequence < 0:
        raise BatchRejected(
            ErrorCode.INVALID_RECORD,
            f"Invalid sequence number {batch.base_sequence} in record batch with producerId {batch.producer_id} "
            f"in topic partition {tp}")


def _check_header_log_append_time(batch: RecordBatch, rules: TopicRules, now_ms: int) -> None:
    """A client batch flagged LogAppendTime, decided from its header: every record reports the header's
    max timestamp, so one check settles them all; Kafka then names each record (their count is bounded
    by the bytes: `check_record_count` ran first)."""
    lo, hi = _timestamp_range(rules, now_ms)
    timestamp, create_time_topic = batch.max_timestamp, not rules.log_append_time
    if _timestamp_error(timestamp, 0, create_time_topic, True, lo, hi) is None:
        return
    found = _Errors(timestamp=True)
    # Record offsets are relative here (base offset 0), so each record's offset is its index.
    found.errors = [RecordError(i, _timestamp_error(timestamp, i, create_time_topic, True, lo, hi) or "")
                    for i in range(batch.record_count)]
    _raise_record_errors(found)


def _timestamp_range(rules: TopicRules, now_ms: int) -> tuple[int | None, int]:
    lo = now_ms - rules.timestamp_before_max_ms if rules.timestamp_before_max_ms < INT64_MAX else None
    return lo, now_ms + rules.timestamp_after_max_ms


def validate_records(batch: RecordBatch, rules: TopicRules, now_ms: int, topic_partition: str,
                     max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> None:
    """LogValidator's record walk: decompress (at most ``max_decompressed_bytes``), check the records
    match the header's count, and apply the per-record rules (compacted keys, timestamps the header
    cannot settle). Pure and thread-safe (no shared state)."""
    tp = topic_partition
    try:
        settled = not rules.compacted and _header_settles_timestamps(batch, rules, now_ms)
        # No key needs checking and the header's max timestamp is acceptable: if the records agree with
        # it, their bounds are all that matter, at two varints per record instead of a decoded record.
        if not settled or (check_record_framing(batch, max_decompressed_bytes) > batch.max_timestamp
                           and batch.timestamp_type != TimestampType.LOG_APPEND_TIME):
            _check_each_record(batch, rules, now_ms, tp, max_decompressed_bytes)
    except (DecompressionError, UnsupportedCompressionError) as exc:
        raise BatchRejected(*_decompression_failure(exc, batch, tp, max_decompressed_bytes)) from None
    except RecordBatchError as exc:
        # Kafka's record iterator raises InvalidRecordException for records it cannot parse.
        raise BatchRejected(ErrorCode.INVALID_RECORD,
                            f"Record batch in topic partition {tp} has invalid records: {exc}") from None


def _check_each_record(batch: RecordBatch, rules: TopicRules, now_ms: int, tp: str,
                       max_decompressed_bytes: int) -> None:
    found = _Errors()
    lo, hi = _timestamp_range(rules, now_ms)
    create_time_topic = not rules.log_append_time
    client_log_append_time = batch.timestamp_type == TimestampType.LOG_APPEND_TIME
    for index, record in enumerate(iter_records(batch, max_decompressed_bytes)):
        if rules.compacted and record.key is None:
            found.errors.append(RecordError(
                index, f"Compacted topic cannot accept message without key in topic partition {tp}"))
            continue
        _check_timestamp(record.timestamp, index, record.offset, create_time_topic,
                         client_log_append_time, lo, hi, found)
    if found.errors:
        _raise_record_errors(found)


def _decompression_failure(exc: RecordBatchError, batch: RecordBatch, tp: str,
                           max_decompressed_bytes: int) -> tuple[ErrorCode, str]:
    codec = Compression(batch.compression).name.lower()
    code = ErrorCode[exc.error_name]
    if code is ErrorCode.MESSAGE_TOO_LARGE:
        return code, (f"The {codec} record batch in the append to {tp} decompresses to more than "
                      f"{max_decompressed_bytes} bytes (message.max.decompressed.bytes); send smaller batches "
                      f"or raise the broker's message.max.decompressed.bytes")
    return code, f"Record batch in topic partition {tp} is corrupt: its {codec} payload does not decompress ({exc})"


def _check_timestamp(timestamp: int, index: int, offset: int, create_time_topic: bool,
                     client_log_append_time: bool, lo: int | None, hi: int, found: _Errors) -> None:
    message = _timestamp_error(timestamp, offset, create_time_topic, client_log_append_time, lo, hi)
    if message is not None:
        found.errors.append(RecordError(index, message))
        found.timestamp = True


def _timestamp_error(timestamp: int, offset: int, create_time_topic: bool, client_log_append_time: bool,
                     lo: int | None, hi: int) -> str | None:
    # LogValidator.validateTimestamp: records without a timestamp (-1) are exempt from the range.
    if create_time_topic and timestamp != -1:
        if timestamp > hi or (lo is not None and timestamp < lo):
            low = "-inf" if lo is None else str(lo)
            return (f"Timestamp {timestamp} of message with offset {offset} is out of range. The timestamp "
                    f"should be within [{low}, {hi}]")
    elif client_log_append_time:
        return "Invalid timestamp type in message: producer should not set timestamp type to LogAppendTime."
    return None


def _raise_record_errors(found: _Errors) -> None:
    errors = tuple(found.errors)
    if found.timestamp:
        raise BatchRejected(
            ErrorCode.INVALID_TIMESTAMP,
            f"One or more records have been rejected due to invalid timestamp: {errors[0].message} "
            f"({len(errors)} record(s) rejected; check the producer's clock or the topic's "
            f"message.timestamp.before.max.ms / message.timestamp.after.max.ms)", errors)
    shown = ", ".join(str(e) for e in errors[:3])
    raise BatchRejected(
        ErrorCode.INVALID_RECORD,
        f"One or more records have been rejected due to {len(errors)} record errors in total, and only "
        f"showing the first three errors at most: [{shown}]", errors)
