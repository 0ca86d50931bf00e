"""The v2 RecordBatch layer: header view, CRC-32C, in-place patching, walking batches (torn tails,
legacy magic), records and varints, and interoperability both ways with kafka-python's and aiokafka's
own batch builders and readers (real client bytes, no broker)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import crc32c
import pytest
from aiokafka.record.default_records import DefaultRecordBatch as AiokafkaBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AiokafkaBuilder
from aiokafka.record.memory_records import MemoryRecords as AiokafkaMemoryRecords
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords as KafkaPythonMemoryRecords
from kafka.record.util import encode_varint as kafka_python_encode_varint

from protocol.primitives import INT32_MAX
from protocol.records import (
    HEADER_SIZE,
    Compression,
    CorruptRecordError,
    DecompressionBombError,
    InvalidRecordError,
    Record,
    RecordBatch,
    RecordBatchError,
    TimestampType,
    TruncatedBatchError,
    UnsupportedMagicError,
    build_batch,
    compute_crc,
    iter_batches,
    iter_records,
    set_base_offset,
    set_log_append_time,
    set_partition_leader_epoch,
    write_crc,
)
from protocol.records.record import decode_record
from protocol.records.varint import (
    read_nullable_bytes,
    read_varint,
    read_varlong,
    write_varint,
    write_varlong,
)

CODECS = list(Compression)
T0 = 1_700_000_000_000
# Facts from the v2 format: field offsets in the 61-byte header.
CRC_START = 21


def sample_records(count: int, base_offset: int = 0) -> list[Record]:
    """Compressible values (clients skip compression that does not pay), null keys and values, headers."""
    return [
        Record(
            offset=base_offset + i,
            timestamp=T0 + (i * 7) % 5 - 2,  # not monotonic: deltas go negative
            key=None if i % 3 == 0 else b"key-%d" % i,
            value=None if i % 5 == 4 else b"value %d " % i * 20,
            headers=(("trace", b"t-%d" % i), ("empty", b""), ("null", None)) if i % 2 else (),
        )
        for i in range(count)
    ]


def batch_with_payload(payload: bytes, count: int, attributes: int = 0) -> bytearray:
    """A batch with a hand-made records payload, framed and CRC'd from the format facts alone."""
    header = struct.pack(
        ">qiibIhiqqqhii", 0, HEADER_SIZE - 12 + len(payload), -1, 2, 0, attributes,
        max(count - 1, 0), T0, T0, -1, -1, -1, count,
    )
    buf = bytearray(header + payload)
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[CRC_START:])))
    return buf


# --- header view ---------------------------------------------------------------------------------------

def test_crc32c_is_castagnoli() -> None:
    """The check value of CRC-32C (Castagnoli) for "123456789" is 0xE3069283."""
    assert crc32c.crc32c(b"123456789") == 0xE3069283


def test_built_batch_matches_hand_assembled_bytes() -> None:
    """Golden bytes assembled from the spec: header fields in order, then one record with a header."""
    built = build_batch(
        [Record(5, 1000, b"k", b"v", (("h", None),))],
        base_offset=5, producer_id=42, producer_epoch=3, base_sequence=9, partition_leader_epoch=7,
    )
    # attributes 0, ts delta 0, offset delta 0, key len 1 'k', value len 1 'v', 1 header: 'h', null
    record_body = bytes([0x00, 0x00, 0x00, 0x02]) + b"k" + bytes([0x02]) + b"v" + bytes([0x02, 0x02]) + b"h"
    record_body += bytes([0x01])
    records = bytes([len(record_body) * 2]) + record_body  # zigzag varint length
    after_crc = struct.pack(">hiqqqhii", 0, 0, 1000, 1000, 42, 3, 9, 1) + records
    expected = struct.pack(">qiib", 5, 49 + len(records), 7, 2)
    expected += struct.pack(">I", crc32c.crc32c(after_crc)) + after_crc
    assert bytes(built) == expected


