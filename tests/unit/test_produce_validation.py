"""Produce batch checks: the error codes and messages Kafka's ProduceRequest.validateRecords,
UnifiedLog.analyzeAndValidateRecords and LogValidator give, on batches built in memory (no sockets)."""

from __future__ import annotations

import struct

import pytest

from broker.produce_validation import BatchRejected, TopicRules, frame_batch, validate_batch
from protocol.errors import ErrorCode
from protocol.primitives import INT64_MAX
from protocol.records import Compression, Record, TimestampType, build_batch, write_crc

NOW = 1_700_000_000_000
TP = "orders-0"


def _batch(n: int = 3, ts: int = NOW, **kwargs: object) -> bytearray:
    records = [Record(i, ts + i, b"k%d" % i, b"v%d" % i, (("h", b"x"),)) for i in range(n)]
    return build_batch(records, **kwargs)  # type: ignore[arg-type]


def _reject(data: bytes | bytearray, rules: TopicRules | None = None, version: int = 9,
            now: int = NOW) -> BatchRejected:
    with pytest.raises(BatchRejected) as info:
        validate_batch(frame_batch(data, version), rules or TopicRules(), now, TP)
    return info.value


def _patch(data: bytearray, fmt: str, offset: int, value: int) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    write_crc(data, 0)
    return data


def test_a_valid_batch_passes() -> None:
    """An ordinary batch from a client passes every check."""
    validate_batch(frame_batch(_batch(), 9), TopicRules(), NOW, TP)


@pytest.mark.parametrize("records", [None, b"", b"\x00" * 11])
def test_no_batch_is_invalid_record(records: bytes | None) -> None:
    """v3+ needs one record batch per partition; none at all -> INVALID_RECORD."""
    with pytest.raises(BatchRejected) as info:
        frame_batch(records, 9)
    assert info.value.code is ErrorCode.INVALID_RECORD
    assert "must have at least one record batch per partition" in info.value.message


def test_truncated_batch_is_invalid_record_like_kafka() -> None:
    """A batch cut short is not a complete batch for Kafka's log input stream -> INVALID_RECORD."""
    data = _batch()
    with pytest.raises(BatchRejected) as info:
        frame_batch(data[:-5], 9)
    assert info.value.code is ErrorCode.INVALID_RECORD
    assert f"ends inside a batch that declares {len(data)} bytes" in info.value.message


def test_length_below_legacy_minimum_is_corrupt() -> None:
    """A batch length under 14 bytes cannot be any message format -> CORRUPT_MESSAGE."""
    data = _patch(_batch(), ">i", 8, 5)
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 9)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE
    assert "Record size 5 is less than the minimum record overhead (14)" in info.value.message


def test_unknown_magic_is_corrupt() -> None:
    """Magic outside 0..2 -> CORRUPT_MESSAGE ("Invalid magic found in record")."""
    data = _batch()
    data[16] = 7
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 9)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE
    assert "Invalid magic found in record: 7" in info.value.message


def test_legacy_magic_is_invalid_record() -> None:
    """A v0/v1 message in Produce v3+ -> INVALID_RECORD (only magic 2 batches are allowed)."""
    data = _batch()
    data[16] = 1
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 9)
    assert info.value.code is ErrorCode.INVALID_RECORD
    assert "only allowed to contain record batches with magic version 2" in info.value.message


def test_two_batches_are_invalid_record() -> None:
    """v3+ allows exactly one batch per partition -> INVALID_RECORD for a second complete batch."""
    with pytest.raises(BatchRejected) as info:
        frame_batch(_batch() + _batch(), 9)
    assert info.value.code is ErrorCode.INVALID_RECORD
    assert "exactly one record batch per partition" in info.value.message


def test_trailing_partial_bytes_are_corrupt() -> None:
    """Bytes after the batch that are no complete batch are rejected (Kafka would silently drop them)."""
    with pytest.raises(BatchRejected) as info:
        frame_batch(_batch() + b"\x00\x01\x02", 9)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE
    assert "3 bytes follow the record batch" in info.value.message


