"""``__consumer_offsets`` formats (`broker.groups.persistence`): the group-to-partition hash and Kafka's
exact key/value bytes, written here field by field with ``struct`` from Kafka's record schemas (not with
the codec under test), plus decoding of the older value versions Kafka brokers have written.

The hash values were computed with a JVM (``String.hashCode()``, ``Utils.abs(h) % 50``).
"""

from __future__ import annotations

import struct

import pytest

from broker.groups.offsets import OffsetAndMetadata, java_length, metadata_too_large
from broker.groups.persistence import (
    GroupMetadataSnapshot,
    GroupRecord,
    MemberMetadataSnapshot,
    OffsetRecord,
    RecordFormatError,
    build_records_batch,
    decode_record,
    group_key,
    group_value,
    java_string_hash,
    offset_key,
    offset_value,
    partition_for,
)
from protocol.records import RecordBatch, iter_records


def s16(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def nullable_s16(text: str | None) -> bytes:
    return struct.pack(">h", -1) if text is None else s16(text)


def b32(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


# (string, Java hashCode, Utils.abs(hashCode) % 50), computed on a JVM.
JAVA_HASHES = [
    ("", 0, 0),
    ("a", 97, 47),
    ("group", 98629247, 47),
    ("polygenelubricants", -2147483648, 0),  # Integer.MIN_VALUE: Utils.abs gives 0
    ("my-consumer-group", 1513705513, 13),
    ("console-consumer-12345", 158455506, 6),
    ("groupé", -1237460406, 6),
    ("\U0001F600x", 54959989, 39),  # a surrogate pair: two UTF-16 code units
    ("test-group-Ωλ", -558995941, 41),
]


@pytest.mark.parametrize(("group", "hash_code", "partition"), JAVA_HASHES)
def test_group_partition_is_kafkas_abs_java_hashcode_modulo_partitions(group: str, hash_code: int,
                                                                       partition: int) -> None:
    """partition = Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions, as a JVM computes it."""
    assert java_string_hash(group) == hash_code
    assert partition_for(group, 50) == partition


def test_offset_commit_key_v1_bytes() -> None:
    """OffsetCommitKey v1: int16 version 1, group, topic (int16-length strings), int32 partition."""
    assert offset_key("grp", "topic", 3) == b"\x00\x01" + s16("grp") + s16("topic") + struct.pack(">i", 3)


def test_offset_commit_value_v3_bytes() -> None:
    """OffsetCommitValue v3 (what Kafka 4 writes): offset int64, leader epoch int32, metadata, commit
    timestamp int64."""
    om = OffsetAndMetadata(offset=42, leader_epoch=5, metadata="meta", commit_timestamp=1_700_000_000_123)
    assert offset_value(om) == b"\x00\x03" + struct.pack(">qi", 42, 5) + s16("meta") + \
        struct.pack(">q", 1_700_000_000_123)


def test_offset_commit_value_with_expiry_is_v1() -> None:
    """A commit carrying a retention time (OffsetCommit v2-v4) is written as v1 with expire_timestamp
    (no leader epoch), as Kafka does."""
    om = OffsetAndMetadata(offset=7, leader_epoch=9, metadata="", commit_timestamp=1000, expire_timestamp=5000)
    assert offset_value(om) == b"\x00\x01" + struct.pack(">q", 7) + s16("") + struct.pack(">qq", 1000, 5000)
    decoded = decode_record(offset_key("g", "t", 0), offset_value(om))
    assert decoded == OffsetRecord("g", "t", 0, OffsetAndMetadata(7, -1, "", 1000, 5000))


def test_group_metadata_key_v2_and_value_v3_bytes() -> None:
    """GroupMetadataKey v2 (the group id) and GroupMetadataValue v3: protocol type, generation, protocol,
    leader, current state timestamp, then each member (id, instance id, client id, host, rebalance and
    session timeouts, subscription, assignment)."""
    snapshot = GroupMetadataSnapshot(
        protocol_type="consumer", generation=3, protocol="range", leader="m1", current_state_timestamp=77,
        members=(MemberMetadataSnapshot("m1", "inst", "client", "/10.0.0.1", 300000, 45000, b"SUB", b"ASG"),
                 MemberMetadataSnapshot("m2", None, "c2", "/10.0.0.2", 1, 2, b"", b"")))
    assert group_key("grp") == b"\x00\x02" + s16("grp")
    expected = (b"\x00\x03" + s16("consumer") + struct.pack(">i", 3) + nullable_s16("range") + nullable_s16("m1")
                + struct.pack(">q", 77) + struct.pack(">i", 2)
                + s16("m1") + nullable_s16("inst") + s16("client") + s16("/10.0.0.1") + struct.pack(">ii", 300000, 45000)
                + b32(b"SUB") + b32(b"ASG")
                + s16("m2") + nullable_s16(None) + s16("c2") + s16("/10.0.0.2") + struct.pack(">ii", 1, 2)
                + b32(b"") + b32(b""))
    assert group_value(snapshot) == expected
    assert decode_record(group_key("grp"), expected) == GroupRecord("grp", snapshot)


def test_empty_group_value_has_null_protocol_and_leader() -> None:
    """A group that went Empty is written with no members and null protocol and leader."""
    snapshot = GroupMetadataSnapshot("consumer", 5, None, None, 10)
    assert group_value(snapshot) == (b"\x00\x03" + s16("consumer") + struct.pack(">i", 5) + b"\xff\xff\xff\xff"
                                     + struct.pack(">qi", 10, 0))


def test_tombstones_decode_as_deletions() -> None:
    """A key with a null value deletes an offset or a group."""
    assert decode_record(offset_key("g", "t", 1), None) == OffsetRecord("g", "t", 1, None)
    assert decode_record(group_key("g"), None) == GroupRecord("g", None)


def test_older_value_versions_decode() -> None:
    """Values written by older brokers: OffsetCommitValue v0 (no epoch, no expiry), GroupMetadataValue v0
    (no rebalance timeout, state timestamp or instance ids)."""
    v0 = b"\x00\x00" + struct.pack(">q", 11) + s16("m") + struct.pack(">q", 99)
    assert decode_record(offset_key("g", "t", 0), v0).value == OffsetAndMetadata(11, -1, "m", 99)
    key_v0 = b"\x00\x00" + s16("g") + s16("t") + struct.pack(">i", 2)
    assert decode_record(key_v0, None) == OffsetRecord("g", "t", 2, None)
    group_v0 = (b"\x00\x00" + s16("consumer") + struct.pack(">i", 1) + nullable_s16("range") + nullable_s16("m")
                + struct.pack(">i", 1) + s16("m") + s16("c") + s16("/h") + struct.pack(">i", 10000)
                + b32(b"S") + b32(b"A"))
    record = decode_record(group_key("g"), group_v0)
    assert record.value.current_state_timestamp == -1
    [member] = record.value.members
    assert (member.rebalance_timeout_ms, member.session_timeout_ms, member.group_instance_id) == (-1, 10000, None)


def test_records_of_newer_group_types_are_skipped_and_garbage_is_an_error() -> None:
    """Key versions other than 0-2 (KIP-848 and share group records) are not ours; malformed bytes raise
    RecordFormatError."""
    assert decode_record(b"\x00\x03" + s16("g"), b"\x00\x00") is None
    with pytest.raises(RecordFormatError):
        decode_record(b"\x00", None)
    with pytest.raises(RecordFormatError):
        decode_record(b"\x00\x01" + s16("g"), None)
    with pytest.raises(RecordFormatError):
        decode_record(None, None)


def test_a_write_is_one_batch_with_the_broker_time() -> None:
    """Each write is one v2 batch, no producer id, every record timestamped with the write time; a
    tombstone has a null value."""
    batch = build_records_batch([(offset_key("g", "t", 0), b"v"), (group_key("g"), None)], 1234, leader_epoch=2)
    view = RecordBatch(batch)
    assert (view.producer_id, view.record_count, view.partition_leader_epoch, view.compression) == (-1, 2, 2, 0)
    records = list(iter_records(view))
    assert [(r.timestamp, r.key, r.value) for r in records] == [
        (1234, offset_key("g", "t", 0), b"v"), (1234, group_key("g"), None)]


def test_metadata_length_counts_utf16_code_units() -> None:
    """offset.metadata.max.bytes compares Java's String.length(): UTF-16 code units."""
    assert java_length("ab\U0001F600") == 4
    assert not metadata_too_large("x" * 4096, 4096)
    assert metadata_too_large("x" * 4097, 4096)
    assert metadata_too_large("\U0001F600" * 2049, 4096)
    assert not metadata_too_large(None, 0)