def test_every_header_field_is_exposed() -> None:
    buf = build_batch(
        sample_records(4, base_offset=100), base_offset=100, compression=Compression.ZSTD,
        producer_id=12345678901, producer_epoch=17, base_sequence=33, transactional=True,
        timestamp_type=TimestampType.LOG_APPEND_TIME, partition_leader_epoch=9,
    )
    batch = RecordBatch(buf)
    assert (batch.base_offset, batch.partition_leader_epoch, batch.magic) == (100, 9, 2)
    assert batch.batch_length == len(buf) - 12
    assert batch.total_size == len(buf)
    assert batch.crc == struct.unpack_from(">I", buf, 17)[0]
    assert batch.attributes == 0x4 | 0x8 | 0x10
    assert (batch.last_offset_delta, batch.last_offset, batch.next_offset) == (3, 103, 104)
    assert (batch.base_timestamp, batch.max_timestamp) == (T0 - 2, T0 + 2)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (12345678901, 17, 33)
    assert (batch.record_count, batch.last_sequence) == (4, 36)
    assert batch.compression == Compression.ZSTD
    assert batch.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert batch.is_transactional and not batch.is_control
    assert batch.delete_horizon_ms is None


def test_control_flag_and_defaults() -> None:
    batch = RecordBatch(build_batch(sample_records(1), control=True))
    assert batch.is_control and not batch.is_transactional
    assert batch.timestamp_type == TimestampType.CREATE_TIME
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.last_sequence) == (-1, -1, -1, -1)


def test_last_sequence_wraps_like_kafka() -> None:
    """Sequences wrap from INT32_MAX to 0: INT32_MAX-1, INT32_MAX, 0 for three records."""
    buf = build_batch(sample_records(3), producer_id=1, producer_epoch=0, base_sequence=INT32_MAX - 1)
    assert RecordBatch(buf).last_sequence == 0
    buf = build_batch(sample_records(3), producer_id=1, producer_epoch=0, base_sequence=INT32_MAX)
    assert RecordBatch(buf).last_sequence == 1


def test_delete_horizon_is_the_base_timestamp_when_flagged() -> None:
    buf = build_batch(sample_records(2))
    struct.pack_into(">h", buf, CRC_START, 0x40)
    write_crc(buf)
    batch = RecordBatch(buf)
    assert batch.delete_horizon_ms == batch.base_timestamp == T0 - 2
    assert batch.validate_crc()


def test_view_over_a_buffer_at_an_offset_does_not_copy() -> None:
    batch_bytes = build_batch(sample_records(3))
    buf = bytearray(b"\xaa" * 10) + batch_bytes + bytearray(b"\xbb" * 5)
    for buffer in (buf, memoryview(buf), bytes(buf)):
        batch = RecordBatch(buffer, 10)
        assert batch.raw.tobytes() == batch_bytes
        assert len(batch.records_payload) == len(batch_bytes) - HEADER_SIZE
        assert batch.validate_crc()
    batch = RecordBatch(buf, 10)
    assert batch.raw.obj is buf
    buf[10 + HEADER_SIZE] ^= 0xFF  # visible through the view: no copy was taken
    assert batch.records_payload[0] == buf[10 + HEADER_SIZE]


# --- CRC -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_crc_valid_for_built_batches(codec: Compression) -> None:
    buf = build_batch(sample_records(10), compression=codec)
    batch = RecordBatch(buf)
    assert batch.validate_crc()
    assert batch.compute_crc() == compute_crc(buf) == batch.crc


def test_any_flipped_byte_under_the_crc_is_detected() -> None:
    """Every byte from the CRC field to the end is covered: flipping any one fails validation."""
    original = build_batch(sample_records(3))
    for i in range(17, len(original)):
        buf = bytearray(original)
        buf[i] ^= 0x01
        assert not RecordBatch(buf).validate_crc(), f"flipping byte {i} went unnoticed"


