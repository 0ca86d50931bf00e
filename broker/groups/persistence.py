"""``__consumer_offsets``: which partition holds a group, and Kafka's own key/value record formats.

Kafka behaviours (``GroupMetadataManager`` / ``GroupCoordinatorRecordHelpers``, ``Utils.abs``):
- a group lives in partition ``Utils.abs(groupId.hashCode()) % partitions``, with Java's
  ``String.hashCode`` over UTF-16 code units and ``Utils.abs(Integer.MIN_VALUE) == 0``;
- offsets: key ``OffsetCommitKey`` v1 (group, topic, partition), value ``OffsetCommitValue`` v3 (offset,
  leader epoch, metadata, commit timestamp), or v1 (with ``expire_timestamp``) when the commit carried a
  retention time, as Kafka 4 writes them; a deleted or expired offset is the key with a null value;
- groups: key ``GroupMetadataKey`` v2, value ``GroupMetadataValue`` v3 (protocol type, generation,
  protocol, leader, state timestamp, members with subscription and assignment); a deleted group is the key
  with a null value;
- on load, key versions 0-1 are offsets and 2 is group metadata; other key versions (the KIP-848 and share
  group records of newer brokers) are skipped;
- every write is one batch (magic 2, no compression), timestamped with the broker's time; transactional
  offset commits are a transactional batch of their producer, published by its COMMIT marker.

Pure functions: bytes in, bytes out. The coordinator appends and reads the partition logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.groups.offsets import NO_LEADER_EPOCH, OffsetAndMetadata
from protocol import codec, messages
from protocol.primitives import INT32_MIN
from protocol.records import Record, build_batch

OFFSET_COMMIT_KEY_VERSION = 1
OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_METADATA_KEY_VERSION = 2
GROUP_METADATA_VALUE_VERSION = 3



def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()``: ``s[0]*31^(n-1) + ... + s[n-1]`` over UTF-16 code units, in int32."""
    data = text.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of a group: ``Utils.abs(groupId.hashCode()) % partitions``."""
    h = java_string_hash(group_id)
    return (0 if h == INT32_MIN else abs(h)) % partitions


@dataclass(frozen=True, slots=True)
class MemberMetadataSnapshot:
    """One member as ``GroupMetadataValue`` stores it (subscription: the selected protocol's metadata)."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataSnapshot:
    """A group as ``GroupMetadataValue`` stores it; ``protocol_type`` "" means none (a simple group)."""

    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: tuple[MemberMetadataSnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    """A decoded offset record; ``value`` None is a tombstone."""

    group: str
    topic: str
    partition: int
    value: OffsetAndMetadata | None


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A decoded group metadata record; ``value`` None is a tombstone."""

    group: str
    value: GroupMetadataSnapshot | None


# ---------------------------------------------------------------- encoding

def offset_key(group: str, topic: str, partition: int) -> bytes:
    return codec.encode_versioned("OffsetCommitKey", OFFSET_COMMIT_KEY_VERSION,
                                  messages.OffsetCommitKey(group=group, topic=topic, partition=partition))


def offset_value(om: OffsetAndMetadata) -> bytes:
    version = (OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY if om.expire_timestamp is not None
               else OFFSET_COMMIT_VALUE_VERSION)
    return codec.encode_versioned("OffsetCommitValue", version, messages.OffsetCommitValue(
        offset=om.offset, leader_epoch=om.leader_epoch, metadata=om.metadata,
        commit_timestamp=om.commit_timestamp,
        expire_timestamp=om.expire_timestamp if om.expire_timestamp is not None else -1))


def group_key(group: str) -> bytes:
    return codec.encode_versioned("GroupMetadataKey", GROUP_METADATA_KEY_VERSION,
                                  messages.GroupMetadataKey(group=group))


def group_value(snapshot: GroupMetadataSnapshot) -> bytes:
    value = messages.GroupMetadataValue
    member = value.MemberMetadata
    return codec.encode_versioned("GroupMetadataValue", GROUP_METADATA_VALUE_VERSION, value(
        protocol_type=snapshot.protocol_type, generation=snapshot.generation, protocol=snapshot.protocol,
        leader=snapshot.leader, current_state_timestamp=snapshot.current_state_timestamp,
        members=[member(member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
                        client_host=m.client_host, rebalance_timeout=m.rebalance_timeout_ms,
                        session_timeout=m.session_timeout_ms, subscription=m.subscription,
                        assignment=m.assignment) for m in snapshot.members]))


def build_records_batch(records: Sequence[tuple[bytes, bytes | None]], timestamp: int,
                        leader_epoch: int = -1, *, producer_id: int = -1, producer_epoch: int = -1) -> bytearray:
    """One v2 batch holding ``(key, value)`` records in order (offsets relative; the log assigns them).
    With a producer id it is a transactional batch of that producer (a TxnOffsetCommit's offsets)."""
    return build_batch([Record(i, timestamp, key, value) for i, (key, value) in enumerate(records)],
                       partition_leader_epoch=leader_epoch, producer_id=producer_id, producer_epoch=producer_epoch,
                       transactional=producer_id >= 0)


# ---------------------------------------------------------------- decoding

class RecordFormatError(ValueError):
    """A ``__consumer_offsets`` record that cannot be decoded."""


def _version(data: bytes | memoryview) -> int:
    if len(data) < 2:
        raise RecordFormatError(f"record key of {len(data)} bytes has no version")
    return int.from_bytes(bytes(data[:2]), "big", signed=True)


def decode_record(key: bytes | memoryview | None, value: bytes | memoryview | None,
                  position: int = -1) -> OffsetRecord | GroupRecord | None:
    """Decode one record; None for key versions this broker does not use (newer group types)."""
    if key is None:
        raise RecordFormatError("record without a key")
    version = _version(key)
    try:
        if version in (0, 1):
            _, k = codec.decode_versioned("OffsetCommitKey", key)
            if value is None:
                return OffsetRecord(k.group, k.topic, k.partition, None)
            v_version, v = codec.decode_versioned("OffsetCommitValue", value)
            expire = v.expire_timestamp if v_version == 1 and v.expire_timestamp != -1 else None
            return OffsetRecord(k.group, k.topic, k.partition, OffsetAndMetadata(
                offset=v.offset, leader_epoch=v.leader_epoch if v_version >= 3 else NO_LEADER_EPOCH,
                metadata=v.metadata, commit_timestamp=v.commit_timestamp, expire_timestamp=expire,
                position=position))
        if version == GROUP_METADATA_KEY_VERSION:
            _, k = codec.decode_versioned("GroupMetadataKey", key)
            if value is None:
                return GroupRecord(k.group, None)
            _, v = codec.decode_versioned("GroupMetadataValue", value)
            members = tuple(MemberMetadataSnapshot(
                member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
                client_host=m.client_host, rebalance_timeout_ms=m.rebalance_timeout,
                session_timeout_ms=m.session_timeout, subscription=bytes(m.subscription),
                assignment=bytes(m.assignment)) for m in v.members)
            return GroupRecord(k.group, GroupMetadataSnapshot(
                protocol_type=v.protocol_type, generation=v.generation, protocol=v.protocol, leader=v.leader,
                current_state_timestamp=v.current_state_timestamp, members=members))
    except codec.DecodeError as exc:
        raise RecordFormatError(str(exc)) from None
    return None
