"""Committed offsets: what one OffsetCommit stores per partition, and the rules that expire it.

Kafka behaviours (``OffsetAndMetadata``, ``OffsetMetadataManager``, ``GroupMetadata.removeExpiredOffsets``):
- a commit keeps the offset, the leader epoch (-1 when the client sent none), the metadata string (null
  stored as ""), the commit time (v1 requests may give their own) and, for v1-v4 requests with a
  ``retention_time_ms``, an explicit expiry time;
- metadata longer than ``offset.metadata.max.bytes`` (Java ``String.length()``, so UTF-16 code units)
  is refused per partition with OFFSET_METADATA_TOO_LARGE;
- an offset expires when its explicit expiry time has passed, else when ``offsets.retention.minutes``
  have passed since its base time (the time the group became Empty, or the commit time; the caller picks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]

NO_METADATA = ""
NO_LEADER_EPOCH = -1
INVALID_OFFSET = -1


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """One committed offset. ``position`` is the ``__consumer_offsets`` log offset of its record: of two
    commits of one partition, the one later in the log wins (the log is the order of truth)."""

    offset: int
    leader_epoch: int = NO_LEADER_EPOCH
    metadata: str = NO_METADATA
    commit_timestamp: int = 0
    expire_timestamp: int | None = None
    position: int = field(default=-1, compare=False)


def java_length(text: str) -> int:
    """``String.length()`` in Java: UTF-16 code units (a character outside the BMP counts twice)."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def metadata_too_large(metadata: str | None, max_bytes: int) -> bool:
    return metadata is not None and java_length(metadata) > max_bytes


def is_expired(offset: OffsetAndMetadata, now_ms: int, retention_ms: int, base_timestamp: int) -> bool:
    """Kafka's ``isOffsetExpired``: the explicit expiry time of old commits, else retention since ``base``."""
    if offset.expire_timestamp is not None:
        return now_ms >= offset.expire_timestamp
    return now_ms - base_timestamp >= retention_ms


def expired_partitions(offsets: Mapping[TopicPartition, OffsetAndMetadata], now_ms: int, retention_ms: int,
                       base: Callable[[OffsetAndMetadata], int],
                       keep_topics: Iterable[str] = ()) -> list[TopicPartition]:
    """The partitions whose offsets have expired, skipping the topics in ``keep_topics`` (those a Stable
    consumer group is subscribed to)."""
    keep = set(keep_topics)
    return [tp for tp, om in offsets.items()
            if tp[0] not in keep and is_expired(om, now_ms, retention_ms, base(om))]
