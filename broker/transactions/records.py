"""``__transaction_state``: which partition holds a transactional id, and Kafka's key/value record formats.

Kafka behaviours (``TransactionLog``, ``TransactionStateManager.partitionFor``):
- a transactional id lives in partition ``Utils.abs(transactionalId.hashCode()) % partitions`` (the same
  hash as groups in ``__consumer_offsets``);
- key ``TransactionLogKey`` v0 (transactional id); value ``TransactionLogValue`` v0 (producer id, epoch,
  timeout, status, partitions, last update and start timestamps; Kafka writes v0 unless the transaction
  uses transaction.version 2, which this broker does not offer); a removed (expired) id is the key with a
  null value;
- the partitions of a transaction are grouped by topic, and null for the Empty state (as Kafka writes
  them; the Complete states have none left);
- every write is one batch (magic 2, no producer id, no compression), timestamped with the broker's time.

Pure functions: bytes in, bytes out. The coordinator appends and reads the partition logs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from broker.groups.persistence import partition_for as _hash_partition
from protocol import codec, messages

TRANSACTION_LOG_KEY_VERSION = 0
TRANSACTION_LOG_VALUE_VERSION = 0
EMPTY_STATUS = 0  # TransactionState.EMPTY's id, whose partitions Kafka writes as null

TopicPartition = tuple[str, int]


class TxnRecordFormatError(ValueError):
    """A ``__transaction_state`` record that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class TxnLogValue:
    """One transaction's state as ``TransactionLogValue`` stores it."""

    producer_id: int
    producer_epoch: int
    timeout_ms: int
    status: int
    partitions: frozenset[TopicPartition]
    last_update_ms: int
    start_ms: int
    last_producer_id: int = -1


@dataclass(frozen=True, slots=True)
class TxnLogRecord:
    """A decoded record; ``value`` None is a tombstone (the transactional id was removed)."""

    transactional_id: str
    value: TxnLogValue | None


def partition_for(transactional_id: str, partitions: int) -> int:
    """The ``__transaction_state`` partition of a transactional id."""
    return _hash_partition(transactional_id, partitions)


def txn_key(transactional_id: str) -> bytes:
    return codec.encode_versioned("TransactionLogKey", TRANSACTION_LOG_KEY_VERSION,
                                  messages.TransactionLogKey(transactional_id=transactional_id))


def txn_value(value: TxnLogValue) -> bytes:
    schema = messages.TransactionLogValue
    return codec.encode_versioned("TransactionLogValue", TRANSACTION_LOG_VALUE_VERSION, schema(
        producer_id=value.producer_id, producer_epoch=value.producer_epoch, transaction_timeout_ms=value.timeout_ms,
        transaction_status=value.status,
        transaction_partitions=None if value.status == EMPTY_STATUS else [
            schema.PartitionsSchema(topic=topic, partition_ids=ids) for topic, ids in group_by_topic(value.partitions)],
        transaction_last_update_timestamp_ms=value.last_update_ms,
        transaction_start_timestamp_ms=value.start_ms))


def group_by_topic(partitions: Iterable[TopicPartition]) -> list[tuple[str, list[int]]]:
    """Partitions grouped by topic, both sorted (the order Kafka's tools print them in)."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, index in partitions:
        by_topic[topic].append(index)
    return [(topic, sorted(by_topic[topic])) for topic in sorted(by_topic)]


def decode_txn_record(key: bytes | memoryview | None, value: bytes | memoryview | None) -> TxnLogRecord:
    if key is None or len(key) < 2:
        raise TxnRecordFormatError("record without a versioned key")
    try:
        version, k = codec.decode_versioned("TransactionLogKey", key)
        if version != TRANSACTION_LOG_KEY_VERSION:
            raise TxnRecordFormatError(f"unknown TransactionLogKey version {version}")
        if value is None:
            return TxnLogRecord(k.transactional_id, None)
        _, v = codec.decode_versioned("TransactionLogValue", value)
    except codec.DecodeError as exc:
        raise TxnRecordFormatError(str(exc)) from None
    partitions = frozenset((p.topic, index) for p in (v.transaction_partitions or ()) for index in p.partition_ids)
    return TxnLogRecord(k.transactional_id, TxnLogValue(
        producer_id=v.producer_id, producer_epoch=v.producer_epoch, timeout_ms=v.transaction_timeout_ms,
        status=v.transaction_status, partitions=partitions, last_update_ms=v.transaction_last_update_timestamp_ms,
        start_ms=v.transaction_start_timestamp_ms,
        last_producer_id=getattr(v, "previous_producer_id", -1)))