def test_base_offset_and_leader_epoch_are_outside_the_crc() -> None:
    original = build_batch(sample_records(3))
    for i in [*range(8), *range(12, 16)]:
        buf = bytearray(original)
        buf[i] ^= 0xFF
        assert RecordBatch(buf).validate_crc(), f"byte {i} is outside the CRC but changed it"


def test_write_crc_repairs_after_a_change() -> None:
    buf = build_batch(sample_records(2))
    struct.pack_into(">q", buf, 35, T0 + 99)  # max timestamp
    assert not RecordBatch(buf).validate_crc()
    crc = write_crc(buf)
    assert RecordBatch(buf).validate_crc() and RecordBatch(buf).crc == crc


# --- in-place patching ---------------------------------------------------------------------------------

def test_patching_offset_and_epoch_keeps_crc_valid() -> None:
    first = build_batch(sample_records(2))
    second = build_batch(sample_records(5))
    buf = bytearray(first + second)
    pos = len(first)
    crc_before = RecordBatch(buf, pos).crc
    set_base_offset(buf, pos, 9_000_000_000)
    set_partition_leader_epoch(memoryview(buf), pos, 42)
    batch = RecordBatch(buf, pos)
    assert (batch.base_offset, batch.last_offset, batch.partition_leader_epoch) == (9_000_000_000, 9_000_000_004, 42)
    assert batch.validate_crc() and batch.crc == crc_before
    assert RecordBatch(buf, 0).base_offset == 0, "patch spilled into the previous batch"
    assert [r.offset for r in iter_records(batch)] == list(range(9_000_000_000, 9_000_000_005))


def test_view_patch_methods_keep_the_view_current() -> None:
    batch = RecordBatch(build_batch(sample_records(3)))
    batch.set_base_offset(500)
    batch.set_partition_leader_epoch(3)
    assert (batch.base_offset, batch.last_offset, batch.partition_leader_epoch) == (500, 502, 3)
    batch.set_log_append_time(T0 + 1000)
    assert (batch.max_timestamp, batch.timestamp_type) == (T0 + 1000, TimestampType.LOG_APPEND_TIME)
    assert batch.validate_crc()


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_log_append_time_rewrites_max_timestamp_and_crc(codec: Compression) -> None:
    """Kafka's LogAppendTime: max timestamp := append time, attribute bit 3 set, CRC recomputed;
    every record then reads as the append time, for us and for the clients."""
    buf = build_batch(sample_records(4), compression=codec, transactional=True, producer_id=7, producer_epoch=1,
                      base_sequence=0)
    set_log_append_time(buf, 0, T0 + 5000)
    batch = RecordBatch(buf)
    assert batch.validate_crc()
    assert batch.attributes == codec | 0x08 | 0x10
    assert (batch.base_timestamp, batch.max_timestamp) == (T0 - 2, T0 + 5000)
    assert {r.timestamp for r in iter_records(batch)} == {T0 + 5000}
    for reader in (KafkaPythonBatch, AiokafkaBatch):
        theirs = reader(bytes(buf))
        assert theirs.validate_crc()
        assert {(r.timestamp, r.timestamp_type) for r in theirs} == {(T0 + 5000, 1)}


def test_patching_needs_a_writable_buffer() -> None:
    with pytest.raises(TypeError):
        set_base_offset(bytes(build_batch([])), 0, 1)  # type: ignore[arg-type]


# --- walking batches -----------------------------------------------------------------------------------

def concatenated() -> tuple[bytes, list[int]]:
    parts = [
        build_batch(sample_records(3), base_offset=0),
        build_batch(sample_records(4, 3), base_offset=3, compression=Compression.GZIP),
        build_batch([], base_offset=7, last_offset_delta=1),
        build_batch(sample_records(2, 9), base_offset=9, compression=Compression.LZ4),
    ]
    starts = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    return b"".join(parts), starts


