"""OffsetForLeaderEpoch (key 23), versions 0-4: the end offset of a leader epoch (log truncation checks).

On this single node a partition has had one leader epoch (``Partition.leader_epoch``) since it was created,
starting at the log start offset: Kafka's leader epoch cache then holds one entry, and
``LeaderEpochFileCache.endOffsetFor`` answers (Partition.lastOffsetForLeaderEpoch, UnifiedLog.endOffsetForEpoch):
- the current epoch -> that epoch and the log end offset;
- -1 (undefined) or an epoch newer than the current one -> leader epoch -1, end offset -1, no error;
- an older epoch (other than -1) -> the requested epoch and the start offset of the first later epoch,
  i.e. the log start offset.
- v2+: ``current_leader_epoch`` newer than the partition's -> UNKNOWN_LEADER_EPOCH, older ->
  FENCED_LEADER_EPOCH (-1 = not given).
- Unknown topic or partition -> UNKNOWN_TOPIC_OR_PARTITION; a partition a fault rule made offline or
  gave a failed disk -> NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR.
- v3+ ``replica_id``: consumers (-1), the debug id (-2) and followers are all answered alike, since
  this node leads every partition and there is no authorizer (Kafka needs CLUSTER_ACTION for followers).
"""

from __future__ import annotations

from typing import Any

import structlog

from broker.handlers import RequestContext
from broker.handlers.list_offsets import check_leader_epoch
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode

log = structlog.get_logger()

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1

_RESP = messages.OffsetForLeaderEpochResponse


def end_offset_for_epoch(requested: int, current: int, log_start_offset: int, log_end_offset: int) -> tuple[int, int]:
    """(leader epoch, end offset) for a log whose only epoch is ``current``, from ``log_start_offset`` on."""
    if requested == UNDEFINED_EPOCH or requested > current:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    if requested == current:
        return current, log_end_offset
    return requested, log_start_offset


async def handle_offset_for_leader_epoch(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    cluster = ctx.broker.cluster
    topics = []
    for topic in body.topics:
        results = []
        for p in topic.partitions:
            results.append(_epoch_end(ctx, cluster, topic.topic, p, version))
        topics.append(_RESP.OffsetForLeaderTopicResult(topic=topic.topic, partitions=results))
    return _RESP(throttle_time_ms=0, topics=topics)


def _epoch_end(ctx: RequestContext, cluster: Any, name: str, p: Any, version: int) -> Any:
    index = p.partition
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
        return _RESP.EpochEndOffset(error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), partition=index)
    partition = cluster.partition(name, index)
    if partition is None:
        log.debug("offset_for_leader_epoch.rejected", topic=name, partition=index, error="UNKNOWN_TOPIC_OR_PARTITION")
        return _RESP.EpochEndOffset(error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), partition=index)
    fault = ctx.partition_fault(name, index)
    if fault is not None:
        ctx.log_rejected("offset_for_leader_epoch.rejected", topic=name, partition=index, error=fault.name,
                         reason="fault injection")
        return _RESP.EpochEndOffset(error_code=int(fault), partition=index)
    if version >= 2:
        fenced = check_leader_epoch(p.current_leader_epoch, partition.leader_epoch, f"{name}-{index}")
        if fenced is not None:
            ctx.log_rejected("offset_for_leader_epoch.rejected", topic=name, partition=index, error=fenced[0].name,
                     reason=fenced[1])
            return _RESP.EpochEndOffset(error_code=int(fenced[0]), partition=index)
    plog = partition.log
    epoch, end_offset = end_offset_for_epoch(p.leader_epoch, partition.leader_epoch, plog.log_start_offset,
                                             plog.log_end_offset)
    return _RESP.EpochEndOffset(error_code=0, partition=index, leader_epoch=epoch, end_offset=end_offset)
