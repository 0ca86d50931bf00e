"""Control records: the COMMIT and ABORT markers that end a transaction in each of its partitions.

Kafka's layout (``ControlRecordType``, ``EndTransactionMarker``): a control batch has the transactional
and control attribute bits, the producer id and epoch of the transaction, base sequence -1, no
compression, and one record whose
- key is ``version int16 (0)`` then ``type int16`` (0 ABORT, 1 COMMIT; other types, such as the
  KRaft-only ones from 2 up, are not transaction markers);
- value is ``version int16 (0)`` then ``coordinator_epoch int32``.
Readers skip unknown trailing bytes of both, as Kafka's do, so a newer key or value version still parses.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from protocol.records.batch import RecordBatch
from protocol.records.builder import build_batch
from protocol.records.record import Record, iter_records

CONTROL_KEY = struct.Struct(">hh")
MARKER_VALUE = struct.Struct(">hi")
CONTROL_KEY_VERSION = 0
MARKER_VALUE_VERSION = 0


class ControlType(IntEnum):
    ABORT = 0
    COMMIT = 1


def build_marker(producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp: int,
                 partition_leader_epoch: int = -1) -> bytearray:
    """One control batch holding a transaction's COMMIT or ABORT marker (offsets relative; the log
    assigns them)."""
    kind = ControlType.COMMIT if commit else ControlType.ABORT
    key = CONTROL_KEY.pack(CONTROL_KEY_VERSION, kind)
    value = MARKER_VALUE.pack(MARKER_VALUE_VERSION, coordinator_epoch)
    return build_batch([Record(0, timestamp, key, value)], producer_id=producer_id, producer_epoch=producer_epoch,
                       transactional=True, control=True, partition_leader_epoch=partition_leader_epoch)


def control_type(batch: RecordBatch) -> int | None:
    """The control type of a control batch (compare with `ControlType`), or None when the batch holds no
    readable control record (not a control batch, empty, or a key shorter than 4 bytes)."""
    if not batch.is_control:
        return None
    for record in iter_records(batch):
        key = record.key
        if key is None or len(key) < CONTROL_KEY.size:
            return None
        return CONTROL_KEY.unpack_from(key, 0)[1]
    return None


def marker_coordinator_epoch(batch: RecordBatch) -> int | None:
    """The coordinator epoch a transaction marker carries, or None when it has no readable value."""
    for record in iter_records(batch):
        value = record.value
        if value is None or len(value) < MARKER_VALUE.size:
            return None
        return MARKER_VALUE.unpack_from(value, 0)[1]
    return None