def test_iter_batches_walks_concatenated_batches() -> None:
    buf, starts = concatenated()
    walked = list(iter_batches(buf))
    assert [pos for pos, _ in walked] == starts
    assert [(b.base_offset, b.last_offset) for _, b in walked] == [(0, 2), (3, 6), (7, 8), (9, 10)]
    assert all(b.validate_crc() for _, b in walked)
    offsets = [r.offset for _, b in walked for r in iter_records(b)]
    assert offsets == [0, 1, 2, 3, 4, 5, 6, 9, 10]


def test_iter_batches_respects_position_and_end() -> None:
    buf, starts = concatenated()
    padded = b"\x00" * 3 + buf + b"garbage"
    walked = list(iter_batches(memoryview(padded), 3 + starts[1], 3 + len(buf)))
    assert [pos for pos, _ in walked] == [3 + s for s in starts[1:]]
    assert list(iter_batches(b"")) == []


def test_truncated_tail_at_every_byte_boundary_of_the_last_batch() -> None:
    """A log cut anywhere inside its last batch yields the complete prefix, then a TruncatedBatchError
    pointing at where the torn batch starts (what recovery truncates to). Cutting exactly at the
    boundary is a clean end."""
    buf, starts = concatenated()
    last = starts[-1]
    for cut in range(last, len(buf)):
        for data, end in ((buf[:cut], None), (buf, cut)):  # a short buffer, or a limit inside a longer one
            seen: list[int] = []
            if cut == last:
                seen = [pos for pos, _ in iter_batches(data, 0, end)]
                assert seen == starts[:-1]
                continue
            with pytest.raises(TruncatedBatchError) as info:
                seen.extend(pos for pos, _ in iter_batches(data, 0, end))
            assert seen == starts[:-1], f"cut at {cut}"
            assert info.value.position == last, f"cut at {cut}"
            assert info.value.available == cut - last
            assert not isinstance(info.value, CorruptRecordError), "a torn tail must be told apart from corruption"


def test_truncated_batch_is_a_record_batch_error() -> None:
    with pytest.raises(RecordBatchError):
        RecordBatch(build_batch(sample_records(2))[:-1])


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_message_sets_from_kafka_python_are_rejected(magic: int) -> None:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 16)
    for i in range(3):
        builder.append(i, timestamp=T0 if magic else None, key=b"k", value=b"legacy value %d" % i)
    legacy = bytes(builder.build())
    assert legacy[16] == magic, "magic sits at byte 16 in legacy framing too"
    v2 = bytes(build_batch(sample_records(1)))
    with pytest.raises(UnsupportedMagicError) as info:
        list(iter_batches(v2 + legacy))
    assert (info.value.magic, info.value.position) == (magic, len(v2))
    assert f"message format v0/v1 (magic={magic})" in str(info.value)
    assert "Moldau accepts only v2 record batches (Kafka 0.11+ clients)" in str(info.value)
    assert info.value.error_name == "INVALID_RECORD"


def test_short_hand_made_v0_message_is_rejected_as_legacy_not_truncated() -> None:
    """A v0 message (offset, size, crc, magic 0, attributes, key -1, value) is shorter than a v2 header."""
    body = struct.pack(">bbi", 0, 0, -1) + struct.pack(">i", 2) + b"hi"
    message = struct.pack(">qiI", 0, 4 + len(body), crc32c.crc32c(body)) + body
    assert len(message) < HEADER_SIZE
    with pytest.raises(UnsupportedMagicError) as info:
        RecordBatch(message)
    assert info.value.magic == 0


@pytest.mark.parametrize("magic", [3, -1, 127])
def test_unknown_magic_is_corrupt(magic: int) -> None:
    buf = build_batch(sample_records(1))
    struct.pack_into(">b", buf, 16, magic)
    with pytest.raises(CorruptRecordError, match=f"unknown magic {magic}"):
        RecordBatch(buf)
    with pytest.raises(CorruptRecordError, match=f"unknown magic {magic}"):
        RecordBatch(buf[:30])


