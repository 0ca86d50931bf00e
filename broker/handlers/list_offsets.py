"""ListOffsets (key 2), versions 0-10: offsets by timestamp and the special positions of a partition.

Kafka behaviours implemented (KafkaApis.handleListOffsetRequest, ReplicaManager.fetchOffset,
Partition.fetchOffsetForTimestamp, UnifiedLog.fetchOffsetByTimestamp):
- ``-1`` latest: the high watermark for consumers (replica id -1) reading uncommitted, the last stable
  offset for read_committed (v2+; below the first open transaction), the log end offset
  for other replica ids; timestamp -1; leader epoch = the partition's current epoch.
- ``-2`` earliest and ``-4`` earliest local (v8+; no tiered storage, so the same): the log start offset.
- ``-3`` max timestamp (v7+): the first offset holding the largest timestamp; an empty log answers
  offset -1, timestamp -1.
- ``-5`` latest tiered (v9+): tiered storage is off, so offset -1, timestamp -1, leader epoch -1, as Kafka
  answers with ``remote.log.storage.system.enable=false``.
- Any other timestamp: the first offset whose record timestamp is >= it, found only below the last
  fetchable offset; none -> offset -1, timestamp -1, leader epoch -1.
- v4+: ``current_leader_epoch`` newer than the partition's -> UNKNOWN_LEADER_EPOCH, older ->
  FENCED_LEADER_EPOCH (-1 = not given); answers carry the leader epoch of the returned offset (every
  offset of a partition was written in its current epoch on this single node).
- v1+: a partition named twice in one request -> INVALID_REQUEST for each mention.
- v0 (``max_num_offsets``, ``old_style_offsets``): Kafka's legacy segment-boundary answer, with the whole
  log as one segment whose "last modified" time is its largest record timestamp: latest -> [log end,
  log start] (log end alone for an empty log), earliest -> [log start], a timestamp -> [log end, log
  start] if it is at or after now, [log start] if at or after the segment's time, else []; at most
  ``max_num_offsets`` of them, descending.
- Unknown topic or partition -> UNKNOWN_TOPIC_OR_PARTITION with offset and timestamp -1; a partition
  a fault rule made offline or gave a failed disk -> NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR.

Left out: OFFSET_NOT_AVAILABLE (a new leader's lagging high watermark cannot happen on one node);
``timeout_ms`` (v10, only used for remote storage lookups).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from broker.handlers import READ_COMMITTED, RequestContext
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError

log = structlog.get_logger()

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4
LATEST_TIERED_TIMESTAMP = -5
CONSUMER_REPLICA_ID = -1
NO_EPOCH = -1
FIRST_ISOLATION_VERSION = 2

_RESP = messages.ListOffsetsResponse
_PARTITION = _RESP.ListOffsetsPartitionResponse


def check_leader_epoch(requested: int, current: int, what: str) -> tuple[ErrorCode, str] | None:
    """Kafka's leader epoch fencing (Partition.localLogWithEpochOrThrow); -1 means "not given"."""
    if requested == NO_EPOCH or requested == current:
        return None
    if requested > current:
        return (ErrorCode.UNKNOWN_LEADER_EPOCH,
                f"{what}: the requested current leader epoch {requested} is newer than the partition's {current}")
    return (ErrorCode.FENCED_LEADER_EPOCH,
            (f"{what}: the requested current leader epoch {requested} is older than the partition's "
             f"{current}; refresh metadata"))


def _error(index: int, code: ErrorCode) -> Any:
    return _PARTITION(partition_index=index, error_code=int(code), old_style_offsets=[], timestamp=-1, offset=-1,
                      leader_epoch=NO_EPOCH)


