"""Which segments retention deletes: Kafka's three rules, applied to a prefix of the log.

`FileLog.apply_retention(now_ms)` (the broker calls it every ``log.retention.check.interval.ms``)
gathers a `SegmentInfo` per segment, the active one last, and deletes the prefix `select_deletable`
returns, then moves the log start offset to the first remaining segment's base offset (persisted
before the files go). In order, as Kafka's `UnifiedLog.deleteOldSegments` applies them:

1. ``retention.ms`` (when cleanup.policy includes delete, and >= 0): a segment whose largest record
   timestamp (the file's modification time if no batch has one) is more than retention.ms before
   now.
2. ``retention.bytes`` (same conditions): the oldest segments while the log, active segment
   included, would still be at least retention.bytes without them.
3. The log start offset (always, whatever the policy): closed segments wholly below it, left by
   DeleteRecords.

The first two rules may take the active segment too when it holds data (an empty one never goes):
as Kafka does, the log then first rolls a new, empty active segment at the log end offset, so a
topic whose data is all past retention empties (log start offset = log end offset) within one check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
LOG_START_OFFSET = "log_start_offset"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_offset: int
    next_offset: int
    size: int
    largest_timestamp: int


@dataclass(frozen=True, slots=True)
class DeletedSegment:
    """One segment retention (or DeleteRecords) removed, and the rule that removed it."""

    base_offset: int
    next_offset: int
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class RetentionResult:
    deleted: tuple[DeletedSegment, ...]
    log_start_offset: int

    @property
    def bytes_deleted(self) -> int:
        return sum(d.size for d in self.deleted)


def select_deletable(segments: Sequence[SegmentInfo], *, total_size: int, now_ms: int, retention_ms: int,
                     retention_bytes: int, log_start_offset: int) -> list[str]:
    """The reason for each segment of the prefix of `segments` (the active one last) to delete.

    Pass retention_ms / retention_bytes as -1 to disable a rule (cleanup.policy=compact does). The
    active segment goes only by the first two rules, and only when it holds data (Kafka's
    `deletableSegments`: never the last segment when it is empty; the log start offset rule needs a
    next segment).
    """
    last = len(segments) - 1

    def may_go(i: int) -> bool:
        return i < last or (i == last and segments[i].size > 0)

    reasons: list[str] = []
    i = 0
    if retention_ms >= 0:
        while may_go(i) and now_ms - segments[i].largest_timestamp > retention_ms:
            reasons.append(RETENTION_MS)
            i += 1
    if retention_bytes >= 0:
        excess = total_size - sum(info.size for info in segments[:i]) - retention_bytes
        while may_go(i) and excess - segments[i].size >= 0:
            excess -= segments[i].size
            reasons.append(RETENTION_BYTES)
            i += 1
    while i < last and segments[i].next_offset <= log_start_offset:
        reasons.append(LOG_START_OFFSET)
        i += 1
    return reasons