@pytest.mark.parametrize("length", [-1, 0, 48])
def test_batch_length_below_the_header_is_corrupt(length: int) -> None:
    buf = build_batch(sample_records(1))
    struct.pack_into(">i", buf, 8, length)
    with pytest.raises(CorruptRecordError, match="below the minimum 49"):
        RecordBatch(buf)
    with pytest.raises(CorruptRecordError, match="below the minimum 49"):
        RecordBatch(buf[:20])


# --- records -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_records_round_trip_every_codec(codec: Compression) -> None:
    records = sample_records(25, base_offset=1000)
    batch = RecordBatch(build_batch(records, base_offset=1000, compression=codec))
    assert batch.compression == codec
    assert list(iter_records(batch)) == records


def test_empty_key_and_value_differ_from_null() -> None:
    records = [Record(0, T0, b"", None), Record(1, T0, None, b""), Record(2, T0, b"", b"")]
    assert list(iter_records(RecordBatch(build_batch(records)))) == records


def test_many_records() -> None:
    records = [Record(i, T0 + i, b"%d" % i, b"v" * (i % 300), ()) for i in range(10_000)]
    batch = RecordBatch(build_batch(records, compression=Compression.ZSTD))
    assert (batch.record_count, batch.last_offset) == (10_000, 9_999)
    assert list(iter_records(batch)) == records


def test_offset_gaps_survive_as_compaction_leaves_them() -> None:
    records = [Record(10, T0, b"a", b"1"), Record(13, T0, b"b", b"2"), Record(20, T0, b"c", None)]
    batch = RecordBatch(build_batch(records, base_offset=10, last_offset_delta=15))
    assert (batch.last_offset, batch.record_count) == (25, 3)
    assert list(iter_records(batch)) == records


def test_empty_batch() -> None:
    """No records: count 0, timestamps NO_TIMESTAMP (-1), and an offset range that can still be kept."""
    batch = RecordBatch(build_batch([], base_offset=50, last_offset_delta=4, producer_id=3, producer_epoch=0,
                                    base_sequence=8))
    assert (batch.record_count, batch.base_timestamp, batch.max_timestamp) == (0, -1, -1)
    assert (batch.last_offset, batch.last_sequence) == (54, 12)
    assert batch.total_size == HEADER_SIZE and batch.validate_crc()
    assert list(iter_records(batch)) == []
    assert list(KafkaPythonBatch(bytes(batch.raw))) == []


@pytest.mark.parametrize(
    "records",
    [
        [Record(1, T0, None, None), Record(1, T0, None, None)],
        [Record(2, T0, None, None), Record(1, T0, None, None)],
        [Record(-1, T0, None, None)],
    ],
    ids=["repeated", "decreasing", "below-base"],
)
def test_builder_requires_increasing_offsets_from_base(records: list[Record]) -> None:
    with pytest.raises(ValueError, match="does not follow"):
        build_batch(records)


record_strategy = st.tuples(
    st.integers(0, 1000),  # offset gap
    st.integers(-(2**40), 2**40),  # timestamp
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=200),
    st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3),
)


@settings(max_examples=80, deadline=None)
@given(
    spec=st.lists(record_strategy, max_size=30),
    base_offset=st.integers(0, 2**62),
    codec=st.sampled_from(CODECS),
)
def test_records_round_trip_property(spec: list, base_offset: int, codec: Compression) -> None:
    records, offset = [], base_offset - 1
    for gap, timestamp, key, value, headers in spec:
        offset += gap + 1
        records.append(Record(offset, timestamp, key, value, tuple(headers)))
    batch = RecordBatch(build_batch(records, base_offset=base_offset, compression=codec))
    assert batch.validate_crc()
    assert list(iter_records(batch)) == records


