"""DeleteRecords (key 21), versions 0-2: advance partitions' log start offsets.

Kafka behaviours implemented (KafkaApis.handleDeleteRecordsRequest, ReplicaManager.deleteRecordsOnLocalLog,
Partition.deleteRecordsOnLeader, UnifiedLog.maybeIncrementLogStartOffset):
- ``offset`` -1 means the high watermark; another negative offset, or one beyond the high watermark,
  -> OFFSET_OUT_OF_RANGE.
- An offset at or below the current log start offset changes nothing and answers the current low
  watermark (the log start offset).
- Topics whose ``cleanup.policy`` lacks ``delete`` (compact only) -> POLICY_VIOLATION.
- Internal topics -> INVALID_TOPIC_EXCEPTION.
- Unknown topic or partition -> UNKNOWN_TOPIC_OR_PARTITION; a partition a fault rule made offline or
  gave a failed disk -> NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR. Every error answers low watermark -1.
- A moved log start offset wakes long-poll Fetches on the partition.
- The deletion is complete when answered: a single node has no followers to wait for, so
  ``timeout_ms`` is not used.

Producer state is kept when records are deleted (Kafka drops it only with whole segments), so
idempotent producers keep their duplicate detection.
"""

from __future__ import annotations

from typing import Any

import structlog

from broker.handlers import RequestContext
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from storage.interface import OffsetOutOfRange

log = structlog.get_logger()

HIGH_WATERMARK = -1
INVALID_LOW_WATERMARK = -1

_RESP = messages.DeleteRecordsResponse


def _result(index: int, code: ErrorCode, low_watermark: int = INVALID_LOW_WATERMARK) -> Any:
    return _RESP.DeleteRecordsPartitionResult(partition_index=index, low_watermark=low_watermark,
                                              error_code=int(code))


def _rejected(ctx: RequestContext, name: str, index: int, code: ErrorCode, reason: str) -> Any:
    ctx.log_rejected("delete_records.rejected", topic=name, partition=index, error=code.name, reason=reason)
    return _result(index, code)


async def handle_delete_records(header: Any, body: Any, ctx: RequestContext) -> Any:
    topics = []
    for topic in body.topics:
        partitions = [await _delete(ctx, topic.name, p.partition_index, p.offset) for p in topic.partitions]
        topics.append(_RESP.DeleteRecordsTopicResult(name=topic.name, partitions=partitions))
    return _RESP(throttle_time_ms=0, topics=topics)


async def _delete(ctx: RequestContext, name: str, index: int, offset: int) -> Any:
    cluster = ctx.broker.cluster
    partition = cluster.partition(name, index)
    if not ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, name):
        return _rejected(ctx, name, index, ErrorCode.TOPIC_AUTHORIZATION_FAILED, "not authorized to delete records")
    if partition is None:
        return _rejected(ctx, name, index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "no such topic or partition")
    fault = ctx.partition_fault(name, index)
    if fault is not None:
        return _rejected(ctx, name, index, fault, "fault injection")
    topic = partition.topic
    if topic.is_internal:
        return _rejected(ctx, name, index, ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Cannot delete records of internal topic {name}")
    if "delete" not in str(cluster.config_value(topic, "cleanup.policy")).split(","):
        return _rejected(ctx, name, index, ErrorCode.POLICY_VIOLATION,
                         f"Records of partition {name}-{index} can not be deleted due to the configured policy "
                         f"(cleanup.policy does not include delete)")
    async with partition.lock:
        plog = partition.log
        target = plog.high_watermark if offset == HIGH_WATERMARK else offset
        if target < 0:
            return _rejected(ctx, name, index, ErrorCode.OFFSET_OUT_OF_RANGE,
                             f"The offset {target} for partition {name}-{index} is not valid")
        if target > plog.high_watermark:
            return _rejected(ctx, name, index, ErrorCode.OFFSET_OUT_OF_RANGE,
                             f"Cannot increment the log start offset to {target} of partition {name}-{index} "
                             f"since it is larger than the high watermark {plog.high_watermark}")
        before = plog.log_start_offset
        try:
            low_watermark = await plog.delete_records_before(target)
        except OffsetOutOfRange as exc:
            return _rejected(ctx, name, index, ErrorCode.OFFSET_OUT_OF_RANGE, exc.message)
        except KafkaError as exc:  # deleted meanwhile (UNKNOWN_TOPIC_OR_PARTITION), or a disk error
            return _rejected(ctx, name, index, exc.code, exc.message)
    if low_watermark != before:
        cluster.waiters.wake(name, index)
        log.info("delete_records.done", topic=name, partition=index, log_start_offset=low_watermark)
    return _result(index, ErrorCode.NONE, low_watermark)