async def handle_list_offsets(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    seen: set[tuple[str, int]] = set()
    duplicates: set[tuple[str, int]] = set()
    for topic in body.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            (duplicates if key in seen else seen).add(key)

    topics = []
    for topic in body.topics:
        partitions = []
        for p in topic.partitions:
            if version >= 1 and (topic.name, p.partition_index) in duplicates:
                ctx.log_rejected("list_offsets.rejected", topic=topic.name, partition=p.partition_index,
                         error="INVALID_REQUEST", reason="partition named more than once in the request")
                partitions.append(_error(p.partition_index, ErrorCode.INVALID_REQUEST))
                continue
            partitions.append(await _list_partition(ctx, body, topic.name, p, version))
        topics.append(_RESP.ListOffsetsTopicResponse(name=topic.name, partitions=partitions))
    return _RESP(throttle_time_ms=0, topics=topics)


async def _list_partition(ctx: RequestContext, body: Any, name: str, p: Any, version: int) -> Any:
    index = p.partition_index
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
        return _error(index, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    partition = ctx.broker.cluster.partition(name, index)
    if partition is None:
        log.debug("list_offsets.rejected", topic=name, partition=index, error="UNKNOWN_TOPIC_OR_PARTITION")
        return _error(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    fault = ctx.partition_fault(name, index)
    if fault is not None:
        ctx.log_rejected("list_offsets.rejected", topic=name, partition=index, error=fault.name,
                         reason="fault injection")
        return _error(index, fault)
    # The leader epoch field exists from v4; below it the field must keep its default.
    epoch = partition.leader_epoch if version >= 4 else NO_EPOCH
    if version >= 4:
        fenced = check_leader_epoch(p.current_leader_epoch, epoch, f"{name}-{index}")
        if fenced is not None:
            ctx.log_rejected("list_offsets.rejected", topic=name, partition=index, error=fenced[0].name, reason=fenced[1])
            return _error(index, fenced[0])
    plog = partition.log
    if version == 0:
        try:
            offsets = await _legacy_offsets(plog, p.timestamp, p.max_num_offsets)
        except KafkaError as exc:
            ctx.log_rejected("list_offsets.rejected", topic=name, partition=index, error=exc.code.name,
                             reason=exc.message)
            return _error(index, exc.code)
        return _PARTITION(partition_index=index, error_code=0, old_style_offsets=offsets)

    # Consumers may read up to the high watermark; read_committed ones only to the last stable offset.
    # Replicas and debug tools see the log end.
    if body.replica_id != CONSUMER_REPLICA_ID:
        last_fetchable = plog.log_end_offset
    elif version >= FIRST_ISOLATION_VERSION and body.isolation_level == READ_COMMITTED:
        last_fetchable = plog.last_stable_offset
    else:
        last_fetchable = plog.high_watermark

    timestamp = p.timestamp
    if timestamp == LATEST_TIMESTAMP:
        return _found(index, -1, last_fetchable, epoch)
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return _found(index, -1, plog.log_start_offset, epoch)
    if timestamp == LATEST_TIERED_TIMESTAMP:
        return _found(index, -1, -1, NO_EPOCH)
    try:
        if timestamp == MAX_TIMESTAMP:
            result = await plog.max_timestamp()
        else:
            result = await plog.offset_for_timestamp(timestamp)
    except KafkaError as exc:  # deleted meanwhile, or offline after a disk error
        ctx.log_rejected("list_offsets.rejected", topic=name, partition=index, error=exc.code.name, reason=exc.message)
        return _error(index, exc.code)
    if result is None or result.offset >= last_fetchable:
        return _found(index, -1, -1, NO_EPOCH)
    return _found(index, result.timestamp, result.offset, epoch)


def _found(index: int, timestamp: int, offset: int, leader_epoch: int) -> Any:
    return _PARTITION(partition_index=index, error_code=0, timestamp=timestamp, offset=offset,
                      leader_epoch=leader_epoch)


async def _legacy_offsets(plog: Any, timestamp: int, max_num_offsets: int) -> list[int]:
    """Kafka's v0 ``fetchOffsetsBefore`` over a log treated as one segment."""
    start, end = plog.log_start_offset, plog.log_end_offset
    newest = await plog.max_timestamp()
    segment_time = newest.timestamp if newest is not None else 0
    # (offset, time) pairs, oldest first: the segment's base, then the log end "now" if the log has data.
    boundaries = [(start, segment_time)]
    if end > start:
        boundaries.append((end, int(time.time() * 1000)))
    if timestamp == LATEST_TIMESTAMP:
        first = len(boundaries) - 1
    elif timestamp == EARLIEST_TIMESTAMP:
        first = 0
    else:
        first = len(boundaries) - 1
        while first >= 0 and boundaries[first][1] > timestamp:
            first -= 1
    count = max(0, min(max_num_offsets, first + 1))
    return sorted((boundaries[first - i][0] for i in range(count)), reverse=True)