def test_iter_records_honours_the_bomb_limit() -> None:
    batch = RecordBatch(build_batch([Record(0, T0, None, b"\0" * 100_000)], compression=Compression.GZIP))
    assert batch.total_size < 1000
    with pytest.raises(DecompressionBombError):
        list(iter_records(batch, max_size=50_000))


ONE_RECORD = bytes([0x10, 0x00, 0x00, 0x00, 0x02]) + b"k" + bytes([0x02]) + b"v" + bytes([0x00])


@pytest.mark.parametrize(
    ("payload", "count", "message"),
    [
        (b"\xff" * 6, 1, "longer than 5 bytes"),
        (bytes([0x1A, 0x00]) + b"\x80" * 10 + b"\x00" * 2 + b"\x01\x01\x00", 1, "longer than 10 bytes"),
        (bytes([0x0A, 0x00, 0x00, 0x00, 0x03, 0x00]), 1, "invalid negative length -2"),
        (bytes([0x0A, 0x00, 0x00, 0x00, 0x10, 0x00]), 1, "runs past the end"),
        (bytes([0x04, 0x00, 0x00]), 1, "runs past the end"),
        (bytes([0x0C, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01]), 1, "negative header count"),
        (bytes([0x14, 0x00, 0x00, 0x00, 0x01, 0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F]), 1, "runs past the end"),
        (bytes([0x10, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01, 0x01]), 1, "header key is null"),
        (bytes([0x12, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x02, 0xFF, 0x01]), 1, "not valid UTF-8"),
        (bytes([0x12]) + ONE_RECORD[1:] + b"\x00", 1, "declares 9 bytes but holds 8"),
        (bytes([0x7F]), 1, "record length -64"),
    ],
    ids=[
        "record-length-varint-6-bytes", "timestamp-varlong-11-bytes", "key-length-minus-2", "key-past-record",
        "record-ends-early", "header-count-minus-1", "header-count-int32-max", "null-header-key",
        "header-key-not-utf8", "record-length-too-long", "negative-record-length",
    ],
)
def test_corrupt_records_raise_typed_errors(payload: bytes, count: int, message: str) -> None:
    """The record decoder names what is wrong (iter_records refuses payloads shorter than the declared
    count of minimal records before decoding, so the decoder is driven directly here)."""
    batch = RecordBatch(batch_with_payload(payload, count))
    assert batch.validate_crc(), "the CRC is right: the corruption is in the record encoding itself"
    with pytest.raises(CorruptRecordError, match=message):
        decode_record(batch.records_payload, 0, 0, T0, None)
    with pytest.raises(CorruptRecordError):
        list(iter_records(batch))


@pytest.mark.parametrize(
    ("payload", "count", "message"),
    [
        (ONE_RECORD, 2, "premature EOF reached .*declares 2 records"),
        (ONE_RECORD * 2, 1, "records still remaining in file"),
        (ONE_RECORD, -1, "Found invalid record count -1"),
        (ONE_RECORD, 2**31 - 1, "premature EOF reached"),
    ],
    ids=["count-too-high", "count-too-low", "count-negative", "count-int32-max"],
)
def test_record_count_must_match_the_records_like_kafka(payload: bytes, count: int, message: str) -> None:
    """Kafka's record iterator: a count the bytes cannot hold, or bytes left after the count, raise
    InvalidRecordException (INVALID_RECORD) with its "Incorrect declared batch size" text."""
    batch = RecordBatch(batch_with_payload(payload, count))
    with pytest.raises(InvalidRecordError, match=message) as info:
        list(iter_records(batch))
    assert info.value.error_name == "INVALID_RECORD"


def test_hand_made_payload_decodes() -> None:
    """The fixture above is a valid record when not mangled, so the errors come from the mangling."""
    records = list(iter_records(RecordBatch(batch_with_payload(ONE_RECORD, 1))))
    assert records == [Record(0, T0, b"k", b"v", ())]