def test_zstd_needs_produce_v7() -> None:
    """zstd batches in Produce v3-v6 -> UNSUPPORTED_COMPRESSION_TYPE; v7 accepts them."""
    data = _batch(compression=Compression.ZSTD)
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 6)
    assert info.value.code is ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    validate_batch(frame_batch(data, 7), TopicRules(), NOW, TP)


def test_non_zero_base_offset_is_invalid_record() -> None:
    """Client batches must carry base offset 0 (UnifiedLog.analyzeAndValidateRecords)."""
    data = _batch()
    struct.pack_into(">q", data, 0, 5)  # outside the CRC
    error = _reject(data)
    assert error.code is ErrorCode.INVALID_RECORD
    assert f"The baseOffset of the record batch in the append to {TP} should be 0, but it is 5" in error.message


def test_batch_above_max_message_bytes_is_message_too_large() -> None:
    """The whole batch size, 12-byte log overhead included, is compared with max.message.bytes."""
    data = _batch()
    validate_batch(frame_batch(data, 9), TopicRules(max_message_bytes=len(data)), NOW, TP)
    error = _reject(data, TopicRules(max_message_bytes=len(data) - 1))
    assert error.code is ErrorCode.MESSAGE_TOO_LARGE
    assert f"is {len(data)} bytes which exceeds the maximum configured value of {len(data) - 1}" in error.message


def test_crc_mismatch_is_corrupt_message() -> None:
    """A CRC-32C that does not match the batch -> CORRUPT_MESSAGE."""
    data = _batch()
    data[-1] ^= 0xFF
    error = _reject(data)
    assert error.code is ErrorCode.CORRUPT_MESSAGE
    assert "Record is corrupt (stored crc =" in error.message


def test_short_v2_batch_is_corrupt() -> None:
    """A magic-2 batch shorter than its 61-byte header fails Kafka's isValid() -> CORRUPT_MESSAGE."""
    data = _batch()[:40]
    struct.pack_into(">i", data, 8, 28)
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 9)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize(("field", "fmt", "offset", "value", "expected"), [
    ("last offset delta", ">i", 23, -1, "Batch has an invalid offset range: [0, -1]"),
    ("record count", ">i", 57, 0, "Invalid reported count for record batch: 0"),
    ("record count", ">i", 57, 2, "Inconsistent batch offset range [0, 2] and count of records 2"),
])
def test_inconsistent_offsets_and_counts_are_invalid_record(field: str, fmt: str, offset: int, value: int,
                                                            expected: str) -> None:
    """LogValidator.validateBatch: the offset range and the record count must agree -> INVALID_RECORD."""
    error = _reject(_patch(_batch(), fmt, offset, value))
    assert error.code is ErrorCode.INVALID_RECORD, field
    assert expected in error.message


def test_control_batch_from_a_client_is_invalid_record() -> None:
    """Clients may not write control records -> INVALID_RECORD."""
    error = _reject(_batch(control=True))
    assert error.code is ErrorCode.INVALID_RECORD
    assert "Clients are not allowed to write control records" in error.message


def test_idempotent_batch_without_sequence_is_invalid_record() -> None:
    """A batch with a producer id needs a base sequence >= 0 -> INVALID_RECORD."""
    error = _reject(_batch(producer_id=7, producer_epoch=0, base_sequence=-1))
    assert error.code is ErrorCode.INVALID_RECORD
    assert "Invalid sequence number -1 in record batch with producerId 7" in error.message


def test_future_timestamp_is_invalid_timestamp_with_record_errors() -> None:
    """CreateTime records more than message.timestamp.after.max.ms ahead -> INVALID_TIMESTAMP naming each."""
    rules = TopicRules(timestamp_after_max_ms=1000)
    records = [Record(0, NOW, b"a", b"1"), Record(1, NOW + 5000, b"b", b"2"), Record(2, NOW + 6000, b"c", b"3")]
    error = _reject(build_batch(records), rules)
    assert error.code is ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in error.record_errors] == [1, 2]
    assert f"Timestamp {NOW + 5000} of message with offset 1 is out of range" in error.record_errors[0].message
    assert f"{NOW + 1000}]" in error.record_errors[0].message
    assert "One or more records have been rejected due to invalid timestamp" in error.message


