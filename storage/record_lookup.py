"""Timestamp lookups inside one stored batch, for every engine, surviving batches that do not decode.

ListOffsets by timestamp is the one read path that decodes stored records. A batch stored by an older
Moldau that did not yet check compressed payloads (or damaged on disk under a correct CRC) may not
decode; the lookup then answers from the batch header instead of failing the request, and logs one
warning per batch (a bounded memory of which batches were reported keeps a hot partition from flooding
the log).
"""

from __future__ import annotations

import structlog

from protocol.records import RecordBatch, RecordBatchError, iter_records
from storage.interface import TimestampOffset

log = structlog.get_logger()

# How many undecodable batches are remembered as already reported; past it the memory starts afresh.
REPORTED_MAX = 1024
_reported: set[tuple[str, int]] = set()


def first_at_or_after(batch: RecordBatch, start: int, target: int, where: str) -> TimestampOffset | None:
    """The first record at offset >= ``start`` whose timestamp is >= ``target``, or None.

    Callers only ask batches whose header max timestamp is >= ``target``; for one that does not decode
    the answer is its first offset (from ``start``) with the header's max timestamp, so a consumer
    seeking there misses nothing at or after ``target``.
    """
    try:
        for record in iter_records(batch):
            if record.offset >= start and record.timestamp >= target:
                return TimestampOffset(record.offset, record.timestamp)
    except RecordBatchError as exc:
        _report(batch, where, exc)
        return TimestampOffset(max(start, batch.base_offset), batch.max_timestamp)
    return None


def offset_of_timestamp(batch: RecordBatch, start: int, target: int, where: str) -> TimestampOffset:
    """The first record at offset >= ``start`` carrying ``target`` (the batch's max timestamp); the batch's
    last offset when none does or the batch does not decode."""
    try:
        for record in iter_records(batch):
            if record.timestamp == target and record.offset >= start:
                return TimestampOffset(record.offset, record.timestamp)
    except RecordBatchError as exc:
        _report(batch, where, exc)
    return TimestampOffset(batch.last_offset, target)


def _report(batch: RecordBatch, where: str, exc: RecordBatchError) -> None:
    key = (where, batch.base_offset)
    if key in _reported:
        return
    if len(_reported) >= REPORTED_MAX:
        _reported.clear()
    _reported.add(key)
    log.warning("storage.undecodable_batch", log=where, base_offset=batch.base_offset,
                last_offset=batch.last_offset, error=str(exc),
                hint="timestamp lookups use the batch header for it; consumers cannot decode it either: "
                     "delete it with DeleteRecords past its last offset if it is not needed")