# --- varints -------------------------------------------------------------------------------------------

@given(st.integers(-(2**31), 2**31 - 1))
def test_varint_round_trip_and_matches_kafka_python(value: int) -> None:
    out = bytearray()
    write_varint(out, value)
    theirs = bytearray()
    kafka_python_encode_varint(value, theirs.append)
    assert out == theirs
    assert len(out) <= 5
    assert read_varint(bytes(out) + b"tail", 0) == (value, len(out))


@given(st.integers(-(2**63), 2**63 - 1))
def test_varlong_round_trip(value: int) -> None:
    out = bytearray()
    write_varlong(out, value)
    assert len(out) <= 10
    assert read_varlong(out, 0) == (value, len(out))


@pytest.mark.parametrize(
    ("data", "reader", "message"),
    [
        (b"\x80\x80\x80\x80\x80\x00", read_varint, "longer than 5 bytes"),
        (b"\xff" * 10 + b"\x00", read_varlong, "longer than 10 bytes"),
        (b"\xff\xff\xff\xff\x1f", read_varint, "does not fit in 32 bits"),
        (b"\xff" * 9 + b"\x03", read_varlong, "does not fit in 64 bits"),
        (b"\x80\x80", read_varint, "runs past the end"),
        (b"", read_varlong, "runs past the end"),
    ],
)
def test_bad_varints_are_rejected(
    data: bytes, reader: Callable[[bytes, int], tuple[int, int]], message: str
) -> None:
    with pytest.raises(CorruptRecordError, match=message):
        reader(data, 0)


def test_varint_edges() -> None:
    assert read_varint(b"\xfe\xff\xff\xff\x0f", 0) == (INT32_MAX, 5)
    assert read_varint(b"\xff\xff\xff\xff\x0f", 0) == (-(2**31), 5)
    assert read_varint(b"\x01", 0) == (-1, 1)
    with pytest.raises(ValueError, match="int32"):
        write_varint(bytearray(), 2**31)
    with pytest.raises(ValueError, match="int64"):
        write_varlong(bytearray(), -(2**63) - 1)


def test_nullable_bytes_checks_length_before_slicing() -> None:
    assert read_nullable_bytes(b"\x01", 0) == (None, 1)
    assert read_nullable_bytes(b"\x04ab!", 0) == (b"ab", 3)
    with pytest.raises(CorruptRecordError, match="invalid negative length -2"):
        read_nullable_bytes(b"\x03", 0)
    with pytest.raises(CorruptRecordError, match="runs past the end"):
        read_nullable_bytes(b"\xfe\xff\xff\xff\x0f" + b"x" * 10, 0)  # claims 2 GiB


# --- interoperability with real client builders and readers --------------------------------------------

CLIENT_BUILDERS = {"kafka-python": KafkaPythonBuilder, "aiokafka": AiokafkaBuilder}
CLIENT_READERS = {"kafka-python": KafkaPythonBatch, "aiokafka": AiokafkaBatch}


def client_batch(client: str, codec: Compression, records: list[Record], producer: tuple[int, int, int],
                 transactional: bool) -> bytes:
    producer_id, producer_epoch, base_sequence = producer
    builder = CLIENT_BUILDERS[client](
        magic=2, compression_type=int(codec), is_transactional=int(transactional), producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=1 << 20,
    )
    for record in records:
        builder.append(record.offset, record.timestamp, record.key, record.value, list(record.headers))
    return bytes(builder.build())