def test_old_timestamp_is_checked_per_record_when_before_max_is_set() -> None:
    """With a finite message.timestamp.before.max.ms every record is checked, not just the header."""
    rules = TopicRules(timestamp_before_max_ms=60_000)
    # The header's base timestamp is the first record's; an older record further in hides from it.
    records = [Record(0, NOW, b"a", b"1"), Record(1, NOW - 120_000, b"b", b"2")]
    error = _reject(build_batch(records), rules)
    assert error.code is ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in error.record_errors] == [1]


def test_default_before_bound_accepts_old_timestamps() -> None:
    """message.timestamp.before.max.ms defaults to unbounded: year-1970 timestamps are fine."""
    validate_batch(frame_batch(_batch(ts=1), 9), TopicRules(), NOW, TP)


def test_missing_timestamps_are_exempt() -> None:
    """Records with timestamp -1 (none) skip the range checks, as in LogValidator.validateTimestamp."""
    validate_batch(frame_batch(_batch(n=1, ts=-1), 9), TopicRules(timestamp_before_max_ms=1), NOW, TP)


def test_log_append_time_topic_does_not_check_create_time() -> None:
    """On a LogAppendTime topic the broker overwrites timestamps, so far-future ones are accepted."""
    validate_batch(frame_batch(_batch(ts=NOW + 10**9), 9), TopicRules(log_append_time=True), NOW, TP)


def test_client_set_log_append_time_is_invalid_timestamp_on_log_append_time_topic() -> None:
    """A client batch flagged LogAppendTime on a LogAppendTime topic -> INVALID_TIMESTAMP for each record."""
    data = _batch(n=2, timestamp_type=TimestampType.LOG_APPEND_TIME)
    error = _reject(data, TopicRules(log_append_time=True))
    assert error.code is ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in error.record_errors] == [0, 1]
    assert "should not set timestamp type to LogAppendTime" in error.record_errors[0].message


def test_compacted_topic_needs_keys() -> None:
    """Compacted topics reject records without a key -> INVALID_RECORD with the records named."""
    records = [Record(0, NOW, b"a", b"1"), Record(1, NOW, None, b"2"), Record(2, NOW, None, None)]
    error = _reject(build_batch(records, compression=Compression.LZ4), TopicRules(compacted=True))
    assert error.code is ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in error.record_errors] == [1, 2]
    assert f"Compacted topic cannot accept message without key in topic partition {TP}" in error.message
    assert "due to 2 record errors in total" in error.message


def test_compacted_topic_accepts_keyed_records() -> None:
    """Keyed records (any compression) pass the compacted-topic check."""
    for codec in Compression:
        validate_batch(frame_batch(_batch(compression=codec), 9), TopicRules(compacted=True), NOW, TP)


def test_undecodable_records_on_compacted_topic_are_invalid_record() -> None:
    """Where records must be read, a payload that does not decode -> INVALID_RECORD (Kafka's record
    iterator raises InvalidRecordException for records it cannot parse)."""
    data = _batch()
    data[61] = 0x7F  # the first record's length varint now overruns the batch
    write_crc(data, 0)
    error = _reject(data, TopicRules(compacted=True))
    assert error.code is ErrorCode.INVALID_RECORD


def test_batch_above_segment_bytes_is_record_list_too_large() -> None:
    """A batch larger than segment.bytes can never fit a segment -> RECORD_LIST_TOO_LARGE."""
    data = _batch()
    error = _reject(data, TopicRules(segment_bytes=len(data) - 1))
    assert error.code is ErrorCode.RECORD_LIST_TOO_LARGE
    assert "exceeds the maximum configured segment size" in error.message


def test_long_max_before_bound_means_unbounded() -> None:
    """INT64_MAX is Kafka's 'no limit' value for message.timestamp.before.max.ms."""
    assert TopicRules().timestamp_before_max_ms == INT64_MAX