@pytest.mark.parametrize("client", sorted(CLIENT_BUILDERS))
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("transactional", [False, True], ids=["idempotent", "transactional"])
def test_we_read_client_built_batches(client: str, codec: Compression, transactional: bool) -> None:
    """Batches from the clients' own builders: header fields, CRC, and every record exactly."""
    records = sample_records(30)
    raw = client_batch(client, codec, records, (4242, 7, 1000), transactional)
    batch = RecordBatch(raw)
    assert batch.compression == codec, "the client skipped compression; make the values more compressible"
    if codec == Compression.SNAPPY:
        assert bytes(batch.records_payload[:8]) == b"\x82SNAPPY\x00", f"{client} is expected to use xerial framing"
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (4242, 7, 1000)
    assert (batch.is_transactional, batch.is_control) == (transactional, False)
    assert (batch.record_count, batch.last_offset_delta, batch.last_sequence) == (30, 29, 1029)
    assert (batch.base_timestamp, batch.max_timestamp) == (records[0].timestamp, max(r.timestamp for r in records))
    assert list(iter_records(batch)) == records


@pytest.mark.parametrize("client", sorted(CLIENT_READERS))
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_clients_read_our_batches(client: str, codec: Compression) -> None:
    records = sample_records(30, base_offset=500)
    raw = bytes(build_batch(
        records, base_offset=500, compression=codec, producer_id=99, producer_epoch=2, base_sequence=5,
        transactional=True, partition_leader_epoch=4,
    ))
    theirs = CLIENT_READERS[client](raw)
    assert theirs.validate_crc()
    assert (theirs.base_offset, theirs.magic, theirs.compression_type) == (500, 2, codec)
    assert (theirs.producer_id, theirs.producer_epoch, theirs.base_sequence) == (99, 2, 5)
    assert theirs.is_transactional and not theirs.is_control_batch
    assert theirs.first_timestamp == records[0].timestamp
    decoded = [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in theirs]
    assert decoded == records


def test_kafka_python_reads_our_control_batch_as_a_commit_marker() -> None:
    """Control record key: int16 version 0, int16 type (1 = commit); value: int16 version, int32 epoch."""
    marker = Record(77, T0, struct.pack(">hh", 0, 1), struct.pack(">hi", 0, 3))
    raw = bytes(build_batch([marker], base_offset=77, producer_id=5, producer_epoch=1, transactional=True,
                            control=True))
    theirs = KafkaPythonBatch(raw)
    assert theirs.is_control_batch and theirs.is_transactional
    (control,) = list(theirs)
    assert control.commit and control.offset == 77
    assert AiokafkaBatch(raw).is_control_batch


@pytest.mark.parametrize(
    "memory_records", [KafkaPythonMemoryRecords, AiokafkaMemoryRecords], ids=["kafka-python", "aiokafka"]
)
def test_clients_walk_our_concatenated_batches(memory_records: type) -> None:
    buf, _ = concatenated()
    reader = memory_records(buf)
    offsets = []
    while reader.has_next():
        batch = reader.next_batch()
        assert batch.validate_crc()
        offsets.extend(r.offset for r in batch)
    assert offsets == [0, 1, 2, 3, 4, 5, 6, 9, 10]


def test_we_walk_concatenated_client_batches() -> None:
    """A produce payload or segment holding batches from both clients, with different codecs."""
    parts = [
        client_batch("kafka-python", Compression.SNAPPY, sample_records(5), (-1, -1, -1), False),
        client_batch("aiokafka", Compression.ZSTD, sample_records(5), (-1, -1, -1), False),
        client_batch("kafka-python", Compression.LZ4, sample_records(5), (-1, -1, -1), False),
    ]
    buf = bytearray(b"".join(parts))
    position = 0
    for i, (pos, batch) in enumerate(iter_batches(buf)):
        assert pos == position and batch.validate_crc()
        batch.set_base_offset(i * 5)
        position += batch.total_size
    walked = [(b.base_offset, b.validate_crc(), [r.offset for r in iter_records(b)]) for _, b in iter_batches(buf)]
    assert walked == [(0, True, [0, 1, 2, 3, 4]), (5, True, [5, 6, 7, 8, 9]), (10, True, [10, 11, 12, 13, 14])]
